// Pieces shared by the family files: config keys every family reads, weight-table rows written
// once (HF tensor names: docs/checkpoint-formats.md#tensor-names), and the Weights plumbing (slots, offload fetch).
#include <ATen/ATen.h>

#include "common/error.h"
#include "extractor/families/family.h"
#include "extractor/offload.h"

namespace extractor {

int64_t ModelConfig::n_moe_layers() const {
    int64_t n = 0;
    for (bool b : layer_is_moe) n += b ? 1 : 0;
    return n;
}

std::string_view slot_name(Slot slot) {
    switch (slot) {
    case Slot::Embed: return "embed";
    case Slot::InputNorm: return "input_norm";
    case Slot::PostNorm: return "post_norm";
    case Slot::Q: return "q";
    case Slot::K: return "k";
    case Slot::V: return "v";
    case Slot::O: return "o";
    case Slot::QBias: return "q_bias";
    case Slot::KBias: return "k_bias";
    case Slot::VBias: return "v_bias";
    case Slot::OBias: return "o_bias";
    case Slot::QNorm: return "q_norm";
    case Slot::KNorm: return "k_norm";
    case Slot::Gate: return "gate";
    case Slot::Up: return "up";
    case Slot::Down: return "down";
    case Slot::GateBias: return "gate_bias";
    case Slot::UpBias: return "up_bias";
    case Slot::DownBias: return "down_bias";
    case Slot::Router: return "router";
    case Slot::ExpertsGateUp: return "experts_gate_up";
    case Slot::ExpertsDown: return "experts_down";
    case Slot::Sinks: return "sinks";
    case Slot::RouterBias: return "router_bias";
    case Slot::ExpertsGateUpBias: return "experts_gate_up_bias";
    case Slot::ExpertsDownBias: return "experts_down_bias";
    case Slot::ExpertsGateUpScales: return "experts_gate_up_scales";
    case Slot::ExpertsDownScales: return "experts_down_scales";
    case Slot::RouterScoreBias: return "router_score_bias";
    case Slot::SharedGate: return "shared_gate";
    case Slot::SharedUp: return "shared_up";
    case Slot::SharedDown: return "shared_down";
    case Slot::SharedExpertGate: return "shared_expert_gate";
    case Slot::LinearQkvz: return "linear_qkvz";
    case Slot::LinearBa: return "linear_ba";
    case Slot::LinearConv: return "linear_conv";
    case Slot::LinearDtBias: return "linear_dt_bias";
    case Slot::LinearALog: return "linear_a_log";
    case Slot::LinearNorm: return "linear_norm";
    case Slot::LinearOut: return "linear_out";
    }
    return "?";
}

uint64_t DestSpec::params() const {
    uint64_t k = 1;
    for (auto s : shape) k *= static_cast<uint64_t>(s);
    if (storage == Storage::Mxfp4Blocks) return 2 * k;
    if (storage == Storage::Mxfp4Scales) return 0;
    return k;
}

uint64_t DestSpec::bytes(int bytes_per_element, bool dequantized) const {
    uint64_t k = 1;
    for (auto s : shape) k *= static_cast<uint64_t>(s);
    switch (storage) {
    case Storage::RunDtype: return k * static_cast<uint64_t>(bytes_per_element);
    case Storage::F32: return k * 4;
    case Storage::Mxfp4Blocks: return dequantized ? 2 * k * static_cast<uint64_t>(bytes_per_element) : k;
    case Storage::Mxfp4Scales: return dequantized ? 0 : k;
    }
    return k;
}

uint64_t WeightPlan::params_total() const {
    uint64_t n = 0;
    for (const auto & d : dests) n += d.params();
    return n;
}

uint64_t WeightPlan::params_experts() const {
    uint64_t n = 0;
    for (const auto & d : dests)
        if (d.slot == Slot::ExpertsGateUp || d.slot == Slot::ExpertsDown || d.slot == Slot::ExpertsGateUpBias ||
            d.slot == Slot::ExpertsDownBias)
            n += d.params();
    return n;
}

uint64_t WeightPlan::bytes_layer(int layer, int bytes_per_element, bool dequantized) const {
    uint64_t n = 0;
    for (const auto & d : dests)
        if (d.layer == layer) n += d.bytes(bytes_per_element, dequantized);
    return n;
}

uint64_t WeightPlan::numel_total() const {
    uint64_t n = 0;
    for (const auto & d : dests) {
        uint64_t k = 1;
        for (auto s : d.shape) k *= static_cast<uint64_t>(s);
        n += k;
    }
    return n;
}

uint64_t WeightPlan::numel_layer(int layer) const {
    uint64_t n = 0;
    for (const auto & d : dests) {
        if (d.layer != layer) continue;
        uint64_t k = 1;
        for (auto s : d.shape) k *= static_cast<uint64_t>(s);
        n += k;
    }
    return n;
}

at::Tensor * LayerWeights::slot(Slot s) {
    switch (s) {
    case Slot::InputNorm: return &input_norm;
    case Slot::PostNorm: return &post_norm;
    case Slot::Q: return &attn.q.weight;
    case Slot::K: return &attn.k.weight;
    case Slot::V: return &attn.v.weight;
    case Slot::O: return &attn.o.weight;
    case Slot::QBias: return &attn.q.bias;
    case Slot::KBias: return &attn.k.bias;
    case Slot::VBias: return &attn.v.bias;
    case Slot::OBias: return &attn.o.bias;
    case Slot::QNorm: return &attn.q_norm;
    case Slot::KNorm: return &attn.k_norm;
    case Slot::Gate: return &mlp.gate.weight;
    case Slot::Up: return &mlp.up.weight;
    case Slot::Down: return &mlp.down.weight;
    case Slot::GateBias: return &mlp.gate.bias;
    case Slot::UpBias: return &mlp.up.bias;
    case Slot::DownBias: return &mlp.down.bias;
    case Slot::Router: return &moe.router;
    case Slot::ExpertsGateUp: return &moe.gate_up;
    case Slot::ExpertsDown: return &moe.down;
    case Slot::Sinks: return &attn.sinks;
    case Slot::RouterBias: return &moe.router_bias;
    case Slot::ExpertsGateUpBias: return &moe.gate_up_bias;
    case Slot::ExpertsDownBias: return &moe.down_bias;
    case Slot::ExpertsGateUpScales: return &moe.gate_up_scales;
    case Slot::ExpertsDownScales: return &moe.down_scales;
    case Slot::RouterScoreBias: return &moe.score_bias;
    case Slot::SharedGate: return &moe.shared.gate.weight;
    case Slot::SharedUp: return &moe.shared.up.weight;
    case Slot::SharedDown: return &moe.shared.down.weight;
    case Slot::SharedExpertGate: return &moe.shared_gate;
    case Slot::LinearQkvz: return &linear_attn.in_qkvz;
    case Slot::LinearBa: return &linear_attn.in_ba;
    case Slot::LinearConv: return &linear_attn.conv;
    case Slot::LinearDtBias: return &linear_attn.dt_bias;
    case Slot::LinearALog: return &linear_attn.a_log;
    case Slot::LinearNorm: return &linear_attn.norm;
    case Slot::LinearOut: return &linear_attn.out;
    case Slot::Embed: break;
    }
    throw common::Error::internal("slot " + std::string(slot_name(s)) + " is not a layer slot");
}

std::vector<at::Tensor *> LayerWeights::all() {
    return {&input_norm,      &post_norm,      &attn.q.weight, &attn.k.weight,   &attn.v.weight, &attn.o.weight,
            &attn.q.bias,     &attn.k.bias,    &attn.v.bias,   &attn.o.bias,     &attn.q_norm,   &attn.k_norm,
            &mlp.gate.weight, &mlp.up.weight,  &mlp.down.weight, &mlp.gate.bias, &mlp.up.bias,   &mlp.down.bias,
            &moe.router,      &moe.gate_up,    &moe.down,        &attn.sinks,    &moe.router_bias,
            &moe.gate_up_bias, &moe.down_bias, &moe.gate_up_scales, &moe.down_scales, &moe.score_bias,
            &moe.shared.gate.weight, &moe.shared.up.weight, &moe.shared.down.weight, &moe.shared_gate,
            &linear_attn.in_qkvz, &linear_attn.in_ba, &linear_attn.conv, &linear_attn.dt_bias, &linear_attn.a_log,
            &linear_attn.norm, &linear_attn.out};
}

LayerWeights Weights::fetch(int layer) const {
    if (streamer) return streamer->fetch(layer);
    LayerWeights lw = layers[layer];
    if (!offloaded(layer)) return lw;
    // Pinned host memory -> compute device; non_blocking lets the copies queue behind the
    // previous layer's kernels instead of stalling the host.
    for (at::Tensor * t : lw.all())
        if (t->defined()) *t = t->to(compute[layer], /*non_blocking=*/true);
    return lw;
}

namespace families {

namespace {
std::string layer_prefix(int layer) { return "model.layers." + std::to_string(layer) + "."; }
}  // namespace

bool has_key(const HfConfig & hf, const char * key) {
    auto it = hf.raw.find(key);
    return it != hf.raw.end() && !it->is_null();
}

ModelConfig parse_common(const HfConfig & hf, double default_eps, double default_theta) {
    ModelConfig c;
    c.model_type = hf.model_type;
    c.vocab = hf.vocab_size;
    c.hidden = hf.hidden_size;
    c.n_layers = hf.num_hidden_layers;
    c.n_heads = hf.num_attention_heads;
    c.n_kv_heads = hf.num_key_value_heads;
    c.head_dim = hf.head_dim.value_or(hf.hidden_size / hf.num_attention_heads);
    c.intermediate = hf.intermediate_size;
    c.rms_eps = hf.rms_norm_eps.value_or(default_eps);
    c.qkv_bias = c.o_bias = hf.attention_bias;
    c.mlp_bias = hf.mlp_bias;
    c.tie_embeddings = hf.tie_word_embeddings;
    c.checkpoint_dtype = hf.dtype;
    c.sliding_window.assign(static_cast<size_t>(c.n_layers), std::nullopt);
    c.layer_is_moe.assign(static_cast<size_t>(c.n_layers), false);
    if (c.head_dim <= 0 || c.head_dim % 2 != 0)
        throw common::Error::file(hf.path, "head_dim " + std::to_string(c.head_dim) + " must be positive and even");
    // HF: dim = int(head_dim * partial_rotary_factor); an odd one gives cos/sin one column wider
    // than the rotated half-pairs and transformers fails; fewer than 2 rotates nothing.
    const int64_t rotary = static_cast<int64_t>(static_cast<double>(c.head_dim) * hf.rope.partial_rotary_factor);
    if (rotary < 2 || rotary % 2 != 0)
        throw common::Error::file(hf.path, "key partial_rotary_factor: head_dim " + std::to_string(c.head_dim) + " x " +
                                               std::to_string(hf.rope.partial_rotary_factor) + " = " + std::to_string(rotary) +
                                               " rotary dims; must be even and at least 2")
            .with("file", hf.path)
            .with("key", "partial_rotary_factor");
    c.rope = ops::make_rope(hf.rope, default_theta, c.head_dim, hf.max_position_embeddings);
    return c;
}

void add(WeightPlan & plan, int layer, Slot slot, std::vector<int64_t> shape, std::string name) {
    plan.dests.push_back({layer, slot, shape});
    plan.sources.push_back({std::move(name), std::move(shape), layer, slot, -1, 0});
}

void plan_embedding(WeightPlan & plan, const ModelConfig & cfg) {
    add(plan, -1, Slot::Embed, {cfg.vocab, cfg.hidden}, "model.embed_tokens.weight");
}

void plan_attention(WeightPlan & plan, const ModelConfig & cfg, int l) {
    const std::string p = layer_prefix(l);
    const int64_t H = cfg.hidden, qw = cfg.n_heads * cfg.head_dim, kvw = cfg.n_kv_heads * cfg.head_dim;
    add(plan, l, Slot::InputNorm, {H}, p + "input_layernorm.weight");
    add(plan, l, Slot::PostNorm, {H}, p + "post_attention_layernorm.weight");
    add(plan, l, Slot::Q, {qw, H}, p + "self_attn.q_proj.weight");
    add(plan, l, Slot::K, {kvw, H}, p + "self_attn.k_proj.weight");
    add(plan, l, Slot::V, {kvw, H}, p + "self_attn.v_proj.weight");
    add(plan, l, Slot::O, {H, qw}, p + "self_attn.o_proj.weight");
    if (cfg.qkv_bias) {
        add(plan, l, Slot::QBias, {qw}, p + "self_attn.q_proj.bias");
        add(plan, l, Slot::KBias, {kvw}, p + "self_attn.k_proj.bias");
        add(plan, l, Slot::VBias, {kvw}, p + "self_attn.v_proj.bias");
    }
    if (cfg.o_bias) add(plan, l, Slot::OBias, {H}, p + "self_attn.o_proj.bias");
    if (cfg.qk_norm == ops::QkNorm::PerHead) {
        add(plan, l, Slot::QNorm, {cfg.head_dim}, p + "self_attn.q_norm.weight");
        add(plan, l, Slot::KNorm, {cfg.head_dim}, p + "self_attn.k_norm.weight");
    } else if (cfg.qk_norm == ops::QkNorm::Whole) {
        add(plan, l, Slot::QNorm, {qw}, p + "self_attn.q_norm.weight");
        add(plan, l, Slot::KNorm, {kvw}, p + "self_attn.k_norm.weight");
    }
}

void plan_dense_mlp(WeightPlan & plan, const ModelConfig & cfg, int l, int64_t I) {
    const std::string p = layer_prefix(l) + "mlp.";
    const int64_t H = cfg.hidden;
    add(plan, l, Slot::Gate, {I, H}, p + "gate_proj.weight");
    add(plan, l, Slot::Up, {I, H}, p + "up_proj.weight");
    add(plan, l, Slot::Down, {H, I}, p + "down_proj.weight");
    if (cfg.mlp_bias) {
        add(plan, l, Slot::GateBias, {I}, p + "gate_proj.bias");
        add(plan, l, Slot::UpBias, {I}, p + "up_proj.bias");
        add(plan, l, Slot::DownBias, {H}, p + "down_proj.bias");
    }
}

void plan_moe(WeightPlan & plan, const ModelConfig & cfg, int l, bool fused_experts) {
    const std::string p = layer_prefix(l) + "mlp.";
    const int64_t H = cfg.hidden, E = cfg.n_experts, I = cfg.expert_intermediate;
    add(plan, l, Slot::Router, {E, H}, p + "gate.weight");
    if (fused_experts) {
        add(plan, l, Slot::ExpertsGateUp, {E, 2 * I, H}, p + "experts.gate_up_proj");
        add(plan, l, Slot::ExpertsDown, {E, H, I}, p + "experts.down_proj");
        return;
    }
    // Per-expert tensors are fused at load time into the v5 layout the MoE op runs on.
    plan.dests.push_back({l, Slot::ExpertsGateUp, {E, 2 * I, H}});
    plan.dests.push_back({l, Slot::ExpertsDown, {E, H, I}});
    for (int64_t e = 0; e < E; ++e) {
        const std::string ep = p + "experts." + std::to_string(e) + ".";
        plan.sources.push_back({ep + "gate_proj.weight", {I, H}, l, Slot::ExpertsGateUp, e, 0});
        plan.sources.push_back({ep + "up_proj.weight", {I, H}, l, Slot::ExpertsGateUp, e, I});
        plan.sources.push_back({ep + "down_proj.weight", {H, I}, l, Slot::ExpertsDown, e, 0});
    }
}

void plan_mxfp4_experts(WeightPlan & plan, const ModelConfig & cfg, int l) {
    const std::string p = layer_prefix(l) + "mlp.";
    const int64_t H = cfg.hidden, E = cfg.n_experts, I = cfg.expert_intermediate;
    add(plan, l, Slot::Router, {E, H}, p + "router.weight");
    add(plan, l, Slot::RouterBias, {E}, p + "router.bias");
    auto packed = [&](Slot blocks, Slot scales, int64_t rows, int64_t cols, const std::string & name) {
        const int64_t G = cols / 32;
        plan.dests.push_back({l, blocks, {E, rows, G, 16}, Storage::Mxfp4Blocks});
        plan.sources.push_back({p + "experts." + name + "_blocks", {E, rows, G, 16}, l, blocks, -1, 0, "U8"});
        plan.dests.push_back({l, scales, {E, rows, G}, Storage::Mxfp4Scales});
        plan.sources.push_back({p + "experts." + name + "_scales", {E, rows, G}, l, scales, -1, 0, "U8"});
    };
    packed(Slot::ExpertsGateUp, Slot::ExpertsGateUpScales, 2 * I, H, "gate_up_proj");
    add(plan, l, Slot::ExpertsGateUpBias, {E, 2 * I}, p + "experts.gate_up_proj_bias");
    packed(Slot::ExpertsDown, Slot::ExpertsDownScales, H, I, "down_proj");
    add(plan, l, Slot::ExpertsDownBias, {E, H}, p + "experts.down_proj_bias");
}

ops::AttnOptions attn_options(const ModelConfig & cfg, int layer) {
    ops::AttnOptions o;
    o.n_heads = cfg.n_heads;
    o.n_kv_heads = cfg.n_kv_heads;
    o.head_dim = cfg.head_dim;
    o.qk_norm = cfg.qk_norm;
    o.qk_norm_eps = cfg.rms_eps;
    o.clip_qkv = cfg.clip_qkv;
    o.sliding_window = cfg.sliding_window[static_cast<size_t>(layer)];
    return o;
}

std::pair<at::Tensor, at::Tensor> rope_tables(const ModelConfig & cfg, int64_t T, at::ScalarType dtype,
                                              c10::Device device) {
    return ops::rope_cos_sin(cfg.rope, T, dtype, device);
}

at::Tensor decoder_stack(const ModelConfig & cfg, const Weights & w, const at::Tensor & ids, int run_layers, Tap & tap,
                         const MlpBlock & mlp, Norm norm) {
    at::Tensor h = at::embedding(w.embed, ids.to(w.embed_device));                  // [B,T,H]
    const int64_t T = ids.size(1);
    at::Tensor cos, sin;                                                             // [T,R], R: the rotated width
    for (int l = 0; l < run_layers; ++l) {
        const c10::Device dev = w.compute[static_cast<size_t>(l)];
        if (h.device() != dev) h = h.to(dev);
        if (!cos.defined() || cos.device() != dev) std::tie(cos, sin) = rope_tables(cfg, T, h.scalar_type(), dev);
        const LayerWeights lw = w.fetch(l);
        at::Tensor a = norm(h, lw.input_norm, cfg.rms_eps);                          // [B,T,H]
        tap(Site::LnAttn, l, a);
        h = h + ops::attention(a, lw.attn, attn_options(cfg, l), cos, sin);          // [B,T,H]
        at::Tensor m = norm(h, lw.post_norm, cfg.rms_eps);                           // [B,T,H]
        tap(Site::LnMlp, l, m);
        h = h + mlp(l, lw, m);                                                       // [B,T,H]
        tap(Site::Residual, l, h);
    }
    return h;
}

}  // namespace families
}  // namespace extractor
