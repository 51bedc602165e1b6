// Mixtral (families/mixtral.cpp) on CPU: both checkpoint layouts give identical captures; the
// forward against a brute-force reference written here (naive RMSNorm, RoPE, sliding-window softmax
// attention and a per-token top-k router/expert loop, in fp64); inspect's figures for the released
// Mixtral-8x7B config; configs with bad values refused naming the file and key.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"
#include "extractor/cli/cli.h"
#include "extractor/families/family.h"
#include "extractor/placement.h"
#include "tests/extractor/test_util.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {

FixtureOptions mixtral_fixture(const std::string & dir) {
    FixtureOptions f;
    f.family = "mixtral";
    f.out_dir = dir;
    f.layers = 2;
    f.hidden = 64;
    f.heads = 4;
    f.kv_heads = 2;
    f.head_dim = 16;
    f.intermediate = 24;
    f.experts = 4;
    f.top_k = 2;
    f.sliding_window = 5;
    return f;
}

// 2 sequences of T tokens in one batch, every site of every layer, on the CPU in f32.
tests::CollectSink run_all(const std::string & model_dir, const std::string & ids, int64_t T) {
    ExtractOptions o;
    o.model_dir = model_dir;
    o.load.device = "cpu";
    o.load.dtype = at::kFloat;
    o.load.show_progress = false;
    o.input.tokens_file = ids;
    o.input.seq_len = T;
    o.input.num_sequences = 2;
    o.input.batch_size = 2;
    o.sites = {Site::LnAttn, Site::LnMlp, Site::Residual};
    tests::CollectSink sink;
    (void)run_extraction(o, {&sink});
    return sink;
}

double rel_err(const at::Tensor & ours, const at::Tensor & ref) {
    at::Tensor a = ours.to(at::kDouble), b = ref.to(at::kDouble);
    return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-30);
}

// ---- brute-force reference: fp64, one token / head / expert at a time --------------------------

struct Reference {
    const SafetensorsFile & f;
    int64_t H, Nq, Nkv, D, E, K;
    double eps, theta;
    std::optional<int64_t> window;

    at::Tensor w(const std::string & name) const { return f.load(name).to(at::kDouble); }

    at::Tensor rms(const at::Tensor & x, const at::Tensor & g) const {  // x [T,H]
        at::Tensor out = at::empty_like(x);
        for (int64_t t = 0; t < x.size(0); ++t) {
            double ss = 0;
            for (int64_t i = 0; i < H; ++i) ss += x[t][i].item<double>() * x[t][i].item<double>();
            const double r = 1.0 / std::sqrt(ss / static_cast<double>(H) + eps);
            out[t] = x[t] * r * g;
        }
        return out;
    }

