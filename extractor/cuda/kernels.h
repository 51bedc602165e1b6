// Launchers for the extractor's fused CUDA kernels (kernels.cu). Raw pointers and a stream only:
// no torch header reaches nvcc. Callers are fused_ops.cpp's tensor wrappers, which check shapes,
// dtypes and devices first; these launchers trust their arguments. Every function returns the
// launch's cudaError_t. Shape letters as in extractor/ops.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace extractor::cuda_kernels {

enum class DType { F32, F16, BF16 };

// RMSNorm over rows of x (x_row_stride elements apart) into y [rows,width] contiguous, statistics
// in fp32, inv = rsqrt(mean(x^2) + eps), in the variants the families use:
//   Plain      y = round(w * round(x * inv))                   (Llama's and most families')
//   Fp32Gain   y = round(g * (x * inv)), g fp32                 (GPT-OSS's; Qwen3-Next's zero-centred
//                                                               norm with g = 1 + w)
//   Gated      y = round(round(w * round(x * inv)) * silu(z))   (Qwen3NextRMSNormGated: silu of the
//                                                               gate z in fp32, the product rounded once)
enum class NormVariant { Plain = 0, Fp32Gain = 1, Gated = 2 };
struct RmsNormArgs {
    const void * x = nullptr;      // rows of width elements, x_row_stride apart
    int64_t x_row_stride = 0;
    const void * weight = nullptr;  // [width]: the activation dtype, fp32 for Fp32Gain
    const void * gate = nullptr;    // Gated: rows of width elements, gate_row_stride apart
    int64_t gate_row_stride = 0;
    void * y = nullptr;             // [rows,width] contiguous
    int64_t rows = 0, width = 0;
    float eps = 0;
    NormVariant variant = NormVariant::Plain;
};
cudaError_t rms_norm_variant(DType dtype, const RmsNormArgs & args, cudaStream_t stream);

// Qwen3-Next's short convolution: y[b,t,c] = round(silu(round(sum_k w[c,k] * x[b,t-Kc+1+k,c]))) with
// x = 0 before t = 0, as HF's depthwise conv1d (padding Kc-1, first T outputs) then SiLU. x and y
// [B,T,C] contiguous, w [C,Kc] contiguous, all of dtype.
cudaError_t causal_conv1d_silu(DType dtype, const void * x, const void * w, void * y, int64_t B, int64_t T, int64_t C,
                               int Kc, cudaStream_t stream);

// Gated DeltaNet's q/k preparation: x [B,T,Nk,D] (last dim contiguous; b, t, head strides in
// elements) to y [B,T,Nk*rep,D] fp32 contiguous, key head h repeated as heads h*rep..h*rep+rep-1
// (repeat_interleave), each row L2-normalised in fp32 as HF's l2norm: x * rsqrt(sum(x*x) + eps).
cudaError_t l2norm_repeat(DType dtype, const void * x, int64_t stride_b, int64_t stride_t, int64_t stride_h, int64_t B,
                          int64_t T, int64_t Nk, int64_t D, int rep, float eps, float * y, cudaStream_t stream);

// PerHeadFp32Gain: per head, y = round(g * (x * inv)) with g fp32 [head_dim] (Qwen3-Next's
// zero-centred q/k norm, g = 1 + w).
enum class HeadNorm { None = 0, Whole = 1, PerHead = 2, PerHeadFp32Gain = 3 };

struct QkRopeArgs {
    const void * x = nullptr;      // [N, n_heads*x_head_stride] rows, x_row_stride elements apart
    int64_t x_row_stride = 0;
    void * out = nullptr;          // [N, n_heads*head_dim] contiguous (= [B,T,Nh,D] memory)
    int64_t rows = 0;              // N = B*T
    int64_t seq_len = 0;           // T: row r is position r % T
    int n_heads = 0;
    int head_dim = 0;
    int x_head_stride = 0;         // elements between heads in a row of x (head_dim, or more when
                                   // the projection interleaves heads with other outputs)
    int rot_dim = 0;               // even, <= head_dim: the first rot_dim dims of a head rotate
    HeadNorm norm = HeadNorm::None;
    const void * norm_weight = nullptr;  // [n_heads*head_dim] (Whole) or [head_dim] (PerHead*; fp32 for
                                         // PerHeadFp32Gain)
    float eps = 0;
    float clip = -1;               // >= 0: clamp to [-clip, clip] after the norm (OLMoE clip_qkv)
    const void * cos = nullptr;    // [T, rot_dim]
    const void * sin = nullptr;    // [T, rot_dim]
};
// Optional RMSNorm (whole projection or per head), optional clamp, then half-split RoPE on the
// first rot_dim dims of each head (partial rotary: the rest pass through), each step rounded to the
// activation dtype exactly where HF's element-wise ops round.
cudaError_t qk_norm_rope(DType dtype, const QkRopeArgs & args, cudaStream_t stream);

