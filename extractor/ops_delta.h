// Qwen3-Next's arithmetic (families/qwen3_next.cpp): the gated DeltaNet linear attention (causal
// depthwise conv1d, the gated delta rule, the gated RMSNorm), the gated full attention and the
// zero-centred RMSNorm. Numerics follow transformers' torch fallback in
// models/qwen3_next/modeling_qwen3_next.py (docs/model-math.md#qwen3-next), rounding to the
// activation dtype where it rounds. Shape letters: ops.h, plus
//   Nk / Nv  linear-attention key / value heads     Dk / Dv  their head dims
//   C  = 2*Nk*Dk + Nv*Dv conv channels (q, k, v)    Kc  conv kernel width
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "extractor/ops.h"

namespace extractor::ops {

// Qwen3NextRMSNorm: the gain is stored as an offset from 1 (HF initialises it to zeros), so the
// normalised fp32 value is multiplied by (1 + w) in fp32 and rounded once. x [...,W], w [W].
at::Tensor rms_norm_zero_centred(const at::Tensor & x, const at::Tensor & weight, double eps);

// Depthwise causal conv1d then SiLU, as HF's conv1d(padding Kc-1)[..., :T]: output t sees inputs
// t-Kc+1..t only. x [B,T,C], weight [C,1,Kc] -> [B,T,C] in x's dtype.
at::Tensor causal_conv1d_silu(const at::Tensor & x, const at::Tensor & weight);

// x / sqrt(sum x^2 + eps) over the last dim, in x's dtype (HF's l2norm, as FLA computes it).
at::Tensor l2_normalize(const at::Tensor & x, double eps = 1e-6);

// The gated delta rule. Per head, with state S [Dk,Dv] starting at 0, for each token t:
//   S = exp(g_t) S;  S = S + k_t (beta_t (v_t - S^T k_t))^T;  o_t = S^T (q_t / sqrt(Dk)).
// q, k [B,T,Nv,Dk] (already l2-normalised and repeated to Nv heads), v [B,T,Nv,Dv], g [B,T,Nv]
// (log decay, <= 0), beta [B,T,Nv] -> [B,T,Nv,Dv] in v's dtype; all arithmetic in fp32.
// chunked: HF's torch_chunk_gated_delta_rule (the prefill path), `chunk` tokens at a time: within a
// chunk the rule is solved as a triangular system, the state is carried between chunks.
// recurrent: the plain step-by-step recurrence above (HF's torch_recurrent_gated_delta_rule); the
// tests check the chunked form against it.
at::Tensor gated_delta_rule_chunked(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v,
                                    const at::Tensor & g, const at::Tensor & beta, int64_t chunk = 64);
at::Tensor gated_delta_rule_recurrent(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v,
                                      const at::Tensor & g, const at::Tensor & beta);

// Qwen3NextRMSNormGated: RMSNorm over the last dim (normalised value rounded to x's dtype, times
// the gain, which is a plain gain here, not zero-centred), then times SiLU(z) in fp32, rounded once.
// x, z [...,W], weight [W].
at::Tensor rms_norm_gated(const at::Tensor & x, const at::Tensor & z, const at::Tensor & weight, double eps);

struct DeltaNetWeights {
    at::Tensor in_qkvz;   // [2*Nk*Dk + 2*Nv*Dv, H]: per key head group [q Dk | k Dk | v r*Dv | z r*Dv]
    at::Tensor in_ba;     // [2*Nv, H]: per key head group [b r | a r]  (r = Nv / Nk)
    at::Tensor conv;      // [C,1,Kc]
    at::Tensor dt_bias;   // [Nv]
    at::Tensor a_log;     // [Nv]
    at::Tensor norm;      // [Dv]
    at::Tensor out;       // [H, Nv*Dv]
};

struct DeltaNetOptions {
    int64_t n_k_heads = 0, n_v_heads = 0, k_head_dim = 0, v_head_dim = 0;
    double eps = 1e-6;
    int64_t chunk = 64;   // HF's chunk size for the prefill form
    bool recurrent = false;  // step-by-step instead of chunked (tests)
};

// Qwen3NextGatedDeltaNet without a cache (prefill of whole windows). a [B,T,H] -> [B,T,H].
at::Tensor gated_delta_net(const at::Tensor & a, const DeltaNetWeights & w, const DeltaNetOptions & opt);

// Qwen3NextAttention: q_proj yields [query D | gate D] per head; zero-centred per-head q/k norm;
// RoPE on the first cos.size(-1) dims (partial rotary); causal attention; output times
// sigmoid(gate) before o_proj. w.q [Nq*2D,H]. a [B,T,H] -> [B,T,H].
at::Tensor gated_attention(const at::Tensor & a, const AttnWeights & w, const AttnOptions & opt, const at::Tensor & cos,
                           const at::Tensor & sin);

}  // namespace extractor::ops
