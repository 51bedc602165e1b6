// Memory estimate: parameter counts of real configs (all experts resident) and the VRAM arithmetic.
#include <nlohmann/json.hpp>

#include <cmath>

#include "common/error.h"
#include "deploy/estimate.h"

#include <doctest/doctest.h>

namespace {

// config.json values as published for Qwen/Qwen3-30B-A3B and allenai/OLMoE-1B-7B-0125.
nlohmann::json qwen3_30b_a3b() {
    return {{"model_type", "qwen3_moe"}, {"hidden_size", 2048}, {"num_hidden_layers", 48}, {"vocab_size", 151936},
            {"num_attention_heads", 32}, {"num_key_value_heads", 4}, {"head_dim", 128}, {"intermediate_size", 6144},
            {"moe_intermediate_size", 768}, {"num_experts", 128}, {"num_experts_per_tok", 8}, {"tie_word_embeddings", false}};
}
nlohmann::json olmoe_1b_7b() {
    return {{"model_type", "olmoe"}, {"hidden_size", 2048}, {"num_hidden_layers", 16}, {"vocab_size", 50304},
            {"num_attention_heads", 16}, {"num_key_value_heads", 16}, {"intermediate_size", 1024}, {"num_experts", 64},
            {"num_experts_per_tok", 8}, {"tie_word_embeddings", false}};
}

// mistralai/Mixtral-8x7B-v0.1: experts are intermediate_size wide, counted under num_local_experts.
nlohmann::json mixtral_8x7b() {
    return {{"model_type", "mixtral"}, {"hidden_size", 4096}, {"num_hidden_layers", 32}, {"vocab_size", 32000},
            {"num_attention_heads", 32}, {"num_key_value_heads", 8}, {"intermediate_size", 14336},
            {"num_local_experts", 8}, {"num_experts_per_tok", 2}, {"tie_word_embeddings", false}};
}

// openai/gpt-oss-20b / gpt-oss-120b: experts stored as MXFP4 (quantization_config), with biases;
// attention with biases and sinks; router with bias.
nlohmann::json gpt_oss(int layers, int experts) {
    return {{"model_type", "gpt_oss"}, {"hidden_size", 2880}, {"num_hidden_layers", layers}, {"vocab_size", 201088},
            {"num_attention_heads", 64}, {"num_key_value_heads", 8}, {"head_dim", 64}, {"intermediate_size", 2880},
            {"num_local_experts", experts}, {"num_experts_per_tok", 4}, {"tie_word_embeddings", false},
            {"quantization_config", {{"quant_method", "mxfp4"}}}};
}

// Qwen/Qwen3-Next-80B-A3B-Instruct's config.json: 36 gated-DeltaNet and 12 full-attention layers
// (full_attention_interval 4), 512 experts top-10 plus a gated shared expert in every layer.
nlohmann::json qwen3_next_80b() {
    return {{"model_type", "qwen3_next"},   {"hidden_size", 2048},           {"num_hidden_layers", 48},
            {"vocab_size", 151936},         {"num_attention_heads", 16},     {"num_key_value_heads", 2},
            {"head_dim", 256},              {"intermediate_size", 5120},     {"full_attention_interval", 4},
            {"linear_conv_kernel_dim", 4},  {"linear_key_head_dim", 128},    {"linear_value_head_dim", 128},
            {"linear_num_key_heads", 16},   {"linear_num_value_heads", 32},  {"num_experts", 512},
            {"num_experts_per_tok", 10},    {"moe_intermediate_size", 512},  {"shared_expert_intermediate_size", 512},
            {"tie_word_embeddings", false}};
}

// zai-org/GLM-4.5-Air: routed experts under n_routed_experts, a dense first layer, one shared
// expert, q/k/v biases (the file the sweep dry run serves: tests/deploy/hub-configs).
nlohmann::json glm45_air() {
    return {{"model_type", "glm4_moe"}, {"hidden_size", 4096}, {"num_hidden_layers", 46}, {"vocab_size", 151552},
            {"num_attention_heads", 96}, {"num_key_value_heads", 8}, {"head_dim", 128}, {"intermediate_size", 10944},
            {"moe_intermediate_size", 1408}, {"n_routed_experts", 128}, {"n_shared_experts", 1}, {"num_experts_per_tok", 8},
            {"first_k_dense_replace", 1}, {"attention_bias", true}, {"use_qk_norm", false}, {"tie_word_embeddings", false}};
}

}  // namespace

