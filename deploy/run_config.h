// The run config of deploy_and_analyze: what to run (model, data, capture, analysis), where
// (resources: GPU filters, price cap, providers in order of preference, disk) and how it ends
// (policy). Read from YAML through common::ConfigNode (file:line errors, unknown keys refused),
// then overridden by flags. validate() refuses every impossible combination BEFORE anything is
// rented, so a bad config costs nothing.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "deploy/hub_rows.h"
#include "deploy/policy.h"

namespace common { class ConfigNode; }

namespace deploy {

// Where the checkpoint comes from. Exactly one of hub_id / local_path / fixture is set.
struct FixtureModel {
    std::string family = "olmoe";  // a model_type `extract fixture` knows
    int layers = 4;
    int hidden = 64;
    std::vector<std::string> plants;  // `extract fixture --plant` specs, e.g. "7,42@0-3"
    uint64_t seed = 0;
};

struct ModelConfig {
    std::string hub_id;       // "Qwen/Qwen3-30B-A3B": fetched on the remote from the Hugging Face Hub
    std::string revision = "main";
    std::string local_path;   // a checkpoint directory on this machine, pushed with the workspace
    std::optional<FixtureModel> fixture;  // a tiny random checkpoint written on the remote
    std::string dtype = "bf16";           // bf16 | f16 | f32 (compute dtype of extract)
    std::string display_name() const;     // hub id, path, or "fixture:<family>"
};

// Token input. Exactly one source. `synthetic_vocab` generates seeded random token ids locally
// (the rehearsal fixture has no tokenizer). `hub_rows` fetches the first rows of a Hub dataset split
// on this machine before anything is rented (deploy/hub_rows.h) into RUN_DIR/data/hub_rows.txt,
// which then travels and is tokenized as a text file.
struct DataConfig {
    std::string text_file;   // local files, pushed with the run payload
    std::string jsonl_file;
    std::string tokens_file;
    std::optional<HubRowsSource> hub_rows;
    std::string text_field = "text";
    std::optional<int64_t> synthetic_vocab;
    uint64_t seed = 0;
    int64_t num_sequences = 4;
    int64_t sequence_length = 2048;
    int64_t batch_size = 1;
    int64_t overlap = 0;
};

struct CaptureConfig {
    std::string layers;                              // "" = all layers; else "0-3,7"
    std::vector<std::string> sites{"ln_attn", "ln_mlp"};
};

struct AnalysisConfig {
    std::string mode = "both";           // predecessor | paper | both (analyze --mode)
    double threshold = 6.0;
    double layer_fraction = 0.25;
    double position_fraction = 0.06;
    // Issue 14, passed to the remote `analyze extract` (deploy/remote_plan.cpp):
    bool perplexity = false;    // extract run --perplexity: next-token loss in the same forward pass
    bool expert_stats = false;  // analyze --expert-stats: per-expert statistics (MoE families)
    std::vector<double> thresholds{3, 4, 5, 6, 8, 10, 20};  // analyze --thresholds; empty: no sweep
};

struct ResourcesConfig {
    std::vector<std::string> providers;          // in order of preference; empty: every keyed cloud
    std::string gpu_filter;                      // substring of the GPU model ("A100", "H100")
    int gpu_count = 1;
    std::optional<double> min_vram_gb;           // per GPU; nullopt = "auto" (from the memory estimate)
    std::optional<double> min_cpu_ram_gb;        // system RAM
    double offload_gb = 0;                       // GB of layers kept in pinned host memory, streamed to the GPU (0: none)
    std::optional<double> max_price_usd_per_hour;
    int disk_gb = 150;
    std::string image = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04";
    double safety_factor = 1.2;                  // applied to the memory estimate
};

struct RunConfig {
    std::string source;      // the YAML file it was read from ("" when built from flags alone)
    std::string name;        // run name: lower-case letters and digits (part of the instance name)
    ModelConfig model;
    DataConfig data;
    CaptureConfig capture;
    AnalysisConfig analysis;
    ResourcesConfig resources;
    Policy policy;
    std::string hf_token_env = "HF_TOKEN";  // the variable that holds the Hub token (never the token)
    std::string output_dir = "runs";        // local parent of run directories
};

// Reads and checks a YAML run config (keys documented in configs/README.md). Throws
// common::Error(usage) naming file:line:column for unknown keys, wrong types and bad values.
RunConfig load_run_config(const std::string & path);
RunConfig parse_run_config(const std::string & yaml_text, const std::string & name = "<config>");
// Applies a partial run config (the same keys, every one optional; `name` and `output_dir` refused)
// onto `config`: a sweep member's overrides over the sweep's base (deploy/sweep.h). A `model` map
// replaces the base's model source (its dtype kept unless given). Relative paths are taken
// relative to `source`'s folder. Errors name file:line:column as load_run_config's do.
// `also_allowed`: the caller's own keys in the same map (the sweep's id, config, family), left alone.
void overlay_run_config(const common::ConfigNode & node, const std::string & source, RunConfig & config,
                        const std::vector<std::string> & also_allowed = {});

// Flags that override the config (the predecessor's names included). Unset fields leave the config alone.
struct Overrides {
    std::optional<std::string> model;           // --model: hub id, or a local directory when it exists
    std::optional<int> gpu_count;               // --gpu-count
    std::optional<std::string> gpu_filter;      // --gpu-filter
    std::optional<double> min_vram_gb;          // --min-vram
    std::optional<double> min_cpu_ram_gb;       // --min-cpu-ram
    std::optional<double> offload_gb;           // --offload-gb
    std::optional<double> max_price;            // --max-price
    std::optional<int64_t> num_sequences;       // --num-sequences
    std::optional<int64_t> sequence_length;     // --sequence-length
    std::optional<int64_t> batch_size;          // --batch-size
    std::optional<double> threshold;            // --threshold
    std::vector<std::string> providers;         // --provider (repeatable; replaces the list)
    bool keep_running = false;                  // --keep-running: keep on success and failure
    std::optional<std::string> on_success;      // --on-success terminate|keep
    std::optional<std::string> on_failure;      // --on-failure terminate|keep
    std::optional<std::string> max_duration;    // --max-duration 3h
    std::optional<double> max_cost_usd;         // --max-cost
    std::optional<std::string> output_dir;      // --output-dir
    std::optional<std::string> name;            // --name
};
void apply_overrides(RunConfig & config, const Overrides & overrides);

// Every cross-field check (one model source, one data source, every number within its range
// (configs/README.md), known sites and modes, capture.layers within the model's layers when the
// fixture or a local checkpoint's config.json tells them). Throws common::Error(usage) naming the
// key (and the config file when there is one).
void validate(const RunConfig & config);
// The checks of validate() that read no file and ask no server (sources, ids, dtype, capture.layers
// syntax or the fixture's layers, sites, mode, provider and run names, hub_rows, offload), naming
// `origin` and the key. config_from_json applies them (with check_bounds) to a resumed run's
// run.json, whose local files may be gone.
void check_values(const RunConfig & config, const std::string & origin);

// Every provider named runs its instances on this machine (broker's declared on_this_machine): a
// rehearsal, which may go without GPUs and costs nothing. False when none is named or one is unknown.
bool runs_on_this_machine(const ResourcesConfig & resources);

// The system RAM an offer must have: min_cpu_ram_gb when given; else, with offload_gb, the pinned
// host memory plus a tenth and 16 GB for the process (ceil(offload_gb x 1.1 + 16)); else none.
std::optional<double> offer_min_ram_gb(const ResourcesConfig & resources);

// capture.layers ("0-3,47") as sorted unique indices, in the syntax `extract run --layers` reads.
// Throws common::Error(usage) naming the bad part; indices past 1023 are refused.
std::vector<int> parse_capture_layers(const std::string & spec);
// Refuses capture.layers naming a layer at or past `n_layers` (what the model has; `model_what`
// names it in the message), so a bad range is caught before renting instead of by extract on the
// instance. The second form takes num_hidden_layers from a checkpoint's config.json and checks
// nothing when it is absent.
void check_capture_layers(const RunConfig & config, int64_t n_layers, const std::string & model_what);
void check_capture_layers(const RunConfig & config, const nlohmann::json & hf_config);

// The resolved config as JSON (RUN_DIR/run.json), and back (for --resume). Keys mirror the YAML.
// config_from_json refuses (usage, naming `source` and the key path, e.g. "RUN/run.json:
// config.policy.max_duration_s: expected a number, got string") a field of the wrong type, a
// missing section, a count no config has, and any number out of the config's ranges.
nlohmann::json config_to_json(const RunConfig & config);
RunConfig config_from_json(const nlohmann::json & j, const std::string & source = "run.json");

// The built-in rehearsal config (the same content as configs/rehearsal.yaml), for a run with no
// --config: local provider, tiny OLMoE fixture with planted outliers, CPU.
RunConfig rehearsal_defaults();

}  // namespace deploy
