// Caching-allocator statistics (device_memory.h), from c10's CUDA allocator.
#include "extractor/cuda/device_memory.h"

#include <c10/cuda/CUDACachingAllocator.h>

#include <cstdlib>

namespace extractor::device_memory {
namespace {
// StatType::AGGREGATE (all pools) is index 0; the enum moved namespaces across torch versions.
constexpr size_t kAllPools = 0;
}  // namespace

void prefer_expandable_segments() {
    if (std::getenv("PYTORCH_CUDA_ALLOC_CONF") || std::getenv("PYTORCH_ALLOC_CONF")) return;
    setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True", /*overwrite=*/0);
}

std::optional<uint64_t> allocator_peak_reserved_bytes(int device) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    return static_cast<uint64_t>(stats.reserved_bytes[kAllPools].peak);
}

std::optional<uint64_t> allocator_peak_allocated_bytes(int device) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    return static_cast<uint64_t>(stats.allocated_bytes[kAllPools].peak);
}

}  // namespace extractor::device_memory
