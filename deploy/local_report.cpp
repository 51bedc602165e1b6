// Redrawing the plots after the pull (local_report.h).
#include "deploy/local_report.h"

#include "common/log.h"
#include "common/subprocess.h"

#include <chrono>
#include <filesystem>

namespace deploy {

namespace {

bool has_png(const std::filesystem::path & dir) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) return false;
    for (const auto & e : std::filesystem::directory_iterator(dir, ec))
        if (e.path().extension() == ".png") return true;
    return false;
}

}  // namespace

bool redraw_missing_plots(const std::string & outliers_json, const std::string & analyze_program) {
    const auto plots = std::filesystem::path(outliers_json).parent_path() / "plots";
    if (has_png(plots)) return true;
    if (analyze_program.empty()) {
        common::log::warn("pull: the results have no plots and there is no analyze program here to draw them; run `analyze report ",
                          outliers_json, "` where gnuplot is installed");
        return false;
    }
    common::RunOptions o;
    o.timeout = std::chrono::milliseconds(300000);
    // Program and path are argv items, never shell text.
    const auto r = common::run_process({analyze_program, "report", outliers_json, "-q"}, o);
    if (r.exit_code != 0 || r.timed_out) {
        common::log::warn("pull: redrawing the plots failed (exit ", r.exit_code, "): ", r.err.substr(0, 400),
                          "; run `analyze report ", outliers_json, "` by hand");
        return false;
    }
    if (!has_png(plots)) {
        common::log::warn("pull: the plots were not drawn here either (no gnuplot with png and svg?); report.md is up to date; run `analyze report ",
                          outliers_json, "` where gnuplot is installed");
        return false;
    }
    common::log::info("pull: plots drawn here from ", outliers_json, " (the instance had no gnuplot)");
    return true;
}

}  // namespace deploy
