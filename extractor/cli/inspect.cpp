// `extract inspect MODEL_DIR`: family, parameter counts (total, active per token), layers, experts
// and the weight memory per dtype, from config.json alone (no weights are read).
#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "extractor/cli/verbs.h"
#include "extractor/placement.h"

namespace extractor::cli {

int run_inspect(const InspectOptions & opt, const common::Output & out) {
    HfConfig hf = read_hf_config(opt.model_dir);
    const Family & family = find_family(hf.model_type);
    ModelConfig cfg = family.parse_config(hf);
    WeightPlan plan = family.plan_weights(cfg, false);
    MemoryEstimate e = estimate_memory(cfg, plan, 2, static_cast<int>(cfg.n_layers), 1, 1);
    nlohmann::json o = {
        {"model_type", cfg.model_type},
        {"family", std::string(family.hf_reference())},
        {"layers", cfg.n_layers},
        {"hidden_size", cfg.hidden},
        {"heads", cfg.n_heads},
        {"kv_heads", cfg.n_kv_heads},
        {"head_dim", cfg.head_dim},
        {"experts", cfg.n_experts},
        {"experts_per_token", cfg.top_k},
        {"moe_layers", cfg.n_moe_layers()},
        {"params_total", e.params_total},
        {"params_active", e.params_active},
        {"checkpoint_dtype", cfg.checkpoint_dtype},
        // What `extract run` loads: everything except lm_head and the final norm, all experts.
        {"weights_loaded_bytes_bf16", e.total_bytes},
        {"weights_loaded_bytes_f16", e.total_bytes},
        {"weights_loaded_bytes_f32", e.total_bytes * 2},
        {"weights_loaded_bf16", common::format_bytes(static_cast<double>(e.total_bytes))},
        {"weights_loaded_f32", common::format_bytes(static_cast<double>(e.total_bytes * 2))},
    };
    out.object(o);
    return 0;
}

}  // namespace extractor::cli
