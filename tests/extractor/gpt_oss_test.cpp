// gpt_oss (families/gpt_oss.cpp) and MXFP4 (mxfp4.h) on CPU: the decode against a brute-force
// reference (every byte, extreme scales, odd block counts), hostile packed shapes and dtypes; sink +
// sliding-window attention and the clamped-SwiGLU MoE block against brute force written here; the
// forward through packed experts = through --dequantize; inspect's figures for the released configs.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"
#include "extractor/cli/cli.h"
#include "extractor/families/family.h"
#include "extractor/model.h"
#include "extractor/mxfp4.h"
#include "extractor/ops.h"
#include "tests/extractor/test_util.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {

// The value a (code, scale byte) pair stands for, computed the slow way in float: e2m1 as sign,
// exponent and mantissa bits, times 2^(s-127) (s = 255 is 2^128 = inf in float, as transformers has it).
float brute_value(int code, int s) {
    const int sign = code >> 3, exp = (code >> 1) & 3, man = code & 1;
    const float mag = exp == 0 ? 0.5f * static_cast<float>(man) : std::ldexp(1.0f + 0.5f * static_cast<float>(man), exp - 1);
    const float scale = s == 255 ? std::numeric_limits<float>::infinity() : std::ldexp(1.0f, s - 127);
    return (sign ? -mag : mag) * scale;
}

bool same_value(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

FixtureOptions gpt_oss_fixture(const std::string & dir) {
    FixtureOptions f;
    f.family = "gpt_oss";
    f.out_dir = dir;
    f.layers = 3;               // sliding, full, sliding
    f.intermediate = 96;        // expert width: 3 MXFP4 blocks per down row (odd)
    f.experts = 6;
    f.top_k = 3;
    f.sliding_window = 5;
    return f;
}

tests::CollectSink run_gpt_oss(const std::string & dir, const std::string & ids, bool dequantize,
                               const std::string & dtype = "f32") {
    ExtractOptions o;
    o.model_dir = dir;
    o.load.device = "cpu";
    o.load.dtype = parse_dtype(dtype);
    o.load.show_progress = false;
    o.load.dequantize = dequantize;
    o.input.tokens_file = ids;
    o.input.seq_len = 12;
    o.input.num_sequences = 2;
    o.input.batch_size = 2;
    o.sites = {Site::LnAttn, Site::LnMlp, Site::Residual};
    tests::CollectSink sink;
    (void)run_extraction(o, {&sink});
    return sink;
}

using tests::extract_cli;

// config.json of openai/gpt-oss-20b as released (the keys the extractor reads); 120b differs in
// num_hidden_layers (36) and num_local_experts (128).
nlohmann::json gpt_oss_20b() {
    nlohmann::json j = nlohmann::json::parse(R"({"architectures":["GptOssForCausalLM"],"model_type":"gpt_oss",
        "attention_bias":true,"experts_per_token":4,"head_dim":64,"hidden_act":"silu","hidden_size":2880,
        "initial_context_length":4096,"intermediate_size":2880,"max_position_embeddings":131072,
        "num_attention_heads":64,"num_experts_per_tok":4,"num_hidden_layers":24,"num_key_value_heads":8,
        "num_local_experts":32,"rms_norm_eps":1e-05,"rope_theta":150000,"sliding_window":128,"swiglu_limit":7.0,
        "tie_word_embeddings":false,"vocab_size":201088,"torch_dtype":"bfloat16",
        "rope_scaling":{"beta_fast":32.0,"beta_slow":1.0,"factor":32.0,"original_max_position_embeddings":4096,
                        "rope_type":"yarn","truncate":false},
        "quantization_config":{"modules_to_not_convert":["model.layers.*.self_attn","model.layers.*.mlp.router",
                               "model.embed_tokens","lm_head"],"quant_method":"mxfp4"}})");
    std::vector<std::string> kinds;
    for (int l = 0; l < 24; ++l) kinds.push_back(l % 2 == 0 ? "sliding_attention" : "full_attention");
    j["layer_types"] = kinds;
    return j;
}

