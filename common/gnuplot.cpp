#include "common/gnuplot.h"

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/error.h"
#include "common/subprocess.h"

namespace common {

void add_gnuplot_png_svg(std::string & script, std::vector<std::string> & outputs, const std::string & name, const std::string & body,
                         int width, int height) {
    const std::string size = "size " + std::to_string(width) + "," + std::to_string(height);
    for (const auto & [ext, terminal] : {std::pair<std::string, std::string>{"png", "png " + size + " noenhanced"},
                                         {"svg", "svg " + size + " dynamic noenhanced"}}) {
        const std::string file = name + "." + ext;
        script += "reset\nset datafile separator \"\\t\"\nset datafile commentschars \"\"\nset terminal " + terminal + "\nset output \"" +
                  file + "\"\n" + body + "\nunset output\n";
        outputs.push_back(file);
    }
}

GnuplotOutcome run_gnuplot(const std::string & script, const std::vector<std::pair<std::string, std::string>> & data_files,
                           const std::vector<std::string> & outputs, const std::string & dir) {
    GnuplotOutcome out;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw Error::file(dir, "cannot create the plot directory: " + ec.message());
    // gnuplot's working directory, private to this call and inside `dir` so the renames stay on
    // one file system.
    std::string work = dir + "/.gnuplot-XXXXXX";
    if (!::mkdtemp(work.data())) throw Error::io(dir, "cannot create a working directory for gnuplot", errno);
    // Removed file by file, not with std::filesystem::remove_all: analyze links pip's libtorch.so on
    // GPU machines, which exports its own copy of remove_all, and a call to it jumped to address 0
    // (tests/gpu/main.cpp's crash report, H100 image, torch 2.11). The directory is flat: the data
    // files written here and what gnuplot wrote.
    struct RemoveAfter {
        std::string path;
        ~RemoveAfter() {
            if (DIR * d = ::opendir(path.c_str())) {
                while (const dirent * e = ::readdir(d)) {
                    const std::string name = e->d_name;
                    if (name != "." && name != "..") (void)::unlink((path + "/" + name).c_str());
                }
                ::closedir(d);
            }
            (void)::rmdir(path.c_str());
        }
    } remove_after{work};
    for (const auto & [name, text] : data_files) {
        std::ofstream f(work + "/" + name, std::ios::binary | std::ios::trunc);
        f << text;
        f.flush();
        if (!f) throw Error::io(work + "/" + name, "cannot write gnuplot data", errno);
    }
    RunOptions options;
    options.stdin_data = script;
    options.timeout = std::chrono::milliseconds(60000);
    options.cwd = work;
    ProcessResult r;
    try {
        // --default-settings: no ~/.gnuplot or system gnuplotrc either, so the plots look the same everywhere.
        r = run_process({"gnuplot", "--default-settings"}, options);
    } catch (const Error & e) {
        out.skipped_reason = "gnuplot is not installed (" + e.message() + ")";
        return out;
    }
    if (r.exit_code != 0 || r.timed_out) {
        out.skipped_reason = "gnuplot failed (exit " + std::to_string(r.exit_code) + "): " + r.err.substr(0, 400);
        return out;
    }
    for (const auto & name : outputs) {
        const std::string path = dir + "/" + name;
        std::filesystem::rename(work + "/" + name, path, ec);
        if (ec) {
            out.files.clear();
            out.skipped_reason = "gnuplot did not write " + name + ": " + ec.message();
            return out;
        }
        out.files.push_back(path);
    }
    out.produced = true;
    return out;
}

bool gnuplot_available(std::string * why) {
    ProcessResult r;
    try {
        RunOptions options;
        options.stdin_data = "set terminal\n";
        options.timeout = std::chrono::milliseconds(10000);
        r = run_process({"gnuplot"}, options);
    } catch (const Error &) {
        if (why) *why = "gnuplot is not installed (apt-get install gnuplot-nox)";
        return false;
    }
    const std::string terms = r.out + r.err;
    if (terms.find(" png ") == std::string::npos && terms.find("png ") == std::string::npos) {
        if (why) *why = "gnuplot has no png terminal";
        return false;
    }
    if (terms.find("svg") == std::string::npos) {
        if (why) *why = "gnuplot has no svg terminal";
        return false;
    }
    return true;
}

}  // namespace common
