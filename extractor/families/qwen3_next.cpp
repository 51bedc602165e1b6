// Qwen3-Next (model_type "qwen3_next": Qwen3-Next-80B-A3B-Instruct / -Thinking). Follows HF
// transformers v5 models/qwen3_next/modeling_qwen3_next.py (Qwen3NextDecoderLayer) and
// configuration_qwen3_next.py for the defaults; docs/model-math.md#qwen3-next. Nearest sibling:
// qwen3_moe.cpp. What differs:
// - each layer's token mixer is either full attention or gated DeltaNet linear attention, from
//   layer_types, else every full_attention_interval-th layer (default 4) is full attention;
// - full attention (ops::gated_attention): q_proj yields [query | gate] per head, the output is
//   scaled by sigmoid(gate) before o_proj; zero-centred per-head q/k norm; RoPE on the first
//   head_dim * partial_rotary_factor (default 0.25) dims of each head;
// - linear attention (ops::gated_delta_net): in_proj_qkvz / in_proj_ba, causal depthwise conv1d
//   with SiLU over q/k/v, the gated delta rule (HF's chunked torch form), gated RMSNorm, out_proj;
// - every RMSNorm of the decoder (input/post-attention, q/k, final) is zero-centred: gain 1 + w;
// - MoE layers add a shared expert (shared_expert_intermediate_size wide) scaled by
//   sigmoid(shared_expert_gate(x)) to the routed experts (softmax top-k, norm_topk_prob);
// - the multi-token-prediction weights (mtp.*) are not part of the forward pass: ignored
//   (ignored_weight_prefixes), as HF's _keys_to_ignore_on_load_unexpected does.
// Checkpoint layouts: the released one (per-expert mlp.experts.N.{gate,up,down}_proj) and
// transformers v5's (mlp.experts.gate_up_proj / down_proj; conversion_mapping.py maps qwen3_next as
// qwen2_moe: only the experts differ), detected from the index as for the other MoE families.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "extractor/families/family.h"

namespace extractor {
namespace {

// Qwen3NextConfig's class defaults, used when config.json omits the key.
constexpr int64_t kDefaultHeadDim = 256, kDefaultConvKernel = 4, kDefaultKeyHeadDim = 128, kDefaultValueHeadDim = 128,
                  kDefaultKeyHeads = 16, kDefaultValueHeads = 32, kDefaultInterval = 4, kDefaultSharedWidth = 512;
constexpr double kDefaultRotaryFactor = 0.25;
// Bound for the conv kernel width (released: 4); the other sizes use hf_limits.
constexpr int64_t kMaxConvKernel = 64;

// An optional integer key of config.json within [lo, hi]; absent or null gives `fallback`.
int64_t int_key(const HfConfig & hf, const char * key, int64_t fallback, int64_t lo, int64_t hi) {
    auto it = hf.raw.find(key);
    if (it == hf.raw.end() || it->is_null()) return fallback;
    if (!it->is_number_integer())
        throw common::Error::file(hf.path, std::string("key ") + key + ": must be an integer, got " + it->dump());
    const int64_t v = it->get<int64_t>();
    if (v < lo || v > hi)
        throw common::Error::file(hf.path, std::string("key ") + key + ": " + std::to_string(v) + " is outside [" +
                                               std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v;
}

bool rotary_factor_given(const HfConfig & hf) {
    if (families::has_key(hf, "partial_rotary_factor")) return true;
    for (const char * dict : {"rope_parameters", "rope_scaling"}) {
        auto it = hf.raw.find(dict);
        if (it != hf.raw.end() && it->is_object() && it->contains("partial_rotary_factor") &&
            !(*it)["partial_rotary_factor"].is_null())
            return true;
    }
    return false;
}

std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }

class Qwen3NextFamily final : public Family {
public:
    std::string_view name() const override { return "qwen3_next"; }
    std::string_view hf_reference() const override {
        return "models/qwen3_next/modeling_qwen3_next.py Qwen3NextDecoderLayer";
    }
    std::vector<std::string> ignored_weight_prefixes() const override { return {"mtp."}; }

