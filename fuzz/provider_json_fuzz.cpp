// libFuzzer target for the broker's provider response parsers: every function that takes a server
// body, for all four clouds (RunPod GraphQL envelope, offers with data centres, pods and lists;
// Vast offers, show, list pages, create answers; Lambda envelope, offers, instances, launch, keys;
// Prime offers, pods, list pages, sshConnection), each after the same bounded parse_body() a real
// answer goes through, followed by what the CLI does with the result.
//
// Property (fuzz/provider_json_check.h, shared with the ordinary tests): for any bytes, parsing
// either succeeds or throws common::Error — Error(Network) naming the provider for a body it cannot
// use, the provider's own typed kinds only for its error envelopes — never another exception, a
// crash, a hang or a sanitizer report; offers that come out are usable; rows and messages are valid
// UTF-8 JSON. Crash inputs go to tests/fuzz_regressions/provider_json/ and are replayed by
// tests/broker/parsers_test.cpp ("fuzz regressions: ...").
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "common/log.h"
#include "fuzz/provider_json_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, std::size_t size) {
    static const bool quiet = [] {
        common::log::set_verbosity(0, true);  // "offer left out" debug lines are not findings
        return true;
    }();
    (void)quiet;
    const std::string why = fuzz_provider_json::run_one(std::string_view(reinterpret_cast<const char *>(data), size));
    if (!why.empty()) {
        std::fprintf(stderr, "provider_json_fuzz: property violated: %s\n", why.c_str());
        std::abort();
    }
    return 0;
}
