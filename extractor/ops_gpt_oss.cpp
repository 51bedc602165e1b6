// The ops gpt_oss adds to ops.h: RMSNorm with an fp32 gain, attention with sink logits, and the
// MoE block with the clamped SwiGLU over (optionally MXFP4-packed) experts. Numerics follow
// transformers' models/gpt_oss/modeling_gpt_oss.py where it rounds (activation dtype everywhere
// except the norm statistics). Shape letters: ops.h.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "common/error.h"
#include "extractor/compat.h"
#include "extractor/cuda/fused_ops.h"
#include "extractor/mxfp4.h"
#include "extractor/ops.h"

namespace extractor::ops {

at::Tensor rms_norm_fp32_gain(const at::Tensor & x, const at::Tensor & weight, double eps) {
    ProfileScope profile("rms_norm");
    if (fused::usable(x)) return fused::rms_norm_fp32_gain(x, weight, eps);
    at::Tensor x32 = x.to(at::kFloat);                                          // [...,W] fp32
    at::Tensor var = x32.pow(2).mean(-1, /*keepdim=*/true);                    // [...,1]
    at::Tensor normed = x32 * at::rsqrt(var + eps);                             // [...,W] fp32
    return (weight.to(at::kFloat) * normed).to(x.scalar_type());                // [...,W] rounded once
}

namespace {

// One sink logit per query head, or an internal error (the loader shapes them).
void check_sinks(const at::Tensor & sinks, int64_t Nq) {
    if (sinks.dim() != 1 || sinks.size(0) != Nq)
        throw common::Error::internal("attention sinks: " + std::to_string(sinks.numel()) + " logits for " +
                                      std::to_string(Nq) + " heads");
}

}  // namespace

at::Tensor attend_with_sinks(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v, const at::Tensor & sinks,
                             const at::Tensor & mask) {
    const int64_t B = q.size(0), Nq = q.size(1), T = q.size(2), D = q.size(3);
    check_sinks(sinks, Nq);
    const double scaling = 1.0 / std::sqrt(static_cast<double>(D));
    // Scores of a (row, head group) chunk: [n,T,T+1] elements, at most 2^27 (~0.5 GiB in fp32).
    const int64_t per_head = T * (T + 1);
    const int64_t group = std::clamp<int64_t>((int64_t{1} << 27) / std::max<int64_t>(per_head, 1), 1, Nq);
    at::Tensor masked_out = mask.logical_not();                                     // [T,T] true = masked
    at::Tensor sink_logits = sinks.to(q.scalar_type());                             // [Nq]
    at::Tensor out = at::empty({B, Nq, T, D}, q.options());                         // [B,Nq,T,D]
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t h0 = 0; h0 < Nq; h0 += group) {
            const int64_t n = std::min(group, Nq - h0);
            at::Tensor qb = q[b].narrow(0, h0, n);                                  // [n,T,D]
            at::Tensor kb = k[b].narrow(0, h0, n);                                  // [n,T,D]
            at::Tensor vb = v[b].narrow(0, h0, n);                                  // [n,T,D]
            at::Tensor scores = at::matmul(qb, kb.transpose(1, 2)) * scaling;       // [n,T,T]
            scores = scores.masked_fill(masked_out, -std::numeric_limits<double>::infinity());
            at::Tensor sink = sink_logits.narrow(0, h0, n).view({n, 1, 1}).expand({n, T, 1});  // [n,T,1]
            at::Tensor logits = at::cat({scores, sink}, -1);                        // [n,T,T+1]
            scores.reset();
            logits = logits - std::get<0>(logits.max(-1, /*keepdim=*/true));        // [n,T,T+1]
            at::Tensor probs = at::softmax(logits, -1);                             // [n,T,T+1] activation dtype
            logits.reset();
            out[b].narrow(0, h0, n).copy_(at::matmul(probs.narrow(-1, 0, T), vb));  // [n,T,D] sink dropped
        }
    }
    return out;
}

at::Tensor attend_with_sinks_flash(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v, const at::Tensor & sinks,
                                   std::optional<int64_t> sliding_window) {
    const int64_t Nq = q.size(1);
    check_sinks(sinks, Nq);
    auto flash = compat::flash_attention(q, k, v, sliding_window);
    if (!flash) return {};
    // The sink logit as the eager path sees it: in the activation dtype.
    at::Tensor sink = sinks.to(q.scalar_type()).to(at::kFloat).view({1, Nq, 1});       // [1,Nq,1]
    at::Tensor keep = at::sigmoid(flash->lse - sink).unsqueeze(-1);                     // [B,Nq,T,1] fp32
    return (flash->out.to(at::kFloat) * keep).to(q.scalar_type());                      // [B,Nq,T,D]
}

