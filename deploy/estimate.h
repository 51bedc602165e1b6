// The memory a run needs on the GPU, from the checkpoint's config.json alone (no weights read):
// parameter count (every expert counted: all experts are resident, unlike the predecessor's
// top-k "effective" count), weight bytes at the run dtype, and a small allowance for activations
// of one batch. Used to pick offers when resources.min_vram_gb is "auto". With offload
// (resources.offload_gb: layers kept in pinned host memory, streamed to the last GPU by `extract
// run --max-memory cpu=SIZE`) that many GB of weights are off the GPUs, and the GPU holds the
// streamer's ring instead: two buffers (the layer running and the one copied ahead, extract's
// default --offload-prefetch 1), each the size of the largest decoder layer.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>

namespace deploy {

struct MemoryEstimate {
    int64_t params = 0;            // total, all experts
    int64_t params_active = 0;     // per token (top-k experts), for the summary only
    double weights_gb = 0;         // params x bytes per parameter
    double activations_gb = 0;     // one batch: hidden states, attention scores, captured sites
    double largest_layer_gb = 0;   // the largest decoder layer (all experts, its token mixer)
    double offload_gb = 0;         // weights kept in pinned host memory (min(offload_gb, weights_gb); 0: none)
    double ring_gb = 0;            // with offload: kOffloadRingBuffers x largest_layer_gb on the GPU; else 0
    double total_gb = 0;           // (weights - offload + activations) x safety factor + ring
    double per_gpu_gb = 0;         // total / gpu_count, what each GPU must hold
    std::string model_type;
};

// Buffers of the offload streamer's ring on the GPU: extract's --offload-prefetch (default 1) + 1.
constexpr int kOffloadRingBuffers = 2;

// Throws common::Error(usage) naming the missing config.json key. offload_gb: resources.offload_gb.
MemoryEstimate estimate_memory(const nlohmann::json & hf_config, const std::string & dtype, int64_t batch,
                               int64_t seq_len, int gpu_count, double safety_factor, double offload_gb = 0);

// config.json of a Hub model from $HF_ENDPOINT (default https://huggingface.co), with the token in
// the environment variable `token_env` when set. Throws Auth for gated repos, NotFound for 404,
// Network otherwise.
nlohmann::json fetch_hub_config(const std::string & hub_id, const std::string & revision, const std::string & token_env);

}  // namespace deploy
