// Qwen3-Next (families/qwen3_next.cpp, ops_delta.cpp) on CPU: the chunked gated delta rule against
// the step-by-step recurrence and an fp64 reference of the rule's definition; the causal conv1d;
// the zero-centred RMSNorm; a 4-layer fixture (linear and full attention, MoE with a shared expert)
// against a brute-force fp64 reference written here, layer by layer; both expert layouts; the MTP
// tensors skipped; malformed configs refused naming the key; inspect's counts for the released
// Qwen3-Next-80B-A3B config and the estimate against the bytes actually loaded.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"
#include "extractor/families/family.h"
#include "extractor/model.h"
#include "extractor/ops_delta.h"
#include "tests/extractor/test_util.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {

double rel_err(const at::Tensor & ours, const at::Tensor & ref) {
    at::Tensor a = ours.to(at::kDouble), b = ref.to(at::kDouble);
    return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-30);
}

struct DeltaCase {
    at::Tensor q, k, v, g, beta;  // [B,T,Nh,Dk] x2, [B,T,Nh,Dv], [B,T,Nh] x2 (fp32)
};

DeltaCase delta_case(int64_t B, int64_t T, int64_t Nh, int64_t Dk, int64_t Dv, uint64_t seed) {
    at::manual_seed(seed);
    DeltaCase c;
    c.q = ops::l2_normalize(at::randn({B, T, Nh, Dk}));
    c.k = ops::l2_normalize(at::randn({B, T, Nh, Dk}));
    c.v = at::randn({B, T, Nh, Dv});
    // Decays from ~0.5 to ~1 per token, as -exp(A_log) * softplus(.) gives for the released weights.
    c.g = -at::rand({B, T, Nh}) * 0.7;
    c.beta = at::sigmoid(at::randn({B, T, Nh}));
    return c;
}

// The rule as defined, in fp64, one token at a time: S = e^g S; S += k (beta (v - S^T k))^T;
// o = S^T q / sqrt(Dk).
at::Tensor delta_reference(const DeltaCase & c) {
    const int64_t B = c.q.size(0), T = c.q.size(1), Nh = c.q.size(2), Dk = c.q.size(3), Dv = c.v.size(3);
    at::Tensor out = at::zeros({B, T, Nh, Dv}, at::kDouble);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < Nh; ++h) {
            at::Tensor S = at::zeros({Dk, Dv}, at::kDouble);
            for (int64_t t = 0; t < T; ++t) {
                at::Tensor k = c.k[b][t][h].to(at::kDouble), v = c.v[b][t][h].to(at::kDouble);
                at::Tensor q = c.q[b][t][h].to(at::kDouble) / std::sqrt(static_cast<double>(Dk));
                S = S * std::exp(c.g[b][t][h].item<double>());
                at::Tensor err = (v - at::matmul(S.t(), k)) * c.beta[b][t][h].item<double>();
                S = S + at::outer(k, err);
                out[b][t][h] = at::matmul(S.t(), q);
            }
        }
    return out;
}

FixtureOptions next_fixture(const std::string & dir) {
    FixtureOptions f;
    f.family = "qwen3_next";
    f.out_dir = dir;
    f.layers = 4;  // full_attention_interval 4: layers 0-2 linear attention, layer 3 full attention
    f.hidden = 64;
    f.heads = 4;
    f.kv_heads = 2;
    f.head_dim = 16;
    f.intermediate = 40;  // the shared expert's width
    f.experts = 6;
    f.top_k = 3;
    f.moe_intermediate = 24;
    return f;
}

// ---- brute-force reference of one decoder layer: fp64, written from the HF module definitions ----

struct Reference {
    const SafetensorsFile & f;
    nlohmann::json c;  // config.json
    double eps = 1e-6;

    at::Tensor w(const std::string & name) const { return f.load(name).to(at::kDouble); }
    int64_t i(const char * key) const { return c[key].get<int64_t>(); }