TEST_CASE("estimate: GLM-4.5-Air is 106.9B parameters, 13.4B active, exactly what extract inspect reports") {
    // The figures tests/extractor/glm4_moe_test.cpp checks `extract inspect` against: the dense layer,
    // the shared experts, the score-correction biases and the attention biases counted exactly.
    auto e = deploy::estimate_memory(glm45_air(), "bf16", 1, 2048, 4, 1.2);
    CHECK(e.params == 106852251264);
    CHECK(e.params_active == 13424129664);
    CHECK(e.weights_gb == doctest::Approx(213.7).epsilon(0.001));
    CHECK(e.per_gpu_gb < 80);  // four 80 GB GPUs (configs/sweeps/predecessor-moe.yaml)
    // The keys' defaults are Glm4MoeConfig's: without n_shared_experts / first_k_dense_replace the same count.
    auto c = glm45_air();
    c.erase("n_shared_experts");
    c.erase("first_k_dense_replace");
    CHECK(deploy::estimate_memory(c, "bf16", 1, 2048, 4, 1.2).params == 106852251264);
    c["first_k_dense_replace"] = 3;  // two more dense layers instead of MoE ones
    CHECK(deploy::estimate_memory(c, "bf16", 1, 2048, 4, 1.2).params < e.params - 4000000000);
}

TEST_CASE("estimate: Mixtral-8x7B is 46.7B parameters, 12.9B active, exactly what extract inspect reports") {
    auto e = deploy::estimate_memory(mixtral_8x7b(), "bf16", 1, 2048, 2, 1.2);
    // The figures tests/extractor/mixtral_test.cpp checks `extract inspect` against.
    CHECK(e.params == 46702792704);
    CHECK(e.params_active == 12879925248);
    CHECK(e.weights_gb == doctest::Approx(93.41).epsilon(0.001));
    CHECK(e.per_gpu_gb < 80);  // two 80 GB GPUs
    auto one = deploy::estimate_memory(mixtral_8x7b(), "bf16", 1, 2048, 1, 1.2);
    CHECK(one.per_gpu_gb > 80);   // not one 80 GB GPU
    CHECK(one.per_gpu_gb < 141);  // one H200
}

TEST_CASE("estimate: Qwen3-30B-A3B counts all 128 experts (30.5B), not the 3.3B active") {
    auto e = deploy::estimate_memory(qwen3_30b_a3b(), "bf16", 1, 2048, 2, 1.2);
    CHECK(e.params == doctest::Approx(30.53e9).epsilon(0.005));
    CHECK(e.params_active == doctest::Approx(3.35e9).epsilon(0.02));
    CHECK(e.weights_gb == doctest::Approx(61.06).epsilon(0.005));
    CHECK(e.total_gb > e.weights_gb * 1.2);
    CHECK(e.per_gpu_gb == doctest::Approx(e.total_gb / 2));
    CHECK(e.per_gpu_gb < 80);  // fits two 80 GB GPUs
}

TEST_CASE("estimate: OLMoE-1B-7B is 6.9B parameters, ~14 GB of bf16 weights, f32 doubles it") {
    auto bf = deploy::estimate_memory(olmoe_1b_7b(), "bf16", 1, 2048, 1, 1.0);
    CHECK(bf.params == doctest::Approx(6.92e9).epsilon(0.01));
    CHECK(bf.weights_gb == doctest::Approx(13.84).epsilon(0.01));
    auto f32 = deploy::estimate_memory(olmoe_1b_7b(), "f32", 1, 2048, 1, 1.0);
    CHECK(f32.weights_gb == doctest::Approx(2 * bf.weights_gb));
}

TEST_CASE("estimate: a config without a required key names it") {
    auto c = olmoe_1b_7b();
    c.erase("hidden_size");
    CHECK_THROWS_WITH_AS(deploy::estimate_memory(c, "bf16", 1, 2048, 1, 1.2), doctest::Contains("hidden_size"), common::Error);
}

