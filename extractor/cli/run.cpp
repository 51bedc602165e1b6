// `extract run MODEL_DIR`: capture layernorm outputs (and optionally the residual stream).
#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "extractor/cli/verbs.h"

namespace extractor::cli {

int run_run(const RunVerbOptions & opt, const common::Output & out, const std::vector<CaptureSink *> & extra_sinks,
            FusedAnalysis * fused) {
    ExtractResult r = run_extraction(opt.extract, extra_sinks);
    if (opt.extract.plan_only) {
        out.object(r.metadata);
        return 0;
    }
    nlohmann::json o = {
        {"model_type", r.metadata["model"]["model_type"]},
        {"layers", r.metadata["layers_extracted"].size()},
        {"sites", r.metadata["sites"]},
        {"sequences", r.sequences},
        {"tokens", r.tokens},
        {"load_s", r.load_s},
        {"forward_s", r.forward_s},
        {"tokens_per_s", r.forward_s > 0 ? static_cast<double>(r.tokens) / r.forward_s : 0.0},
        {"gpu_used_bytes_peak", r.gpu_used_bytes_peak},
        {"gpu_used_bytes_baseline", r.gpu_used_bytes_baseline},
        {"allocator_reserved_bytes_peak", r.allocator_reserved_bytes_peak},
        {"weights_bytes", r.weights_bytes},
        {"out_dir", opt.extract.out_dir.empty() ? nlohmann::json(nullptr) : nlohmann::json(opt.extract.out_dir)},
    };
    if (opt.extract.absmax) o["absmax"] = r.absmax;
    if (r.metadata.contains("perplexity")) o["perplexity"] = r.metadata["perplexity"];
    if (!r.offload.is_null()) o["offload"] = r.offload;
    if (fused) o["analysis"] = fused->finish(r.metadata);
    out.object(o);
    return 0;
}

}  // namespace extractor::cli
