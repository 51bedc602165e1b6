// The control-socket master: requests from separate transports share one SSH connection, run
// concurrently with streams kept apart, and a lost connection makes the next request start afresh.
#include <doctest/doctest.h>

#include <thread>

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
