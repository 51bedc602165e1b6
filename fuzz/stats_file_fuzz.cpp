// libFuzzer target for the statistics-file reader (analysis/stats_file.cpp parse_statistics, what
// `analyze report|merge` call through load_statistics).
// Property (fuzz/analysis_properties.h check_statistics_bytes): for any byte string taken as a whole
// *.stats.cbor file, parse_statistics either throws common::Error of kind usage, or returns
// statistics whose arrays have exactly their stated sizes and whose dims are in range; then the
// report built from them (criteria, result JSON, markdown, plot scripts) and a merge with itself
// throw nothing but usage errors, and the result JSON passes validate_result. Any other exception,
// crash, unbounded recursion, leak, or ASan/UBSan report is a bug. Crash inputs go to
// tests/fuzz_regressions/stats_file/, replayed by tests/analysis/hostile_input_test.cpp.
#include "fuzz/analysis_properties.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    analysis_fuzz::check_statistics_bytes(data, size);
    return 0;
}
