#include "common/units.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>

#include "common/error.h"

namespace common {

namespace {
// Splits "1.5GiB" into 1.5 and "GiB"; throws if the number part is missing or malformed.
std::pair<double, std::string> split_number(std::string_view text, std::string_view what) {
    std::string s(text);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
    size_t i = 0;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
    if (i == 0) throw Error::usage("'" + s + "' is not a " + std::string(what));
    char * end = nullptr;
    std::string number = s.substr(0, i);
    double value = std::strtod(number.c_str(), &end);
    if (end != number.c_str() + number.size() || !std::isfinite(value))
        throw Error::usage("'" + s + "' is not a " + std::string(what));
    std::string unit = s.substr(i);
    while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
    return {value, unit};
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
            return false;
    return true;
}
}  // namespace

uint64_t parse_bytes(std::string_view text) {
    auto [value, unit] = split_number(text, "size (e.g. 76GiB, 80GB, 512MiB)");
    struct U { std::string_view name; double factor; };
    static constexpr U kUnits[] = {
        {"", 1},          {"B", 1},
        {"KB", 1e3},      {"MB", 1e6},       {"GB", 1e9},          {"TB", 1e12},
        {"KiB", 1024.0},  {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
        {"K", 1024.0},    {"M", 1048576.0},   {"G", 1073741824.0},   {"T", 1099511627776.0},
    };
    for (const auto & u : kUnits) {
        // Case matters between KiB and kb only in spirit; accept any case for the unit letters.
        if (iequals(unit, u.name)) return static_cast<uint64_t>(std::llround(value * u.factor));
    }
    throw Error::usage("'" + std::string(text) + "': unknown size unit '" + unit +
                       "' (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
}

double parse_duration_s(std::string_view text) {
    std::string rest(text);
    if (rest.empty()) throw Error::usage("empty duration (e.g. 90s, 15m, 6h, 1h30m)");
    double total = 0;
    bool any = false;
    while (!rest.empty()) {
        auto [value, unit_and_more] = split_number(rest, "duration (e.g. 90s, 15m, 6h, 1h30m)");
        size_t n = 0;
        while (n < unit_and_more.size() && std::isalpha(static_cast<unsigned char>(unit_and_more[n]))) ++n;
        std::string unit = unit_and_more.substr(0, n);
        double factor;
        if (unit.empty() || unit == "s") factor = 1;
        else if (unit == "ms") factor = 1e-3;
        else if (unit == "m" || unit == "min") factor = 60;
        else if (unit == "h") factor = 3600;
        else if (unit == "d") factor = 86400;
        else throw Error::usage("'" + std::string(text) + "': unknown duration unit '" + unit + "' (ms, s, m, h, d)");
        total += value * factor;
        any = true;
        rest = unit_and_more.substr(n);
        if (unit.empty() && !rest.empty())
            throw Error::usage("'" + std::string(text) + "' is not a duration");
    }
    if (!any) throw Error::usage("'" + std::string(text) + "' is not a duration");
    return total;
}

}  // namespace common
