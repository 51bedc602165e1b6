// `analyze`: the only CLI11 translation unit of the program. Wires every verb's flags into its
// options struct and calls the verb (one file per verb under analysis/cli/). `analyze RUN_DIR` is
// short for `analyze run RUN_DIR`.
#include "analysis/cli/verbs.h"

#include "common/cli_parse.h"
#include "common/error.h"
#include "common/log.h"
#include "common/program.h"
#include "extractor/cuda/device_memory.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace {

// The default threshold sweep (analysis::kDefaultSweepThresholds) as the flag's text.
std::string default_thresholds() {
    std::string out;
    for (double t : analysis::kDefaultSweepThresholds) {
        std::ostringstream one;
        one << t;
        out += (out.empty() ? "" : ",") + one.str();
    }
    return out;
}

void add_criteria(CLI::App * cmd, analysis::cli::CriteriaOptions & c) {
    cmd->add_option("--mode", c.mode, "Criteria: predecessor (the Python pipeline's exact counting), paper (LLM.int8()), both")
        ->check(CLI::IsMember({"predecessor", "paper", "both"}))
        ->capture_default_str();
    cmd->add_option("--layer-fraction", c.layer_fraction, "Override the layer fraction (default 0.25, inclusive)")->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--position-fraction", c.position_fraction, "Override the position fraction (default 0.06, inclusive)")->check(CLI::Range(0.0, 1.0));
}

}  // namespace

