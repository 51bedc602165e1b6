// Offloaded layers: weights that placement (placement.h) kept in pinned host memory because the GPU
// budget could not hold them, run on a GPU. Every forward pass must copy them in again, so on a
// model that does not fit, the PCIe copy is the run's speed limit. The streamer keeps that copy
// busy: it copies the next offloaded layers on a second CUDA stream, into a ring of reusable device
// buffers, while the current layer computes, and the compute stream waits only for the layer it is
// about to run.
//
//   depth 0: one buffer; each layer is copied when it is needed, so every copy is exposed (the
//            comparison point, and the least memory);
//   depth N: N+1 buffers; up to N layers ahead are in flight. The copies also run across the end of
//            one batch into the next (the first offloaded layers of batch b+1 arrive while the
//            resident layers of batch b+1, or the head of batch b, compute).
//
// The streamer measures itself with CUDA events: each copy's duration, and for each layer how long
// the compute stream had to wait for its copy after it was ready to run. "Hidden" is the part of
// the copy time the GPU did not wait for. Placement reserves depth+1 buffers on the GPU that runs
// the offloaded layers (MemoryBudget::stream_buffers).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

#include <nlohmann/json_fwd.hpp>

namespace extractor {

struct Weights;
struct LayerWeights;

struct OffloadStats {
    int depth = 0;                     // layers copied ahead
    int64_t layers_streamed = 0;       // layer copies the forward passes used
    uint64_t bytes_streamed = 0;       // their bytes
    double copy_s = 0;                 // summed duration of those copies (GPU time, copy stream)
    double exposed_s = 0;              // summed time the compute stream waited for them
    double hidden_fraction() const { return copy_s > 0 ? 1.0 - exposed_s / copy_s : 0.0; }
    double copy_gb_per_s() const { return copy_s > 0 ? static_cast<double>(bytes_streamed) / copy_s / 1e9 : 0.0; }
};
nlohmann::json to_json(const OffloadStats & s);

class OffloadStreamer {
public:
    virtual ~OffloadStreamer() = default;
    // The weights of `layer` on its compute device. For an offloaded layer they are views into a
    // ring buffer, valid for kernels enqueued on the current stream until the next fetch() of a
    // later layer (the family's forward uses a layer's weights only while it runs that layer).
    virtual LayerWeights fetch(int layer) = 0;
    // Waits for the device and returns what the layers fetched since the last reset cost.
    virtual OffloadStats stats() = 0;
    // Forget what was measured so far (after untimed warm-up passes).
    virtual void reset_stats() = 0;
};

// Pinned host memory of exactly the tensor's size for an offloaded layer's weights. PyTorch's
// pinned allocator (at::empty(..., pinned_memory(true))) rounds every allocation up to a power of
// two, so a 2.95 GB expert tensor pins 4 GiB: a third more host memory than the weights, which
// is what decides whether a large model fits a machine at all. This one asks cudaHostAlloc for the
// size itself and frees it with the tensor. Builds without CUDA: plain (unpinned) memory.
at::Tensor pinned_empty(at::IntArrayRef sizes, at::ScalarType dtype);

// A streamer for the offloaded layers among 0..run_layers-1 of `w`, or nullptr when there are
// none, the build has no CUDA support, or the offloaded layers do not all run on one GPU (then
// Weights::fetch copies each layer on the compute stream when it runs, as before). `w` must outlive
// the streamer. Allocates the depth+1 device buffers now, so a lack of memory shows before the
// first batch.
std::shared_ptr<OffloadStreamer> make_offload_streamer(const Weights & w, int run_layers, int depth);

}  // namespace extractor
