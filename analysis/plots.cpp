// Plots through gnuplot (Debian's gnuplot-nox: libgd png and svg terminals), run as a program, not
// linked. Chosen over PLplot because gnuplot is a program, not a link dependency: the GPU-only build of
// `analyze` stays free of it and simply reports that plots were skipped where gnuplot is absent.
//
// A result file is untrusted, and gnuplot's language runs programs (system(), backquotes, `!`), so
// nothing read from a result ever becomes gnuplot code: the script holds only our own text, numbers
// we format ourselves and names of our own files. Every value from the result (model names, site
// kinds, labels, the numbers too) goes into data files, which gnuplot reads with its data reader
// only; titles come from those files (`stats ... strcol` into a variable, `columnheader`). gnuplot
// runs in a private directory holding just those files and writes the plots there by bare names,
// so no path appears in the script either; the plots are then renamed into place (common/gnuplot.cpp,
// the runner the sweep report uses too).
#include "analysis/report.h"

#include "common/gnuplot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace analysis {

using json = nlohmann::json;

namespace {

// Constants of our own inside the script.
std::string quoted(const std::string & s) { return "\"" + s + "\""; }

// A number we format: the only form in which values reach the script (finite, or gnuplot's NaN in data).
std::string num(double v) {
    if (!std::isfinite(v)) return "NaN";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

double number_of(const json & v) { return v.is_number() ? v.get<double>() : std::nan(""); }

// Text from a result made fit for one field of a tab-separated data file. This is display hygiene,
// not the security boundary (data is never code): gnuplot's data reader splits on tabs and line
// ends and interprets '"' and '\', and the svg must stay valid UTF-8. So control characters and
// invalid UTF-8 become '?', '"' becomes '\'', '\' becomes '/', and long names are cut.
std::string data_text(const std::string & s, const std::string & fallback) {
    constexpr size_t kMaxCodePoints = 80;
    std::string out;
    size_t points = 0, i = 0;
    for (; i < s.size() && points < kMaxCodePoints; ++points) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            out += c < 0x20 || c == 0x7f ? '?' : c == '"' ? '\'' : c == '\\' ? '/' : static_cast<char>(c);
            ++i;
            continue;
        }
        // One well-formed UTF-8 sequence (no overlongs, surrogates or code points past U+10FFFF), else '?'.
        const size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        bool ok = len > 0 && i + len <= s.size();
        uint32_t cp = ok ? c & (0x7fu >> len) : 0;
        for (size_t k = 1; ok && k < len; ++k) {
            const auto d = static_cast<unsigned char>(s[i + k]);
            ok = (d & 0xc0) == 0x80;
            cp = (cp << 6) | (d & 0x3fu);
        }
        ok = ok && !(len == 3 && cp < 0x800) && !(len == 4 && (cp < 0x10000 || cp > 0x10ffff)) && !(cp >= 0xd800 && cp <= 0xdfff) &&
             !(cp >= 0x80 && cp < 0xa0);  // C1 controls
        if (ok) {
            out.append(s, i, len);
            i += len;
        } else {
            out += '?';
            ++i;
        }
    }
    if (i < s.size()) out += "...";
    return out.empty() ? fallback : out;
}

std::string site_label(const json & layer) {
    const int64_t l = layer.contains("layer") && layer["layer"].is_number_integer() ? layer["layer"].get<int64_t>() : 0;
    const bool attn = layer.contains("site") && layer["site"] == "ln_attn";
    return "L" + std::to_string(l) + (attn ? " attn" : " mlp");
}

int64_t dim_of(const json & profile) {
    return profile.contains("dim") && profile["dim"].is_number_integer() ? profile["dim"].get<int64_t>() : 0;
}

// Reads the one-line data file `file` into the gnuplot string variable `var` (a name of ours).
std::string read_string(const std::string & var, const std::string & file) {
    return var + " = \"\"\nstats " + quoted(file) + " using (" + var + " = strcol(1), 0) nooutput\n";
}

// One script drawn once per terminal (png and svg): body is everything after `set output`.
void add_plot(PlotJob & job, const std::string & name, const std::string & body) {
    common::add_gnuplot_png_svg(job.script, job.outputs, name, body, 1100, 650);
}

}  // namespace

