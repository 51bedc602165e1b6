// Long-lived use of one SSH connection: following a job poll by poll (the loop deploy uses), across
// sshd restarts, with many channels opened from several threads through the control master; plus
// what happens when the server refuses a channel and when a command dies from a signal.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "bifrost/channel.h"
#include "bifrost/mux.h"
#include "common/error.h"
#include "common/subprocess.h"
#include "tests/bifrost/remote_fixture.h"

namespace {

using namespace std::chrono_literals;

// A job that prints numbered lines "<n>\n" for n in [0, count), `per_batch` lines every `pause`.
bifrost::JobSpec counting_job(const std::string & name, int count, int per_batch, const std::string & pause) {
    bifrost::JobSpec spec;
    spec.name = name;
    spec.command = bifrost::Command::sh("i=0; while [ $i -lt " + std::to_string(count) + " ]; do j=0; while [ $j -lt " +
                                        std::to_string(per_batch) + " ] && [ $i -lt " + std::to_string(count) +
                                        " ]; do echo $i; i=$((i+1)); j=$((j+1)); done; sleep " + pause + "; done");
    return spec;
}

// Checks that `text` is exactly "0\n1\n...\n(count-1)\n": nothing lost, nothing repeated.
void check_counting_log(const std::string & text, int count) {
    std::string expected;
    for (int i = 0; i < count; ++i) expected += std::to_string(i) + "\n";
    CHECK(text.size() == expected.size());
    CHECK(text == expected);
}

// True when some process's command line contains `needle`.
bool any_command_line_contains(const std::string & needle) {
    DIR * d = ::opendir("/proc");
    if (!d) return false;
    bool found = false;
    while (dirent * e = ::readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        std::ifstream in(std::string("/proc/") + e->d_name + "/cmdline", std::ios::binary);
        std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (cmd.find(needle) != std::string::npos) found = true;
    }
    ::closedir(d);
    return found;
}

}  // namespace

TEST_CASE("follow_job: one channel per poll, the heartbeat touched, every byte once, the end state with the whole log") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    client.run_detached(counting_job("count", 300, 10, "0.05"));  // at least 1.5 s of output
    std::string got;
    int polls = 0;
    bifrost::FollowOptions fo;
    fo.heartbeat_path = remote.home() + "/hb";
    fo.after_poll = [&](const bifrost::JobPoll &) { ++polls; };
    fo.wait = [] {
        std::this_thread::sleep_for(20ms);
        return true;
    };
    auto last = client.follow_job("count", 0, [&](std::string_view d) { got.append(d); }, fo);
    CHECK(last.info.state == "succeeded");
    CHECK(last.offset == got.size());
    check_counting_log(got, 300);
    CHECK(polls >= 2);
    CHECK(std::filesystem::exists(remote.home() + "/hb"));
    // Resuming from a saved offset delivers only what follows it.
    std::string tail;
    auto again = client.poll_job("count", 10, [&](std::string_view d) { tail.append(d); });
    CHECK(tail == got.substr(10));
    CHECK(again.offset == got.size());
    // An unknown job is not_found, not a network error to retry.
    CHECK_THROWS_AS(client.poll_job("nope", 0, {}), common::Error);
}

TEST_CASE("follow_job: an sshd killed and restarted mid-follow costs nothing: the poll reconnects, no byte lost or repeated") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    client.run_detached(counting_job("steady", 400, 20, "0.05"));
    std::string got;
    int polls = 0;
    bool restarted = false;
    bifrost::FollowOptions fo;
    fo.after_poll = [&](const bifrost::JobPoll &) {
        if (++polls == 3) {
            remote.sshd->server().kill_hard();  // every connection drops at once
            remote.sshd->server().restart();
            restarted = true;
        }
    };
    fo.wait = [] {
        std::this_thread::sleep_for(30ms);
        return true;
    };
    auto last = client.follow_job("steady", 0, [&](std::string_view d) { got.append(d); }, fo);
    CHECK(restarted);
    CHECK(last.info.state == "succeeded");
    check_counting_log(got, 400);
}

TEST_CASE("follow_job: a host that stays away fails with a network error once the reconnect window is spent") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    client.set_reconnect_window(1);
    client.run_detached(counting_job("orphan", 1000, 1, "0.05"));
    remote.sshd->server().stop();
    bool network = false;
    try {
        client.follow_job("orphan", 0, {});
    } catch (const common::Error & e) {
        network = e.kind() == common::ErrorKind::Network || e.kind() == common::ErrorKind::Timeout;
    }
    CHECK(network);
}

