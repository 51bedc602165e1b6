// The control-socket master: requests from separate transports share one SSH connection, run
// concurrently with streams kept apart, and a lost connection makes the next request start afresh.
#include <doctest/doctest.h>

#include <filesystem>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "bifrost/mux.h"
#include "common/error.h"
#include "common/sshd_server.h"
#include "tests/bifrost/remote_fixture.h"

namespace {
int count(const std::string & text, const std::string & needle) {
    int n = 0;
    for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
    return n;
}
using tests::Ran;
using tests::run_remote;
}  // namespace

TEST_CASE("mux: separate invocations reuse one authenticated connection, concurrently") {
    tests::RemoteFixture remote;
    auto a = bifrost::connect_via_control(remote.endpoint(), remote.options(), 5);
    auto b = bifrost::connect_via_control(remote.endpoint(), remote.options(), 5);
    auto r = run_remote(*a, "echo out; echo err >&2; exit 4");
    CHECK(r.code == 4);
    CHECK(r.out == "out\n");
    CHECK(r.err == "err\n");
    CHECK(run_remote(*b, "cat", "through stdin").out == "through stdin");
    // Two large outputs at once on one connection.
    Ran big1, big2;
    std::thread t1([&] { big1 = run_remote(*a, "head -c 30000000 /dev/zero; echo e1 >&2"); });
    std::thread t2([&] { big2 = run_remote(*b, "head -c 20000000 /dev/zero; exit 9"); });
    t1.join();
    t2.join();
    CHECK(big1.out.size() == 30000000);
    CHECK(big1.err == "e1\n");
    CHECK(big2.out.size() == 20000000);
    CHECK(big2.code == 9);
    CHECK(count(remote.sshd->server().log_text(), "Accepted publickey") == 1);
    // The library client works through it too.
    bifrost::Client client(bifrost::connect_via_control(remote.endpoint(), remote.options(), 5), nullptr);
    CHECK(client.home() == remote.home());
    CHECK(count(remote.sshd->server().log_text(), "Accepted publickey") == 1);
}

TEST_CASE("mux: when the connection dies the master exits and the next request starts a new one") {
    tests::RemoteFixture remote;
    auto a = bifrost::connect_via_control(remote.endpoint(), remote.options(), 5);
    CHECK(run_remote(*a, "true").code == 0);
    remote.sshd->server().kill_hard();
    remote.sshd->server().restart();
    bool failed = false;
    try {
        run_remote(*a, "true");
    } catch (const common::Error & e) {
        failed = e.kind() == common::ErrorKind::Network;
    }
    CHECK(failed);
    auto b = bifrost::connect_via_control(remote.endpoint(), remote.options(), 5);
    CHECK(run_remote(*b, "exit 5").code == 5);
}

TEST_CASE("mux: a new master's auth failure reaches the caller with its kind") {
    tests::RemoteFixture remote;
    tests::TempDir keys;
    common::generate_ed25519_key(keys / "other", "other");
    auto o = remote.options();
    o.key_path = keys / "other";
    try {
        bifrost::connect_via_control(remote.endpoint(), o, 5);
        FAIL("expected auth failure");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Auth);
    }
}

namespace {

// The control master of `socket_path`: the process whose stderr is the log beside that socket
// (its command line is cut to the length of ours, so it may not show the target).
pid_t master_pid(const std::string & socket_path) {
    const std::string log = socket_path.substr(0, socket_path.size() - 5) + ".log";
    for (const auto & entry : std::filesystem::directory_iterator("/proc")) {
        std::error_code ec;
        if (std::filesystem::read_symlink(entry.path() / "fd" / "2", ec) == log)
            return static_cast<pid_t>(std::atol(entry.path().filename().c_str()));
    }
    return -1;
}

// User plus system CPU seconds of `pid` so far (fields 14 and 15 of /proc/PID/stat).
double cpu_seconds(pid_t pid) {
    std::string stat = tests::slurp("/proc/" + std::to_string(pid) + "/stat");
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string field;
    double ticks = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i)
        if (i >= 14) ticks += std::atof(field.c_str());
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace

// Back-pressure stopped reading the channel of a client that was not reading, but the session
// socket stayed in the poll set, readable, so the master spun at ~90 % of a core until the client
// read again. Now the socket's packets are taken into libssh's buffers (bounded by the channel
// window) and the master sleeps until the client makes room.
TEST_CASE("mux: a client that stops reading does not make the master spin") {
    tests::RemoteFixture remote;
    auto t = bifrost::connect_via_control(remote.endpoint(), remote.options(), 30);
    pid_t master = master_pid(bifrost::control_socket_path(remote.endpoint(), remote.options()));
    REQUIRE(master > 0);
    bifrost::RemoteCommand rc;
    rc.command = "head -c 20000000 /dev/zero";
    size_t got = 0;
    double used = -1;
    rc.on_stdout = [&](std::string_view d) {
        got += d.size();
        if (used >= 0) return;
        // Not reading for 3 s: the master fills its 4 MiB and stops reading the channel.
        std::this_thread::sleep_for(std::chrono::milliseconds(1000));
        double before = cpu_seconds(master);
        std::this_thread::sleep_for(std::chrono::milliseconds(2000));
        used = cpu_seconds(master) - before;
    };
    CHECK(t->run(rc) == 0);
    CHECK(got == 20000000);
    MESSAGE("the master used ", used, " s of CPU in 2 s while its client was not reading");
    CHECK(used < 0.5);
}

// connect_via_control forks the master from the calling process, which may run other threads:
// every descriptor open at that moment used to live on in the master. A thread waiting to start a
// master holds a descriptor of the start-up lock file; once it got the lock through it and closed
// it, the master's inherited copy kept the lock held, and every later start-up waited until that
// master exited (the 5,000-channel soak now and then ran at a tenth of its speed).
TEST_CASE("mux: the control master keeps no descriptor of the process that started it") {
    tests::RemoteFixture remote;
    const std::string lock_path = bifrost::control_socket_path(remote.endpoint(), remote.options()) + ".lock";
    // As another thread's pending start-up: the lock file open, the lock not yet taken.
    int waiting = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(waiting >= 0);
    auto t = bifrost::connect_via_control(remote.endpoint(), remote.options(), 30);
    CHECK(run_remote(*t, "echo up").out == "up\n");
    REQUIRE(::flock(waiting, LOCK_EX | LOCK_NB) == 0);
    ::close(waiting);  // released: nobody else may still hold it
    int again = ::open(lock_path.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(again >= 0);
    CHECK(::flock(again, LOCK_EX | LOCK_NB) == 0);
    ::close(again);
}
