// How much host memory this process can still take before the kernel's OOM killer ends it, and the
// refusal when a run needs more. A CPU run holds every weight in host memory and a CUDA run holds
// its offloaded layers in pinned host memory; without this check a model larger than the machine
// was loaded until the OOM killer (or a swap storm) ended the process minutes later, without a word.
//
// Two sources, the smaller wins:
// - MemAvailable of /proc/meminfo (the kernel's estimate of what can be allocated without
//   swapping: free memory plus reclaimable page cache and slab);
// - every memory cgroup from this process's own up to the root of the hierarchy (cgroup v2:
//   memory.max / memory.current / memory.stat; v1: memory.limit_in_bytes / memory.usage_in_bytes /
//   memory.stat). A container's limit is what the OOM killer enforces, whatever the host has free.
//   A level's room is its limit minus what is in use, less the file pages (active_file +
//   inactive_file), which the kernel reclaims before it kills: a checkpoint read by the last run
//   sits in the page cache and is charged to the cgroup, yet does not stand in the way.
//
// The files are read as hostile input: bounded (64 KiB), regular files only, every number checked
// for overflow, "max" (v2) and v1's ~2^63 meaning no limit. A source that is missing is not used;
// one that holds garbage is not used either and is named in `notes` (the check is a safety net: a
// kernel or sandbox with odd files must not block a run that fits). No usable source at all means
// "unknown", and the check passes with a warning.
//
// Test hooks (documented in extractor/README.md, not for users): EXTRACTOR_MEMINFO_PATH replaces
// /proc/meminfo and EXTRACTOR_CGROUP_ROOT replaces /sys/fs/cgroup, so a test can make the
// available memory small with fixture files.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace extractor {

// A cgroup memory value: a byte count, or no limit ("max", or v1's PAGE_COUNTER_MAX-sized number).
struct CgroupValue {
    bool unlimited = false;
    uint64_t bytes = 0;
};

// Values of this size or more are "no limit": cgroup v1 writes 9223372036854771712 (2^63 rounded
// down to a page) for an unlimited group, and no machine has 4 EiB.
constexpr uint64_t kCgroupUnlimitedFrom = uint64_t(1) << 62;

// The bytes of a "Key:   123 kB" line of /proc/meminfo; nullopt when the key is missing, appears
// twice, or its value is not a decimal number of kB that fits 64 bits in bytes.
std::optional<uint64_t> parse_meminfo_bytes(std::string_view text, std::string_view key);

// The content of memory.max, memory.current, memory.limit_in_bytes or memory.usage_in_bytes: one
// decimal number or "max", optionally followed by a newline; nullopt for anything else.
std::optional<CgroupValue> parse_cgroup_value(std::string_view text);

// The value of a "key 123" line of memory.stat; nullopt when the key is missing, appears twice or
// its value is not a decimal number that fits 64 bits.
std::optional<uint64_t> parse_cgroup_stat(std::string_view text, std::string_view key);

// This process's cgroup path from /proc/self/cgroup: the "0::/path" line (v2) or the line whose
// controller list holds "memory" (v1). nullopt when there is no such line or the path is not an
// absolute path of plain components (no "." or "..", at most 64 levels, 4096 bytes): a hostile
// path must not walk out of the cgroup root.
std::optional<std::string> parse_self_cgroup_path(std::string_view text, bool v2);

struct HostMemoryPaths {
    std::string meminfo = "/proc/meminfo";
    std::string cgroup_root = "/sys/fs/cgroup";
    std::string self_cgroup = "/proc/self/cgroup";
    // The defaults, with EXTRACTOR_MEMINFO_PATH / EXTRACTOR_CGROUP_ROOT applied.
    static HostMemoryPaths from_environment();
};

struct HostMemory {
    std::optional<uint64_t> available;  // bytes the process may still take; nullopt: unknown
    // One line per source used, e.g. "MemAvailable 7.5 GiB (/proc/meminfo)" or "cgroup v2
    // /sys/fs/cgroup/user.slice: memory.max 4 GiB, 1.2 GiB in use of which 0.3 GiB page cache:
    // 3.1 GiB left"; the smallest is the one that binds.
    std::vector<std::string> sources;
    std::vector<std::string> notes;     // sources present but unreadable or garbage, named
};

HostMemory probe_host_memory(const HostMemoryPaths & paths);

// What a run will hold in host memory, for the refusal's message.
struct HostNeed {
    std::string model;       // "MODEL_DIR (model_type)"
    std::string what;        // "a CPU run", "the 3 offloaded layers (pinned host memory)"
    uint64_t bytes = 0;
    std::string breakdown;   // "weights in bf16, ...: 1.2 GiB; working set for ...: 0.3 GiB"
    std::string advice;      // what would make it fit, before the override is named
};

// Throws common::Error(capacity) naming the model, the need with its breakdown, what is available
// and from where, and --no-host-memory-check, when need.bytes exceeds mem.available. Unknown
// availability passes (with a warning, and mem.notes logged).
void require_host_memory(const HostNeed & need, const HostMemory & mem);

}  // namespace extractor
