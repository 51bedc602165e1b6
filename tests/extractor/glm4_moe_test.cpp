// glm4_moe (families/glm4_moe.cpp) on CPU: the group-limited sigmoid router against a brute force
// that enumerates group and expert subsets; the forward (dense first layer, then MoE with a shared
// expert; partial RoPE, q/k/v biases, with and without q/k norm) against an fp64 reference written
// here; both checkpoint layouts and the multi-token-prediction layers; inspect's figures for the
// released GLM-4.5-Air config and the estimate against the bytes actually loaded; bad configs.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"
#include "extractor/families/family.h"
#include "extractor/model.h"
#include "tests/extractor/test_util.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {

// Two layers: layer 0 dense, layer 1 MoE (8 experts in 4 groups of 2, 2 groups kept, top-2, one
// shared expert, routed scaling 2.5).
FixtureOptions glm_fixture(const std::string & dir) {
    FixtureOptions f;
    f.family = "glm4_moe";
    f.out_dir = dir;
    f.layers = 2;
    f.hidden = 64;
    f.heads = 4;
    f.kv_heads = 2;
    f.head_dim = 16;
    f.intermediate = 48;
    f.experts = 8;
    f.top_k = 2;
    f.moe_intermediate = 16;
    f.n_group = 4;
    f.topk_group = 2;
    return f;
}

// Every site of every layer, 2 windows of 12 tokens, f32 on the CPU.
tests::CollectSink run_all(const std::string & model_dir, const std::string & ids) {
    return tests::run_collect(model_dir, ids, {}, {Site::LnAttn, Site::LnMlp, Site::Residual});
}

double rel_err(const at::Tensor & ours, const at::Tensor & ref) {
    at::Tensor a = ours.to(at::kDouble), b = ref.to(at::kDouble);
    return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-30);
}

// ---- brute-force router: every subset of groups, then every subset of experts ------------------

struct Routed {
    std::vector<int64_t> experts;  // ascending
    std::vector<double> weights;   // per entry of experts
};

// HF's rule, spelled out: choice = score + bias; a group's score is the sum of its two largest
// choices; the kept groups are the topk_group-subset with the largest total; experts outside them
// count 0 (not -inf); the chosen experts are the top_k-subset with the largest total value; their
// weights are the scores, renormalised (+1e-20) and scaled. E <= 16, so 2^E subsets are few.
Routed brute_route(const std::vector<double> & score, const std::vector<double> & bias, int64_t G, int64_t TG, int64_t K,
                   bool renorm, double scale) {
    const int64_t E = static_cast<int64_t>(score.size()), per = E / G;
    std::vector<double> choice(score.size());
    for (size_t e = 0; e < score.size(); ++e) choice[e] = score[e] + bias[e];
    std::vector<double> group(static_cast<size_t>(G));
    for (int64_t g = 0; g < G; ++g) {
        double best = -1e300, second = -1e300;
        for (int64_t e = g * per; e < (g + 1) * per; ++e) {
            const double v = choice[static_cast<size_t>(e)];
            if (v > best) std::swap(best, second), best = v;
            else if (v > second) second = v;
        }
        group[static_cast<size_t>(g)] = best + second;
    }
    uint32_t kept = 0;
    double kept_total = -1e300;
    for (uint32_t mask = 0; mask < (1u << G); ++mask) {
        if (std::popcount(mask) != TG) continue;
        double t = 0;
        for (int64_t g = 0; g < G; ++g)
            if (mask >> g & 1) t += group[static_cast<size_t>(g)];
        if (t > kept_total) kept_total = t, kept = mask;
    }
    std::vector<double> value(score.size());
    for (int64_t e = 0; e < E; ++e) value[static_cast<size_t>(e)] = (kept >> (e / per) & 1) ? choice[static_cast<size_t>(e)] : 0.0;
    uint32_t chosen = 0;
    double chosen_total = -1e300;
    for (uint32_t mask = 0; mask < (1u << E); ++mask) {
        if (std::popcount(mask) != K) continue;
        double t = 0;
        for (int64_t e = 0; e < E; ++e)
            if (mask >> e & 1) t += value[static_cast<size_t>(e)];
        if (t > chosen_total) chosen_total = t, chosen = mask;
    }
    Routed r;
    double sum = 0;
    for (int64_t e = 0; e < E; ++e)
        if (chosen >> e & 1) r.experts.push_back(e), sum += score[static_cast<size_t>(e)];
    for (int64_t e : r.experts) r.weights.push_back(score[static_cast<size_t>(e)] / (renorm ? sum + 1e-20 : 1.0) * scale);
    return r;
}

