// Retry delays (backoff.h).
#include "common/backoff.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace common {

double Backoff::delay_s(int retry) const {
    // 2^62 is far past any cap; larger exponents would only overflow towards inf.
    double d = first_s * std::pow(2.0, std::clamp(retry - 1, 0, 62));
    if (jitter) {
        thread_local std::mt19937 rng{std::random_device{}()};
        std::uniform_real_distribution<double> u(0.5, 1.5);
        d *= u(rng);
    }
    return std::min(max_s, d);
}

}  // namespace common