namespace {

// HF's gate: even columns gate, odd columns up; gate clamped above, up on both sides;
// (up + 1) * gate * sigmoid(alpha * gate), each op rounding to the activation dtype.
at::Tensor clamped_swiglu(const at::Tensor & gu, double alpha, double limit) {
    const int64_t I2 = gu.size(-1);
    at::Tensor gate = gu.slice(-1, 0, I2, 2).clamp_max(limit);                     // [n,I]
    at::Tensor up = gu.slice(-1, 1, I2, 2).clamp(-limit, limit);                   // [n,I]
    at::Tensor glu = gate * at::sigmoid(gate * alpha);                              // [n,I]
    return (up + 1) * glu;                                                          // [n,I]
}

bool grouped_mm_usable(const at::Tensor & x, int64_t H, int64_t I) {
    return compat::fast_paths() && compat::has_grouped_mm() && x.is_cuda() && x.scalar_type() == at::kBFloat16 &&
           H % 8 == 0 && I % 8 == 0;
}

int64_t experts_per_chunk(const ClampedSwigluMoeOptions & opt, int64_t H, int64_t I, at::ScalarType dtype) {
    if (opt.experts_per_chunk > 0) return opt.experts_per_chunk;
    static const int64_t env = [] {
        const char * v = std::getenv("EXTRACTOR_MXFP4_CHUNK_EXPERTS");
        return v ? std::atoll(v) : int64_t{0};
    }();
    if (env > 0) return env;
    // 256 MiB of dequantized weights per chunk (gpt-oss: 5 experts); the dequantization's own
    // temporaries (int32 indices, values) are about as large again.
    const int64_t per_expert = 3 * H * I * static_cast<int64_t>(c10::elementSize(dtype));
    return std::max<int64_t>(1, (int64_t{256} << 20) / std::max<int64_t>(per_expert, 1));
}

}  // namespace

