// analyze extract [flags] -- run MODEL_DIR [extract flags]: the fused mode. Runs the extractor's own
// `extract` command line with the streaming accumulator as an extra sink (captures stay on the
// device, nothing is written per activation), then finalize_run. --baseline attaches a sink that
// takes nothing instead: the forward pass alone, for measuring the statistics' overhead.
#include "analysis/cli/verbs.h"

#include "common/error.h"
#include "common/log.h"

#include "extractor/cli/cli.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>

namespace analysis::cli {

namespace {

class NullSink final : public extractor::CaptureSink {
public:
    bool wants(extractor::Site, int) const override { return false; }
    void begin_batch(const extractor::BatchInfo &) override {}
    void on_capture(extractor::Site, int, const at::Tensor &) override {}
    void end_batch() override {}
};

// What metadata the run has: metadata.json when extract wrote one (--out), else the command line.
nlohmann::json run_metadata(const std::vector<std::string> & args) {
    for (size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == "--out") {
            std::ifstream in(std::filesystem::path(args[i + 1]) / "metadata.json");
            if (in) {
                try {
                    return nlohmann::json::parse(in);
                } catch (const nlohmann::json::exception &) {
                }
            }
        }
    nlohmann::json meta = {{"extract_args", args}};
    // args are extract's own: {"run", MODEL_DIR, flags...}.
    if (args.size() > 1 && args[0] == "run") meta["model"] = {{"dir", std::filesystem::absolute(args[1]).string()}};
    return meta;
}

}  // namespace

int run_fused(const FusedOptions & o, const common::Output & out) {
    if (o.extract_args.empty() || o.extract_args[0] != "run")
        throw common::Error::usage("extract: give the extract command after --, e.g. analyze extract -o out -- run MODEL_DIR --tokens ids.json");
    if (o.out_dir.empty()) throw common::Error::usage("extract: give the analysis output directory with -o");
    const auto report = o.criteria.report_options();
    std::vector<std::string> args = {"extract"};
    args.insert(args.end(), o.extract_args.begin(), o.extract_args.end());
    std::vector<char *> argv;
    for (auto & a : args) argv.push_back(a.data());

    if (o.baseline) {
        NullSink sink;
        return extractor::cli::extract_main(static_cast<int>(argv.size()), argv.data(), {&sink});
    }
    OutlierAccumulator acc(o.accumulate);
    auto metadata = [&] {
        nlohmann::json m = run_metadata(std::vector<std::string>(args.begin() + 1, args.end()));
        if (!o.model_name.empty()) m["model_name"] = o.model_name;
        return m;
    };
    std::error_code ec;
    std::filesystem::create_directories(o.out_dir, ec);
    if (ec) throw common::Error::file(o.out_dir, "cannot create the output directory: " + ec.message());
    const std::string partial = o.out_dir + "/outliers.partial.stats.cbor";
    std::unique_ptr<CheckpointSink> checkpoints;
    extractor::CaptureSink * sink = &acc;
    if (o.checkpoint_every > 0) {
        checkpoints = std::make_unique<CheckpointSink>(acc, partial, o.checkpoint_every, metadata());
        sink = checkpoints.get();
    }
    const int rc = extractor::cli::extract_main(static_cast<int>(argv.size()), argv.data(), {sink});
    if (rc != 0) {
        if (checkpoints && checkpoints->checkpoints_written() > 0)
            common::log::warn("extract failed; the statistics of the batches before the last checkpoint are in ", partial,
                              " (analyze report ", partial, ")");
        return rc;  // extract printed its error already
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto stats = acc.statistics(metadata());
    FinalizeOptions f;
    f.out_dir = o.out_dir;
    f.report = report;
    f.token_text = load_token_text(o.tokenizer, stats.metadata);
    f.plots = o.plots;
    const auto outcome = finalize_run(stats, f);
    if (checkpoints) std::filesystem::remove(partial, ec);  // the final statistics supersede it
    common::log::info("analysis finalized in ",
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s");
    print_summary(outcome, out);
    return 0;
}

}  // namespace analysis::cli
