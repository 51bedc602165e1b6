// Statistics files (*.stats.cbor): one CBOR document (RFC 8949, written and read with nlohmann_json)
// whose large arrays are little-endian byte strings. Layout in analysis/README.md "Statistics file".
// Chosen over JSON for size (a [T,H] position map is millions of counts) and over a private binary
// layout because any CBOR reader (Python cbor2) can open it.
#pragma once

#include "analysis/statistics.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace analysis {

inline constexpr const char * kStatisticsFormat = "toolkit.analysis.statistics";

// What a statistics file may declare. A file is untrusted input: every count it states is checked
// against these and against the bytes it actually holds before anything is allocated.
inline constexpr int kMaxStatisticsNesting = 64;              // CBOR arrays/maps inside each other
inline constexpr int64_t kMaxStatisticsHidden = int64_t{1} << 20;
inline constexpr int64_t kMaxStatisticsPositions = int64_t{1} << 24;
// The [T,H] position map is dense in memory but sparse on disk (rows of dims with a hit only), so
// its size is not bounded by the file: 2^28 int32 entries (1 GiB) holds hidden 8192 at 32768
// positions, and a claimed map beyond it is refused rather than allocated.
inline constexpr uint64_t kMaxPositionMapEntries = uint64_t{1} << 28;
inline constexpr int kMaxStatisticsHistogramBins = 4096;
// The whole file is read into memory, so its size is bounded first: the densest legitimate file
// (every row of a 2^28-entry position map stored) is about 1 GiB.
inline constexpr uint64_t kMaxStatisticsFileBytes = uint64_t{4} << 30;
inline constexpr int64_t kMaxStatisticsLayer = int64_t{1} << 20;
inline constexpr int64_t kMaxStatisticsExperts = int64_t{1} << 16;  // experts per MoE layer

// Writes via a temporary file renamed into place (a crash never leaves a half-written file).
void save_statistics(const Statistics & stats, const std::string & path);
// Throws common::Error: not_found for a missing file, usage (naming the file and the field) for
// anything that is not a statistics file of a supported version, exceeds the limits above, or has
// inconsistent array sizes or out-of-range indices.
Statistics load_statistics(const std::string & path);
// The same for bytes already in memory; `name` stands for the file in errors (the fuzz target's entry).
Statistics parse_statistics(const std::uint8_t * data, std::size_t size, const std::string & name);

}  // namespace analysis
