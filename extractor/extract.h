// The library entry point of `extract run`: load (or randomly initialise) a model, prepare the
// inputs, run every batch through the family's forward pass and fan the captures out to the
// sinks: the built-in safetensors writer (when out_dir is set), the absmax summary (optional), and
// any extra sinks the caller passes (e.g. analysis's streaming accumulators, for the fused
// `extract ... --analyze` mode). Tensors reach the extra sinks on the device, uncopied.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "extractor/capture.h"
#include "extractor/inputs.h"
#include "extractor/model.h"

namespace extractor {

struct ExtractOptions {
    std::string model_dir;
    bool random_weights = false;       // config.json alone; weights generated on the devices
    uint64_t weight_seed = 0;
    LoadOptions load;
    InputOptions input;
    std::vector<int> layers;           // empty: every layer of the model
    std::vector<Site> sites{Site::LnAttn, Site::LnMlp};
    std::string out_dir;               // empty: no safetensors output
    std::string save_dtype;            // "" keeps the run dtype; else bf16/f16/f32
    bool save_routing = false;         // with out_dir: each MoE layer's expert choice (layer_{l}_experts)
    bool absmax = false;               // keep the AbsmaxSink summary in the result
    bool plan_only = false;            // print the plan and estimate, load nothing
    int warmup_batches = 0;            // run the first batch this many times untimed, without sinks
    // Next-token NLL of every window through the final norm and lm_head (perplexity.h), reported as
    // metadata "perplexity" and given to the sinks (CaptureSink::on_token_nll). Needs every layer
    // run: refused with a --layers list that stops before the last layer.
    bool perplexity = false;
    int64_t perplexity_chunk_tokens = 0;  // logits rows per chunk; 0: default_nll_chunk_tokens(vocab)
};

struct ExtractResult {
    nlohmann::json metadata;           // what metadata.json holds (also when out_dir is empty)
    nlohmann::json absmax;             // AbsmaxSink::summary() when requested
    double load_s = 0, forward_s = 0;
    int64_t tokens = 0, sequences = 0, batches = 0;
    uint64_t gpu_used_bytes_peak = 0;  // device memory in use (cudaMemGetInfo), sampled per batch
    uint64_t gpu_used_bytes_baseline = 0;  // in use on GPU 0 before loading (incl. our CUDA context)
    uint64_t weights_bytes = 0;        // what was loaded (all experts counted)
    // Peak bytes PyTorch's caching allocator reserved, summed over the GPUs used (the measure of
    // torch.cuda.max_memory_reserved); 0 without CUDA support.
    uint64_t allocator_reserved_bytes_peak = 0;
    // Offloaded layers: what streaming them cost and how much of it compute hid (offload.h's
    // OffloadStats as JSON); null when no layer was offloaded.
    nlohmann::json offload;
};

// Throws common::Error; never prints except logs and progress on stderr.
ExtractResult run_extraction(const ExtractOptions & opt, const std::vector<CaptureSink *> & extra_sinks = {});

// "0-3,7,10-11" -> {0,1,2,3,7,10,11}; throws Error(usage) naming the bad part.
std::vector<int> parse_layer_list(const std::string & text);

const char * extractor_version();

}  // namespace extractor
