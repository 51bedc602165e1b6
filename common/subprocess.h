// Running local programs (ssh-keygen, sshd, nvidia-smi, gnuplot) without a shell: argv is passed
// as-is, so nothing in an argument can be interpreted. Output is drained with poll(), so a child
// that writes a lot to both pipes never deadlocks against us.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace common {

struct ProcessResult {
    int exit_code = -1;   // exit status, or 128+signal when killed by a signal
    std::string out;
    std::string err;
    bool timed_out = false;
};

struct RunOptions {
    std::string stdin_data;
    std::optional<std::chrono::milliseconds> timeout;  // the child's process group is killed after it
    std::vector<std::string> extra_env;                // "K=V" added to this process's environment
    std::string cwd;
};

// Runs argv[0] (looked up in PATH when it has no '/'); throws common::Error(NotFound) if it cannot
// be started at all.
ProcessResult run_process(const std::vector<std::string> & argv, const RunOptions & options = {});

// A long-running child in its own process group, e.g. an sshd. Destruction stops it and every
// process it started (see stop()).
class ChildProcess {
public:
    struct Options {
        std::string stdout_path = "/dev/null";
        std::string stderr_path = "/dev/null";
        std::string cwd;
        bool new_session = true;  // setsid(): its own session and process group
    };

    ChildProcess() = default;
    static ChildProcess spawn(const std::vector<std::string> & argv, const Options & options);
    ChildProcess(ChildProcess && other) noexcept;
    ChildProcess & operator=(ChildProcess && other) noexcept;
    ~ChildProcess();

    pid_t pid() const { return pid_; }
    bool running();
    // Waits up to `timeout`; returns the exit code, or nullopt if still running.
    std::optional<int> wait_for(std::chrono::milliseconds timeout);
    // SIGTERM to the child and all its descendants (found through /proc, since sshd puts each
    // connection in a new session), then SIGKILL after `grace`; reaps the child.
    void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));
    // SIGKILL to the child and its descendants at once (simulates a crash / power loss).
    void kill_hard();

private:
    pid_t pid_ = -1;
    std::optional<int> exit_code_;
};

// True while `pid` exists and is not a zombie (an exited process not yet reaped by its parent).
bool process_alive(pid_t pid);

// All live descendants of `pid` (children, grandchildren, ...), from /proc/*/stat.
std::vector<pid_t> process_descendants(pid_t pid);

}  // namespace common
