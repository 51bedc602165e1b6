// libFuzzer target for the safetensors header parser (extractor/checkpoint/safetensors_header.cpp).
// Property (fuzz/safetensors_check.h, shared with the regression replay): for any byte string
// (taken as a whole file), parse_safetensors_header either returns a header whose tensors are
// sorted, contiguous from offset 0, each sized exactly numel * element size (checked in 128 bits)
// and ending exactly at the end of the file, or throws common::Error. Allowed: common::Error only;
// any other exception, crash, leak or sanitizer report is a bug. Crash inputs go to
// tests/fuzz_regressions/safetensors/, replayed by tests/extractor/safetensors_test.cpp.
#include <cstdint>
#include <cstdlib>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"
#include "fuzz/safetensors_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    try {
        const extractor::SafetensorsHeader h = extractor::parse_safetensors_header(data, size, size, "fuzz.safetensors");
        if (!fuzz_checks::safetensors_header_ok(h, size)) std::abort();
    } catch (const common::Error &) {
    }
    return 0;
}
