// Qwen3-MoE (model_type "qwen3_moe"). Follows HF transformers v5
// models/qwen3_moe/modeling_qwen3_moe.py (Qwen3MoeDecoderLayer). Nearest sibling: olmoe.cpp.
// Differences: per-head q_norm/k_norm (as Qwen3); experts are moe_intermediate_size wide; layer l
// is dense (intermediate_size) if l is in mlp_only_layers, or num_experts == 0, or
// (l+1) % decoder_sparse_step != 0; optional sliding windows as Qwen3.
#include <ATen/ATen.h>

#include "common/error.h"
#include "extractor/families/family.h"

namespace extractor {
namespace {

class Qwen3MoeFamily final : public Family {
public:
    std::string_view name() const override { return "qwen3_moe"; }
    std::string_view hf_reference() const override {
        return "models/qwen3_moe/modeling_qwen3_moe.py Qwen3MoeDecoderLayer";
    }

    ModelConfig parse_config(const HfConfig & hf) const override {
        HfConfig h = hf;
        if (!h.head_dim) h.head_dim = h.hidden_size / h.num_attention_heads;
        ModelConfig c = families::parse_common(h, 1e-6, 10000.0);
        c.qk_norm = ops::QkNorm::PerHead;
        c.mlp_bias = false;
        c.n_experts = hf.num_experts;
        c.top_k = hf.num_experts_per_tok;
        c.expert_intermediate = hf.moe_intermediate_size;
        c.norm_topk_prob = hf.norm_topk_prob.value_or(false);
        const int64_t step = hf.decoder_sparse_step > 0 ? hf.decoder_sparse_step : 1;
        for (int64_t l = 0; l < c.n_layers; ++l) {
            bool dense_only = std::find(hf.mlp_only_layers.begin(), hf.mlp_only_layers.end(), l) != hf.mlp_only_layers.end();
            c.layer_is_moe[static_cast<size_t>(l)] = !dense_only && c.n_experts > 0 && (l + 1) % step == 0;
        }
        if (c.n_moe_layers() > 0 && (c.top_k <= 0 || c.top_k > c.n_experts || c.expert_intermediate <= 0))
            throw common::Error::file(hf.path, "num_experts_per_tok / moe_intermediate_size invalid for a MoE layer");
        if (hf.use_sliding_window && hf.sliding_window)
            for (int64_t l = 0; l < c.n_layers; ++l) {
                bool slides = hf.layer_types.size() == static_cast<size_t>(c.n_layers)
                                  ? hf.layer_types[static_cast<size_t>(l)] == "sliding_attention"
                                  : l >= hf.max_window_layers.value_or(28);
                if (slides) c.sliding_window[static_cast<size_t>(l)] = *hf.sliding_window;
            }
        return c;
    }

    WeightPlan plan_weights(const ModelConfig & cfg, bool fused_experts) const override {
        WeightPlan plan;
        families::plan_embedding(plan, cfg);
        for (int l = 0; l < cfg.n_layers; ++l) {
            families::plan_attention(plan, cfg, l);
            if (cfg.layer_is_moe[static_cast<size_t>(l)]) families::plan_moe(plan, cfg, l, fused_experts);
            else families::plan_dense_mlp(plan, cfg, l, cfg.intermediate);
        }
        return plan;
    }

    at::Tensor forward(const ModelConfig & cfg, const Weights & w, const at::Tensor & ids, int run_layers,
                       Tap & tap) const override {
        // v5 router (Qwen2MoeTopKRouter): softmax in fp32, top-k, optional renormalise, weights stay fp32.
        const ops::MoeOptions moe{.top_k = cfg.top_k, .renormalise = cfg.norm_topk_prob,
                                  .weights_in_activation_dtype = false};
        return families::decoder_stack(cfg, w, ids, run_layers, tap, [&](int l, const LayerWeights & lw, const at::Tensor & m) {
            return cfg.layer_is_moe[static_cast<size_t>(l)] ? ops::moe(m, lw.moe, moe, tap.experts(l))  // [B,T,H]
                                                            : ops::swiglu_mlp(m, lw.mlp);
        });
    }
};

}  // namespace

const Family & qwen3_moe_family() {
    static const Qwen3MoeFamily f;
    return f;
}

}  // namespace extractor
