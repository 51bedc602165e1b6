// Builds without CUDA support (no nvcc, or a CPU libtorch such as CI's): the fused ops do not
// exist, usable() is always false, and ops.cpp always runs its ATen path; there are no allocator
// statistics to read, and no layer is ever offloaded to a GPU, so there is no offload streamer.
#include <ATen/ATen.h>

#include "extractor/cuda/device_memory.h"
#include "extractor/cuda/fused_ops.h"
#include "extractor/offload.h"

#include "common/error.h"

namespace extractor::fused {
namespace {
[[noreturn]] void absent() {
    throw common::Error::internal("fused CUDA kernels are not built into this program (ops.cpp must ask usable())");
}
}  // namespace

bool built() { return false; }

at::Tensor rms_norm(const at::Tensor &, const at::Tensor &, double) { absent(); }
at::Tensor rms_norm_fp32_gain(const at::Tensor &, const at::Tensor &, double) { absent(); }
at::Tensor rms_norm_gated(const at::Tensor &, const at::Tensor &, const at::Tensor &, double) { absent(); }
at::Tensor causal_conv1d_silu(const at::Tensor &, const at::Tensor &) { absent(); }
at::Tensor l2norm_repeat(const at::Tensor &, int64_t, double) { absent(); }
at::Tensor qk_norm_rope(const at::Tensor &, int64_t, int64_t, ops::QkNorm, const at::Tensor &, double,
                        std::optional<double>, const at::Tensor &, const at::Tensor &, int64_t, bool) {
    absent();
}
MoeDispatch moe_dispatch(const at::Tensor &, const at::Tensor &, int64_t) { absent(); }
at::Tensor silu_mul(const at::Tensor &) { absent(); }
at::Tensor moe_combine(const at::Tensor &, const at::Tensor &, const at::Tensor &, at::Tensor *) { absent(); }
bool mxfp4_aligned(const at::Tensor &, const at::Tensor &) { return false; }
void mxfp4_dequantize(const at::Tensor &, const at::Tensor &, at::Tensor &) { absent(); }
at::Tensor token_nll(const at::Tensor &, const at::Tensor &) { absent(); }
void absmax_count(const at::Tensor &, double, at::Tensor &, at::Tensor &) { absent(); }

}  // namespace extractor::fused

namespace extractor::device_memory {
void prefer_expandable_segments() {}
std::optional<uint64_t> allocator_peak_reserved_bytes(int) { return std::nullopt; }
std::optional<uint64_t> allocator_peak_allocated_bytes(int) { return std::nullopt; }
}  // namespace extractor::device_memory

namespace extractor {
std::shared_ptr<OffloadStreamer> make_offload_streamer(const Weights &, int, int) { return nullptr; }
at::Tensor pinned_empty(at::IntArrayRef sizes, at::ScalarType dtype) { return at::empty(sizes, at::TensorOptions().dtype(dtype)); }
}  // namespace extractor
