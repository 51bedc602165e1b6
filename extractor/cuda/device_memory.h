// What PyTorch's CUDA caching allocator holds on a device: the figure torch.cuda.max_memory_reserved()
// reports, so a benchmark can set extract's memory beside a PyTorch program's on the same measure.
// Device-level use (cudaMemGetInfo) also counts the CUDA context, library handles and workspaces and
// loaded kernel images; extract reports both. nullopt in builds without CUDA support.
#pragma once

#include <cstdint>
#include <optional>

namespace extractor::device_memory {

// Call first thing in main(), before any CUDA allocation: unless the user configured PyTorch's
// allocator (PYTORCH_CUDA_ALLOC_CONF / PYTORCH_ALLOC_CONF), use expandable segments. Activations of
// varying sizes then stop fragmenting cached blocks: on the OLMoE-1B-7B benchmark the run's peak fell
// from weights + 1.55 GiB to weights + 0.90 GiB of device memory, and throughput did not drop.
void prefer_expandable_segments();

std::optional<uint64_t> allocator_peak_reserved_bytes(int device);
std::optional<uint64_t> allocator_peak_allocated_bytes(int device);

}  // namespace extractor::device_memory
