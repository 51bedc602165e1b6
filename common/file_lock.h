// An exclusive flock(2) on a file, held for the life of the object. The kernel drops the lock when
// the last descriptor closes, so a holder that dies (SIGKILL included) never leaves a stale lock:
// no pid files, no takeover logic to race.
//
//   common::FileLock lock(dir + "/host.lock");                 // waits; Ctrl-C ends the wait
//   if (auto slot = common::FileLock::try_lock(path)) { ... }  // never waits
//   common::FileLock pins(path, common::FileLock::Mode::Append); write(pins.fd(), ...)
#pragma once

#include <optional>
#include <string>

namespace common {

class FileLock {
public:
    // ReadWrite: a lock file of its own. Append: the locked file is also written through fd()
    // (appends only), e.g. a known-hosts file that concurrent first connections add to.
    enum class Mode { ReadWrite, Append };

    // Creates the file (0600) if needed and waits for the lock. Throws common::Error: io naming the
    // path when it cannot be opened or locked, Interrupted when a signal ends the wait.
    explicit FileLock(const std::string & path, Mode mode = Mode::ReadWrite);

    // The lock if it is free now, nullopt if another holder has it; throws as above otherwise.
    static std::optional<FileLock> try_lock(const std::string & path, Mode mode = Mode::ReadWrite);

    FileLock(FileLock && other) noexcept;
    FileLock & operator=(FileLock && other) noexcept;
    FileLock(const FileLock &) = delete;
    FileLock & operator=(const FileLock &) = delete;
    ~FileLock();

    int fd() const { return fd_; }  // for writing through an Append lock, or closing in a forked child

private:
    FileLock() = default;
    static int open_for(const std::string & path, Mode mode);
    int fd_ = -1;
};

}  // namespace common
