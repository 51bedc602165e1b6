// Qwen3-Next ops (ops_delta.h). Each follows the op order of transformers' torch fallback in
// models/qwen3_next/modeling_qwen3_next.py, so fp32 runs agree to summation order and bf16 runs
// round where HF rounds (docs/model-math.md#qwen3-next).
#include "extractor/ops_delta.h"

#include <ATen/ATen.h>
#include <ATen/ScalarOps.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "extractor/cuda/fused_ops.h"

namespace extractor::ops {

at::Tensor rms_norm_zero_centred(const at::Tensor & x, const at::Tensor & weight, double eps) {
    // HF: norm(x.float()) * (1.0 + w.float()), rounded once: the fp32-gain RMSNorm with gain 1 + w.
    return rms_norm_fp32_gain(x, weight.to(at::kFloat) + 1.0, eps);                    // [...,W]
}

at::Tensor causal_conv1d_silu(const at::Tensor & x, const at::Tensor & weight) {
    ProfileScope profile("causal_conv1d");
    const int64_t T = x.size(1), C = x.size(2), Kc = weight.size(-1);
    if (weight.dim() != 3 || weight.size(0) != C || weight.size(1) != 1)
        throw common::Error::internal("causal_conv1d: weight must be [" + std::to_string(C) + ",1,Kc]");
    // 16-bit runs: one pass (cuDNN's depthwise conv1d took ~0.7 ms a layer at Qwen3-Next's shape).
    // fp32 runs keep cuDNN's conv, the arithmetic HF's fp32 forward runs, for the fp32 parity bar.
    if (fused::usable(x) && x.scalar_type() != at::kFloat && Kc <= 64) return fused::causal_conv1d_silu(x, weight);
    // Padding Kc-1 on both sides and keeping the first T outputs is exactly the causal conv: output
    // t covers padded inputs t..t+Kc-1, i.e. original inputs t-Kc+1..t.
    at::Tensor y = at::conv1d(x.transpose(1, 2), weight, {}, /*stride=*/1, /*padding=*/Kc - 1, /*dilation=*/1,
                              /*groups=*/C);                                           // [B,C,T+Kc-1]
    return at::silu(y.narrow(2, 0, T)).transpose(1, 2);                                // [B,T,C]
}

at::Tensor l2_normalize(const at::Tensor & x, double eps) {
    // In x's dtype, op for op as HF's l2norm; gated_delta_net calls it on fp32 q/k, as HF does.
    return x * at::rsqrt((x * x).sum(-1, /*keepdim=*/true) + eps);                    // [...,D]
}

namespace {

struct DeltaInputs {
    at::Tensor q, k, v, g, beta;  // [B,Nh,T,Dk], [B,Nh,T,Dk], [B,Nh,T,Dv], [B,Nh,T], [B,Nh,T] fp32
};

void check_delta_shapes(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v, const at::Tensor & g,
                        const at::Tensor & beta) {
    if (q.dim() != 4 || k.sizes() != q.sizes() || v.dim() != 4 || v.size(0) != q.size(0) || v.size(1) != q.size(1) ||
        v.size(2) != q.size(2) || g.dim() != 3 || g.sizes() != beta.sizes() || g.size(0) != q.size(0) ||
        g.size(1) != q.size(1) || g.size(2) != q.size(2))
        throw common::Error::internal("gated delta rule: q/k [B,T,Nv,Dk], v [B,T,Nv,Dv], g/beta [B,T,Nv] expected");
}

// Heads first and fp32, as both HF forms start; q pre-scaled by 1/sqrt(Dk).
DeltaInputs delta_inputs(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v, const at::Tensor & g,
                         const at::Tensor & beta) {
    check_delta_shapes(q, k, v, g, beta);
    auto heads_first = [](const at::Tensor & x) { return x.transpose(1, 2).contiguous().to(at::kFloat); };
    DeltaInputs in{heads_first(q), heads_first(k), heads_first(v), heads_first(g), heads_first(beta)};
    in.q = in.q * (1.0 / std::sqrt(static_cast<double>(q.size(-1))));
    return in;
}

// x [B,T,Nh,D] (or [B,T,Nh]) -> fp32 [n,B,Nh,c,D] (or [n,B,Nh,c]), contiguous and chunk-major:
// token t lands in chunk t / c, row t % c; rows past T are zero. Straight from the token-major
// input, so the dtype conversion and the layout change are one copy kernel (two when T is not a
// whole number of chunks: the whole chunks, then the tail). With scale, fp32 input is multiplied
// on the way (x * scale in fp32 is the same value before or after the copy); other dtypes are
// converted first and scaled in fp32, as heads_first then `* scale` does.
at::Tensor chunk_major(const at::Tensor & x, int64_t chunk, std::optional<double> scale = std::nullopt) {
    const bool vec = x.dim() == 4;
    const int64_t B = x.size(0), T = x.size(1), Nh = x.size(2), full = T / chunk, tail = T - full * chunk;
    const int64_t n = full + (tail > 0 ? 1 : 0);
    std::vector<int64_t> shape{n, B, Nh, chunk}, split{B, full, chunk, Nh}, perm{1, 0, 3, 2};
    if (vec) {
        shape.push_back(x.size(3));
        split.push_back(x.size(3));
        perm.push_back(4);
    }
    at::Tensor out = at::empty(shape, x.options().dtype(at::kFloat));                  // [n,B,Nh,c(,D)]
    auto fill = [&](at::Tensor dst, const at::Tensor & src) {
        if (scale && src.scalar_type() == at::kFloat) {
            // mul.out with the scalar wrapped, exactly as `x * scale` runs (one kernel, in fp32).
            at::mul_out(dst, src, at::native::wrapped_scalar_tensor(*scale));
        } else {
            dst.copy_(src);
            if (scale) dst.mul_(*scale);
        }
    };
    if (full > 0)  // [B,full*c,Nh(,D)] -> [B,full,c,Nh(,D)] -> [full,B,Nh,c(,D)]
        fill(out.narrow(0, 0, full), x.narrow(1, 0, full * chunk).reshape(split).permute(perm));
    if (tail > 0) {  // the last chunk: tail real rows, then zeros
        at::Tensor last = out.select(0, n - 1);                                        // [B,Nh,c(,D)]
        last.narrow(2, tail, chunk - tail).zero_();
        fill(last.narrow(2, 0, tail), x.narrow(1, full * chunk, tail).transpose(1, 2));  // [B,Nh,tail(,D)]
    }
    return out;
}

}  // namespace

at::Tensor gated_delta_rule_recurrent(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v,
                                      const at::Tensor & g, const at::Tensor & beta) {
    DeltaInputs in = delta_inputs(q, k, v, g, beta);
    const int64_t B = in.k.size(0), Nh = in.k.size(1), T = in.k.size(2), Dk = in.k.size(3), Dv = in.v.size(3);
    at::Tensor state = at::zeros({B, Nh, Dk, Dv}, in.v.options());                     // [B,Nh,Dk,Dv]
    at::Tensor out = at::zeros({B, Nh, T, Dv}, in.v.options());                        // [B,Nh,T,Dv]
    for (int64_t t = 0; t < T; ++t) {
        at::Tensor q_t = in.q.select(2, t), k_t = in.k.select(2, t), v_t = in.v.select(2, t);  // [B,Nh,D]
        at::Tensor decay = in.g.select(2, t).exp().unsqueeze(-1).unsqueeze(-1);        // [B,Nh,1,1]
        at::Tensor beta_t = in.beta.select(2, t).unsqueeze(-1);                        // [B,Nh,1]
        state = state * decay;
        at::Tensor kv_mem = (state * k_t.unsqueeze(-1)).sum(-2);                       // [B,Nh,Dv] = S^T k
        at::Tensor delta = (v_t - kv_mem) * beta_t;                                    // [B,Nh,Dv]
        state = state + k_t.unsqueeze(-1) * delta.unsqueeze(-2);                       // [B,Nh,Dk,Dv]
        out.select(2, t).copy_((state * q_t.unsqueeze(-1)).sum(-2));                   // [B,Nh,Dv]
    }
    return out.transpose(1, 2).contiguous().to(v.scalar_type());                      // [B,T,Nh,Dv]
}

at::Tensor gated_delta_rule_chunked(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v,
                                    const at::Tensor & g, const at::Tensor & beta, int64_t chunk) {
    ProfileScope profile("gated_delta_rule");
    if (chunk < 1) throw common::Error::internal("gated delta rule: chunk size must be positive");
    check_delta_shapes(q, k, v, g, beta);
    const int64_t B = q.size(0), T = q.size(1), Nh = q.size(2), Dk = q.size(3), Dv = v.size(3), BN = B * Nh;
    // Everything below is chunk-major, [n,B*Nh,c,D]: chunk index outermost, (B,Nh) flattened, so
    // that the recurrence's per-chunk operands are [B*Nh,c,D] blocks with no re-layout, and each
    // input is laid out (and made fp32) by one copy straight from [B,T,Nh,D]. Zero padding to whole
    // chunks: a padded token has k = v = 0 and g = 0, so it changes neither the state nor any real
    // token's output; its own outputs are never written out.
    const int64_t full = T / chunk, tail = T - full * chunk, n = full + (tail > 0 ? 1 : 0);
    const double scale = 1.0 / std::sqrt(static_cast<double>(Dk));
    at::Tensor q_c = chunk_major(q, chunk, scale).view({n, BN, chunk, Dk});            // [n,BN,c,Dk] q/sqrt(Dk)
    at::Tensor k_c = chunk_major(k, chunk).view({n, BN, chunk, Dk});                   // [n,BN,c,Dk]
    at::Tensor v_c = chunk_major(v, chunk).view({n, BN, chunk, Dv});                   // [n,BN,c,Dv]
    at::Tensor beta_c = chunk_major(beta, chunk).view({n, BN, chunk, 1});              // [n,BN,c,1]
    at::Tensor G = chunk_major(g, chunk).view({n, BN, chunk}).cumsum(-1);              // [n,BN,c]
    // The two triangular systems share their matrix, so their right-hand sides sit side by side
    // in one buffer, [V_beta | decayed K_beta], written in place by the products that make them,
    // and are solved by one call (a triangular solve treats each column on its own).
    at::Tensor rhs = at::empty({n, BN, chunk, Dv + Dk}, q_c.options());                // [n,BN,c,Dv+Dk]
    at::Tensor v_beta = rhs.narrow(-1, 0, Dv), decayed_k_beta = rhs.narrow(-1, Dv, Dk);
    at::Tensor k_beta = k_c * beta_c;                                                  // [n,BN,c,Dk]
    at::mul_out(v_beta, v_c, beta_c);                                                  // [n,BN,c,Dv]
    v_c.reset();
    // Cumulative log decay within each chunk; pairwise[i][j] = exp(G_i - G_j) for j <= i, else 0
    // (-inf before the exp, so nothing overflows). Op for op as transformers 5.17's
    // torch_chunk_gated_delta_rule, so that fp32 sums run in its order and bf16 rounds as it does.
    const auto bool_opts = at::TensorOptions().dtype(at::kBool).device(q.device());
    at::Tensor upper_strict = at::ones({chunk, chunk}, bool_opts).triu(1);             // [c,c]
    at::Tensor pairwise = (G.unsqueeze(-1) - G.unsqueeze(-2))
                              .masked_fill(upper_strict, -std::numeric_limits<double>::infinity())
                              .exp();                                                  // [n,BN,c,c]
    // Within a chunk the rule is a unit lower-triangular system (I + L) U = V_beta, with
    // L_ij = beta_i exp(G_i - G_j) k_i.k_j for j < i (the diagonal is ignored: unitriangular).
    at::Tensor ut_system = at::matmul(k_beta, k_c.transpose(-1, -2)).mul_(pairwise);  // [n,BN,c,c]
    const at::Tensor intra_n = at::matmul(q_c, k_c.transpose(-1, -2)).mul_(pairwise);  // [n,BN,c,c]
    pairwise.reset();
    const at::Tensor G_exp = G.exp().unsqueeze(-1);                                    // [n,BN,c,1]
    at::mul_out(decayed_k_beta, k_beta, G_exp);                                        // [n,BN,c,Dk]
    k_beta.reset();
    const at::Tensor solved = at::linalg_solve_triangular(ut_system, rhs, /*upper=*/false, /*left=*/true,
                                                          /*unitriangular=*/true);    // [n,BN,c,Dv+Dk]
    ut_system.reset();
    rhs.reset();
    const at::Tensor u_n = solved.narrow(-1, 0, Dv), kcd_n = solved.narrow(-1, Dv, Dk);  // [n,BN,c,Dv], [n,BN,c,Dk]
    // The decays applied once, not per chunk: q reads the state decayed to its position, k writes
    // into the state decayed to the chunk's end. In place: q_c and k_c have no other use left.
    const at::Tensor q_n = q_c.mul_(G_exp);                                            // [n,BN,c,Dk]
    const at::Tensor kdec_n = k_c.mul_((G.narrow(-1, chunk - 1, 1) - G).exp().unsqueeze(-1));  // [n,BN,c,Dk]
    const at::Tensor decay_n = G.select(-1, chunk - 1).exp().view({n, BN, 1, 1});     // [n,BN,1,1]

    // The recurrence over chunks. HF's step is v_new = U - K S, out = Q S + I v_new,
    // S' = S decay + K_dec^T v_new; substituting the first into the second gives
    // out = (Q - I K) S + I U, whose (Q - I K) and I U need no state and are formed for every chunk
    // at once. Stacked per chunk as M = [-K ; Q - I K] ([2c,Dk]) and Y = [U ; I U] ([2c,Dv]), one
    // batched matmul Y += M S yields [v_new ; out], so a chunk is three kernels (that matmul, the
    // decay, the state update) instead of five. The loop is launch-bound (32 chunks of 64 at 2048
    // tokens, tiny matmuls). All in fp32; the sums differ from HF's order only by where I's product
    // is added (the chunked-vs-recurrent tests hold it to 1e-5).
    const auto batched = [&](const at::Tensor & x) { return x.reshape({n * BN, x.size(2), x.size(3)}); };  // [n*BN,r,D]
    at::Tensor M = at::empty({n, BN, 2 * chunk, Dk}, q_c.options());                   // [n,BN,2c,Dk]
    at::Tensor minus_k = M.narrow(2, 0, chunk);                                        // [n,BN,c,Dk]
    at::neg_out(minus_k, kcd_n);                                                       // -K
    at::Tensor q_less = M.narrow(2, chunk, chunk);                                     // [n,BN,c,Dk]
    q_less.copy_(q_n);
    q_less.view({n * BN, chunk, Dk}).baddbmm_(batched(intra_n), batched(kcd_n), /*beta=*/1, /*alpha=*/-1);  // Q - I K
    at::Tensor Y = at::empty({n, BN, 2 * chunk, Dv}, q_c.options());                   // [n,BN,2c,Dv]
    Y.narrow(2, 0, chunk).copy_(u_n);                                                  // U
    at::Tensor iu = at::bmm(batched(intra_n), batched(u_n));                           // [n*BN,c,Dv] I U
    Y.narrow(2, chunk, chunk).copy_(iu.view({n, BN, chunk, Dv}));
    iu.reset();
    at::Tensor state = at::zeros({BN, Dk, Dv}, q_c.options());                         // [BN,Dk,Dv]
    for (int64_t c = 0; c < n; ++c) {
        at::Tensor y_c = Y[c];                                                         // [BN,2c,Dv]
        y_c.baddbmm_(M[c], state);                                                     // [v_new ; out]
        state.mul_(decay_n[c]).baddbmm_(kdec_n[c].transpose(1, 2), y_c.narrow(1, 0, chunk));  // S decay + K_dec^T v_new
    }
    // Back to token-major in v's dtype, one copy (the tail chunk's real rows in a second, small one).
    const at::Tensor out5 = Y.view({n, B, Nh, 2 * chunk, Dv}).narrow(3, chunk, chunk);  // [n,B,Nh,c,Dv]
    at::Tensor result = at::empty({B, T, Nh, Dv}, v.options());                        // [B,T,Nh,Dv]
    if (full > 0)
        result.narrow(1, 0, full * chunk)
            .view({B, full, chunk, Nh, Dv})
            .copy_(out5.narrow(0, 0, full).permute({1, 0, 3, 2, 4}));                  // [B,full,c,Nh,Dv]
    if (tail > 0)
        result.narrow(1, full * chunk, tail).copy_(out5.select(0, n - 1).narrow(2, 0, tail).transpose(1, 2));
    return result;
}

at::Tensor rms_norm_gated(const at::Tensor & x, const at::Tensor & z, const at::Tensor & weight, double eps) {
    // HF: w * norm(x).to(dtype) (as Llama's RMSNorm), then * silu(z.float()) in fp32, rounded once.
    ProfileScope profile("rms_norm_gated");
    if (fused::usable(x) && z.sizes() == x.sizes() && z.scalar_type() == x.scalar_type() &&
        weight.scalar_type() == x.scalar_type() && weight.numel() == x.size(-1))
        return fused::rms_norm_gated(x, z, weight, eps);
    return (rms_norm(x, weight, eps) * at::silu(z.to(at::kFloat))).to(x.scalar_type());  // [...,W]
}

at::Tensor gated_delta_net(const at::Tensor & a, const DeltaNetWeights & w, const DeltaNetOptions & opt) {
    ProfileScope profile("linear_attention");
    const int64_t B = a.size(0), T = a.size(1);
    const int64_t Nk = opt.n_k_heads, Nv = opt.n_v_heads, Dk = opt.k_head_dim, Dv = opt.v_head_dim, r = Nv / Nk;
    // HF's fix_query_key_value_ordering: the projections are laid out per key head group.
    at::Tensor qkvz = at::linear(a, w.in_qkvz).view({B, T, Nk, 2 * Dk + 2 * r * Dv});  // [B,T,Nk,2Dk+2rDv]
    at::Tensor ba = at::linear(a, w.in_ba).view({B, T, Nk, 2 * r});                    // [B,T,Nk,2r]
    at::Tensor q = qkvz.narrow(3, 0, Dk).reshape({B, T, Nk * Dk});                     // [B,T,Nk*Dk]
    at::Tensor k = qkvz.narrow(3, Dk, Dk).reshape({B, T, Nk * Dk});                    // [B,T,Nk*Dk]
    at::Tensor v = qkvz.narrow(3, 2 * Dk, r * Dv).reshape({B, T, Nv * Dv});            // [B,T,Nv*Dv]
    at::Tensor z = qkvz.narrow(3, 2 * Dk + r * Dv, r * Dv).reshape({B, T, Nv, Dv});    // [B,T,Nv,Dv]
    at::Tensor b = ba.narrow(3, 0, r).reshape({B, T, Nv});                             // [B,T,Nv]
    at::Tensor dt = ba.narrow(3, r, r).reshape({B, T, Nv});                            // [B,T,Nv] ("a" in HF)
    qkvz.reset();

    at::Tensor mixed = causal_conv1d_silu(at::cat({q, k, v}, -1), w.conv);            // [B,T,C]
    q = mixed.narrow(-1, 0, Nk * Dk).view({B, T, Nk, Dk});                             // [B,T,Nk,Dk]
    k = mixed.narrow(-1, Nk * Dk, Nk * Dk).view({B, T, Nk, Dk});                       // [B,T,Nk,Dk]
    v = mixed.narrow(-1, 2 * Nk * Dk, Nv * Dv).view({B, T, Nv, Dv});                   // [B,T,Nv,Dv]

    at::Tensor beta = at::sigmoid(b);                                                  // [B,T,Nv]
    // Log decay per token and head: -exp(A_log) * softplus(a + dt_bias), in fp32 (fp16 would
    // overflow exp(A_log), as HF notes).
    at::Tensor g = -w.a_log.to(at::kFloat).exp() * at::softplus(dt.to(at::kFloat) + w.dt_bias);  // [B,T,Nv] fp32
    // Key heads repeated to the value heads (value head h uses key head h / r), then L2-normalised,
    // in HF's order.
    // transformers 5.17 normalises q and k after casting them to fp32 (to match the FLA kernels);
    // earlier 5.x did it in the activation dtype. The output keeps v's dtype.
    if (fused::usable(q) && q.stride(3) == 1) {
        // One pass each: read the key heads once, write the fp32 value-head rows normalised.
        q = fused::l2norm_repeat(q, r, 1e-6);                                          // [B,T,Nv,Dk] fp32
        k = fused::l2norm_repeat(k, r, 1e-6);                                          // [B,T,Nv,Dk] fp32
    } else {
        if (r > 1) {
            q = q.repeat_interleave(r, 2);                                             // [B,T,Nv,Dk]
            k = k.repeat_interleave(r, 2);                                             // [B,T,Nv,Dk]
        }
        q = l2_normalize(q.to(at::kFloat));
        k = l2_normalize(k.to(at::kFloat));
    }
    at::Tensor core = opt.recurrent ? gated_delta_rule_recurrent(q, k, v, g, beta)
                                    : gated_delta_rule_chunked(q, k, v, g, beta, opt.chunk);  // [B,T,Nv,Dv]
    core = rms_norm_gated(core, z, w.norm, opt.eps).reshape({B, T, Nv * Dv});          // [B,T,Nv*Dv]
    return at::linear(core, w.out);                                                    // [B,T,H]
}

at::Tensor gated_attention(const at::Tensor & a, const AttnWeights & w, const AttnOptions & opt, const at::Tensor & cos,
                           const at::Tensor & sin) {
    ProfileScope profile("attention");
    const int64_t B = a.size(0), T = a.size(1), D = opt.head_dim;
    at::Tensor qg = linear(a, w.q).view({B, T, opt.n_heads, 2 * D});                   // [B,T,Nq,2D]
    at::Tensor gate = qg.narrow(-1, D, D).reshape({B, T, opt.n_heads * D});            // [B,T,Nq*D]
    at::Tensor q, k;
    at::Tensor v = linear(a, w.v).view({B, T, opt.n_kv_heads, D}).transpose(1, 2);    // [B,Nkv,T,D]
    if (fused::usable(a) && cos.size(-1) <= D) {
        // Zero-centred norm and partial RoPE in one pass each; q read in place from [query | gate].
        q = fused::qk_norm_rope(qg.view({B, T, opt.n_heads * 2 * D}), opt.n_heads, D, QkNorm::PerHead, w.q_norm,
                                opt.qk_norm_eps, std::nullopt, cos, sin, /*head_stride=*/2 * D, /*zero_centred=*/true);
        k = fused::qk_norm_rope(linear(a, w.k), opt.n_kv_heads, D, QkNorm::PerHead, w.k_norm, opt.qk_norm_eps,
                                std::nullopt, cos, sin, /*head_stride=*/0, /*zero_centred=*/true);  // [B,Nkv,T,D]
    } else {
        q = rms_norm_zero_centred(qg.narrow(-1, 0, D), w.q_norm, opt.qk_norm_eps);    // [B,T,Nq,D]
        k = rms_norm_zero_centred(linear(a, w.k).view({B, T, opt.n_kv_heads, D}), w.k_norm, opt.qk_norm_eps);
        q = apply_rope(q.transpose(1, 2), cos, sin);                                  // [B,Nq,T,D]
        k = apply_rope(k.transpose(1, 2), cos, sin);                                  // [B,Nkv,T,D]
    }
    at::Tensor o = attend_heads(q, k, v, {}, opt).transpose(1, 2).reshape({B, T, opt.n_heads * D});  // [B,T,Nq*D]
    return linear(o * at::sigmoid(gate), w.o);                                        // [B,T,H]
}

}  // namespace extractor::ops
