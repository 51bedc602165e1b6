// Version-specific calls, isolated (see compat.h).
#include "extractor/compat.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <atomic>
#include <dlfcn.h>

#include "common/error.h"

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
#define EXTRACTOR_HAS_GROUPED_MM 1
#else
#define EXTRACTOR_HAS_GROUPED_MM 0
#endif

namespace extractor::compat {
namespace {
std::atomic<bool> g_fast{true};
}

bool has_sdpa() {
#if TORCH_VERSION_MAJOR >= 2
    return true;
#else
    return false;
#endif
}

bool has_grouped_mm() { return EXTRACTOR_HAS_GROUPED_MM != 0; }

void set_fast_paths(bool enabled) { g_fast = enabled; }
bool fast_paths() { return g_fast; }

at::Tensor sdpa(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v, const at::Tensor & mask) {
#if TORCH_VERSION_MAJOR >= 2
    if (mask.defined()) return at::scaled_dot_product_attention(q, k, v, mask, 0.0, /*is_causal=*/false);
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
#else
    (void)q, (void)k, (void)v, (void)mask;
    throw common::Error::internal("scaled_dot_product_attention needs libtorch >= 2.0");
#endif
}

at::Tensor grouped_mm(const at::Tensor & a, const at::Tensor & b, const at::Tensor & offs) {
#if EXTRACTOR_HAS_GROUPED_MM
    return at::_grouped_mm(a, b, offs);
#else
    (void)a, (void)b, (void)offs;
    throw common::Error::internal("_grouped_mm needs libtorch >= 2.9");
#endif
}

const char * torch_version() { return TORCH_VERSION; }

void device_synchronize() {
    using Sync = int (*)();
    static const auto sync = reinterpret_cast<Sync>(dlsym(RTLD_DEFAULT, "cudaDeviceSynchronize"));
    if (sync) sync();
}

}  // namespace extractor::compat
