// The shared vocabulary of tensor ops the family builders are written in. Family differences are
// options of these ops (AttnOptions, MoeOptions), never `if (family == ...)` inside them.
// Numerics follow HF transformers 5.x (docs/model-math.md), including where HF rounds to the
// activation dtype, so bf16 runs match HF to bf16 rounding.
//
// Shape letters, used in every shape comment under extractor/:
//   B  rows in the batch            T  tokens per row          N  = B*T flattened tokens
//   H  hidden size                  D  head dim                Nq / Nkv  query / key-value heads
//   I  MLP or expert intermediate   E  experts                 K  experts per token (top-k)
//   S  = N*K routed (token, expert) pairs                      V  vocabulary
#pragma once

#include <ATen/core/Tensor.h>

#include "extractor/capture.h"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace extractor {
struct RopeParams;
}

namespace extractor::ops {

struct Linear {
    at::Tensor weight;  // [out,in]
    at::Tensor bias;    // [out] or undefined
};

at::Tensor linear(const at::Tensor & x, const Linear & l);  // [...,in] -> [...,out]

// Llama-style RMSNorm: statistics in fp32, normalised value rounded to x's dtype, then * weight.
at::Tensor rms_norm(const at::Tensor & x, const at::Tensor & weight, double eps);  // [...,W] -> [...,W]

struct Rope {
    at::Tensor inv_freq;            // fp32 [D/2] on the CPU
    double attention_scaling = 1.0;
};
// inv_freq for rope types default / linear / llama3 / yarn (docs/model-math.md#rope-scaling).
Rope make_rope(const RopeParams & p, double default_theta, int64_t head_dim, int64_t max_position_embeddings);
// cos, sin [T,D] for positions 0..T-1, computed in fp32 then cast to dtype (as HF does).
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const Rope & rope, int64_t T, at::ScalarType dtype, c10::Device device);
// x [B,Nh,T,D]; half-split ("NeoX") rotation. cos/sin [T,R] with R < D (partial rotary) rotate
// the first R dims and pass the rest through.
at::Tensor apply_rope(const at::Tensor & x, const at::Tensor & cos, const at::Tensor & sin);

enum class QkNorm {
    None,
    PerHead,  // Qwen3: RMSNorm over D per head, after the view to heads
    Whole,    // OLMoE: RMSNorm over the whole projection (Nq*D), before the view
};

struct AttnOptions {
    int64_t n_heads = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;
    QkNorm qk_norm = QkNorm::None;
    double qk_norm_eps = 1e-6;
    std::optional<double> clip_qkv;          // OLMoE: clamp q, k, v to [-c, c] after the norms
    std::optional<int64_t> sliding_window;   // attend iff q - window < kv <= q
};

struct AttnWeights {
    Linear q, k, v, o;
    at::Tensor q_norm, k_norm;  // [D] (PerHead) or [Nq*D] / [Nkv*D] (Whole)
    // gpt_oss: one learned logit per query head [Nq], a virtual extra key that every query attends
    // to with value 0: it takes part in the softmax's normaliser and is then dropped.
    at::Tensor sinks;
};

// a [B,T,H] -> [B,T,H]. cos/sin [T,D] in a's dtype.
at::Tensor attention(const at::Tensor & a, const AttnWeights & w, const AttnOptions & opt, const at::Tensor & cos,
                     const at::Tensor & sin);

// Causal attention over heads, without the projections: q [B,Nq,T,D], k/v [B,Nkv,T,D] (repeated
// here for GQA), optional sinks [Nq] -> [B,Nq,T,D]. SDPA where available, else matmul-softmax;
// with sinks, the flash kernel and the exact sink rescale where available (attend_with_sinks_flash),
// else the chunked eager form (attend_with_sinks). --plain-ops (compat::fast_paths off) takes the
// plain forms.
at::Tensor attend_heads(at::Tensor q, at::Tensor k, at::Tensor v, const at::Tensor & sinks, const AttnOptions & opt);

struct MlpWeights {
    Linear gate, up, down;  // [I,H], [I,H], [H,I]
};
at::Tensor swiglu_mlp(const at::Tensor & m, const MlpWeights & w);  // [B,T,H] -> [B,T,H]

struct MoeOptions {
    int64_t top_k = 0;
    bool renormalise = false;          // divide the top-k weights by their sum (norm_topk_prob)
    bool weights_in_activation_dtype = false;  // v4 cast the routing weights; v5 keeps them fp32
    // glm4_moe (DeepSeek-V3's "noaux_tc" router) instead of softmax-top-k: see route_sigmoid_grouped.
    bool sigmoid_grouped = false;
    int64_t n_group = 1, topk_group = 1;
    double routed_scaling = 1.0;
};

struct MoeWeights {
    at::Tensor router;    // [E,H]
    at::Tensor gate_up;   // [E,2I,H]: per expert cat([gate; up], rows) (transformers v5 layout)
    at::Tensor down;      // [E,H,I]
    // gpt_oss (moe_clamped_swiglu): router bias [E]; gate_up rows interleave gate and up (even,
    // odd); with MXFP4, gate_up / down hold the blocks [E,2I,H/32,16] / [E,H,I/32,16] (uint8) and
    // the *_scales [E,2I,H/32] / [E,H,I/32]; biases [E,2I] / [E,H].
    at::Tensor router_bias, gate_up_bias, down_bias, gate_up_scales, down_scales;
    // glm4_moe: e_score_correction_bias [E] (fp32, added to the scores for selection only).
    at::Tensor score_bias;
    MlpWeights shared;    // glm4_moe shared experts [Is,H], [Is,H], [H,Is]; the family adds their output
    at::Tensor shared_gate;  // qwen3_next: [1,H]; the shared expert's output is scaled by sigmoid(x g^T)
};

