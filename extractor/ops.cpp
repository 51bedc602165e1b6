// Shared ops; numerics per docs/model-math.md (HF transformers 5.x). Shape letters: ops.h.
#include "extractor/ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "common/error.h"
#include "extractor/checkpoint/hf_config.h"
#include "extractor/compat.h"
#include "extractor/cuda/fused_ops.h"

namespace extractor::ops {

namespace {
std::mutex g_profile_mu;
std::map<std::string, std::pair<double, int64_t>> g_profile;
}  // namespace

bool profiling() {
    static const bool on = std::getenv("EXTRACTOR_PROFILE") != nullptr;
    return on;
}

void profile_add(const std::string & name, double seconds) {
    std::lock_guard<std::mutex> lk(g_profile_mu);
    auto & e = g_profile[name];
    e.first += seconds;
    e.second += 1;
}

void profile_reset() {
    std::lock_guard<std::mutex> lk(g_profile_mu);
    g_profile.clear();
}

std::string profile_report() {
    std::lock_guard<std::mutex> lk(g_profile_mu);
    std::string out;
    for (const auto & [name, e] : g_profile)
        out += name + " " + std::to_string(e.first * 1e3) + " ms / " + std::to_string(e.second) + " calls; ";
    return out;
}

at::Tensor linear(const at::Tensor & x, const Linear & l) {
    return l.bias.defined() ? at::linear(x, l.weight, l.bias) : at::linear(x, l.weight);
}

at::Tensor rms_norm(const at::Tensor & x, const at::Tensor & weight, double eps) {
    ProfileScope profile("rms_norm");
    if (fused::usable(x) && x.scalar_type() == weight.scalar_type()) return fused::rms_norm(x, weight, eps);
    at::Tensor x32 = x.to(at::kFloat);                                          // [...,W] fp32
    at::Tensor var = x32.pow(2).mean(-1, /*keepdim=*/true);                    // [...,1]
    at::Tensor normed = (x32 * at::rsqrt(var + eps)).to(x.scalar_type());      // [...,W] rounded first (HF)
    return weight * normed;                                                     // [...,W]
}

namespace {

double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

}  // namespace

Rope make_rope(const RopeParams & p, double default_theta, int64_t head_dim, int64_t max_position_embeddings) {
    const double base = p.theta.value_or(default_theta);
    const int64_t dim = static_cast<int64_t>(static_cast<double>(head_dim) * p.partial_rotary_factor);
    // Config readers refuse these naming the key (families::parse_common); this is the backstop.
    if (dim < 2 || dim % 2 != 0 || !(base > 0) || !(p.factor > 0))
        throw common::Error::usage("rope: rotary width " + std::to_string(dim) + " (head_dim " + std::to_string(head_dim) +
                                   " x partial_rotary_factor " + std::to_string(p.partial_rotary_factor) +
                                   ") must be even and at least 2, theta " + std::to_string(base) + " and factor " +
                                   std::to_string(p.factor) + " positive");
    // HF: 1 / base ** (arange(0, dim, 2, int64).float() / dim), in fp32.
    at::Tensor exponents = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);  // [D/2]
    at::Tensor pos_freqs = at::pow(base, exponents);                                                   // [D/2]
    at::Tensor inv_freq = 1.0 / pos_freqs;                                                            // [D/2]
    Rope rope;
    if (p.type == "default") {
    } else if (p.type == "linear") {
        inv_freq = inv_freq / p.factor;
    } else if (p.type == "llama3") {
        const double orig = static_cast<double>(p.original_max_position_embeddings.value_or(max_position_embeddings));
        const double low_wl = orig / p.low_freq_factor, high_wl = orig / p.high_freq_factor;
        at::Tensor wavelen = 2 * M_PI / inv_freq;                                                     // [D/2]
        at::Tensor scaled = at::where(wavelen > low_wl, inv_freq / p.factor, inv_freq);               // [D/2]
        at::Tensor smooth = (orig / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor);
        at::Tensor smoothed = (1 - smooth) * scaled / p.factor + smooth * scaled;                     // [D/2]
        at::Tensor medium = at::logical_and(wavelen >= high_wl, wavelen <= low_wl);
        inv_freq = at::where(medium, smoothed, scaled);
    } else if (p.type == "yarn") {
        const double orig = static_cast<double>(p.original_max_position_embeddings.value_or(max_position_embeddings));
        const double factor = p.factor;
        if (p.attention_factor) rope.attention_scaling = *p.attention_factor;
        else if (p.mscale && p.mscale_all_dim && *p.mscale != 0 && *p.mscale_all_dim != 0)
            rope.attention_scaling = yarn_mscale(factor, *p.mscale) / yarn_mscale(factor, *p.mscale_all_dim);
        else rope.attention_scaling = yarn_mscale(factor, 1.0);
        auto correction_dim = [&](double rotations) {
            return (static_cast<double>(dim) * std::log(orig / (rotations * 2 * M_PI))) / (2 * std::log(base));
        };
        double low = correction_dim(p.beta_fast), high = correction_dim(p.beta_slow);
        if (p.truncate) {
            low = std::floor(low);
            high = std::ceil(high);
        }
        low = std::max(low, 0.0);
        high = std::min(high, static_cast<double>(dim - 1));
        if (low == high) high += 0.001;
        at::Tensor ramp = ((at::arange(dim / 2, at::kFloat) - low) / (high - low)).clamp(0, 1);      // [D/2]
        at::Tensor extrap_factor = 1 - ramp;
        at::Tensor interp = 1.0 / (factor * pos_freqs);
        at::Tensor extrap = 1.0 / pos_freqs;
        inv_freq = interp * (1 - extrap_factor) + extrap * extrap_factor;
    } else {
        throw common::Error::usage("rope type \"" + p.type + "\" is not supported (default, linear, llama3, yarn)");
    }
    rope.inv_freq = inv_freq.to(at::kFloat).contiguous();
    return rope;
}