    // Rotate-half RoPE of one head vector at position pos.
    at::Tensor rope(const at::Tensor & v, int64_t pos) const {
        at::Tensor out = v.clone();
        for (int64_t i = 0; i < D / 2; ++i) {
            const double ang = static_cast<double>(pos) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(D));
            const double x1 = v[i].item<double>(), x2 = v[i + D / 2].item<double>();
            out[i] = x1 * std::cos(ang) - x2 * std::sin(ang);
            out[i + D / 2] = x2 * std::cos(ang) + x1 * std::sin(ang);
        }
        return out;
    }

    at::Tensor attention(const at::Tensor & a, const std::string & p) const {  // a [T,H] -> [T,H]
        const int64_t T = a.size(0);
        at::Tensor q = at::matmul(a, w(p + "q_proj.weight").t()), k = at::matmul(a, w(p + "k_proj.weight").t()),
                   v = at::matmul(a, w(p + "v_proj.weight").t());
        at::Tensor out = at::zeros({T, Nq * D}, a.options());
        for (int64_t hq = 0; hq < Nq; ++hq) {
            const int64_t hk = hq / (Nq / Nkv);
            for (int64_t t = 0; t < T; ++t) {
                at::Tensor qt = rope(q[t].narrow(0, hq * D, D), t);
                const int64_t first = window ? std::max<int64_t>(0, t - *window + 1) : 0;
                std::vector<double> s;
                double mx = -1e300;
                for (int64_t j = first; j <= t; ++j) {
                    at::Tensor kj = rope(k[j].narrow(0, hk * D, D), j);
                    double dot = 0;
                    for (int64_t d = 0; d < D; ++d) dot += qt[d].item<double>() * kj[d].item<double>();
                    s.push_back(dot / std::sqrt(static_cast<double>(D)));
                    mx = std::max(mx, s.back());
                }
                double z = 0;
                for (double & x : s) z += (x = std::exp(x - mx));
                for (int64_t j = first; j <= t; ++j)
                    out[t].narrow(0, hq * D, D) += v[j].narrow(0, hk * D, D) * (s[static_cast<size_t>(j - first)] / z);
            }
        }
        return at::matmul(out, w(p + "o_proj.weight").t());
    }

    at::Tensor moe(const at::Tensor & m, const std::string & p) const {  // m [T,H] -> [T,H]
        at::Tensor router = w(p + "gate.weight");  // [E,H]
        at::Tensor out = at::zeros_like(m);
        for (int64_t t = 0; t < m.size(0); ++t) {
            at::Tensor logits = at::mv(router, m[t]);  // [E]
            double mx = -1e300, z = 0;
            for (int64_t e = 0; e < E; ++e) mx = std::max(mx, logits[e].item<double>());
            std::vector<double> prob(static_cast<size_t>(E));
            for (int64_t e = 0; e < E; ++e) z += (prob[static_cast<size_t>(e)] = std::exp(logits[e].item<double>() - mx));
            for (double & x : prob) x /= z;
            std::vector<int64_t> chosen;  // top-k by repeated arg-max
            std::vector<bool> taken(static_cast<size_t>(E), false);
            double sum = 0;
            for (int64_t r = 0; r < K; ++r) {
                int64_t best = -1;
                for (int64_t e = 0; e < E; ++e)
                    if (!taken[static_cast<size_t>(e)] && (best < 0 || prob[static_cast<size_t>(e)] > prob[static_cast<size_t>(best)])) best = e;
                taken[static_cast<size_t>(best)] = true;
                chosen.push_back(best);
                sum += prob[static_cast<size_t>(best)];
            }
            for (int64_t e : chosen) {
                const std::string ep = p + "experts." + std::to_string(e) + ".";
                at::Tensor g = at::mv(w(ep + "w1.weight"), m[t]), u = at::mv(w(ep + "w3.weight"), m[t]);
                at::Tensor act = g / (1.0 + at::exp(-g)) * u;  // silu(gate) * up
                out[t] += at::mv(w(ep + "w2.weight"), act) * (prob[static_cast<size_t>(e)] / sum);
            }
        }
        return out;
    }

    // Per site and layer, [B,T,H] fp64.
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
                h = h + moe(m, p + "block_sparse_moe.");
                rows[{Site::Residual, l}].push_back(h);
            }
        }
        std::map<std::pair<Site, int>, at::Tensor> out;
        for (auto & [k, v] : rows) out[k] = at::stack(v, 0);
        return out;
    }
};

using tests::extract_cli;

// config.json of mistralai/Mixtral-8x7B-v0.1 as released (the keys the extractor reads).
nlohmann::json mixtral_8x7b() {
    return nlohmann::json::parse(R"({"architectures":["MixtralForCausalLM"],"model_type":"mixtral","vocab_size":32000,
        "hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
        "num_key_value_heads":8,"num_local_experts":8,"num_experts_per_tok":2,"max_position_embeddings":32768,
        "rms_norm_eps":1e-05,"rope_theta":1000000.0,"sliding_window":null,"tie_word_embeddings":false,
        "hidden_act":"silu","torch_dtype":"bfloat16"})");
}

std::string parse_error(const nlohmann::json & j) {
    try {
        (void)find_family("mixtral").parse_config(parse_hf_config(j, "/ckpt/config.json"));
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        return e.what();
    }
    return "";
}

}  // namespace

