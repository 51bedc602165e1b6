// JSONL data files as the toolkit reads them: extract's --jsonl input, and deploy's check before
// renting that such a file can fill a run. One reader, so the check accepts exactly what extract
// will: one JSON object per line, lines of only spaces, tabs or CRs skipped, the document being the
// string at `field`.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace common {

struct JsonlLineError {
    int64_t line_no = 0;   // 1-based
    std::string problem;   // "not valid JSON: ..." or "no string field \"text\""
    bool no_field = false; // valid JSON, but not an object with a string at the field
};

// Calls on_document(line_no, text) for each document of `all` in order. Stops at the first line that
// is not a JSON object with a string at `field` and returns what is wrong with it (nullopt when
// every line is a document).
std::optional<JsonlLineError> for_each_jsonl_document(std::string_view all, const std::string & field,
                                                      const std::function<void(int64_t, const std::string &)> & on_document);

}  // namespace common
