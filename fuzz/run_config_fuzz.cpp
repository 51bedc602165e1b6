// libFuzzer target for deploy's run config reader (deploy/run_config.cpp) and its capture.layers
// parser, which decide before anything is rented whether a config may run.
// Property, for any byte string:
//  1. deploy::parse_capture_layers(bytes) throws common::Error(usage) or returns a non-empty,
//     strictly increasing list of layer indices in 0..1023 (never a huge range, never a negative).
//  2. deploy::parse_run_config(bytes) throws common::Error(usage) or returns a config in which every
//     number is within its documented range: config_from_json(config_to_json(c)), which applies
//     the ranges again (as a resumed run does), succeeds unless the one cross-field bound the reader
//     leaves to validate (synthetic tokens in all) is passed, and gives back the same JSON; a
//     non-empty capture.layers parses (1.); validate() throws common::Error(usage) or returns.
// Allowed: common::Error of kind usage only; any other exception, crash, leak, timeout or sanitizer
// report is a bug. Crash inputs go to tests/fuzz_regressions/run_config/, replayed by
// tests/deploy/run_config_test.cpp.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "deploy/run_config.h"

namespace {

void check_layers(const std::string & spec) {
    std::vector<int> layers;
    try {
        layers = deploy::parse_capture_layers(spec);
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::Usage) std::abort();
        return;
    }
    if (layers.empty()) std::abort();
    for (size_t i = 0; i < layers.size(); ++i) {
        if (layers[i] < 0 || layers[i] > 1023) std::abort();
        if (i > 0 && layers[i] <= layers[i - 1]) std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    const std::string text(reinterpret_cast<const char *>(data), size);
    check_layers(text);
    deploy::RunConfig c;
    try {
        c = deploy::parse_run_config(text, "fuzz.yaml");
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::Usage) std::abort();
        return 0;
    }
    if (!c.capture.layers.empty()) {
        try {
            (void)deploy::parse_capture_layers(c.capture.layers);
        } catch (const common::Error &) {
            std::abort();  // the reader let a bad spec through
        }
    }
    const auto j = deploy::config_to_json(c);
    try {
        if (deploy::config_to_json(deploy::config_from_json(j)) != j) std::abort();
    } catch (const common::Error & e) {
        const bool synthetic_total = c.data.synthetic_vocab && c.data.num_sequences * c.data.sequence_length > 50000000;
        if (e.kind() != common::ErrorKind::Usage || !synthetic_total) std::abort();
    }
    try {
        deploy::validate(c);
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::Usage) std::abort();
    }
    return 0;
}