std::vector<double> to_vec(const at::Tensor & t) {
    at::Tensor c = t.to(at::kDouble).contiguous();
    return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

// ---- fp64 reference of the whole forward --------------------------------------------------------

struct Reference {
    const SafetensorsFile & f;
    int64_t H, Nq, Nkv, D, E, K, G, TG;
    double eps, theta, scale;
    bool qk_norm;

    at::Tensor w(const std::string & name) const { return f.load(name).to(at::kDouble); }

    at::Tensor rms(const at::Tensor & x, const at::Tensor & g) const {  // x [...,W]
        return x * at::rsqrt(x.pow(2).mean(-1, true) + eps) * g;
    }

    // Partial rotary at factor 0.5: of each head's D dims, the first R = D/2 are rotated as
    // (i, i + R/2) pairs at frequency theta^(-2i/R); the other D/2 pass through. x [T,N,D].
    at::Tensor rope(const at::Tensor & x) const {
        const int64_t T = x.size(0), R = D / 2;
        at::Tensor out = x.clone();
        for (int64_t t = 0; t < T; ++t)
            for (int64_t i = 0; i < R / 2; ++i) {
                const double ang = static_cast<double>(t) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(R));
                at::Tensor x1 = x[t].select(-1, i), x2 = x[t].select(-1, i + R / 2);  // [N]
                out[t].select(-1, i).copy_(x1 * std::cos(ang) - x2 * std::sin(ang));
                out[t].select(-1, i + R / 2).copy_(x2 * std::cos(ang) + x1 * std::sin(ang));
            }
        return out;
    }

    at::Tensor attention(const at::Tensor & a, const std::string & p) const {  // a [T,H] -> [T,H]
        const int64_t T = a.size(0);
        auto proj = [&](const char * n, int64_t heads) {
            at::Tensor y = (at::matmul(a, w(p + n + ".weight").t()) + w(p + n + ".bias")).view({T, heads, D});
            return y;
        };
        at::Tensor q = proj("q_proj", Nq), k = proj("k_proj", Nkv), v = proj("v_proj", Nkv);
        if (qk_norm) {
            q = rms(q, w(p + "q_norm.weight"));
            k = rms(k, w(p + "k_norm.weight"));
        }
        q = rope(q);
        k = rope(k);
        at::Tensor out = at::zeros({T, Nq, D}, a.options());
        for (int64_t hq = 0; hq < Nq; ++hq) {
            const int64_t hk = hq / (Nq / Nkv);
            for (int64_t t = 0; t < T; ++t) {
                at::Tensor s = at::mv(k.narrow(0, 0, t + 1).select(1, hk), q[t][hq]) / std::sqrt(static_cast<double>(D));  // [t+1]
                at::Tensor pr = at::softmax(s, 0);
                out[t][hq] = at::mv(v.narrow(0, 0, t + 1).select(1, hk).t(), pr);
            }
        }
        return at::matmul(out.view({T, Nq * D}), w(p + "o_proj.weight").t());
    }

    at::Tensor swiglu(const at::Tensor & x, const std::string & p) const {  // [T,H] -> [T,H]
        at::Tensor g = at::matmul(x, w(p + "gate_proj.weight").t()), u = at::matmul(x, w(p + "up_proj.weight").t());
        return at::matmul(g / (1.0 + at::exp(-g)) * u, w(p + "down_proj.weight").t());
    }

    at::Tensor moe(const at::Tensor & m, const std::string & p) const {  // m [T,H] -> [T,H]
        at::Tensor router = w(p + "gate.weight");
        const std::vector<double> bias = to_vec(w(p + "gate.e_score_correction_bias"));
        at::Tensor out = swiglu(m, p + "shared_experts.");
        for (int64_t t = 0; t < m.size(0); ++t) {
            const std::vector<double> score = to_vec(at::sigmoid(at::mv(router, m[t])));
            Routed r = brute_route(score, bias, G, TG, K, true, scale);
            for (size_t j = 0; j < r.experts.size(); ++j)
                out[t] += swiglu(m[t].unsqueeze(0), p + "experts." + std::to_string(r.experts[j]) + ".")[0] * r.weights[j];
        }
        return out;
    }

    std::map<std::pair<Site, int>, at::Tensor> run(const at::Tensor & ids, int layers) const {
        std::map<std::pair<Site, int>, std::vector<at::Tensor>> rows;
        at::Tensor embed = w("model.embed_tokens.weight");
        for (int64_t b = 0; b < ids.size(0); ++b) {
            at::Tensor h = embed.index_select(0, ids[b]);  // [T,H]
            for (int l = 0; l < layers; ++l) {
                const std::string p = "model.layers." + std::to_string(l) + ".";
                at::Tensor a = rms(h, w(p + "input_layernorm.weight"));
                rows[{Site::LnAttn, l}].push_back(a);
                h = h + attention(a, p + "self_attn.");
                at::Tensor m = rms(h, w(p + "post_attention_layernorm.weight"));
                rows[{Site::LnMlp, l}].push_back(m);
                h = h + (l == 0 ? swiglu(m, p + "mlp.") : moe(m, p + "mlp."));  // first_k_dense_replace 1
                rows[{Site::Residual, l}].push_back(h);
            }
        }
        std::map<std::pair<Site, int>, at::Tensor> out;
        for (auto & [k, v] : rows) out[k] = at::stack(v, 0);
        return out;
    }
};