TEST_CASE("mixtral: the per-expert and the fused v5 checkpoint layouts hold the same values and give identical captures") {
    tests::TempDir dir;
    FixtureOptions legacy = mixtral_fixture(dir / "legacy");
    legacy.plants = {parse_plant("7@0")};
    write_fixture(legacy);
    FixtureOptions fused = legacy;
    fused.out_dir = dir / "fused";
    fused.fused_experts = true;
    write_fixture(fused);

    SafetensorsFile lf = SafetensorsFile::open(dir / "legacy/model.safetensors");
    SafetensorsFile ff = SafetensorsFile::open(dir / "fused/model.safetensors");
    CHECK(lf.contains("model.layers.1.block_sparse_moe.gate.weight"));
    CHECK(lf.contains("model.layers.1.block_sparse_moe.experts.3.w2.weight"));
    CHECK_FALSE(lf.contains("model.layers.1.mlp.experts.gate_up_proj"));
    CHECK_FALSE(ff.contains("model.layers.1.block_sparse_moe.gate.weight"));
    // embed + per layer: q,k,v,o, 2 norms, router, gate_up, down; + final norm and lm_head
    CHECK(ff.names().size() == 1 + 2 * (4 + 2 + 3) + 2);
    REQUIRE(ff.info("model.layers.1.mlp.experts.gate_up_proj").shape == std::vector<int64_t>{4, 48, 64});
    REQUIRE(ff.info("model.layers.1.mlp.experts.down_proj").shape == std::vector<int64_t>{4, 64, 24});
    // v5 order: gate (w1) rows, then up (w3) rows; down is w2 stacked.
    at::Tensor gu = ff.load("model.layers.1.mlp.experts.gate_up_proj");
    at::Tensor down = ff.load("model.layers.1.mlp.experts.down_proj");
    for (int e = 0; e < 4; ++e) {
        const std::string p = "model.layers.1.block_sparse_moe.experts." + std::to_string(e) + ".";
        CHECK(at::equal(gu[e].narrow(0, 0, 24), lf.load(p + "w1.weight")));
        CHECK(at::equal(gu[e].narrow(0, 24, 24), lf.load(p + "w3.weight")));
        CHECK(at::equal(down[e], lf.load(p + "w2.weight")));
    }
    CHECK(at::equal(ff.load("model.layers.0.mlp.gate.weight"), lf.load("model.layers.0.block_sparse_moe.gate.weight")));

    const std::string ids = tests::write_ids(dir / "ids.json", 40, 128);
    auto a = run_all(dir / "legacy", ids, 16), b = run_all(dir / "fused", ids, 16);
    REQUIRE(a.got.size() == 6);
    REQUIRE(b.got.size() == 6);
    for (const auto & [k, t] : a.got) {
        INFO("layer " << k.second << " " << site_name(k.first));
        CHECK(at::equal(t, b.got.at(k)));
    }
    // The planted gain shows at dim 7 of layer 0's ln_attn on most tokens, in both layouts.
    at::Tensor planted = a.got.at({Site::LnAttn, 0}).select(-1, 7).abs();
    CHECK(planted.ge(6).sum().item<int64_t>() >= 20);  // of 32 tokens
    CHECK(a.got.at({Site::LnAttn, 1}).abs().max().item<double>() < 6);  // layer 1 unplanted
}

TEST_CASE("mixtral: the forward matches a brute-force fp64 reference (sliding window 5, top-2 of 4, GQA) within 1e-5") {
    tests::TempDir dir;
    write_fixture(mixtral_fixture(dir / "m"));
    const std::string ids_path = tests::write_ids(dir / "ids.json", 40, 128);
    const int64_t T = 16;
    auto got = run_all(dir / "m", ids_path, T);
    REQUIRE(got.got.size() == 6);

    const auto cfg = nlohmann::json::parse(tests::read_file(dir / "m/config.json"));
    SafetensorsFile f = SafetensorsFile::open(dir / "m/model.safetensors");
    Reference ref{f, 64, 4, 2, 16, 4, 2, cfg["rms_norm_eps"].get<double>(), cfg["rope_parameters"]["rope_theta"].get<double>(),
                  cfg["sliding_window"].get<int64_t>()};
    REQUIRE(ref.window.value_or(-1) == 5);
    // The same ids the run saw: windows 0 and 1 of the stream id_i = (7 i + 3) % 128.
    at::Tensor ids = (at::arange(0, 2 * T, at::kLong) * 7 + 3).remainder(128).view({2, T});
    auto want = ref.run(ids, 2);
    for (const auto & [k, t] : want) {
        INFO("layer " << k.second << " " << site_name(k.first));
        REQUIRE(got.got.count(k));
        const double err = rel_err(got.got.at(k), t);
        INFO("relative error " << err);
        CHECK(err <= 1e-5);
    }
    // The window matters: without it the reference differs after layer 0's attention, and the
    // first 5 tokens (which see no more than the window anyway) are the same.
    Reference full = ref;
    full.window.reset();
    auto no_window = full.run(ids, 1);
    CHECK(rel_err(got.got.at({Site::LnMlp, 0}), no_window.at({Site::LnMlp, 0})) > 1e-3);
    CHECK(rel_err(got.got.at({Site::LnMlp, 0}).narrow(1, 0, 5), no_window.at({Site::LnMlp, 0}).narrow(1, 0, 5)) <= 1e-5);
}

