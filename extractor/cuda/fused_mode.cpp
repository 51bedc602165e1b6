// Which fused kernels run (fused_ops.h, "Two tiers"): read once from EXTRACTOR_FUSED, overridable by
// the tests. Built with or without the CUDA kernels, so both builds parse the variable alike.
#include <ATen/ATen.h>

#include <atomic>
#include <cstdlib>
#include <optional>
#include <string>

#include "common/error.h"
#include "extractor/cuda/fused_ops.h"

namespace extractor::fused {
namespace {

constexpr int kUnread = -1;
std::atomic<int> g_mode{kUnread};

Mode mode_from_env() {
    const char * v = std::getenv("EXTRACTOR_FUSED");
    const std::string s = v ? v : "";
    if (s.empty() || s == "1") return Mode::Validated;
    if (s == "0") return Mode::Off;
    if (s == "all") return Mode::All;
    throw common::Error::usage("EXTRACTOR_FUSED=" + s + ": expected 0 (ATen ops only), 1 (the default) or all");
}

}  // namespace

Mode mode() {
    int m = g_mode.load();
    if (m == kUnread) {
        m = static_cast<int>(mode_from_env());
        g_mode.store(m);
    }
    return static_cast<Mode>(m);
}

void set_mode(std::optional<Mode> m) { g_mode.store(m ? static_cast<int>(*m) : kUnread); }

bool enabled() { return built() && mode() != Mode::Off; }

bool usable(const at::Tensor & x, Tier tier) {
    if (!built() || !x.defined() || !x.is_cuda()) return false;
    const Mode m = mode();
    if (m == Mode::Off || (tier == Tier::Pending && m != Mode::All)) return false;
    const auto t = x.scalar_type();
    return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

}  // namespace extractor::fused