// config.json of zai-org/GLM-4.5-Air as released (the keys the extractor reads; docs/model-math.md#glm4_moe).
nlohmann::json glm45_air() {
    return nlohmann::json::parse(R"({"architectures":["Glm4MoeForCausalLM"],"model_type":"glm4_moe","vocab_size":151552,
        "hidden_size":4096,"intermediate_size":10944,"num_hidden_layers":46,"num_attention_heads":96,
        "num_key_value_heads":8,"head_dim":128,"partial_rotary_factor":0.5,"attention_bias":true,"use_qk_norm":false,
        "moe_intermediate_size":1408,"n_routed_experts":128,"n_shared_experts":1,"num_experts_per_tok":8,
        "first_k_dense_replace":1,"n_group":1,"topk_group":1,"norm_topk_prob":true,"routed_scaling_factor":1.0,
        "num_nextn_predict_layers":1,"max_position_embeddings":131072,"rms_norm_eps":1e-05,"rope_theta":1000000,
        "rope_scaling":null,"tie_word_embeddings":false,"hidden_act":"silu","torch_dtype":"bfloat16"})");
}

std::string parse_error(const nlohmann::json & j) {
    try {
        (void)find_family("glm4_moe").parse_config(parse_hf_config(j, "/ckpt/config.json"));
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        return e.what();
    }
    return "";
}

// Captures stderr (where common/log writes) for the duration of a call.
std::string stderr_of(const std::string & path, const std::function<void()> & f) {
    std::fflush(nullptr);
    const int saved = ::dup(STDERR_FILENO);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
    f();
    std::fflush(nullptr);
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
    return tests::read_file(path);
}

}  // namespace

