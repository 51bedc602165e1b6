// Detached jobs against a real sshd: survival across client disconnects, states and exit codes,
// killing the whole process group, and log following across a dropped connection.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/subprocess.h"
#include "tests/bifrost/remote_fixture.h"

using bifrost::Command;
using bifrost::JobSpec;

namespace {

bifrost::JobInfo wait_state(bifrost::Client & c, const std::string & name, const std::string & state, double timeout_s = 20) {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
        auto j = c.job(name);
        if (j.state == state || std::chrono::steady_clock::now() > end) return j;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

// Live (non-zombie) processes whose process group is pgid, from /proc/*/stat.
int live_in_group(long pgid) {
    int n = 0;
    for (const auto & entry : std::filesystem::directory_iterator("/proc")) {
        std::string stat = tests::slurp(entry.path().string() + "/stat");
        auto close = stat.rfind(')');
        if (close == std::string::npos) continue;
        std::istringstream rest(stat.substr(close + 2));
        char state;
        long ppid, pgrp;
        if (rest >> state >> ppid >> pgrp && pgrp == pgid && state != 'Z') ++n;
    }
    return n;
}

JobSpec spec(const std::string & name, const std::string & shell) {
    JobSpec s;
    s.name = name;
    s.command = Command::sh(shell);
    return s;
}

}  // namespace

TEST_CASE("jobs: a detached job survives its client disconnecting and records its exit code") {
    tests::RemoteFixture remote;
    {
        auto client = remote.client();
        auto s = spec("survivor", "echo started; sleep 2; echo done; exit 3");
        s.options.env = {{"JOB_SECRET", "value-not-on-disk-7781"}};
        auto j = client.run_detached(s);
        CHECK(j.state == "running");
        CHECK(j.pid > 0);
    }  // the client (and its SSH connection) is gone here
    auto client = remote.client();
    CHECK(client.job("survivor").state == "running");
    auto j = wait_state(client, "survivor", "failed");
    CHECK(j.state == "failed");
    REQUIRE(j.exit_code);
    CHECK(*j.exit_code == 3);
    CHECK(j.end_time_unix_s >= j.start_time_unix_s);
    std::string log;
    uint64_t end = client.logs("survivor", 0, false, [&](std::string_view d) { log.append(d); });
    CHECK(end == log.size());
    CHECK(log == "started\ndone\n");
    // The environment was inherited, never written into the job directory.
    for (const char * f : {"run.sh", "command", "log", "pid"})
        CHECK(tests::slurp(remote.home() + "/.bifrost/jobs/survivor/" + f).find("value-not-on-disk-7781") == std::string::npos);
}

TEST_CASE("jobs: listing shows succeeded, failed(code) and killed, kill ends the whole process group") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    client.run_detached(spec("ok", "true"));
    client.run_detached(spec("bad", "exit 42"));
    // A job whose child ignores TERM: kill must still end the group (KILL after the grace period).
    client.run_detached(spec("stubborn", "sh -c 'trap \"\" TERM; sleep 60' & sleep 60; wait"));
    CHECK(wait_state(client, "ok", "succeeded").state == "succeeded");
    CHECK(wait_state(client, "bad", "failed").exit_code == 42);
    auto running = client.job("stubborn");
    REQUIRE(running.state == "running");
    auto killed = client.kill("stubborn", 0.5);
    CHECK(killed.state == "killed");
    // No process of the group is left (pgid == the wrapper's pid).
    CHECK(live_in_group(running.pid) == 0);
    auto all = client.jobs();
    std::map<std::string, std::string> states;
    for (const auto & j : all) states[j.name] = j.state;
    CHECK(states == std::map<std::string, std::string>{{"ok", "succeeded"}, {"bad", "failed"}, {"stubborn", "killed"}});
    try {
        client.kill("nope");
        FAIL("expected not_found");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::NotFound);
    }
    // A running job's name cannot be reused; a finished one can.
    client.run_detached(spec("busy", "sleep 30"));
    CHECK_THROWS_AS(client.run_detached(spec("busy", "true")), common::Error);
    client.kill("busy", 0.5);
    CHECK(client.run_detached(spec("busy", "true")).name == "busy");
}

