// OLMoE (model_type "olmoe"). Follows HF transformers v5 models/olmoe/modular_olmoe.py
// (OlmoeDecoderLayer = LlamaDecoderLayer with OlmoeAttention and OlmoeSparseMoeBlock). Nearest
// sibling: qwen3_moe.cpp. Differences: q_norm/k_norm are one RMSNorm over the whole projection
// (Nq*D / Nkv*D) before the view to heads; optional clip_qkv; every layer is sparse, experts are
// intermediate_size wide; norm_topk_prob defaults to false; rms_norm_eps defaults to 1e-5.
#include <ATen/ATen.h>

#include "common/error.h"
#include "extractor/families/family.h"

namespace extractor {
namespace {

class OlmoeFamily final : public Family {
public:
    std::string_view name() const override { return "olmoe"; }
    std::string_view hf_reference() const override { return "models/olmoe/modular_olmoe.py OlmoeDecoderLayer"; }

    ModelConfig parse_config(const HfConfig & hf) const override {
        ModelConfig c = families::parse_common(hf, 1e-5, 10000.0);
        c.qk_norm = ops::QkNorm::Whole;
        c.clip_qkv = hf.clip_qkv;
        c.mlp_bias = false;
        c.n_experts = hf.num_experts;
        c.top_k = hf.num_experts_per_tok;
        c.expert_intermediate = hf.intermediate_size;
        c.norm_topk_prob = hf.norm_topk_prob.value_or(false);
        c.layer_is_moe.assign(static_cast<size_t>(c.n_layers), true);
        if (c.n_experts <= 0 || c.top_k <= 0 || c.top_k > c.n_experts)
            throw common_error(hf, "num_experts / num_experts_per_tok must satisfy 0 < k <= E");
        return c;
    }

    WeightPlan plan_weights(const ModelConfig & cfg, bool fused_experts) const override {
        WeightPlan plan;
        families::plan_embedding(plan, cfg);
        for (int l = 0; l < cfg.n_layers; ++l) {
            families::plan_attention(plan, cfg, l);
            families::plan_moe(plan, cfg, l, fused_experts);
        }
        return plan;
    }

    at::Tensor forward(const ModelConfig & cfg, const Weights & w, const at::Tensor & ids, int run_layers,
                       Tap & tap) const override {
        // v5 router (Qwen2MoeTopKRouter): softmax in fp32, top-k, optional renormalise, weights stay fp32.
        const ops::MoeOptions moe{.top_k = cfg.top_k, .renormalise = cfg.norm_topk_prob,
                                  .weights_in_activation_dtype = false};
        return families::decoder_stack(cfg, w, ids, run_layers, tap, [&](int l, const LayerWeights & lw, const at::Tensor & m) {
            return ops::moe(m, lw.moe, moe, tap.experts(l));                          // [B,T,H]
        });
    }

private:
    static common::Error common_error(const HfConfig & hf, const std::string & what) {
        return common::Error::file(hf.path, what);
    }
};

}  // namespace

const Family & olmoe_family() {
    static const OlmoeFamily f;
    return f;
}

}  // namespace extractor
