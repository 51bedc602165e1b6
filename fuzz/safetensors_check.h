// The property safetensors_fuzz checks of every header that parse_safetensors_header accepts,
// shared with the replay of the committed regression inputs (tests/extractor/safetensors_test.cpp):
// tensors sorted and contiguous from offset 0, each file_offset = data_start + data_begin, the
// buffer ending exactly at the end of the file, and each tensor's byte span exactly its element
// count times its element size, computed here in 128 bits so that no wrap-around can agree with
// the parser's own 64-bit product (I64 [2^61] once passed as 0 bytes).
#pragma once

#include <cstdint>
#include <string>

#include "extractor/checkpoint/safetensors.h"

namespace fuzz_checks {

// Bytes per element of a safetensors dtype name, from the format's own list (not the parser's
// table, and no libc10 call: the fuzz target links only c10's headers); 0 for a name not listed.
inline uint64_t dtype_bytes(const std::string & dtype) {
    if (dtype == "BOOL" || dtype == "U8" || dtype == "I8") return 1;
    if (dtype == "I16" || dtype == "U16" || dtype == "F16" || dtype == "BF16") return 2;
    if (dtype == "I32" || dtype == "U32" || dtype == "F32") return 4;
    if (dtype == "I64" || dtype == "U64" || dtype == "F64") return 8;
    return 0;
}

// The exact byte size of a tensor of this shape and dtype, or false when it is not below 2^64 (or
// the dtype is not one the property knows).
inline bool exact_tensor_bytes(const extractor::TensorInfo & t, uint64_t & bytes) {
    const uint64_t element = dtype_bytes(t.dtype);
    if (element == 0) return false;
    for (const int64_t d : t.shape) {
        if (d < 0) return false;
        if (d == 0) {
            bytes = 0;
            return true;
        }
    }
    unsigned __int128 n = element;
    for (const int64_t d : t.shape) {
        n *= static_cast<unsigned __int128>(d);  // both factors < 2^64, and n stays < 2^64 below
        if (n > static_cast<unsigned __int128>(UINT64_MAX)) return false;
    }
    bytes = static_cast<uint64_t>(n);
    return true;
}

inline bool safetensors_header_ok(const extractor::SafetensorsHeader & h, uint64_t file_size) {
    uint64_t cursor = 0;
    for (const auto & t : h.tensors) {
        if (t.data_begin != cursor || t.data_end < t.data_begin) return false;
        if (t.file_offset != h.data_start + t.data_begin) return false;
        uint64_t bytes = 0;
        if (!exact_tensor_bytes(t, bytes) || bytes != t.data_end - t.data_begin) return false;
        cursor = t.data_end;
    }
    return h.data_start + cursor == file_size;
}

}  // namespace fuzz_checks