    ModelConfig parse_config(const HfConfig & hf_in) const override {
        HfConfig hf = hf_in;
        if (!hf.head_dim) hf.head_dim = kDefaultHeadDim;
        if (!rotary_factor_given(hf)) hf.rope.partial_rotary_factor = kDefaultRotaryFactor;
        ModelConfig c = families::parse_common(hf, 1e-6, 10000.0);
        const int64_t rotary = static_cast<int64_t>(static_cast<double>(c.head_dim) * hf.rope.partial_rotary_factor);
        if (rotary < 2 || rotary % 2 != 0)
            throw common::Error::file(hf.path, "key partial_rotary_factor: head_dim " + std::to_string(c.head_dim) + " x " +
                                                   std::to_string(hf.rope.partial_rotary_factor) + " = " +
                                                   std::to_string(rotary) + " rotary dims; must be even and at least 2");
        c.qk_norm = ops::QkNorm::PerHead;  // zero-centred; see gated_attention
        c.mlp_bias = false;

        parse_layer_types(hf, c);
        auto & la = c.linear_attn;
        la.n_k_heads = int_key(hf, "linear_num_key_heads", kDefaultKeyHeads, 1, hf_limits::kHeads);
        la.n_v_heads = int_key(hf, "linear_num_value_heads", kDefaultValueHeads, 1, hf_limits::kHeads);
        la.k_head_dim = int_key(hf, "linear_key_head_dim", kDefaultKeyHeadDim, 1, hf_limits::kHeadDim);
        la.v_head_dim = int_key(hf, "linear_value_head_dim", kDefaultValueHeadDim, 1, hf_limits::kHeadDim);
        la.eps = c.rms_eps;
        c.linear_conv_kernel = int_key(hf, "linear_conv_kernel_dim", kDefaultConvKernel, 1, kMaxConvKernel);
        if (la.n_v_heads % la.n_k_heads != 0)
            throw common::Error::file(hf.path, "key linear_num_value_heads: " + std::to_string(la.n_v_heads) +
                                                   " must be a multiple of linear_num_key_heads (" +
                                                   std::to_string(la.n_k_heads) + ")");

        // MoE as Qwen3-MoE (mlp_only_layers, decoder_sparse_step), with Qwen3NextConfig's defaults.
        c.n_experts = families::has_key(hf, "num_experts") ? hf.num_experts : 512;
        c.top_k = families::has_key(hf, "num_experts_per_tok") ? hf.num_experts_per_tok : 10;
        c.expert_intermediate = families::has_key(hf, "moe_intermediate_size") ? hf.moe_intermediate_size : 512;
        c.norm_topk_prob = hf.norm_topk_prob.value_or(true);
        c.shared_intermediate = int_key(hf, "shared_expert_intermediate_size", kDefaultSharedWidth, 1, hf_limits::kIntermediate);
        if (c.n_experts * c.n_layers > hf_limits::kExpertMatrices)  // the default 512 was not bounded by the parser
            throw common::Error::file(hf.path, "key num_experts: " + std::to_string(c.n_experts) + " experts x " +
                                                   std::to_string(c.n_layers) + " layers is more than " +
                                                   std::to_string(hf_limits::kExpertMatrices) + " experts in all");
        const int64_t step = hf.decoder_sparse_step;
        for (int64_t l = 0; l < c.n_layers; ++l) {
            const bool dense_only = std::find(hf.mlp_only_layers.begin(), hf.mlp_only_layers.end(), l) != hf.mlp_only_layers.end();
            c.layer_is_moe[static_cast<size_t>(l)] = !dense_only && c.n_experts > 0 && (l + 1) % step == 0;
        }
        if (c.n_moe_layers() > 0) {
            if (c.top_k < 1 || c.top_k > c.n_experts)
                throw common::Error::file(hf.path, "key num_experts_per_tok: " + std::to_string(c.top_k) +
                                                       " must be between 1 and num_experts (" + std::to_string(c.n_experts) + ")");
            if (c.expert_intermediate < 1)
                throw common::Error::file(hf.path, "key moe_intermediate_size: must be at least 1 for a MoE layer");
        }
        if (c.n_moe_layers() < c.n_layers && c.intermediate < 1)
            throw common::Error::file(hf.path, "key intermediate_size: must be at least 1 when a layer has a dense MLP");
        return c;
    }

