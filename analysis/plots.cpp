// Plots through gnuplot (Debian's gnuplot-nox: libgd png and svg terminals), run as a program with
// its script on stdin and the data inline as datablocks, so no temporary files and no shell. Chosen
// over PLplot because gnuplot is a program, not a link dependency: the GPU-only build of `analyze`
// stays free of it and simply reports that plots were skipped where gnuplot is absent.
#include "analysis/report.h"

#include "common/error.h"
#include "common/subprocess.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

namespace analysis {

using json = nlohmann::json;

namespace {

std::string quoted(const std::string & s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}

std::string num(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

std::string site_label(const json & layer) {
    return "L" + std::to_string(layer.value("layer", 0)) + (layer.value("site", "") == "ln_attn" ? " attn" : " mlp");
}

// One script drawn once per terminal: body is everything after `set output`.
PlotOutcome render(const std::string & dir, const std::vector<std::pair<std::string, std::string>> & plots,
                   const std::string & data) {
    PlotOutcome out;
    std::string why;
    if (!gnuplot_available(&why)) {
        out.skipped_reason = why;
        return out;
    }
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw common::Error::file(dir, "cannot create the plot directory: " + ec.message());
    std::ostringstream script;
    script << data;
    for (const auto & [name, body] : plots) {
        for (const auto & [ext, terminal] : {std::pair<std::string, std::string>{"png", "png size 1100,650 noenhanced"},
                                             {"svg", "svg size 1100,650 dynamic noenhanced"}}) {
            const std::string path = dir + "/" + name + "." + ext;
            script << "reset\nset terminal " << terminal << "\nset output " << quoted(path) << "\n" << body << "\nunset output\n";
            out.files.push_back(path);
        }
    }
    common::RunOptions options;
    options.stdin_data = script.str();
    options.timeout = std::chrono::milliseconds(60000);
    const auto r = common::run_process({"gnuplot"}, options);
    if (r.exit_code != 0 || r.timed_out) {
        out.files.clear();
        out.skipped_reason = "gnuplot failed (exit " + std::to_string(r.exit_code) + "): " + r.err.substr(0, 400);
        return out;
    }
    out.produced = true;
    return out;
}

}  // namespace

bool gnuplot_available(std::string * why) {
    common::ProcessResult r;
    try {
        common::RunOptions options;
        options.stdin_data = "set terminal\n";
        options.timeout = std::chrono::milliseconds(10000);
        r = common::run_process({"gnuplot"}, options);
    } catch (const common::Error &) {
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

PlotOutcome write_plots(const json & r, const std::string & dir) {
    const auto & layers = r.at("layers");
    const auto & profiles = r.at("feature_profiles");
    std::string model = r.at("run").value("model_name", std::string());
    if (model.empty()) model = "model";
    const double threshold = r.at("run").value("threshold", 6.0);
    std::ostringstream data, ytics, xtics;

    // Site labels: every site when few, else about 24 of them.
    const size_t S = layers.size();
    const size_t step = S > 24 ? (S + 23) / 24 : 1;
    ytics << "set ytics (";
    for (size_t i = 0; i < S; i += step) ytics << (i ? ", " : "") << quoted(site_label(layers[i])) << " " << i;
    ytics << ") font \",9\"\n";

    // 1. Heatmap: rows = sites, columns = feature dims, value = fraction of positions with |x| >= thr.
    data << "$heat << EOD\n";
    for (size_t i = 0; i < S; ++i) {
        for (size_t k = 0; k < profiles.size(); ++k) data << (k ? " " : "") << num(profiles[k]["hit_rate_by_site"][i].get<double>());
        data << "\n";
    }
    data << "EOD\n";
    xtics << "set xtics (";
    for (size_t k = 0; k < profiles.size(); ++k) xtics << (k ? ", " : "") << quoted(std::to_string(profiles[k].value("dim", 0))) << " " << k;
    xtics << ")\n";
    std::string heat = "set title " + quoted(model + ": fraction of positions with |x| >= " + num(threshold) + ", per site and feature") +
                       "\nset xlabel \"hidden dim\"\nset ylabel \"layer-norm site\"\n" + xtics.str() + ytics.str() +
                       "set cblabel \"hit rate\"\nset palette rgb 33,13,10\nset cbrange [0:*]\nset yrange [-0.5:" + num(static_cast<double>(S) - 0.5) +
                       "]\nset xrange [-0.5:" + num(static_cast<double>(profiles.size()) - 0.5) + "]\n" +
                       "plot $heat matrix with image notitle";

    // 2. Max |x| per site for the top features.
    data << "$mag << EOD\n";
    for (size_t i = 0; i < S; ++i) {
        data << i;
        for (const auto & p : profiles) data << " " << num(p["max_abs_by_site"][i].get<double>());
        data << "\n";
    }
    data << "EOD\n";
    std::string mag = "set title " + quoted(model + ": max |x| per layer-norm site, top features") +
                      "\nset xlabel \"layer-norm site\"\nset ylabel \"max |x|\"\nset logscale y\nset key outside right\nset grid\n" +
                      "set xtics (";
    for (size_t i = 0; i < S; i += step) mag += (i ? ", " : "") + quoted(site_label(layers[i])) + " " + std::to_string(i);
    mag += ") rotate by 45 right font \",9\"\nplot ";
    for (size_t k = 0; k < profiles.size(); ++k)
        mag += "$mag using 1:" + std::to_string(k + 2) + " with linespoints title " +
               quoted("dim " + std::to_string(profiles[k].value("dim", 0))) + ", ";
    mag += num(threshold) + " with lines dashtype 2 lc rgb \"black\" title \"threshold\"";

    // 3. Magnitude distribution per site kind. The bins (bf16 bit pattern) are quarter octaves split
    // linearly, so they differ in log width: plot counts per quarter octave of log2 width, and leave
    // out the first bin (it also holds everything smaller, zeros included).
    const auto & hist = r.at("histogram");
    const auto & edges = hist.at("lower_edges");
    std::string dist = "set title " + quoted(model + ": distribution of |x| over all layer-norm outputs (bf16-rounded)") +
                       "\nset xlabel \"|x|\"\nset ylabel \"values per quarter octave\"\nset logscale xy\nset grid\nset key top right\n" +
                       "set arrow from " + num(threshold) + ", graph 0 to " + num(threshold) + ", graph 1 nohead dashtype 2\n" +
                       "set label \"threshold\" at " + num(threshold) + ", graph 0.95 offset 0.5,0\nplot ";
    int block = 0;
    for (const auto & [kind, counts] : hist.at("counts").items()) {
        data << "$hist" << block << " << EOD\n";
        for (size_t b = 1; b + 1 < counts.size() && b + 1 < edges.size(); ++b) {
            const double lo = edges[b].get<double>(), hi = edges[b + 1].get<double>();
            const double density = static_cast<double>(counts[b].get<int64_t>()) / (std::log2(hi / lo) * 4);
            if (density > 0) data << num(lo) << " " << num(density) << "\n";
        }
        data << "EOD\n";
        dist += std::string(block ? ", " : "") + "$hist" + std::to_string(block) + " using 1:2 with steps lw 2 title " + quoted(kind);
        ++block;
    }
    if (block == 0) dist += "1/0 notitle";

    return render(dir, {{"outliers_heatmap", heat}, {"magnitude_by_layer", mag}, {"magnitude_distribution", dist}}, data.str());
}

PlotOutcome write_comparison_plots(const json & c, const std::string & dir) {
    std::ostringstream data;
    data << "$rows << EOD\n";
    int n = 0;
    for (const auto & row : c.at("rows")) {
        if (!row.contains("params") || !row["params"].is_number() || row["params"].get<double>() <= 0) continue;
        data << num(row["params"].get<double>()) << " " << row.value("num_outliers", 0) << " " << num(row.value("mean_layer_pct", 0.0))
             << " " << num(row.value("mean_position_pct", 0.0)) << " " << quoted(row.value("label", "")) << "\n";
        ++n;
    }
    data << "EOD\n";
    PlotOutcome out;
    if (n == 0) {
        out.skipped_reason = "no result has a parameter count (pass --params LABEL=COUNT)";
        return out;
    }
    const std::string mode = c.value("mode", "");
    const std::string common = "set xlabel \"parameters\"\nset logscale x\nset grid\nset key off\nset offsets graph 0.05, graph 0.15, graph 0.1, graph 0.1\n";
    const std::string count = "set title " + quoted("outlier features vs parameters (" + mode + ")") + "\n" + common +
                              "set ylabel \"outliers\"\nset logscale y\nplot $rows using 1:2 with points pt 7 ps 1.5, $rows using 1:2:5 with labels offset 0,1 font \",9\"";
    const std::string pct = "set title " + quoted("mean layer % and mean position % vs parameters (" + mode + ")") + "\n" + common +
                            "set ylabel \"percent\"\nset yrange [0:100]\nset key on top left\nplot $rows using 1:3 with points pt 7 ps 1.5 title \"mean layer %\", "
                            "$rows using 1:4 with points pt 5 ps 1.5 title \"mean position %\", $rows using 1:3:5 with labels offset 0,1 font \",9\" notitle";
    return render(dir, {{"compare_outliers", count}, {"compare_percentages", pct}}, data.str());
}

}  // namespace analysis
