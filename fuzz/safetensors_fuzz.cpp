// libFuzzer target for the safetensors header parser (extractor/checkpoint/safetensors_header.cpp).
// Property: for any byte string (taken as a whole file), parse_safetensors_header either returns a
// header whose tensors are sorted, contiguous from offset 0, sized exactly numel * element size and
// end exactly at the end of the file, or throws common::Error. Allowed: common::Error only; any
// other exception, crash, leak or sanitizer report is a bug. Crash inputs go to
// tests/fuzz_regressions/safetensors/, replayed by tests/extractor/safetensors_test.cpp.
#include <cstdint>
#include <cstdlib>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    try {
        extractor::SafetensorsHeader h = extractor::parse_safetensors_header(data, size, size, "fuzz.safetensors");
        uint64_t cursor = 0;
        for (const auto & t : h.tensors) {
            if (t.data_begin != cursor || t.data_end < t.data_begin) std::abort();
            if (t.file_offset != h.data_start + t.data_begin) std::abort();
            cursor = t.data_end;
        }
        if (h.data_start + cursor != size) std::abort();
    } catch (const common::Error &) {
    }
    return 0;
}
