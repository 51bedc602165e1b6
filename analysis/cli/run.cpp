// analyze RUN_DIR: replay a saved extract run through the streaming accumulator and write the
// statistics, result JSON, report and plots (the same finalize_run as `extract --analyze`).
#include "analysis/cli/verbs.h"

#include "common/error.h"
#include "common/log.h"

#include "analysis/run_reader.h"

#include <filesystem>

namespace analysis::cli {

int run_analyze_run(const RunOptions & o, const common::Output & out) {
    OutlierAccumulator acc(o.accumulate);
    const auto report = o.criteria.report_options();  // validate flags before reading gigabytes
    const auto meta = replay_run(o.run_dir, acc, o.device);
    auto stats = acc.statistics(meta);
    stats.metadata["sources"] = nlohmann::json::array({std::filesystem::absolute(o.run_dir).string()});

    FinalizeOptions f;
    f.out_dir = o.out_dir.empty() ? o.run_dir + "/analysis" : o.out_dir;
    f.report = report;
    f.token_text = load_token_text(o.tokenizer, meta);
    f.plots = o.plots;
    const auto outcome = finalize_run(stats, f);
    print_summary(outcome, out);
    return 0;
}

}  // namespace analysis::cli