nlohmann::json gpt_oss_120b() {
    nlohmann::json j = gpt_oss_20b();
    j["num_hidden_layers"] = 36;
    j["num_local_experts"] = 128;
    std::vector<std::string> kinds;
    for (int l = 0; l < 36; ++l) kinds.push_back(l % 2 == 0 ? "sliding_attention" : "full_attention");
    j["layer_types"] = kinds;
    return j;
}

std::string load_error(const std::string & dir) {
    try {
        LoadOptions lo;
        lo.device = "cpu";
        lo.dtype = at::kFloat;
        lo.show_progress = false;
        (void)load_model(dir, lo);
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        return e.what();
    }
    return "";
}

// Rewrites dir/model.safetensors with `name` replaced by `t`.
void replace_tensor(const std::string & dir, const std::string & name, const at::Tensor & t) {
    const std::string path = dir + "/model.safetensors";
    std::vector<std::pair<std::string, at::Tensor>> all;
    {
        SafetensorsFile f = SafetensorsFile::open(path);
        for (const auto & n : f.names()) all.emplace_back(n, n == name ? t : f.load(n));
    }
    write_safetensors(path, all, {{"format", "pt"}});
}

}  // namespace

TEST_CASE("mxfp4: every byte and scale decodes to the brute-force value, low nibble first, odd block counts") {
    // 3 rows x 3 blocks (odd) of 16 bytes: the 144 bytes run through all 256 values across two
    // tensors; scales include 0 (2^-127, subnormal), 1, 126, 127, 128, 254 and 255 (inf).
    const std::vector<int> scale_bytes = {0, 1, 126, 127, 128, 254, 255, 119, 133};
    for (int part = 0; part < 2; ++part) {
        at::Tensor blocks = at::empty({3, 3, 16}, at::kByte);
        at::Tensor scales = at::empty({3, 3}, at::kByte);
        auto * b = blocks.data_ptr<uint8_t>();
        for (int i = 0; i < 144; ++i) b[i] = static_cast<uint8_t>((part * 144 + i * 7) % 256);
        for (int i = 0; i < 9; ++i) scales.data_ptr<uint8_t>()[i] = static_cast<uint8_t>(scale_bytes[static_cast<size_t>(i)]);
        at::Tensor f32 = mxfp4::dequantize(blocks, scales, at::kFloat);             // [3,96]
        at::Tensor bf16 = mxfp4::dequantize(blocks, scales, at::kBFloat16);         // [3,96]
        REQUIRE(f32.sizes() == at::IntArrayRef({3, 96}));
        for (int r = 0; r < 3; ++r)
            for (int g = 0; g < 3; ++g)
                for (int j = 0; j < 16; ++j) {
                    const int byte = b[(r * 3 + g) * 16 + j], s = scale_bytes[static_cast<size_t>(r * 3 + g)];
                    for (int half = 0; half < 2; ++half) {
                        const int col = g * 32 + 2 * j + half;
                        const float want = brute_value(half ? byte >> 4 : byte & 15, s);
                        const float got = f32[r][col].item<float>();
                        INFO("row " << r << " col " << col << " byte " << byte << " scale " << s);
                        CHECK(same_value(got, want));
                        const float want16 = at::tensor(want).to(at::kBFloat16).item<float>();
                        CHECK(same_value(bf16[r][col].item<float>(), want16));
                    }
                }
    }
    // Every code is reached above; spot-check the order with one byte: 0x21 at scale 127 is
    // (0.5, 1.0): low nibble 1 first, high nibble 2 second.
    at::Tensor one = at::zeros({1, 16}, at::kByte);
    one[0][0] = 0x21;
    at::Tensor v = mxfp4::dequantize(one, at::full({1}, 127, at::kByte), at::kFloat);  // [32]
    CHECK(v[0].item<float>() == 0.5f);
    CHECK(v[1].item<float>() == 1.0f);
    CHECK(v[2].item<float>() == 0.0f);
    // f16 goes through fp32 and rounds once: 6 x 2^15 overflows to inf; 6 x 2^-27 = 0.75 x 2^-24
    // rounds to f16's smallest subnormal 2^-24 (a scale cast to f16 first would be 0).
    at::Tensor big = at::full({1, 16}, 0x77, at::kByte);
    at::Tensor h = mxfp4::dequantize(big, at::full({1}, 127 + 15, at::kByte), at::kHalf);
    CHECK(std::isinf(h[0].item<float>()));
    at::Tensor small = mxfp4::dequantize(big, at::full({1}, 127 - 27, at::kByte), at::kHalf);
    CHECK(small[0].item<float>() == std::ldexp(1.0f, -24));
}

