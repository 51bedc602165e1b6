#include "bifrost/tar.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/log.h"

namespace bifrost {

namespace {

void put_octal(char * field, size_t width, uint64_t value) {
    // width-1 octal digits, zero padded, then NUL.
    std::string digits(width - 1, '0');
    for (size_t i = width - 1; i-- > 0;) {
        digits[i] = static_cast<char>('0' + (value & 7));
        value >>= 3;
    }
    std::memcpy(field, digits.data(), width - 1);
    field[width - 1] = '\0';
}

std::string pax_record(const std::string & key, const std::string & value) {
    // "<len> key=value\n" where len counts itself.
    size_t body = key.size() + value.size() + 3;  // space, '=', '\n'
    size_t len = body + 1;
    while (std::to_string(len).size() + body != len) ++len;
    return std::to_string(len) + " " + key + "=" + value + "\n";
}

}  // namespace

std::string tar_header(const std::string & name, char type, unsigned mode, uint64_t size, int64_t mtime_s,
                       const std::string & link) {
    char h[512];
    std::memset(h, 0, sizeof h);
    std::memcpy(h, name.data(), std::min<size_t>(name.size(), 100));
    put_octal(h + 100, 8, mode & 07777);
    put_octal(h + 108, 8, 0);  // uid/gid 0: extracted with -o (no-same-owner) as the remote user anyway
    put_octal(h + 116, 8, 0);
    put_octal(h + 124, 12, size);
    put_octal(h + 136, 12, static_cast<uint64_t>(mtime_s < 0 ? 0 : mtime_s));
    h[156] = type;
    std::memcpy(h + 157, link.data(), std::min<size_t>(link.size(), 100));
    std::memcpy(h + 257, "ustar", 6);
    std::memcpy(h + 263, "00", 2);
    std::memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    char chk[8];
    std::snprintf(chk, sizeof chk, "%06o", sum);
    std::memcpy(h + 148, chk, 6);
    h[154] = '\0';
    h[155] = ' ';
    return std::string(h, 512);
}

void TarStream::add_file(std::string name, std::string source_path, unsigned mode, uint64_t size, int64_t mtime_s) {
    items_.push_back({std::move(name), '0', std::move(source_path), {}, true, mode, size, mtime_s, file_count_++, {}});
    sent_hashes_.emplace_back();
    changed_.push_back(false);
    vanished_.push_back(false);
}

void TarStream::add_data(std::string name, std::string data, unsigned mode) {
    uint64_t size = data.size();
    items_.push_back({std::move(name), '0', {}, std::move(data), false, mode, size, 0, -1, {}});
}

void TarStream::add_deferred(std::string name, std::function<std::string()> make, unsigned mode) {
    items_.push_back({std::move(name), '0', {}, {}, false, mode, 0, 0, -1, std::move(make)});
}

TarStream::~TarStream() {
    if (fd_ >= 0) ::close(fd_);
}

void TarStream::add_symlink(std::string name, std::string target, int64_t mtime_s) {
    items_.push_back({std::move(name), '2', {}, std::move(target), false, 0777, 0, mtime_s, -1, {}});
}

void TarStream::emit_header(const Item & item, std::string & out) {
    std::string pax;
    if (item.name.size() > 100) pax += pax_record("path", item.name);
    if (item.type == '2' && item.data.size() > 100) pax += pax_record("linkpath", item.data);
    if (item.size > 077777777777ULL) pax += pax_record("size", std::to_string(item.size));
    if (!pax.empty()) {
        out += tar_header("././@PaxHeader", 'x', 0644, pax.size(), item.mtime_s, "");
        out += pax;
        out.append((512 - pax.size() % 512) % 512, '\0');
    }
    uint64_t header_size = item.size > 077777777777ULL ? 0 : item.size;
    out += tar_header(item.name, item.type, item.mode, item.type == '2' ? 0 : header_size, item.mtime_s,
                      item.type == '2' ? item.data : "");
}

bool TarStream::next(std::string & chunk, size_t max_bytes) {
    if (finished_) return false;
    size_t start = chunk.size();
    while (chunk.size() - start < max_bytes) {
        if (current_ >= items_.size()) {
            chunk.append(1024, '\0');
            finished_ = true;
            return true;
        }
        Item & item = items_[current_];
        if (!in_body_) {
            if (item.make) {
                item.data = item.make();
                item.size = item.data.size();
                item.make = nullptr;
            }
            if (item.from_file) {
                // Opened before its header goes out, so a file deleted since the scan (an editor's
                // temporary file, a log rotated away) is left out of the archive instead of
                // failing the whole push.
                fd_ = ::open(item.source_path.c_str(), O_RDONLY | O_CLOEXEC);
                if (fd_ < 0 && (errno == ENOENT || errno == ENOTDIR)) {
                    common::log::warn("push: ", item.source_path, " was deleted since the scan; not sent");
                    vanished_[static_cast<size_t>(item.file_index)] = true;
                    ++current_;
                    continue;
                }
                if (fd_ < 0) throw common::Error::io(item.source_path, "open for push", errno);
                md_ = std::make_unique<common::Sha256>();
            }
            emit_header(item, chunk);
            in_body_ = true;
            body_done_ = 0;
            continue;
        }
        uint64_t body_size = item.type == '2' ? 0 : item.size;
        if (body_done_ < body_size) {
            size_t want = static_cast<size_t>(std::min<uint64_t>(body_size - body_done_, max_bytes));
            size_t at = chunk.size();
            if (item.from_file) {
                chunk.resize(at + want);
                ssize_t n = 0;
                do {
                    n = ::read(fd_, chunk.data() + at, want);
                } while (n < 0 && errno == EINTR);
                if (n < 0) throw common::Error::io(item.source_path, "read for push", errno);
                if (n == 0) {
                    // The file shrank since it was scanned: pad with zeros so the archive stays
                    // well-formed; the manifest records what was actually sent.
                    std::memset(chunk.data() + at, 0, want);
                    n = static_cast<ssize_t>(want);
                    changed_[static_cast<size_t>(item.file_index)] = true;
                }
                chunk.resize(at + static_cast<size_t>(n));
                md_->update(chunk.data() + at, static_cast<size_t>(n));
                body_done_ += static_cast<uint64_t>(n);
                file_bytes_sent_ += static_cast<uint64_t>(n);
            } else {
                chunk.append(item.data, static_cast<size_t>(body_done_), want);
                body_done_ += want;
            }
            continue;
        }
        // Body complete: padding, hash, next item.
        chunk.append((512 - body_size % 512) % 512, '\0');
        if (item.from_file) {
            char probe;
            if (::read(fd_, &probe, 1) > 0) changed_[static_cast<size_t>(item.file_index)] = true;  // it grew
            ::close(fd_);
            fd_ = -1;
            sent_hashes_[static_cast<size_t>(item.file_index)] = md_->hex();
            md_.reset();
        }
        in_body_ = false;
        ++current_;
    }
    return true;
}

}  // namespace bifrost
