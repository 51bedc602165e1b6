// Tiny random-weight checkpoints in the Hugging Face layout (config.json + safetensors, optionally
// sharded with model.safetensors.index.json) for every registered family, with optional planted
// outlier features. Every fixture has the final norm (model.norm.weight) and, unless
// tie_embeddings, lm_head.weight [V,H], so `extract run --perplexity` runs on it. Used by the CPU tests, the analysis tests and the rehearsal demo; exposed as
// `extract fixture`.
//
// Planting (PlantSpec): for each chosen hidden dim d and each layer in [layer_first, layer_last],
// the input_layernorm and post_attention_layernorm gains at d are set to `gain` (default 50)
// instead of 1. RMSNorm's normalised value at d is roughly N(0,1) for these random weights, so the
// captured ln_attn / ln_mlp values at d reach |x| >= 6 on about 90 % of tokens, while unplanted
// dims (gain 1) essentially never do (P(|z| >= 6) ~ 2e-9). Layers outside the range are untouched.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace extractor {

struct PlantSpec {
    std::vector<int64_t> dims;
    int layer_first = 0, layer_last = 0;
    double gain = 50.0;
};

// "7,42@0-3" (dims 7 and 42 in layers 0..3), "7@2" (one layer), optional "x30" gain suffix:
// "7,42@0-3x30". Throws common::Error(usage).
PlantSpec parse_plant(const std::string & text);

struct FixtureOptions {
    std::string family = "llama";      // a registered model_type
    std::string out_dir;
    int64_t layers = 2, hidden = 64, heads = 4, kv_heads = 2, head_dim = 16;
    int64_t intermediate = 96;         // dense MLP width (OLMoE: expert width)
    int64_t experts = 8, top_k = 2, moe_intermediate = 32;
    int64_t vocab = 128;
    std::vector<int64_t> mlp_only_layers;  // qwen3_moe: layers with a dense MLP
    bool norm_topk_prob = false;
    at::ScalarType dtype = at::kFloat;
    int shards = 1;                    // > 1 writes model-0000k-of-0000n.safetensors + index
    bool legacy_keys = false;          // torch_dtype + rope_theta instead of dtype + rope_parameters
    bool fused_experts = false;        // MoE: experts in the transformers v5 layout (mlp.experts.gate_up_proj
                                       // [E,2I,H], down_proj [E,H,I]) with the same values as per-expert tensors
    std::optional<int64_t> sliding_window;  // mixtral: config sliding_window (null when unset)
    bool tie_embeddings = false;       // config tie_word_embeddings: no lm_head.weight is written
    // glm4_moe: router groups (n_group, topk_group), dense first layers, shared experts, the routed
    // scaling factor, use_qk_norm, and multi-token-prediction layers written after the last decoder
    // layer (model.layers.<layers>...: a decoder layer plus eh_proj, enorm, hnorm, shared_head.norm,
    // as the released checkpoints hold them; the extractor does not load them).
    int64_t n_group = 4, topk_group = 2, first_k_dense = 1, shared_experts = 1, mtp_layers = 0;
    double routed_scaling = 2.5;
    bool qk_norm = false;
    uint64_t seed = 0;                 // each tensor's values depend on seed and its name only
    std::vector<PlantSpec> plants;
};

inline constexpr uint64_t kMaxFixtureBytes = uint64_t{64} << 30;

// Writes the checkpoint; returns the paths written. Throws common::Error.
std::vector<std::string> write_fixture(const FixtureOptions & opt);

}  // namespace extractor
