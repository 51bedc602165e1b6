// GLM-4.5 / GLM-4.5-Air (model_type "glm4_moe"). Follows HF transformers v5
// models/glm4_moe/modeling_glm4_moe.py (Glm4MoeDecoderLayer, Glm4MoeAttention, Glm4MoeTopkRouter,
// Glm4MoeMoE) with configuration_glm4_moe.py's defaults, and the "glm4_moe" entry of
// conversion_mapping.py (= qwen2_moe's) for the checkpoint layouts. Nearest sibling: qwen3_moe.cpp.
//
// What differs from Qwen3-MoE (docs/model-math.md#glm4_moe):
// - attention: q/k/v biases when attention_bias (o_proj never has one); per-head q/k RMSNorm only
//   when use_qk_norm; partial rotary: the first head_dim * partial_rotary_factor dims of each
//   head are rotated (half-split within them), the rest pass through. The factor defaults to 0.5
//   when config.json says nothing, as Glm4MoeConfig does;
// - layers 0..first_k_dense_replace-1 have a dense MLP (intermediate_size), the others are MoE;
// - the router (ops::route_sigmoid_grouped): fp32 logits, sigmoid scores, e_score_correction_bias
//   added for choosing only, group-limited top-k (n_group, topk_group), renormalisation
//   (norm_topk_prob) and routed_scaling_factor on the weights;
// - n_shared_experts shared experts, one SwiGLU MLP of n_shared_experts * moe_intermediate_size,
//   whose output is added to the routed experts' (both in the activation dtype);
// - the multi-token-prediction layers (num_nextn_predict_layers, stored as model.layers.L for
//   L >= num_hidden_layers) are not part of HF's forward: they are not loaded, and an info line
//   says so.
//
// Checkpoint layouts: released, per expert (mlp.experts.N.{gate,up,down}_proj.weight, fused at
// load into [E,2I,H] gate rows first and [E,H,I]); or the transformers v5 layout
// (mlp.experts.gate_up_proj, mlp.experts.down_proj). Detected from the index (model.cpp).
#include <ATen/ATen.h>

#include "common/error.h"
#include "common/log.h"
#include "extractor/families/family.h"