TEST_CASE("connection: a channel the server refuses marks the connection for a reconnect, the client carries on") {
    tests::RemoteFixture remote({"MaxSessions 1"});
    auto conn = bifrost::Connection::open(remote.endpoint(), remote.options());
    {
        // Hold the one session sshd allows, then ask for a second.
        bifrost::ChannelTask holder(conn->session(), "sleep 5", conn->label());
        bifrost::RemoteCommand rc;
        rc.command = "true";
        bool refused = false;
        try {
            conn->run(rc);
        } catch (const bifrost::CommandNotStarted & e) {
            refused = e.kind() == common::ErrorKind::Network;
            CHECK(e.message().find("opening a session channel") != std::string::npos);
        }
        CHECK(refused);
        CHECK_FALSE(conn->usable());
    }
    // The Client reconnects on its own: a fresh session takes new channels again.
    auto client = remote.client();
    std::string out;
    CHECK(client.exec(bifrost::Command::sh("echo fine"), {}, [&](std::string_view d) { out.append(d); }, {}) == 0);
    CHECK(out == "fine\n");
}

// The failure a 9-minute demo follow met: on a loaded machine a channel open outlived libssh's
// timeout (then the connect timeout, 10 s). libssh 0.10 returns SSH_AGAIN with no error of its own,
// and freeing the still-unbound channel removes it at once, so the server's late confirmation and
// its keepalives on that channel arrive for an id libssh no longer knows ("Server specified invalid
// channel N"); the next timed-out open then reported that old message. Here sshd's connection
// process is stopped to make the open outlive a 1 s channel timeout.
TEST_CASE("connection: a channel open that outlives the timeout retires the session and says so, the client reconnects") {
    tests::RemoteFixture remote;
    auto options = remote.options();
    options.channel_timeout_s = 1;
    auto conn = bifrost::Connection::open(remote.endpoint(), options);
    bifrost::RemoteCommand rc;
    rc.command = "true";
    CHECK(conn->run(rc) == 0);
    auto stalled = common::process_descendants(remote.sshd->server().pid());
    REQUIRE_FALSE(stalled.empty());
    for (pid_t p : stalled) ::kill(p, SIGSTOP);
    std::string message;
    common::ErrorKind kind = common::ErrorKind::Internal;
    try {
        conn->run(rc);
    } catch (const bifrost::CommandNotStarted & e) {
        message = e.message();
        kind = e.kind();
    }
    for (pid_t p : stalled) ::kill(p, SIGCONT);
    CHECK(kind == common::ErrorKind::Timeout);
    CHECK(message.find("no answer from the server within 1.0s") != std::string::npos);
    CHECK_FALSE(conn->usable());
    // A client over such connections carries on with a new session for reads.
    int made = 0;
    auto factory = [&]() -> std::unique_ptr<bifrost::Transport> {
        ++made;
        return bifrost::Connection::open(remote.endpoint(), options);
    };
    bifrost::Client client(factory(), factory);
    client.run_detached(counting_job("after", 5, 5, "0"));
    for (pid_t p : common::process_descendants(remote.sshd->server().pid())) ::kill(p, SIGSTOP);
    std::thread wake([&] {
        std::this_thread::sleep_for(1500ms);
        for (pid_t p : common::process_descendants(remote.sshd->server().pid())) ::kill(p, SIGCONT);
    });
    std::string got;
    auto poll = client.poll_job("after", 0, [&](std::string_view d) { got.append(d); });
    wake.join();
    CHECK(poll.info.state != "running");
    check_counting_log(got, 5);
    CHECK(made >= 2);
}

TEST_CASE("mux: a channel the server refuses drains the master, requests in flight finish, the next one gets a new master") {
    tests::RemoteFixture remote({"MaxSessions 1"});
    auto a = bifrost::connect_via_control(remote.endpoint(), remote.options(), 30);
    auto b = bifrost::connect_via_control(remote.endpoint(), remote.options(), 30);
    std::string slow_out;
    int slow_code = -1;
    std::thread slow([&] {
        bifrost::RemoteCommand rc;
        rc.command = "sleep 1; echo done";
        rc.on_stdout = [&](std::string_view d) { slow_out.append(d); };
        slow_code = a->run(rc);
    });
    std::this_thread::sleep_for(300ms);
    bifrost::RemoteCommand rc;
    rc.command = "true";
    CHECK_THROWS_AS(b->run(rc), common::Error);
    slow.join();
    CHECK(slow_code == 0);
    CHECK(slow_out == "done\n");
    auto c = bifrost::connect_via_control(remote.endpoint(), remote.options(), 30);
    bifrost::RemoteCommand again;
    again.command = "exit 3";
    CHECK(c->run(again) == 3);
}

