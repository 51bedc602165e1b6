// Mixtral (model_type "mixtral": Mixtral-8x7B-v0.1, Mixtral-8x22B-v0.1). Follows HF transformers
// v5 models/mixtral/modeling_mixtral.py (MixtralDecoderLayer, MixtralTopKRouter, MixtralExperts)
// and the "mixtral" entry of conversion_mapping.py for the checkpoint layouts. Nearest sibling:
// olmoe.cpp.
//
// What differs from OLMoE:
// - attention has no q/k norm, no clip and no biases (HF builds the projections without bias
//   whatever config.json says);
// - `sliding_window`, when not null, applies to every layer (HF picks its sliding causal mask
//   for the whole model when the key is set); null means full causal attention;
// - the router always renormalises: softmax in fp32 over all E logits, top-k, divide the k weights
//   by their sum; the weights stay fp32 in the expert combine (v5; v4 cast them to the activation
//   dtype). There is no norm_topk_prob key;
// - every layer is sparse; the experts are intermediate_size wide;
// - defaults when a key is absent are MixtralConfig's: rms_norm_eps 1e-5, rope theta 1e6,
//   8 local experts, top-2, 8 key/value heads, intermediate_size 14336.
//
// Checkpoint layouts (both accepted, detected from the index like the other MoE families):
// - released checkpoints (per expert): model.layers.L.block_sparse_moe.gate.weight [E,H] and
//   block_sparse_moe.experts.N.{w1,w3,w2}.weight, w1 = gate [I,H], w3 = up [I,H], w2 = down [H,I];
//   w1/w3 are fused at load into [E,2I,H] (gate rows first), w2 into [E,H,I];
// - the transformers v5 in-memory layout: mlp.gate.weight [E,H], mlp.experts.gate_up_proj
//   [E,2I,H] (gate then up along dim 1) and mlp.experts.down_proj [E,H,I].
#include <ATen/ATen.h>

#include "common/error.h"
#include "extractor/families/family.h"

namespace extractor {
namespace {

// MixtralConfig's class defaults, used when config.json omits the key.
constexpr int64_t kDefaultExperts = 8, kDefaultTopK = 2, kDefaultKvHeads = 8, kDefaultIntermediate = 14336;

class MixtralFamily final : public Family {
public:
    std::string_view name() const override { return "mixtral"; }
    std::string_view hf_reference() const override {
        return "models/mixtral/modeling_mixtral.py MixtralDecoderLayer";
    }

    ModelConfig parse_config(const HfConfig & hf_in) const override {
        HfConfig hf = hf_in;
        // parse_hf_config defaults a missing num_key_value_heads to num_attention_heads; Mixtral's is 8.
        if (!families::has_key(hf, "num_key_value_heads")) {
            if (hf.num_attention_heads % kDefaultKvHeads != 0)
                throw common::Error::file(hf.path, "key num_key_value_heads: missing, and Mixtral's default (8) does not divide "
                                                   "num_attention_heads " + std::to_string(hf.num_attention_heads));
            hf.num_key_value_heads = kDefaultKvHeads;
        }
        if (!families::has_key(hf, "intermediate_size")) hf.intermediate_size = kDefaultIntermediate;
        ModelConfig c = families::parse_common(hf, 1e-5, 1e6);
        c.qkv_bias = c.o_bias = false;
        c.mlp_bias = false;
        c.qk_norm = ops::QkNorm::None;
        c.n_experts = families::has_key(hf, "num_local_experts") || families::has_key(hf, "num_experts") ? hf.num_experts : kDefaultExperts;
        c.top_k = families::has_key(hf, "num_experts_per_tok") ? hf.num_experts_per_tok : kDefaultTopK;
        c.expert_intermediate = hf.intermediate_size;
        c.norm_topk_prob = true;  // MixtralTopKRouter always renormalises the top-k weights
        c.layer_is_moe.assign(static_cast<size_t>(c.n_layers), true);
        // Counts were bounded by parse_hf_config; these are the relations between them.
        if (c.n_experts < 1)
            throw common::Error::file(hf.path, "key num_local_experts: " + std::to_string(c.n_experts) +
                                                   " experts; a Mixtral layer needs at least 1");
        if (c.top_k < 1 || c.top_k > c.n_experts)
            throw common::Error::file(hf.path, "key num_experts_per_tok: " + std::to_string(c.top_k) +
                                                   " must be between 1 and num_local_experts (" + std::to_string(c.n_experts) + ")");
        if (c.expert_intermediate < 1)
            throw common::Error::file(hf.path, "key intermediate_size: " + std::to_string(c.expert_intermediate) +
                                                   " is the expert width and must be at least 1");
        if (c.n_experts * c.n_layers > hf_limits::kExpertMatrices)  // the default 8 experts was not bounded by the parser
            throw common::Error::file(hf.path, "key num_local_experts: " + std::to_string(c.n_experts) + " experts x " +
                                                   std::to_string(c.n_layers) + " layers is more than " +
                                                   std::to_string(hf_limits::kExpertMatrices) + " experts in all");
        if (hf.sliding_window) {
            if (*hf.sliding_window < 1)
                throw common::Error::file(hf.path, "key sliding_window: " + std::to_string(*hf.sliding_window) +
                                                       " would mask every key; use null for full attention or a window >= 1");
            c.sliding_window.assign(static_cast<size_t>(c.n_layers), *hf.sliding_window);
        }
        return c;
    }

