// Lower-case hex of a byte string: digests (common/sha256.h) and anything else shown as hex.
#pragma once

#include <cstddef>
#include <string>

namespace common {

inline std::string to_hex(const void * data, size_t size) {
    static constexpr char kDigits[] = "0123456789abcdef";
    const auto * p = static_cast<const unsigned char *>(data);
    std::string out(size * 2, '0');
    for (size_t i = 0; i < size; ++i) {
        out[2 * i] = kDigits[p[i] >> 4];
        out[2 * i + 1] = kDigits[p[i] & 15];
    }
    return out;
}

}  // namespace common