// Expert dispatch without a sort. top_i [S] expert of each (token, slot), S = N*K, slot s belongs
// to token s / K. Writes counts [E] (must be zero on entry), offs [E] int32 cumulative row ends
// (grouped_mm's offsets), cursor [E] scratch, slot_pos [S] = the row of slot s in xs, and
// xs [S, row_bytes] = x's rows grouped by expert. Rows are copied as 16-byte words: row_bytes and
// x_row_stride_bytes must be multiples of 16. Rows of one expert land in no fixed order; every
// consumer goes through slot_pos, and a row's product does not depend on where it sits.
cudaError_t moe_permute(const void * x, int64_t x_row_stride_bytes, int64_t row_bytes, const int64_t * top_i,
                        int64_t S, int K, int E, int32_t * counts, int32_t * offs, int32_t * cursor, int32_t * slot_pos,
                        void * xs, cudaStream_t stream);

// act[s,:] = round(silu(gu[s,:I])) * gu[s,I:] rounded, as HF's act_fn(gate) * up. I % 8 == 0.
cudaError_t silu_mul(DType dtype, const void * gate_up, void * act, int64_t S, int64_t I, cudaStream_t stream);

// y[n,:] = round(sum_k out[slot_pos[n*K+k],:] * w[n,k]) with fp32 weights, products and sum: HF 5.x's
// grouped_mm combine ((proj_out * fp32 weights)[inv_perm].view(N,K,H).sum(1).to(dtype)). H % 8 == 0.
// slot_max non-null ([N*K] fp32, K <= kSlotMaxK): also slot_max[s] = max |out[slot_pos[s],:]| (the
// per-expert statistics' input, from the rows this pass reads anyway; NaN propagates).
inline constexpr int kSlotMaxK = 16;
cudaError_t moe_combine(DType dtype, const void * out, const int32_t * slot_pos, const float * weights, int64_t N,
                        int K, int64_t H, void * y, float * slot_max, cudaStream_t stream);

// MXFP4 decode (extractor/mxfp4.h): n_blocks blocks of 16 bytes, each with one e8m0 scale byte, to
// n_blocks * 32 values of dtype: value 2j of a block is the low nibble of byte j, value 2j+1 its high
// nibble, each e2m1 code times 2^(scale - 127) (scale 0: 2^-127; 255: inf), computed in fp32 (exact)
// and rounded once to dtype. blocks and out must be 16-byte aligned.
cudaError_t mxfp4_dequantize(DType dtype, const uint8_t * blocks, const uint8_t * scales, int64_t n_blocks, void * out,
                             cudaStream_t stream);

// nll[r] = logsumexp(logits[r,:]) - logits[r, target[r]] in fp32 (the log_softmax of the fp32-upcast
// logits at the target, as HF's loss), one read of logits [rows,V] (contiguous, 16-byte aligned).
// A target outside [0,V) gives NaN.
cudaError_t token_nll(DType dtype, const void * logits, int64_t rows, int64_t V, const int64_t * target, float * nll,
                      cudaStream_t stream);

// AbsmaxSink's summary of a capture x [rows,H] (contiguous) in one read: max_bits[h] = max(max_bits[h],
// float bits of max_r |x[r,h]|) (floats >= 0 compare as their bits; a NaN propagates) and
// count += #(|x| >= threshold), compared as fp32 (exact for a threshold x's dtype holds).
cudaError_t absmax_count(DType dtype, const void * x, int64_t rows, int64_t H, float threshold, uint32_t * max_bits,
                         unsigned long long * count, cudaStream_t stream);

}  // namespace extractor::cuda_kernels