    // Qwen3NextRMSNorm over the last dim: x / rms(x) * (1 + g).
    at::Tensor zc_rms(const at::Tensor & x, const at::Tensor & g) const {
        return x / at::sqrt(x.pow(2).mean(-1, true) + eps) * (1 + g);
    }

    static at::Tensor silu(const at::Tensor & x) { return x / (1 + at::exp(-x)); }

    // Qwen3NextGatedDeltaNet on one row a [T,H] -> [T,H].
    at::Tensor linear_attn(const at::Tensor & a, const std::string & p) const {
        const int64_t T = a.size(0), Nk = i("linear_num_key_heads"), Nv = i("linear_num_value_heads");
        const int64_t Dk = i("linear_key_head_dim"), Dv = i("linear_value_head_dim"), Kc = i("linear_conv_kernel_dim");
        const int64_t r = Nv / Nk, group = 2 * Dk + 2 * r * Dv;
        at::Tensor qkvz = at::matmul(a, w(p + "in_proj_qkvz.weight").t());  // [T, Nk*group]
        at::Tensor ba = at::matmul(a, w(p + "in_proj_ba.weight").t());      // [T, Nk*2r]
        std::vector<at::Tensor> qs, ks, vs, zs, bs, as;
        for (int64_t j = 0; j < Nk; ++j) {  // key head group j holds value heads j*r .. j*r+r-1
            at::Tensor blk = qkvz.narrow(1, j * group, group);
            qs.push_back(blk.narrow(1, 0, Dk));
            ks.push_back(blk.narrow(1, Dk, Dk));
            vs.push_back(blk.narrow(1, 2 * Dk, r * Dv));
            zs.push_back(blk.narrow(1, 2 * Dk + r * Dv, r * Dv));
            bs.push_back(ba.narrow(1, j * 2 * r, r));
            as.push_back(ba.narrow(1, j * 2 * r + r, r));
        }
        at::Tensor x = at::cat({at::cat(qs, 1), at::cat(ks, 1), at::cat(vs, 1)}, 1);  // [T,C] conv channels
        at::Tensor z = at::cat(zs, 1), b = at::cat(bs, 1), dt = at::cat(as, 1);       // [T,Nv*Dv], [T,Nv] x2
        // Causal depthwise conv: y[t,c] = sum_j W[c,j] x[t-Kc+1+j, c], zero before the start.
        at::Tensor W = w(p + "conv1d.weight").squeeze(1);                             // [C,Kc]
        at::Tensor y = at::zeros_like(x);
        for (int64_t t = 0; t < T; ++t)
            for (int64_t j = 0; j < Kc; ++j) {
                const int64_t src = t - (Kc - 1) + j;
                if (src >= 0) y[t] += W.select(1, j) * x[src];
            }
        y = silu(y);
        at::Tensor q = y.narrow(1, 0, Nk * Dk).view({T, Nk, Dk}), k = y.narrow(1, Nk * Dk, Nk * Dk).view({T, Nk, Dk});
        at::Tensor v = y.narrow(1, 2 * Nk * Dk, Nv * Dv).view({T, Nv, Dv});
        q = q / at::sqrt(q.pow(2).sum(-1, true) + 1e-6);
        k = k / at::sqrt(k.pow(2).sum(-1, true) + 1e-6);
        at::Tensor beta = at::sigmoid(b);                                                         // [T,Nv]
        at::Tensor g = -at::exp(w(p + "A_log")) * at::log1p(at::exp(dt + w(p + "dt_bias")));      // [T,Nv]
        at::Tensor norm = w(p + "norm.weight");
        at::Tensor out = at::zeros({T, Nv * Dv}, at::kDouble);
        for (int64_t h = 0; h < Nv; ++h) {
            at::Tensor S = at::zeros({Dk, Dv}, at::kDouble);
            for (int64_t t = 0; t < T; ++t) {
                at::Tensor kt = k[t][h / r], qt = q[t][h / r] / std::sqrt(static_cast<double>(Dk)), vt = v[t][h];
                S = S * std::exp(g[t][h].item<double>());
                S = S + at::outer(kt, (vt - at::matmul(S.t(), kt)) * beta[t][h].item<double>());
                at::Tensor o = at::matmul(S.t(), qt);                                            // [Dv]
                o = o / at::sqrt(o.pow(2).mean() + eps) * norm * silu(z[t].narrow(0, h * Dv, Dv));  // gated RMSNorm
                out[t].narrow(0, h * Dv, Dv).copy_(o);
            }
        }
        return at::matmul(out, w(p + "out_proj.weight").t());
    }

