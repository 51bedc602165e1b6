// The host-memory probe and refusal (host_memory.h). Torch-free: the parsers are tested on fixture
// text alone.
#include "extractor/host_memory.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/regular_file.h"

namespace extractor {

namespace {

// Every file read here is a few KiB (meminfo ~1.5 KiB, memory.stat ~1-3 KiB); anything bigger is
// not what the kernel writes.
constexpr uint64_t kMaxProbeFileBytes = 64 * 1024;

std::string bytes_text(uint64_t b) { return common::format_bytes(static_cast<double>(b)); }

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// A decimal number of at most 20 digits that fits 64 bits; nothing else (no sign, no spaces).
std::optional<uint64_t> parse_u64(std::string_view s) {
    if (s.empty() || s.size() > 20) return std::nullopt;
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        const uint64_t d = static_cast<uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10) return std::nullopt;
        v = v * 10 + d;
    }
    return v;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (is_blank(s.front()) || s.front() == '\n' || s.front() == '\r')) s.remove_prefix(1);
    while (!s.empty() && (is_blank(s.back()) || s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

// Calls f(line) for each line of text (without its newline) until f returns false.
template <typename F> void for_each_line(std::string_view text, F && f) {
    while (!text.empty()) {
        const size_t nl = text.find('\n');
        const std::string_view line = text.substr(0, nl);
        if (!f(line)) return;
        if (nl == std::string_view::npos) return;
        text.remove_prefix(nl + 1);
    }
}

// The rest of the only line that starts with `prefix`; nullopt when none does or several do (a
// duplicated key is ambiguous, so neither copy is believed).
std::optional<std::string_view> unique_line_rest(std::string_view text, std::string_view prefix) {
    std::optional<std::string_view> found;
    bool twice = false;
    for_each_line(text, [&](std::string_view line) {
        if (line.substr(0, prefix.size()) != prefix) return true;
        if (found) {
            twice = true;
            return false;
        }
        found = line.substr(prefix.size());
        return true;
    });
    if (twice) return std::nullopt;
    return found;
}

bool exists(const std::string & path) {
    struct stat sb {};
    return ::stat(path.c_str(), &sb) == 0;
}

bool is_directory(const std::string & path) {
    struct stat sb {};
    return ::stat(path.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode);
}

// A probe file's text; nullopt when it is absent (silently: not every kernel or level has it) or
// cannot be read as a small regular file (named in notes).
std::optional<std::string> read_probe_file(const std::string & path, std::vector<std::string> & notes) {
    try {
        return common::read_regular_file(path, kMaxProbeFileBytes, "memory accounting file");
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::NotFound) notes.push_back(e.message());
        return std::nullopt;
    }
}

// One cgroup level's room: its limit less what is in use, file pages excepted; nullopt when the
// level has no limit (or none readable).
std::optional<uint64_t> cgroup_level_room(const std::string & dir, bool v2, HostMemory & mem) {
    const std::string limit_file = dir + (v2 ? "/memory.max" : "/memory.limit_in_bytes");
    const std::optional<std::string> limit_text = read_probe_file(limit_file, mem.notes);
    if (!limit_text) return std::nullopt;
    const std::optional<CgroupValue> limit = parse_cgroup_value(*limit_text);
    if (!limit) {
        mem.notes.push_back(limit_file + ": not a byte count or \"max\"; this cgroup level is not checked");
        return std::nullopt;
    }
    if (limit->unlimited) return std::nullopt;
    const std::string usage_file = dir + (v2 ? "/memory.current" : "/memory.usage_in_bytes");
    std::optional<CgroupValue> usage;
    if (const auto text = read_probe_file(usage_file, mem.notes)) usage = parse_cgroup_value(*text);
    std::string line = std::string("cgroup ") + (v2 ? "v2 " : "v1 ") + dir + ": " + (v2 ? "memory.max " : "memory.limit_in_bytes ") +
                       bytes_text(limit->bytes);
    if (!usage || usage->unlimited) {
        // Without the usage the limit is all that can be said: it still catches a model larger
        // than the whole limit.
        mem.notes.push_back(usage_file + ": missing or not a byte count; the cgroup's whole limit is counted as free");
        mem.sources.push_back(line + " (usage unknown)");
        return limit->bytes;
    }
    // File pages are reclaimed before the OOM killer runs; v1's total_* keys count the children
    // too, as usage_in_bytes does under use_hierarchy.
    uint64_t file_pages = 0;
    if (const auto stat = read_probe_file(dir + "/memory.stat", mem.notes)) {
        for (const char * key : {"active_file", "inactive_file"}) {
            std::optional<uint64_t> v = v2 ? std::nullopt : parse_cgroup_stat(*stat, std::string("total_") + key);
            if (!v) v = parse_cgroup_stat(*stat, key);
            if (v) file_pages = *v > UINT64_MAX - file_pages ? UINT64_MAX : file_pages + *v;
        }
    }
    const uint64_t in_use = usage->bytes > file_pages ? usage->bytes - file_pages : 0;
    const uint64_t room = limit->bytes > in_use ? limit->bytes - in_use : 0;
    mem.sources.push_back(line + ", " + bytes_text(usage->bytes) + " in use of which " + bytes_text(usage->bytes - in_use) +
                          " page cache: " + bytes_text(room) + " left");
    return room;
}

}  // namespace

