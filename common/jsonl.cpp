// for_each_jsonl_document (jsonl.h).
#include "common/jsonl.h"

#include <nlohmann/json.hpp>

namespace common {

std::optional<JsonlLineError> for_each_jsonl_document(std::string_view all, const std::string & field,
                                                      const std::function<void(int64_t, const std::string &)> & on_document) {
    int64_t line_no = 0;
    for (size_t begin = 0; begin < all.size();) {
        size_t end = all.find('\n', begin);
        if (end == std::string_view::npos) end = all.size();
        const std::string_view line = all.substr(begin, end - begin);
        begin = end + 1;
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception & e) {
            return JsonlLineError{line_no, std::string("not valid JSON: ") + e.what()};
        }
        auto it = j.is_object() ? j.find(field) : j.end();
        if (it == j.end() || !it->is_string()) return JsonlLineError{line_no, "no string field \"" + field + "\"", true};
        on_document(line_no, it->get_ref<const std::string &>());
    }
    return std::nullopt;
}

}  // namespace common
