// gnuplot run as a program (Debian's gnuplot-nox: libgd png and svg terminals), not linked: the one
// runner of analysis' plots and the sweep report's. Torch-free, so deploy uses it without the
// analysis library.
//
// The caller's script must hold only its own text, numbers it formats itself and names of its own
// files: gnuplot's language runs programs (system(), backquotes, `!`), so values read from results go
// into data files, which gnuplot reads with its data reader only. gnuplot runs in a private
// directory holding just those files and writes the plots there by bare names, so no path appears
// in the script either; the plots are then renamed into place.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace common {

// Appends one plot drawn twice to `script`, as `name`.png and `name`.svg (their bare names go to
// `outputs`), each at width x height pixels: reset, tab-separated data without comment lines (a name
// may hold spaces or start with '#'), the terminal, `set output`, then `body`.
void add_gnuplot_png_svg(std::string & script, std::vector<std::string> & outputs, const std::string & name, const std::string & body,
                         int width, int height);

struct GnuplotOutcome {
    bool produced = false;
    std::string skipped_reason;      // why no plots (gnuplot not installed or failed, a plot not written)
    std::vector<std::string> files;  // paths (dir + "/" + output) of the plots moved into dir
};

// Runs `gnuplot --default-settings` on `script` (its standard input) in a fresh directory under
// `dir` (made if missing; removed afterwards, file by file) holding `data_files` (bare name ->
// contents), then moves `outputs` (bare names) from there into `dir`. Throws common::Error when `dir`,
// the working directory or a data file cannot be written.
GnuplotOutcome run_gnuplot(const std::string & script, const std::vector<std::pair<std::string, std::string>> & data_files,
                           const std::vector<std::string> & outputs, const std::string & dir);

// True when `gnuplot` runs and has both the png and svg terminals; else false with the reason in *why.
bool gnuplot_available(std::string * why = nullptr);

}  // namespace common