TEST_CASE("glm4_moe router: group-limited sigmoid top-k equals a brute force over all group and expert subsets") {
    at::manual_seed(13);
    const int64_t N = 64, H = 8, E = 12;
    at::Tensor x = at::randn({N, H}), router = at::randn({E, H});
    struct Case {
        int64_t G, TG, K;
        bool renorm;
        double scale, bias_scale;
    };
    // Groups of 3 and 2, some or all kept; a bias larger than the scores' spread (so it changes the
    // choice and makes some choices negative: then a masked expert's 0 can win, as in HF); no bias.
    for (const Case & c : {Case{4, 2, 3, true, 2.5, 0.6}, Case{6, 3, 4, false, 1.0, 0.6}, Case{3, 1, 2, true, 1.0, 0.0},
                           Case{4, 4, 3, true, 1.5, 0.6}, Case{1, 1, 5, true, 1.0, 0.3}}) {
        INFO("n_group " << c.G << " topk_group " << c.TG << " top_k " << c.K << " renorm " << c.renorm);
        at::Tensor bias = at::randn({E}) * c.bias_scale;
        const ops::MoeOptions opt{.top_k = c.K, .renormalise = c.renorm, .sigmoid_grouped = true, .n_group = c.G,
                                  .topk_group = c.TG, .routed_scaling = c.scale};
        auto [top_w, top_i] = ops::route_sigmoid_grouped(x, router, bias, opt);
        REQUIRE((top_w.scalar_type() == at::kFloat));
        REQUIRE((top_i.sizes() == at::IntArrayRef{N, c.K}));
        int masked_wins = 0;
        for (int64_t n = 0; n < N; ++n) {
            const std::vector<double> score = to_vec(at::sigmoid(at::mv(router.to(at::kDouble), x[n].to(at::kDouble))));
            Routed want = brute_route(score, to_vec(bias), c.G, c.TG, c.K, c.renorm, c.scale);
            auto [idx, order] = at::sort(top_i[n]);
            std::vector<int64_t> got(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + c.K);
            CHECK(got == want.experts);
            at::Tensor w_sorted = top_w[n].index_select(0, order);
            for (int64_t j = 0; j < c.K; ++j) CHECK(w_sorted[j].item<double>() == doctest::Approx(want.weights[static_cast<size_t>(j)]).epsilon(1e-5));
            const std::vector<double> b = to_vec(bias);
            for (int64_t e : want.experts) masked_wins += score[static_cast<size_t>(e)] + b[static_cast<size_t>(e)] < 0;
        }
        if (c.bias_scale == 0.0) CHECK(masked_wins == 0);
    }
    // The bias steers the choice only: with it the chosen experts differ for some tokens, and the
    // weights are still the unbiased scores.
    const ops::MoeOptions opt{.top_k = 3, .renormalise = false, .sigmoid_grouped = true, .n_group = 4, .topk_group = 2};
    at::Tensor bias = at::randn({E}) * 0.6;
    auto [w_b, i_b] = ops::route_sigmoid_grouped(x, router, bias, opt);
    auto [w_0, i_0] = ops::route_sigmoid_grouped(x, router, at::Tensor(), opt);
    CHECK_FALSE(at::equal(std::get<0>(at::sort(i_b, 1)), std::get<0>(at::sort(i_0, 1))));
    CHECK(at::allclose(w_b, at::sigmoid(at::matmul(x, router.t())).gather(1, i_b)));
}

TEST_CASE("glm4_moe moe: sigmoid-routed dispatch equals a per-token brute force, any chunking") {
    at::manual_seed(7);
    const int64_t N = 20, H = 8, E = 8, I = 6, K = 3;
    ops::MoeWeights w;
    w.router = at::randn({E, H});
    w.score_bias = at::randn({E}) * 0.3;
    w.gate_up = at::randn({E, 2 * I, H}) * 0.5;
    w.down = at::randn({E, H, I}) * 0.5;
    at::Tensor m = at::randn({2, N / 2, H});
    const ops::MoeOptions opt{.top_k = K, .renormalise = true, .sigmoid_grouped = true, .n_group = 4, .topk_group = 2,
                              .routed_scaling = 2.5};
    at::Tensor got = ops::moe(m, w, opt);
    at::Tensor x = m.reshape({N, H});
    for (int64_t n = 0; n < N; ++n) {
        Routed r = brute_route(to_vec(at::sigmoid(at::mv(w.router.to(at::kDouble), x[n].to(at::kDouble)))), to_vec(w.score_bias), 4, 2,
                               K, true, 2.5);
        at::Tensor y = at::zeros({H}, at::kDouble);
        for (size_t j = 0; j < r.experts.size(); ++j) {
            const int64_t e = r.experts[j];
            at::Tensor gu = at::mv(w.gate_up[e].to(at::kDouble), x[n].to(at::kDouble));
            at::Tensor act = at::silu(gu.narrow(0, 0, I)) * gu.narrow(0, I, I);
            y += r.weights[j] * at::mv(w.down[e].to(at::kDouble), act);
        }
        CHECK(at::allclose(got.reshape({N, H})[n].to(at::kDouble), y, 1e-4, 1e-5));
    }
}

