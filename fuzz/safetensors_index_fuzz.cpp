// libFuzzer target for model.safetensors.index.json (extractor/checkpoint/safetensors_index.cpp).
// Property: for any byte string, parse_safetensors_index either throws common::Error or returns a
// weight_map of at most index_limits::kTensors entries over at most kShards distinct files, where
// every tensor name has 1 to kNameBytes bytes and every file is a plain name inside the checkpoint
// directory (1 to 255 bytes, not "." or "..", no '/' and no NUL), so joining it to the directory
// can never leave it. Allowed: common::Error only; any other exception, crash, leak or sanitizer
// report is a bug. Crash inputs go to tests/fuzz_regressions/safetensors_index/, replayed by
// tests/extractor/safetensors_test.cpp.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string_view>

#include "common/error.h"
#include "extractor/checkpoint/safetensors_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    namespace lim = extractor::index_limits;
    try {
        auto map = extractor::parse_safetensors_index(std::string_view(reinterpret_cast<const char *>(data), size),
                                                      "fuzz/model.safetensors.index.json");
        if (map.size() > lim::kTensors) std::abort();
        std::set<std::string> files;
        for (const auto & [name, file] : map) {
            if (name.empty() || name.size() > lim::kNameBytes) std::abort();
            if (file.empty() || file.size() > 255 || file == "." || file == ".." ||
                file.find('/') != std::string::npos || file.find('\0') != std::string::npos)
                std::abort();
            files.insert(file);
        }
        if (files.size() > lim::kShards) std::abort();
    } catch (const common::Error &) {
    }
    return 0;
}
