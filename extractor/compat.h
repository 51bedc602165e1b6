// The one switch between libtorch 2.x fast paths and the plain 1.13 fallbacks (Debian's CPU
// libtorch is 1.13; GPU machines run pip PyTorch 2.x). Everything version-specific is behind
// `#if TORCH_VERSION_MAJOR >= 2` in compat.cpp; callers ask has_*() and call the wrapper.
// set_fast_paths(false) forces the plain paths at run time, so a test can compare both.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace extractor::compat {

bool has_sdpa();        // at::scaled_dot_product_attention (torch >= 2.0)
bool has_grouped_mm();  // at::_grouped_mm (torch >= 2.9; used for bf16 on CUDA only)
// at::_flash_attention_forward with a sliding window (torch >= 2.5) is in this build and takes
// tensors of this dtype on this kind of device (bf16/fp16 on CUDA).
bool flash_supports(at::ScalarType dtype, bool cuda);

void set_fast_paths(bool enabled);
bool fast_paths();

// q [B,Nq,T,D], k/v [B,Nq,T,D] (kv heads already repeated); mask: bool [T,T] (true = attend) or
// undefined for plain causal. Requires has_sdpa().
at::Tensor sdpa(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v, const at::Tensor & mask);
// The same with k/v of fewer heads than q (grouped-query attention, q heads a multiple of k's),
// without materialising repeated k/v (SDPA's enable_gqa, torch >= 2.5), or undefined where this
// libtorch lacks it or EXTRACTOR_SDPA_GQA=0 (then the caller repeats k/v).
at::Tensor sdpa_gqa(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v, const at::Tensor & mask);
// The flash-attention kernel's output and its per-row log-sum-exp: what an exact correction for
// an extra softmax column (gpt_oss's sinks) needs.
struct FlashAttention {
    at::Tensor out;  // [B,Nq,T,D], q's dtype (a view of a [B,T,Nq,D] tensor)
    at::Tensor lse;  // [B,Nq,T] fp32: log of each row's softmax denominator over the scaled scores
};
// Causal attention through libtorch's flash kernel (at::_flash_attention_forward, libtorch >= 2.5),
// scale 1/sqrt(D): q [B,Nq,T,D], k/v [B,Nkv,T,D] with Nkv dividing Nq (GQA in the kernel, no
// repeated copy); sliding_window w: attend iff q - w < kv <= q. nullopt where the kernel cannot
// run: an older libtorch, CPU tensors, fp32, or a head size that is not a multiple of 8 up to 256.
std::optional<FlashAttention> flash_attention(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v,
                                              std::optional<int64_t> sliding_window);
// a [S,K] rows grouped by expert, b [E,K,N], offs int32 [E] cumulative row ends -> [S,N].
at::Tensor grouped_mm(const at::Tensor & a, const at::Tensor & b, const at::Tensor & offs);

const char * torch_version();

// cudaDeviceSynchronize through the CUDA runtime libtorch_cuda already loaded (no-op without it).
void device_synchronize();

}  // namespace extractor::compat
