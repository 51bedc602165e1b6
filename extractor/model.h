// A model ready to run: config, family, placement and loaded weights. Loading validates every
// tensor (present, shape, dtype) before reading a byte, prints the plan and memory estimate, then
// copies from the memory-mapped files straight to each tensor's home device with several threads
// through pinned staging buffers. A watchdog turns a stalled read or transfer into
// common::Error(timeout) instead of a hang.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "extractor/checkpoint/hf_config.h"
#include "extractor/families/family.h"
#include "extractor/placement.h"

namespace extractor {

struct LoadOptions {
    at::ScalarType dtype = at::kBFloat16;      // activations and weights
    std::string device = "auto";               // cpu | cuda | cuda:N | auto
    std::string max_memory;                    // "0=76GiB,1=76GiB,cpu=120GiB" (empty: one device)
    PlacementStrategy strategy = PlacementStrategy::Sequential;
    int run_layers = -1;                       // load layers 0..run_layers-1 (-1: all)
    int64_t batch = 1, seq_len = 2048;         // for the activation estimate
    double stall_timeout_s = 300;              // no progress for this long -> Error(timeout)
    int threads = 8;
    bool show_progress = true;
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

// Reads the config, plans placement and estimates memory; loads nothing. Throws
// Error(capacity) when the model cannot fit.
Model plan_model(const std::string & dir, const LoadOptions & opt);
// plan_model + loading from dir's safetensors.
Model load_model(const std::string & dir, const LoadOptions & opt);
// plan_model + random weights generated on the devices (for benchmarks on a config.json alone):
// linear weights ~ N(0, 0.02), norm weights 1.
Model random_model(const std::string & dir, const LoadOptions & opt, uint64_t seed);

}  // namespace extractor