    // Qwen3NextAttention on one row a [T,H] -> [T,H].
    at::Tensor full_attn(const at::Tensor & a, const std::string & p) const {
        const int64_t T = a.size(0), Nq = i("num_attention_heads"), Nkv = i("num_key_value_heads"), D = i("head_dim");
        const int64_t R = static_cast<int64_t>(static_cast<double>(D) * c["partial_rotary_factor"].get<double>());
        const double theta = c["rope_parameters"]["rope_theta"].get<double>();
        at::Tensor qg = at::matmul(a, w(p + "q_proj.weight").t()).view({T, Nq, 2 * D});
        at::Tensor q = zc_rms(qg.narrow(2, 0, D), w(p + "q_norm.weight"));
        at::Tensor gate = qg.narrow(2, D, D);                                                    // [T,Nq,D]
        at::Tensor k = zc_rms(at::matmul(a, w(p + "k_proj.weight").t()).view({T, Nkv, D}), w(p + "k_norm.weight"));
        at::Tensor v = at::matmul(a, w(p + "v_proj.weight").t()).view({T, Nkv, D});
        auto rope = [&](at::Tensor x) {  // [T,N,D]: rotate-half on the first R dims only
            at::Tensor out = x.clone();
            for (int64_t t = 0; t < T; ++t)
                for (int64_t d = 0; d < R / 2; ++d) {
                    const double ang = static_cast<double>(t) * std::pow(theta, -2.0 * static_cast<double>(d) / static_cast<double>(R));
                    at::Tensor x1 = x.select(0, t).select(1, d), x2 = x.select(0, t).select(1, d + R / 2);
                    out.select(0, t).select(1, d).copy_(x1 * std::cos(ang) - x2 * std::sin(ang));
                    out.select(0, t).select(1, d + R / 2).copy_(x2 * std::cos(ang) + x1 * std::sin(ang));
                }
            return out;
        };
        q = rope(q);
        k = rope(k);
        at::Tensor out = at::zeros({T, Nq, D}, at::kDouble);
        for (int64_t h = 0; h < Nq; ++h) {
            const int64_t hk = h / (Nq / Nkv);
            at::Tensor s = at::matmul(q.select(1, h), k.select(1, hk).t()) / std::sqrt(static_cast<double>(D));  // [T,T]
            s = s.masked_fill(at::ones({T, T}, at::kBool).triu(1), -INFINITY);
            out.select(1, h).copy_(at::matmul(at::softmax(s, -1), v.select(1, hk)) * at::sigmoid(gate.select(1, h)));
        }
        return at::matmul(out.reshape({T, Nq * D}), w(p + "o_proj.weight").t());
    }

    // Qwen3NextSparseMoeBlock on one row m [T,H] -> [T,H]: token by token.
    at::Tensor moe(const at::Tensor & m, const std::string & p) const {
        const int64_t T = m.size(0), E = i("num_experts"), K = i("num_experts_per_tok");
        auto mlp = [&](const at::Tensor & x, const std::string & e) {
            return at::matmul(silu(at::matmul(x, w(e + "gate_proj.weight").t())) * at::matmul(x, w(e + "up_proj.weight").t()),
                              w(e + "down_proj.weight").t());
        };
        at::Tensor out = at::zeros_like(m);
        for (int64_t t = 0; t < T; ++t) {
            at::Tensor x = m[t];
            at::Tensor probs = at::softmax(at::matmul(w(p + "gate.weight"), x), 0);
            auto [top_w, top_i] = at::topk(probs, K);
            top_w = top_w / top_w.sum();
            at::Tensor acc = at::sigmoid(at::dot(w(p + "shared_expert_gate.weight")[0], x)) * mlp(x, p + "shared_expert.");
            for (int64_t j = 0; j < K; ++j)
                acc = acc + top_w[j] * mlp(x, p + "experts." + std::to_string(top_i[j].item<int64_t>()) + ".");
            out[t] = acc;
            (void)E;
        }
        return out;
    }
};

