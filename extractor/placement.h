// Where each layer's weights live and run: one GPU, several GPUs by per-device memory budgets
// (--max-memory 0=76GiB,1=76GiB,cpu=120GiB; balanced or sequential), and layers that do not fit
// kept in pinned CPU memory and streamed to a GPU when they run. The plan and the memory estimate
// (all experts counted) are computed before any byte is loaded, so a model that cannot fit is
// refused up front. Not here: the copying itself (model.cpp).
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "extractor/families/family.h"

namespace extractor {

struct MemoryBudget {
    std::vector<std::pair<int, uint64_t>> gpus;  // (cuda index, bytes)
    uint64_t cpu_bytes = 0;                      // for offloaded layers (0: no offload allowed)
    bool cpu_given = false;
};

// "0=76GiB,1=76GiB,cpu=120GiB". Throws common::Error(usage) naming the bad entry.
MemoryBudget parse_max_memory(const std::string & text);

enum class PlacementStrategy { Sequential, Balanced };
PlacementStrategy parse_placement_strategy(const std::string & text);

struct MemoryEstimate {
    uint64_t embed_bytes = 0;
    std::vector<uint64_t> layer_bytes;           // per layer, all experts counted
    uint64_t total_bytes = 0;                    // embedding + the layers that will be loaded
    uint64_t params_total = 0;                   // whole model incl. lm_head (for inspect)
    uint64_t params_active = 0;                  // per token: top-k experts instead of all
    uint64_t activation_bytes = 0;               // working set of one batch on one device
    uint64_t head_bytes = 0;                     // with_head: final norm + lm_head (untied), in layer_bytes.back()
};

// bytes_per_element: 2 for bf16/f16, 4 for f32. run_layers: layers that will be loaded.
// with_head (`--perplexity`): the final norm and lm_head load beside the last layer (its bytes go
// into layer_bytes.back()), and the chunked logits (~2^26 of them) join the working set.
MemoryEstimate estimate_memory(const ModelConfig & cfg, const WeightPlan & plan, int bytes_per_element,
                               int run_layers, int64_t batch, int64_t seq_len, bool with_head = false);

struct Placement {
    c10::Device embed_device{c10::kCPU};
    std::vector<c10::Device> home;               // per loaded layer: where the weights live
    std::vector<c10::Device> compute;            // per loaded layer: where it runs
    std::vector<std::string> describe() const;   // human-readable plan lines
};

// device: "cpu", "cuda" (GPU 0), "cuda:N" or "auto" (every visible GPU; the CPU when there is
// none). Layers go to the GPUs in order (sequential: fill each GPU before the next; balanced:
// spread evenly), each GPU offering its --max-memory budget or, with no per-GPU entries, its free
// memory; then to pinned CPU memory if cpu= was given. Throws common::Error(capacity) if the model
// cannot fit. stream_buffers: how many offloaded layers the GPU that runs them holds at once (the
// offload streamer's ring, offload.h: --offload-prefetch + 1); room for them is kept free.
// free_bytes_of: GPU i's free memory (default: gpu_memory(i); tests pass their own).
Placement plan_placement(const MemoryEstimate & est, const std::string & device, const MemoryBudget & budget,
                         PlacementStrategy strategy, int cuda_device_count, int stream_buffers = 1,
                         const std::function<uint64_t(int)> & free_bytes_of = {});

}  // namespace extractor