std::pair<at::Tensor, at::Tensor> rope_cos_sin(const Rope & rope, int64_t T, at::ScalarType dtype, c10::Device device) {
    at::Tensor pos = at::arange(T, at::TensorOptions().dtype(at::kFloat).device(device));       // [T]
    at::Tensor inv = rope.inv_freq.to(device);                                                    // [D/2]
    at::Tensor freqs = pos.unsqueeze(1) * inv.unsqueeze(0);                                       // [T,D/2] fp32
    at::Tensor emb = at::cat({freqs, freqs}, -1);                                                 // [T,D]
    at::Tensor cos = (emb.cos() * rope.attention_scaling).to(dtype);                              // [T,D]
    at::Tensor sin = (emb.sin() * rope.attention_scaling).to(dtype);                              // [T,D]
    return {cos, sin};
}

at::Tensor apply_rope(const at::Tensor & x, const at::Tensor & cos, const at::Tensor & sin) {
    // Partial rotary (partial_rotary_factor < 1: cos/sin narrower than the head): HF rotates the
    // first R dims of each head and passes the rest through unchanged.
    if (cos.size(-1) < x.size(-1)) {
        const int64_t R = cos.size(-1);
        return at::cat({apply_rope(x.narrow(-1, 0, R), cos, sin), x.narrow(-1, R, x.size(-1) - R)}, -1);  // [B,Nh,T,D]
    }
    const int64_t half = x.size(-1) / 2;
    at::Tensor x1 = x.narrow(-1, 0, half);                                                        // [B,Nh,T,D/2]
    at::Tensor x2 = x.narrow(-1, half, half);                                                     // [B,Nh,T,D/2]
    at::Tensor rotated = at::cat({-x2, x1}, -1);                                                  // [B,Nh,T,D]
    return x * cos + rotated * sin;                                                               // [B,Nh,T,D]
}

at::Tensor causal_mask(int64_t T, std::optional<int64_t> sliding_window, c10::Device device) {
    at::Tensor q = at::arange(T, at::TensorOptions().dtype(at::kLong).device(device)).unsqueeze(1);  // [T,1]
    at::Tensor kv = at::arange(T, at::TensorOptions().dtype(at::kLong).device(device)).unsqueeze(0); // [1,T]
    at::Tensor mask = kv <= q;                                                                        // [T,T]
    if (sliding_window) mask = at::logical_and(mask, kv > q - *sliding_window);
    return mask;
}

