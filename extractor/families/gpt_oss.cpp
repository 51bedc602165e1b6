// gpt-oss (model_type "gpt_oss": gpt-oss-20b, gpt-oss-120b). Follows HF transformers
// src/transformers/models/gpt_oss/modeling_gpt_oss.py (GptOssDecoderLayer) and the MXFP4 loading
// of src/transformers/integrations/mxfp4.py. Nearest sibling: qwen3_moe.cpp. Differences:
//   - RMSNorm multiplies the fp32 normalised value by an fp32 gain and rounds once;
//   - q/k/v/o projections with biases; one learned sink logit per query head that joins every
//     softmax and is dropped (ops::attend_with_sinks, or its flash form on CUDA); layers alternate sliding-window and full
//     attention by layer_types; YaRN RoPE (rope_scaling, factor 32 in the released configs);
//   - every layer is MoE: router with bias, top-k over the logits, softmax over the k; experts
//     with biases and the clamped SwiGLU (gate and up interleaved in gate_up's rows);
//   - experts stored as MXFP4 (quantization_config.quant_method "mxfp4"): loaded packed and
//     dequantized a chunk of experts at a time inside the MoE op, or all at load (--dequantize).
#include <ATen/ATen.h>

#include <cmath>

#include "common/error.h"
#include "extractor/families/family.h"

namespace extractor {
namespace {

bool rope_has(const HfConfig & hf, const char * key) {
    for (const char * dict : {"rope_parameters", "rope_scaling"}) {
        auto it = hf.raw.find(dict);
        if (it != hf.raw.end() && it->is_object()) return it->contains(key) && !(*it)[key].is_null();
    }
    return false;
}

// GptOssConfig's class defaults for keys config.json leaves out (parse_hf_config's generic
// defaults differ: head_dim hidden/heads, kv heads = heads, plain RoPE), so that a sparse config
// means what it means to transformers.
HfConfig with_gpt_oss_defaults(const HfConfig & in) {
    HfConfig hf = in;
    if (!families::has_key(hf, "head_dim")) hf.head_dim = 64;
    if (!families::has_key(hf, "num_key_value_heads")) hf.num_key_value_heads = 8;
    if (!families::has_key(hf, "intermediate_size")) hf.intermediate_size = 2880;
    if (!families::has_key(hf, "num_local_experts") && !families::has_key(hf, "num_experts")) hf.num_experts = 128;
    if (!families::has_key(hf, "num_experts_per_tok")) hf.num_experts_per_tok = 4;
    if (!families::has_key(hf, "rope_parameters") && !families::has_key(hf, "rope_scaling")) {
        hf.rope.type = "yarn";
        hf.rope.factor = 32.0;
        hf.rope.beta_fast = 32.0;
        hf.rope.beta_slow = 1.0;
        hf.rope.truncate = false;
        hf.rope.original_max_position_embeddings = 4096;
    }
    return hf;
}

class GptOssFamily final : public Family {
public:
    std::string_view name() const override { return "gpt_oss"; }
    std::string_view hf_reference() const override {
        return "models/gpt_oss/modeling_gpt_oss.py GptOssDecoderLayer + integrations/mxfp4.py";
    }

