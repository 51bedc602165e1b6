// Tensor wrappers around the fused kernels (kernels.h): check what the kernels assume, allocate
// outputs, launch on the tensor's device and current stream, and turn a CUDA error into an Error.
#include "extractor/cuda/fused_ops.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "extractor/cuda/kernels.h"

namespace extractor::fused {
namespace {

namespace k = cuda_kernels;

k::DType dtype_of(const at::Tensor & t) {
    switch (t.scalar_type()) {
    case at::kFloat: return k::DType::F32;
    case at::kHalf: return k::DType::F16;
    case at::kBFloat16: return k::DType::BF16;
    default: throw common::Error::internal("fused kernels: unsupported dtype " + std::string(c10::toString(t.scalar_type())));
    }
}

cudaStream_t stream_of(const at::Tensor & t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

void check(cudaError_t e, const char * what) {
    if (e != cudaSuccess)
        throw common::Error::internal(std::string("fused kernel ") + what + ": " + cudaGetErrorString(e));
}

void require(bool ok, const char * what) {
    if (!ok) throw common::Error::internal(std::string("fused kernels: ") + what);
}

}  // namespace

bool built() { return true; }

namespace {

// x [...,W] as evenly strided rows with a contiguous last dim: [N,W] without a copy where the layout
// allows. A narrowed [B,T-1,W] (perplexity drops each window's last position) is not evenly strided
// across the batch; `view` threw on it, reshape copies it.
at::Tensor as_rows(const at::Tensor & x) {
    at::Tensor rows = x.reshape({-1, x.size(-1)});
    if (rows.stride(-1) != 1) rows = rows.contiguous();
    require(rows.stride(-1) == 1, "rows not contiguous");
    return rows;
}

at::Tensor rms_norm_variant(const at::Tensor & x, const at::Tensor & weight, const at::Tensor * gate, double eps,
                            k::NormVariant variant) {
    const int64_t W = x.size(-1);
    at::Tensor rows = as_rows(x);
    require(weight.numel() == W && weight.device() == x.device(), "rms_norm: weight shape or device");
    at::Tensor g;
    if (gate) {
        require(gate->sizes() == x.sizes() && gate->scalar_type() == x.scalar_type() && gate->device() == x.device(),
                "rms_norm_gated: gate must match x");
        g = as_rows(*gate);
    }
    at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    k::RmsNormArgs a;
    a.x = rows.data_ptr();
    a.x_row_stride = rows.stride(0);
    a.weight = weight.data_ptr();
    a.gate = g.defined() ? g.data_ptr() : nullptr;
    a.gate_row_stride = g.defined() ? g.stride(0) : 0;
    a.y = y.data_ptr();
    a.rows = rows.size(0);
    a.width = W;
    a.eps = static_cast<float>(eps);
    a.variant = variant;
    const c10::cuda::CUDAGuard guard(x.device());
    check(k::rms_norm_variant(dtype_of(x), a, stream_of(x)), "rms_norm");
    return y;
}

}  // namespace

at::Tensor rms_norm(const at::Tensor & x, const at::Tensor & weight, double eps) {
    return rms_norm_variant(x, weight.to(x.scalar_type()).contiguous(), nullptr, eps, k::NormVariant::Plain);
}

at::Tensor rms_norm_fp32_gain(const at::Tensor & x, const at::Tensor & gain, double eps) {
    return rms_norm_variant(x, gain.to(at::kFloat).contiguous(), nullptr, eps, k::NormVariant::Fp32Gain);
}

at::Tensor rms_norm_gated(const at::Tensor & x, const at::Tensor & z, const at::Tensor & weight, double eps) {
    return rms_norm_variant(x, weight.to(x.scalar_type()).contiguous(), &z, eps, k::NormVariant::Gated);
}

at::Tensor causal_conv1d_silu(const at::Tensor & x, const at::Tensor & weight) {
    require(x.dim() == 3 && weight.dim() == 3 && weight.size(0) == x.size(2) && weight.size(1) == 1,
            "causal_conv1d_silu: x [B,T,C], weight [C,1,Kc]");
    require(weight.size(2) >= 1 && weight.size(2) <= 64, "causal_conv1d_silu: kernel width 1..64");
    require(weight.device() == x.device(), "causal_conv1d_silu: weight on another device");
    at::Tensor xc = x.contiguous();
    at::Tensor w = weight.to(x.scalar_type()).contiguous();
    at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    const c10::cuda::CUDAGuard guard(x.device());
    check(k::causal_conv1d_silu(dtype_of(x), xc.data_ptr(), w.data_ptr(), y.data_ptr(), x.size(0), x.size(1), x.size(2),
                                static_cast<int>(w.size(2)), stream_of(x)),
          "causal_conv1d_silu");
    return y;
}

at::Tensor l2norm_repeat(const at::Tensor & x, int64_t rep, double eps) {
    require(x.dim() == 4 && x.stride(3) == 1 && rep >= 1 && rep <= 1024, "l2norm_repeat: x [B,T,Nk,D] with a contiguous last dim");
    const int64_t B = x.size(0), T = x.size(1), Nk = x.size(2), D = x.size(3);
    at::Tensor y = at::empty({B, T, Nk * rep, D}, x.options().dtype(at::kFloat));
    const c10::cuda::CUDAGuard guard(x.device());
    check(k::l2norm_repeat(dtype_of(x), x.data_ptr(), x.stride(0), x.stride(1), x.stride(2), B, T, Nk, D, static_cast<int>(rep),
                           static_cast<float>(eps), y.data_ptr<float>(), stream_of(x)),
          "l2norm_repeat");
    return y;
}

at::Tensor qk_norm_rope(const at::Tensor & x, int64_t n_heads, int64_t head_dim, ops::QkNorm norm,
                        const at::Tensor & norm_weight, double eps, std::optional<double> clip, const at::Tensor & cos,
                        const at::Tensor & sin, int64_t head_stride, bool zero_centred) {
    if (head_stride == 0) head_stride = head_dim;
    require(x.dim() == 3 && x.size(2) == n_heads * head_stride && head_stride >= head_dim, "qk_norm_rope: x shape");
    require(norm != ops::QkNorm::Whole || head_stride == head_dim, "qk_norm_rope: a whole-projection norm needs packed heads");
    require(!zero_centred || norm == ops::QkNorm::PerHead, "qk_norm_rope: zero-centred gain is a per-head norm");
    const int64_t B = x.size(0), T = x.size(1);
    at::Tensor rows = x.stride(2) == 1 && x.stride(0) == T * x.stride(1) ? x : x.contiguous();
    at::Tensor c = cos.to(x.scalar_type()).contiguous(), s = sin.to(x.scalar_type()).contiguous();
    require(c.dim() == 2 && c.size(0) >= T && c.size(1) >= 2 && c.size(1) <= head_dim && c.size(1) % 2 == 0 &&
                s.sizes() == c.sizes(),
            "qk_norm_rope: cos/sin shape");
    require(c.device() == x.device() && s.device() == x.device(), "qk_norm_rope: cos/sin on another device");
    require(norm == ops::QkNorm::None || norm_weight.device() == x.device(), "qk_norm_rope: norm weight on another device");
    at::Tensor w;
    k::HeadNorm mode = k::HeadNorm::None;
    if (norm == ops::QkNorm::Whole) {
        mode = k::HeadNorm::Whole;
        w = norm_weight.to(x.scalar_type()).contiguous();
        require(w.numel() == n_heads * head_dim, "qk_norm_rope: whole-projection norm weight size");
    } else if (norm == ops::QkNorm::PerHead && zero_centred) {
        // HF: norm(x.float()) * (1.0 + w.float()): the gain is formed in fp32.
        mode = k::HeadNorm::PerHeadFp32Gain;
        w = (norm_weight.to(at::kFloat) + 1.0).contiguous();
        require(w.numel() == head_dim, "qk_norm_rope: per-head norm weight size");
    } else if (norm == ops::QkNorm::PerHead) {
        mode = k::HeadNorm::PerHead;
        w = norm_weight.to(x.scalar_type()).contiguous();
        require(w.numel() == head_dim, "qk_norm_rope: per-head norm weight size");
    }
    at::Tensor out = at::empty({B, T, n_heads, head_dim}, x.options().memory_format(at::MemoryFormat::Contiguous));
    k::QkRopeArgs a;
    a.x = rows.data_ptr();
    a.x_row_stride = rows.stride(1);
    a.out = out.data_ptr();
    a.rows = B * T;
    a.seq_len = T;
    a.n_heads = static_cast<int>(n_heads);
    a.head_dim = static_cast<int>(head_dim);
    a.x_head_stride = static_cast<int>(head_stride);
    a.rot_dim = static_cast<int>(c.size(1));
    a.norm = mode;
    a.norm_weight = w.defined() ? w.data_ptr() : nullptr;
    a.eps = static_cast<float>(eps);
    a.clip = clip ? static_cast<float>(*clip) : -1.f;
    a.cos = c.data_ptr();
    a.sin = s.data_ptr();
    const c10::cuda::CUDAGuard guard(x.device());
    check(k::qk_norm_rope(dtype_of(x), a, stream_of(x)), "qk_norm_rope");
    return out.transpose(1, 2);  // [B,Nh,T,D]
}

MoeDispatch moe_dispatch(const at::Tensor & x, const at::Tensor & top_i, int64_t n_experts) {
    require(x.dim() == 2 && x.stride(1) == 1, "moe_dispatch: x must be [N,H] with contiguous rows");
    const int64_t N = x.size(0), H = x.size(1), K = top_i.size(1);
    const int64_t row_bytes = H * static_cast<int64_t>(x.element_size());
    const int64_t stride_bytes = x.stride(0) * static_cast<int64_t>(x.element_size());
    require(row_bytes % 16 == 0 && stride_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0,
            "moe_dispatch: rows must be 16-byte multiples");
    at::Tensor ids = top_i.to(at::kLong).contiguous();
    const auto i32 = x.options().dtype(at::kInt);
    at::Tensor counts = at::zeros({n_experts}, i32);
    at::Tensor cursor = at::empty({n_experts}, i32);
    MoeDispatch d;
    d.offs = at::empty({n_experts}, i32);
    d.slot_pos = at::empty({N * K}, i32);
    d.xs = at::empty({N * K, H}, x.options());
    const c10::cuda::CUDAGuard guard(x.device());
    check(k::moe_permute(x.data_ptr(), stride_bytes, row_bytes, ids.data_ptr<int64_t>(), N * K, static_cast<int>(K),
                         static_cast<int>(n_experts), counts.data_ptr<int32_t>(), d.offs.data_ptr<int32_t>(),
                         cursor.data_ptr<int32_t>(), d.slot_pos.data_ptr<int32_t>(), d.xs.data_ptr(), stream_of(x)),
          "moe_permute");
    return d;
}

at::Tensor silu_mul(const at::Tensor & gate_up) {
    require(gate_up.dim() == 2 && gate_up.is_contiguous() && gate_up.size(1) % 16 == 0, "silu_mul: gate_up shape");
    const int64_t S = gate_up.size(0), I = gate_up.size(1) / 2;
    at::Tensor act = at::empty({S, I}, gate_up.options());
    const c10::cuda::CUDAGuard guard(gate_up.device());
    check(k::silu_mul(dtype_of(gate_up), gate_up.data_ptr(), act.data_ptr(), S, I, stream_of(gate_up)), "silu_mul");
    return act;
}

at::Tensor moe_combine(const at::Tensor & out, const at::Tensor & slot_pos, const at::Tensor & top_w, at::Tensor * slot_max) {
    require(out.dim() == 2 && out.is_contiguous() && out.size(1) % 8 == 0, "moe_combine: out shape");
    require(top_w.scalar_type() == at::kFloat && top_w.dim() == 2, "moe_combine: weights must be fp32 [N,K]");
    const int64_t N = top_w.size(0), K = top_w.size(1), H = out.size(1);
    require(slot_pos.numel() == N * K && out.size(0) == N * K, "moe_combine: slot count");
    at::Tensor w = top_w.contiguous();
    at::Tensor y = at::empty({N, H}, out.options());
    if (slot_max != nullptr) {
        static_assert(kCombineMaxTopK == k::kSlotMaxK);
        require(K <= kCombineMaxTopK, "moe_combine: slot maxima need top-k <= 16");
        *slot_max = at::empty({N * K}, out.options().dtype(at::kFloat));
    }
    const c10::cuda::CUDAGuard guard(out.device());
    check(k::moe_combine(dtype_of(out), out.data_ptr(), slot_pos.data_ptr<int32_t>(), w.data_ptr<float>(), N,
                         static_cast<int>(K), H, y.data_ptr(), slot_max ? slot_max->data_ptr<float>() : nullptr,
                         stream_of(out)),
          "moe_combine");
    return y;
}

bool mxfp4_aligned(const at::Tensor & blocks, const at::Tensor & out) {
    return reinterpret_cast<uintptr_t>(blocks.data_ptr()) % 16 == 0 && reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 == 0;
}

void mxfp4_dequantize(const at::Tensor & blocks, const at::Tensor & scales, at::Tensor & out) {
    require(blocks.scalar_type() == at::kByte && scales.scalar_type() == at::kByte, "mxfp4_dequantize: blocks and scales must be uint8");
    require(blocks.is_cuda() && scales.device() == blocks.device() && out.device() == blocks.device(),
            "mxfp4_dequantize: tensors on different devices");
    require(blocks.is_contiguous() && scales.is_contiguous() && out.is_contiguous(), "mxfp4_dequantize: non-contiguous tensor");
    require(blocks.dim() >= 2 && blocks.size(-1) == 16 && blocks.numel() == scales.numel() * 16 && out.numel() == scales.numel() * 32,
            "mxfp4_dequantize: shapes");
    require(mxfp4_aligned(blocks, out), "mxfp4_dequantize: blocks and out must be 16-byte aligned");
    const c10::cuda::CUDAGuard guard(out.device());
    check(k::mxfp4_dequantize(dtype_of(out), blocks.data_ptr<uint8_t>(), scales.data_ptr<uint8_t>(), scales.numel(),
                              out.data_ptr(), stream_of(out)),
          "mxfp4_dequantize");
}

at::Tensor token_nll(const at::Tensor & logits, const at::Tensor & target) {
    require(logits.dim() == 2 && logits.is_contiguous(), "token_nll: logits must be contiguous [n,V]");
    require(target.scalar_type() == at::kLong && target.dim() == 1 && target.size(0) == logits.size(0) &&
                target.device() == logits.device(),
            "token_nll: target must be int64 [n] on the logits' device");
    require(reinterpret_cast<uintptr_t>(logits.data_ptr()) % 16 == 0, "token_nll: logits must be 16-byte aligned");
    at::Tensor t = target.contiguous();
    at::Tensor nll = at::empty({logits.size(0)}, logits.options().dtype(at::kFloat));
    const c10::cuda::CUDAGuard guard(logits.device());
    check(k::token_nll(dtype_of(logits), logits.data_ptr(), logits.size(0), logits.size(1), t.data_ptr<int64_t>(),
                       nll.data_ptr<float>(), stream_of(logits)),
          "token_nll");
    return nll;
}

void absmax_count(const at::Tensor & x, double threshold, at::Tensor & max_abs, at::Tensor & count) {
    require(x.dim() >= 1 && max_abs.scalar_type() == at::kFloat && max_abs.is_contiguous() && max_abs.numel() == x.size(-1) &&
                count.scalar_type() == at::kLong && count.numel() == 1 && max_abs.device() == x.device() &&
                count.device() == x.device(),
            "absmax_count: max_abs must be fp32 [H] and count int64 [] on x's device");
    const at::Tensor xc = x.contiguous();
    const c10::cuda::CUDAGuard guard(x.device());
    check(k::absmax_count(dtype_of(xc), xc.data_ptr(), xc.numel() / std::max<int64_t>(xc.size(-1), 1), xc.size(-1),
                          static_cast<float>(threshold), reinterpret_cast<uint32_t *>(max_abs.data_ptr<float>()),
                          reinterpret_cast<unsigned long long *>(count.data_ptr<int64_t>()), stream_of(xc)),
          "absmax_count");
}

}  // namespace extractor::fused
