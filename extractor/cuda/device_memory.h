// What PyTorch's CUDA caching allocator holds on a device: the figure torch.cuda.max_memory_reserved()
// reports, so a benchmark can set extract's memory beside a PyTorch program's on the same measure.
// Device-level use (cudaMemGetInfo) also counts the CUDA context, library handles and workspaces and
// loaded kernel images; extract reports both. nullopt in builds without CUDA support.
#pragma once

#include <cstdint>
#include <optional>

namespace extractor::device_memory {

std::optional<uint64_t> allocator_peak_reserved_bytes(int device);
std::optional<uint64_t> allocator_peak_allocated_bytes(int device);

}  // namespace extractor::device_memory
