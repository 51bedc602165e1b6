// The prefetching streamer of offload.h on CUDA: a copy stream from the pool, a ring of depth+1
// device buffers, and CUDA events that order the two streams and time them.
//
// The forward passes fetch layers 0, 1, ..., run_layers-1, then start again at 0 for the next
// batch. The offloaded layers among them form a sequence that repeats every pass; copy number g of
// that endless sequence (layer offloaded_[g % n]) goes to ring slot g % (depth+1). Before it may overwrite a slot, the copy
// stream waits for the "released" event of the slot's previous occupant, recorded on the compute
// stream at the first fetch() after that occupant's (by then the host has enqueued all of its
// kernels, so the event completes when they have run). The compute stream in turn waits for the
// copy of the layer it is about to run. Nothing blocks the host but the events' bookkeeping.
#include "extractor/offload.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/accumulate.h>
#include <cuda_runtime_api.h>

#include <nlohmann/json.hpp>

#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "extractor/families/family.h"

namespace extractor {
namespace {

// cudaMemcpyAsync and the kernels reading the weights both prefer aligned starts; 256 bytes is
// the alignment cudaMalloc itself guarantees.
constexpr uint64_t kAlign = 256;
uint64_t aligned(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Bytes a layer occupies in a ring buffer: every defined tensor, each at an aligned offset.
uint64_t ring_bytes(LayerWeights lw) {
    uint64_t n = 0;
    for (at::Tensor * t : lw.all())
        if (t->defined()) n += aligned(t->nbytes());
    return n;
}

// One copy in flight or done: which pass-sequence index, and its three timing points.
struct CopyRecord {
    int64_t g = 0;
    uint64_t bytes = 0;
    bool fetched = false;                      // a forward pass used it (the last prefetch may not be)
    at::cuda::CUDAEvent start{cudaEventDefault}, end{cudaEventDefault};
    at::cuda::CUDAEvent needed{cudaEventDefault};  // compute stream ready to run the layer
};

class CudaOffloadStreamer final : public OffloadStreamer {
public:
    CudaOffloadStreamer(const Weights & w, std::vector<int> offloaded, int depth, c10::Device device)
        : w_(w), offloaded_(std::move(offloaded)), depth_(depth), device_(device),
          copy_stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())),
          position_(w.layers.size(), -1) {
        for (size_t j = 0; j < offloaded_.size(); ++j) position_[static_cast<size_t>(offloaded_[j])] = static_cast<int>(j);
        uint64_t largest = 0;
        for (int l : offloaded_) largest = std::max(largest, ring_bytes(w_.layers[static_cast<size_t>(l)]));
        c10::cuda::CUDAGuard guard(device_);
        for (int s = 0; s <= depth_; ++s) {
            try {
                ring_.push_back(at::empty({static_cast<int64_t>(largest)}, at::TensorOptions().dtype(at::kByte).device(device_)));
            } catch (const c10::Error & e) {
                throw common::Error(common::ErrorKind::Capacity,
                                    "offload: no room on " + device_.str() + " for " + std::to_string(depth_ + 1) +
                                        " layer buffers of " + common::format_bytes(static_cast<double>(largest)) +
                                        " (--offload-prefetch " + std::to_string(depth_) + "); lower it or the GPU budget");
            }
            released_.emplace_back();
        }
        common::log::info("offload: ", offloaded_.size(), " layers streamed to ", device_.str(), " through ", depth_ + 1,
                          " buffers of ", common::format_bytes(static_cast<double>(largest)), ", ", depth_,
                          " layer(s) ahead");
    }

    ~CudaOffloadStreamer() override {
        // The ring must not be freed under a copy or a kernel still reading it.
        try {
            copy_stream_.synchronize();
            c10::cuda::getCurrentCUDAStream(device_.index()).synchronize();
        } catch (...) {
        }
    }

    LayerWeights fetch(int layer) override {
        c10::cuda::CUDAGuard guard(device_);
        const auto compute = c10::cuda::getCurrentCUDAStream(device_.index());
        // The previous offloaded layer's kernels are all enqueued: its slot frees once they ran.
        if (pending_release_) {
            released_[static_cast<size_t>(*pending_release_ % slots())].record(compute);
            released_g_ = std::max(released_g_, *pending_release_);
            pending_release_.reset();
        }
        const int j = position_[static_cast<size_t>(layer)];
        const int64_t n = static_cast<int64_t>(offloaded_.size());
        if (j < 0) {
            // A resident layer: keep the copies going for the offloaded layers that come next.
            issue_until(fetched_g_ + 1 + depth_);
            harvest(/*wait=*/false);
            return w_.layers[static_cast<size_t>(layer)];
        }
        // The next occurrence of this layer in the endless sequence. Normally fetched_g_ + 1; a
        // pass cut short (an exception inside forward) skips ahead, and the copies it skips were
        // never used, so their slots need no release.
        int64_t g = fetched_g_ + 1;
        while (g % n != j) ++g;
        released_g_ = std::max(released_g_, g - 1);
        issue_until(g + depth_);
        CopyRecord & rec = record_of(g);
        rec.needed.record(compute);
        rec.end.block(compute);
        rec.fetched = true;
        fetched_g_ = g;
        pending_release_ = g;
        harvest(/*wait=*/false);
        return views_in_slot(layer, static_cast<size_t>(g % slots()));
    }

    OffloadStats stats() override {
        harvest(/*wait=*/true);
        return stats_;
    }

    void reset_stats() override {
        harvest(/*wait=*/true);
        stats_ = OffloadStats{};
        stats_.depth = depth_;
    }

private:
    int64_t slots() const { return depth_ + 1; }

