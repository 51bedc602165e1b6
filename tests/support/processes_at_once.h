// Races between processes, as a sweep's members meet them on shared state (the ledger, the local
// provider's records, ssh-hosts leases): n forked processes released together.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <functional>
#include <vector>

namespace tests {

// Runs body(k) for k = 0..n-1, each in its own forked process; all wait on one pipe and start when
// the parent closes it. A body that throws fails its process (the message goes to stderr). Returns
// how many processes failed. Bodies must not use doctest's CHECKs: they run in the children.
inline int run_processes_at_once(int n, const std::function<void(int)> & body) {
    int gate[2];
    if (::pipe(gate) != 0) return n;
    std::vector<pid_t> kids;
    for (int k = 0; k < n; ++k) {
        const pid_t pid = ::fork();
        if (pid < 0) break;
        if (pid == 0) {
            ::close(gate[1]);
            char c;
            (void)!::read(gate[0], &c, 1);  // returns when the parent closes the pipe
            try {
                body(k);
                ::_exit(0);
            } catch (const std::exception & ex) {
                std::fprintf(stderr, "process %d: %s\n", k, ex.what());
            } catch (...) {
                std::fprintf(stderr, "process %d: unknown exception\n", k);
            }
            ::_exit(1);
        }
        kids.push_back(pid);
    }
    ::close(gate[0]);
    ::close(gate[1]);
    int failed = n - static_cast<int>(kids.size());  // forks that did not happen
    for (const pid_t pid : kids) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
    }
    return failed;
}

}  // namespace tests
