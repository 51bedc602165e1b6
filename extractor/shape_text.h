// "[2,3,4]": a tensor shape as error messages name it (checkpoint checks, MXFP4 layouts).
#pragma once

#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>

namespace extractor {

inline std::string shape_text(c10::IntArrayRef s) {
    std::string t = "[";
    for (size_t i = 0; i < s.size(); ++i) t += (i ? "," : "") + std::to_string(s[i]);
    return t + "]";
}

}  // namespace extractor
