// `extract` entry point. The command line lives in cli.cpp (extract_main, embeddable); this program
// plugs in the outlier analysis for `extract run ... --analyze DIR`, so captures stream into the
// analysis accumulators on the device in the same pass. Only this file links analysis: the
// extractor library stays independent of it.
#include "analysis/accumulators.h"
#include "analysis/report.h"
#include "common/program.h"
#include "extractor/cli/cli.h"

namespace {

class OutlierAnalysis final : public extractor::cli::FusedAnalysis {
public:
    explicit OutlierAnalysis(std::string out_dir) : out_dir_(std::move(out_dir)) {}

    extractor::CaptureSink & sink() override { return accumulator_; }

    nlohmann::json finish(const nlohmann::json & run_metadata) override {
        analysis::FinalizeOptions options;
        options.out_dir = out_dir_;
        options.token_text = analysis::load_token_text("", run_metadata);
        analysis::FinalizeOutcome outcome = analysis::finalize_run(accumulator_.statistics(run_metadata), options);
        nlohmann::json modes = nlohmann::json::object();
        for (const auto & [name, mode] : outcome.result.at("modes").items()) modes[name] = mode.at("summary");
        return {{"out_dir", out_dir_},
                {"result", outcome.result_path},
                {"report", outcome.report_path},
                {"statistics", outcome.statistics_path},
                {"plots", outcome.plots.produced ? nlohmann::json(outcome.plots.files)
                                                 : nlohmann::json(outcome.plots.skipped_reason)},
                {"modes", modes}};
    }

private:
    std::string out_dir_;
    // The defaults of `analyze extract`, the threshold sweep included.
    analysis::OutlierAccumulator accumulator_{[] {
        analysis::AccumulatorOptions o;
        o.sweep_thresholds.assign(analysis::kDefaultSweepThresholds.begin(), analysis::kDefaultSweepThresholds.end());
        return o;
    }()};
};

}  // namespace

int main(int argc, char ** argv) {
    common::exit_now(extractor::cli::extract_main(argc, argv, {}, [](const std::string & out_dir) {
        return std::make_unique<OutlierAnalysis>(out_dir);
    }));
}