// Softmax-top-k (or, with opt.sigmoid_grouped, route_sigmoid_grouped) routing and expert
// dispatch. m [B,T,H] -> [B,T,H]. Tokens are never dropped. The routed experts only: shared
// experts (MoeWeights::shared) are the family's to add.
// observe (Tap::experts, `--expert-stats`): given each routed chunk's top-k and down_proj outputs.
at::Tensor moe(const at::Tensor & m, const MoeWeights & w, const MoeOptions & opt, const ExpertObserver & observe = {});

// glm4_moe's router (HF Glm4MoeTopkRouter, = DeepSeek-V3's): scores = sigmoid(x W^T) with x and W
// in fp32; choice = scores + score_bias (when defined); unless every group is kept, the E experts
// form n_group groups of E/n_group, a group's score is the sum of its two best choices, the
// topk_group best groups are kept and the other experts' choices set to 0 (not -inf, as HF);
// top_k experts by choice; their weights are the plain scores, divided by (their sum + 1e-20)
// when renormalise, times routed_scaling. x [N,H] -> weights fp32 [N,K], indices [N,K].
std::pair<at::Tensor, at::Tensor> route_sigmoid_grouped(const at::Tensor & x, const at::Tensor & router,
                                                        const at::Tensor & score_bias, const MoeOptions & opt);

// Attention with per-head sink logits (AttnWeights::sinks), as transformers' eager path computes
// it: scores = q k^T / sqrt(D), masked; the sink logit appended as an extra column; the row max
// subtracted; softmax in the activation dtype; the sink column dropped; times v. q, k, v
// [B,Nq,T,D] (k, v already repeated for GQA), sinks [Nq], mask bool [T,T] (true = attend) ->
// [B,Nq,T,D]. Works on (row, head-group) chunks of at most 2^27 scores.
at::Tensor attend_with_sinks(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v, const at::Tensor & sinks,
                             const at::Tensor & mask);

// The same attention through the flash kernel (compat::flash_attention), never materialising the
// scores: with Z the row's softmax denominator over the scores (e^lse), the sink column only
// rescales the row, softmax([s, sink])[:T] = softmax(s) * Z / (Z + e^sink), so the output is
// flash's times sigmoid(lse - sink), computed in fp32 and rounded once. q [B,Nq,T,D], k/v
// [B,Nkv,T,D] (not repeated), sinks [Nq] -> [B,Nq,T,D]; undefined where the flash kernel cannot run
// (then the caller takes attend_with_sinks). Not HF's eager rounding (scores and probabilities in
// bf16): the more exact of the two against fp32 (tests/gpu; docs/model-math.md#parity-bars).
at::Tensor attend_with_sinks_flash(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v, const at::Tensor & sinks,
                                   std::optional<int64_t> sliding_window);

// gpt_oss's RMSNorm: like rms_norm, but the gain multiplies the fp32 normalised value and the
// product is rounded once (transformers keeps these gains in fp32).
at::Tensor rms_norm_fp32_gain(const at::Tensor & x, const at::Tensor & weight, double eps);  // [...,W]

struct ClampedSwigluMoeOptions {
    int64_t top_k = 0;
    double alpha = 1.702;       // gate * sigmoid(alpha * gate)
    double limit = 7.0;         // gate clamped above at limit, up to [-limit, limit]
    int64_t experts_per_chunk = 0;  // MXFP4: experts dequantized at a time (0: from a 512 MiB budget)
};
// gpt_oss's MoE block: router logits = x W^T + b; top-k of the logits; softmax over those k, in
// the activation dtype; per expert gate_up = x W^T + b (rows interleaved gate, up), out =
// (clamp(up) + 1) * g * sigmoid(alpha * g) with g = min(gate, limit), down = out W^T + b; the K
// outputs times their weights (activation dtype), summed. MXFP4 experts (w.gate_up_scales defined)
// are dequantized a chunk of experts at a time into one reusable buffer. m [B,T,H] -> [B,T,H].
at::Tensor moe_clamped_swiglu(const at::Tensor & m, const MoeWeights & w, const ClampedSwigluMoeOptions & opt,
                              const ExpertObserver & observe = {});

// Which implementations run for this dtype/device, for the log ("attention: sdpa; experts: grouped_mm").
std::string describe_paths(at::ScalarType dtype, bool cuda);

// EXTRACTOR_PROFILE=1: each op synchronises the device around itself and adds its wall time to a
// per-op total (profile_report()). Off by default: the syncs cost throughput.
bool profiling();
void profile_add(const std::string & name, double seconds);
std::string profile_report();
// Forgets the totals so far: the warm-up batches' first calls (kernel loading, cuBLAS handles,
// allocator growth) would otherwise dominate an op's total.
void profile_reset();
class ProfileScope {
public:
    explicit ProfileScope(const char * name);
    ~ProfileScope();

private:
    const char * name_;
    std::chrono::steady_clock::time_point start_;
};

// The plain causal (optionally sliding) mask as bool [T,T], true = attend.
at::Tensor causal_mask(int64_t T, std::optional<int64_t> sliding_window, c10::Device device);
// GQA's key/value heads for every query head: [B,Nkv,T,D] -> [B,Nkv*rep,T,D]; query head i uses
// kv head i / rep (HF repeat_kv).
at::Tensor repeat_kv(const at::Tensor & x, int64_t rep);

}  // namespace extractor::ops