TEST_CASE("glm4_moe: the forward (dense layer 0, MoE layer 1 with shared expert) matches an fp64 reference within 1e-5") {
    for (bool qk_norm : {false, true}) {
        INFO("use_qk_norm " << qk_norm);
        tests::TempDir dir;
        FixtureOptions fx = glm_fixture(dir / "m");
        fx.qk_norm = qk_norm;
        write_fixture(fx);
        const std::string ids_path = tests::write_ids(dir / "ids.json", 40, 128);
        const int64_t T = 12;  // tests::run_collect's windows
        auto got = run_all(dir / "m", ids_path);
        REQUIRE(got.got.size() == 6);
        const auto cfg = nlohmann::json::parse(tests::read_file(dir / "m/config.json"));
        CHECK(cfg["rope_parameters"]["partial_rotary_factor"] == 0.5);
        SafetensorsFile f = SafetensorsFile::open(dir / "m/model.safetensors");
        CHECK(f.contains("model.layers.0.mlp.gate_proj.weight"));
        CHECK_FALSE(f.contains("model.layers.0.mlp.gate.weight"));
        CHECK(f.contains("model.layers.1.mlp.shared_experts.down_proj.weight"));
        CHECK(f.contains("model.layers.1.self_attn.q_proj.bias"));
        CHECK_FALSE(f.contains("model.layers.1.self_attn.o_proj.bias"));
        CHECK(f.contains("model.layers.1.self_attn.q_norm.weight") == qk_norm);
        Reference ref{f, 64, 4, 2, 16, 8, 2, 4, 2, cfg["rms_norm_eps"].get<double>(),
                      cfg["rope_parameters"]["rope_theta"].get<double>(), cfg["routed_scaling_factor"].get<double>(), qk_norm};
        at::Tensor ids = (at::arange(0, 2 * T, at::kLong) * 7 + 3).remainder(128).view({2, T});
        auto want = ref.run(ids, 2);
        for (const auto & [k, t] : want) {
            INFO("layer " << k.second << " " << site_name(k.first));
            REQUIRE(got.got.count(k));
            const double err = rel_err(got.got.at(k), t);
            INFO("relative error " << err);
            CHECK(err <= 1e-5);
        }
        // The shared expert is there: without it the reference's layer-1 residual is off.
        const double shared_norm = ref.swiglu(want.at({Site::LnMlp, 1})[0], "model.layers.1.mlp.shared_experts.").abs().max().item<double>();
        CHECK(shared_norm > 1e-3 * want.at({Site::Residual, 1}).abs().max().item<double>());
    }
}

