// config.json of a Hugging Face checkpoint, read into one typed struct. Accepts both spellings of
// the keys that transformers v5 renamed (torch_dtype/dtype, rope_theta + rope_scaling{type} /
// rope_parameters{rope_type}); see docs/checkpoint-formats.md#config-json. Family-specific defaults
// (eps, theta, norm_topk_prob) are applied by the family (families/family.h), not here: this layer
// only records what the file says and whether it said it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace extractor {

// Bounds on what config.json may say, checked before anything is sized by it (num_hidden_layers
// 1e9 once grew `extract inspect` to 23 GB on per-layer tables). Each is well above the largest
// released checkpoint we know of (in brackets, approximately) and well below what would make
// planning alone allocate gigabytes. A count must be a JSON integer: 1e9, 32.0, true are refused.
namespace hf_limits {
constexpr int64_t kLayers = 1024;            // num_hidden_layers [~126]
constexpr int64_t kHidden = 1 << 16;         // hidden_size [~16k]
constexpr int64_t kHeads = 1024;             // num_attention_heads [~128]
constexpr int64_t kHeadDim = 1024;           // head_dim [256]
constexpr int64_t kIntermediate = 1 << 18;   // intermediate_size, moe_intermediate_size [~53k]
constexpr int64_t kVocab = 1 << 22;          // vocab_size [~262k]
constexpr int64_t kExperts = 4096;           // num_experts, num_experts_per_tok [~384]
constexpr int64_t kExpertMatrices = 1 << 16; // num_experts x num_hidden_layers [~23k]; one plan row each
constexpr int64_t kPositions = 1 << 30;      // max_position_embeddings, sliding_window [~10M]; never sizes memory
constexpr uint64_t kFileBytes = 1u << 20;    // config.json itself [a few KiB]
}  // namespace hf_limits

struct RopeParams {
    std::string type = "default";           // default | linear | llama3 | yarn
    std::optional<double> theta;            // absent -> the family's default
    double factor = 1.0;
    double low_freq_factor = 1.0;           // llama3
    double high_freq_factor = 4.0;          // llama3
    std::optional<int64_t> original_max_position_embeddings;
    std::optional<double> attention_factor; // yarn
    double beta_fast = 32.0, beta_slow = 1.0;
    std::optional<double> mscale, mscale_all_dim;
    bool truncate = true;
    double partial_rotary_factor = 1.0;
};

struct HfConfig {
    std::string path;                       // the config.json it came from (for errors)
    nlohmann::json raw;
    std::string model_type;
    std::vector<std::string> architectures;
    std::string dtype;                      // "bfloat16", "float32", ... ("" when absent)
    int64_t vocab_size = 0;
    int64_t hidden_size = 0;
    int64_t num_hidden_layers = 0;
    int64_t num_attention_heads = 0;
    int64_t num_key_value_heads = 0;        // defaults to num_attention_heads
    std::optional<int64_t> head_dim;
    int64_t intermediate_size = 0;
    std::optional<double> rms_norm_eps;
    bool tie_word_embeddings = false;
    bool attention_bias = false;
    bool mlp_bias = false;
    int64_t max_position_embeddings = 0;
    std::string hidden_act = "silu";
    RopeParams rope;
    // sliding windows (Qwen2/3 family): only if use_sliding_window
    bool use_sliding_window = false;
    std::optional<int64_t> sliding_window;
    std::optional<int64_t> max_window_layers;
    std::vector<std::string> layer_types;
    // MoE
    int64_t num_experts = 0;                // num_experts or num_local_experts
    int64_t num_experts_per_tok = 0;
    std::optional<bool> norm_topk_prob;
    int64_t moe_intermediate_size = 0;
    int64_t decoder_sparse_step = 1;
    std::vector<int64_t> mlp_only_layers;
    std::optional<double> clip_qkv;

    // Reads the key as T, or throws Error(usage) naming the file and key.
    template <typename T> T get(const std::string & key) const;
};

// Parses dir/config.json (or a path to a .json file). Throws common::Error naming the file and
// key for a missing required key, a wrong type or a value outside hf_limits (usage, exit 2);
// NotFound when there is no config.json; usage when the path is not a regular file.
HfConfig read_hf_config(const std::string & path_or_dir);
HfConfig parse_hf_config(const nlohmann::json & j, const std::string & path);

}  // namespace extractor