TEST_CASE("mxfp4: quantize then dequantize reproduces values on the e2m1 grid exactly and others to within half a step") {
    at::Tensor grid = at::tensor(std::vector<float>{0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.5, -1, -1.5, -2, -3, -4, -6, 6,
                                                    0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.5, -1, -1.5, -2, -3, -4, -6, 6}) *
                     0.25;  // max 1.5 = 6 x 2^-2
    auto [b, s] = mxfp4::quantize(grid.view({1, 32}));
    CHECK(s[0].item<int>() == 127 - 2);
    CHECK(at::equal(mxfp4::dequantize(b, s, at::kFloat).view({32}), grid));
    at::Tensor w = at::randn({4, 5, 96});
    auto [b2, s2] = mxfp4::quantize(w);
    CHECK(b2.sizes() == at::IntArrayRef({4, 5, 3, 16}));
    CHECK(s2.sizes() == at::IntArrayRef({4, 5, 3}));
    at::Tensor back = mxfp4::dequantize(b2, s2, at::kFloat);                      // [4,5,96]
    // Per block the step is at most 2 x 2^e <= max|x| / 2: the error is at most a quarter of max|x|.
    at::Tensor amax = w.view({4, 5, 3, 32}).abs().amax(-1, true);
    CHECK(((back - w).view({4, 5, 3, 32}).abs() <= amax * 0.25 + 1e-7).all().item<bool>());
}

TEST_CASE("mxfp4: mismatched blocks/scales shapes, a wrong dtype and a short last dimension are refused by name") {
    auto msg = [](const at::Tensor & b, const at::Tensor & s) {
        try {
            mxfp4::check_packed(b, s, "f.safetensors: model.layers.0.mlp.experts.down_proj");
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Usage);
            return std::string(e.what());
        }
        return std::string();
    };
    const at::Tensor good_b = at::zeros({2, 3, 16}, at::kByte), good_s = at::zeros({2, 3}, at::kByte);
    CHECK(msg(good_b, good_s).empty());
    CHECK(msg(good_b, at::zeros({2, 4}, at::kByte)).find("scales must have the blocks' shape") != std::string::npos);
    CHECK(msg(good_b, at::zeros({2, 3, 1}, at::kByte)).find("scales must have") != std::string::npos);
    CHECK(msg(good_b, at::zeros({2, 3}, at::kFloat)).find("scales must be uint8") != std::string::npos);
    CHECK(msg(at::zeros({2, 3, 16}, at::kBFloat16), good_s).find("blocks must be uint8") != std::string::npos);
    CHECK(msg(at::zeros({2, 3, 15}, at::kByte), good_s).find("16 bytes") != std::string::npos);
    CHECK(msg(at::zeros({2, 4, 16}, at::kByte), good_s).find("down_proj") != std::string::npos);  // named

    // The same, met in a checkpoint: named with its file and tensor before anything is loaded.
    tests::TempDir dir;
    FixtureOptions fx = gpt_oss_fixture(dir / "m");
    write_fixture(fx);
    const std::string scales = "model.layers.1.mlp.experts.down_proj_scales";
    const std::string blocks = "model.layers.0.mlp.experts.gate_up_proj_blocks";
    replace_tensor(fx.out_dir, scales, at::zeros({6, 64, 3}, at::kFloat));
    std::string e1 = load_error(fx.out_dir);
    CHECK(e1.find(scales) != std::string::npos);
    CHECK(e1.find("dtype F32 but U8 is required") != std::string::npos);
    CHECK(e1.find("model.safetensors") != std::string::npos);
    write_fixture(fx);
    replace_tensor(fx.out_dir, blocks, at::zeros({6, 192, 3, 16}, at::kByte));  // 3 blocks for hidden 64
    std::string e2 = load_error(fx.out_dir);
    CHECK(e2.find(blocks) != std::string::npos);
    CHECK(e2.find("shape [6,192,3,16] but config.json implies [6,192,2,16]") != std::string::npos);
    write_fixture(fx);
    replace_tensor(fx.out_dir, blocks, at::zeros({6, 192, 2, 16}, at::kBFloat16));  // right shape, not bytes
    CHECK(load_error(fx.out_dir).find("dtype BF16 but U8 is required") != std::string::npos);
}