TEST_CASE("extract --save-routing: each MoE layer's expert choice per token, the brute-force group-limited top-k of the saved ln_mlp") {
    tests::TempDir dir;
    write_fixture(glm_fixture(dir / "m"));
    ExtractOptions o;
    o.model_dir = dir / "m";
    o.load.device = "cpu";
    o.load.dtype = at::kFloat;
    o.load.show_progress = false;
    o.input.tokens_file = tests::write_ids(dir / "ids.json", 40, 128);
    o.input.seq_len = 12;
    o.input.num_sequences = 3;
    o.input.batch_size = 2;  // a full batch and a short one
    o.out_dir = dir / "out";
    o.save_routing = true;
    (void)run_extraction(o);
    SafetensorsFile model = SafetensorsFile::open(dir / "m/model.safetensors");
    const at::Tensor router = model.load("model.layers.1.mlp.gate.weight").to(at::kDouble);
    const std::vector<double> bias = to_vec(model.load("model.layers.1.mlp.gate.e_score_correction_bias"));
    int64_t tokens = 0;
    for (const char * name : {"batch_00000.safetensors", "batch_00001.safetensors"}) {
        INFO(name);
        SafetensorsFile f = SafetensorsFile::open(dir / (std::string("out/activations/") + name));
        CHECK_FALSE(f.contains("layer_0_experts"));  // the dense first layer routes nothing
        REQUIRE(f.contains("layer_1_experts"));
        const at::Tensor experts = f.load("layer_1_experts");
        const at::Tensor m = f.load("layer_1_ln_mlp").to(at::kDouble);
        REQUIRE((experts.scalar_type() == at::kInt));
        REQUIRE(experts.dim() == 3);
        CHECK(experts.size(0) == m.size(0));
        CHECK(experts.size(1) == 12);
        CHECK(experts.size(2) == 2);
        for (int64_t b = 0; b < m.size(0); ++b)
            for (int64_t t = 0; t < m.size(1); ++t) {
                const Routed want = brute_route(to_vec(at::sigmoid(at::mv(router, m[b][t]))), bias, 4, 2, 2, true, 1.0);
                std::vector<int64_t> got = {experts[b][t][0].item<int64_t>(), experts[b][t][1].item<int64_t>()};
                std::sort(got.begin(), got.end());
                CHECK(got == want.experts);
                ++tokens;
            }
    }
    CHECK(tokens == 3 * 12);
}

TEST_CASE("glm4_moe: per-expert and fused layouts, with or without MTP layers, give identical captures, MTP with an info line") {
    tests::TempDir dir;
    const std::string ids = tests::write_ids(dir / "ids.json", 40, 128);
    FixtureOptions base = glm_fixture(dir / "base");
    write_fixture(base);
    FixtureOptions fused = glm_fixture(dir / "fused");
    fused.fused_experts = true;
    fused.mtp_layers = 1;
    write_fixture(fused);
    FixtureOptions mtp = glm_fixture(dir / "mtp");
    mtp.mtp_layers = 1;
    mtp.shards = 3;
    write_fixture(mtp);

    SafetensorsFile ff = SafetensorsFile::open(dir / "fused/model.safetensors");
    CHECK(ff.info("model.layers.1.mlp.experts.gate_up_proj").shape == std::vector<int64_t>{8, 32, 64});
    CHECK(ff.contains("model.layers.2.eh_proj.weight"));
    CHECK(ff.contains("model.layers.2.mlp.experts.down_proj"));
    CHECK(ff.contains("model.layers.2.mlp.gate.e_score_correction_bias"));
    CHECK(nlohmann::json::parse(tests::read_file(dir / "mtp/config.json"))["num_nextn_predict_layers"] == 1);

    auto a = run_all(dir / "base", ids);
    tests::CollectSink b, c;
    const std::string log = stderr_of(dir / "err.txt", [&] {
        b = run_all(dir / "fused", ids);
        c = run_all(dir / "mtp", ids);
    });
    CHECK(log.find("num_nextn_predict_layers 1: the multi-token-prediction layer (model.layers.2.*) is not part of the forward "
                   "pass and not loaded") != std::string::npos);
    REQUIRE(a.got.size() == 6);
    for (const auto & [k, t] : a.got) {
        INFO("layer " << k.second << " " << site_name(k.first));
        CHECK(at::equal(t, b.got.at(k)));
        CHECK(at::equal(t, c.got.at(k)));
    }
    // inspect checks the headers of both and ignores the MTP layer.
    for (const char * d : {"fused", "mtp"}) {
        auto [code, out] = tests::extract_cli({"inspect", dir / d, "--json"}, dir / "out.json");
        REQUIRE(code == 0);
        auto j = nlohmann::json::parse(out);
        CHECK(j["weights_checked"] == "headers");
        CHECK(j["layers"] == 2);
    }
}

