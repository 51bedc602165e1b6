// libFuzzer target for the dataset viewer answer reader of data.hub_rows (deploy/hub_rows.cpp),
// which reads a server's body before anything is rented.
// Property, for any byte string taken as the answer to rows [7, 7 + 100):
//   deploy::parse_hub_rows_page throws common::Error of kind network (not the documented shape) or
//   usage (a column the split lacks, a cell that is not text), or returns at most 100 texts, each
//   valid UTF-8 (the row cache writes them back as JSON), and a num_rows_total that is not negative.
// Allowed: those two error kinds only; any other exception, crash, leak, timeout (a body nested or
// repeated to exhaust the parser) or sanitizer report is a bug.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "deploy/hub_rows.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    const std::string body(reinterpret_cast<const char *>(data), size);
    const deploy::HubRowsSource source{"HuggingFaceFW/fineweb-edu", "default", "train", "text"};
    deploy::HubRowsPage page;
    try {
        page = deploy::parse_hub_rows_page(body, source, 7, 100, "fuzz");
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::Network && e.kind() != common::ErrorKind::Usage) std::abort();
        return 0;
    }
    if (page.texts.size() > 100) std::abort();
    if (page.num_rows_total && *page.num_rows_total < 0) std::abort();
    // The row cache writes each text back as JSON, which throws on invalid UTF-8.
    for (const auto & t : page.texts) {
        try {
            (void)nlohmann::json(t).dump();
        } catch (const nlohmann::json::exception &) {
            std::abort();
        }
    }
    return 0;
}
