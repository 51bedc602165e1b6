#include "common/subprocess.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "common/error.h"

extern char ** environ;

namespace common {

namespace {

int decode_status(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

std::vector<char *> c_argv(const std::vector<std::string> & argv) {
    std::vector<char *> out;
    for (const auto & a : argv) out.push_back(const_cast<char *>(a.c_str()));
    out.push_back(nullptr);
    return out;
}

// Runs in the forked child only: async-signal-safe calls from here on.
[[noreturn]] void exec_child(const std::vector<char *> & argv, const std::vector<char *> & envp) {
    ::execvpe(argv[0], argv.data(), envp.data());
    const char msg[] = "exec failed\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
}

std::vector<std::string> merged_env(const std::vector<std::string> & extra) {
    std::vector<std::string> env;
    for (char ** e = environ; *e; ++e) env.emplace_back(*e);
    for (const auto & kv : extra) {
        std::string key = kv.substr(0, kv.find('='));
        std::erase_if(env, [&](const std::string & s) { return s.compare(0, key.size() + 1, key + "=") == 0; });
        env.push_back(kv);
    }
    return env;
}

void kill_tree(pid_t pid, int sig) {
    // Collect first, then signal: descendants of an sshd live in their own sessions, so a
    // process-group kill would miss them.
    std::vector<pid_t> victims = process_descendants(pid);
    victims.push_back(pid);
    for (pid_t p : victims) ::kill(p, sig);
    ::kill(-pid, sig);  // and the group, for children we could not see yet
}

}  // namespace

bool process_alive(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return false;
    size_t close = line.rfind(')');
    return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

std::vector<pid_t> process_descendants(pid_t root) {
    std::multimap<pid_t, pid_t> children;  // ppid -> pid
    if (DIR * dir = ::opendir("/proc")) {
        while (dirent * entry = ::readdir(dir)) {
            char * end = nullptr;
            long pid = std::strtol(entry->d_name, &end, 10);
            if (*end != '\0' || pid <= 0) continue;
            std::ifstream stat("/proc/" + std::string(entry->d_name) + "/stat");
            std::string line;
            if (!std::getline(stat, line)) continue;
            // Field 2 (comm) may contain spaces and parentheses: parse after the last ')'.
            size_t close = line.rfind(')');
            if (close == std::string::npos) continue;
            std::istringstream rest(line.substr(close + 2));
            char state;
            long ppid;
            if (rest >> state >> ppid) children.emplace(static_cast<pid_t>(ppid), static_cast<pid_t>(pid));
        }
        ::closedir(dir);
    }
    std::vector<pid_t> out;
    std::vector<pid_t> frontier{root};
    while (!frontier.empty()) {
        pid_t p = frontier.back();
        frontier.pop_back();
        auto [lo, hi] = children.equal_range(p);
        for (auto it = lo; it != hi; ++it) {
            out.push_back(it->second);
            frontier.push_back(it->second);
        }
    }
    return out;
}

ProcessResult run_process(const std::vector<std::string> & argv, const RunOptions & options) {
    if (argv.empty()) throw Error::internal("run_process: empty argv");
    int in_pipe[2], out_pipe[2], err_pipe[2];
    if (::pipe2(in_pipe, O_CLOEXEC) || ::pipe2(out_pipe, O_CLOEXEC) || ::pipe2(err_pipe, O_CLOEXEC))
        throw Error::internal(std::string("pipe: ") + std::strerror(errno));

    std::vector<std::string> env = merged_env(options.extra_env);
    std::vector<char *> envp = c_argv(env);
    std::vector<char *> args = c_argv(argv);

    pid_t pid = ::fork();
    if (pid < 0) throw Error::internal(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        ::setpgid(0, 0);
        ::dup2(in_pipe[0], STDIN_FILENO);
        ::dup2(out_pipe[1], STDOUT_FILENO);
        ::dup2(err_pipe[1], STDERR_FILENO);
        if (!options.cwd.empty() && ::chdir(options.cwd.c_str()) != 0) ::_exit(127);
        exec_child(args, envp);
    }
    ::close(in_pipe[0]);
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);

    ProcessResult result;
    size_t stdin_off = 0;
    int stdin_fd = in_pipe[1];
    if (options.stdin_data.empty()) {
        ::close(stdin_fd);
        stdin_fd = -1;
    } else {
        ::fcntl(stdin_fd, F_SETFL, O_NONBLOCK);
    }
    ::signal(SIGPIPE, SIG_IGN);  // a child that exits early must not kill us through its stdin

    auto start = std::chrono::steady_clock::now();
    int open_fds = 2;
    bool out_open = true, err_open = true;
    char buf[65536];
    while (open_fds > 0 || stdin_fd >= 0) {
        pollfd fds[3];
        int n = 0;
        if (out_open) fds[n++] = {out_pipe[0], POLLIN, 0};
        if (err_open) fds[n++] = {err_pipe[0], POLLIN, 0};
        if (stdin_fd >= 0) fds[n++] = {stdin_fd, POLLOUT, 0};
        int wait_ms = 200;
        if (options.timeout) {
            auto elapsed = std::chrono::steady_clock::now() - start;
            if (elapsed >= *options.timeout) {
                result.timed_out = true;
                kill_tree(pid, SIGKILL);
                break;
            }
        }
        int rc = ::poll(fds, n, wait_ms);
        if (rc < 0 && errno != EINTR) break;
        for (int i = 0; i < n; ++i) {
            if (!fds[i].revents) continue;
            if (fds[i].fd == stdin_fd) {
                ssize_t w = ::write(stdin_fd, options.stdin_data.data() + stdin_off,
                                    options.stdin_data.size() - stdin_off);
                if (w > 0) stdin_off += static_cast<size_t>(w);
                if (w < 0 && errno != EAGAIN) stdin_off = options.stdin_data.size();
                if (stdin_off >= options.stdin_data.size()) {
                    ::close(stdin_fd);
                    stdin_fd = -1;
                }
                continue;
            }
            ssize_t r = ::read(fds[i].fd, buf, sizeof buf);
            if (r > 0) {
                (fds[i].fd == out_pipe[0] ? result.out : result.err).append(buf, static_cast<size_t>(r));
            } else if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
                if (fds[i].fd == out_pipe[0]) out_open = false;
                else err_open = false;
                --open_fds;
            }
        }
    }
    if (stdin_fd >= 0) ::close(stdin_fd);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    result.exit_code = decode_status(status);
    if (result.exit_code == 127 && result.err.find("exec failed") != std::string::npos)
        throw Error(ErrorKind::NotFound, argv[0] + ": cannot run program (not installed or not in PATH)");
    return result;
}

ChildProcess ChildProcess::spawn(const std::vector<std::string> & argv, const Options & options) {
    if (argv.empty()) throw Error::internal("spawn: empty argv");
    std::vector<char *> args = c_argv(argv);
    std::vector<std::string> env = merged_env({});
    std::vector<char *> envp = c_argv(env);
    int out_fd = ::open(options.stdout_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int err_fd = ::open(options.stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (out_fd < 0 || err_fd < 0) {
        int e = errno;
        if (out_fd >= 0) ::close(out_fd);
        throw Error::io(out_fd < 0 ? options.stdout_path : options.stderr_path, "open", e);
    }
    pid_t pid = ::fork();
    if (pid < 0) throw Error::internal(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        if (options.new_session) ::setsid();
        int null_fd = ::open("/dev/null", O_RDONLY);
        ::dup2(null_fd, STDIN_FILENO);
        ::dup2(out_fd, STDOUT_FILENO);
        ::dup2(err_fd, STDERR_FILENO);
        if (!options.cwd.empty() && ::chdir(options.cwd.c_str()) != 0) ::_exit(127);
        exec_child(args, envp);
    }
    ::close(out_fd);
    ::close(err_fd);
    ChildProcess child;
    child.pid_ = pid;
    return child;
}

ChildProcess::ChildProcess(ChildProcess && other) noexcept : pid_(other.pid_), exit_code_(other.exit_code_) {
    other.pid_ = -1;
}

ChildProcess & ChildProcess::operator=(ChildProcess && other) noexcept {
    if (this != &other) {
        stop();
        pid_ = other.pid_;
        exit_code_ = other.exit_code_;
        other.pid_ = -1;
    }
    return *this;
}

ChildProcess::~ChildProcess() { stop(); }

bool ChildProcess::running() { return pid_ > 0 && !wait_for(std::chrono::milliseconds(0)).has_value(); }

std::optional<int> ChildProcess::wait_for(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return exit_code_;
    if (exit_code_) return exit_code_;
    auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        int status = 0;
        pid_t r = ::waitpid(pid_, &status, WNOHANG);
        if (r == pid_) {
            exit_code_ = decode_status(status);
            return exit_code_;
        }
        if (r < 0 && errno != EINTR) {
            exit_code_ = -1;
            return exit_code_;
        }
        if (std::chrono::steady_clock::now() >= end) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

void ChildProcess::stop(std::chrono::milliseconds grace) {
    if (pid_ <= 0) return;
    if (!exit_code_) {
        std::vector<pid_t> tree = process_descendants(pid_);
        kill_tree(pid_, SIGTERM);
        if (!wait_for(grace)) {
            kill_tree(pid_, SIGKILL);
            wait_for(std::chrono::milliseconds(5000));
        }
        for (pid_t p : tree) ::kill(p, SIGKILL);  // sessions that ignored SIGTERM
        // A signal is delivered asynchronously and those sessions are not our children, so
        // nothing reaps them for us: wait (bounded) until each has died, so that "stopped"
        // means the sessions are gone when stop() returns, not a moment later.
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(2000);
        while (std::ranges::any_of(tree, process_alive) && std::chrono::steady_clock::now() < end)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
}

void ChildProcess::kill_hard() {
    if (pid_ <= 0 || exit_code_) return;
    kill_tree(pid_, SIGKILL);
    wait_for(std::chrono::milliseconds(5000));
}

}  // namespace common