TEST_CASE("estimate: gpt-oss counts the released parameters, MXFP4 experts at 4.25 bits, as extract inspect does") {
    // The figures tests/extractor/gpt_oss_test.cpp checks `extract inspect` against.
    auto e20 = deploy::estimate_memory(gpt_oss(24, 32), "bf16", 1, 2048, 1, 1.2);
    CHECK(e20.params == 20914757184);
    CHECK(e20.params_active == 4187440704);
    auto e120 = deploy::estimate_memory(gpt_oss(36, 128), "bf16", 1, 2048, 1, 1.2);
    CHECK(e120.params == 116829156672);
    CHECK(e120.params_active == 5711982912);
    // 114.65 B expert matrix weights at 0.53125 bytes, the other 2.18 B (incl. lm_head) at 2 bytes.
    CHECK(e120.weights_gb == doctest::Approx(65.25).epsilon(0.001));
    CHECK(e120.weights_gb < 0.3 * static_cast<double>(e120.params) * 2 / 1e9);
    // Without the MXFP4 quantization_config the same shapes count at 2 bytes a weight.
    nlohmann::json plain = gpt_oss(36, 128);
    plain.erase("quantization_config");
    auto p120 = deploy::estimate_memory(plain, "bf16", 1, 2048, 1, 1.2);
    CHECK(p120.params == e120.params);
    CHECK(p120.weights_gb == doctest::Approx(2 * 116.829156672).epsilon(0.001));
}

TEST_CASE("estimate: Qwen3-Next-80B-A3B is 79.7B parameters, 3.9B active, exactly what extract inspect reports") {
    const nlohmann::json c = qwen3_next_80b();
    auto e = deploy::estimate_memory(c, "bf16", 1, 2048, 2, 1.2);
    // The figures tests/extractor/qwen3_next_test.cpp checks `extract inspect` against.
    CHECK(e.params == 79674391296);
    CHECK(e.params_active == 3874929408);
    CHECK(e.weights_gb == doctest::Approx(159.35).epsilon(0.001));
    CHECK(e.per_gpu_gb > 80);   // not two 80 GB GPUs
    // layer_types instead of the interval: the same layers, the same count.
    nlohmann::json t = c;
    t.erase("full_attention_interval");
    t["layer_types"] = nlohmann::json::array();
    for (int l = 0; l < 48; ++l) t["layer_types"].push_back((l + 1) % 4 == 0 ? "full_attention" : "linear_attention");
    CHECK(deploy::estimate_memory(t, "bf16", 1, 2048, 2, 1.2).params == 79674391296);
}

// ---- resources.offload_gb: layers in pinned host memory, streamed to the GPU ---------------------

TEST_CASE("estimate: offload keeps offload_gb of the weights off the GPU, which holds a ring of two of the largest layers (GLM-4.5-Air on one H200)") {
    // One MoE layer of GLM-4.5-Air: norms, 128 routed experts + the shared one, router and its
    // score-correction bias, attention with q/k/v biases: 2 341 492 864 parameters, 4.68 GB in bf16.
    const double moe_layer_gb = (2.0 * 4096 + 129.0 * 3 * 4096 * 1408 + 4096.0 * 128 + 128 +
                                 (4096.0 * 96 * 128 * 2 + 2.0 * 4096 * 8 * 128 + 96 * 128 + 2 * 8 * 128)) * 2 / 1e9;
    CHECK(moe_layer_gb == doctest::Approx(4.682985728));
    auto none = deploy::estimate_memory(glm45_air(), "bf16", 1, 2048, 1, 1.2);
    CHECK(none.per_gpu_gb > 212);  // all of it on one GPU: no single card
    CHECK(none.offload_gb == 0);
    CHECK(none.ring_gb == 0);
    CHECK(none.total_gb == doctest::Approx((none.weights_gb + none.activations_gb) * 1.2));
    CHECK(none.largest_layer_gb == doctest::Approx(moe_layer_gb));  // a MoE layer, not the dense first one
    // 90 GB offloaded, no safety margin: the rest plus the ring fits a 141 GB H200.
    auto e = deploy::estimate_memory(glm45_air(), "bf16", 1, 2048, 1, 1.0, 90);
    CHECK(e.offload_gb == 90);
    CHECK(e.ring_gb == doctest::Approx(2 * moe_layer_gb));
    CHECK(e.ring_gb == doctest::Approx(deploy::kOffloadRingBuffers * e.largest_layer_gb));
    CHECK(e.per_gpu_gb == doctest::Approx(e.weights_gb - 90 + e.activations_gb + e.ring_gb));
    CHECK(e.per_gpu_gb > e.weights_gb - 90);
    CHECK(e.per_gpu_gb < 141);
    CHECK(e.params == none.params);
    // With the default safety factor (1.2, on the resident weights and activations) 90 GB is not
    // enough for one card (~162 GB); 110 GB is (~138 GB: under the 140 GB Vast lists an H200 at).
    // configs/glm-4.5-air.yaml documents --offload-gb 110 for that.
    CHECK(deploy::estimate_memory(glm45_air(), "bf16", 1, 2048, 1, 1.2, 90).per_gpu_gb > 141);
    auto doc = deploy::estimate_memory(glm45_air(), "bf16", 1, 2048, 1, 1.2, 110);
    CHECK(doc.per_gpu_gb == doctest::Approx((doc.weights_gb - 110 + doc.activations_gb) * 1.2 + 2 * moe_layer_gb));
    CHECK(std::ceil(doc.per_gpu_gb) <= 140);
    // Over several GPUs the need is shared as without offload.
    auto two = deploy::estimate_memory(glm45_air(), "bf16", 1, 2048, 2, 1.2, 110);
    CHECK(two.per_gpu_gb == doctest::Approx(doc.total_gb / 2));
    // Offloading more than the weights leaves the activations and the ring.
    auto all = deploy::estimate_memory(glm45_air(), "bf16", 1, 2048, 1, 1.2, 1000);
    CHECK(all.offload_gb == doctest::Approx(all.weights_gb));
    CHECK(all.per_gpu_gb == doctest::Approx(all.activations_gb * 1.2 + all.ring_gb));
}

