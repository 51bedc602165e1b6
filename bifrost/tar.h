// Internal: a streaming POSIX (pax/ustar) tar writer used by push. Entries are produced lazily
// into chunks, so a 100 MB tree never sits in memory, and each file is hashed as it is read: the
// manifest then describes exactly the bytes that were sent, even when a file changes mid-push.
// The remote side extracts with `tar -x`, which every Debian/Ubuntu image has (tar is Essential).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/sha256.h"

namespace bifrost {

class TarStream {
public:
    void add_file(std::string name, std::string source_path, unsigned mode, uint64_t size, int64_t mtime_s);
    void add_data(std::string name, std::string data, unsigned mode);
    void add_symlink(std::string name, std::string target, int64_t mtime_s = 0);
    // Content computed when the entry is reached (e.g. a manifest of the hashes sent before it).
    void add_deferred(std::string name, std::function<std::string()> make, unsigned mode);
    TarStream() = default;
    TarStream(const TarStream &) = delete;
    TarStream & operator=(const TarStream &) = delete;
    ~TarStream();

    // Appends up to ~max_bytes of the archive to chunk; returns false once the archive has ended
    // (after the two zero blocks were produced).
    bool next(std::string & chunk, size_t max_bytes = 1 << 18);

    // For each add_file, in order: the SHA-256 of the bytes sent (valid once the stream ended), and
    // whether the file changed size while it was read.
    const std::vector<std::string> & sent_hashes() const { return sent_hashes_; }
    const std::vector<bool> & changed_while_sent() const { return changed_; }
    // For each add_file, in order: the file was gone when its turn came (deleted since the scan),
    // so the archive has no entry for it.
    const std::vector<bool> & vanished() const { return vanished_; }
    uint64_t file_bytes_sent() const { return file_bytes_sent_; }

private:
    struct Item {
        std::string name;
        char type;
        std::string source_path;  // type '0' from a file
        std::string data;         // type '0' from memory, or link target for '2'
        bool from_file;
        unsigned mode;
        uint64_t size;
        int64_t mtime_s;
        int file_index;
        std::function<std::string()> make;
    };
    void emit_header(const Item & item, std::string & out);
    std::vector<Item> items_;
    size_t current_ = 0;
    bool in_body_ = false;
    int fd_ = -1;
    uint64_t body_done_ = 0;
    std::unique_ptr<common::Sha256> md_;  // of the file being sent
    bool finished_ = false;
    int file_count_ = 0;
    std::vector<std::string> sent_hashes_;
    std::vector<bool> changed_;
    std::vector<bool> vanished_;
    uint64_t file_bytes_sent_ = 0;
};

// One 512-byte ustar header (exposed for tests).
std::string tar_header(const std::string & name, char type, unsigned mode, uint64_t size, int64_t mtime_s,
                       const std::string & link);

}  // namespace bifrost