    ModelConfig parse_config(const HfConfig & hf_in) const override {
        HfConfig hf = with_gpt_oss_defaults(hf_in);
        auto bad = [&](const std::string & key, const std::string & why) {
            return common::Error(common::ErrorKind::Usage, hf.path + ": key " + key + ": " + why)
                .with("file", hf.path)
                .with("key", key);
        };
        ModelConfig c = families::parse_common(hf, 1e-5, 150000.0);
        // YaRN: the released configs give `factor` (32) and original_max_position_embeddings (4096,
        // with max_position_embeddings 131072: the same 32). transformers v5 uses `factor` and
        // derives it from the two lengths only when `factor` is absent; so do we.
        if (hf.rope.type == "yarn" && !rope_has(hf, "factor") && hf.rope.original_max_position_embeddings &&
            hf.max_position_embeddings > 0) {
            RopeParams p = hf.rope;
            p.factor = static_cast<double>(hf.max_position_embeddings) / static_cast<double>(*p.original_max_position_embeddings);
            c.rope = ops::make_rope(p, 150000.0, c.head_dim, hf.max_position_embeddings);
        }
        // GptOssConfig's default is attention_bias = true (HfConfig's generic default is false).
        c.qkv_bias = c.o_bias = families::has_key(hf, "attention_bias") ? hf.attention_bias : true;
        c.mlp_bias = false;
        c.attn_sinks = true;
        c.n_experts = hf.num_experts;
        c.top_k = hf.num_experts_per_tok;
        c.expert_intermediate = hf.intermediate_size;
        c.intermediate = 0;
        if (c.n_experts <= 0) throw bad("num_local_experts", "must be positive for gpt_oss");
        if (c.top_k <= 0 || c.top_k > c.n_experts) throw bad("num_experts_per_tok", "must be 1 to num_local_experts");
        if (c.expert_intermediate <= 0) throw bad("intermediate_size", "must be positive (the expert width)");
        c.layer_is_moe.assign(static_cast<size_t>(c.n_layers), true);
        // transformers' dense (dequantized) experts hard-code limit 7.0 and alpha 1.702, and only
        // its MXFP4 kernel path reads swiglu_limit; every released config says 7.0. We read it.
        if (auto it = hf.raw.find("swiglu_limit"); it != hf.raw.end() && !it->is_null()) {
            if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() <= 0)
                throw bad("swiglu_limit", "must be a positive finite number");
            c.swiglu_limit = it->get<double>();
        }
        // Layer kinds: layer_types, or HF's default (even layers sliding, odd full).
        if (!hf.layer_types.empty() && hf.layer_types.size() != static_cast<size_t>(c.n_layers))
            throw bad("layer_types", std::to_string(hf.layer_types.size()) + " entries for " + std::to_string(c.n_layers) + " layers");
        const int64_t window = hf.sliding_window.value_or(128);
        for (int64_t l = 0; l < c.n_layers; ++l) {
            const std::string kind = hf.layer_types.empty() ? (l % 2 == 0 ? "sliding_attention" : "full_attention")
                                                            : hf.layer_types[static_cast<size_t>(l)];
            if (kind == "sliding_attention") {
                if (window <= 0) throw bad("sliding_window", "must be positive when a layer is sliding_attention");
                c.sliding_window[static_cast<size_t>(l)] = window;
            } else if (kind != "full_attention") {
                throw bad("layer_types[" + std::to_string(l) + "]", "\"" + kind + "\" is not sliding_attention or full_attention");
            }
        }
        // Experts: only the released MXFP4 layout is read (a dequantized save stores gate_up
        // transposed, [E,H,2I]; not supported yet).
        const auto q = hf.raw.find("quantization_config");
        const bool mxfp4 = q != hf.raw.end() && q->is_object() && q->contains("quant_method") &&
                           (*q)["quant_method"].is_string() && (*q)["quant_method"].get<std::string>() == "mxfp4";
        if (!mxfp4)
            throw bad("quantization_config", "gpt_oss is read with MXFP4 experts only (quant_method \"mxfp4\", as released); "
                                             "this config has none");
        c.mxfp4_experts = true;
        if (c.hidden % 32 != 0) throw bad("hidden_size", std::to_string(c.hidden) + " is not a multiple of 32 (MXFP4 blocks)");
        if (c.expert_intermediate % 32 != 0)
            throw bad("intermediate_size", std::to_string(c.expert_intermediate) + " is not a multiple of 32 (MXFP4 blocks)");
        return c;
    }

    WeightPlan plan_weights(const ModelConfig & cfg, bool /*fused_experts*/) const override {
        WeightPlan plan;
        families::plan_embedding(plan, cfg);
        for (int l = 0; l < cfg.n_layers; ++l) {
            families::plan_attention(plan, cfg, l);
            // Norm gains are stored in the run dtype, as transformers v5 loads them for bf16 and f32
            // runs (GptOss lists them in _keep_in_fp32_modules, which v5 honours only for f16);
            // the norm upcasts them to fp32 before multiplying.
            families::add(plan, l, Slot::Sinks, {cfg.n_heads}, "model.layers." + std::to_string(l) + ".self_attn.sinks");
            families::plan_mxfp4_experts(plan, cfg, l);
        }
        return plan;
    }

    at::Tensor forward(const ModelConfig & cfg, const Weights & w, const at::Tensor & ids, int run_layers,
                       Tap & tap) const override {
        const ops::ClampedSwigluMoeOptions moe{.top_k = cfg.top_k, .alpha = 1.702, .limit = cfg.swiglu_limit};
        // Norms with an fp32 gain (GptOssRMSNorm), unlike the other families.
        return families::decoder_stack(
            cfg, w, ids, run_layers, tap,
            [&](int l, const LayerWeights & lw, const at::Tensor & m) { return ops::moe_clamped_swiglu(m, lw.moe, moe, tap.experts(l)); },
            ops::rms_norm_fp32_gain);
    }

    // model.norm is a GptOssRMSNorm like the layers' norms: the gain multiplies the fp32 normalised
    // value, rounded once.
    at::Tensor final_norm(const ModelConfig & cfg, const at::Tensor & h, const at::Tensor & gain) const override {
        return ops::rms_norm_fp32_gain(h, gain, cfg.rms_eps);
    }
};

}  // namespace

const Family & gpt_oss_family() {
    static const GptOssFamily f;
    return f;
}

}  // namespace extractor