    // Enqueue copies up to sequence index `last`, in order.
    void issue_until(int64_t last) {
        const int64_t n = static_cast<int64_t>(offloaded_.size());
        while (issued_ <= last) {
            const int64_t g = issued_;
            // The slot's previous occupant (g - slots) must be done with it; with at most depth
            // copies ahead of the layer being fetched its release is always recorded by now.
            if (g - slots() > released_g_) break;
            const int layer = offloaded_[static_cast<size_t>(g % n)];
            const size_t slot = static_cast<size_t>(g % slots());
            records_.emplace_back();
            CopyRecord & rec = records_.back();
            rec.g = g;
            c10::cuda::CUDAStreamGuard on_copy(copy_stream_);
            if (g >= slots()) released_[slot].block(copy_stream_);
            rec.start.record(copy_stream_);
            LayerWeights home = w_.layers[static_cast<size_t>(layer)];
            LayerWeights dst = views_in_slot(layer, slot);
            auto src_all = home.all(), dst_all = dst.all();
            for (size_t i = 0; i < src_all.size(); ++i) {
                if (!src_all[i]->defined()) continue;
                dst_all[i]->copy_(*src_all[i], /*non_blocking=*/true);
                rec.bytes += src_all[i]->nbytes();
            }
            rec.end.record(copy_stream_);
            ++issued_;
        }
    }

    CopyRecord & record_of(int64_t g) {
        for (auto & r : records_)
            if (r.g == g) return r;
        throw common::Error::internal("offload: layer copy " + std::to_string(g) + " was never issued");
    }

    // Fold the copies of layers already fetched (or skipped) into the totals, oldest first: those
    // whose events completed, or all of them with wait. Copies issued ahead stay: a later fetch
    // needs their records.
    void harvest(bool wait) {
        while (!records_.empty() && records_.front().g <= fetched_g_) {
            CopyRecord & r = records_.front();
            if (wait) {
                r.end.synchronize();
                if (r.fetched) r.needed.synchronize();
            } else if (!r.end.query() || (r.fetched && !r.needed.query())) {
                break;
            }
            if (r.fetched) {
                stats_.layers_streamed += 1;
                stats_.bytes_streamed += r.bytes;
                stats_.copy_s += r.start.elapsed_time(r.end) / 1e3;
                // The compute stream reached the layer at `needed`; the copy ended at `end`.
                const double waited_ms = r.needed.elapsed_time(r.end);
                if (waited_ms > 0) stats_.exposed_s += waited_ms / 1e3;
            }
            records_.pop_front();
        }
    }

    // The layer's tensors as views into ring slot `slot`, in LayerWeights::all() order.
    LayerWeights views_in_slot(int layer, size_t slot) const {
        LayerWeights out = w_.layers[static_cast<size_t>(layer)];
        uint64_t offset = 0;
        for (at::Tensor * t : out.all()) {
            if (!t->defined()) continue;
            const at::Tensor & home = *t;
            if (!home.is_contiguous())
                throw common::Error::internal("offload: layer " + std::to_string(layer) + " holds a non-contiguous tensor");
            at::Tensor bytes = ring_[slot].narrow(0, static_cast<int64_t>(offset), static_cast<int64_t>(home.nbytes()));
            *t = bytes.view(home.scalar_type()).view(home.sizes());
            offset += aligned(home.nbytes());
        }
        return out;
    }

    const Weights & w_;
    std::vector<int> offloaded_;
    int depth_;
    c10::Device device_;
    c10::cuda::CUDAStream copy_stream_;
    std::vector<int> position_;                // layer -> index in offloaded_ (-1: resident)
    std::vector<at::Tensor> ring_;             // depth+1 byte buffers on device_
    std::vector<at::cuda::CUDAEvent> released_;  // per slot: its occupant's kernels have run
    std::deque<CopyRecord> records_;
    int64_t issued_ = 0, fetched_g_ = -1, released_g_ = -1;  // sequence indices
    std::optional<int64_t> pending_release_;
    OffloadStats stats_{};
};

}  // namespace

at::Tensor pinned_empty(at::IntArrayRef sizes, at::ScalarType dtype) {
    const int64_t numel = c10::multiply_integers(sizes);
    const size_t bytes = static_cast<size_t>(numel) * c10::elementSize(dtype);
    void * ptr = nullptr;
    if (bytes > 0) {
        const cudaError_t e = cudaHostAlloc(&ptr, bytes, cudaHostAllocDefault);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();  // clear the sticky error state of this call
            throw common::Error(common::ErrorKind::Capacity, "offload: cannot pin " + common::format_bytes(static_cast<double>(bytes)) +
                                                                 " of host memory: " + cudaGetErrorString(e));
        }
    }
    return at::from_blob(ptr, sizes, [](void * p) { if (p) (void)cudaFreeHost(p); }, at::TensorOptions().dtype(dtype));
}

std::shared_ptr<OffloadStreamer> make_offload_streamer(const Weights & w, int run_layers, int depth) {
    if (depth < 0) throw common::Error::usage("--offload-prefetch " + std::to_string(depth) + ": must be 0 or more");
    std::vector<int> offloaded;
    std::optional<c10::Device> device;
    for (int l = 0; l < run_layers && l < static_cast<int>(w.layers.size()); ++l) {
        if (!w.offloaded(l)) continue;
        const c10::Device d = w.compute[static_cast<size_t>(l)];
        if (!d.is_cuda() || (device && *device != d)) return nullptr;  // copied on the compute stream as before
        device = d;
        offloaded.push_back(l);
    }
    if (offloaded.empty()) return nullptr;
    auto s = std::make_shared<CudaOffloadStreamer>(w, std::move(offloaded), depth, *device);
    s->reset_stats();
    return s;
}

}  // namespace extractor
