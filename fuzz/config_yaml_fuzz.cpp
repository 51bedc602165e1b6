// libFuzzer target for the YAML config reader (common/config_yaml.cpp), which every deploy config,
// the broker config and --hosts files go through.
// Property: for any byte string, ConfigNode::load_string either throws common::Error (usage, or
// interrupted, which never happens here) or returns a tree that a full walk (every key, element
// and scalar conversion, aliases followed) finishes within ConfigNode's bounds: at most kMaxNodes
// nodes visited and at most kMaxDepth levels of mappings and lists. Every accessor on that tree
// throws common::Error or returns. Allowed: common::Error only; any other exception, crash, stack
// overflow, leak, timeout or sanitizer report is a bug. Crash inputs go to
// tests/fuzz_regressions/config_yaml/, replayed by tests/common/config_yaml_test.cpp.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/config_yaml.h"
#include "common/error.h"

namespace {

struct Walk {
    uint64_t nodes = 0;
};

// The conversions throw for most scalars, and a throw costs far more than a visit: they are tried
// on the first nodes only, so that a document at the node bound times out on the library's cost,
// not this harness's.
constexpr uint64_t kConvertedNodes = 64;

void visit(const common::ConfigNode & n, int depth, Walk & w) {
    if (++w.nodes > common::ConfigNode::kMaxNodes) std::abort();
    if (n.is_map() || n.is_sequence()) {
        if (depth + 1 > common::ConfigNode::kMaxDepth) std::abort();
    }
    const bool convert = w.nodes <= kConvertedNodes;
    auto attempt = [convert](auto && f) {
        if (!convert) return;
        try {
            f();
        } catch (const common::Error &) {
        }
    };
    if (n.is_map()) {
        const auto entries = n.entries();
        if (entries.size() != n.keys().size()) std::abort();  // one entry per key
        for (size_t i = 0; i < entries.size(); ++i) {
            // at() searches the map for each key: checked on a few, for agreement with entries().
            if (i < 8 && (!n.has(entries[i].first) || n.at(entries[i].first).where() != entries[i].second.where()))
                std::abort();
            visit(entries[i].second, depth + 1, w);
        }
        attempt([&] { n.check_keys({"model", "resources"}); });
    } else if (n.is_sequence()) {
        for (const auto & e : n.elements()) visit(e, depth + 1, w);
        attempt([&] { (void)n.as_string_list(); });
    } else {
        attempt([&] { (void)n.as_string(); });
        attempt([&] { (void)n.as_int(); });
        attempt([&] { (void)n.as_double(); });
        attempt([&] { (void)n.as_bool(); });
    }
    (void)n.where();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    const std::string text(reinterpret_cast<const char *>(data), size);
    try {
        common::ConfigNode root = common::ConfigNode::load_string(text, "fuzz.yaml");
        Walk w;
        visit(root, 0, w);
    } catch (const common::Error &) {
    }
    return 0;
}