    WeightPlan plan_weights(const ModelConfig & cfg, bool fused_experts) const override {
        WeightPlan plan;
        families::plan_embedding(plan, cfg);
        for (int l = 0; l < cfg.n_layers; ++l) {
            families::plan_attention(plan, cfg, l);
            if (fused_experts) families::plan_moe(plan, cfg, l, /*fused_experts=*/true);  // mlp.gate + mlp.experts.*
            else plan_block_sparse_moe(plan, cfg, l);
        }
        return plan;
    }

    at::Tensor forward(const ModelConfig & cfg, const Weights & w, const at::Tensor & ids, int run_layers,
                       Tap & tap) const override {
        // v5 router: fp32 softmax over all experts, top-k, renormalise, weights kept in fp32.
        const ops::MoeOptions moe{.top_k = cfg.top_k, .renormalise = true, .weights_in_activation_dtype = false};
        return families::decoder_stack(cfg, w, ids, run_layers, tap, [&](int l, const LayerWeights & lw, const at::Tensor & m) {
            return ops::moe(m, lw.moe, moe, tap.experts(l));                          // [B,T,H]
        });
    }

private:
    // The released per-expert layout, fused at load into the [E,2I,H] / [E,H,I] tensors ops::moe runs on.
    static void plan_block_sparse_moe(WeightPlan & plan, const ModelConfig & cfg, int l) {
        const std::string p = "model.layers." + std::to_string(l) + ".block_sparse_moe.";
        const int64_t H = cfg.hidden, E = cfg.n_experts, I = cfg.expert_intermediate;
        families::add(plan, l, Slot::Router, {E, H}, p + "gate.weight");
        plan.dests.push_back({l, Slot::ExpertsGateUp, {E, 2 * I, H}});
        plan.dests.push_back({l, Slot::ExpertsDown, {E, H, I}});
        for (int64_t e = 0; e < E; ++e) {
            const std::string ep = p + "experts." + std::to_string(e) + ".";
            plan.sources.push_back({ep + "w1.weight", {I, H}, l, Slot::ExpertsGateUp, e, 0});  // gate
            plan.sources.push_back({ep + "w3.weight", {I, H}, l, Slot::ExpertsGateUp, e, I});  // up
            plan.sources.push_back({ep + "w2.weight", {H, I}, l, Slot::ExpertsDown, e, 0});    // down
        }
    }
};

}  // namespace

const Family & mixtral_family() {
    static const MixtralFamily f;
    return f;
}

}  // namespace extractor
