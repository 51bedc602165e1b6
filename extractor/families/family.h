// A model family: which config keys it reads, which weights it needs in which shapes, and its
// forward pass (after llama.cpp's src/models/<arch>.cpp; docs/README.md, "Design anchors"). One file per family
// under families/; registry.cpp maps model_type to the family. The shared arithmetic is ops.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "extractor/capture.h"
#include "extractor/checkpoint/hf_config.h"
#include "extractor/ops.h"
#include "extractor/ops_delta.h"

namespace extractor {

// Everything a forward pass needs, resolved from config.json plus the family's defaults.
struct ModelConfig {
    std::string model_type;
    int64_t vocab = 0, hidden = 0, n_layers = 0;
    int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
    int64_t intermediate = 0;                 // dense MLP width (0 when no layer is dense)
    double rms_eps = 1e-6;
    ops::Rope rope;
    bool qkv_bias = false, o_bias = false, mlp_bias = false;
    bool tie_embeddings = false;
    ops::QkNorm qk_norm = ops::QkNorm::None;
    std::optional<double> clip_qkv;
    std::vector<std::optional<int64_t>> sliding_window;  // per layer
    // MoE
    int64_t n_experts = 0, top_k = 0, expert_intermediate = 0;
    bool norm_topk_prob = false;
    std::vector<bool> layer_is_moe;           // per layer
    std::string checkpoint_dtype;             // config's dtype ("bfloat16", ...), may be empty
    // gpt_oss: per-head attention sink logits, MXFP4-packed experts (quantization_config
    // quant_method "mxfp4"), clamped SwiGLU limit; dequantize_experts is `extract run --dequantize`.
    bool attn_sinks = false;
    bool mxfp4_experts = false;
    bool dequantize_experts = false;
    double swiglu_limit = 7.0;
    // glm4_moe: sigmoid router with e_score_correction_bias and group-limited top-k
    // (ops::MoeOptions), and shared experts of total width shared_intermediate (0: none).
    bool sigmoid_router = false;
    int64_t n_group = 1, topk_group = 1;
    double routed_scaling = 1.0;
    int64_t shared_intermediate = 0;
    // qwen3_next: which layers are gated DeltaNet linear attention (the rest full attention), its
    // head counts and sizes, and the conv kernel width (ops_delta.h); the shared expert
    // (shared_intermediate wide) has a sigmoid gate.
    std::vector<bool> layer_is_linear;        // per layer (empty: none)
    ops::DeltaNetOptions linear_attn;
    int64_t linear_conv_kernel = 0;