// Every site (the residual too) of every layer, 2 sequences of 12 tokens, CPU, f32.
tests::CollectSink run_all(const std::string & model_dir, const std::string & ids) {
    return tests::run_collect(model_dir, ids, {}, {Site::LnAttn, Site::LnMlp, Site::Residual});
}

ModelConfig parse(const nlohmann::json & j) {
    return find_family("qwen3_next").parse_config(parse_hf_config(j, "/x/config.json"));
}

// Qwen/Qwen3-Next-80B-A3B-Instruct's config.json as published (the keys the extractor reads).
nlohmann::json released_config() {
    return {{"model_type", "qwen3_next"},      {"architectures", {"Qwen3NextForCausalLM"}},
            {"hidden_size", 2048},             {"num_hidden_layers", 48},
            {"vocab_size", 151936},            {"num_attention_heads", 16},
            {"num_key_value_heads", 2},        {"head_dim", 256},
            {"intermediate_size", 5120},       {"rms_norm_eps", 1e-6},
            {"rope_theta", 10000000},          {"partial_rotary_factor", 0.25},
            {"full_attention_interval", 4},    {"linear_conv_kernel_dim", 4},
            {"linear_key_head_dim", 128},      {"linear_value_head_dim", 128},
            {"linear_num_key_heads", 16},      {"linear_num_value_heads", 32},
            {"num_experts", 512},              {"num_experts_per_tok", 10},
            {"moe_intermediate_size", 512},    {"shared_expert_intermediate_size", 512},
            {"norm_topk_prob", true},          {"decoder_sparse_step", 1},
            {"mlp_only_layers", nlohmann::json::array()}, {"max_position_embeddings", 262144},
            {"tie_word_embeddings", false},    {"torch_dtype", "bfloat16"}};
}

}  // namespace

TEST_CASE("qwen3_next: the chunked gated delta rule equals the step-by-step recurrence and the rule's definition") {
    // Lengths below, at and across chunk boundaries, with a chunk of 8 so that several chunks and a
    // padded last chunk occur; then HF's chunk of 64 with T = 100 (one full chunk, one padded).
    for (int64_t T : {1, 5, 8, 9, 16, 23, 40}) {
        INFO("T " << T);
        DeltaCase c = delta_case(2, T, 3, 8, 6, 100 + static_cast<uint64_t>(T));
        at::Tensor ref = delta_reference(c);
        at::Tensor rec = ops::gated_delta_rule_recurrent(c.q, c.k, c.v, c.g, c.beta);
        at::Tensor chunked = ops::gated_delta_rule_chunked(c.q, c.k, c.v, c.g, c.beta, 8);
        CHECK(rec.sizes() == ref.sizes());
        CHECK(chunked.sizes() == ref.sizes());
        CHECK(rel_err(rec, ref) < 1e-5);
        CHECK(rel_err(chunked, ref) < 1e-5);
        CHECK(rel_err(chunked, rec) < 1e-5);
    }
    DeltaCase c = delta_case(1, 100, 2, 16, 16, 7);
    CHECK(rel_err(ops::gated_delta_rule_chunked(c.q, c.k, c.v, c.g, c.beta), delta_reference(c)) < 1e-5);
    // The state carries across tokens and chunks: with little decay (here 0.35 over the 99 tokens in
    // all), the last output depends on the first token's value.
    c.g = c.g * 0.01;
    at::Tensor before = ops::gated_delta_rule_chunked(c.q, c.k, c.v, c.g, c.beta, 16);
    CHECK(rel_err(before, delta_reference(c)) < 1e-5);
    DeltaCase d = c;
    d.v = c.v.clone();
    d.v[0][0] += 1.0;
    at::Tensor after = ops::gated_delta_rule_chunked(d.q, d.k, d.v, d.g, d.beta, 16);
    CHECK((after[0][99] - before[0][99]).abs().max().item<double>() > 1e-6);
    // A bf16 input comes back in bf16.
    const bool bf16_out = ops::gated_delta_rule_chunked(c.q.to(at::kBFloat16), c.k.to(at::kBFloat16), c.v.to(at::kBFloat16),
                                                        c.g, c.beta.to(at::kBFloat16))
                              .scalar_type() == at::kBFloat16;
    CHECK(bf16_out);
}

