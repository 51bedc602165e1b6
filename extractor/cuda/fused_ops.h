// Fused CUDA versions of the hot ops in extractor/ops.cpp. Each one replaces a chain of ATen
// element-wise kernels by one pass over the tensor and rounds to the activation dtype at the same
// steps as HF's ops, so results match the ATen path to fp32 summation order (tests/gpu checks).
//
// Compiled only where libtorch has CUDA and nvcc exists (cmake TOOLKIT_HAS_CUDA_KERNELS); otherwise
// without_cuda.cpp reports built() == false and ops.cpp always takes its ATen path.
//
// Two tiers. A kernel (or another fast path, such as grouped-query SDPA) is *pending* from the
// commit that adds it until a GPU run has held it to its ATen path (tests/gpu) and to HF
// (tests/parity); only then does it move to *validated*. No GPU runs in CI, so this keeps a default
// run from depending on code no GPU has executed yet. EXTRACTOR_FUSED (read once, fused_mode.cpp):
//   unset or 1  the validated kernels (the default);
//   0           none: the ATen path everywhere, which parity and the benchmarks compare against;
//   all         the validated and the pending ones: what a GPU session runs to validate them.
// extractor/README.md lists which kernels are pending.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "extractor/ops.h"

namespace extractor::fused {

enum class Mode { Off, Validated, All };
enum class Tier { Validated, Pending };

bool built();
Mode mode();             // EXTRACTOR_FUSED unless set_mode() overrode it
// The tests compare paths with it; nullopt reads EXTRACTOR_FUSED again at the next mode().
void set_mode(std::optional<Mode> m);
bool enabled();          // built() and mode() is not Off
// x is a CUDA tensor of a floating dtype the kernels handle (fp32, fp16, bf16), the kernels are
// built, and the mode runs kernels of this tier. A pending fast path that is not a kernel of this
// file (an ATen call such as grouped-query SDPA) asks it too.
bool usable(const at::Tensor & x, Tier tier = Tier::Validated);

// x [...,W] (last dim contiguous, rows evenly strided), weight [W] -> [...,W] contiguous.
at::Tensor rms_norm(const at::Tensor & x, const at::Tensor & weight, double eps);

// The fp32-gain RMSNorm: round(gain * (x * rsqrt(mean(x^2) + eps))), gain fp32 [W]; GPT-OSS's norm,
// and Qwen3-Next's zero-centred one with gain = 1 + w (ops::rms_norm_fp32_gain). x [...,W] -> contiguous.
at::Tensor rms_norm_fp32_gain(const at::Tensor & x, const at::Tensor & gain, double eps);

// Qwen3NextRMSNormGated: round(round(w * round(x * inv)) * silu(float(z))), x and z [...,W] of one
// dtype and shape, w [W] (ops::rms_norm_gated). -> contiguous [...,W].
at::Tensor rms_norm_gated(const at::Tensor & x, const at::Tensor & z, const at::Tensor & weight, double eps);

// Qwen3-Next's depthwise causal conv1d + SiLU (ops::causal_conv1d_silu): x [B,T,C], weight [C,1,Kc]
// of x's dtype -> [B,T,C] contiguous.
at::Tensor causal_conv1d_silu(const at::Tensor & x, const at::Tensor & weight);

// Gated DeltaNet's q/k: x [B,T,Nk,D] (last dim contiguous) -> fp32 [B,T,Nk*rep,D], each key head
// repeated rep times (repeat_interleave) and L2-normalised in fp32 (ops::l2_normalize of the fp32 copy).
at::Tensor l2norm_repeat(const at::Tensor & x, int64_t rep, double eps);

// x [B,T,Nh*S] (a projection; last dim contiguous; head h at h*S, S = head_stride or head_dim) ->
// [B,Nh,T,D] (a view of [B,T,Nh,D] memory): optional RMSNorm (QkNorm::Whole over Nh*D with weight
// [Nh*D], QkNorm::PerHead over D with weight [D]; zero_centred: the per-head norm with the fp32
// gain 1 + w, Qwen3-Next's), optional clamp to [-clip, clip], then RoPE with cos/sin [T,R] for
// positions 0..T-1 on the first R <= D dims of each head (the rest pass through).
at::Tensor qk_norm_rope(const at::Tensor & x, int64_t n_heads, int64_t head_dim, ops::QkNorm norm,
                        const at::Tensor & norm_weight, double eps, std::optional<double> clip, const at::Tensor & cos,
                        const at::Tensor & sin, int64_t head_stride = 0, bool zero_centred = false);

// Expert dispatch: rows of x [N,H] copied into xs [S,H] grouped by expert (S = N*K), grouped_mm's
// cumulative offsets, and where each (token, slot) landed.
struct MoeDispatch {
    at::Tensor xs;        // [S,H]
    at::Tensor offs;      // [E] int32 cumulative row ends
    at::Tensor slot_pos;  // [S] int32: row in xs of slot s = n*K + k
};
MoeDispatch moe_dispatch(const at::Tensor & x, const at::Tensor & top_i, int64_t n_experts);

// gate_up [S,2I] -> silu(gate) * up [S,I].
at::Tensor silu_mul(const at::Tensor & gate_up);

// out [S,H] (rows as moe_dispatch placed them), slot_pos [S], top_w [N,K] fp32 ->
// [N,H] = sum_k out[slot_pos[n*K+k]] * top_w[n,k], in fp32, rounded once to out's dtype.
// slot_max given (fp32 [N*K], K <= kCombineMaxTopK): also each slot's max |out row| (a NaN propagates).
inline constexpr int64_t kCombineMaxTopK = 16;  // cuda_kernels::kSlotMaxK (kernels.h is CUDA-only)
at::Tensor moe_combine(const at::Tensor & out, const at::Tensor & slot_pos, const at::Tensor & top_w,
                       at::Tensor * slot_max = nullptr);

// MXFP4 (extractor/mxfp4.h): blocks [...,G,16] uint8 and scales [...,G] uint8, both contiguous on
// out's device, decoded into out [...,G*32] (contiguous, fp32/fp16/bf16) in one pass, rounded once
// as mxfp4::dequantize_into's ATen path rounds. mxfp4_aligned(): whether the pointers allow it.
bool mxfp4_aligned(const at::Tensor & blocks, const at::Tensor & out);
void mxfp4_dequantize(const at::Tensor & blocks, const at::Tensor & scales, at::Tensor & out);

// logits [n,V] (contiguous), target [n] int64 on the same device -> [n] fp32:
// logsumexp(logits[r]) - logits[r, target[r]], every value read as fp32 (HF's loss on the
// fp32-upcast logits), without materialising an fp32 copy. A target outside [0,V) gives NaN.
at::Tensor token_nll(const at::Tensor & logits, const at::Tensor & target);

// x [...,H] on the GPU (fp32/fp16/bf16): max_abs [H] fp32 = max(max_abs, max |x| over the rows) and
// count (int64 scalar) += #(|x| >= threshold), in one read of x: AbsmaxSink's per-capture summary,
// equal to its ATen ops (amax of |x|, ge in x's dtype). threshold must be exact in x's dtype.
void absmax_count(const at::Tensor & x, double threshold, at::Tensor & max_abs, at::Tensor & count);

}  // namespace extractor::fused