    int64_t n_moe_layers() const;
};

// Where a loaded tensor goes inside LayerWeights / Weights.
enum class Slot {
    Embed,
    InputNorm, PostNorm,
    Q, K, V, O, QBias, KBias, VBias, OBias, QNorm, KNorm,
    Gate, Up, Down, GateBias, UpBias, DownBias,
    Router, ExpertsGateUp, ExpertsDown,
    Sinks, RouterBias, ExpertsGateUpBias, ExpertsDownBias, ExpertsGateUpScales, ExpertsDownScales,
    // glm4_moe: the router's e_score_correction_bias (selection only) and the shared experts.
    RouterScoreBias, SharedGate, SharedUp, SharedDown,
    // qwen3_next: the shared expert's sigmoid gate and the gated DeltaNet (linear_attn.*) tensors.
    SharedExpertGate, LinearQkvz, LinearBa, LinearConv, LinearDtBias, LinearALog, LinearNorm, LinearOut,
};
// How a destination is held in memory: in the run dtype, always in fp32 (gpt_oss's norm gains, as
// transformers keeps them), or as MXFP4 bytes (uint8 blocks [...,G,16] and scales [...,G]; mxfp4.h).
enum class Storage : uint8_t { RunDtype, F32, Mxfp4Blocks, Mxfp4Scales };
std::string_view slot_name(Slot slot);

struct DestSpec {
    int layer = -1;                           // -1: model-level (embedding)
    Slot slot;
    std::vector<int64_t> shape;
    Storage storage = Storage::RunDtype;
    uint64_t params() const;                  // weights it holds (a blocks byte: 2; scales: 0)
    uint64_t bytes(int bytes_per_element, bool dequantized) const;  // dequantized: blocks as run dtype
};

// One checkpoint tensor and where it lands. Per-expert tensors land in a slice of a fused
// destination: dest[expert].narrow(0, row_offset, shape[0]).
struct WeightSpec {
    std::string name;                         // HF tensor name
    std::vector<int64_t> shape;               // expected shape, in config terms
    int layer = -1;
    Slot slot;
    int64_t expert = -1;
    int64_t row_offset = 0;
    std::string stored_dtype;                 // "" = BF16, F16 or F32; else exactly this ("U8")
};

struct WeightPlan {
    std::vector<DestSpec> dests;
    std::vector<WeightSpec> sources;
    uint64_t numel_total() const;             // sum over dests
    uint64_t numel_layer(int layer) const;
    uint64_t params_total() const;            // weights (MXFP4 blocks count 2 a byte, scales none)
    uint64_t params_experts() const;          // of those, in expert slots (matrices and biases)
    uint64_t bytes_layer(int layer, int bytes_per_element, bool dequantized) const;
};

struct LayerWeights {
    at::Tensor input_norm, post_norm;         // [H]
    ops::AttnWeights attn;
    ops::MlpWeights mlp;                      // dense layers
    ops::MoeWeights moe;                      // MoE layers
    ops::DeltaNetWeights linear_attn;         // qwen3_next linear-attention layers
    at::Tensor * slot(Slot s);
    std::vector<at::Tensor *> all();
};

class OffloadStreamer;  // offload.h

// Loaded weights and where each layer lives / runs. A layer whose home is the CPU while its
// compute device is a GPU is "offloaded": its pinned host weights are copied in when it runs.
struct Weights {
    at::Tensor embed;                         // [V,H]
    c10::Device embed_device{c10::kCPU};
    std::vector<LayerWeights> layers;         // size n_layers; layers never loaded stay empty
    std::vector<c10::Device> home;            // per layer
    std::vector<c10::Device> compute;         // per layer
    bool offloaded(int layer) const { return home[layer] != compute[layer]; }
    // Copies offloaded layers ahead on a second stream (offload.h); set by run_extraction once
    // the weights are loaded. Without it an offloaded layer is copied on the compute stream.
    std::shared_ptr<OffloadStreamer> streamer;
    // The layer's weights on its compute device (for an offloaded layer, a copy that is valid
    // while the family runs that layer).
    LayerWeights fetch(int layer) const;
};

class Family {
public:
    virtual ~Family() = default;
    virtual std::string_view name() const = 0;  // the model_type it serves
    virtual std::string_view hf_reference() const = 0;  // the HF file/class it follows
    virtual ModelConfig parse_config(const HfConfig & hf) const = 0;
    // fused_experts: the checkpoint stores mlp.experts.gate_up_proj [E,2I,H] (transformers v5
    // in-memory layout) instead of per-expert tensors.
    virtual WeightPlan plan_weights(const ModelConfig & cfg, bool fused_experts) const = 0;
    // ids: int64 [B,T] on any device. Runs layers 0..run_layers-1, tapping the capture sites;
    // returns the residual stream after the last layer run [B,T,H].
    virtual at::Tensor forward(const ModelConfig & cfg, const Weights & w, const at::Tensor & ids, int run_layers,
                               Tap & tap) const = 0;
    // The final norm (model.norm) over forward()'s output, for `extract run --perplexity`; its gain
    // is held in the run dtype. RMSNorm unless the family differs.
    virtual at::Tensor final_norm(const ModelConfig & cfg, const at::Tensor & h, const at::Tensor & gain) const {
        return ops::rms_norm(h, gain, cfg.rms_eps);
    }
    // Checkpoint tensors under these name prefixes are not part of the forward pass; the loader
    // says how many it skips (qwen3_next's multi-token-prediction head, mtp.*). Other unplanned
    // tensors are skipped silently, as before.
    virtual std::vector<std::string> ignored_weight_prefixes() const { return {}; }
};

// Throws common::Error(usage) naming the supported model types.
const Family & find_family(std::string_view model_type);
std::vector<const Family *> all_families();

// Shared pieces of the family files (families/common.cpp).
namespace families {
ModelConfig parse_common(const HfConfig & hf, double default_eps, double default_theta);
// config.json names `key` with a non-null value (a family applies its own default otherwise).
bool has_key(const HfConfig & hf, const char * key);
void add(WeightPlan & plan, int layer, Slot slot, std::vector<int64_t> shape, std::string name);
void plan_embedding(WeightPlan & plan, const ModelConfig & cfg);
void plan_attention(WeightPlan & plan, const ModelConfig & cfg, int layer);
void plan_dense_mlp(WeightPlan & plan, const ModelConfig & cfg, int layer, int64_t width);
void plan_moe(WeightPlan & plan, const ModelConfig & cfg, int layer, bool fused_experts);
// gpt_oss experts as the released checkpoints store them: router weight + bias, MXFP4 gate_up
// (rows interleaved gate, up) and down blocks/scales, bf16 biases (families/gpt_oss.cpp).
void plan_mxfp4_experts(WeightPlan & plan, const ModelConfig & cfg, int layer);
ops::AttnOptions attn_options(const ModelConfig & cfg, int layer);
// Positions 0..T-1 on the device of layer `layer`.
std::pair<at::Tensor, at::Tensor> rope_tables(const ModelConfig & cfg, int64_t T, at::ScalarType dtype, c10::Device device);

// The pre-norm decoder most families share: embedding, then per layer (moved to its compute device,
// weights fetched, offloaded ones streamed in) h += attention(norm(h)); h += mlp(norm(h)), tapping
// ln_attn, ln_mlp and the residual. A family gives its MLP block (dense, MoE, or per layer) and
// its RMSNorm (ops::rms_norm, or gpt_oss's ops::rms_norm_fp32_gain).
using MlpBlock = std::function<at::Tensor(int layer, const LayerWeights & lw, const at::Tensor & m)>;  // [B,T,H] -> [B,T,H]
using Norm = at::Tensor (*)(const at::Tensor & x, const at::Tensor & weight, double eps);
at::Tensor decoder_stack(const ModelConfig & cfg, const Weights & w, const at::Tensor & ids, int run_layers, Tap & tap,
                         const MlpBlock & mlp, Norm norm = ops::rms_norm);
}  // namespace families

}  // namespace extractor