TEST_CASE("qwen3_next: the conv1d is causal and depthwise, and matches its definition") {
    at::manual_seed(3);
    const int64_t B = 2, T = 9, C = 5, Kc = 4;
    at::Tensor x = at::randn({B, T, C}), w = at::randn({C, 1, Kc});
    at::Tensor y = ops::causal_conv1d_silu(x, w);
    REQUIRE(y.sizes() == x.sizes());
    for (int64_t t = 0; t < T; ++t)
        for (int64_t ch = 0; ch < C; ++ch) {
            double acc = 0;
            for (int64_t j = 0; j < Kc; ++j) {
                const int64_t src = t - (Kc - 1) + j;
                if (src >= 0) acc += w[ch][0][j].item<double>() * x[1][src][ch].item<double>();
            }
            CHECK(y[1][t][ch].item<double>() == doctest::Approx(acc / (1 + std::exp(-acc))).epsilon(1e-5));
        }
    // Changing token 4 changes outputs 4..4+Kc-1 only, and only in the channel changed.
    at::Tensor x2 = x.clone();
    x2[0][4][2] += 3.0;
    at::Tensor diff = (ops::causal_conv1d_silu(x2, w) - y).abs();
    CHECK(diff.narrow(1, 0, 4).max().item<double>() == 0.0);
    CHECK(diff[0].narrow(0, 4, Kc).select(1, 2).min().item<double>() > 0.0);
    CHECK(diff.narrow(1, 4 + Kc, T - 4 - Kc).max().item<double>() == 0.0);
    CHECK(diff.select(2, 1).max().item<double>() == 0.0);
    CHECK(diff[1].max().item<double>() == 0.0);
}

TEST_CASE("qwen3_next: the zero-centred RMSNorm scales by 1 + w and rounds once") {
    at::manual_seed(5);
    at::Tensor x = at::randn({3, 32}), w = 0.1 * at::randn({32});
    at::Tensor x64 = x.to(at::kDouble);
    at::Tensor ref = x64 / at::sqrt(x64.pow(2).mean(-1, true) + 1e-6) * (1 + w.to(at::kDouble));
    CHECK(rel_err(ops::rms_norm_zero_centred(x, w, 1e-6), ref) < 1e-6);
    // A zero gain is the plain normalisation (HF's initial value), not a zero output.
    CHECK(rel_err(ops::rms_norm_zero_centred(x, at::zeros({32}), 1e-6), x64 / at::sqrt(x64.pow(2).mean(-1, true) + 1e-6)) < 1e-6);
    // bf16: the fp32 product (normalised * (1 + w)) rounded once, as HF's (x * w).to(dtype).
    at::Tensor xb = x.to(at::kBFloat16), wb = w.to(at::kBFloat16);
    at::Tensor xf = xb.to(at::kFloat);
    at::Tensor once = (xf * at::rsqrt(xf.pow(2).mean(-1, true) + 1e-6) * (wb.to(at::kFloat) + 1.0)).to(at::kBFloat16);
    CHECK(at::equal(ops::rms_norm_zero_centred(xb, wb, 1e-6), once));
}