TEST_CASE("jobs: logs -f resumes across a dropped connection with no gap and no duplicate") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    client.run_detached(spec("counter", "i=0; while [ $i -lt 60 ]; do echo line-$i; i=$((i+1)); sleep 0.05; done"));
    std::string got;
    bool dropped = false;
    std::thread restarter;
    uint64_t end = client.logs("counter", 0, true, [&](std::string_view d) {
        got.append(d);
        if (!dropped && got.size() > 40) {
            dropped = true;
            // Kill sshd and every session (the job lives in its own session and survives), then
            // bring it back on the same port after a moment.
            remote.sshd->server().kill_hard();
            restarter = std::thread([&remote] {
                std::this_thread::sleep_for(std::chrono::milliseconds(700));
                remote.sshd->server().restart();
            });
        }
    });
    if (restarter.joinable()) restarter.join();
    CHECK(dropped);
    std::string expected;
    for (int i = 0; i < 60; ++i) expected += "line-" + std::to_string(i) + "\n";
    CHECK(got == expected);
    CHECK(end == expected.size());
    // Resuming from an offset returns exactly the rest.
    std::string tail;
    client.logs("counter", 10, false, [&](std::string_view d) { tail.append(d); });
    CHECK(tail == expected.substr(10));
}

// The launcher applies --cwd and the wrapper inherits it. When the wrapper changed directory again,
// a relative --cwd (relative to where the SSH session starts) named another directory the second
// time, the wrapper exited before recording anything, and the job showed as "killed" (137).
TEST_CASE("jobs: a relative --cwd runs the job in that directory, once") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    std::string start;
    REQUIRE(client.exec(Command::sh("pwd"), {}, [&](std::string_view d) { start.append(d); }, {}) == 0);
    while (!start.empty() && start.back() == '\n') start.pop_back();
    std::filesystem::create_directories(remote.home() + "/proj");
    std::string relative = std::filesystem::path(remote.home() + "/proj").lexically_relative(start).string();
    REQUIRE(!relative.empty());
    REQUIRE(relative.front() != '/');
    auto s = spec("rel", "pwd");
    s.options.cwd = relative;
    client.run_detached(s);
    auto j = wait_state(client, "rel", "succeeded");
    CHECK(j.state == "succeeded");
    std::string log;
    client.logs("rel", 0, false, [&](std::string_view d) { log.append(d); });
    CHECK(log == std::filesystem::canonical(remote.home() + "/proj").string() + "\n");
}

namespace {

// An unrelated process in its own session and process group (pgid == its pid), as a reused pid
// would name after a reboot or container restart.
struct Decoy {
    pid_t pid = -1;
    Decoy() {
        pid = ::fork();
        if (pid == 0) {
            ::setsid();
            ::execlp("sleep", "sleep", "120", static_cast<char *>(nullptr));
            ::_exit(127);
        }
    }
    bool alive() const { return ::kill(pid, 0) == 0 && ::waitpid(pid, nullptr, WNOHANG) == 0; }
    ~Decoy() {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
};

// A job directory as the wrapper leaves it while running, whose pid file names `pid`.
void fake_running_job(const std::string & home, const std::string & name, pid_t pid, const std::string & ident) {
    const std::string d = home + "/.bifrost/jobs/" + name;
    tests::spit(d + "/pid", std::to_string(pid) + "\n");
    tests::spit(d + "/start_time", "1700000000\n");
    tests::spit(d + "/command", "python train.py\n");
    tests::spit(d + "/log", "old output\n");
    if (!ident.empty()) tests::spit(d + "/ident", ident);
}

}  // namespace

// The wrapper records the boot id and its start time; a pid that now names another process is not
// the job. It used to be "running" while the unrelated process lived, `logs -f` followed it, and
// `kill` sent TERM and KILL to that process's group.
TEST_CASE("jobs: a pid reused by an unrelated process is not the job: not running, logs -f ends, kill leaves it alone") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    // A real job records its identity and is running.
    client.run_detached(spec("real", "sleep 30"));
    const std::string ident = tests::slurp(remote.home() + "/.bifrost/jobs/real/ident");
    CHECK(ident.size() > 40);
    CHECK(client.job("real").state == "running");
    Decoy decoy;
    REQUIRE(decoy.alive());
    const std::string boot = ident.substr(0, ident.find(' '));
    fake_running_job(remote.home(), "stale", decoy.pid, boot + " 1\n");  // same boot, another start time
    fake_running_job(remote.home(), "rebooted", decoy.pid, "00000000-0000-0000-0000-000000000000 1\n");
    for (const char * name : {"stale", "rebooted"}) {
        CAPTURE(name);
        CHECK(client.job(name).state == "killed");  // gone without an exit code
        const auto t0 = std::chrono::steady_clock::now();
        std::string log;
        client.logs(name, 0, true, [&](std::string_view d) { log.append(d); });
        CHECK(log == "old output\n");
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
        client.kill(name, 0.2);
        CHECK(decoy.alive());
        CHECK_FALSE(std::filesystem::exists(remote.home() + "/.bifrost/jobs/" + name + "/killed"));
    }
    // A record from before identities were recorded keeps the old meaning (the pid alone).
    fake_running_job(remote.home(), "old", decoy.pid, "");
    CHECK(client.job("old").state == "running");
    client.kill("real", 0.2);
    CHECK(client.job("real").state == "killed");
}