PlotOutcome render_plots(const PlotJob & job, const std::string & dir) {
    PlotOutcome out;
    if (!job.skipped_reason.empty()) {
        out.skipped_reason = job.skipped_reason;
        return out;
    }
    if (!gnuplot_available(&out.skipped_reason)) return out;
    auto r = common::run_gnuplot(job.script, job.data_files, job.outputs, dir);
    out.produced = r.produced;
    out.skipped_reason = std::move(r.skipped_reason);
    out.files = std::move(r.files);
    return out;
}

bool gnuplot_available(std::string * why) { return common::gnuplot_available(why); }

namespace {

// plot_job's phases as one small class: the tables of the result every plot reads, the title line
// and axis tics they share, and the job each phase adds its data files and plot to, in order.
class ResultPlots {
public:
    // The shared part, read in this order: the model name's data file, the title line, the tics.
    explicit ResultPlots(const json & result) : r(result), layers(r.at("layers")), profiles(r.at("feature_profiles")), run(r.at("run")) {
        const std::string model = run.contains("model_name") && run["model_name"].is_string() ? run["model_name"].get<std::string>() : "";
        threshold = run.contains("threshold") && run["threshold"].is_number() ? run["threshold"].get<double>() : 6.0;
        job.data_files.emplace_back("model.dat", data_text(model, "model") + "\n");
        title_prefix = read_string("model", "model.dat");

        // Site labels: every site when few, else about 24 of them (ours: "L<int> attn|mlp").
        S = layers.size();
        const size_t step = S > 24 ? (S + 23) / 24 : 1;
        for (size_t i = 0; i < S; i += step) site_tics += (i ? ", " : "") + quoted(site_label(layers[i])) + " " + std::to_string(i);
        for (size_t k = 0; k < profiles.size(); ++k) dim_tics += (k ? ", " : "") + quoted(std::to_string(dim_of(profiles[k]))) + " " + std::to_string(k);
    }

    // 1. Heatmap: rows = sites, columns = feature dims, value = fraction of positions with |x| >= thr.
    // Boxes rather than `with image`, which draws nothing for a grid under 2 x 2 (one feature or one site).
    void add_site_heatmap() {
        std::ostringstream heat;
        for (size_t i = 0; i < S; ++i) {
            for (size_t k = 0; k < profiles.size(); ++k) heat << (k ? "\t" : "") << num(number_of(profiles[k].at("hit_rate_by_site").at(i)));
            heat << "\n";
        }
        job.data_files.emplace_back("heat.dat", heat.str());
        add_plot(job, "outliers_heatmap",
                 title_prefix + "set title model . " + quoted(": fraction of positions with |x| >= " + num(threshold) + ", per site and feature") +
                     "\nset xlabel \"hidden dim\"\nset ylabel \"layer-norm site\"\nset xtics (" + dim_tics + ")\nset ytics (" + site_tics +
                     ") font \",9\"\nset cblabel \"hit rate\"\nset palette rgb 33,13,10\nset cbrange [0:*]\nset yrange [-0.5:" +
                     num(static_cast<double>(S) - 0.5) + "]\nset xrange [-0.5:" + num(static_cast<double>(profiles.size()) - 0.5) + "]\n" +
                     "plot \"heat.dat\" matrix using 1:2:(0.5):(0.5):3 with boxxyerror fillstyle solid noborder palette notitle");
    }

    // 2. Max |x| per site for the top features.
    void add_magnitude_by_layer() {
        std::ostringstream mag;
        for (size_t i = 0; i < S; ++i) {
            mag << i;
            for (const auto & p : profiles) mag << "\t" << num(number_of(p.at("max_abs_by_site").at(i)));
            mag << "\n";
        }
        job.data_files.emplace_back("mag.dat", mag.str());
        std::string mag_plot = title_prefix + "set title model . \": max |x| per layer-norm site, top features\"\n" +
                               "set xlabel \"layer-norm site\"\nset ylabel \"max |x|\"\nset logscale y\nset key outside right\nset grid\n" +
                               "set xtics (" + site_tics + ") rotate by 45 right font \",9\"\nplot ";
        for (size_t k = 0; k < profiles.size(); ++k)
            mag_plot += "\"mag.dat\" using 1:" + std::to_string(k + 2) + " with linespoints title " +
                        quoted("dim " + std::to_string(dim_of(profiles[k]))) + ", ";
        mag_plot += num(threshold) + " with lines dashtype 2 lc rgb \"black\" title \"threshold\"";
        add_plot(job, "magnitude_by_layer", mag_plot);
    }