TEST_CASE("attention sinks: chunked sink softmax with a sliding window equals a brute-force per-query loop") {
    at::manual_seed(3);
    const int64_t B = 2, Nq = 3, T = 9, D = 8, window = 4;
    at::Tensor q = at::randn({B, Nq, T, D}, at::kDouble), k = at::randn({B, Nq, T, D}, at::kDouble);
    at::Tensor v = at::randn({B, Nq, T, D}, at::kDouble);
    at::Tensor sinks = at::randn({Nq}, at::kDouble) * 2;
    for (bool sliding : {false, true}) {
        INFO("sliding " << sliding);
        at::Tensor mask = ops::causal_mask(T, sliding ? std::optional<int64_t>(window) : std::nullopt, c10::kCPU);
        at::Tensor got = ops::attend_with_sinks(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), sinks.to(at::kFloat), mask);
        double worst = 0;
        for (int64_t b = 0; b < B; ++b)
            for (int64_t h = 0; h < Nq; ++h)
                for (int64_t t = 0; t < T; ++t) {
                    // exp of each allowed logit and of the sink, normalised together; the sink's
                    // share is dropped (its value is zero).
                    const double sink = sinks[h].item<double>();
                    std::vector<double> logit;
                    std::vector<int64_t> keys;
                    for (int64_t j = 0; j <= t; ++j) {
                        if (sliding && j <= t - window) continue;
                        logit.push_back((q[b][h][t] * k[b][h][j]).sum().item<double>() / std::sqrt(static_cast<double>(D)));
                        keys.push_back(j);
                    }
                    double mx = sink;
                    for (double l : logit) mx = std::max(mx, l);
                    double den = std::exp(sink - mx);
                    for (double l : logit) den += std::exp(l - mx);
                    at::Tensor want = at::zeros({D}, at::kDouble);
                    for (size_t i = 0; i < keys.size(); ++i) want += std::exp(logit[i] - mx) / den * v[b][h][keys[i]];
                    worst = std::max(worst, (got[b][h][t].to(at::kDouble) - want).abs().max().item<double>());
                }
        CHECK(worst < 1e-5);
    }
    // A sink of -1e30 takes no mass (plain causal softmax); a sink of +1e4 takes it all (output 0).
    at::Tensor mask = ops::causal_mask(T, std::nullopt, c10::kCPU);
    at::Tensor qf = q.to(at::kFloat), kf = k.to(at::kFloat), vf = v.to(at::kFloat);
    at::Tensor none = ops::attend_with_sinks(qf, kf, vf, at::full({Nq}, -1e30f), mask);
    at::Tensor scores = at::matmul(qf, kf.transpose(2, 3)) / std::sqrt(static_cast<double>(D));
    at::Tensor plain = at::matmul(at::softmax(scores.masked_fill(mask.logical_not(), -INFINITY), -1), vf);
    CHECK(at::allclose(none, plain, 1e-5, 1e-6));
    CHECK(ops::attend_with_sinks(qf, kf, vf, at::full({Nq}, 1e4f), mask).abs().max().item<float>() < 1e-6);
}

