// Version-specific calls, isolated (see compat.h).
#include "extractor/compat.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <dlfcn.h>
#include <string>
#include <tuple>

#include "common/error.h"
#include "common/log.h"

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
#define EXTRACTOR_HAS_GROUPED_MM 1
#else
#define EXTRACTOR_HAS_GROUPED_MM 0
#endif
// _flash_attention_forward with window_size_left/right: libtorch 2.5 on.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
#define EXTRACTOR_HAS_FLASH 1
#include <ATen/ops/_flash_attention_forward.h>
#else
#define EXTRACTOR_HAS_FLASH 0
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

bool flash_supports(at::ScalarType dtype, bool cuda) {
    return EXTRACTOR_HAS_FLASH != 0 && cuda && (dtype == at::kBFloat16 || dtype == at::kHalf);
}

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

at::Tensor sdpa_gqa(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v, const at::Tensor & mask) {
#if EXTRACTOR_HAS_FLASH
    static const bool on = [] {
        const char * e = std::getenv("EXTRACTOR_SDPA_GQA");
        return !(e && std::string(e) == "0");
    }();
    if (!on) return {};
    if (mask.defined()) return at::scaled_dot_product_attention(q, k, v, mask, 0.0, /*is_causal=*/false, std::nullopt, /*enable_gqa=*/true);
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, std::nullopt, /*enable_gqa=*/true);
#else
    (void)q, (void)k, (void)v, (void)mask;
    return {};
#endif
}

std::optional<FlashAttention> flash_attention(const at::Tensor & q, const at::Tensor & k, const at::Tensor & v,
                                              std::optional<int64_t> sliding_window) {
#if EXTRACTOR_HAS_FLASH
    const int64_t T = q.size(2), D = q.size(3);
    if (!flash_supports(q.scalar_type(), q.is_cuda()) || D % 8 != 0 || D > 256 || k.size(2) != T || q.size(1) % k.size(1) != 0)
        return std::nullopt;
    // The kernel's layout is [B,T,N,D] with a dense last dim; q/k/v here are usually that layout
    // transposed, so these are views.
    auto bthd = [](const at::Tensor & x) {
        at::Tensor t = x.transpose(1, 2);
        return t.stride(-1) == 1 ? t : t.contiguous();
    };
    std::optional<int64_t> left, right;
    if (sliding_window && *sliding_window < T) left = *sliding_window - 1, right = 0;  // kv in [q - w + 1, q]
    // A libtorch built without flash attention, or a GPU older than it supports, refuses the call:
    // say so once and take the eager form from then on.
    static std::atomic<bool> refused{false};
    if (refused) return std::nullopt;
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> result;
    try {
        result = at::_flash_attention_forward(bthd(q), bthd(k), bthd(v), std::nullopt, std::nullopt, T, T, 0.0,
                                              /*is_causal=*/true, /*return_debug_mask=*/false,
                                              1.0 / std::sqrt(static_cast<double>(D)), left, right);
    } catch (const c10::OutOfMemoryError &) {
        throw;  // not a refusal: the eager form would need more memory still
    } catch (const c10::Error & e) {
        if (!refused.exchange(true))
            common::log::warn("the flash attention kernel is not usable here (", e.what_without_backtrace(),
                              "); sink attention takes the eager form");
        return std::nullopt;
    }
    at::Tensor lse = std::get<1>(result);
    if (lse.size(-1) != T) lse = lse.narrow(-1, 0, T);
    return FlashAttention{std::get<0>(result).transpose(1, 2), lse};
#else
    (void)q, (void)k, (void)v, (void)sliding_window;
    return std::nullopt;
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