TEST_CASE("mux: an exec that meets a dead master before it started runs on a new master, once") {
    tests::RemoteFixture remote;
    auto endpoint = remote.endpoint();
    auto options = remote.options();
    auto factory = [&]() -> std::unique_ptr<bifrost::Transport> { return bifrost::connect_via_control(endpoint, options, 30); };
    bifrost::Client client(factory(), factory);
    CHECK(client.exec(bifrost::Command::sh("true"), {}, {}, {}) == 0);
    remote.sshd->server().kill_hard();  // the master's SSH connection dies under it
    remote.sshd->server().restart();
    std::string out;
    CHECK(client.exec(bifrost::Command::sh("echo $((20+1)) >> ~/ran; cat ~/ran"), {}, [&](std::string_view d) { out.append(d); }, {}) == 0);
    CHECK(out == "21\n");  // it ran exactly once
}

TEST_CASE("exec: a command killed by a signal exits 128+N, as a shell reports it, and says which signal") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    CHECK(client.exec(bifrost::Command::sh("kill -9 $$"), {}, {}, {}) == 137);
    CHECK(client.exec(bifrost::Command::sh("kill -SEGV $$"), {}, {}, {}) == 139);
    CHECK(bifrost::signal_number("TERM") == 15);
    CHECK(bifrost::signal_number("SIGKILL") == 9);
    CHECK(bifrost::signal_number("NOPE") == 0);
    for (const char * persist : {"0", "30"}) {
        auto r = remote.cli({"--persist", persist, "exec", remote.target(), "--sh", "--", "kill -TERM $$"});
        CHECK(r.code == 143);
        CHECK(r.err.find("killed by signal SIGTERM") != std::string::npos);
    }
}

TEST_CASE("cli: --env takes one value, so `--` still ends the options, the control master's command line carries no secret") {
    tests::RemoteFixture remote;
    auto r = remote.cli({"exec", remote.target(), "--env", "X=1", "--", "sh", "-c", "echo $X"});
    CHECK(r.code == 0);
    CHECK(r.out == "1\n");
    r = remote.cli({"run", "--name", "envjob", remote.target(), "--env", "Y=2", "--", "sh", "-c", "echo $Y"});
    CHECK(r.code == 0);
    const std::string secret = "s3cr3t-" + std::to_string(::getpid());
    r = remote.cli({"--persist", "30", "exec", remote.target(), "--env", "TOKEN=" + secret, "--", "sh", "-c", "echo ${#TOKEN}"});
    CHECK(r.code == 0);
    CHECK(r.out == std::to_string(secret.size()) + "\n");
    CHECK(any_command_line_contains("bifrost control-master"));  // the master is up, and is named so
    CHECK_FALSE(any_command_line_contains(secret));
}