TEST_CASE("glm4_moe: inspect reports GLM-4.5-Air's 106.9B parameters, and the estimate equals the bytes loaded") {
    tests::TempDir dir;
    std::filesystem::create_directories(dir / "air");
    tests::write_file(dir / "air/config.json", glm45_air().dump());
    auto [code, out] = tests::extract_cli({"inspect", dir / "air", "--json"}, dir / "out.json");
    REQUIRE(code == 0);
    auto j = nlohmann::json::parse(out);
    CHECK(j["model_type"] == "glm4_moe");
    CHECK(j["layers"] == 46);
    CHECK(j["moe_layers"] == 45);
    CHECK(j["experts"] == 128);
    CHECK(j["experts_per_token"] == 8);
    // Attention 2*4096*12288 + 2*4096*1024 + biases 12288 + 2*1024; norms 8192; layer 0 dense
    // 3*4096*10944; layers 1-45: router 128*4096, score bias 128, 128 experts of 3*4096*1408 and the
    // shared one; embedding and lm_head 151552*4096 each, the final norm.
    CHECK(j["params_total"].get<uint64_t>() == 106852251264ull);
    // 8 routed experts a token, the shared expert, the dense layer: 13.4B (12B without embedding and head).
    CHECK(j["params_active"].get<uint64_t>() == 13424129664ull);
    // Loaded (no lm_head, no final norm): bf16, the score biases in fp32.
    CHECK(j["weights_loaded_bytes_bf16"].get<uint64_t>() == 212462991872ull);

    // On a fixture the estimate is exactly what load_model allocates, and inspect agrees with it.
    for (bool fused : {false, true}) {
        INFO("fused " << fused);
        FixtureOptions fx = glm_fixture(dir / (fused ? "fx-fused" : "fx"));
        fx.fused_experts = fused;
        fx.qk_norm = true;
        fx.mtp_layers = 1;
        write_fixture(fx);
        LoadOptions lo;
        lo.device = "cpu";
        lo.dtype = at::kBFloat16;
        lo.show_progress = false;
        Model m = load_model(fx.out_dir, lo);
        uint64_t bytes = static_cast<uint64_t>(m.weights.embed.nbytes());
        for (LayerWeights lw : m.weights.layers)
            for (at::Tensor * t : lw.all())
                if (t->defined()) bytes += static_cast<uint64_t>(t->nbytes());
        CHECK(bytes == m.estimate.total_bytes);
        CHECK((m.weights.layers[1].moe.score_bias.scalar_type() == at::kFloat));
        CHECK_FALSE(m.weights.layers[0].moe.router.defined());
        CHECK(m.weights.layers[0].mlp.gate.weight.defined());
        auto [c2, o2] = tests::extract_cli({"inspect", fx.out_dir, "--json"}, dir / "out2.json");
        REQUIRE(c2 == 0);
        auto k = nlohmann::json::parse(o2);
        CHECK(k["weights_loaded_bytes_bf16"].get<uint64_t>() == bytes);
        // Exactly: attention with biases and q/k norms, norms, dense layer 0, MoE layer 1 (router,
        // bias, 8 experts, shared expert); embedding, lm_head, final norm.
        const uint64_t attn = 2 * 64 * 64 + 2 * 32 * 64 + 64 + 2 * 32 + 2 * 16 + 2 * 64;
        const uint64_t moe = 8 * 64 + 8 + 8 * 3 * 64 * 16 + 3 * 64 * 16;
        CHECK(k["params_total"].get<uint64_t>() == attn + 3 * 64 * 48 + attn + moe + 2 * 128 * 64 + 64);
        CHECK(k["params_active"].get<uint64_t>() == attn + 3 * 64 * 48 + attn + moe - 6 * 3 * 64 * 16 + 2 * 128 * 64 + 64);
    }
}