TEST_CASE("mixtral: inspect reports the released Mixtral-8x7B figures and checks either layout's headers") {
    tests::TempDir dir;
    std::filesystem::create_directories(dir / "8x7b");
    tests::write_file(dir / "8x7b/config.json", mixtral_8x7b().dump());
    auto [code, out] = extract_cli({"inspect", dir / "8x7b", "--json"}, dir / "out.json");
    REQUIRE(code == 0);
    auto j = nlohmann::json::parse(out);
    CHECK(j["model_type"] == "mixtral");
    CHECK(j["layers"] == 32);
    CHECK(j["kv_heads"] == 8);
    CHECK(j["head_dim"] == 128);
    CHECK(j["experts"] == 8);
    CHECK(j["experts_per_token"] == 2);
    CHECK(j["moe_layers"] == 32);
    // Per layer: attention 2*4096*4096 + 2*4096*1024, 2 norms, router 8*4096, experts 8*3*4096*14336;
    // plus embedding and lm_head 32000*4096 each and the final norm: 46.7 B (Mistral's published figure).
    CHECK(j["params_total"].get<uint64_t>() == 46702792704ull);
    // Two experts of eight per token: 12.9 B.
    CHECK(j["params_active"].get<uint64_t>() == 12879925248ull);
    // What run loads (no lm_head, no final norm) at 2 and 4 bytes a parameter.
    CHECK(j["weights_loaded_bytes_bf16"].get<uint64_t>() == 93143433216ull);
    CHECK(j["weights_loaded_bytes_f32"].get<uint64_t>() == 2 * 93143433216ull);
    CHECK(j["weights_checked"] == "none");

    // Headers of both layouts are checked against the config; the counts are the same.
    for (bool fused : {false, true}) {
        INFO("fused " << fused);
        FixtureOptions fx = mixtral_fixture(dir / (fused ? "fused" : "legacy"));
        fx.fused_experts = fused;
        write_fixture(fx);
        auto [c2, o2] = extract_cli({"inspect", fx.out_dir, "--json"}, dir / "out2.json");
        REQUIRE(c2 == 0);
        auto k = nlohmann::json::parse(o2);
        CHECK(k["weights_checked"] == "headers");
        CHECK(k["weights_tensors_checked"] == (fused ? 1 + 2 * 9 : 1 + 2 * (7 + 3 * 4)));
        // 2 layers: attention 4*64*64 (q/o: 64x64, k/v: 32x64 each -> 2*4096 + 2*2048), norms 128,
        // router 4*64, experts 4*3*64*24; embedding, lm_head 128*64 each, final norm 64.
        const uint64_t per_layer = 2 * 4096 + 2 * 2048 + 128 + 4 * 64 + 4 * 3 * 64 * 24;
        CHECK(k["params_total"].get<uint64_t>() == 2 * per_layer + 2 * 128 * 64 + 64);
        CHECK(k["params_active"].get<uint64_t>() == 2 * (per_layer - 2 * 3 * 64 * 24) + 2 * 128 * 64 + 64);
    }
    // A fused checkpoint missing a tensor fails the header check naming it (exit 2).
    {
        FixtureOptions fx = mixtral_fixture(dir / "broken");
        fx.fused_experts = true;
        write_fixture(fx);
        SafetensorsFile full = SafetensorsFile::open(dir / "broken/model.safetensors");
        std::vector<std::pair<std::string, at::Tensor>> keep;
        for (const auto & n : full.names())
            if (n != "model.layers.1.mlp.experts.down_proj") keep.emplace_back(n, full.load(n));
        write_safetensors(dir / "broken/model.safetensors.tmp", keep, {{"format", "pt"}});
        std::filesystem::rename(dir / "broken/model.safetensors.tmp", dir / "broken/model.safetensors");
        CHECK(extract_cli({"inspect", dir / "broken", "--json"}, dir / "out3.json").first == 2);
    }
}