TEST_CASE("qwen3_next: a 4-layer fixture matches an fp64 reference layer by layer, both attention kinds") {
    tests::TempDir dir;
    FixtureOptions fx = next_fixture(dir / "m");
    write_fixture(fx);
    const std::string ids = tests::write_ids(dir / "ids.json", 64, static_cast<int>(fx.vocab));
    const int64_t T = 12;  // run_collect's window
    auto got = run_all(fx.out_dir, ids);
    SafetensorsFile f = SafetensorsFile::open(dir / "m/model.safetensors");
    Reference ref{f, nlohmann::json::parse(tests::read_file(dir / "m/config.json"))};
    REQUIRE(ref.c["full_attention_interval"] == 4);
    for (int l = 0; l < 4; ++l)
        for (Site s : {Site::LnAttn, Site::LnMlp, Site::Residual}) {
            REQUIRE(got.got.count({s, l}) == 1);
            CHECK(got.got.at({s, l}).sizes() == at::IntArrayRef({2, T, fx.hidden}));
            CHECK(at::isfinite(got.got.at({s, l})).all().item<bool>());
        }
    // Layers 1, 2 (linear attention) and 3 (full attention), each from the residual the layer before
    // left: ln_attn, then ln_mlp after the token mixer, then the residual after the MoE block.
    for (int l = 1; l < 4; ++l) {
        INFO("layer " << l);
        const std::string p = "model.layers." + std::to_string(l) + ".";
        for (int64_t b = 0; b < 2; ++b) {
            at::Tensor h = got.got.at({Site::Residual, l - 1})[b].to(at::kDouble);
            at::Tensor a = ref.zc_rms(h, ref.w(p + "input_layernorm.weight"));
            CHECK(rel_err(got.got.at({Site::LnAttn, l})[b], a) < 1e-5);
            at::Tensor mixed = l < 3 ? ref.linear_attn(a, p + "linear_attn.") : ref.full_attn(a, p + "self_attn.");
            at::Tensor h2 = h + mixed;
            at::Tensor m = ref.zc_rms(h2, ref.w(p + "post_attention_layernorm.weight"));
            CHECK(rel_err(got.got.at({Site::LnMlp, l})[b], m) < 1e-4);
            at::Tensor m_got = got.got.at({Site::LnMlp, l})[b].to(at::kDouble);
            CHECK(rel_err(got.got.at({Site::Residual, l})[b], h2 + ref.moe(m_got, p + "mlp.")) < 1e-4);
        }
    }
    // The transformers v5 layout (fused experts) of the same values gives the same captures.
    FixtureOptions fused = next_fixture(dir / "fused");
    fused.fused_experts = true;
    write_fixture(fused);
    auto got2 = run_all(fused.out_dir, ids);
    for (const auto & [key, t] : got.got) CHECK(at::equal(t, got2.got.at(key)));
}

TEST_CASE("qwen3_next: the gated DeltaNet layer is the same chunked or step by step") {
    tests::TempDir dir;
    FixtureOptions fx = next_fixture(dir / "m");
    write_fixture(fx);
    SafetensorsFile f = SafetensorsFile::open(dir / "m/model.safetensors");
    const ModelConfig cfg = parse(nlohmann::json::parse(tests::read_file(dir / "m/config.json")));
    const std::string p = "model.layers.0.linear_attn.";
    ops::DeltaNetWeights w{f.load(p + "in_proj_qkvz.weight"), f.load(p + "in_proj_ba.weight"), f.load(p + "conv1d.weight"),
                           f.load(p + "dt_bias"),              f.load(p + "A_log"),             f.load(p + "norm.weight"),
                           f.load(p + "out_proj.weight")};
    at::manual_seed(9);
    at::Tensor a = at::randn({2, 37, fx.hidden});
    ops::DeltaNetOptions opt = cfg.linear_attn;
    opt.chunk = 8;
    at::Tensor chunked = ops::gated_delta_net(a, w, opt);
    opt.recurrent = true;
    CHECK(rel_err(chunked, ops::gated_delta_net(a, w, opt)) < 1e-5);
}