    WeightPlan plan_weights(const ModelConfig & cfg, bool fused_experts) const override {
        WeightPlan plan;
        families::plan_embedding(plan, cfg);
        for (int l = 0; l < cfg.n_layers; ++l) {
            const std::string p = layer_prefix(l);
            families::add(plan, l, Slot::InputNorm, {cfg.hidden}, p + "input_layernorm.weight");
            families::add(plan, l, Slot::PostNorm, {cfg.hidden}, p + "post_attention_layernorm.weight");
            if (cfg.layer_is_linear[static_cast<size_t>(l)]) plan_linear_attention(plan, cfg, l);
            else plan_gated_attention(plan, cfg, l);
            if (!cfg.layer_is_moe[static_cast<size_t>(l)]) {
                families::plan_dense_mlp(plan, cfg, l, cfg.intermediate);
                continue;
            }
            families::plan_moe(plan, cfg, l, fused_experts);
            const std::string m = p + "mlp.";
            const int64_t H = cfg.hidden, Is = cfg.shared_intermediate;
            families::add(plan, l, Slot::SharedGate, {Is, H}, m + "shared_expert.gate_proj.weight");
            families::add(plan, l, Slot::SharedUp, {Is, H}, m + "shared_expert.up_proj.weight");
            families::add(plan, l, Slot::SharedDown, {H, Is}, m + "shared_expert.down_proj.weight");
            families::add(plan, l, Slot::SharedExpertGate, {1, H}, m + "shared_expert_gate.weight");
        }
        return plan;
    }

    at::Tensor forward(const ModelConfig & cfg, const Weights & w, const at::Tensor & ids, int run_layers,
                       Tap & tap) const override {
        // Qwen3NextTopKRouter: softmax in fp32, top-k, renormalised (norm_topk_prob), weights fp32.
        const ops::MoeOptions moe{.top_k = cfg.top_k, .renormalise = cfg.norm_topk_prob,
                                  .weights_in_activation_dtype = false};
        at::Tensor h = at::embedding(w.embed, ids.to(w.embed_device));              // [B,T,H]
        const int64_t T = ids.size(1);
        at::Tensor cos, sin;                                                         // [T,R] (R rotary dims)
        for (int l = 0; l < run_layers; ++l) {
            const c10::Device dev = w.compute[static_cast<size_t>(l)];
            if (h.device() != dev) h = h.to(dev);
            if (!cos.defined() || cos.device() != dev)
                std::tie(cos, sin) = families::rope_tables(cfg, T, h.scalar_type(), dev);
            const LayerWeights lw = w.fetch(l);
            at::Tensor a = ops::rms_norm_zero_centred(h, lw.input_norm, cfg.rms_eps);  // [B,T,H]
            tap(Site::LnAttn, l, a);
            h = h + (cfg.layer_is_linear[static_cast<size_t>(l)]
                         ? ops::gated_delta_net(a, lw.linear_attn, cfg.linear_attn)
                         : ops::gated_attention(a, lw.attn, families::attn_options(cfg, l), cos, sin));  // [B,T,H]
            at::Tensor m = ops::rms_norm_zero_centred(h, lw.post_norm, cfg.rms_eps);  // [B,T,H]
            tap(Site::LnMlp, l, m);
            h = h + (cfg.layer_is_moe[static_cast<size_t>(l)] ? moe_with_shared(m, lw.moe, moe, tap.experts(l))  // [B,T,H]
                                                               : ops::swiglu_mlp(m, lw.mlp));
            tap(Site::Residual, l, h);
        }
        return h;
    }

    at::Tensor final_norm(const ModelConfig & cfg, const at::Tensor & h, const at::Tensor & gain) const override {
        return ops::rms_norm_zero_centred(h, gain, cfg.rms_eps);
    }

private:
    static void parse_layer_types(const HfConfig & hf, ModelConfig & c) {
        c.layer_is_linear.assign(static_cast<size_t>(c.n_layers), false);
        if (!hf.layer_types.empty()) {
            if (hf.layer_types.size() != static_cast<size_t>(c.n_layers))
                throw common::Error::file(hf.path, "key layer_types: " + std::to_string(hf.layer_types.size()) +
                                                       " entries for " + std::to_string(c.n_layers) + " layers");
            for (size_t l = 0; l < hf.layer_types.size(); ++l) {
                const std::string & t = hf.layer_types[l];
                if (t != "linear_attention" && t != "full_attention")
                    throw common::Error::file(hf.path, "key layer_types: entry " + std::to_string(l) + " is \"" + t +
                                                           "\"; qwen3_next layers are linear_attention or full_attention");
                c.layer_is_linear[l] = t == "linear_attention";
            }
            return;
        }
        // Qwen3NextConfig: layer i is full attention iff (i + 1) % full_attention_interval == 0.
        const int64_t interval = int_key(hf, "full_attention_interval", kDefaultInterval, 1, hf_limits::kLayers);
        for (int64_t l = 0; l < c.n_layers; ++l) c.layer_is_linear[static_cast<size_t>(l)] = (l + 1) % interval != 0;
    }

