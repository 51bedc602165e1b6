// Connection set-up against a real sshd: host keys pinned on first use and a changed key refused
// (auth, exit 3), refused keys, unreachable hosts, and retrying a host that is still booting.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "common/error.h"
#include "common/sshd_server.h"
#include "tests/bifrost/remote_fixture.h"

using common::ErrorKind;

namespace {
ErrorKind connect_kind(const tests::RemoteFixture & remote, bifrost::ConnectOptions o) {
    try {
        bifrost::Connection::open(remote.endpoint(), o);
    } catch (const common::Error & e) {
        return e.kind();
    }
    return ErrorKind::Internal;
}
}  // namespace

TEST_CASE("connection: the host key is pinned on first use and a changed key is refused") {
    tests::RemoteFixture remote;
    auto o = remote.options();
    bifrost::Connection::open(remote.endpoint(), o);
    std::string pins = tests::slurp(o.known_hosts_path);
    CHECK(pins.find("[127.0.0.1]:" + std::to_string(remote.sshd->port()) + " ssh-ed25519 ") == 0);
    bifrost::Connection::open(remote.endpoint(), o);  // same key: fine
    CHECK(tests::slurp(o.known_hosts_path) == pins);  // pinned once

    remote.sshd->server().rotate_host_key();
    remote.sshd->server().restart();
    try {
        bifrost::Connection::open(remote.endpoint(), o);
        FAIL("a changed host key was accepted");
    } catch (const common::Error & e) {
        CHECK(e.kind() == ErrorKind::Auth);
        CHECK(common::exit_code(e.kind()) == 3);
        CHECK(e.message().find("host key changed") != std::string::npos);
        CHECK(e.message().find(o.known_hosts_path) != std::string::npos);
    }
}

TEST_CASE("connection: a key the server does not accept is an auth error, a missing key file is usage") {
    tests::RemoteFixture remote;
    tests::TempDir keys;
    common::generate_ed25519_key(keys / "other", "other");
    auto o = remote.options();
    o.key_path = keys / "other";
    CHECK(connect_kind(remote, o) == ErrorKind::Auth);
    o.key_path = keys / "missing";
    CHECK(connect_kind(remote, o) == ErrorKind::Usage);
}

TEST_CASE("connection: nothing listening is a network error, --wait retries until the host comes up") {
    tests::RemoteFixture remote;
    auto o = remote.options();
    remote.sshd->server().stop();
    CHECK(connect_kind(remote, o) == ErrorKind::Network);
    std::thread later([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(1500));
        remote.sshd->server().restart();
    });
    o.retry_deadline_s = 20;
    auto start = std::chrono::steady_clock::now();
    auto conn = bifrost::Connection::open(remote.endpoint(), o);
    later.join();
    CHECK(conn->alive());
    CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(1400));
    remote.sshd->server().stop();
    o.retry_deadline_s = 1.5;
    CHECK(connect_kind(remote, o) == ErrorKind::Timeout);
}

TEST_CASE("connection: stall_timeout_s abandons a command that moves no data, never one that keeps moving") {
    tests::RemoteFixture remote;
    auto o = remote.options();
    o.stall_timeout_s = 2;
    auto c = bifrost::Connection::open(remote.endpoint(), o);
    // Output every half second for 4 s: twice the bound in all, never 2 s without a byte.
    auto moving = tests::run_remote(*c, "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.5; done");
    CHECK(moving.code == 0);
    CHECK(moving.out == "1\n2\n3\n4\n5\n6\n7\n8\n");
    // Silent (a read hung on a stuck volume looks like this): abandoned at the bound, not after 30 s.
    const auto t0 = std::chrono::steady_clock::now();
    try {
        tests::run_remote(*c, "sleep 30");
        FAIL("a silent command outlived stall_timeout_s");
    } catch (const common::Error & e) {
        CHECK(e.kind() == ErrorKind::Timeout);
        CHECK(e.message().find("moved no data") != std::string::npos);
    }
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(took >= 2);
    CHECK(took < 10);
    CHECK_FALSE(c->usable());  // the abandoned channel is still open on the server: never reused
}