at::Tensor repeat_kv(const at::Tensor & x, int64_t rep) {
    if (rep == 1) return x;
    const auto s = x.sizes();
    return x.unsqueeze(2).expand({s[0], s[1], rep, s[2], s[3]}).reshape({s[0], s[1] * rep, s[2], s[3]});
}

namespace {

at::Tensor attend(at::Tensor q, at::Tensor k, at::Tensor v, const AttnWeights & w, const AttnOptions & opt,
                  const at::Tensor & a);

}  // namespace

at::Tensor attention(const at::Tensor & a, const AttnWeights & w, const AttnOptions & opt, const at::Tensor & cos,
                     const at::Tensor & sin) {
    ProfileScope profile("attention");
    const int64_t B = a.size(0), T = a.size(1), D = opt.head_dim;
    at::Tensor q = linear(a, w.q);                                                    // [B,T,Nq*D]
    at::Tensor k = linear(a, w.k);                                                    // [B,T,Nkv*D]
    at::Tensor v = linear(a, w.v);                                                    // [B,T,Nkv*D]
    if (fused::usable(a) && cos.size(-1) <= D) {
        // One pass each for q and k: norm, clamp, RoPE, written in [B,T,N,D] memory (SDPA takes
        // the transposed view as it is).
        q = fused::qk_norm_rope(q, opt.n_heads, D, opt.qk_norm, w.q_norm, opt.qk_norm_eps, opt.clip_qkv, cos, sin);
        k = fused::qk_norm_rope(k, opt.n_kv_heads, D, opt.qk_norm, w.k_norm, opt.qk_norm_eps, opt.clip_qkv, cos, sin);
        if (opt.clip_qkv) v = v.clamp(-*opt.clip_qkv, *opt.clip_qkv);
        v = v.view({B, T, opt.n_kv_heads, D}).transpose(1, 2);                        // [B,Nkv,T,D]
        return attend(q, k, v, w, opt, a);
    }
    if (opt.qk_norm == QkNorm::Whole) {
        q = rms_norm(q, w.q_norm, opt.qk_norm_eps);                                   // [B,T,Nq*D]
        k = rms_norm(k, w.k_norm, opt.qk_norm_eps);                                   // [B,T,Nkv*D]
    }
    if (opt.clip_qkv) {
        q = q.clamp(-*opt.clip_qkv, *opt.clip_qkv);
        k = k.clamp(-*opt.clip_qkv, *opt.clip_qkv);
        v = v.clamp(-*opt.clip_qkv, *opt.clip_qkv);
    }
    q = q.view({B, T, opt.n_heads, D});                                               // [B,T,Nq,D]
    k = k.view({B, T, opt.n_kv_heads, D});                                            // [B,T,Nkv,D]
    v = v.view({B, T, opt.n_kv_heads, D});                                            // [B,T,Nkv,D]
    if (opt.qk_norm == QkNorm::PerHead) {
        q = rms_norm(q, w.q_norm, opt.qk_norm_eps);                                   // [B,T,Nq,D]
        k = rms_norm(k, w.k_norm, opt.qk_norm_eps);                                   // [B,T,Nkv,D]
    }
    q = apply_rope(q.transpose(1, 2), cos, sin);                                      // [B,Nq,T,D]
    k = apply_rope(k.transpose(1, 2), cos, sin);                                      // [B,Nkv,T,D]
    v = v.transpose(1, 2);                                                            // [B,Nkv,T,D]
    return attend(q, k, v, w, opt, a);
}

namespace {

// Attention proper and the output projection: q [B,Nq,T,D], k/v [B,Nkv,T,D] -> [B,T,H].
at::Tensor attend(at::Tensor q, at::Tensor k, at::Tensor v, const AttnWeights & w, const AttnOptions & opt,
                  const at::Tensor & a) {
    const int64_t B = a.size(0), T = a.size(1), D = opt.head_dim;
    at::Tensor o = attend_heads(q, k, v, w.sinks, opt);                               // [B,Nq,T,D]
    o = o.transpose(1, 2).reshape({B, T, opt.n_heads * D});                           // [B,T,Nq*D]
    return linear(o, w.o);                                                            // [B,T,H]
}

}  // namespace