// The CI-sized soak: several threads open channels through one control master while a job is
// followed with heartbeats by the deploy loop, and sshd is killed and restarted once in the middle.
// bench/soak_follow.sh runs the same for hours.
TEST_CASE("soak: up to 5,000 channels from 8 threads and a followed job across an sshd restart, nothing lost") {
    tests::RemoteFixture remote;
    auto follower = remote.client();
    follower.run_detached(counting_job("soak", 6000, 30, "0.05"));  // 200 batches: 10-20 s of output
    const auto start = std::chrono::steady_clock::now();
    std::atomic<int> channels{0}, failures{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> workers;
    for (int w = 0; w < 8; ++w)
        workers.emplace_back([&] {
            while (!stop && channels < 5000) {
                try {
                    auto t = bifrost::connect_via_control(remote.endpoint(), remote.options(), 30);
                    while (!stop && channels < 5000) {
                        bifrost::RemoteCommand rc;
                        rc.command = "echo x";
                        std::string out;
                        rc.on_stdout = [&](std::string_view d) { out.append(d); };
                        int code = t->run(rc);
                        if (code != 0 || out != "x\n") ++failures;
                        ++channels;
                    }
                } catch (const common::Error &) {
                    // The restart drops the master: the next transport starts a new one.
                    std::this_thread::sleep_for(50ms);
                }
            }
        });
    std::string got;
    int polls = 0;
    bifrost::FollowOptions fo;
    fo.heartbeat_path = remote.home() + "/soak.hb";
    fo.after_poll = [&](const bifrost::JobPoll &) {
        if (++polls == 10) {
            remote.sshd->server().kill_hard();
            remote.sshd->server().restart();
        }
    };
    fo.wait = [] {
        std::this_thread::sleep_for(50ms);
        return true;
    };
    auto last = follower.follow_job("soak", 0, [&](std::string_view d) { got.append(d); }, fo);
    // Up to 5,000 channels or 150 s, whichever comes first. On a quiet 2-core machine 5,000 take well
    // under 2 minutes; at load average 10-15 (other builds, fuzzers) this machine opened 12-22 a
    // second, so the count is reported, and the property checked is that every channel worked.
    while (channels < 5000 && std::chrono::steady_clock::now() - start < 150s) std::this_thread::sleep_for(100ms);
    stop = true;
    for (auto & t : workers) t.join();
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    MESSAGE("soak: ", channels.load(), " channels through the master (", channels.load() / took, " a second) and ", polls,
            " polls in ", took, " s");
    CHECK(polls > 10);
    CHECK(last.info.state == "succeeded");
    check_counting_log(got, 6000);
    CHECK(channels >= 1000);
    CHECK(failures == 0);
}

// The full soak (bench/soak_follow.sh; skipped in CI): a job printing a line every 100 ms for
// BIFROST_SOAK_S seconds (default 2 h), followed by deploy's loop (a poll every 2 s, with the
// heartbeat), a `bifrost exec` through the control master every second, and sshd killed and
// restarted once half way. Passes when the log arrives byte for byte and no step failed.
TEST_CASE("soak: long follow with heartbeats, an exec through the control master every second, sshd restarted half way" *
          doctest::skip()) {
    const char * env_s = std::getenv("BIFROST_SOAK_S");
    const double soak_s = env_s ? std::atof(env_s) : 7200;
    const char * env_exe = std::getenv("BIFROST_SOAK_EXE");
    const std::string exe = env_exe ? env_exe : BIFROST_EXE;
    tests::RemoteFixture remote;
    auto follower = remote.client();
    // Lines "<n>" every 100 ms until soak_s has passed on the remote clock, then "end <count>".
    bifrost::JobSpec spec;
    spec.name = "long";
    spec.command = bifrost::Command::sh("end=$(( $(date +%s) + " + std::to_string(static_cast<long>(soak_s)) +
                                        " )); i=0; while [ $(date +%s) -lt $end ]; do echo $i; i=$((i+1)); sleep 0.1; done; echo end $i");
    follower.run_detached(spec);
    const auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    std::atomic<bool> stop{false};
    std::atomic<int> execs{0}, exec_failures{0};
    std::thread execer([&] {
        while (!stop) {
            common::RunOptions ro;
            ro.timeout = std::chrono::milliseconds(120000);
            auto r = common::run_process({exe, "--key", remote.sshd->client_key(), "--persist", "60", "--wait", "30", "exec", remote.target(),
                                          "--", "echo", "ok"},
                                         ro);
            ++execs;
            if (r.exit_code != 0 || r.out != "ok\n") {
                ++exec_failures;
                MESSAGE("exec ", execs.load(), " at ", elapsed(), " s failed (exit ", r.exit_code, "): ", r.err);
            }
            std::this_thread::sleep_for(1s);
        }
    });
    std::string got;
    int polls = 0;
    bool restarted = false;
    bifrost::FollowOptions fo;
    fo.heartbeat_path = remote.home() + "/long.hb";
    fo.after_poll = [&](const bifrost::JobPoll & p) {
        ++polls;
        if (!restarted && elapsed() > soak_s / 2) {
            MESSAGE("killing and restarting sshd at ", elapsed(), " s (offset ", p.offset, ")");
            remote.sshd->server().kill_hard();
            remote.sshd->server().restart();
            restarted = true;
        }
        if (polls % 300 == 0) MESSAGE(elapsed(), " s: ", polls, " polls, offset ", p.offset, ", ", execs.load(), " execs");
    };
    fo.wait = [] {
        std::this_thread::sleep_for(2s);
        return true;
    };
    bool follow_failed = false;
    try {
        auto last = follower.follow_job("long", 0, [&](std::string_view d) { got.append(d); }, fo);
        CHECK(last.info.state == "succeeded");
    } catch (const common::Error & e) {
        follow_failed = true;
        MESSAGE("follow failed at ", elapsed(), " s: ", e.message());
    }
    stop = true;
    execer.join();
    MESSAGE("soak: ", elapsed(), " s, ", polls, " polls, ", got.size(), " log bytes, ", execs.load(), " execs (", exec_failures.load(),
            " failed), sshd restarted: ", restarted);
    CHECK_FALSE(follow_failed);
    CHECK(restarted);
    const size_t end_at = got.rfind("end ");
    REQUIRE(end_at != std::string::npos);
    const int lines = std::atoi(got.c_str() + end_at + 4);
    MESSAGE("the job printed ", lines, " lines");
    check_counting_log(got.substr(0, end_at), lines);
    CHECK(got.substr(end_at) == "end " + std::to_string(lines) + "\n");
    CHECK(exec_failures == 0);
}

// The reconnect window is per outage. It used to be measured from the start of the whole follow, so
// any drop after the window's length of following (3 minutes in the CLI) failed at once. Here the
// window is 1.5 s and the follow runs ~6 s with three drops: one while the job is silent, one after
// that reconnect while it is still silent (no byte has arrived since the first drop, but the read
// had started again: the outage was over), and one after bytes flowed again.
TEST_CASE("logs: a follow longer than the reconnect window survives later drops, every byte once") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    client.set_reconnect_window(1.5);
    bifrost::JobSpec spec;
    spec.name = "long";
    spec.command = bifrost::Command::sh(
        "echo first; sleep 4; i=0; while [ $i -lt 60 ]; do echo line-$i; i=$((i+1)); sleep 0.05; done");
    client.run_detached(spec);
    std::atomic<bool> first{false}, lines{false};
    std::atomic<int> drops{0};
    auto drop = [&] {
        remote.sshd->server().kill_hard();
        std::this_thread::sleep_for(300ms);
        remote.sshd->server().restart();
        ++drops;
    };
    std::thread dropper([&] {
        while (!first) std::this_thread::sleep_for(10ms);
        std::this_thread::sleep_for(500ms);
        drop();  // t ~ 0.5 s: silent
        std::this_thread::sleep_for(2500ms);
        drop();  // t ~ 3.6 s: still silent, 3 s after the first drop
        while (!lines) std::this_thread::sleep_for(10ms);
        std::this_thread::sleep_for(1000ms);
        drop();  // bytes have flowed since the last drop
    });
    std::string got;
    bool failed = false;
    try {
        client.logs("long", 0, true, [&](std::string_view d) {
            got.append(d);
            first = true;
            if (got.find("line-") != std::string::npos) lines = true;
        });
    } catch (const common::Error & e) {
        failed = true;
        MESSAGE("follow failed: ", e.message());
        first = lines = true;
    }
    dropper.join();
    CHECK_FALSE(failed);
    CHECK(drops == 3);
    std::string expected = "first\n";
    for (int i = 0; i < 60; ++i) expected += "line-" + std::to_string(i) + "\n";
    CHECK(got == expected);
}

