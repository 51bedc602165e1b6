// See file_lock.h.
#include "common/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "common/error.h"
#include "common/program.h"

namespace common {

int FileLock::open_for(const std::string & path, Mode mode) {
    const int flags = (mode == Mode::Append ? O_WRONLY | O_APPEND : O_RDWR) | O_CREAT | O_CLOEXEC;
    const int fd = ::open(path.c_str(), flags, 0600);
    if (fd < 0) throw Error::io(path, "open lock file", errno);
    return fd;
}

FileLock::FileLock(const std::string & path, Mode mode) : fd_(open_for(path, mode)) {
    while (::flock(fd_, LOCK_EX) != 0) {
        const int err = errno;
        try {
            if (err != EINTR) throw Error::io(path, "lock", err);
            throw_if_interrupted();  // a signal meant for us ends the wait; others retry
        } catch (...) {
            ::close(std::exchange(fd_, -1));
            throw;
        }
    }
}

std::optional<FileLock> FileLock::try_lock(const std::string & path, Mode mode) {
    FileLock lock;
    lock.fd_ = open_for(path, mode);
    for (;;) {
        if (::flock(lock.fd_, LOCK_EX | LOCK_NB) == 0) return lock;
        const int err = errno;
        if (err == EWOULDBLOCK) return std::nullopt;  // the destructor closes the descriptor
        if (err != EINTR) throw Error::io(path, "lock", err);
        throw_if_interrupted();
    }
}

FileLock::FileLock(FileLock && other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

FileLock & FileLock::operator=(FileLock && other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

FileLock::~FileLock() {
    if (fd_ >= 0) ::close(fd_);
}

}  // namespace common