TEST_CASE("qwen3_next: the MTP tensors are skipped, with the same captures as without them") {
    tests::TempDir dir;
    FixtureOptions plain = next_fixture(dir / "plain");
    write_fixture(plain);
    FixtureOptions with_mtp = next_fixture(dir / "mtp");
    with_mtp.mtp_layers = 1;
    write_fixture(with_mtp);
    SafetensorsFile f = SafetensorsFile::open(dir / "mtp/model.safetensors");
    int mtp = 0;
    for (const auto & n : f.names()) mtp += n.rfind("mtp.", 0) == 0 ? 1 : 0;
    CHECK(mtp == 10);  // fc, 3 norms, and layer 0's 2 norms + 4 projections
    const std::string ids = tests::write_ids(dir / "ids.json", 64, static_cast<int>(plain.vocab));
    auto a = run_all(plain.out_dir, ids);
    auto b = run_all(with_mtp.out_dir, ids);
    for (const auto & [key, t] : a.got) CHECK(at::equal(t, b.got.at(key)));
    CHECK(find_family("qwen3_next").ignored_weight_prefixes() == std::vector<std::string>{"mtp."});
}

TEST_CASE("qwen3_next: the layer pattern comes from layer_types or full_attention_interval") {
    nlohmann::json j = released_config();
    ModelConfig c = parse(j);
    REQUIRE(c.layer_is_linear.size() == 48);
    for (int l = 0; l < 48; ++l) CHECK(c.layer_is_linear[static_cast<size_t>(l)] == ((l + 1) % 4 != 0));
    CHECK(c.n_moe_layers() == 48);
    CHECK(c.rope.inv_freq.size(0) == 32);  // 256 * 0.25 rotary dims
    j.erase("full_attention_interval");     // the class default is 4 too
    CHECK(parse(j).layer_is_linear == c.layer_is_linear);
    j["num_hidden_layers"] = 3;
    j["layer_types"] = {"full_attention", "linear_attention", "full_attention"};
    ModelConfig t = parse(j);
    CHECK(t.layer_is_linear == std::vector<bool>{false, true, false});
    j.erase("partial_rotary_factor");  // Qwen3NextConfig's default 0.25
    CHECK(parse(j).rope.inv_freq.size(0) == 32);
}

TEST_CASE("qwen3_next: malformed configs are refused naming the key") {
    auto refused = [](nlohmann::json j, const std::string & key) {
        INFO("key " << key << " in " << j.dump());
        try {
            (void)parse(j);
            FAIL("accepted");
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Usage);
            CHECK(std::string(e.what()).find(key) != std::string::npos);
        }
    };
    const nlohmann::json base = released_config();
    auto with = [&](const char * key, nlohmann::json v) {
        nlohmann::json j = base;
        j[key] = std::move(v);
        return j;
    };
    refused(with("layer_types", {"linear_attention", "full_attention"}), "layer_types");  // 2 entries for 48 layers
    nlohmann::json bad_kind = base;
    bad_kind["num_hidden_layers"] = 2;
    bad_kind["layer_types"] = {"linear_attention", "sliding_attention"};
    refused(bad_kind, "layer_types");
    refused(with("full_attention_interval", 0), "full_attention_interval");
    refused(with("full_attention_interval", "4"), "full_attention_interval");
    refused(with("linear_num_value_heads", 24), "linear_num_value_heads");  // not a multiple of 16 key heads
    refused(with("linear_num_key_heads", 0), "linear_num_key_heads");
    refused(with("linear_key_head_dim", 100000), "linear_key_head_dim");
    refused(with("linear_value_head_dim", 1.5), "linear_value_head_dim");
    refused(with("linear_conv_kernel_dim", 0), "linear_conv_kernel_dim");
    refused(with("linear_conv_kernel_dim", 1000000), "linear_conv_kernel_dim");
    refused(with("shared_expert_intermediate_size", -1), "shared_expert_intermediate_size");
    refused(with("num_experts_per_tok", 513), "num_experts_per_tok");
    refused(with("partial_rotary_factor", 0.001), "partial_rotary_factor");  // 256 * 0.001 -> 0 rotary dims
    refused(with("num_experts", 4096), "num_experts");                       // 4096 x 48 experts in all
}