    // 3. Magnitude distribution per site kind. The bins (bf16 bit pattern) are quarter octaves split
    // linearly, so they differ in log width: plot counts per quarter octave of log2 width, and leave
    // out the first bin (it also holds everything smaller, zeros included). The kind's name is the
    // data file's column header.
    void add_magnitude_distribution() {
        const auto & hist = r.at("histogram");
        const auto & edges = hist.at("lower_edges");
        std::string dist = title_prefix + "set title model . \": distribution of |x| over all layer-norm outputs (bf16-rounded)\"\n" +
                           "set xlabel \"|x|\"\nset ylabel \"values per quarter octave\"\nset logscale xy\nset grid\nset key top right\n" +
                           "set arrow from " + num(threshold) + ", graph 0 to " + num(threshold) + ", graph 1 nohead dashtype 2\n" +
                           "set label \"threshold\" at " + num(threshold) + ", graph 0.95 offset 0.5,0\nplot ";
        int block = 0;
        for (const auto & [kind, counts] : hist.at("counts").items()) {
            std::ostringstream d;
            d << "edge\t" << data_text(kind, "site") << "\n";
            int64_t points = 0;
            for (size_t b = 1; b + 1 < counts.size() && b + 1 < edges.size(); ++b) {
                const double lo = number_of(edges[b]), hi = number_of(edges[b + 1]);
                const double density = static_cast<double>(counts[b].get<int64_t>()) / (std::log2(hi / lo) * 4);
                if (density > 0 && std::isfinite(density)) {
                    d << num(lo) << "\t" << num(density) << "\n";
                    ++points;
                }
            }
            if (points == 0) continue;  // nothing to draw (gnuplot refuses an empty file on a log scale)
            const std::string file = "hist" + std::to_string(block) + ".dat";
            job.data_files.emplace_back(file, d.str());
            dist += std::string(block ? ", " : "") + quoted(file) + " using 1:2 with steps lw 2 title columnheader(2)";
            ++block;
        }
        if (block == 0) dist += "1/0 notitle";
        add_plot(job, "magnitude_distribution", dist);
    }

    // The run's size, for the titles of the plots added with issue 14: numbers we format.
    void measure_run_size() {
        run_size = num(result_number(run, "sequences")) + " seq x " +
                   num(result_number(run, "tokens") / std::max(1.0, result_number(run, "sequences", 1))) + " tokens";
    }

    // 4. Perplexity per sequence (`--perplexity`), with the overall value as a dashed line; the run
    // size (sequences x tokens scored) in the title.
    void add_perplexity() {
        const auto & p = r["perplexity"];
        std::ostringstream d;
        int64_t points = 0;
        for (const auto & q : p.at("per_sequence")) {
            const double v = result_number(q, "perplexity");
            if (!std::isfinite(v)) continue;
            d << num(result_number(q, "sequence")) << "\t" << num(v) << "\n";
            ++points;
        }
        if (points > 0) {
            const auto & all = p.at("overall");
            job.data_files.emplace_back("ppl.dat", d.str());
            const std::string size = num(result_number(all, "sequences")) + " sequences, " + num(result_number(all, "tokens")) + " tokens scored";
            add_plot(job, "perplexity_by_sequence",
                     title_prefix + "set title model . " + quoted(": perplexity per sequence (" + size + ", " + run_size + ")") +
                         "\nset xlabel \"sequence\"\nset ylabel \"perplexity\"\nset grid\nset key top right\n"
                         "set offsets graph 0.03, graph 0.03, graph 0.08, graph 0.08\nplot \"ppl.dat\" using 1:2 "
                         "with points pt 7 ps 1 title \"sequence\", " + num(result_number(all, "perplexity")) +
                         " with lines dashtype 2 lc rgb \"black\" title \"overall\"");
        }
    }