// The exit code is recorded by renaming an empty file made at the start (state.running ->
// exit.CODE), which needs no free block: on a full disk `echo $code > exit_code.tmp` failed with
// ENOSPC and the job showed as "killed" with no code. The full disk is a 64 KiB tmpfs over the
// job directories when this process may mount one; the recording format is checked either way.
TEST_CASE("jobs: a job that fills the disk still records its exit code, and exit.CODE is read") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    // The format: exit.CODE wins; a record with only exit_code (older bifrost) still reads.
    client.run_detached(spec("fmt", "exit 7"));
    auto j = wait_state(client, "fmt", "failed");
    REQUIRE(j.exit_code);
    CHECK(*j.exit_code == 7);
    CHECK(std::filesystem::exists(remote.home() + "/.bifrost/jobs/fmt/exit.7"));
    CHECK_FALSE(std::filesystem::exists(remote.home() + "/.bifrost/jobs/fmt/state.running"));
    std::filesystem::remove(remote.home() + "/.bifrost/jobs/fmt/exit.7");
    CHECK(client.job("fmt").exit_code == 7);  // from exit_code
    std::filesystem::remove(remote.home() + "/.bifrost/jobs/fmt/exit_code");
    tests::spit(remote.home() + "/.bifrost/jobs/fmt/exit.5", "");
    CHECK(client.job("fmt").exit_code == 5);

    const std::string jobs = remote.home() + "/.bifrost/jobs";
    std::filesystem::create_directories(jobs);
    auto mounted = common::run_process({"mount", "-t", "tmpfs", "-o", "size=64k", "bifrost-test", jobs});
    if (mounted.exit_code != 0) {
        MESSAGE("cannot mount a tmpfs here (", mounted.err, "): the full-disk case is not exercised");
        return;
    }
    struct Unmount {
        std::string path;
        ~Unmount() { common::run_process({"umount", "-l", path}); }
    } unmount{jobs};
    client.run_detached(spec("full", "head -c 1000000 /dev/zero; echo done; exit 3"));
    auto full = wait_state(client, "full", "failed");
    CHECK(full.state == "failed");
    REQUIRE(full.exit_code);
    CHECK(*full.exit_code == 3);
    CHECK_FALSE(std::filesystem::exists(jobs + "/full/exit_code"));  // that write did fail: the disk is full
}

// The wrapper recomputed its job directory from $HOME, which --env HOME=... had changed: the job
// never started. The launcher's and the wrapper's own variables could also be overridden (or
// override the user's): an --env J=... redirected the launcher.
TEST_CASE("jobs: --env HOME, J or i does not break the job, and the job sees the values given") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    auto s = spec("envy", "echo \"$HOME|$J|$i|$code\"");
    s.options.env = {{"HOME", "/nonexistent-home"}, {"J", "user-j"}, {"i", "user-i"}, {"code", "user-code"}};
    client.run_detached(s);
    auto j = wait_state(client, "envy", "succeeded");
    CHECK(j.state == "succeeded");
    std::string log;
    client.logs("envy", 0, false, [&](std::string_view d) { log.append(d); });
    CHECK(log == "/nonexistent-home|user-j|user-i|user-code\n");
}

// A non-interactive shell starts `cmd &` with SIGINT and SIGQUIT ignored, and jobs inherited that:
// a training script's Ctrl-C handler, or `kill -INT` for a clean stop, never fired.
TEST_CASE("jobs: a job starts with SIGINT and SIGQUIT at their default disposition") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    client.run_detached(spec("sigs", "grep SigIgn /proc/self/status"));
    CHECK(wait_state(client, "sigs", "succeeded").state == "succeeded");
    std::string log;
    client.logs("sigs", 0, false, [&](std::string_view d) { log.append(d); });
    REQUIRE(log.rfind("SigIgn:", 0) == 0);
    const unsigned long long ignored = std::strtoull(log.c_str() + 7, nullptr, 16);
    CHECK((ignored & (1ull << (SIGINT - 1))) == 0);
    CHECK((ignored & (1ull << (SIGQUIT - 1))) == 0);
    // And such a job can be stopped with INT (its group gets it, as from a terminal).
    client.run_detached(spec("stoppable", "trap 'echo got INT; exit 5' INT; while :; do sleep 0.1; done"));
    auto running = wait_state(client, "stoppable", "running");
    REQUIRE(running.state == "running");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::kill(-static_cast<pid_t>(running.pid), SIGINT);
    auto stopped = wait_state(client, "stoppable", "failed");
    CHECK(stopped.exit_code == 5);
    client.kill("stoppable", 0.2);  // should the INT not have worked: the job must not outlive the test
}