// When the window is spent, the follower says how to resume at the exact byte it reached.
TEST_CASE("cli: logs -f that gives up prints the command that resumes at the byte reached") {
    tests::RemoteFixture remote;
    auto client = remote.client();
    bifrost::JobSpec spec;
    spec.name = "cut";
    spec.command = bifrost::Command::sh("echo 12345; sleep 30");
    client.run_detached(spec);
    std::thread stopper([&] {
        std::this_thread::sleep_for(1500ms);
        remote.sshd->server().stop();
    });
    auto r = remote.cli({"--persist", "0", "--follow-window", "1", "logs", "-f", remote.target(), "cut"});
    stopper.join();
    CHECK(r.out == "12345\n");
    CHECK(r.code == 6);
    CHECK(r.err.find("resume with: bifrost logs -f " + remote.target() + " cut --offset 6") != std::string::npos);
}

namespace {

// Stops every process under the test sshd (its per-connection processes: the connections go
// silent while the kernel keeps ACKing, as with a frozen machine or a wedged sshd) until `thaw()`
// or the end of the scope. New connections are served by the listener, which is not stopped.
struct Freezer {
    pid_t daemon;
    std::vector<pid_t> stopped;
    explicit Freezer(pid_t d) : daemon(d) {}
    void freeze() {
        stopped = common::process_descendants(daemon);
        for (pid_t p : stopped) ::kill(p, SIGSTOP);
    }
    void thaw() {
        for (pid_t p : stopped) ::kill(p, SIGCONT);
        stopped.clear();
    }
    ~Freezer() { thaw(); }
};

// Follows `name` through `client` while the server is frozen once, part way; returns how long the
// follow took and checks its log. The freeze lasts 40 s unless the follow ends first.
double follow_through_freeze(tests::RemoteFixture & remote, bifrost::Client & client, const std::string & name, int lines,
                             const std::function<void()> & during_freeze = {}) {
    Freezer freezer(remote.sshd->server().pid());
    std::atomic<size_t> received{0};
    std::atomic<bool> done{false};
    std::thread freezing([&] {
        while (received < 40 && !done) std::this_thread::sleep_for(10ms);
        freezer.freeze();
        if (during_freeze) during_freeze();
        for (int i = 0; i < 400 && !done; ++i) std::this_thread::sleep_for(100ms);
        freezer.thaw();
    });
    const auto t0 = std::chrono::steady_clock::now();
    std::string got;
    try {
        client.logs(name, 0, true, [&](std::string_view d) {
            got.append(d);
            received = got.size();
        });
    } catch (const common::Error & e) {
        MESSAGE("follow failed: ", e.message());
    }
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    done = true;
    freezing.join();
    check_counting_log(got, lines);
    return took;
}

}  // namespace

