// libFuzzer target for the result reader (analysis/report_json.cpp parse_result, what
// `analyze report RESULT.json` and `analyze compare` call through load_result).
// Property (fuzz/analysis_properties.h check_result_text): for any byte string taken as a whole
// outliers.json, parse_result either throws common::Error of kind usage, or returns a document
// that renders (markdown, plot scripts, comparison table and its plot scripts) without throwing,
// and whose gnuplot scripts are identical to those of the same document with every string
// replaced: no string from a result reaches gnuplot's language. Any other exception, crash, leak or
// ASan/UBSan report is a bug. Crash inputs go to tests/fuzz_regressions/result_json/, replayed by
// tests/analysis/hostile_input_test.cpp.
#include "fuzz/analysis_properties.h"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    analysis_fuzz::check_result_text(std::string_view(reinterpret_cast<const char *>(data), size));
    return 0;
}