at::Tensor attend_heads(at::Tensor q, at::Tensor k, at::Tensor v, const at::Tensor & sinks, const AttnOptions & opt) {
    const int64_t T = q.size(2), D = opt.head_dim;
    const int64_t rep = opt.n_heads / opt.n_kv_heads;
    if (sinks.defined() && compat::fast_paths()) {
        at::Tensor o = attend_with_sinks_flash(q, k, v, sinks, opt.sliding_window);   // [B,Nq,T,D]
        if (o.defined()) return o;
    }
    at::Tensor mask;
    if (opt.sliding_window && *opt.sliding_window < T) mask = causal_mask(T, opt.sliding_window, q.device());
    if (!sinks.defined() && !mask.defined() && rep > 1 && q.is_cuda() && q.scalar_type() != at::kFloat && D <= 256 &&
        D % 8 == 0 && k.size(2) == T && compat::fast_paths() && compat::has_sdpa() && fused::usable(q)) {
        // GLM-4.5-Air's 96 query heads over 8 kv heads: repeating k/v wrote 12 copies of each.
        // Causal 16-bit calls the flash kernel can take only (head dim <= 256, a multiple of 8): it
        // does GQA natively; a masked, fp32 or wider call would land on a backend that repeats k/v
        // itself or on the math path.
        at::Tensor o = compat::sdpa_gqa(q, k, v, mask);                               // [B,Nq,T,D]
        if (o.defined()) return o;
    }
    k = repeat_kv(k, rep);                                                            // [B,Nq,T,D]
    v = repeat_kv(v, rep);                                                            // [B,Nq,T,D]
    at::Tensor o;
    if (sinks.defined()) {
        if (!mask.defined()) mask = causal_mask(T, std::nullopt, q.device());        // [T,T]
        o = attend_with_sinks(q, k, v, sinks, mask);                                  // [B,Nq,T,D]
    } else if (compat::fast_paths() && compat::has_sdpa()) {
        o = compat::sdpa(q, k, v, mask);                                              // [B,Nq,T,D]
    } else {
        if (!mask.defined()) mask = causal_mask(T, std::nullopt, q.device());         // [T,T]
        const double scaling = 1.0 / std::sqrt(static_cast<double>(D));
        at::Tensor scores = at::matmul(q, k.transpose(2, 3)) * scaling;               // [B,Nq,T,T]
        scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
        at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());   // [B,Nq,T,T]
        o = at::matmul(probs, v);                                                     // [B,Nq,T,D]
    }
    return o;
}

at::Tensor swiglu_mlp(const at::Tensor & m, const MlpWeights & w) {
    ProfileScope profile("dense_mlp");
    at::Tensor g = at::silu(linear(m, w.gate));                                       // [B,T,I]
    at::Tensor u = linear(m, w.up);                                                   // [B,T,I]
    return linear(g * u, w.down);                                                     // [B,T,H]
}

