// analyze report RESULT.json | STATS.cbor: regenerate the markdown report and plots from a result
// (e.g. on a laptop after a GPU-only run that had no gnuplot), or a result from statistics (e.g.
// after `analyze merge`, or with other criteria).
#include "analysis/cli/verbs.h"

#include "analysis/stats_file.h"
#include "common/error.h"
#include "common/log.h"

#include <filesystem>

namespace analysis::cli {

int run_report(const ReportVerbOptions & o, const common::Output & out) {
    const std::filesystem::path input(o.input);
    const std::string dir = o.out_dir.empty() ? (input.has_parent_path() ? input.parent_path().string() : ".") : o.out_dir;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw common::Error::file(dir, "cannot create the output directory: " + ec.message());

    FinalizeOutcome outcome;
    if (input.extension() == ".cbor") {
        const auto stats = load_statistics(o.input);
        if (const std::string w = nonfinite_warning(stats); !w.empty()) common::log::warn("analysis: WARNING: ", w);
        outcome.result = build_result(stats, o.criteria.report_options(), load_token_text(o.tokenizer));
        outcome.result["run"]["statistics_file"] = std::filesystem::absolute(input).string();
        outcome.statistics_path = o.input;
        outcome.result_path = dir + "/outliers.json";
        // Metadata text that is not UTF-8 (CBOR allows it, JSON does not) becomes U+FFFD.
        write_text_file(outcome.result_path, outcome.result.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    } else {
        if (o.criteria.layer_fraction || o.criteria.position_fraction || o.criteria.mode != "both")
            throw common::Error::usage("report: criteria flags need the statistics file (" + o.input +
                                       " is a finished result); pass the .stats.cbor file instead");
        outcome.result = load_result(o.input);
        outcome.result_path = o.input;
    }
    if (o.plots) outcome.plots = write_plots(outcome.result, dir + "/plots");
    else outcome.plots.skipped_reason = kPlotsNotRequested;
    outcome.report_path = dir + "/report.md";
    write_text_file(outcome.report_path, render_markdown(outcome.result, outcome.plots.files));
    print_summary(outcome, out);
    return 0;
}

}  // namespace analysis::cli