TEST_CASE("glm4_moe: configs with bad values are refused naming the file and key") {
    auto with = [](std::initializer_list<std::pair<const char *, nlohmann::json>> kv) {
        nlohmann::json j = glm45_air();
        for (const auto & [k, v] : kv) {
            if (v.is_discarded()) j.erase(k);
            else j[k] = v;
        }
        return j;
    };
    const nlohmann::json drop = nlohmann::json(nlohmann::json::value_t::discarded);
    ModelConfig c = find_family("glm4_moe").parse_config(parse_hf_config(glm45_air(), "/ckpt/config.json"));
    CHECK(c.n_experts == 128);
    CHECK(c.top_k == 8);
    CHECK(c.expert_intermediate == 1408);
    CHECK(c.shared_intermediate == 1408);
    CHECK(c.qkv_bias);
    CHECK_FALSE(c.o_bias);
    CHECK((c.qk_norm == ops::QkNorm::None));
    CHECK(c.rope.inv_freq.size(0) == 32);  // rotary width 64 of head_dim 128
    CHECK(c.rope.inv_freq[1].item<double>() == doctest::Approx(std::pow(1e6, -2.0 / 64)).epsilon(1e-6));
    CHECK_FALSE(c.layer_is_moe[0]);
    CHECK(c.layer_is_moe[1]);
    CHECK(c.n_moe_layers() == 45);
    // Keys left out take Glm4MoeConfig's defaults: rotary factor 0.5, 1 shared expert, 1 dense layer.
    ModelConfig d = find_family("glm4_moe").parse_config(parse_hf_config(
        with({{"partial_rotary_factor", drop}, {"n_shared_experts", drop}, {"first_k_dense_replace", drop}, {"use_qk_norm", drop}}),
        "c.json"));
    CHECK(d.rope.inv_freq.size(0) == 32);
    CHECK(d.shared_intermediate == 1408);
    CHECK(d.n_moe_layers() == 45);
    CHECK(find_family("glm4_moe").parse_config(parse_hf_config(with({{"partial_rotary_factor", 1.0}}), "c.json")).rope.inv_freq.size(0) == 64);
    CHECK(find_family("glm4_moe").parse_config(parse_hf_config(with({{"first_k_dense_replace", 3}}), "c.json")).n_moe_layers() == 43);

    std::string e = parse_error(with({{"n_group", 3}}));
    CHECK(e.find("/ckpt/config.json") != std::string::npos);
    CHECK(e.find("key n_group: 3 does not divide n_routed_experts 128") != std::string::npos);
    CHECK(parse_error(with({{"n_group", 128}})).find("fewer than 2 experts a group") != std::string::npos);
    CHECK(parse_error(with({{"n_group", 0}})).find("key n_group: 0 is outside") != std::string::npos);
    CHECK(parse_error(with({{"n_group", 8}, {"topk_group", 9}})).find("key topk_group: 9 is more than n_group (8)") != std::string::npos);
    CHECK(parse_error(with({{"n_group", 8}, {"topk_group", 1}, {"num_experts_per_tok", 17}})).find("key num_experts_per_tok: 17 is more than the 16") !=
          std::string::npos);
    CHECK(parse_error(with({{"num_experts_per_tok", 129}})).find("key num_experts_per_tok") != std::string::npos);
    CHECK(parse_error(with({{"n_routed_experts", 0}})).find("key n_routed_experts") != std::string::npos);
    CHECK(parse_error(with({{"n_routed_experts", 4096}})).find("experts in all") != std::string::npos);
    CHECK(parse_error(with({{"routed_scaling_factor", -1.0}})).find("key routed_scaling_factor") != std::string::npos);
    CHECK(parse_error(with({{"routed_scaling_factor", "2.5"}})).find("routed_scaling_factor") != std::string::npos);
    CHECK(parse_error(with({{"n_shared_experts", -1}})).find("key n_shared_experts") != std::string::npos);
    CHECK(parse_error(with({{"partial_rotary_factor", 0.01}})).find("partial_rotary_factor") != std::string::npos);
    CHECK(parse_error(with({{"first_k_dense_replace", 2000}})).find("key first_k_dense_replace") != std::string::npos);
    CHECK(parse_error(with({{"num_nextn_predict_layers", -1}})).find("key num_nextn_predict_layers") != std::string::npos);
    CHECK(parse_error(with({{"use_qk_norm", 1}})).find("use_qk_norm") != std::string::npos);
    CHECK(parse_error(with({{"first_k_dense_replace", 1}, {"intermediate_size", 0}})).find("key intermediate_size") != std::string::npos);
}
