// Statistics files (*.stats.cbor): one CBOR document (RFC 8949, written and read with nlohmann_json)
// whose large arrays are little-endian byte strings. Layout in analysis/README.md "Statistics file".
// Chosen over JSON for size (a [T,H] position map is millions of counts) and over a private binary
// layout because any CBOR reader (Python cbor2) can open it.
#pragma once

#include "analysis/statistics.h"

#include <string>

namespace analysis {

inline constexpr const char * kStatisticsFormat = "toolkit.analysis.statistics";

// Writes via a temporary file renamed into place (a crash never leaves a half-written file).
void save_statistics(const Statistics & stats, const std::string & path);
// Throws common::Error: not_found for a missing file, usage (naming the file) for anything that is
// not a statistics file of a supported version or has inconsistent array sizes.
Statistics load_statistics(const std::string & path);

}  // namespace analysis