at::Tensor moe_clamped_swiglu(const at::Tensor & m, const MoeWeights & w, const ClampedSwigluMoeOptions & opt,
                              const ExpertObserver & observe) {
    ProfileScope profile("moe");
    const int64_t H = m.size(-1), E = w.router.size(0), K = opt.top_k;
    const bool packed = w.gate_up_scales.defined();
    const int64_t I2 = w.gate_up.size(1), I = I2 / 2;
    const at::ScalarType dtype = m.scalar_type();
    at::Tensor x = m.reshape({-1, H});                                                // [N,H]
    const int64_t N = x.size(0);

    // Router: logits with bias, top-k of the logits, softmax over those k in the activation dtype.
    at::Tensor logits = at::linear(x, w.router, w.router_bias);                       // [N,E]
    auto [top_v, top_i] = at::topk(logits, K, -1);                                    // [N,K], [N,K]
    at::Tensor top_w = at::softmax(top_v, -1);                                        // [N,K] activation dtype

    at::Tensor expert_of_slot = top_i.reshape({-1});                                  // [S]
    at::Tensor token_of_slot =
        at::arange(N, at::TensorOptions().dtype(at::kLong).device(x.device())).unsqueeze(1).expand({N, K}).reshape({-1});  // [S]
    at::Tensor perm = std::get<1>(at::sort(expert_of_slot, /*stable=*/true, 0, false));  // [S] slots by expert
    at::Tensor expert_sorted = expert_of_slot.index_select(0, perm);                  // [S]
    at::Tensor weight_sorted = top_w.reshape({-1}).index_select(0, perm);             // [S]
    at::Tensor xs = x.index_select(0, token_of_slot.index_select(0, perm));           // [S,H]
    // One host sync per layer: which experts are hit, and their row ranges.
    at::Tensor counts_cpu = at::bincount(expert_of_slot, {}, E).to(at::kCPU);         // [E]
    const int64_t * c = counts_cpu.data_ptr<int64_t>();
    std::vector<int64_t> hit, start(static_cast<size_t>(E) + 1, 0);
    for (int64_t e = 0; e < E; ++e) {
        start[static_cast<size_t>(e) + 1] = start[static_cast<size_t>(e)] + c[e];
        if (c[e] > 0) hit.push_back(e);
    }
    const bool grouped = grouped_mm_usable(x, H, I);
    at::Tensor out = at::empty({xs.size(0), H}, x.options());                         // [S,H] sorted order
    if (grouped && !packed) {
        // Plain experts (--dequantize): one grouped matmul per projection over all E experts.
        std::vector<int32_t> offs_v;
        for (int64_t e = 0; e < E; ++e) offs_v.push_back(static_cast<int32_t>(start[static_cast<size_t>(e) + 1]));
        at::Tensor offs = at::tensor(offs_v, at::kInt).to(x.device());               // [E]
        at::Tensor gu = compat::grouped_mm(xs, w.gate_up.transpose(1, 2), offs);      // [S,2I]
        if (w.gate_up_bias.defined()) gu = gu + w.gate_up_bias.index_select(0, expert_sorted);
        at::Tensor act = clamped_swiglu(gu, opt.alpha, opt.limit);                    // [S,I]
        gu.reset();
        out = compat::grouped_mm(act, w.down.transpose(1, 2), offs);                  // [S,H]
        if (w.down_bias.defined()) out = out + w.down_bias.index_select(0, expert_sorted);
        hit.clear();                                                                  // nothing left for the loop
    }
    const int64_t chunk = packed ? experts_per_chunk(opt, H, I, dtype) : static_cast<int64_t>(hit.size());
    at::Tensor gu_buf, dn_buf;                                                        // [C,2I,H], [C,H,I]
    if (packed) {
        const int64_t cap = std::min<int64_t>(chunk, std::max<int64_t>(1, static_cast<int64_t>(hit.size())));
        gu_buf = at::empty({cap, I2, H}, x.options());
        dn_buf = at::empty({cap, H, I}, x.options());
    }
    const size_t step = static_cast<size_t>(std::max<int64_t>(chunk, 1));
    // Every chunk's expert ids and grouped_mm offsets (cumulative within the chunk) in one
    // host-to-device copy each, not two small copies per chunk.
    at::Tensor hit_dev, offs_dev;                                                     // [n_hit]
    if (packed && !hit.empty()) {
        std::vector<int32_t> offs_all;
        for (size_t h0 = 0; h0 < hit.size(); h0 += step) {
            int64_t acc = 0;
            for (size_t h = h0; h < std::min(hit.size(), h0 + step); ++h) offs_all.push_back(static_cast<int32_t>(acc += c[hit[h]]));
        }
        hit_dev = at::tensor(hit, at::kLong).to(x.device());
        offs_dev = at::tensor(offs_all, at::kInt).to(x.device());
    }
    for (size_t h0 = 0; h0 < hit.size(); h0 += step) {
        const size_t h1 = std::min(hit.size(), h0 + step);
        const int64_t n_exp = static_cast<int64_t>(h1 - h0);
        std::vector<int64_t> ids(hit.begin() + static_cast<std::ptrdiff_t>(h0), hit.begin() + static_cast<std::ptrdiff_t>(h1));
        at::Tensor gu_w, dn_w;                                                        // [n_exp,2I,H], [n_exp,H,I]
        if (packed) {
            // The chunk's packed bytes (a small gather), then one dequantization per matrix.
            at::Tensor sel = hit_dev.narrow(0, static_cast<int64_t>(h0), n_exp);      // [n_exp]
            gu_w = gu_buf.narrow(0, 0, n_exp);
            dn_w = dn_buf.narrow(0, 0, n_exp);
            mxfp4::dequantize_into(w.gate_up.index_select(0, sel), w.gate_up_scales.index_select(0, sel), gu_w);
            mxfp4::dequantize_into(w.down.index_select(0, sel), w.down_scales.index_select(0, sel), dn_w);
        }
        const int64_t r0 = start[static_cast<size_t>(ids.front())], r1 = start[static_cast<size_t>(ids.back()) + 1];
        if (grouped) {  // packed: this chunk's dequantized experts, one grouped matmul each
            // Rows r0..r1 hold exactly these experts' slots, in this order.
            at::Tensor offs = offs_dev.narrow(0, static_cast<int64_t>(h0), n_exp);    // [n_exp]
            at::Tensor rows_expert = expert_sorted.narrow(0, r0, r1 - r0);            // [s]
            at::Tensor gu = compat::grouped_mm(xs.narrow(0, r0, r1 - r0), gu_w.transpose(1, 2), offs);  // [s,2I]
            if (w.gate_up_bias.defined()) gu = gu + w.gate_up_bias.index_select(0, rows_expert);
            at::Tensor act = clamped_swiglu(gu, opt.alpha, opt.limit);                // [s,I]
            gu.reset();
            at::Tensor o = compat::grouped_mm(act, dn_w.transpose(1, 2), offs);       // [s,H]
            if (w.down_bias.defined()) o = o + w.down_bias.index_select(0, rows_expert);
            out.narrow(0, r0, r1 - r0).copy_(o);
            continue;
        }
        for (int64_t j = 0; j < n_exp; ++j) {
            const int64_t e = ids[static_cast<size_t>(j)];
            const int64_t s0 = start[static_cast<size_t>(e)], n = c[e];
            at::Tensor Wgu = packed ? gu_w[j] : w.gate_up[e];                         // [2I,H]
            at::Tensor Wdn = packed ? dn_w[j] : w.down[e];                            // [H,I]
            at::Tensor gu = at::matmul(xs.narrow(0, s0, n), Wgu.t());                 // [n,2I]
            if (w.gate_up_bias.defined()) gu = gu + w.gate_up_bias[e];
            at::Tensor o = at::matmul(clamped_swiglu(gu, opt.alpha, opt.limit), Wdn.t());  // [n,H]
            if (w.down_bias.defined()) o = o + w.down_bias[e];
            out.narrow(0, s0, n).copy_(o);
        }
    }
    at::Tensor inv = at::empty_like(perm);                                            // [S] slot -> row
    inv.index_put_({perm}, at::arange(perm.size(0), perm.options()));
    if (observe) observe({E, 0, top_i, out, inv});
    // (out * weight) in the activation dtype, back in token order, summed over the K slots.
    at::Tensor weighted = out * weight_sorted.unsqueeze(-1);                          // [S,H]
    out.reset();
    return weighted.index_select(0, inv).view({N, K, H}).sum(1).to(dtype).view(m.sizes());  // [B,T,H]
}

}  // namespace extractor::ops