    // 5. Threshold curve (`--thresholds`): outliers of each mode against the threshold. The mode
    // names are the data file's column headers.
    void add_threshold_curve() {
        const auto & sw = r["threshold_sweep"];
        const auto & thresholds = sw.at("thresholds");
        std::ostringstream d;
        d << "threshold";
        std::vector<const json *> rows;
        for (const auto & [name, mode_rows] : sw.at("modes").items()) {
            d << "\t" << data_text(name, "mode");
            rows.push_back(&mode_rows);
        }
        d << "\n";
        for (size_t k = 0; k < thresholds.size(); ++k) {
            d << num(number_of(thresholds[k]));
            for (const json * m : rows) d << "\t" << (k < m->size() ? num(result_number((*m)[k], "num_outliers")) : "NaN");
            d << "\n";
        }
        if (!rows.empty() && !thresholds.empty()) {
            job.data_files.emplace_back("sweep.dat", d.str());
            std::string plot = title_prefix + "set title model . " + quoted(": outliers vs threshold (" + run_size + ")") +
                               "\nset xlabel \"threshold |x|\"\nset ylabel \"outliers\"\nset grid\nset key top right\n"
                               "set offsets graph 0.03, graph 0.03, graph 0.08, 0\nset yrange [0:*]\n"
                               "set arrow from " + num(threshold) + ", graph 0 to " + num(threshold) + ", graph 1 nohead dashtype 2\nplot ";
            for (size_t m = 0; m < rows.size(); ++m)
                plot += std::string(m ? ", " : "") + "\"sweep.dat\" using 1:" + std::to_string(m + 2) +
                        " with linespoints pt 7 lw 2 title columnheader(" + std::to_string(m + 2) + ")";
            add_plot(job, "threshold_curve", plot);
        }
    }

    // 6. Expert heatmap (`--expert-stats`): MoE layer x expert, colour = max |x| of the expert's
    // down_proj output (log scale; experts that got no token are left blank).
    void add_expert_heatmap() {
        const auto & layers_e = r["experts"].at("layers");
        size_t experts = 0;
        for (const auto & l : layers_e) experts = std::max(experts, l.at("tokens").size());
        if (!layers_e.empty() && experts > 0) {
            std::ostringstream d;
            std::string layer_tics;
            int64_t drawn = 0;  // cells with a positive max (a log colour scale of nothing fails)
            const size_t lstep = layers_e.size() > 24 ? (layers_e.size() + 23) / 24 : 1;
            for (size_t i = 0; i < layers_e.size(); ++i) {
                const auto & l = layers_e[i];
                for (size_t e = 0; e < experts; ++e) {
                    const bool routed = e < l.at("tokens").size() && l.at("tokens")[e].get<int64_t>() > 0;
                    const double v = routed ? number_of(l.at("max_abs")[e]) : std::nan("");
                    d << (e ? "\t" : "") << num(v > 0 ? v : std::nan(""));
                    drawn += v > 0 && std::isfinite(v);
                }
                d << "\n";
                if (i % lstep == 0)
                    layer_tics += (layer_tics.empty() ? "" : ", ") + quoted(std::to_string(l.at("layer").get<int64_t>())) + " " + std::to_string(i);
            }
            if (drawn > 0) job.data_files.emplace_back("experts.dat", d.str());
            if (drawn > 0) add_plot(job, "expert_heatmap",
                     title_prefix + "set title model . " + quoted(": max |x| of each expert's down_proj output (" + run_size + ")") +
                         "\nset xlabel \"expert\"\nset ylabel \"MoE layer\"\nset ytics (" + layer_tics +
                         ") font \",9\"\nset cblabel \"max |x|\"\nset logscale cb\nset palette rgb 33,13,10\nset yrange [-0.5:" +
                         num(static_cast<double>(layers_e.size()) - 0.5) + "]\nset xrange [-0.5:" + num(static_cast<double>(experts) - 0.5) +
                         "]\nplot \"experts.dat\" matrix using 1:2:(0.5):(0.5):3 with boxxyerror fillstyle solid noborder palette notitle");
        }
    }

    // 7. Massive activations by layer (Sun et al. 2024, Fig. 1): the top-1, top-2, top-3 and median
    // |x| of the residual stream per layer (log scale), and the top-1 / median ratio on the right axis.
    void add_massive_ratio() {
        std::ostringstream d;
        int64_t points = 0;
        for (const auto & l : r["massive_activations"].at("layers")) {
            const auto & top = l.at("top");
            d << num(result_number(l, "layer"));
            for (size_t k = 0; k < 3; ++k) d << "\t" << (k < top.size() ? num(result_number(top[k], "abs")) : "NaN");
            const double median = result_number(l, "median_abs");
            const double top1 = result_number(top.at(0), "abs");
            d << "\t" << num(median > 0 ? median : std::nan("")) << "\t" << num(median > 0 ? top1 / median : std::nan("")) << "\n";
            points += top1 > 0 && std::isfinite(top1) && median > 0;
        }
        if (points > 0) {
            job.data_files.emplace_back("massive.dat", d.str());
            add_plot(job, "massive_ratio_by_layer",
                     title_prefix + "set title model . " + quoted(": residual-stream |x| by layer, top-1/median ratio (" + run_size + ")") +
                         "\nset xlabel \"layer\"\nset ylabel \"|x|\"\nset y2label \"top-1 / median\"\nset logscale y\nset logscale y2\n"
                         "set ytics nomirror\nset y2tics\nset grid\nset key top left\nset offsets graph 0.03, graph 0.03, 0, 0\n"
                         "plot \"massive.dat\" using 1:2 with linespoints pt 7 title \"top 1\", \"massive.dat\" using 1:3 with linespoints pt 5 title \"top 2\", "
                         "\"massive.dat\" using 1:4 with linespoints pt 9 title \"top 3\", \"massive.dat\" using 1:5 with linespoints pt 13 title \"median\", "
                         "\"massive.dat\" using 1:6 axes x1y2 with lines dashtype 2 lw 2 title \"top-1 / median\"");
        }
    }