TEST_CASE("gpt_oss moe: router, interleaved clamped SwiGLU and biases equal a per-token brute force, packed or not, any chunking") {
    at::manual_seed(5);
    const int64_t E = 5, K = 2, H = 64, I = 96, N = 7;
    // Weights on the MXFP4 grid, so the packed and the plain tensors hold the same numbers.
    auto [gub, gus] = mxfp4::quantize(at::randn({E, 2 * I, H}) * 0.3);
    auto [dnb, dns] = mxfp4::quantize(at::randn({E, H, I}) * 0.3);
    ops::MoeWeights packed;
    packed.router = at::randn({E, H}) * 0.3;
    packed.router_bias = at::randn({E}) * 0.3;
    packed.gate_up = gub;
    packed.gate_up_scales = gus;
    packed.down = dnb;
    packed.down_scales = dns;
    packed.gate_up_bias = at::randn({E, 2 * I}) * 0.3;
    packed.down_bias = at::randn({E, H}) * 0.3;
    ops::MoeWeights plain = packed;
    plain.gate_up = mxfp4::dequantize(gub, gus, at::kFloat);                     // [E,2I,H]
    plain.down = mxfp4::dequantize(dnb, dns, at::kFloat);                        // [E,H,I]
    plain.gate_up_scales = plain.down_scales = at::Tensor();
    at::Tensor m = at::randn({1, N, H}) * 3;  // large enough that the clamps at 7 bite

    at::Tensor want = at::zeros({N, H}, at::kDouble);
    const double alpha = 1.702, limit = 7.0;
    int64_t clamped = 0;
    for (int64_t n = 0; n < N; ++n) {
        at::Tensor x = m[0][n].to(at::kDouble);                                  // [H]
        at::Tensor logits = at::mv(packed.router.to(at::kDouble), x) + packed.router_bias.to(at::kDouble);  // [E]
        auto [tv, ti] = at::topk(logits, K);
        at::Tensor w = at::softmax(tv, 0);                                       // over the k only
        for (int64_t j = 0; j < K; ++j) {
            const int64_t e = ti[j].item<int64_t>();
            at::Tensor gu = at::mv(plain.gate_up[e].to(at::kDouble), x) + packed.gate_up_bias[e].to(at::kDouble);  // [2I]
            at::Tensor act = at::empty({I}, at::kDouble);
            for (int64_t i = 0; i < I; ++i) {
                double g = gu[2 * i].item<double>(), u = gu[2 * i + 1].item<double>();
                if (g > limit || std::abs(u) > limit) ++clamped;
                g = std::min(g, limit);
                u = std::clamp(u, -limit, limit);
                act[i] = (u + 1) * g / (1 + std::exp(-alpha * g));
            }
            at::Tensor out = at::mv(plain.down[e].to(at::kDouble), act) + packed.down_bias[e].to(at::kDouble);  // [H]
            want[n] += w[j] * out;
        }
    }
    CHECK(clamped > 0);
    const double scale = want.abs().max().item<double>();
    for (int64_t chunk : {0, 1, 2, 5}) {
        INFO("experts per chunk " << chunk);
        ops::ClampedSwigluMoeOptions opt{.top_k = K, .alpha = alpha, .limit = limit, .experts_per_chunk = chunk};
        at::Tensor a = ops::moe_clamped_swiglu(m, packed, opt).view({N, H}).to(at::kDouble);
        CHECK((a - want).abs().max().item<double>() / scale < 1e-5);
        at::Tensor b = ops::moe_clamped_swiglu(m, plain, opt).view({N, H}).to(at::kDouble);
        CHECK((a - b).abs().max().item<double>() / scale < 1e-6);
    }
}