namespace extractor {
namespace {

// Glm4MoeConfig's class defaults for the keys config.json may omit.
constexpr int64_t kDefaultRoutedExperts = 128, kDefaultTopK = 8, kDefaultSharedExperts = 1, kDefaultMoeWidth = 1408;
constexpr int64_t kDefaultDenseLayers = 1;
constexpr double kDefaultRotaryFactor = 0.5;
constexpr int64_t kMaxMtpLayers = 64;  // bounds only the info line; nothing is sized by it

common::Error key_error(const HfConfig & hf, const std::string & key, const std::string & what) {
    return common::Error::file(hf.path, "key " + key + ": " + what);
}

// An integer key within [lo, hi], or `fallback` when config.json omits it (or says null).
int64_t int_key(const HfConfig & hf, const char * key, int64_t fallback, int64_t lo, int64_t hi) {
    if (!families::has_key(hf, key)) return fallback;
    const int64_t v = hf.get<int64_t>(key);
    if (v < lo || v > hi)
        throw key_error(hf, key, std::to_string(v) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
    return v;
}

// partial_rotary_factor written anywhere config.json may put it (top level, or v5's rope_parameters / rope_scaling).
bool states_rotary_factor(const HfConfig & hf) {
    if (families::has_key(hf, "partial_rotary_factor")) return true;
    for (const char * key : {"rope_parameters", "rope_scaling"}) {
        auto it = hf.raw.find(key);
        if (it != hf.raw.end() && it->is_object() && it->contains("partial_rotary_factor")) return true;
    }
    return false;
}

class Glm4MoeFamily final : public Family {
public:
    std::string_view name() const override { return "glm4_moe"; }
    std::string_view hf_reference() const override {
        return "models/glm4_moe/modeling_glm4_moe.py Glm4MoeDecoderLayer";
    }

    ModelConfig parse_config(const HfConfig & hf_in) const override {
        HfConfig hf = hf_in;
        if (!states_rotary_factor(hf)) hf.rope.partial_rotary_factor = kDefaultRotaryFactor;
        ModelConfig c = families::parse_common(hf, 1e-5, 10000.0);
        c.qkv_bias = hf.attention_bias;
        c.o_bias = false;      // Glm4MoeAttention builds o_proj without bias
        c.mlp_bias = false;
        const int64_t rotary = c.rope.inv_freq.size(0) * 2;
        if (rotary < 2 || rotary != static_cast<int64_t>(static_cast<double>(c.head_dim) * hf.rope.partial_rotary_factor))
            throw key_error(hf, "partial_rotary_factor", std::to_string(hf.rope.partial_rotary_factor) + " x head_dim " +
                                                             std::to_string(c.head_dim) + " must give an even rotary width of at least 2");
        c.qk_norm = families::has_key(hf, "use_qk_norm") && hf.get<bool>("use_qk_norm") ? ops::QkNorm::PerHead : ops::QkNorm::None;

        c.n_experts = int_key(hf, "n_routed_experts", kDefaultRoutedExperts, 1, hf_limits::kExperts);
        c.top_k = int_key(hf, "num_experts_per_tok", kDefaultTopK, 1, hf_limits::kExperts);
        c.expert_intermediate = int_key(hf, "moe_intermediate_size", kDefaultMoeWidth, 1, hf_limits::kIntermediate);
        const int64_t shared = int_key(hf, "n_shared_experts", kDefaultSharedExperts, 0, hf_limits::kExperts);
        c.shared_intermediate = shared * c.expert_intermediate;
        if (c.shared_intermediate > hf_limits::kIntermediate)
            throw key_error(hf, "n_shared_experts", std::to_string(shared) + " x moe_intermediate_size " +
                                                        std::to_string(c.expert_intermediate) + " is wider than " +
                                                        std::to_string(hf_limits::kIntermediate));
        c.norm_topk_prob = hf.norm_topk_prob.value_or(true);
        c.sigmoid_router = true;
        c.n_group = int_key(hf, "n_group", 1, 1, hf_limits::kExperts);
        c.topk_group = int_key(hf, "topk_group", 1, 1, hf_limits::kExperts);
        c.routed_scaling = families::has_key(hf, "routed_scaling_factor") ? hf.get<double>("routed_scaling_factor") : 1.0;
        if (!(c.routed_scaling > 0.0 && c.routed_scaling <= 1e6))
            throw key_error(hf, "routed_scaling_factor", std::to_string(c.routed_scaling) + " must be in (0, 1e6]");
        if (c.top_k > c.n_experts)
            throw key_error(hf, "num_experts_per_tok", std::to_string(c.top_k) + " must be between 1 and n_routed_experts (" +
                                                           std::to_string(c.n_experts) + ")");
        if (c.n_experts % c.n_group != 0)
            throw key_error(hf, "n_group", std::to_string(c.n_group) + " does not divide n_routed_experts " + std::to_string(c.n_experts));
        // HF scores a group by the sum of its two best experts (topk(2) within the group).
        if (c.n_experts / c.n_group < 2)
            throw key_error(hf, "n_group", std::to_string(c.n_group) + " groups of n_routed_experts " + std::to_string(c.n_experts) +
                                               " leave fewer than 2 experts a group (a group is scored by its best two)");
        if (c.topk_group > c.n_group)
            throw key_error(hf, "topk_group", std::to_string(c.topk_group) + " is more than n_group (" + std::to_string(c.n_group) + ")");
        if (c.top_k > c.topk_group * (c.n_experts / c.n_group))
            throw key_error(hf, "num_experts_per_tok", std::to_string(c.top_k) + " is more than the " +
                                                           std::to_string(c.topk_group * (c.n_experts / c.n_group)) +
                                                           " experts of the topk_group (" + std::to_string(c.topk_group) + ") groups kept");

        const int64_t dense = int_key(hf, "first_k_dense_replace", kDefaultDenseLayers, 0, hf_limits::kLayers);
        for (int64_t l = 0; l < c.n_layers; ++l) c.layer_is_moe[static_cast<size_t>(l)] = l >= dense;
        if (c.n_experts * c.n_moe_layers() > hf_limits::kExpertMatrices)
            throw key_error(hf, "n_routed_experts", std::to_string(c.n_experts) + " experts x " + std::to_string(c.n_moe_layers()) +
                                                        " MoE layers is more than " + std::to_string(hf_limits::kExpertMatrices) + " experts in all");
        if (dense > 0 && c.intermediate < 1)
            throw key_error(hf, "intermediate_size", std::to_string(c.intermediate) + " is the dense layers' width and must be at least 1");

        const int64_t mtp = int_key(hf, "num_nextn_predict_layers", 0, 0, kMaxMtpLayers);
        if (mtp > 0)
            common::log::info("glm4_moe: ", hf.path, " has num_nextn_predict_layers ", mtp, ": the multi-token-prediction layer",
                              mtp > 1 ? "s" : "", " (model.layers.", c.n_layers, mtp > 1 ? "-" + std::to_string(c.n_layers + mtp - 1) : "",
                              ".*) ", mtp > 1 ? "are" : "is", " not part of the forward pass and not loaded");
        return c;
    }

    WeightPlan plan_weights(const ModelConfig & cfg, bool fused_experts) const override {
        WeightPlan plan;
        families::plan_embedding(plan, cfg);
        for (int l = 0; l < cfg.n_layers; ++l) {
            families::plan_attention(plan, cfg, l);
            if (!cfg.layer_is_moe[static_cast<size_t>(l)]) {
                families::plan_dense_mlp(plan, cfg, l, cfg.intermediate);
                continue;
            }
            families::plan_moe(plan, cfg, l, fused_experts);  // mlp.gate.weight + experts, either layout
            const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
            // Kept in fp32 whatever the run dtype, as HF keeps the buffer (_keep_in_fp32_modules_strict).
            plan.dests.push_back({l, Slot::RouterScoreBias, {cfg.n_experts}, Storage::F32});
            plan.sources.push_back({p + "gate.e_score_correction_bias", {cfg.n_experts}, l, Slot::RouterScoreBias, -1, 0});
            if (cfg.shared_intermediate > 0) {
                const int64_t H = cfg.hidden, Is = cfg.shared_intermediate;
                families::add(plan, l, Slot::SharedGate, {Is, H}, p + "shared_experts.gate_proj.weight");
                families::add(plan, l, Slot::SharedUp, {Is, H}, p + "shared_experts.up_proj.weight");
                families::add(plan, l, Slot::SharedDown, {H, Is}, p + "shared_experts.down_proj.weight");
            }
        }
        return plan;
    }

    at::Tensor forward(const ModelConfig & cfg, const Weights & w, const at::Tensor & ids, int run_layers,
                       Tap & tap) const override {
        const ops::MoeOptions moe{.top_k = cfg.top_k, .renormalise = cfg.norm_topk_prob, .weights_in_activation_dtype = false,
                                  .sigmoid_grouped = true, .n_group = cfg.n_group, .topk_group = cfg.topk_group,
                                  .routed_scaling = cfg.routed_scaling};
        return families::decoder_stack(cfg, w, ids, run_layers, tap, [&](int l, const LayerWeights & lw, const at::Tensor & m) {
            if (!cfg.layer_is_moe[static_cast<size_t>(l)]) return ops::swiglu_mlp(m, lw.mlp);    // [B,T,H]
            at::Tensor out = ops::moe(m, lw.moe, moe, tap.experts(l));                        // [B,T,H] routed
            if (lw.moe.shared.gate.weight.defined()) out = out + ops::swiglu_mlp(m, lw.moe.shared);
            return out;
        });
    }
};

}  // namespace

const Family & glm4_moe_family() {
    static const Glm4MoeFamily f;
    return f;
}

}  // namespace extractor
