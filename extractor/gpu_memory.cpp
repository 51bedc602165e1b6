// The device-memory probe (gpu_memory.h).
#include "extractor/gpu_memory.h"

#include <dlfcn.h>

#include <cstddef>

namespace extractor {

GpuMemory gpu_memory(int index) {
    using SetDevice = int (*)(int);
    using GetDevice = int (*)(int *);
    using MemGetInfo = int (*)(size_t *, size_t *);
    auto set = reinterpret_cast<SetDevice>(dlsym(RTLD_DEFAULT, "cudaSetDevice"));
    auto get = reinterpret_cast<GetDevice>(dlsym(RTLD_DEFAULT, "cudaGetDevice"));
    auto info = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo"));
    if (!set || !get || !info) return {};
    int previous = 0;
    if (get(&previous) != 0) return {};
    size_t free_b = 0, total_b = 0;
    bool ok = set(index) == 0 && info(&free_b, &total_b) == 0;
    set(previous);
    return ok ? GpuMemory{free_b, total_b} : GpuMemory{};
}

}  // namespace extractor