TEST_CASE("gpt_oss: the forward through packed MXFP4 experts equals the --dequantize path, and the experts stay packed") {
    tests::TempDir dir;
    FixtureOptions fx = gpt_oss_fixture(dir / "m");
    fx.plants = {parse_plant("3,17@0-2")};
    write_fixture(fx);
    const std::string ids = tests::write_ids(dir / "ids.json", 64, 128);
    tests::CollectSink packed = run_gpt_oss(fx.out_dir, ids, false);
    tests::CollectSink plain = run_gpt_oss(fx.out_dir, ids, true);
    REQUIRE(packed.got.size() == 9);
    REQUIRE(plain.got.size() == 9);
    for (const auto & [k, t] : packed.got) {
        INFO("layer " << k.second << " " << site_name(k.first));
        CHECK(t.sizes() == at::IntArrayRef({2, 12, 64}));
        const at::Tensor & u = plain.got.at(k);
        CHECK((t - u).abs().max().item<double>() <= 1e-5 * std::max(1.0, u.abs().max().item<double>()));
    }
    // Planted dims show up in ln_attn of every planted layer.
    CHECK((packed.got.at({Site::LnAttn, 1}).select(-1, 17).abs() >= 6).to(at::kFloat).mean().item<float>() > 0.5);

    // What sits in memory: bytes for the packed load, run-dtype tensors for --dequantize.
    LoadOptions lo;
    lo.device = "cpu";
    lo.dtype = at::kBFloat16;
    lo.show_progress = false;
    Model m = load_model(fx.out_dir, lo);
    const ops::MoeWeights & w = m.weights.layers[1].moe;
    CHECK((w.gate_up.scalar_type() == at::kByte));
    CHECK(w.gate_up.sizes() == at::IntArrayRef({6, 192, 2, 16}));
    CHECK(w.down_scales.sizes() == at::IntArrayRef({6, 64, 3}));
    CHECK((m.weights.layers[1].input_norm.scalar_type() == at::kBFloat16));  // the run dtype, as transformers v5
    CHECK(m.weights.layers[1].attn.sinks.sizes() == at::IntArrayRef({4}));
    lo.dequantize = true;
    Model d = load_model(fx.out_dir, lo);
    CHECK((d.weights.layers[1].moe.gate_up.scalar_type() == at::kBFloat16));
    CHECK(d.weights.layers[1].moe.gate_up.sizes() == at::IntArrayRef({6, 192, 64}));
    CHECK(!d.weights.layers[1].moe.gate_up_scales.defined());
    CHECK(d.estimate.total_bytes > m.estimate.total_bytes);
    // bf16: the packed and the dequantized runs hold the same numbers, so the captures agree too.
    tests::CollectSink pb = run_gpt_oss(fx.out_dir, ids, false, "bf16");
    tests::CollectSink db = run_gpt_oss(fx.out_dir, ids, true, "bf16");
    for (const auto & [k, t] : pb.got) CHECK(at::allclose(t.to(at::kFloat), db.got.at(k).to(at::kFloat), 1e-2, 1e-2));
}

TEST_CASE("gpt_oss: inspect reports the released 20b and 120b figures, MXFP4 experts at their packed size") {
    tests::TempDir dir;
    struct Want {
        std::string name;
        nlohmann::json config;
        uint64_t total, active, bf16;
    };
    // Per layer: q/k/v/o with biases 26,550,080, sinks 64, norms 5,760, router 2880E + E, experts
    // E x (5760x2880 + 2880x2880 + 5760 + 2880); embedding and lm_head 201088 x 2880 each, final norm.
    // Bytes (what run loads, bf16): bf16 norms; MXFP4 matrices at 0.5 + 1/32 bytes a weight.
    const std::vector<Want> wants = {
        {"20b", gpt_oss_20b(), 20914757184ull, 4187440704ull, 12602992128ull},
        {"120b", gpt_oss_120b(), 116829156672ull, 5711982912ull, 64090543104ull},
    };
    for (const Want & want : wants) {
        INFO(want.name);
        const std::string mdir = dir / want.name;
        std::filesystem::create_directories(mdir);
        tests::write_file(mdir + "/config.json", want.config.dump());
        auto [code, out] = extract_cli({"inspect", mdir, "--json"}, dir / "out.json");
        REQUIRE(code == 0);
        auto j = nlohmann::json::parse(out);
        CHECK(j["model_type"] == "gpt_oss");
        CHECK(j["moe_layers"] == j["layers"]);
        CHECK(j["params_total"].get<uint64_t>() == want.total);
        CHECK(j["params_active"].get<uint64_t>() == want.active);
        CHECK(j["weights_loaded_bytes_bf16"].get<uint64_t>() == want.bf16);
        CHECK(j["weights_loaded_bytes_f32"].get<uint64_t>() > want.bf16);
        CHECK(j["weights_loaded_bytes_bf16_dequantized"].get<uint64_t>() > 3 * want.bf16);
        CHECK(j["experts_storage"].get<std::string>().rfind("mxfp4", 0) == 0);
    }
    // A checkpoint's headers are checked: the fixture passes, a blocks tensor of the wrong dtype fails.
    FixtureOptions fx = gpt_oss_fixture(dir / "fx");
    write_fixture(fx);
    auto [c2, o2] = extract_cli({"inspect", fx.out_dir, "--json"}, dir / "out2.json");
    REQUIRE(c2 == 0);
    CHECK(nlohmann::json::parse(o2)["weights_checked"] == "headers");
    replace_tensor(fx.out_dir, "model.layers.2.mlp.experts.down_proj_blocks", at::zeros({6, 64, 3, 16}, at::kFloat));
    CHECK(extract_cli({"inspect", fx.out_dir, "--json"}, dir / "out3.json").first == 2);
}

