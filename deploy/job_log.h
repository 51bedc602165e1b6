// The files of RUN_DIR/logs/: each job's output as copied home (bootstrap.log, fetch.log,
// analysis.log, a batch job's <role>.log). The run directory is the user's folder, and whatever is
// found there is hostile like any other file: a FIFO under a log's name would block the run for
// ever (open for writing waits for a reader), a symlink (dangling or not) would make the run
// truncate and append to whatever it points at, and a log grown to gigabytes would be read whole
// into memory for an error message. So a log is opened only as a regular file or created anew, never
// through a symlink (neither logs/ nor the file itself), and read only as a bounded tail.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace deploy {

// How much of a log's end the readers below look at: the lines they want (a failed job's last
// lines, the bin_dir= / model_dir= line a remote script prints last) are at its end.
constexpr uint64_t kLogTailBytes = 1u << 20;

// A job's log as it is copied home into LOGS_DIR/<file_name> from a saved byte offset. The file
// holds exactly the bytes before that offset (a tail written after the last saved offset, by a crash
// between write and save, is cut), so nothing is repeated; with `echo`, each complete line is
// logged as "<name>: <line>". A partial line longer than 64 KiB is not echoed (the file still has it).
// Throws common::Error (Usage, naming the path) when LOGS_DIR/<file_name> is anything but a regular
// file or absent, or either is a symlink; `file_name` must be a plain name (no '/', not "." or "..").
class JobLog {
public:
    JobLog(const std::string & logs_dir, const std::string & file_name, uint64_t offset, std::string name, bool echo = true);
    JobLog(JobLog && other) noexcept;
    JobLog & operator=(JobLog &&) = delete;
    JobLog(const JobLog &) = delete;
    JobLog & operator=(const JobLog &) = delete;
    ~JobLog();

    // Appends `data`; `on_line` sees each complete line before it is echoed.
    void write(std::string_view data, const std::function<void(const std::string &)> & on_line = {});
    void flush() {}  // every write goes straight to the file (kept for the callers' order of save)
    const std::string & path() const { return path_; }

private:
    std::string path_, name_;
    bool echo_ = true;
    int fd_ = -1;
    std::string partial_;
};

// The last `n` lines of LOGS_DIR/<file_name>, each as "\n    <line>", read from at most its last
// kLogTailBytes. For an error message about the job: a log that cannot be read (absent, not a regular
// file, a symlink) gives one line saying so instead of throwing over the error being reported.
std::string tail_lines(const std::string & logs_dir, const std::string & file_name, size_t n);

// The value of the last "key=value" line within the last kLogTailBytes of LOGS_DIR/<file_name>; ""
// when there is none. Throws common::Error (naming the path) when it is not a regular file.
std::string value_from_log(const std::string & logs_dir, const std::string & file_name, const std::string & key);

}  // namespace deploy