int main(int argc, char ** argv) {
    bool json = false;
    extractor::device_memory::prefer_expandable_segments();
    common::install_interrupt_handlers();
    common::exit_now(common::run_program("analyze", &json, [&]() -> int {
        // `analyze RUN_DIR ...` = `analyze run RUN_DIR ...`.
        std::vector<std::string> args(argv, argv + argc);
        static const char * verbs[] = {"run", "merge", "report", "compare", "extract"};
        if (args.size() > 1 && args[1][0] != '-' &&
            std::none_of(std::begin(verbs), std::end(verbs), [&](const char * v) { return args[1] == v; }))
            args.insert(args.begin() + 1, "run");
        std::vector<char *> cargs;
        for (auto & a : args) cargs.push_back(a.data());

        CLI::App app{"analyze: LLM.int8()-style outlier features from captured layer-norm outputs.\n"
                     "Examples:\n"
                     "  analyze runs/olmoe                       # statistics, outliers.json, report.md, plots\n"
                     "  analyze merge a.stats.cbor b.stats.cbor -o all.stats.cbor\n"
                     "  analyze report runs/olmoe/analysis/outliers.json\n"
                     "  analyze compare */analysis/outliers.json --params OLMoE-1B-7B=6.9B -o sweep\n"
                     "  analyze extract -o out/analysis -- run ./OLMoE-1B-7B --tokens ids.json --device cuda"};
        app.require_subcommand(1);
        app.fallthrough();  // global flags (--json, -v) also after the verb
        int verbose = 0;
        bool quiet = false;
        app.add_flag("--json", json, "JSON on stdout (and errors as JSON on stderr)");
        app.add_flag("-v,--verbose", verbose, "More logging (repeatable)");
        app.add_flag("-q,--quiet", quiet, "Warnings and errors only");

        // Ranges checked at parse time (exit 2): a negative top-K or dim count used to be accepted
        // and silently meant "off", a threshold <= 0 or NaN would count every value as a hit.
        const CLI::Range massive_range(0, 1 << 20, "0 (off) to 1048576");
        const CLI::Range token_dims_range(0, 1 << 16, "0 to 65536");
        const CLI::Validator positive_threshold(
            [](std::string & v) {
                double t = 0;
                try {
                    t = std::stod(v);
                } catch (const std::exception &) {
                    return std::string("not a number: ") + v;
                }
                return t > 0 && std::isfinite(t) ? std::string() : "must be a positive finite number, got " + v;
            },
            "POSITIVE");

        analysis::cli::RunOptions run;
        double threshold = 6.0;
        bool native = false, no_plots_run = false, no_histogram = false;
        auto * run_cmd = app.add_subcommand("run", "Analyse a saved extract run directory (also: analyze RUN_DIR)\n"
                                                   "Example: analyze runs/olmoe --mode predecessor --massive 8");
        run_cmd->add_option("run_dir", run.run_dir, "Run directory written by `extract run --out`")->required();
        run_cmd->add_option("-o,--out", run.out_dir, "Output directory (default RUN_DIR/analysis)");
        run_cmd->add_option("--device", run.device, "Device to analyse on: cpu, cuda, cuda:1")->capture_default_str();
        run_cmd->add_option("--tokenizer", run.tokenizer, "tokenizer.json for token strings (default: the run's tokenizer)");
        run_cmd->add_option("--threshold", threshold, "Magnitude threshold, inclusive")->check(positive_threshold)->capture_default_str();
        run_cmd->add_flag("--native-precision", native, "Threshold the stored values as they are (default: round to bf16 first, as the predecessor)");
        run_cmd->add_option("--massive", run.accumulate.massive_top_k, "Keep the top-K residual |x| per layer (needs residual captures)")->check(massive_range);
        run_cmd->add_option("--token-dims", run.accumulate.token_dims_per_batch, "Dims per batch whose tokens are tallied")->check(token_dims_range)->capture_default_str();
        run_cmd->add_flag("--no-histogram", no_histogram, "Skip the magnitude histogram");
        std::string run_thresholds = default_thresholds();
        run_cmd->add_option("--thresholds", run_thresholds, "Threshold sweep counted in the same pass (comma list, or none)")->capture_default_str();
        run_cmd->add_flag("--no-plots", no_plots_run, "Write JSON and markdown only");
        add_criteria(run_cmd, run.criteria);

        analysis::cli::MergeOptions merge;
        auto * merge_cmd = app.add_subcommand("merge", "Merge statistics files (batches, workers, runs over other sequences)\n"
                                                       "Example: analyze merge w0/analysis/outliers.stats.cbor w1/analysis/outliers.stats.cbor -o all.stats.cbor");
        merge_cmd->add_option("inputs", merge.inputs, "Statistics files (*.stats.cbor)")->required();
        merge_cmd->add_option("-o,--out", merge.output, "Merged statistics file")->required();

        analysis::cli::ReportVerbOptions report;
        bool no_plots_report = false;
        auto * report_cmd = app.add_subcommand("report", "Regenerate report.md and plots from outliers.json, or everything from a statistics file\n"
                                                         "Example: analyze report all.stats.cbor --mode paper -o merged");
        report_cmd->add_option("input", report.input, "outliers.json or *.stats.cbor")->required();
        report_cmd->add_option("-o,--out", report.out_dir, "Output directory (default: the input's folder)");
        report_cmd->add_option("--tokenizer", report.tokenizer, "tokenizer.json for token strings (statistics input)");
        report_cmd->add_flag("--no-plots", no_plots_report, "Markdown only");
        add_criteria(report_cmd, report.criteria);

        analysis::cli::CompareVerbOptions compare;
        bool no_plots_compare = false;
        auto * compare_cmd = app.add_subcommand("compare", "Compare models: outliers, mean layer %, mean position % vs parameters\n"
                                                           "Example: analyze compare runs/olmoe/analysis/outliers.json runs/qwen3/analysis/outliers.json "
                                                           "--params OLMoE-1B-7B=6.9B --params Qwen3-30B-A3B=30.5B -o sweep");
        compare_cmd->add_option("inputs", compare.inputs, "Result files (outliers.json)")->required();
        compare_cmd->add_option("-o,--out", compare.out_dir, "Also write comparison.json, comparison.md and plots here");
        compare_cmd->add_option("--mode", compare.mode, "Which mode's numbers to compare")
            ->check(CLI::IsMember({"predecessor", "paper"}))
            ->capture_default_str();
        compare_cmd->add_option("--params", compare.params,
                                "LABEL=COUNT parameter counts (7B, 1.3e9, 300M); LABEL = a result's model name (its run's model "
                                "directory, or --model-name) or its file; a label matching no result is an error");
        compare_cmd->add_option("--params-kind", compare.params_kind, "What the counts are: total, or active parameters per token (MoE)")
            ->check(CLI::IsMember({"total", "active"}))
            ->capture_default_str();
        compare_cmd->add_flag("--no-plots", no_plots_compare, "Tables only");

        analysis::cli::FusedOptions fused;
        double fused_threshold = 6.0;
        bool fused_native = false, no_plots_fused = false;
        auto * extract_cmd = app.add_subcommand("extract", "Extract and analyse in one pass (captures stay on the GPU)\n"
                                                           "Example: analyze extract -o runs/olmoe/analysis -- run ./OLMoE-1B-7B --tokens ids.json --device cuda");
        extract_cmd->add_option("-o,--out", fused.out_dir, "Analysis output directory")->required();
        extract_cmd->add_option("--tokenizer", fused.tokenizer, "tokenizer.json for token strings (default: the run's)");
        extract_cmd->add_option("--threshold", fused_threshold, "Magnitude threshold, inclusive")->check(positive_threshold)->capture_default_str();
        extract_cmd->add_flag("--native-precision", fused_native, "Threshold the model's values as they are (default: bf16-rounded)");
        extract_cmd->add_option("--massive", fused.accumulate.massive_top_k, "Top-K residual |x| per layer (add --residual to the extract flags)")->check(massive_range);
        extract_cmd->add_option("--token-dims", fused.accumulate.token_dims_per_batch, "Dims per batch whose tokens are tallied")->check(token_dims_range)->capture_default_str();
        extract_cmd->add_flag("--no-plots", no_plots_fused, "Write JSON and markdown only");
        std::string fused_thresholds = default_thresholds();
        extract_cmd->add_option("--thresholds", fused_thresholds, "Threshold sweep counted in the same pass (comma list, or none)")->capture_default_str();
        extract_cmd->add_flag("--expert-stats", fused.accumulate.expert_stats,
                              "Per MoE layer and expert: tokens routed, max |x| of its down_proj output, tokens reaching the threshold");
        extract_cmd->add_option("--checkpoint-every", fused.checkpoint_every,
                                "Save OUT/outliers.partial.stats.cbor every N batches (kept if the run dies)")
            ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
        extract_cmd->add_flag("--baseline", fused.baseline, "Run the forward pass with no statistics (benchmark baseline)");
        extract_cmd->add_option("--model-name", fused.model_name, "How reports name the model (default: the model directory's name)");
        extract_cmd->add_option("extract_args", fused.extract_args, "After --: the `extract` command (run MODEL_DIR ...)");
        add_criteria(extract_cmd, fused.criteria);

        if (auto done = common::parse_command_line(app, static_cast<int>(cargs.size()), cargs.data(), "analyze")) return *done;
        common::log::set_verbosity(verbose, quiet);
        common::Output out(json ? common::OutputFormat::Json : common::OutputFormat::Table);

        if (run_cmd->parsed()) {
            run.accumulate.threshold = threshold;
            run.accumulate.round_bf16 = !native;
            run.accumulate.histogram = !no_histogram;
            if (run_thresholds != "none") run.accumulate.sweep_thresholds = analysis::parse_thresholds(run_thresholds);
            run.plots = !no_plots_run;
            return analysis::cli::run_analyze_run(run, out);
        }
        if (extract_cmd->parsed()) {
            fused.accumulate.threshold = fused_threshold;
            fused.accumulate.round_bf16 = !fused_native;
            if (fused_thresholds != "none") fused.accumulate.sweep_thresholds = analysis::parse_thresholds(fused_thresholds);
            fused.plots = !no_plots_fused;
            return analysis::cli::run_fused(fused, out);
        }
        if (merge_cmd->parsed()) return analysis::cli::run_merge(merge, out);
        if (report_cmd->parsed()) {
            report.plots = !no_plots_report;
            return analysis::cli::run_report(report, out);
        }
        if (compare_cmd->parsed()) {
            compare.plots = !no_plots_compare;
            return analysis::cli::run_compare(compare, out);
        }
        throw common::Error::usage("no verb given; see analyze --help");
    }));
}