namespace {
at::Tensor moe_tokens(const at::Tensor & x, const MoeWeights & w, const MoeOptions & opt, const ExpertObserver & observe,
                      int64_t first_token);

bool use_grouped_mm(const at::Tensor & x, int64_t H, int64_t I) {
    return compat::fast_paths() && compat::has_grouped_mm() && x.is_cuda() && x.scalar_type() == at::kBFloat16 &&
           H % 8 == 0 && I % 8 == 0;
}

// EXTRACTOR_EXPERT_MATMULS=per_expert: one cuBLAS matmul per expert instead of the grouped matmul,
// at the price of one read-back of the group sizes per layer. Faster matmuls at Mixtral's shape,
// slower end to end (bench/NOTES-extract-perf.md), so grouped (the default, or =grouped) stays.
bool per_expert_matmuls() {
    static const bool on = [] {
        const char * v = std::getenv("EXTRACTOR_EXPERT_MATMULS");
        if (!v || !*v || std::string(v) == "grouped") return false;
        if (std::string(v) == "per_expert") return true;
        throw common::Error::usage(std::string("EXTRACTOR_EXPERT_MATMULS=") + v + ": expected grouped or per_expert");
    }();
    return on;
}

// out [S,N] = rows of a [S,K] times the transpose of their expert's weight [E,N,K], with the
// experts' row ranges given by offs [E] (cumulative ends, int32, as grouped_mm takes them): one
// grouped matmul, or with host_ends (offs read back once a layer) one matmul per expert.
at::Tensor expert_matmul(const at::Tensor & a, const at::Tensor & weight, const at::Tensor & offs, const at::Tensor & host_ends) {
    if (!host_ends.defined()) return compat::grouped_mm(a, weight.transpose(1, 2), offs);
    const int32_t * end = host_ends.data_ptr<int32_t>();
    at::Tensor out = at::empty({a.size(0), weight.size(1)}, a.options());             // [S,N]
    int64_t start = 0;
    for (int64_t e = 0; e < weight.size(0); ++e) {
        const int64_t n = end[e] - start;
        if (n > 0) {
            at::Tensor rows = out.narrow(0, start, n);
            at::mm_out(rows, a.narrow(0, start, n), weight[e].t());                   // [n,N]
        }
        start = end[e];
    }
    return out;
}
}  // namespace

std::string describe_paths(at::ScalarType dtype, bool cuda) {
    std::string a = compat::fast_paths() && compat::has_sdpa() ? "attention: scaled_dot_product_attention" : "attention: plain matmul-softmax";
    const bool flash_sinks = compat::fast_paths() && compat::flash_supports(dtype, cuda);
    a += flash_sinks ? " (with sinks: flash + exact sink rescale)" : " (with sinks: chunked eager)";
    bool grouped = compat::fast_paths() && compat::has_grouped_mm() && cuda && dtype == at::kBFloat16;
    std::string f = !fused::built()                     ? "not built"
                    : !fused::enabled()                  ? "off (EXTRACTOR_FUSED=0)"
                    : !cuda                              ? "unused on CPU"
                    : fused::mode() == fused::Mode::All ? "on, pending ones included (EXTRACTOR_FUSED=all)"
                                                         : "on";
    return a + "; experts: " + (grouped ? "grouped_mm" : "per-expert matmuls") + "; fused CUDA kernels: " + f +
           " (libtorch " + compat::torch_version() + ")";
}

ProfileScope::ProfileScope(const char * name) : name_(name) {
    if (profiling()) {
        compat::device_synchronize();
        start_ = std::chrono::steady_clock::now();
    }
}

