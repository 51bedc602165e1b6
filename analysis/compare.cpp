// Cross-model comparison, as the predecessor's sweep reports (outlier count, mean layer %, mean
// position % against parameter count), from result JSONs; plus finalize_run, the end of every run.
#include "analysis/report.h"

#include "analysis/stats_file.h"
#include "common/error.h"
#include "common/log.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>

namespace analysis {

using json = nlohmann::json;

json build_comparison(const std::vector<std::pair<std::string, json>> & results, const CompareOptions & options) {
    const bool active = options.params_kind == "active";
    if (!active && options.params_kind != "total")
        throw common::Error::usage("compare: unknown parameter kind '" + options.params_kind + "': valid kinds are total, active");
    json rows = json::array();
    std::vector<bool> label_used(options.params.size(), false);
    for (const auto & [label, r] : results) {
        if (!r.at("modes").contains(options.mode))
            throw common::Error::usage("compare: " + label + " has no '" + options.mode + "' mode; regenerate it with --mode " + options.mode)
                .with("file", label);
        const auto & run = r.at("run");
        const auto & s = r["modes"][options.mode].at("summary");
        const std::string name = run.value("model_name", std::string());
        json row = {{"label", name.empty() ? label : name},
                    {"file", label},
                    {"num_outliers", s.value("num_outliers", 0)},
                    {"unique_dims", s.value("unique_dims", 0)},
                    {"mean_layer_pct", s.value("mean_layer_pct", 0.0)},
                    {"median_layer_pct", s.value("median_layer_pct", 0.0)},
                    {"mean_position_pct", s.value("mean_position_pct", 0.0)},
                    {"median_position_pct", s.value("median_position_pct", 0.0)},
                    {"sequences", run.value("sequences", 0)},
                    {"tokens", run.value("tokens", 0)},
                    {"params", nullptr},
                    {"params_active", nullptr}};
        for (const char * key : {"parameters_total", "params_total", "params"})
            if (run.contains(key) && run[key].is_number()) row["params"] = run[key];
        for (const char * key : {"parameters_active", "params_active"})
            if (run.contains(key) && run[key].is_number()) row["params_active"] = run[key];
        // Against active parameters, the x value is the active count the run recorded (if any).
        if (active) row["params"] = row["params_active"];
        for (size_t i = 0; i < options.params.size(); ++i)
            if (options.params[i].first == row["label"].get<std::string>() || options.params[i].first == label) {
                row["params"] = options.params[i].second;
                label_used[i] = true;
            }
        rows.push_back(row);
    }
    // A label that matches nothing was silently dropped, leaving that model without a count (and
    // out of the plots) with no word why: refused, naming it and what the labels are.
    for (size_t i = 0; i < options.params.size(); ++i) {
        if (label_used[i]) continue;
        std::string known;
        for (const auto & row : rows)
            known += (known.empty() ? "" : ", ") + ("'" + row["label"].get<std::string>() + "' (" + row["file"].get<std::string>() + ")");
        throw common::Error::usage("--params " + options.params[i].first + ": no result has this label; a label is a result's model name "
                                   "or its file: " + known);
    }
    std::stable_sort(rows.begin(), rows.end(), [](const json & a, const json & b) {
        const double pa = a["params"].is_number() ? a["params"].get<double>() : 1e300;
        const double pb = b["params"].is_number() ? b["params"].get<double>() : 1e300;
        return pa != pb ? pa < pb : a["label"].get<std::string>() < b["label"].get<std::string>();
    });
    return {{"schema", kComparisonSchema}, {"version", 1}, {"mode", options.mode}, {"params_kind", options.params_kind}, {"rows", rows}};
}

bool comparison_is_active(const json & c) {
    return c.is_object() && c.contains("params_kind") && c["params_kind"].is_string() && c["params_kind"].get<std::string>() == "active";
}

std::string render_comparison_markdown(const json & c, const std::vector<std::string> & plot_files) {
    std::ostringstream o;
    auto fixed = [](double v, int d) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.*f", d, v);
        return std::string(buf);
    };
    const bool active = comparison_is_active(c);
    o << "# Outlier features across models (" << c.value("mode", "") << " mode" << (active ? ", against active parameters per token" : "")
      << ")\n\n"
      << "| model | " << (active ? "active params" : "params") << " | outliers | unique dims | mean layer % | mean position % | sequences |\n|---|---:|---:|---:|---:|---:|---:|\n";
    for (const auto & r : c.at("rows")) {
        std::string params = "-";
        if (r["params"].is_number()) params = fixed(r["params"].get<double>() / 1e9, 2) + "B";
        o << "| " << r.value("label", "") << " | " << params << " | " << r.value("num_outliers", 0) << " | " << r.value("unique_dims", 0)
          << " | " << fixed(r.value("mean_layer_pct", 0.0), 1) << " | " << fixed(r.value("mean_position_pct", 0.0), 1) << " | "
          << r.value("sequences", 0) << " |\n";
    }
    o << "\n";
    for (const auto & p : plot_files)
        if (p.size() > 4 && p.substr(p.size() - 4) == ".png") o << "![](" << std::filesystem::path(p).filename().string() << ")\n\n";
    return o.str();
}

FinalizeOutcome finalize_run(const Statistics & stats, const FinalizeOptions & options) {
    std::error_code ec;
    std::filesystem::create_directories(options.out_dir, ec);
    if (ec) throw common::Error::file(options.out_dir, "cannot create the output directory: " + ec.message());
    FinalizeOutcome out;
    out.statistics_path = options.out_dir + "/outliers.stats.cbor";
    save_statistics(stats, out.statistics_path);  // first: the statistics survive a failing report
    if (const std::string w = nonfinite_warning(stats); !w.empty()) common::log::warn("analysis: WARNING: ", w);
    out.result = build_result(stats, options.report, options.token_text);
    out.result["run"]["statistics_file"] = "outliers.stats.cbor";
    out.result_path = options.out_dir + "/outliers.json";
    // Run metadata from a statistics file (CBOR) may hold text that is not UTF-8; JSON cannot, so
    // such bytes are written as U+FFFD instead of failing the report.
    write_text_file(out.result_path, out.result.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    if (options.plots) out.plots = write_plots(out.result, options.out_dir + "/plots");
    else out.plots.skipped_reason = kPlotsNotRequested;
    out.report_path = options.out_dir + "/report.md";
    write_text_file(out.report_path, render_markdown(out.result, out.plots.files));
    return out;
}

}  // namespace analysis