TEST_CASE("gpt_oss: configs without MXFP4 experts or with impossible values are refused naming the file and key") {
    auto err = [](nlohmann::json j) {
        try {
            (void)find_family("gpt_oss").parse_config(parse_hf_config(j, "/ckpt/config.json"));
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Usage);
            return std::string(e.what());
        }
        return std::string();
    };
    CHECK(err(gpt_oss_20b()).empty());
    nlohmann::json j = gpt_oss_20b();
    j.erase("quantization_config");
    CHECK(err(j).find("/ckpt/config.json: key quantization_config") != std::string::npos);
    j = gpt_oss_20b();
    j["intermediate_size"] = 2880 + 16;
    CHECK(err(j).find("key intermediate_size: 2896 is not a multiple of 32") != std::string::npos);
    j = gpt_oss_20b();
    j["layer_types"][3] = "chunked_attention";
    CHECK(err(j).find("key layer_types[3]") != std::string::npos);
    j = gpt_oss_20b();
    j["layer_types"].erase(0);
    CHECK(err(j).find("key layer_types: 23 entries for 24 layers") != std::string::npos);
    j = gpt_oss_20b();
    j["num_experts_per_tok"] = 33;
    CHECK(err(j).find("num_experts_per_tok") != std::string::npos);
    j = gpt_oss_20b();
    j["swiglu_limit"] = -1;
    CHECK(err(j).find("key swiglu_limit") != std::string::npos);
    // The released config's YaRN: factor 32 gives the attention scaling 0.1 ln 32 + 1.
    ModelConfig c = find_family("gpt_oss").parse_config(parse_hf_config(gpt_oss_20b(), "/ckpt/config.json"));
    CHECK(c.rope.attention_scaling == doctest::Approx(0.1 * std::log(32.0) + 1.0));
    // As transformers v5's YaRN: the config's `factor` wins (32 here, though 65536 / 4096 = 16), and
    // only a config without `factor` takes it from the two lengths.
    j = gpt_oss_20b();
    j["max_position_embeddings"] = 65536;
    ModelConfig c32 = find_family("gpt_oss").parse_config(parse_hf_config(j, "/ckpt/config.json"));
    CHECK(c32.rope.attention_scaling == doctest::Approx(0.1 * std::log(32.0) + 1.0));
    for (const char * dict : {"rope_parameters", "rope_scaling"})
        if (j.contains(dict)) j[dict].erase("factor");
    ModelConfig c16 = find_family("gpt_oss").parse_config(parse_hf_config(j, "/ckpt/config.json"));
    CHECK(c16.rope.attention_scaling == doctest::Approx(0.1 * std::log(16.0) + 1.0));
    // GptOssConfig's defaults stand in for keys a config leaves out: head_dim 64 (not 2880 / 64),
    // 8 kv heads, YaRN 32 (not plain RoPE).
    j = gpt_oss_20b();
    for (const char * key : {"head_dim", "num_key_value_heads", "rope_parameters", "rope_scaling"}) j.erase(key);
    ModelConfig cd = find_family("gpt_oss").parse_config(parse_hf_config(j, "/ckpt/config.json"));
    CHECK(cd.head_dim == 64);
    CHECK(cd.n_kv_heads == 8);
    CHECK(cd.rope.attention_scaling == doctest::Approx(0.1 * std::log(32.0) + 1.0));
    CHECK(c.sliding_window[0].value_or(0) == 128);
    CHECK(!c.sliding_window[1].has_value());
    CHECK(c.qkv_bias);
    CHECK(c.o_bias);
}