std::optional<uint64_t> parse_meminfo_bytes(std::string_view text, std::string_view key) {
    const std::optional<std::string_view> rest = unique_line_rest(text, std::string(key) + ":");
    if (!rest) return std::nullopt;
    std::string_view v = trim(*rest);
    // "<digits> kB": the kernel writes every size field in kB (KiB).
    const size_t blank = v.find_first_of(" \t");
    if (blank == std::string_view::npos || trim(v.substr(blank)) != "kB") return std::nullopt;
    const std::optional<uint64_t> kb = parse_u64(v.substr(0, blank));
    if (!kb || *kb > UINT64_MAX / 1024) return std::nullopt;
    return *kb * 1024;
}

std::optional<CgroupValue> parse_cgroup_value(std::string_view text) {
    // The kernel writes one value and a newline; a second line is not a cgroup file.
    if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    if (text.find('\n') != std::string_view::npos) return std::nullopt;
    if (text == "max") return CgroupValue{true, 0};
    const std::optional<uint64_t> v = parse_u64(text);
    if (!v) return std::nullopt;
    if (*v >= kCgroupUnlimitedFrom) return CgroupValue{true, 0};
    return CgroupValue{false, *v};
}

std::optional<uint64_t> parse_cgroup_stat(std::string_view text, std::string_view key) {
    const std::optional<std::string_view> rest = unique_line_rest(text, std::string(key) + " ");
    if (!rest) return std::nullopt;
    return parse_u64(trim(*rest));
}

std::optional<std::string> parse_self_cgroup_path(std::string_view text, bool v2) {
    std::optional<std::string_view> path;
    bool twice = false;
    for_each_line(text, [&](std::string_view line) {
        // hierarchy-ID:controller-list:cgroup-path (the path may itself hold ':').
        const size_t a = line.find(':');
        if (a == std::string_view::npos) return true;
        const size_t b = line.find(':', a + 1);
        if (b == std::string_view::npos) return true;
        const std::string_view id = line.substr(0, a), controllers = line.substr(a + 1, b - a - 1);
        bool match = false;
        if (v2) {
            match = id == "0" && controllers.empty();
        } else {
            std::string_view rest = controllers;
            while (!match) {
                const size_t comma = rest.find(',');
                match = rest.substr(0, comma) == "memory";
                if (comma == std::string_view::npos) break;
                rest.remove_prefix(comma + 1);
            }
        }
        if (!match) return true;
        if (path) {
            twice = true;
            return false;
        }
        path = line.substr(b + 1);
        return true;
    });
    if (!path || twice) return std::nullopt;
    const std::string_view p = *path;
    if (p.empty() || p.front() != '/' || p.size() > 4096 || p.find('\0') != std::string_view::npos) return std::nullopt;
    if (p == "/") return std::string(p);
    // Every component plain and non-empty ("/a/", "/a//b" and "/./a" are not what the kernel writes).
    int depth = 0;
    std::string_view rest = p.substr(1);
    for (;;) {
        const size_t slash = rest.find('/');
        const std::string_view part = rest.substr(0, slash);
        if (part.empty() || part == "." || part == "..") return std::nullopt;
        if (++depth > 64) return std::nullopt;
        if (slash == std::string_view::npos) break;
        rest.remove_prefix(slash + 1);
    }
    return std::string(p);
}

