// bifrost's library API: the same verbs as the `bifrost` program (exec, push, pull, run --detach,
// jobs, logs, kill) over one reused SSH connection. deploy_and_analyze drives remote machines
// through this header only.
//
//   auto client = bifrost::Client::connect(bifrost::parse_target("root@203.0.113.7:22"), {.key_path = key});
//   client.push("./project", {.remote_dir = "~/project"});
//   int code = client.exec(bifrost::Command::args({"python", "train.py"}), {.cwd = "~/project"}, out, err);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bifrost/connection.h"
#include "bifrost/target.h"

namespace bifrost {

// A remote command: an argv (each word quoted, nothing interpreted) or a shell string (run by the
// remote login shell, so pipes and globs work; the caller owns its quoting).
struct Command {
    std::vector<std::string> argv;
    std::string shell;
    static Command args(std::vector<std::string> words) { return Command{std::move(words), {}}; }
    static Command sh(std::string line) { return Command{{}, std::move(line)}; }
    std::string display() const;  // for logs and job listings
};

using EnvList = std::vector<std::pair<std::string, std::string>>;

struct ExecOptions {
    EnvList env;                       // sent on stdin, never on the remote command line
    std::string cwd;                   // "~/x" is relative to the remote $HOME
    bool import_container_env = false; // export /proc/1/environ first (cloud containers hide it from SSH)
    std::string stdin_data;            // fed to the command's stdin
    int stdin_fd = -1;                 // or: forward this local fd
};

struct PushOptions {
    std::string remote_dir;            // empty: ~/workspace/<basename of the local dir>
    bool include_git = false;          // .git is excluded unless asked for
    std::vector<std::string> excludes; // extra gitignore-style patterns
    std::function<void(uint64_t bytes_sent, uint64_t bytes_total)> progress;
};

struct PushStats {
    std::string remote_dir;            // absolute, as the remote resolved it
    uint64_t files_total = 0;
    uint64_t files_sent = 0;
    uint64_t files_deleted = 0;
    uint64_t bytes_total = 0;
    uint64_t bytes_sent = 0;           // file bytes that travelled (before SSH compression)
    bool completed_interrupted_push = false;
};

struct PullOptions {
    std::function<void(uint64_t bytes_done, uint64_t bytes_total)> progress;
};

struct PullStats {
    uint64_t files_total = 0;
    uint64_t files_fetched = 0;
    uint64_t bytes_fetched = 0;
    uint64_t files_resumed = 0;
    // "NAME -> TARGET" of each symlink not created because it leads out of the destination (each
    // is warned of; the pull still succeeds).
    std::vector<std::string> links_refused;
};

struct JobSpec {
    std::string name;                  // [A-Za-z0-9][A-Za-z0-9._-]*, at most 64 characters
    Command command;
    ExecOptions options;               // env, cwd, import_container_env (stdin is /dev/null)
};

struct JobInfo {
    std::string name;
    std::string state;                 // running | succeeded | failed | killed
    std::optional<int> exit_code;
    long pid = 0;
    int64_t start_time_unix_s = 0;
    int64_t end_time_unix_s = 0;       // 0 while running
    uint64_t log_bytes = 0;
    std::string command;
};

// What one poll of a detached job brings back (Client::poll_job).
struct JobPoll {
    JobInfo info;                  // the state, read before the log bytes
    uint64_t offset = 0;           // the log offset after the bytes delivered
    bool heartbeat_failed = false; // the touch of the heartbeat file failed (the poll itself worked)
};

// How follow_job paces and reports (deploy_and_analyze follows its remote steps with this).
struct FollowOptions {
    std::string heartbeat_path;  // touched on every poll (empty: none)
    // Called after every poll (save the offset, check a budget; may throw to stop). Then, while the
    // job runs, `wait` paces the polls: it returns false to stop following (a deadline passed).
    std::function<void(const JobPoll &)> after_poll;
    std::function<bool()> wait;  // default: sleep 2 s
};

// One Client holds one SSH session: use it from one thread at a time (open one per thread for
// parallel work; each costs a connection).
class Client {
public:
    // Connects now (and again, transparently, when a later call finds the connection lost).
    static Client connect(const Target & target, const ConnectOptions & options = {});
    // Over an existing transport (the CLI passes a control-socket client); `reconnect` makes a new one.
    Client(std::unique_ptr<Transport> transport, std::function<std::unique_ptr<Transport>()> reconnect);
    Client(Client &&) noexcept;
    Client & operator=(Client &&) noexcept;
    ~Client();

    // Streams stdout/stderr as they arrive; returns the remote exit status.
    int exec(const Command & command, const ExecOptions & options, const StreamCallback & on_stdout,
             const StreamCallback & on_stderr);
    PushStats push(const std::string & local_dir, const PushOptions & options = {});
    PullStats pull(const std::string & remote_path, const std::string & local_dir, const PullOptions & options = {});
    JobInfo run_detached(const JobSpec & spec);
    std::vector<JobInfo> jobs();
    JobInfo job(const std::string & name);  // throws not_found (9)
    // Streams the job log from byte `offset`; with follow, until the job ends, reconnecting after a
    // dropped connection without losing or repeating bytes. Returns the offset after the last byte.
    uint64_t logs(const std::string & name, uint64_t offset, bool follow, const StreamCallback & on_data);
    // One round trip for a follower that polls: touches `touch_path` (a heartbeat for an on-host
    // watchdog; empty: none), reads the job's state, then streams its log from `offset`. The state is
    // read first, so when it says the job ended every byte of the log has been delivered.
    JobPoll poll_job(const std::string & name, uint64_t offset, const StreamCallback & on_data,
                     const std::string & touch_path = {});
    // Polls the job until it ends (or options.wait says stop), streaming its log from `offset`: one
    // channel per poll, each poll surviving dropped connections as poll_job does. Returns the last
    // poll: info.state is "running" only when options.wait stopped it.
    JobPoll follow_job(const std::string & name, uint64_t offset, const StreamCallback & on_data,
                       const FollowOptions & options = {});
    // Reads (logs, jobs, job, poll_job, home) survive a dropped connection: they reconnect and
    // repeat for up to this long (default 180 s) before failing with the connection's error.
    void set_reconnect_window(double seconds);
    // Ends the job's whole process group (TERM, then KILL after grace_s). Returns the final state.
    JobInfo kill(const std::string & name, double grace_s = 5);
    std::string home();  // the remote $HOME, from the server
    Transport & transport();

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

// Reads KEY=VALUE lines (blank lines, # comments, optional `export ` and matching quotes allowed).
// Throws usage naming file:line.
EnvList read_env_file(const std::string & path);
// Parses "KEY=VALUE"; throws usage for a bad key.
std::pair<std::string, std::string> parse_env_assignment(const std::string & text);

}  // namespace bifrost