ProfileScope::~ProfileScope() {
    if (!profiling()) return;
    compat::device_synchronize();
    profile_add(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
}

at::Tensor moe(const at::Tensor & m, const MoeWeights & w, const MoeOptions & opt, const ExpertObserver & observe) {
    // Tokens are routed independently, so chunking bounds the (token, expert) working set
    // (S = N*K rows of gate/up/down activations) without changing a single value.
    ProfileScope profile("moe");
    // EXTRACTOR_MOE_CHUNK_ROWS tunes it (0: never chunk). With the fused kernels the default,
    // 65536 routed rows, is one chunk for 4 x 2048 tokens of a top-8 model: ~0.5 GiB of working set
    // at OLMoE's width (gate_up's output [S,2I] beside its input [S,H]), and the grouped matmuls
    // stay large. The ATen path's combine holds fp32 [S,H] copies, so it takes half as many.
    static const int64_t kMaxRoutedRowsEnv = [] {
        const char * v = std::getenv("EXTRACTOR_MOE_CHUNK_ROWS");
        return v ? std::atoll(v) : int64_t{-1};
    }();
    const int64_t max_rows = kMaxRoutedRowsEnv >= 0 ? kMaxRoutedRowsEnv : (fused::usable(m) ? 65536 : 32768);
    const int64_t H = m.size(-1);
    at::Tensor x = m.reshape({-1, H});                                                // [N,H]
    const int64_t N = x.size(0);
    const int64_t chunk = max_rows <= 0 ? N : std::max<int64_t>(1, max_rows / std::max<int64_t>(1, opt.top_k));
    if (N <= chunk) return moe_tokens(x, w, opt, observe, 0).view(m.sizes());        // [B,T,H]
    std::vector<at::Tensor> parts;
    for (int64_t start = 0; start < N; start += chunk)
        parts.push_back(moe_tokens(x.narrow(0, start, std::min(chunk, N - start)), w, opt, observe, start));  // [n,H]
    return at::cat(parts, 0).view(m.sizes());                                         // [B,T,H]
}

std::pair<at::Tensor, at::Tensor> route_sigmoid_grouped(const at::Tensor & x, const at::Tensor & router,
                                                        const at::Tensor & score_bias, const MoeOptions & opt) {
    const int64_t N = x.size(0), E = router.size(0), G = opt.n_group;
    at::Tensor scores = at::linear(x.to(at::kFloat), router.to(at::kFloat)).sigmoid();  // [N,E] fp32
    at::Tensor choice = score_bias.defined() ? scores + score_bias.to(at::kFloat) : scores;  // [N,E]
    // Keeping every group masks nothing, so the group pass is skipped then (n_group 1, GLM-4.5-Air).
    if (opt.topk_group < G) {
        at::Tensor group_scores = std::get<0>(choice.view({N, G, E / G}).topk(2, -1)).sum(-1);   // [N,G]
        at::Tensor keep = std::get<1>(group_scores.topk(opt.topk_group, -1, true, false));       // [N,topk_group]
        at::Tensor group_mask = at::zeros({N, G}, choice.options().dtype(at::kBool)).scatter_(1, keep, true);  // [N,G]
        at::Tensor expert_mask = group_mask.unsqueeze(-1).expand({N, G, E / G}).reshape({N, E});             // [N,E]
        choice = choice.masked_fill(expert_mask.logical_not(), 0.0);                              // [N,E]
    }
    at::Tensor top_i = std::get<1>(choice.topk(opt.top_k, -1, true, false));                      // [N,K]
    at::Tensor top_w = scores.gather(1, top_i);                                                   // [N,K] fp32
    if (opt.renormalise) top_w = top_w / (top_w.sum(-1, /*keepdim=*/true) + 1e-20);
    return {top_w * opt.routed_scaling, top_i};
}

namespace {

at::Tensor moe_tokens(const at::Tensor & x, const MoeWeights & w, const MoeOptions & opt, const ExpertObserver & observe,
                      int64_t first_token) {
    const int64_t H = x.size(-1), E = w.router.size(0), K = opt.top_k;
    const int64_t I = w.down.size(2);
    const int64_t N = x.size(0);
    at::Tensor top_w, top_i;                                                          // [N,K] fp32, [N,K]
    if (opt.sigmoid_grouped) {
        std::tie(top_w, top_i) = route_sigmoid_grouped(x, w.router, w.score_bias, opt);
    } else {
        at::Tensor logits = at::linear(x, w.router);                                  // [N,E] activation dtype
        at::Tensor probs = at::softmax(logits, -1, at::kFloat);                       // [N,E] fp32
        std::tie(top_w, top_i) = at::topk(probs, K, -1);                              // [N,K] fp32, [N,K]
        if (opt.renormalise) top_w = top_w / top_w.sum(-1, /*keepdim=*/true);        // [N,K]
    }
    if (opt.weights_in_activation_dtype) top_w = top_w.to(x.scalar_type());

    if (use_grouped_mm(x, H, I) && fused::usable(x) && top_w.scalar_type() == at::kFloat) {
        // Same products and sums as below, in five kernels instead of a dozen: dispatch without a
        // sort, one fused activation, and a combine that reads each token's K rows in place.
        fused::MoeDispatch d = fused::moe_dispatch(x, top_i, E);
        const at::Tensor host_ends = per_expert_matmuls() ? d.offs.to(at::kCPU) : at::Tensor();  // [E]
        at::Tensor gu = expert_matmul(d.xs, w.gate_up, d.offs, host_ends);             // [S,2I]
        d.xs.reset();
        at::Tensor act = fused::silu_mul(gu);                                          // [S,I]
        gu.reset();
        at::Tensor out = expert_matmul(act, w.down, d.offs, host_ends);                // [S,H]
        act.reset();
        if (!observe) return fused::moe_combine(out, d.slot_pos, top_w);              // [N,H]
        // The combine reads every slot's row: it hands the sinks each row's max |x| on the way.
        at::Tensor slot_max;                                                           // [S] fp32
        at::Tensor y = fused::moe_combine(out, d.slot_pos, top_w, K <= fused::kCombineMaxTopK ? &slot_max : nullptr);  // [N,H]
        observe({E, first_token, top_i, out, d.slot_pos, slot_max});
        return y;
    }

    at::Tensor expert_of_slot = top_i.reshape({-1});                                  // [S]
    // expand+reshape, not repeat_interleave: the latter syncs with the host to size its output.
    at::Tensor token_of_slot =
        at::arange(N, at::TensorOptions().dtype(at::kLong).device(x.device())).unsqueeze(1).expand({N, K}).reshape({-1});  // [S]
    at::Tensor perm = std::get<1>(at::sort(expert_of_slot, /*stable=*/true, 0, false));  // [S] slots by expert
    at::Tensor token_sorted = token_of_slot.index_select(0, perm);                     // [S]
    at::Tensor weight_sorted = top_w.reshape({-1}).index_select(0, perm);              // [S]
    at::Tensor xs = x.index_select(0, token_sorted);                                   // [S,H]
    at::Tensor out;                                                                    // [S,H]
    if (use_grouped_mm(x, H, I)) {
        // histc with a fixed range needs no host sync (bincount syncs twice to size its output).
        at::Tensor counts = at::histc(expert_of_slot.to(at::kFloat), E, 0, static_cast<double>(E - 1));  // [E]
        at::Tensor offs = counts.cumsum(0).to(at::kInt);                               // [E]
        at::Tensor gu = compat::grouped_mm(xs, w.gate_up.transpose(1, 2), offs);       // [S,2I]
        xs.reset();
        at::Tensor act = at::silu(gu.narrow(1, 0, I)) * gu.narrow(1, I, I);            // [S,I]
        gu.reset();
        out = compat::grouped_mm(act, w.down.transpose(1, 2), offs);                   // [S,H]
    } else {
        // One host sync per layer for the group sizes; then one matmul pair per hit expert.
        at::Tensor counts_cpu = at::bincount(expert_of_slot, {}, E).to(at::kCPU);      // [E]
        const int64_t * c = counts_cpu.data_ptr<int64_t>();
        out = at::empty({xs.size(0), H}, xs.options());
        int64_t start = 0;
        for (int64_t e = 0; e < E; ++e) {
            if (c[e] == 0) continue;
            at::Tensor xe = xs.narrow(0, start, c[e]);                                 // [n_e,H]
            at::Tensor gu = at::linear(xe, w.gate_up[e]);                              // [n_e,2I]
            at::Tensor act = at::silu(gu.narrow(1, 0, I)) * gu.narrow(1, I, I);        // [n_e,I]
            out.narrow(0, start, c[e]).copy_(at::linear(act, w.down[e]));              // [n_e,H]
            start += c[e];
        }
    }
    at::Tensor inv = at::empty_like(perm);                                             // [S] slot -> row
    inv.index_put_({perm}, at::arange(perm.size(0), perm.options()));
    if (observe) observe({E, first_token, top_i, out, inv});
    // HF 5.x's grouped_mm combine: (proj_out * weights) in the weights' dtype (fp32: a bf16 tensor
    // times an fp32 one promotes), back in token order, summed over the K slots, rounded once.
    at::Tensor weighted = out * weight_sorted.unsqueeze(-1);                           // [S,H] fp32
    out.reset();
    return weighted.index_select(0, inv).view({N, K, H}).sum(1).to(x.scalar_type());   // [N,H]
}

}  // namespace

}  // namespace extractor::ops
