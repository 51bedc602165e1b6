// libFuzzer target for config.json (extractor/checkpoint/hf_config.cpp).
// Property: for any byte string that parses as JSON, parse_hf_config either throws common::Error
// or returns a config whose every count lies within hf_limits, the bounds that keep a hostile
// config from sizing gigabytes of per-layer tables (fuzz/hf_config_check.h spells the check out).
// Allowed: common::Error only; any other exception, crash, leak or sanitizer report is a bug. Crash inputs go to tests/fuzz_regressions/hf_config/, replayed by
// tests/extractor/config_test.cpp.
#include <cstdint>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "extractor/checkpoint/hf_config.h"
#include "fuzz/hf_config_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return 0;
    try {
        extractor::HfConfig c = extractor::parse_hf_config(j, "fuzz/config.json");
        if (!fuzz_checks::hf_config_within_limits(c)) std::abort();
    } catch (const common::Error &) {
    }
    return 0;
}
