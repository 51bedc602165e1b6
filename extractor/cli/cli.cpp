// The `extract` command line (the only CLI11 translation unit of this program). Verbs:
//   extract run MODEL_DIR ...       capture layernorm outputs to safetensors and/or extra sinks
//   extract inspect MODEL_DIR       family, parameters, layers, experts, memory per dtype
//   extract fixture --family F ...  write a tiny random HF checkpoint (tests, demo)
#include "extractor/cli/cli.h"

#include <CLI/CLI.hpp>

#include <iostream>

#include "common/cli_parse.h"
#include "common/error.h"
#include "common/log.h"
#include "common/output.h"
#include "common/program.h"
#include "extractor/checkpoint/hf_config.h"
#include "extractor/cli/verbs.h"
#include "extractor/compat.h"
#include "extractor/cuda/device_memory.h"
#include "extractor/families/family.h"

namespace extractor::cli {

namespace {

const char * kRunHelp =
    "Run the model over token sequences and capture, per layer, the outputs of input_layernorm (ln_attn) and\n"
    "post_attention_layernorm (ln_mlp), optionally the residual stream.\n\n"
    "Examples:\n"
    "  extract run ./OLMoE-1B-7B --text corpus.txt --seq-len 2048 --num-sequences 16 --out run1\n"
    "  extract run ./Qwen3-30B-A3B --jsonl docs.jsonl --layers 0-3,47 --max-memory 0=76GiB,1=76GiB --out run2\n"
    "  extract run ./cfg-only --random-weights --tokens ids.json --seq-len 2048 --batch-size 4 --absmax --json";

// "model_type: llama, qwen2, ..." from the registry, so the help cannot fall behind a new family.
std::string family_list() {
    std::string text = "model_type:";
    for (const Family * f : all_families()) text += (text.back() == ':' ? " " : ", ") + std::string(f->name());
    return text;
}

}  // namespace

int extract_main(int argc, char ** argv, const std::vector<CaptureSink *> & extra_sinks,
                 const FusedAnalysisFactory & analyze) {
    bool json = false;
    device_memory::prefer_expandable_segments();
    return common::run_program("extract", &json, [&]() -> int {
        common::install_interrupt_handlers();
        CLI::App app{"extract: run Hugging Face decoder checkpoints (Llama, Qwen2, Qwen3, OLMoE, Qwen3-MoE) in libtorch and "
                     "capture layernorm outputs for outlier-feature research"};
        app.require_subcommand(1);
        app.fallthrough();  // --json, -v, -q are accepted after the verb too
        app.set_version_flag("--version", std::string("extract ") + extractor_version() + " (libtorch " + compat::torch_version() + ")");
        int verbose = 0;
        bool quiet = false;
        app.add_flag("--json", json, "Print results (and errors) as JSON");
        app.add_flag("-v,--verbose", verbose, "More logging (-vv for debug)");
        app.add_flag("-q,--quiet", quiet, "Only warnings and errors on stderr");

        RunVerbOptions run;
        ExtractOptions & e = run.extract;
        std::string dtype = "bf16", layers, sites = "ln_attn,ln_mlp", strategy = "sequential";
        bool residual = false;
        auto * run_cmd = app.add_subcommand("run", kRunHelp);
        run_cmd->add_option("model_dir", e.model_dir, "Checkpoint directory (config.json + safetensors)")->required();
        run_cmd->add_option("--text", e.input.text_file, "Plain-text input file (tokenized with the checkpoint's tokenizer.json)");
        run_cmd->add_option("--jsonl", e.input.jsonl_file, "JSONL input, one document per line");
        run_cmd->add_option("--text-field", e.input.text_field, "JSONL field holding the text")->capture_default_str();
        run_cmd->add_option("--tokens", e.input.tokens_file,
                            "Token ids: JSON [ids] or [[ids],...], or whitespace/comma separated integers");
        run_cmd->add_option("--tokenizer", e.input.tokenizer, "tokenizer.json (default: MODEL_DIR/tokenizer.json)");
        run_cmd->add_option("--seq-len", e.input.seq_len, "Tokens per sequence")->capture_default_str();
        run_cmd->add_option("--num-sequences", e.input.num_sequences, "Sequences to run (-1: every window)")->capture_default_str();
        run_cmd->add_option("--batch-size", e.input.batch_size, "Sequences per forward pass")->capture_default_str();
        run_cmd->add_option("--overlap", e.input.overlap, "Tokens shared by consecutive windows")->capture_default_str();
        run_cmd->add_flag("--shuffle", e.input.shuffle, "Sample windows in a seeded random order");
        run_cmd->add_option("--seed", e.input.seed, "Seed for --shuffle")->capture_default_str();
        run_cmd->add_flag("!--no-special-tokens", e.input.add_special_tokens, "Do not add BOS/EOS per document");
        run_cmd->add_option("--layers", layers, "Layers to capture, e.g. 0-3,7 (default: all layers in config.json)");
        run_cmd->add_option("--sites", sites, "Capture sites: ln_attn, ln_mlp, residual (comma separated)")->capture_default_str();
        run_cmd->add_flag("--residual", residual, "Also capture the residual stream after each layer");
        run_cmd->add_option("--dtype", dtype, "Compute dtype: bf16, f16, f32")->capture_default_str();
        run_cmd->add_option("--device", e.load.device, "cpu, cuda (GPU 0), cuda:N, or auto (every visible GPU, else the CPU)")->capture_default_str();
        run_cmd->add_option("--max-memory", e.load.max_memory,
                            "Per-device budgets, e.g. 0=76GiB,1=76GiB,cpu=120GiB (cpu= allows offload to pinned memory)");
        run_cmd->add_flag("!--no-host-memory-check", e.load.host_memory_check,
                          "Load even when the host memory a CPU run (or a CUDA run's offloaded layers) needs is more than "
                          "MemAvailable or the cgroup limit allows (by default such a run is refused, exit 4)");
        run_cmd->add_option("--offload-prefetch", e.load.offload_prefetch,
                            "Offloaded layers copied ahead of the running one on a second stream (default 1; 0: each "
                            "copied when it runs). The GPU keeps room for this many + 1")
            ->check(CLI::Range(0, 8));
        run_cmd->add_option("--placement", strategy, "Multi-GPU placement: sequential or balanced")->capture_default_str();
        run_cmd->add_option("--load-stall-timeout", e.load.stall_timeout_s, "Seconds without loading progress before giving up")
            ->capture_default_str();
        run_cmd->add_option("--load-threads", e.load.threads, "Threads reading the checkpoint")->capture_default_str();
        run_cmd->add_option("--out", e.out_dir, "Write activations/*.safetensors + metadata.json here");
        run_cmd->add_option("--save-dtype", e.save_dtype, "dtype of saved activations (default: the compute dtype)");
        run_cmd->add_flag("--save-routing", e.save_routing,
                          "With --out: also save each MoE layer's expert choice per token (layer_{l}_experts, int32 [B,T,K])");
        run_cmd->add_flag("--absmax", e.absmax, "Print per-layer max |x| and |x|>=6 counts (computed on the device)");
        run_cmd->add_flag("--perplexity", e.perplexity,
                          "Also compute next-token NLL through the final norm and lm_head (tied or not) in the same pass; "
                          "per-sequence and overall perplexity and mean NLL by position go to the run JSON. Needs every "
                          "layer: refused with a --layers list that stops before the last layer");
        run_cmd->add_option("--perplexity-chunk", e.perplexity_chunk_tokens,
                            "Tokens per logits chunk for --perplexity (0: about 2^26 logits per chunk)")
            ->capture_default_str();
        run_cmd->add_flag("--random-weights", e.random_weights, "Ignore safetensors; random weights from config.json alone");
        run_cmd->add_option("--weight-seed", e.weight_seed, "Seed for --random-weights")->capture_default_str();
        run_cmd->add_flag("--dequantize", e.load.dequantize,
                          "gpt_oss: dequantize the MXFP4 experts to --dtype at load (default: keep them packed, "
                          "dequantize a chunk of experts at a time in the forward)");
        run_cmd->add_option("--warmup", e.warmup_batches, "Untimed warm-up passes over the first batch (benchmarks)")
            ->capture_default_str();
        run_cmd->add_flag("--plan", e.plan_only, "Print the placement plan and memory estimate; load nothing");
        std::string analyze_dir;
        if (analyze)
            run_cmd->add_option("--analyze", analyze_dir,
                                "Fused outlier analysis into DIR (outliers.json, report.md, plots): statistics are "
                                "computed on the device as the forward runs, no activations are written");
        run_cmd->add_flag("--plain-ops", [](int64_t) { compat::set_fast_paths(false); },
                          "Use the plain (libtorch 1.13) ops even where fast paths exist");

        InspectOptions inspect;
        auto * inspect_cmd = app.add_subcommand(
            "inspect", "Show a checkpoint's family, parameter counts (total and active), layers, experts and memory per dtype.\n"
                       "When the directory has weights, their headers are checked against config.json (every tensor present\n"
                       "with the implied shape and dtype); tensor data is not read.\n\n"
                       "Examples:\n  extract inspect ./OLMoE-1B-7B\n  extract inspect ./Qwen3-30B-A3B --json");
        inspect_cmd->add_option("model_dir", inspect.model_dir, "Checkpoint directory (config.json)")->required();
        inspect_cmd->add_flag("--config-only", inspect.config_only, "Read config.json alone; do not open the weights");

        FixtureVerbOptions fix;
        std::string fix_dtype = "f32";
        std::vector<std::string> plants;
        std::string mlp_only;
        auto * fixture_cmd = app.add_subcommand(
            "fixture", "Write a tiny random-weight checkpoint in the Hugging Face layout, optionally with planted outliers.\n\n"
                       "Examples:\n  extract fixture --family olmoe --out /tmp/olmoe-tiny\n"
                       "  extract fixture --family qwen3_moe --out /tmp/q --layers 4 --shards 3 --plant 7,42@0-3");
        fixture_cmd->add_option("--family", fix.fixture.family, family_list())->required();
        fixture_cmd->add_option("--out", fix.fixture.out_dir, "Output directory")->required();
        fixture_cmd->add_option("--layers", fix.fixture.layers, "Decoder layers")->capture_default_str();
        fixture_cmd->add_option("--hidden", fix.fixture.hidden, "Hidden size")->capture_default_str();
        fixture_cmd->add_option("--heads", fix.fixture.heads, "Attention heads")->capture_default_str();
        fixture_cmd->add_option("--kv-heads", fix.fixture.kv_heads, "Key/value heads")->capture_default_str();
        fixture_cmd->add_option("--head-dim", fix.fixture.head_dim, "Head dim")->capture_default_str();
        fixture_cmd->add_option("--intermediate", fix.fixture.intermediate, "MLP width (OLMoE, Mixtral: expert width)")->capture_default_str();
        fixture_cmd->add_option("--experts", fix.fixture.experts, "Experts (MoE families)")->capture_default_str();
        fixture_cmd->add_option("--top-k", fix.fixture.top_k, "Experts per token")->capture_default_str();
        fixture_cmd->add_option("--moe-intermediate", fix.fixture.moe_intermediate, "Expert width (qwen3_moe)")->capture_default_str();
        fixture_cmd->add_option("--mlp-only-layers", mlp_only, "qwen3_moe layers with a dense MLP, e.g. 1,3");
        fixture_cmd->add_flag("--norm-topk-prob", fix.fixture.norm_topk_prob, "Renormalise the top-k routing weights");
        fixture_cmd->add_option("--vocab", fix.fixture.vocab, "Vocabulary size")->capture_default_str();
        fixture_cmd->add_option("--dtype", fix_dtype, "Stored dtype: f32, bf16, f16")->capture_default_str();
        fixture_cmd->add_option("--shards", fix.fixture.shards, "Split into this many shard files (+ index)")->capture_default_str();
        fixture_cmd->add_flag("--tie-embeddings", fix.fixture.tie_embeddings,
                              "tie_word_embeddings true: lm_head is the embedding (no lm_head.weight written)");
        fixture_cmd->add_flag("--legacy-keys", fix.fixture.legacy_keys, "Write torch_dtype/rope_theta instead of dtype/rope_parameters");
        fixture_cmd->add_flag("--fused-experts", fix.fixture.fused_experts,
                              "MoE: write experts in the transformers v5 layout (mlp.experts.gate_up_proj/down_proj), same values");
        int64_t sliding_window = 0;
        fixture_cmd->add_option("--sliding-window", sliding_window, "mixtral: config sliding_window (default null); gpt_oss: window of the sliding layers (default 4)")
            ->check(CLI::Range(int64_t{1}, hf_limits::kPositions));
        fixture_cmd->add_option("--seed", fix.fixture.seed, "Weights depend only on this seed and each tensor's name")->capture_default_str();
        fixture_cmd->add_option("--plant", plants, "Planted outliers DIMS@LAYERS[xGAIN], e.g. 7,42@0-3 (repeatable)");

        if (auto done = common::parse_command_line(app, argc, argv, "extract")) return *done;
        common::log::set_verbosity(verbose, quiet);
        common::Output out(json ? common::OutputFormat::Json : common::OutputFormat::Table);

        if (run_cmd->parsed()) {
            e.load.dtype = parse_dtype(dtype);
            e.load.strategy = parse_placement_strategy(strategy);
            if (!layers.empty()) e.layers = parse_layer_list(layers);
            e.sites.clear();
            std::stringstream ss(sites);
            std::string s;
            while (std::getline(ss, s, ','))
                if (!s.empty()) e.sites.push_back(parse_site(s));
            if (residual && std::find(e.sites.begin(), e.sites.end(), Site::Residual) == e.sites.end())
                e.sites.push_back(Site::Residual);
            if (e.sites.empty()) throw common::Error::usage("--sites: no sites given");
            if (!e.save_dtype.empty()) (void)parse_dtype(e.save_dtype);
            if (e.save_routing && e.out_dir.empty()) throw common::Error::usage("--save-routing writes into the --out directory: give --out DIR");
            if (e.out_dir.empty() && !e.absmax && !e.perplexity && extra_sinks.empty() && !e.plan_only && analyze_dir.empty())
                throw common::Error::usage("nothing would receive the captures: give --out DIR, --analyze DIR, --absmax and/or --perplexity");
            std::unique_ptr<FusedAnalysis> fused;
            std::vector<CaptureSink *> sinks = extra_sinks;
            if (!analyze_dir.empty() && !e.plan_only) {
                fused = analyze(analyze_dir);
                sinks.push_back(&fused->sink());
            }
            return run_run(run, out, sinks, fused.get());
        }
        if (inspect_cmd->parsed()) return run_inspect(inspect, out);
        if (fixture_cmd->parsed()) {
            fix.fixture.dtype = parse_dtype(fix_dtype);
            if (sliding_window > 0) fix.fixture.sliding_window = sliding_window;
            for (const auto & p : plants) fix.fixture.plants.push_back(parse_plant(p));
            if (!mlp_only.empty())
                for (int l : parse_layer_list(mlp_only)) fix.fixture.mlp_only_layers.push_back(l);
            return run_fixture(fix, out);
        }
        throw common::Error::usage("no verb given; see extract --help");
    });
}

}  // namespace extractor::cli