    static void plan_gated_attention(WeightPlan & plan, const ModelConfig & cfg, int l) {
        const std::string p = layer_prefix(l) + "self_attn.";
        const int64_t H = cfg.hidden, D = cfg.head_dim, qw = cfg.n_heads * D, kvw = cfg.n_kv_heads * D;
        families::add(plan, l, Slot::Q, {2 * qw, H}, p + "q_proj.weight");  // [query | gate] per head
        families::add(plan, l, Slot::K, {kvw, H}, p + "k_proj.weight");
        families::add(plan, l, Slot::V, {kvw, H}, p + "v_proj.weight");
        families::add(plan, l, Slot::O, {H, qw}, p + "o_proj.weight");
        if (cfg.qkv_bias) {  // attention_bias: HF gives all four projections a bias
            families::add(plan, l, Slot::QBias, {2 * qw}, p + "q_proj.bias");
            families::add(plan, l, Slot::KBias, {kvw}, p + "k_proj.bias");
            families::add(plan, l, Slot::VBias, {kvw}, p + "v_proj.bias");
            families::add(plan, l, Slot::OBias, {H}, p + "o_proj.bias");
        }
        families::add(plan, l, Slot::QNorm, {D}, p + "q_norm.weight");
        families::add(plan, l, Slot::KNorm, {D}, p + "k_norm.weight");
    }

    static void plan_linear_attention(WeightPlan & plan, const ModelConfig & cfg, int l) {
        const std::string p = layer_prefix(l) + "linear_attn.";
        const auto & la = cfg.linear_attn;
        const int64_t H = cfg.hidden, kd = la.n_k_heads * la.k_head_dim, vd = la.n_v_heads * la.v_head_dim;
        families::add(plan, l, Slot::LinearQkvz, {2 * kd + 2 * vd, H}, p + "in_proj_qkvz.weight");
        families::add(plan, l, Slot::LinearBa, {2 * la.n_v_heads, H}, p + "in_proj_ba.weight");
        families::add(plan, l, Slot::LinearConv, {2 * kd + vd, 1, cfg.linear_conv_kernel}, p + "conv1d.weight");
        families::add(plan, l, Slot::LinearDtBias, {la.n_v_heads}, p + "dt_bias");
        families::add(plan, l, Slot::LinearALog, {la.n_v_heads}, p + "A_log");
        families::add(plan, l, Slot::LinearNorm, {la.v_head_dim}, p + "norm.weight");
        families::add(plan, l, Slot::LinearOut, {H, vd}, p + "out_proj.weight");
    }

    // Qwen3NextSparseMoeBlock: routed experts + sigmoid(x g^T) * shared_expert(x), in the
    // activation dtype as HF adds them. The routed part is ops::moe (fused kernels or ATen; its
    // observer sees the routed experts only); the shared expert and its gate are plain ATen on
    // either path.
    static at::Tensor moe_with_shared(const at::Tensor & m, const ops::MoeWeights & w, const ops::MoeOptions & opt,
                                      const ExpertObserver & observe) {
        at::Tensor routed = ops::moe(m, w, opt, observe);                              // [B,T,H]
        at::Tensor shared = ops::swiglu_mlp(m, w.shared);                              // [B,T,H]
        return routed + at::sigmoid(at::linear(m, w.shared_gate)) * shared;            // [B,T,H]
    }
};

}  // namespace

const Family & qwen3_next_family() {
    static const Qwen3NextFamily f;
    return f;
}

}  // namespace extractor
