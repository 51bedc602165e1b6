// analyze compare RESULT...: one row per model (outliers, mean layer %, mean position %, parameter
// count), as the predecessor's sweep reports; with --out also comparison.json/.md and plots.
#include "analysis/cli/verbs.h"

#include "common/error.h"
#include "common/log.h"

#include <cctype>
#include <filesystem>

namespace analysis::cli {

namespace {

// "7B", "1.3e9", "300M", "21b" -> parameter count.
double parse_count(const std::string & text, const std::string & flag) {
    size_t used = 0;
    double v = 0;
    try {
        v = std::stod(text, &used);
    } catch (const std::exception &) {
        throw common::Error::usage(flag + ": '" + text + "' is not a number (e.g. 7B, 1.3e9, 300M)");
    }
    std::string suffix = text.substr(used);
    for (auto & c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (suffix == "B" || suffix == "G") v *= 1e9;
    else if (suffix == "M") v *= 1e6;
    else if (suffix == "K") v *= 1e3;
    else if (suffix == "T") v *= 1e12;
    else if (!suffix.empty()) throw common::Error::usage(flag + ": unknown suffix in '" + text + "' (use K, M, B or T)");
    if (!(v > 0)) throw common::Error::usage(flag + ": parameter count must be positive, got '" + text + "'");
    return v;
}

}  // namespace

int run_compare(const CompareVerbOptions & o, const common::Output & out) {
    if (o.inputs.empty()) throw common::Error::usage("compare: give one or more result files (outliers.json)");
    (void)criteria_for_mode(o.mode);
    CompareOptions c;
    c.mode = o.mode;
    c.params_kind = o.params_kind;
    for (const auto & p : o.params) {
        const auto eq = p.find('=');
        if (eq == std::string::npos || eq == 0)
            throw common::Error::usage("--params: expected LABEL=COUNT (label = model name or result file), got '" + p + "'");
        c.params.emplace_back(p.substr(0, eq), parse_count(p.substr(eq + 1), "--params"));
    }
    std::vector<std::pair<std::string, nlohmann::json>> results;
    for (const auto & path : o.inputs) results.emplace_back(path, load_result(path));
    const auto comparison = build_comparison(results, c);

    if (!o.out_dir.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(o.out_dir, ec);
        if (ec) throw common::Error::file(o.out_dir, "cannot create the output directory: " + ec.message());
        PlotOutcome plots;
        if (o.plots) plots = write_comparison_plots(comparison, o.out_dir);
        if (!plots.produced && o.plots) common::log::warn("comparison plots skipped: ", plots.skipped_reason);
        write_text_file(o.out_dir + "/comparison.json", comparison.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
        write_text_file(o.out_dir + "/comparison.md", render_comparison_markdown(comparison, plots.files));
    }
    out.rows({{"label", "MODEL"}, {"params", "PARAMS"}, {"num_outliers", "OUTLIERS"}, {"unique_dims", "DIMS"},
              {"mean_layer_pct", "LAYER %"}, {"mean_position_pct", "POSITION %"}, {"sequences", "SEQS"}},
             comparison.at("rows"));
    return 0;
}

}  // namespace analysis::cli