    PlotJob take() { return std::move(job); }

private:
    const json & r;
    const json & layers;
    const json & profiles;
    const json & run;
    double threshold = 6.0;
    std::string title_prefix;
    size_t S = 0;
    std::string site_tics, dim_tics, run_size;
    PlotJob job;
};

}  // namespace

PlotJob plot_job(const json & r) {
    ResultPlots plots(r);
    plots.add_site_heatmap();
    plots.add_magnitude_by_layer();
    plots.add_magnitude_distribution();
    plots.measure_run_size();
    if (r.contains("perplexity") && r["perplexity"].is_object()) plots.add_perplexity();
    if (r.contains("threshold_sweep") && r["threshold_sweep"].is_object()) plots.add_threshold_curve();
    if (r.contains("experts") && r["experts"].is_object()) plots.add_expert_heatmap();
    if (r.contains("massive_activations") && r["massive_activations"].is_object()) plots.add_massive_ratio();
    return plots.take();
}

PlotOutcome write_plots(const json & r, const std::string & dir) { return render_plots(plot_job(r), dir); }

PlotJob comparison_plot_job(const json & c) {
    PlotJob job;
    std::ostringstream rows;
    int n = 0;
    for (const auto & row : c.at("rows")) {
        if (!row.contains("params") || !row["params"].is_number() || !(row["params"].get<double>() > 0)) continue;
        rows << num(row["params"].get<double>()) << "\t" << num(result_number(row, "num_outliers")) << "\t"
             << num(result_number(row, "mean_layer_pct")) << "\t" << num(result_number(row, "mean_position_pct")) << "\t"
             << data_text(row.contains("label") && row["label"].is_string() ? row["label"].get<std::string>() : "", "?") << "\n";
        ++n;
    }
    if (n == 0) {
        job.skipped_reason = "no result has a parameter count (pass --params LABEL=COUNT)";
        return job;
    }
    job.data_files.emplace_back("rows.dat", rows.str());
    job.data_files.emplace_back("mode.dat", data_text(c.contains("mode") && c["mode"].is_string() ? c["mode"].get<std::string>() : "", "?") + "\n");
    // The axis names what the counts are; the text is ours (the file only selects which), never the file's.
    const std::string what = comparison_is_active(c) ? "active parameters" : "parameters";
    const std::string common = read_string("mode", "mode.dat") + "set xlabel \"" + what +
                               (comparison_is_active(c) ? " (per token)" : "") +
                               "\"\nset logscale x\nset grid\nset key off\nset offsets graph 0.05, graph 0.15, graph 0.1, graph 0.1\n";
    add_plot(job, "compare_outliers",
             common + "set title \"outlier features vs " + what + " (\" . mode . \")\"\n" +
                 "set ylabel \"outliers\"\nset logscale y\nplot \"rows.dat\" using 1:2 with points pt 7 ps 1.5, \"rows.dat\" using 1:2:5 with labels offset 0,1 font \",9\"");
    add_plot(job, "compare_percentages",
             common + "set title \"mean layer % and mean position % vs " + what + " (\" . mode . \")\"\n" +
                 "set ylabel \"percent\"\nset yrange [0:100]\nset key on top left\nplot \"rows.dat\" using 1:3 with points pt 7 ps 1.5 title \"mean layer %\", "
                 "\"rows.dat\" using 1:4 with points pt 5 ps 1.5 title \"mean position %\", \"rows.dat\" using 1:3:5 with labels offset 0,1 font \",9\" notitle");
    return job;
}

PlotOutcome write_comparison_plots(const json & c, const std::string & dir) { return render_plots(comparison_plot_job(c), dir); }

}  // namespace analysis
