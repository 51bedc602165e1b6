// A model ready to run: config, family, placement and loaded weights. Loading validates every
// tensor (present, shape, dtype) before reading a byte, prints the plan and memory estimate, then
// copies from the memory-mapped files straight to each tensor's home device with several threads
// through pinned staging buffers. A watchdog turns a stalled read or transfer into
// common::Error(timeout) instead of a hang.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "extractor/checkpoint/hf_config.h"
#include "extractor/checkpoint/sharded.h"
#include "extractor/families/family.h"
#include "extractor/host_memory.h"
#include "extractor/placement.h"

namespace extractor {

struct Model;

struct LoadOptions {
    at::ScalarType dtype = at::kBFloat16;      // activations and weights
    std::string device = "auto";               // cpu | cuda | cuda:N | auto
    std::string max_memory;                    // "0=76GiB,1=76GiB,cpu=120GiB" (empty: one device)
    PlacementStrategy strategy = PlacementStrategy::Sequential;
    // Offloaded layers copied ahead of the one running (offload.h); placement keeps room for
    // offload_prefetch + 1 of them on the GPU that runs them. 0: each copied when it runs.
    int offload_prefetch = 1;
    int run_layers = -1;                       // load layers 0..run_layers-1 (-1: all)
    bool lm_head = false;                      // --perplexity: the estimate counts the final norm and lm_head
    int64_t batch = 1, seq_len = 2048;         // for the activation estimate
    double stall_timeout_s = 300;              // no progress for this long -> Error(timeout)
    int threads = 8;
    bool show_progress = true;
    // MXFP4 experts (gpt_oss): dequantize them all to the run dtype right after loading instead of
    // keeping them packed (the comparison path; needs ~3.8x the experts' packed memory).
    bool dequantize = false;
    // Refuse a run whose host-resident part (a CPU run's weights and working set, or a CUDA run's
    // offloaded layers in pinned memory) exceeds the host memory this process may still take
    // (MemAvailable and the cgroup limits; host_memory.h). false: --no-host-memory-check.
    bool host_memory_check = true;
    // Runs on a thread of its own once the weights are allocated, while they stream in, on a copy
    // of the model. extract uses it to pay the GPU's one-time costs (library handles, lazy kernel
    // loading, cuDNN's attention plan for the batch shape) on layer 0 before its weights have
    // arrived: the results are garbage and discarded. An exception it throws is logged, not raised.
    std::function<void(const Model &)> while_loading;
};

struct Model {
    std::string dir;
    HfConfig hf;
    ModelConfig cfg;
    const Family * family = nullptr;
    WeightPlan plan;
    MemoryEstimate estimate;
    Placement placement;
    Weights weights;
    at::ScalarType dtype = at::kBFloat16;
    int run_layers = 0;
    bool fused_experts = false;
    double load_s = 0;
};

at::ScalarType parse_dtype(const std::string & text);  // bf16|bfloat16|f16|fp16|float16|f32|fp32|float32
std::string dtype_name(at::ScalarType t);               // "bf16", "f16", "f32"
int cuda_device_count();
// "cpu", "cuda" or "cuda:N" (N of 1-4 digits), by syntax only: a typo is a usage error before any
// "no such device" (capacity) can be said of it. `auto` is extract's own and not included.
bool is_device_name(const std::string & name);

// What check_weights() looked at: every shard's header (parsed and checked against its file's
// size) and the tensors the model needs. Tensor data is never read.
struct WeightsCheck {
    std::vector<std::string> files;            // shards whose headers were read
    size_t tensors = 0;                        // tensors checked (all layers): present, shape, dtype
    uint64_t bytes = 0;                        // their stored size
};

// Checks the checkpoint against m's plan for every layer, headers only. Throws Usage naming the
// file and tensor (or config.json's num_hidden_layers when the checkpoint has no tensors for the
// last layer).
WeightsCheck check_weights(const Model & m, const Checkpoint & ck);
// Whether the checkpoint stores MoE experts fused (mlp.experts.gate_up_proj, the v5 layout).
bool stores_fused_experts(const ModelConfig & cfg, const Checkpoint & ck);

// Refuses (usage) a --device that is not auto, cpu, cuda or cuda:N, a stall timeout that is not a
// positive number of seconds, and a thread count outside 1..kMaxLoadThreads. plan_model (and so
// every load) calls it; run_extraction calls it first, so a typo fails before inputs are read.
constexpr int kMaxLoadThreads = 256;
void check_load_options(const LoadOptions & opt);

// What m's placement holds in host memory, for require_host_memory: a CPU run's weights and
// working set, or a CUDA run's offloaded layers (pinned) plus the loader's pinned staging buffers
// (the opt.threads largest tensors, rounded up to powers of two as PyTorch's pinned allocator
// does). nullopt for a run that holds no layer on the host.
std::optional<HostNeed> host_memory_need(const Model & m, const LoadOptions & opt);

// Reads the config, plans placement and estimates memory; loads nothing. Throws
// Error(capacity) when the model cannot fit the GPU budgets or (host_memory_check) the host memory
// its CPU-resident part needs.
Model plan_model(const std::string & dir, const LoadOptions & opt);
// plan_model + loading from dir's safetensors.
Model load_model(const std::string & dir, const LoadOptions & opt);
// plan_model + random weights generated on the devices (for benchmarks on a config.json alone):
// linear weights ~ N(0, 0.02), norm weights 1.
Model random_model(const std::string & dir, const LoadOptions & opt, uint64_t seed);

}  // namespace extractor
