// RUN_DIR/logs/ files (see job_log.h).
#include "deploy/job_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "common/regular_file.h"

namespace deploy {

namespace {

common::Error refused(const std::string & path, const std::string & what) {
    return common::Error(common::ErrorKind::Usage, path + ": is " + what +
                                                       ", not a regular file; a run's log is written and read only as a regular file "
                                                       "in its logs folder (never through a link). Move it away and --resume the run")
        .with("file", path);
}

// What an open that failed met at `path` (lstat: never through a link), as the error to throw.
common::Error open_failed(int dir_fd, const std::string & name, const std::string & path, const char * action, int e) {
    struct stat sb {};
    if (dir_fd >= 0 && ::fstatat(dir_fd, name.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(sb.st_mode))
        return refused(path, common::file_type_name(sb.st_mode));
    if (e == ELOOP) return refused(path, "a symbolic link");
    if (e == ENXIO) return refused(path, "a FIFO or socket");
    return common::Error::io(path, action, e);
}

void check_name(const std::string & logs_dir, const std::string & name) {
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos || name.find('\0') != std::string::npos)
        throw common::Error::internal(logs_dir + ": '" + name.substr(0, 64) + "' is not a plain file name for a job log");
}

// The logs folder itself, never through a link. -1 with errno ENOENT when it does not exist.
int open_logs_dir(const std::string & logs_dir) {
    int fd = ::open(logs_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 || errno == ENOENT) return fd;
    const int e = errno;
    struct stat sb {};
    if (::lstat(logs_dir.c_str(), &sb) == 0 && !S_ISDIR(sb.st_mode))
        throw common::Error(common::ErrorKind::Usage,
                            logs_dir + ": is " + common::file_type_name(sb.st_mode) + ", not a directory; a run's logs are written only into a real "
                                                                     "logs folder of its run directory (never through a link)")
            .with("file", logs_dir);
    throw common::Error::io(logs_dir, "open", e);
}

struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

// LOGS_DIR/<name> opened for reading as a regular file, or an empty RegularFile (fd -1) when it or
// the folder is absent. Throws for anything else (a FIFO opens without blocking: O_NONBLOCK).
common::RegularFile open_for_reading(const std::string & logs_dir, const std::string & name) {
    check_name(logs_dir, name);
    const std::string path = logs_dir + "/" + name;
    Fd dir{open_logs_dir(logs_dir)};
    if (dir.fd < 0) return {};
    int fd = ::openat(dir.fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return {};
        throw open_failed(dir.fd, name, path, "open", errno);
    }
    struct stat sb {};
    if (::fstat(fd, &sb) != 0) {
        const int e = errno;
        ::close(fd);
        throw common::Error::io(path, "stat", e);
    }
    common::RegularFile file(fd, static_cast<uint64_t>(sb.st_size));
    if (!S_ISREG(sb.st_mode)) throw refused(path, common::file_type_name(sb.st_mode));
    return file;
}

// At most the last `max_bytes` of the file; a first line cut by the bound is dropped.
std::string read_tail(const common::RegularFile & file, const std::string & path, uint64_t max_bytes) {
    const uint64_t start = file.size() > max_bytes ? file.size() - max_bytes : 0;
    if (::lseek(file.fd(), static_cast<off_t>(start), SEEK_SET) < 0) throw common::Error::io(path, "seek", errno);
    std::string text(static_cast<size_t>(std::min(file.size(), max_bytes)), '\0');
    size_t got = 0;
    // The file may grow after fstat: never read past the bound.
    while (got < text.size()) {
        const size_t n = common::read_some(file, text.data() + got, text.size() - got, path);
        if (n == 0) break;
        got += n;
    }
    text.resize(got);
    if (start > 0) {
        const size_t nl = text.find('\n');
        text.erase(0, nl == std::string::npos ? text.size() : nl + 1);
    }
    return text;
}

std::vector<std::string> split_lines(const std::string & text) {
    std::vector<std::string> lines;
    size_t at = 0;
    while (at < text.size()) {
        size_t nl = text.find('\n', at);
        if (nl == std::string::npos) nl = text.size();
        lines.push_back(text.substr(at, nl - at));
        at = nl + 1;
    }
    return lines;
}

}  // namespace

JobLog::JobLog(const std::string & logs_dir, const std::string & file_name, uint64_t offset, std::string name, bool echo)
    : path_(logs_dir + "/" + file_name), name_(std::move(name)), echo_(echo) {
    check_name(logs_dir, file_name);
    Fd dir{open_logs_dir(logs_dir)};
    if (dir.fd < 0) {  // a run directory from before logs/ was made at its start, or one cleaned by hand
        if (::mkdir(logs_dir.c_str(), 0755) != 0 && errno != EEXIST) throw common::Error::io(logs_dir, "create", errno);
        dir.fd = open_logs_dir(logs_dir);
        if (dir.fd < 0) throw common::Error::io(logs_dir, "open", errno);
    }
    // O_NOFOLLOW: a symlink, dangling or not, is refused (ELOOP) rather than written through or
    // created at its target. O_NONBLOCK: a FIFO without a reader is refused at once (ENXIO) instead
    // of blocking the run; one with a reader opens and is refused by the fstat below.
    fd_ = ::openat(dir.fd, file_name.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0644);
    if (fd_ < 0) throw open_failed(dir.fd, file_name, path_, "open", errno);
    struct stat sb {};
    if (::fstat(fd_, &sb) != 0) {
        const int e = errno;
        ::close(fd_);
        fd_ = -1;
        throw common::Error::io(path_, "stat", e);
    }
    if (!S_ISREG(sb.st_mode)) {
        ::close(fd_);
        fd_ = -1;
        throw refused(path_, common::file_type_name(sb.st_mode));
    }
    (void)::fcntl(fd_, F_SETFL, O_APPEND);  // a regular file: ordinary blocking writes from here
    if (static_cast<uint64_t>(sb.st_size) > offset && ::ftruncate(fd_, static_cast<off_t>(offset)) != 0) {
        const int e = errno;
        ::close(fd_);
        fd_ = -1;
        throw common::Error::io(path_, "truncate", e);
    }
}

JobLog::JobLog(JobLog && other) noexcept
    : path_(std::move(other.path_)), name_(std::move(other.name_)), echo_(other.echo_), fd_(other.fd_), partial_(std::move(other.partial_)) {
    other.fd_ = -1;
}

JobLog::~JobLog() {
    if (fd_ >= 0) ::close(fd_);
}

void JobLog::write(std::string_view data, const std::function<void(const std::string &)> & on_line) {
    // A local write that fails (a full disk) leaves a gap in the copy, said once; the job it comes
    // from is not stopped for it (the remote log keeps every byte).
    size_t off = 0;
    while (fd_ >= 0 && off < data.size()) {
        const ssize_t n = ::write(fd_, data.data() + off, data.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            common::log::warn(path_, ": ", n < 0 ? common::Error::io(path_, "write", errno).message() : "write failed",
                              "; the local copy of the log stops here (the job's own log on the host keeps it)");
            ::close(fd_);
            fd_ = -1;
            break;
        }
        off += static_cast<size_t>(n);
    }
    partial_.append(data);
    size_t nl;
    while ((nl = partial_.find('\n')) != std::string::npos) {
        std::string line = partial_.substr(0, nl);
        partial_.erase(0, nl + 1);
        if (on_line) on_line(line);
        if (echo_) common::log::info(name_, ": ", line);
    }
    if (partial_.size() > 64 * 1024) partial_.clear();
}

std::string tail_lines(const std::string & logs_dir, const std::string & file_name, size_t n) {
    const std::string path = logs_dir + "/" + file_name;
    std::string text;
    try {
        common::RegularFile file = open_for_reading(logs_dir, file_name);
        if (file.fd() < 0) return "\n    (no log was copied home)";
        text = read_tail(file, path, kLogTailBytes);
    } catch (const common::Error & e) {
        if (e.kind() == common::ErrorKind::Interrupted) throw;
        return "\n    (the log cannot be read: " + e.message() + ")";
    }
    auto lines = split_lines(text);
    std::string out;
    for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) out += "\n    " + lines[i];
    return out;
}

std::string value_from_log(const std::string & logs_dir, const std::string & file_name, const std::string & key) {
    common::RegularFile file = open_for_reading(logs_dir, file_name);
    if (file.fd() < 0) return "";
    std::string found;
    for (const auto & line : split_lines(read_tail(file, logs_dir + "/" + file_name, kLogTailBytes)))
        if (line.rfind(key + "=", 0) == 0) found = line.substr(key.size() + 1);
    return found;
}

}  // namespace deploy