HostMemoryPaths HostMemoryPaths::from_environment() {
    HostMemoryPaths p;
    if (const char * v = std::getenv("EXTRACTOR_MEMINFO_PATH"); v && *v) p.meminfo = v;
    if (const char * v = std::getenv("EXTRACTOR_CGROUP_ROOT"); v && *v) p.cgroup_root = v;
    return p;
}

HostMemory probe_host_memory(const HostMemoryPaths & paths) {
    HostMemory mem;
    auto take = [&mem](uint64_t room) { mem.available = mem.available ? std::min(*mem.available, room) : room; };
    if (const auto text = read_probe_file(paths.meminfo, mem.notes)) {
        if (const auto avail = parse_meminfo_bytes(*text, "MemAvailable")) {
            mem.sources.push_back("MemAvailable " + bytes_text(*avail) + " (" + paths.meminfo + ")");
            take(*avail);
        } else {
            mem.notes.push_back(paths.meminfo + ": no single well-formed \"MemAvailable: N kB\" line");
        }
    }
    // Unified hierarchy (v2) when the root has cgroup.controllers; else the v1 memory controller's
    // own mount (a hybrid system has v2 under unified/ without the memory controller).
    const bool v2 = exists(paths.cgroup_root + "/cgroup.controllers");
    const std::string base = v2 ? paths.cgroup_root : paths.cgroup_root + "/memory";
    if (is_directory(base)) {
        // This process's group and every ancestor: a parent's limit binds its children too. Levels
        // not visible under this root (a container that sees its own group as the root) are skipped.
        std::vector<std::string> dirs;
        std::optional<std::string> own;
        if (const auto text = read_probe_file(paths.self_cgroup, mem.notes)) own = parse_self_cgroup_path(*text, v2);
        if (own && *own != "/") {
            std::string dir = base + *own;
            for (;;) {
                dirs.push_back(dir);
                const size_t slash = dir.rfind('/');
                if (slash <= base.size()) break;
                dir.resize(slash);
            }
        }
        dirs.push_back(base);
        for (const std::string & dir : dirs)
            if (is_directory(dir))
                if (const auto room = cgroup_level_room(dir, v2, mem)) take(*room);
    }
    return mem;
}

void require_host_memory(const HostNeed & need, const HostMemory & mem) {
    for (const std::string & note : mem.notes) common::log::debug("host memory: ", note);
    std::string sources;
    for (const std::string & s : mem.sources) sources += (sources.empty() ? "" : "; ") + s;
    if (!mem.available) {
        common::log::warn("cannot tell how much host memory is free (no readable MemAvailable or cgroup limit", mem.notes.empty() ? "" : ": ",
                          mem.notes.empty() ? "" : mem.notes.front(), "); not checking that ", need.what, " fits in ",
                          bytes_text(need.bytes));
        return;
    }
    common::log::debug("host memory: ", need.what, " needs ", bytes_text(need.bytes), "; available ", bytes_text(*mem.available), " (",
                       sources, ")");
    if (need.bytes <= *mem.available) return;
    throw common::Error(common::ErrorKind::Capacity,
                        need.model + ": " + need.what + " needs about " + bytes_text(need.bytes) + " of host memory (" + need.breakdown +
                            ") but only " + bytes_text(*mem.available) + " is available to this process (" + sources + "); " +
                            need.advice + ", or pass --no-host-memory-check to load anyway (the kernel may kill the process " +
                            "when memory runs out)")
        .with("model", need.model)
        .with("needed_bytes", std::to_string(need.bytes))
        .with("available_bytes", std::to_string(*mem.available));
}

}  // namespace extractor
