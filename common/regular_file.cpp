// open_regular_file / read_regular_file (regular_file.h).
#include "common/regular_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/program.h"

namespace common {

std::string file_type_name(mode_t mode) {
    if (S_ISLNK(mode)) return "a symbolic link";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    return "not a regular file";
}

namespace {

Error not_regular(const std::string & path, std::string_view what, mode_t mode) {
    return Error(ErrorKind::Usage, path + ": is " + file_type_name(mode) + ", not a regular file (expected a " +
                                       std::string(what) + ")")
        .with("file", path);
}

Error open_error(const std::string & path, std::string_view what, const char * action, int e) {
    switch (e) {
    case ENOENT:
    case ENOTDIR:
        return Error::not_found(path, "no such " + std::string(what)).with("file", path);
    case ELOOP:
        return Error(ErrorKind::Usage, path + ": too many levels of symbolic links (a symlink loop?)").with("file", path);
    case ENAMETOOLONG:
        return Error(ErrorKind::Usage, path + ": file name too long").with("file", path);
    default:
        return Error::io(path, action, e);
    }
}

}  // namespace

RegularFile::RegularFile(RegularFile && other) noexcept : fd_(other.fd_), size_(other.size_) { other.fd_ = -1; }

RegularFile & RegularFile::operator=(RegularFile && other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = other.fd_;
        size_ = other.size_;
        other.fd_ = -1;
    }
    return *this;
}

RegularFile::~RegularFile() {
    if (fd_ >= 0) ::close(fd_);
}

RegularFile open_regular_file(const std::string & path, std::string_view what) {
    if (path.empty()) throw Error::usage("empty path given for the " + std::string(what));
    // stat first: open() itself would block on a FIFO without a writer.
    struct stat sb {};
    if (::stat(path.c_str(), &sb) != 0) throw open_error(path, what, "stat", errno);
    if (!S_ISREG(sb.st_mode)) throw not_regular(path, what, sb.st_mode);
    // The name may be swapped for a FIFO between stat and open: O_NONBLOCK keeps open() from
    // blocking then, and fstat on the descriptor decides what was really opened.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) throw open_error(path, what, "open", errno);
    if (::fstat(fd, &sb) != 0) {
        int e = errno;
        ::close(fd);
        throw Error::io(path, "stat", e);
    }
    RegularFile file(fd, static_cast<uint64_t>(sb.st_size));  // closes fd on the throws below
    if (!S_ISREG(sb.st_mode)) throw not_regular(path, what, sb.st_mode);
    // Reads of a regular file never block on O_NONBLOCK anyway; clear it so the descriptor behaves
    // like any other for whoever reads it.
    int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) (void)::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return file;
}

std::string read_regular_file(const std::string & path, uint64_t max_bytes, std::string_view what) {
    RegularFile file = open_regular_file(path, what);
    auto too_big = [&](uint64_t size) {
        return Error(ErrorKind::Usage, path + ": " + std::to_string(size) + " bytes, more than the " +
                                           std::to_string(max_bytes) + " allowed for a " + std::string(what))
            .with("file", path);
    };
    if (file.size() > max_bytes) throw too_big(file.size());
    std::string text;
    text.resize(static_cast<size_t>(file.size()));
    size_t got = 0;
    // The file may grow after fstat: read until end of file, never past max_bytes + 1.
    for (;;) {
        if (got == text.size()) {
            if (text.size() > max_bytes) throw too_big(text.size());
            text.resize(std::min<uint64_t>(max_bytes + 1, std::max<uint64_t>(2 * text.size(), 4096)));
        }
        size_t n = read_some(file, text.data() + got, text.size() - got, path);
        if (n == 0) break;
        got += n;
    }
    text.resize(got);
    return text;
}

size_t read_some(const RegularFile & file, void * buf, size_t size, const std::string & path) {
    for (;;) {
        ssize_t n = ::read(file.fd(), buf, size);
        if (n >= 0) return static_cast<size_t>(n);
        if (errno != EINTR) throw Error::io(path, "read", errno);
        throw_if_interrupted();
    }
}

}  // namespace common