// A server that stops answering while its kernel still ACKs (SIGSTOPped sshd session, a wedged
// machine) never trips TCP's timeouts: the follower used to wait on it for ever, since its
// keepalive (SSH_MSG_IGNORE) asks for no answer. Now a keepalive@openssh.com request must be
// answered; nothing from the server for 3 intervals declares the connection dead and the read
// reconnects. The job takes ~8 s; a 40 s freeze would show in the follow's duration.
TEST_CASE("connection: a frozen server is given up on within 3 keepalives, the follower reconnects, every byte once") {
    tests::RemoteFixture remote;
    auto options = remote.options();
    options.keepalive_s = 1;
    auto factory = [&]() -> std::unique_ptr<bifrost::Transport> { return bifrost::Connection::open(remote.endpoint(), options); };
    bifrost::Client client(factory(), factory);
    client.run_detached(counting_job("frozen", 120, 1, "0.05"));
    double took = follow_through_freeze(remote, client, "frozen", 120);
    MESSAGE("follow took ", took, " s");
    CHECK(took < 25);
}

// The same through the control master, which is single-threaded: it must notice the frozen server
// (and exit, telling its clients) while a new request's channel open waits on that server, and
// the request must then run on a new master.
TEST_CASE("mux: a frozen server ends the control master within 3 keepalives, its clients reconnect and run on a new one") {
    tests::RemoteFixture remote;
    auto options = remote.options();
    options.keepalive_s = 1;
    auto factory = [&]() -> std::unique_ptr<bifrost::Transport> { return bifrost::connect_via_control(remote.endpoint(), options, 30); };
    bifrost::Client client(factory(), factory);
    client.run_detached(counting_job("frozen", 120, 1, "0.05"));
    int exec_code = -1;
    std::string exec_out;
    double exec_took = 0;
    std::thread execer;
    double took = follow_through_freeze(remote, client, "frozen", 120, [&] {
        execer = std::thread([&] {
            std::this_thread::sleep_for(300ms);
            bifrost::Client other(factory(), factory);
            const auto t0 = std::chrono::steady_clock::now();
            try {
                exec_code = other.exec(bifrost::Command::sh("echo hi"), {}, [&](std::string_view d) { exec_out.append(d); }, {});
            } catch (const common::Error & e) {
                MESSAGE("exec failed: ", e.message());
            }
            exec_took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        });
    });
    if (execer.joinable()) execer.join();
    MESSAGE("follow took ", took, " s, the exec during the freeze ", exec_took, " s");
    CHECK(took < 25);
    CHECK(exec_code == 0);
    CHECK(exec_out == "hi\n");
    CHECK(exec_took < 15);
}