TEST_CASE("qwen3_next: inspect counts the released 80B-A3B exactly, and the estimate is the bytes loaded") {
    tests::TempDir dir;
    std::filesystem::create_directories(dir / "80b");
    tests::write_file(dir / "80b/config.json", released_config().dump());
    auto [code, out] = tests::extract_cli({"inspect", dir / "80b", "--json"}, dir / "out.json");
    REQUIRE(code == 0);
    auto j = nlohmann::json::parse(out);
    CHECK(j["model_type"] == "qwen3_next");
    CHECK(j["layers"] == 48);
    CHECK(j["experts"] == 512);
    CHECK(j["experts_per_token"] == 10);
    // Per layer, from the module definitions: 36 linear-attention layers (in_proj_qkvz
    // (2*16*128 + 2*32*128) x 2048, in_proj_ba 64 x 2048, conv1d 8192 x 4, dt_bias and A_log 32 each,
    // norm 128, out_proj 2048 x 4096), 12 full-attention layers (q_proj 2*16*256 x 2048, k/v
    // 2*256 x 2048 each, o_proj 2048 x 4096, q/k norm 256 each); every layer 2 norms, router
    // 512 x 2048, 512 experts of 3 x 512 x 2048, the shared expert 3 x 512 x 2048 and its gate 2048.
    const uint64_t H = 2048, linear = (2 * 2048 + 2 * 4096) * H + 64 * H + 8192 * 4 + 32 + 32 + 128 + H * 4096;
    const uint64_t full = 2 * 4096 * H + 2 * 512 * H + H * 4096 + 2 * 256;
    const uint64_t expert = 3 * 512 * H, moe = 512 * H + 512 * expert + expert + H + 2 * H;
    const uint64_t outer = 2 * 151936 * H + H;  // embedding, lm_head, final norm
    const uint64_t total = outer + 36 * linear + 12 * full + 48 * moe;
    CHECK(j["params_total"].get<uint64_t>() == total);
    CHECK(total == 79674391296ull);  // what tests/deploy/estimate_test.cpp holds deploy's estimate to
    CHECK(j["params_active"].get<uint64_t>() == total - 48 * (512 - 10) * expert);
    CHECK(total / 1000000000 == 79);  // "80B total"
    CHECK((total - 48 * (512 - 10) * expert) / 100000000 == 38);  // 3.9 B with the embeddings ("A3B" without)
    // What run loads (no lm_head, no final norm) in bf16.
    CHECK(j["weights_loaded_bytes_bf16"].get<uint64_t>() == 2 * (total - 151936 * H - H));

    // The estimate for a fixture equals the bytes its loaded tensors hold, layer by layer.
    FixtureOptions fx = next_fixture(dir / "m");
    fx.mlp_only_layers = {1};  // one dense MLP among the MoE layers
    write_fixture(fx);
    LoadOptions lo;
    lo.device = "cpu";
    lo.dtype = at::kFloat;
    lo.show_progress = false;
    Model m = load_model(fx.out_dir, lo);
    uint64_t total_bytes = static_cast<uint64_t>(m.weights.embed.nbytes());
    for (int l = 0; l < 4; ++l) {
        uint64_t layer = 0;
        for (at::Tensor * t : m.weights.layers[static_cast<size_t>(l)].all())
            if (t->defined()) layer += static_cast<uint64_t>(t->nbytes());
        CHECK(layer == m.estimate.layer_bytes[static_cast<size_t>(l)]);
        total_bytes += layer;
    }
    CHECK(total_bytes == m.estimate.total_bytes);
    CHECK(m.weights.layers[1].mlp.gate.weight.defined());
    CHECK(!m.weights.layers[1].moe.shared_gate.defined());
    CHECK(m.weights.layers[0].linear_attn.in_qkvz.defined());
    CHECK(!m.weights.layers[3].linear_attn.in_qkvz.defined());
    CHECK(m.weights.layers[3].attn.q.weight.size(0) == 2 * 4 * 16);
}
