// The one device-memory probe (cudaMemGetInfo) for placement's budgets and extract's measured use.
// It goes through the CUDA runtime that libtorch_cuda has already loaded (dlsym), so this needs no
// CUDA headers and builds, and answers "none", against CPU libtorch and in the GPU-only build alike.
#pragma once

#include <cstdint>

namespace extractor {

struct GpuMemory {
    uint64_t free_bytes = 0;
    uint64_t total_bytes = 0;
    uint64_t used_bytes() const { return total_bytes - free_bytes; }
};

// Free and total bytes of GPU `index` (the current device is restored); zeros when the CUDA
// runtime is not in the process or the query fails.
GpuMemory gpu_memory(int index);

}  // namespace extractor
