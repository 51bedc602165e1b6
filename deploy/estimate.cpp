// Memory estimate from config.json (see estimate.h). The parameter formula follows the decoder
// layouts the extractor implements (docs/model-math.md, docs/checkpoint-formats.md#tensor-names):
// embeddings, per-layer attention (q/k/v/o with GQA), norms, dense or MoE MLP (gate/up/down per
// expert, router), final norm, untied LM head.
#include "deploy/estimate.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "common/http.h"
#include "common/log.h"

namespace deploy {

namespace {

int64_t need(const nlohmann::json & c, const char * key) {
    if (!c.contains(key) || !c[key].is_number_integer())
        throw common::Error::usage(std::string("config.json: '") + key + "' is missing or not an integer");
    return c[key].get<int64_t>();
}

int64_t get_or(const nlohmann::json & c, const char * key, int64_t fallback) {
    return c.contains(key) && c[key].is_number_integer() ? c[key].get<int64_t>() : fallback;
}

// Qwen3-Next's per-layer differences from the generic count (extractor/families/qwen3_next.cpp,
// docs/model-math.md#qwen3-next), with Qwen3NextConfig's defaults for absent keys.
struct Qwen3NextExtra {
    int64_t linear_layers = 0;  // layers with gated DeltaNet linear attention
    int64_t linear = 0;         // parameters of one such token mixer
    int64_t shared = 0;         // the shared expert and its gate, per MoE layer
};

Qwen3NextExtra qwen3_next_extra(const nlohmann::json & c, int64_t H, int64_t L) {
    Qwen3NextExtra x;
    const int64_t Nk = get_or(c, "linear_num_key_heads", 16), Nv = get_or(c, "linear_num_value_heads", 32);
    const int64_t Dk = get_or(c, "linear_key_head_dim", 128), Dv = get_or(c, "linear_value_head_dim", 128);
    const int64_t Kc = get_or(c, "linear_conv_kernel_dim", 4);
    const int64_t kd = Nk * Dk, vd = Nv * Dv;
    // in_proj_qkvz, in_proj_ba, conv1d, dt_bias + A_log, gated norm, out_proj.
    x.linear = H * (2 * kd + 2 * vd) + H * 2 * Nv + (2 * kd + vd) * Kc + 2 * Nv + Dv + vd * H;
    x.shared = 3 * H * get_or(c, "shared_expert_intermediate_size", 512) + H;
    if (c.contains("layer_types") && c["layer_types"].is_array()) {
        for (const auto & t : c["layer_types"]) x.linear_layers += t == "linear_attention" ? 1 : 0;
    } else {
        const int64_t interval = std::max<int64_t>(get_or(c, "full_attention_interval", 4), 1);
        x.linear_layers = L - L / interval;  // layer i is full attention iff (i + 1) % interval == 0
    }
    return x;
}

double bytes_per_param(const std::string & dtype) {
    if (dtype == "f32") return 4;
    return 2;  // bf16, f16
}

}  // namespace

MemoryEstimate estimate_memory(const nlohmann::json & c, const std::string & dtype, int64_t batch, int64_t seq_len,
                               int gpu_count, double safety_factor, double offload_gb) {
    MemoryEstimate e;
    e.model_type = c.value("model_type", "");
    const int64_t H = need(c, "hidden_size");
    const int64_t L = need(c, "num_hidden_layers");
    const int64_t V = need(c, "vocab_size");
    const int64_t Nq = need(c, "num_attention_heads");
    const int64_t Nkv = get_or(c, "num_key_value_heads", Nq);
    const int64_t D = get_or(c, "head_dim", H / Nq);
    const int64_t I = get_or(c, "intermediate_size", 0);
    // glm4_moe counts its routed experts under n_routed_experts; absent keys take Glm4MoeConfig's defaults.
    const bool glm = e.model_type == "glm4_moe";
    const int64_t E = glm ? get_or(c, "n_routed_experts", 128) : get_or(c, "num_experts", get_or(c, "num_local_experts", 0));
    const int64_t K = get_or(c, "num_experts_per_tok", glm ? 8 : 0);
    const int64_t Imoe = get_or(c, "moe_intermediate_size", glm ? 1408 : I);
    const bool tied = c.value("tie_word_embeddings", false);

    // gpt_oss: q/k/v/o biases and one sink logit per head; router with bias; experts with biases,
    // their matrices stored as MXFP4 (32 4-bit values + one 8-bit scale per block: 4.25 bits, kept
    // packed by `extract run`, which counts them the same way: extractor/placement.cpp).
    const bool gpt_oss = e.model_type == "gpt_oss";
    const bool mxfp4 = gpt_oss && c.contains("quantization_config") && c["quantization_config"].is_object() &&
                       c["quantization_config"].value("quant_method", "") == "mxfp4";
    int64_t attn = H * Nq * D + 2 * H * Nkv * D + Nq * D * H;         // q, k, v, o
    if (gpt_oss) attn += Nq * D + 2 * Nkv * D + H + Nq;                // biases, sinks
    // qwen3_next: the layers' token mixers differ (linear_layers of gated DeltaNet, the rest full
    // attention whose q_proj also yields the gate, with q/k norms); every MoE layer also has a
    // shared expert with a sigmoid gate.
    const bool qwen3_next = e.model_type == "qwen3_next";
    const Qwen3NextExtra next = qwen3_next ? qwen3_next_extra(c, H, L) : Qwen3NextExtra{};
    if (qwen3_next) attn += H * Nq * D + 2 * D;
    // glm4_moe (extractor/families/glm4_moe.cpp): q/k/v biases and per-head q/k norms when set; the
    // first first_k_dense_replace layers dense; each MoE layer adds the router's score-correction
    // bias and n_shared_experts shared experts (always active).
    if (glm) attn += (c.value("attention_bias", false) ? Nq * D + 2 * Nkv * D : 0) + (c.value("use_qk_norm", false) ? 2 * D : 0);
    const int64_t dense_layers = glm ? std::clamp<int64_t>(get_or(c, "first_k_dense_replace", 1), 0, L) : 0;
    const int64_t moe_extra = next.shared + (glm ? E + get_or(c, "n_shared_experts", 1) * 3 * H * Imoe : 0);
    const int64_t mixers = (L - next.linear_layers) * attn + next.linear_layers * next.linear;  // all layers
    const int64_t norms = 2 * H;
    const int64_t dense_mlp = 3 * H * I;                              // gate, up, down
    const int64_t expert_matrices = 3 * H * Imoe;                     // per expert
    const int64_t expert_biases = gpt_oss ? 2 * Imoe + H : 0;         // per expert
    const int64_t router = H * E + (gpt_oss ? E : 0);
    int64_t per_layer = norms, per_layer_active = norms;
    if (E > 0) {
        per_layer += E * (expert_matrices + expert_biases) + router + moe_extra;  // experts + router
        per_layer_active += std::max<int64_t>(K, 1) * (expert_matrices + expert_biases) + router + moe_extra;
    } else {
        per_layer += dense_mlp;
        per_layer_active += dense_mlp;
    }
    const int64_t outer = V * H + H + (tied ? 0 : V * H);
    const int64_t dense = dense_layers * (norms + dense_mlp);         // glm4_moe's dense first layers
    e.params = outer + (L - dense_layers) * per_layer + dense + mixers;
    e.params_active = outer + (L - dense_layers) * per_layer_active + dense + mixers;
    const double bpp = bytes_per_param(dtype);
    const int64_t packed = mxfp4 ? L * E * expert_matrices : 0;       // weights held at 4.25 bits
    e.weights_gb = (static_cast<double>(e.params - packed) * bpp + static_cast<double>(packed) * 4.25 / 8) / 1e9;
    // One batch in flight: a few hidden-state copies, the attention scores of one layer, and the
    // logits (fp32). Captures are reduced on the device by the fused analysis, so they do not add up.
    const double tokens = static_cast<double>(batch) * static_cast<double>(seq_len);
    const double hidden_states = tokens * static_cast<double>(H) * 8 * bpp;                    // [B,T,H] x ~8 live copies
    const double scores = static_cast<double>(batch) * Nq * static_cast<double>(seq_len) * seq_len * 4;  // [B,Nq,T,T] fp32
    const double logits = tokens * static_cast<double>(V) * 4;                                   // [B,T,V] fp32
    e.activations_gb = (hidden_states + scores + logits) / 1e9;
    // The largest decoder layer, as the offload streamer copies it: the model's repeated layer (a MoE
    // layer: all experts, with its token mixer, qwen3_next's larger kind) or glm4_moe's dense first ones.
    int64_t mixer = attn;
    if (qwen3_next) mixer = std::max(next.linear_layers > 0 ? next.linear : 0, next.linear_layers < L ? attn : 0);
    const int64_t layer_packed = mxfp4 ? E * expert_matrices : 0;   // one layer's experts at 4.25 bits
    const double layer_bytes =
        L > dense_layers ? static_cast<double>(per_layer + mixer - layer_packed) * bpp + static_cast<double>(layer_packed) * 4.25 / 8 : 0;
    const double dense_layer_bytes = dense_layers > 0 ? static_cast<double>(norms + dense_mlp + attn) * bpp : 0;
    e.largest_layer_gb = std::max(layer_bytes, dense_layer_bytes) / 1e9;
    if (offload_gb > 0) {
        e.offload_gb = std::min(offload_gb, e.weights_gb);
        e.ring_gb = kOffloadRingBuffers * e.largest_layer_gb;
    }
    e.total_gb = (e.weights_gb - e.offload_gb + e.activations_gb) * safety_factor + e.ring_gb;
    e.per_gpu_gb = e.total_gb / std::max(gpu_count, 1);
    return e;
}

nlohmann::json fetch_hub_config(const std::string & hub_id, const std::string & revision, const std::string & token_env) {
    const char * ep = std::getenv("HF_ENDPOINT");
    std::string endpoint = ep && *ep ? ep : "https://huggingface.co";
    common::http::Request req;
    req.url = endpoint + "/" + hub_id + "/resolve/" + revision + "/config.json";
    req.headers.push_back({"User-Agent", "outlier-toolkit/0.1"});
    if (const char * tok = std::getenv(token_env.c_str()); tok && *tok) {
        common::log::add_secret(tok);
        req.headers.push_back({"Authorization", std::string("Bearer ") + tok});
    }
    common::http::Client client("huggingface", {.timeout_connect_s = 10, .timeout_total_s = 30, .max_attempts = 4});
    auto resp = client.send(req);
    if (resp.status == 401 || resp.status == 403)
        throw common::Error(common::ErrorKind::Auth, "huggingface: " + hub_id + ": config.json refused (HTTP " +
                                                         std::to_string(resp.status) + "): the repo is gated or private; accept its licence and set " + token_env);
    if (resp.status < 200 || resp.status >= 300)
        throw common::http::status_error("huggingface", hub_id + ": config.json", resp);
    try {
        return nlohmann::json::parse(resp.body);
    } catch (const nlohmann::json::exception &) {
        throw common::Error(common::ErrorKind::Network, "huggingface: " + hub_id + ": config.json is not JSON");
    }
}

}  // namespace deploy
