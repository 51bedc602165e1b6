// After the pull: the report's plots drawn here when the instance could not draw them (the GPU
// image has no gnuplot, so its `analyze` wrote outliers.json and report.md and skipped the plots).
#pragma once

#include <string>

namespace deploy {

// Runs `analyze_program report OUTLIERS_JSON` (report.md and plots/ beside it) when plots/ beside
// outliers_json holds no PNG. Never fails the run: a missing program, a missing gnuplot or a failing
// report is a warning naming the command to run later. Returns whether plots exist afterwards.
bool redraw_missing_plots(const std::string & outliers_json, const std::string & analyze_program);

}  // namespace deploy
