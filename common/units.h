// Parsing of human-written sizes and durations, shared by flags (--max-memory 0=76GiB) and YAML
// configs (max_duration: 6h). Errors are common::Error(usage) naming the offending text.
#pragma once

#include <cstdint>
#include <string_view>

namespace common {

// "76GiB", "80GB", "512MiB", "1.5TiB", "1024" (bytes). GB/MB are decimal, GiB/MiB binary.
uint64_t parse_bytes(std::string_view text);
// "90s", "15m", "6h", "1h30m", "2d", "45" (seconds), "1.5h".
double parse_duration_s(std::string_view text);

}  // namespace common
