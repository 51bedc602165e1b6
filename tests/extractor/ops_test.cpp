// Shared ops against brute-force references written the slow, obvious way (docs/model-math.md).
#include <ATen/ATen.h>

#include <cmath>

#include "extractor/checkpoint/hf_config.h"
#include "extractor/ops.h"

#include <doctest/doctest.h>

using namespace extractor;

TEST_CASE("rms_norm: fp32 statistics, rounded to the input dtype before the gain multiply (HF order)") {
    at::Tensor x = at::randn({3, 5, 16});
    at::Tensor w = at::randn({16});
    at::Tensor ref = w * (x / at::sqrt(x.pow(2).mean(-1, true) + 1e-6));
    CHECK(at::allclose(ops::rms_norm(x, w, 1e-6), ref, 1e-5, 1e-6));
    at::Tensor xb = x.to(at::kBFloat16), wb = w.to(at::kBFloat16);
    at::Tensor x32 = xb.to(at::kFloat);
    at::Tensor refb = wb * (x32 * at::rsqrt(x32.pow(2).mean(-1, true) + 1e-6)).to(at::kBFloat16);
    CHECK(at::equal(ops::rms_norm(xb, wb, 1e-6), refb));
}

TEST_CASE("rope: default, llama3 and yarn inverse frequencies follow the HF formulas") {
    RopeParams p;
    ops::Rope r = ops::make_rope(p, 10000.0, 8, 128);
    for (int i = 0; i < 4; ++i) CHECK(r.inv_freq[i].item<float>() == doctest::Approx(1.0 / std::pow(10000.0, 2.0 * i / 8)).epsilon(1e-6));
    RopeParams l3;
    l3.type = "llama3";
    l3.factor = 8;
    l3.original_max_position_embeddings = 64;
    ops::Rope r3 = ops::make_rope(l3, 10000.0, 8, 128);
    // highest frequency (wavelength 2*pi < 64/4) unchanged, lowest (wavelength 6283 > 64) divided by 8
    CHECK(r3.inv_freq[0].item<float>() == doctest::Approx(r.inv_freq[0].item<float>()));
    CHECK(r3.inv_freq[3].item<float>() == doctest::Approx(r.inv_freq[3].item<float>() / 8));
    RopeParams y;
    y.type = "yarn";
    y.factor = 4;
    y.original_max_position_embeddings = 32;
    ops::Rope ry = ops::make_rope(y, 10000.0, 8, 128);
    CHECK(ry.attention_scaling == doctest::Approx(0.1 * std::log(4.0) + 1.0));
    auto [cos, sin] = ops::rope_cos_sin(r, 5, at::kFloat, at::kCPU);
    CHECK(cos.sizes() == at::IntArrayRef({5, 8}));
    CHECK(cos[3][1].item<float>() == doctest::Approx(std::cos(3 * r.inv_freq[1].item<float>())));
    CHECK(sin[3][5].item<float>() == doctest::Approx(std::sin(3 * r.inv_freq[1].item<float>())));
}

TEST_CASE("attention: GQA with a sliding window equals a per-head loop over the masked softmax") {
    const int64_t B = 2, T = 7, H = 12, Nq = 4, Nkv = 2, D = 6;
    ops::AttnWeights w;
    w.q.weight = at::randn({Nq * D, H}) * 0.3;
    w.k.weight = at::randn({Nkv * D, H}) * 0.3;
    w.v.weight = at::randn({Nkv * D, H}) * 0.3;
    w.o.weight = at::randn({H, Nq * D}) * 0.3;
    w.q.bias = at::randn({Nq * D});
    ops::AttnOptions o;
    o.n_heads = Nq;
    o.n_kv_heads = Nkv;
    o.head_dim = D;
    o.sliding_window = 3;
    at::Tensor a = at::randn({B, T, H});
    auto [cos, sin] = ops::rope_cos_sin(ops::make_rope(RopeParams{}, 10000.0, D, 64), T, at::kFloat, at::kCPU);
    at::Tensor got = ops::attention(a, w, o, cos, sin);
    // reference
    auto rot = [&](at::Tensor x) {  // x [T,D]
        at::Tensor r = at::cat({-x.narrow(1, D / 2, D / 2), x.narrow(1, 0, D / 2)}, 1);
        return x * cos + r * sin;
    };
    at::Tensor q = at::linear(a, w.q.weight, w.q.bias), k = at::linear(a, w.k.weight), v = at::linear(a, w.v.weight);
    at::Tensor out = at::zeros({B, T, Nq * D});
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < Nq; ++h) {
            const int64_t kv = h / (Nq / Nkv);  // query head h reads kv head h / group
            at::Tensor qh = rot(q[b].narrow(1, h * D, D)), kh = rot(k[b].narrow(1, kv * D, D)), vh = v[b].narrow(1, kv * D, D);
            for (int64_t t = 0; t < T; ++t) {
                at::Tensor s = at::full({T}, -INFINITY);
                for (int64_t u = std::max<int64_t>(0, t - 2); u <= t; ++u) s[u] = (qh[t] * kh[u]).sum() / std::sqrt(double(D));
                out[b][t].narrow(0, h * D, D).copy_(at::matmul(at::softmax(s, 0), vh));
            }
        }
    CHECK(at::allclose(got, at::linear(out, w.o.weight), 1e-4, 1e-5));
}

TEST_CASE("moe: softmax-top-k routing and expert dispatch equal a per-token brute force, renormalised or not") {
    const int64_t N = 9, H = 8, E = 5, I = 6, K = 2;
    ops::MoeWeights w;
    w.router = at::randn({E, H});
    w.gate_up = at::randn({E, 2 * I, H}) * 0.5;
    w.down = at::randn({E, H, I}) * 0.5;
    at::Tensor m = at::randn({1, N, H});
    for (bool renorm : {false, true}) {
        INFO("renormalise " << renorm);
        at::Tensor got = ops::moe(m, w, ops::MoeOptions{.top_k = K, .renormalise = renorm});
        for (int64_t n = 0; n < N; ++n) {
            at::Tensor x = m[0][n];
            at::Tensor p = at::softmax(at::matmul(w.router, x), 0);
            auto [val, idx] = at::topk(p, K);
            if (renorm) val = val / val.sum();
            at::Tensor y = at::zeros({H});
            for (int64_t j = 0; j < K; ++j) {
                const int64_t e = idx[j].item<int64_t>();
                at::Tensor gu = at::matmul(w.gate_up[e], x);
                at::Tensor act = at::silu(gu.narrow(0, 0, I)) * gu.narrow(0, I, I);
                y += val[j] * at::matmul(w.down[e], act);
            }
            CHECK(at::allclose(got[0][n], y, 1e-4, 1e-5));
        }
    }
}