TEST_CASE("estimate: offload rings of Qwen3-Next (the larger token mixer), gpt-oss (packed experts) and a dense model") {
    // Qwen3-Next: a MoE layer with the gated-DeltaNet mixer (33.7M) is larger than one with full
    // attention (27.3M): 1 648 531 648 parameters.
    auto e = deploy::estimate_memory(qwen3_next_80b(), "bf16", 1, 2048, 1, 1.2, 55);
    CHECK(e.largest_layer_gb == doctest::Approx(1648531648.0 * 2 / 1e9));
    CHECK(e.ring_gb == doctest::Approx(2 * e.largest_layer_gb));
    nlohmann::json full = qwen3_next_80b();
    full["full_attention_interval"] = 1;  // every layer full attention: the smaller mixer
    CHECK(deploy::estimate_memory(full, "bf16", 1, 2048, 1, 1.2, 55).largest_layer_gb == doctest::Approx((1614813184.0 + 27263488) * 2 / 1e9));
    // One H200: 40 GB offloaded fits without a margin, 55 GB (configs/qwen3-next-80b-a3b.yaml) with the default 1.2.
    CHECK(deploy::estimate_memory(qwen3_next_80b(), "bf16", 1, 2048, 1, 1.0, 40).per_gpu_gb < 141);
    CHECK(deploy::estimate_memory(qwen3_next_80b(), "bf16", 1, 2048, 1, 1.2, 40).per_gpu_gb > 141);
    CHECK(std::ceil(e.per_gpu_gb) <= 140);
    // gpt-oss-120b: one layer's experts at 4.25 bits, like the whole model's.
    auto g = deploy::estimate_memory(gpt_oss(36, 128), "bf16", 1, 2048, 1, 1.2, 10);
    CHECK(g.largest_layer_gb < g.weights_gb / 36);
    CHECK(g.largest_layer_gb > 0.9 * g.weights_gb / 36);
    // A dense model: its one layer kind.
    nlohmann::json llama = {{"model_type", "llama"},      {"hidden_size", 4096},        {"num_hidden_layers", 32},
                            {"vocab_size", 32000},        {"num_attention_heads", 32},  {"num_key_value_heads", 8},
                            {"intermediate_size", 14336}, {"tie_word_embeddings", false}};
    auto d = deploy::estimate_memory(llama, "bf16", 1, 2048, 1, 1.2, 4);
    CHECK(d.largest_layer_gb == doctest::Approx((2.0 * 4096 + 3.0 * 4096 * 14336 + 2.0 * 4096 * 4096 + 2.0 * 4096 * 1024) * 2 / 1e9));
}
