// `extract inspect MODEL_DIR`: family, parameter counts (total, active per token), layers, experts
// and the weight memory per dtype, from config.json. When the directory has weights, their
// headers are checked against the config (every tensor present, shaped and typed as the config
// implies; a bad header fails with its exit code) and the output says so; tensor data is never
// read, and the output says that too, so a zero exit is not mistaken for "the weights are good".
#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "extractor/checkpoint/sharded.h"
#include "extractor/cli/verbs.h"
#include "extractor/model.h"
#include "extractor/placement.h"

namespace extractor::cli {

int run_inspect(const InspectOptions & opt, const common::Output & out) {
    HfConfig hf = read_hf_config(opt.model_dir);
    const Family & family = find_family(hf.model_type);
    ModelConfig cfg = family.parse_config(hf);
    WeightPlan plan = family.plan_weights(cfg, false);
    MemoryEstimate e = estimate_memory(cfg, plan, 2, static_cast<int>(cfg.n_layers), 1, 1);
    MemoryEstimate e32 = estimate_memory(cfg, plan, 4, static_cast<int>(cfg.n_layers), 1, 1);
    nlohmann::json weights;
    if (opt.config_only) {
        weights = {{"weights_checked", "none"}, {"weights_note", "--config-only: weights not opened"}};
    } else if (!Checkpoint::present(opt.model_dir)) {
        weights = {{"weights_checked", "none"},
                   {"weights_note", "no model.safetensors or model.safetensors.index.json: config.json only"}};
    } else {
        Model m;
        m.dir = opt.model_dir;
        m.hf = hf;
        m.cfg = cfg;
        m.family = &family;
        Checkpoint ck = Checkpoint::open(opt.model_dir);
        m.fused_experts = stores_fused_experts(cfg, ck);  // the layout decides the tensor names
        m.plan = m.fused_experts ? family.plan_weights(cfg, true) : plan;
        WeightsCheck w = check_weights(m, ck);
        weights = {{"weights_checked", "headers"},
                   {"weights_files", w.files.size()},
                   {"weights_tensors_checked", w.tensors},
                   {"weights_note", "headers of " + std::to_string(w.files.size()) + " file(s) valid; " +
                                        std::to_string(w.tensors) +
                                        " tensors present with the shapes and dtypes config.json implies; tensor data not read"}};
    }
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
        // MXFP4 experts (gpt_oss) count at their packed size (4.25 bits a weight) in every dtype:
        // only the rest of the model follows the dtype.
        {"weights_loaded_bytes_bf16", e.total_bytes},
        {"weights_loaded_bytes_f16", e.total_bytes},
        {"weights_loaded_bytes_f32", e32.total_bytes},
        {"weights_loaded_bf16", common::format_bytes(static_cast<double>(e.total_bytes))},
        {"weights_loaded_f32", common::format_bytes(static_cast<double>(e32.total_bytes))},
        {"weights_data_read", false},
    };
    if (cfg.mxfp4_experts) {
        ModelConfig dq = cfg;
        dq.dequantize_experts = true;
        const MemoryEstimate ed = estimate_memory(dq, plan, 2, static_cast<int>(cfg.n_layers), 1, 1);
        o["experts_storage"] = "mxfp4 (packed: 4.25 bits a weight; 32 e2m1 values + one e8m0 scale per block)";
        o["weights_loaded_bytes_bf16_dequantized"] = ed.total_bytes;  // extract run --dequantize
        o["weights_loaded_bf16_dequantized"] = common::format_bytes(static_cast<double>(ed.total_bytes));
    }
    o.update(weights);
    out.object(o);
    return 0;
}

}  // namespace extractor::cli