TEST_CASE("mixtral: configs with bad values are refused naming the file and key") {
    auto with = [](std::initializer_list<std::pair<const char *, nlohmann::json>> kv) {
        nlohmann::json j = mixtral_8x7b();
        for (const auto & [k, v] : kv) {
            if (v.is_discarded()) j.erase(k);
            else j[k] = v;
        }
        return j;
    };
    const nlohmann::json drop = nlohmann::json(nlohmann::json::value_t::discarded);
    // The released config parses, with the values HF uses.
    ModelConfig c = find_family("mixtral").parse_config(parse_hf_config(mixtral_8x7b(), "/ckpt/config.json"));
    CHECK(c.n_experts == 8);
    CHECK(c.top_k == 2);
    CHECK(c.expert_intermediate == 14336);
    CHECK(c.norm_topk_prob);
    CHECK(c.rope.inv_freq[1].item<double>() == doctest::Approx(std::pow(1e6, -2.0 / 128)).epsilon(1e-6));  // theta 1e6
    CHECK(c.sliding_window.size() == 32);
    CHECK(std::none_of(c.sliding_window.begin(), c.sliding_window.end(), [](const auto & w) { return w.has_value(); }));
    CHECK(find_family("mixtral").parse_config(parse_hf_config(with({{"sliding_window", 4096}}), "c.json")).sliding_window[31].value_or(-1) == 4096);

    std::string e = parse_error(with({{"num_experts_per_tok", 3}, {"num_local_experts", 2}}));
    CHECK(e.find("/ckpt/config.json") != std::string::npos);
    CHECK(e.find("num_experts_per_tok: 3 must be between 1 and num_local_experts (2)") != std::string::npos);
    CHECK(parse_error(with({{"num_experts_per_tok", 0}})).find("num_experts_per_tok") != std::string::npos);
    CHECK(parse_error(with({{"num_local_experts", 0}})).find("num_local_experts: 0 experts") != std::string::npos);
    CHECK(parse_error(with({{"intermediate_size", 0}})).find("key intermediate_size") != std::string::npos);
    CHECK(parse_error(with({{"sliding_window", 0}})).find("key sliding_window") != std::string::npos);
    CHECK(parse_error(with({{"num_local_experts", 5000}})).find("num_local_experts") != std::string::npos);  // hf_limits
    CHECK(parse_error(with({{"num_local_experts", 4096}, {"num_hidden_layers", 17}})).find("experts in all") != std::string::npos);
    CHECK(parse_error(with({{"num_experts_per_tok", 2.0}})).find("must be an integer") != std::string::npos);
    CHECK(parse_error(with({{"num_key_value_heads", drop}, {"num_attention_heads", 12}})).find("num_key_value_heads") !=
          std::string::npos);
    // Absent keys take MixtralConfig's defaults (8 kv heads, 8 experts, top-2), not the generic ones.
    ModelConfig d = find_family("mixtral").parse_config(parse_hf_config(
        with({{"num_key_value_heads", drop}, {"num_local_experts", drop}, {"num_experts_per_tok", drop}}), "c.json"));
    CHECK(d.n_kv_heads == 8);
    CHECK(d.n_experts == 8);
    CHECK(d.top_k == 2);
}

TEST_CASE("mixtral: extract fixture --fused-experts --sliding-window writes the v5 layout and the window, other families refuse them") {
    tests::TempDir dir;
    auto [code, out] = extract_cli({"fixture", "--family", "mixtral", "--out", dir / "m", "--layers", "2", "--fused-experts",
                                    "--sliding-window", "4", "--plant", "3@0", "--json"},
                                   dir / "out.json");
    REQUIRE(code == 0);
    auto cfg = nlohmann::json::parse(tests::read_file(dir / "m/config.json"));
    CHECK(cfg["model_type"] == "mixtral");
    CHECK(cfg["sliding_window"] == 4);
    CHECK(cfg["num_local_experts"] == 8);
    SafetensorsFile f = SafetensorsFile::open(dir / "m/model.safetensors");
    CHECK(f.contains("model.layers.1.mlp.experts.gate_up_proj"));
    CHECK_FALSE(f.contains("model.layers.1.block_sparse_moe.experts.0.w1.weight"));
    CHECK(f.load("model.layers.0.input_layernorm.weight")[3].item<double>() == 50.0);
    REQUIRE(extract_cli({"fixture", "--family", "mixtral", "--out", dir / "n", "--json"}, dir / "out.json").first == 0);
    CHECK(nlohmann::json::parse(tests::read_file(dir / "n/config.json"))["sliding_window"].is_null());
    CHECK(extract_cli({"fixture", "--family", "llama", "--out", dir / "l", "--sliding-window", "4"}, dir / "out.json").first == 2);
    CHECK(extract_cli({"fixture", "--family", "llama", "--out", dir / "l", "--fused-experts"}, dir / "out.json").first == 2);
    CHECK(extract_cli({"fixture", "--family", "mixtral", "--out", dir / "z", "--sliding-window", "0"}, dir / "out.json").first == 2);
}
