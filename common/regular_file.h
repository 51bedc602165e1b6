// Opening a file that a user named (or that a tool found in a directory) without the surprises of
// std::ifstream: a FIFO under the expected name blocks open() forever, a directory "opens" and
// reads as empty, and a symlink loop or a permission problem ends as a vague internal error.
// open_regular_file() refuses anything but a regular file before it can block (stat, then open
// with O_NONBLOCK and fstat the opened descriptor, which closes the race with a swap between the
// two); read_regular_file() also bounds the size before reading a byte.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace common {

// What a file of this st_mode is, for errors: "a directory", "a FIFO (named pipe)", "a symbolic
// link" (from lstat), ...; "not a regular file" for any other kind.
std::string file_type_name(mode_t mode);

// An open, read-only descriptor of a regular file; closed on destruction.
class RegularFile {
public:
    RegularFile() = default;
    RegularFile(int fd, uint64_t size) : fd_(fd), size_(size) {}
    RegularFile(RegularFile && other) noexcept;
    RegularFile & operator=(RegularFile && other) noexcept;
    RegularFile(const RegularFile &) = delete;
    RegularFile & operator=(const RegularFile &) = delete;
    ~RegularFile();

    int fd() const { return fd_; }
    uint64_t size() const { return size_; }  // as fstat saw it when opened

private:
    int fd_ = -1;
    uint64_t size_ = 0;
};

// `what` names the role in errors ("config file", "safetensors file", ...). Throws common::Error
// naming the path: NotFound when nothing is there (missing, dangling symlink, a path component
// that is not a directory); Usage for a directory, FIFO, socket or device, a symlink loop, or
// permission denied; Internal for other system errors.
RegularFile open_regular_file(const std::string & path, std::string_view what);

// Up to `size` bytes from the file's current offset into buf; 0 at end of file. An interrupted
// read is retried (or Error(interrupted) after Ctrl-C); a failed one throws Error::io naming path.
size_t read_some(const RegularFile & file, void * buf, size_t size, const std::string & path);

// The whole file, refused (Usage, naming the path, its size and the limit) when it holds more than
// max_bytes. Ctrl-C during the read throws Error(Interrupted).
std::string read_regular_file(const std::string & path, uint64_t max_bytes, std::string_view what);

}  // namespace common
