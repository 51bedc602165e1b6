// Typed reads of the JSON files a run directory holds (state.json, run.json and its config,
// journal.jsonl). Those files can be damaged by a full disk, a hand edit, a crash or a sync tool, so
// nothing here trusts a type: nlohmann's value()/get() throw type_error (an "unexpected error" with
// a library message) or convert a float into an int with undefined behaviour. Every field of the
// wrong type or out of its range is refused as a usage error naming the file and the key path:
//   "RUN/state.json: instance.gpu_count: expected an integer in range, got number"
// An absent key (or null) is the caller's fallback: files written by older versions lack newer keys.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"

namespace deploy {

// Unix times in these files are seconds since 1970; anything past this (the year 5138) is not a
// time this program wrote, and converting it to time_t or a Duration would overflow.
constexpr double kMaxUnixTime = 1e11;

class JsonFields {
public:
    // `source` names the file (and line) in errors; `path` is the key path of `j` within it ("" at
    // the top level).
    JsonFields(const nlohmann::json & j, std::string source, std::string path)
        : j_(j), source_(std::move(source)), path_(std::move(path)) {
        if (!j_.is_object()) fail_value(j_, path_.empty() ? "(top level)" : path_, "an object");
    }

    bool has(const char * key) const { return j_.contains(key) && !j_.at(key).is_null(); }
    const nlohmann::json & json() const { return j_; }
    const std::string & source() const { return source_; }

    // A nested object (refused when it is another type; `key` must be present: check has() first).
    JsonFields object(const char * key) const { return JsonFields(j_.at(key), source_, name(key)); }
    // A section that must be there (run.json's config sections).
    JsonFields required_object(const char * key) const {
        if (!has(key)) fail_missing(key, "an object");
        return object(key);
    }

    std::string string(const char * key, const std::string & fallback = "") const {
        if (!has(key)) return fallback;
        if (!j_.at(key).is_string()) fail(key, "a string");
        return j_.at(key).get<std::string>();
    }
    // Any JSON number is finite (the parser refuses an overflow), but not every one is sane.
    double number(const char * key, double fallback = 0, double lo = std::numeric_limits<double>::lowest(),
                  double hi = std::numeric_limits<double>::max()) const {
        if (!has(key)) return fallback;
        const auto & v = j_.at(key);
        if (!v.is_number()) fail(key, "a number");
        const double d = v.get<double>();
        if (d < lo || d > hi) fail(key, "a number in " + num(lo) + ".." + num(hi), num(d));
        return d;
    }
    // Seconds since 1970 (0..kMaxUnixTime).
    double unix_time(const char * key, double fallback = 0) const { return number(key, fallback, 0, kMaxUnixTime); }
    template <class Int>
    Int integer(const char * key, Int fallback = 0) const {
        if (!has(key)) return fallback;
        const auto & v = j_.at(key);
        bool fits = v.is_number_unsigned()  ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<Int>::max())
                    : v.is_number_integer() ? v.get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<Int>::min()) &&
                                                  (v.get<int64_t>() < 0 || static_cast<uint64_t>(v.get<int64_t>()) <=
                                                                               static_cast<uint64_t>(std::numeric_limits<Int>::max()))
                                            : false;
        if (!fits) fail(key, "an integer in range");
        return v.is_number_unsigned() ? static_cast<Int>(v.get<uint64_t>()) : static_cast<Int>(v.get<int64_t>());
    }
    bool boolean(const char * key, bool fallback = false) const {
        if (!has(key)) return fallback;
        if (!j_.at(key).is_boolean()) fail(key, "true or false");
        return j_.at(key).get<bool>();
    }
    std::optional<std::string> opt_string(const char * key) const { return has(key) ? std::optional(string(key)) : std::nullopt; }
    std::optional<double> opt_number(const char * key) const { return has(key) ? std::optional(number(key)) : std::nullopt; }
    std::optional<double> opt_unix_time(const char * key) const { return has(key) ? std::optional(unix_time(key)) : std::nullopt; }
    std::optional<bool> opt_boolean(const char * key) const { return has(key) ? std::optional(boolean(key)) : std::nullopt; }

    // A list of at most `max_items` strings / numbers.
    std::vector<std::string> string_list(const char * key, size_t max_items, std::vector<std::string> fallback = {}) const {
        if (!has(key)) return fallback;
        const auto & a = list(key, max_items);
        std::vector<std::string> out;
        for (const auto & v : a) {
            if (!v.is_string()) fail(key, "a list of strings");
            out.push_back(v.get<std::string>());
        }
        return out;
    }
    std::vector<double> number_list(const char * key, size_t max_items, std::vector<double> fallback = {}) const {
        if (!has(key)) return fallback;
        const auto & a = list(key, max_items);
        std::vector<double> out;
        for (const auto & v : a) {
            if (!v.is_number()) fail(key, "a list of numbers");
            out.push_back(v.get<double>());
        }
        return out;
    }
    const nlohmann::json & list(const char * key, size_t max_items) const {
        const auto & a = j_.at(key);
        if (!a.is_array()) fail(key, "a list");
        if (a.size() > max_items) fail(key, "at most " + std::to_string(max_items) + " items", std::to_string(a.size()));
        return a;
    }

    // "got" is the value's JSON type unless the caller says more (an out-of-range number).
    [[noreturn]] void fail(const std::string & key, const std::string & expected, const std::string & got = "") const {
        const auto & v = j_.at(key);
        throw common::Error(common::ErrorKind::Usage,
                            printable(source_ + ": " + name(key) + ": expected " + expected + ", got " + (got.empty() ? v.type_name() : got)))
            .with("file", source_);
    }
    [[noreturn]] void fail_missing(const std::string & key, const std::string & expected) const {
        throw common::Error(common::ErrorKind::Usage,
                            printable(source_ + ": " + name(key) + ": expected " + expected + ", got nothing (the key is missing)"))
            .with("file", source_);
    }
    std::string name(const std::string & key) const { return path_.empty() ? key : path_ + "." + key; }

    // Key names and values quoted in a message come from the file and go to a terminal: no
    // control characters (an escape sequence would rewrite the screen), and bounded.
    static std::string printable(std::string text) {
        if (text.size() > 2000) text = text.substr(0, 2000) + "...";
        for (char & c : text)
            if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
        return text;
    }

private:
    [[noreturn]] void fail_value(const nlohmann::json & v, const std::string & where, const std::string & expected) const {
        throw common::Error(common::ErrorKind::Usage, printable(source_ + ": " + where + ": expected " + expected + ", got " + v.type_name()))
            .with("file", source_);
    }
    static std::string num(double v) {
        char b[32];
        std::snprintf(b, sizeof b, "%.6g", v);
        return b;
    }

    const nlohmann::json & j_;
    std::string source_;
    std::string path_;
};

}  // namespace deploy
