#include "common/output.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/log.h"

namespace common {

Output::Output(OutputFormat format) : Output(format, std::cout) {}
Output::Output(OutputFormat format, std::ostream & out) : format_(format), out_(&out) {}

std::string cell_text(const nlohmann::json & value) {
    if (value.is_null()) return "-";
    if (value.is_string()) return value.get<std::string>();
    if (value.is_boolean()) return value.get<bool>() ? "yes" : "no";
    if (value.is_number_float()) {
        double v = value.get<double>();
        char buf[64];
        // Three decimals reads well for prices ($0.249/h) and sizes; trailing zeros trimmed.
        std::snprintf(buf, sizeof buf, "%.3f", v);
        std::string s = buf;
        while (!s.empty() && s.back() == '0') s.pop_back();
        if (!s.empty() && s.back() == '.') s.pop_back();
        return s;
    }
    if (value.is_array()) {
        std::string s;
        for (const auto & v : value) {
            if (!s.empty()) s += ",";
            s += cell_text(v);
        }
        return s.empty() ? "-" : s;
    }
    return value.dump();
}

void Output::rows(const std::vector<Column> & columns, const nlohmann::json & rows) const {
    if (json()) {
        *out_ << rows.dump(2) << '\n';
        return;
    }
    std::vector<std::vector<std::string>> cells;
    std::vector<size_t> width(columns.size());
    for (size_t c = 0; c < columns.size(); ++c) width[c] = columns[c].header.size();
    for (const auto & row : rows) {
        std::vector<std::string> line;
        for (size_t c = 0; c < columns.size(); ++c) {
            auto it = row.find(columns[c].key);
            line.push_back(it == row.end() ? "-" : cell_text(*it));
            width[c] = std::max(width[c], line.back().size());
        }
        cells.push_back(std::move(line));
    }
    auto print_line = [&](const std::vector<std::string> & line) {
        std::string s;
        for (size_t c = 0; c < line.size(); ++c) {
            s += line[c];
            if (c + 1 < line.size()) s += std::string(width[c] - line[c].size() + 2, ' ');
        }
        *out_ << s << '\n';
    };
    std::vector<std::string> header;
    for (const auto & col : columns) header.push_back(col.header);
    print_line(header);
    for (const auto & line : cells) print_line(line);
}

void Output::object(const nlohmann::json & object) const {
    if (json()) {
        *out_ << object.dump(2) << '\n';
        return;
    }
    size_t width = 0;
    for (const auto & [key, value] : object.items()) width = std::max(width, key.size());
    for (const auto & [key, value] : object.items())
        *out_ << key << ':' << std::string(width - key.size() + 1, ' ') << cell_text(value) << '\n';
}

void Output::text(std::string_view line) const {
    if (!json()) *out_ << line << '\n';
}

int report_error(const Error & error, bool json) {
    if (json) {
        nlohmann::json body = {{"kind", kind_name(error.kind())}, {"message", log::redact(error.message())}};
        for (const auto & [key, value] : error.context()) body[key] = log::redact(value);
        nlohmann::json doc = {{"error", body}};
        std::string text = doc.dump() + "\n";
        std::fwrite(text.data(), 1, text.size(), stderr);
    } else {
        log::write(log::Level::Error, error.message());
    }
    return exit_code(error.kind());
}

}  // namespace common
