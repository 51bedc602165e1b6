// Dense decoder families: Llama, Qwen2, Qwen3. Follows HF transformers v5
// models/llama/modeling_llama.py (LlamaDecoderLayer.forward), models/qwen2/modular_qwen2.py and
// models/qwen3/modeling_qwen3.py. Differences, all as options of the shared ops:
//   Llama  optional attention_bias (q/k/v/o) and mlp_bias; llama3 RoPE scaling.
//   Qwen2  q/k/v bias always, o_proj never; sliding window only with use_sliding_window.
//   Qwen3  per-head q_norm/k_norm over head_dim, after the view to heads (unlike OLMoE).
#include <ATen/ATen.h>

#include "extractor/families/family.h"

namespace extractor {
namespace {

// Qwen2/Qwen3 sliding windows (docs/model-math.md#sliding-windows): only when use_sliding_window; which
// layers slide comes from layer_types when written, else layers >= max_window_layers.
void qwen_sliding_windows(const HfConfig & hf, ModelConfig & c, int64_t default_max_window_layers) {
    if (!hf.use_sliding_window || !hf.sliding_window) return;
    for (int64_t l = 0; l < c.n_layers; ++l) {
        bool slides = hf.layer_types.size() == static_cast<size_t>(c.n_layers)
                          ? hf.layer_types[static_cast<size_t>(l)] == "sliding_attention"
                          : l >= hf.max_window_layers.value_or(default_max_window_layers);
        if (slides) c.sliding_window[static_cast<size_t>(l)] = *hf.sliding_window;
    }
}

class DenseFamily : public Family {
public:
    WeightPlan plan_weights(const ModelConfig & cfg, bool) const override {
        WeightPlan plan;
        families::plan_embedding(plan, cfg);
        for (int l = 0; l < cfg.n_layers; ++l) {
            families::plan_attention(plan, cfg, l);
            families::plan_dense_mlp(plan, cfg, l, cfg.intermediate);
        }
        return plan;
    }

    at::Tensor forward(const ModelConfig & cfg, const Weights & w, const at::Tensor & ids, int run_layers,
                       Tap & tap) const override {
        return families::decoder_stack(cfg, w, ids, run_layers, tap,
                                       [](int, const LayerWeights & lw, const at::Tensor & m) { return ops::swiglu_mlp(m, lw.mlp); });
    }
};

class LlamaFamily final : public DenseFamily {
public:
    std::string_view name() const override { return "llama"; }
    std::string_view hf_reference() const override { return "models/llama/modeling_llama.py LlamaDecoderLayer"; }
    ModelConfig parse_config(const HfConfig & hf) const override {
        ModelConfig c = families::parse_common(hf, 1e-6, 10000.0);
        return c;
    }
};

class Qwen2Family final : public DenseFamily {
public:
    std::string_view name() const override { return "qwen2"; }
    std::string_view hf_reference() const override { return "models/qwen2/modular_qwen2.py Qwen2DecoderLayer"; }
    ModelConfig parse_config(const HfConfig & hf) const override {
        ModelConfig c = families::parse_common(hf, 1e-6, 10000.0);
        c.qkv_bias = true;   // hard-coded in Qwen2Attention
        c.o_bias = false;
        c.mlp_bias = false;
        qwen_sliding_windows(hf, c, 28);
        return c;
    }
};

class Qwen3Family final : public DenseFamily {
public:
    std::string_view name() const override { return "qwen3"; }
    std::string_view hf_reference() const override { return "models/qwen3/modeling_qwen3.py Qwen3DecoderLayer"; }
    ModelConfig parse_config(const HfConfig & hf) const override {
        HfConfig h = hf;
        if (!h.head_dim) h.head_dim = 128;  // Qwen3Config's class default
        ModelConfig c = families::parse_common(h, 1e-6, 10000.0);
        c.mlp_bias = false;
        c.qk_norm = ops::QkNorm::PerHead;
        qwen_sliding_windows(hf, c, 28);
        return c;
    }
};

}  // namespace

const Family & llama_family() {
    static const LlamaFamily f;
    return f;
}
const Family & qwen2_family() {
    static const Qwen2Family f;
    return f;
}
const Family & qwen3_family() {
    static const Qwen3Family f;
    return f;
}

}  // namespace extractor
