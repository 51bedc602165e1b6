// Internal: the push manifest (path, type, mode, size, SHA-256 per file), the local tree walk that
// honours ignore rules, and a local hash cache keyed by (size, mtime, inode) so a re-push with no
// change reads no file contents. SHA-256 (OpenSSL, already a libssh dependency) is used because
// the remote side can compute the same digest with coreutils' sha256sum — xxhash is not on images.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/sha256.h"

namespace bifrost {

struct FileEntry {
    std::string path;         // relative, '/'-separated
    char type = 'f';          // 'f' regular file, 'l' symlink
    unsigned mode = 0644;     // permission bits
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    uint64_t inode = 0;
    std::string hash;         // hex SHA-256 of the content (of the link target for symlinks)
    std::string link_target;  // symlinks only
};

using Manifest = std::map<std::string, FileEntry>;

struct ScanOptions {
    bool include_git = false;
    std::vector<std::string> excludes;  // gitignore-style, at the root
};

// Walks root (not following symlinks); entries come back without hashes. Names containing a newline
// are skipped with a warning (the manifest is line-based).
std::vector<FileEntry> scan_tree(const std::string & root, const ScanOptions & options);

// SHA-256 is common's (libcrypto); bifrost's callers name it as before.
using common::sha256_file;
using common::sha256_hex;

// "<hash> <size> <mode-octal> <type> <path>\n" per entry; paths are last so they may hold spaces.
std::string format_manifest(const Manifest & manifest);
Manifest parse_manifest(std::string_view text);

class HashCache {
public:
    explicit HashCache(std::string path);  // loads it if present
    std::optional<std::string> lookup(const FileEntry & e) const;
    void store(const FileEntry & e);
    void save() const;  // best effort: a cache that cannot be written only costs speed

private:
    struct Row {
        uint64_t size;
        int64_t mtime_ns;
        uint64_t inode;
        std::string hash;
    };
    std::string path_;
    std::map<std::string, Row> rows_;
    bool dirty_ = false;
};

// $XDG_CACHE_HOME/bifrost/hashes/<sha256 of the absolute root>.
std::string hash_cache_path(const std::string & abs_root);

}  // namespace bifrost
