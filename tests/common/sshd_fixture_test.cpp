// The fixture itself: a real sshd, a real libssh client, real keys.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "common/error.h"
#include "common/sshd_server.h"
#include "common/subprocess.h"
#include "tests/support/sshd_fixture.h"
#include "tests/support/temp_dir.h"
#include <doctest/doctest.h>

TEST_CASE("sshd fixture: a command over libssh returns its output and exit status") {
    tests::SshdFixture sshd;
    auto r = tests::ssh_exec(sshd, "echo hello; echo oops >&2; exit 3");
    CHECK(r.out == "hello\n");
    CHECK(r.err == "oops\n");
    CHECK(r.exit_code == 3);
    auto who = tests::ssh_exec(sshd, "id -un");
    CHECK(who.out == sshd.user() + "\n");
    CHECK(who.exit_code == 0);
}

TEST_CASE("sshd fixture: stopping it ends running sessions too") {
    tests::SshdFixture sshd;
    std::thread client([&] {
        try {
            tests::ssh_exec(sshd, "sleep 120");
        } catch (...) {
        }
    });
    std::vector<pid_t> tree;
    for (int i = 0; i < 200; ++i) {
        tree = common::process_descendants(sshd.server().pid());
        if (tree.size() >= 2) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK(tree.size() >= 2);  // the connection's sshd and the shell running sleep
    sshd.server().stop();
    client.join();
    for (pid_t p : tree) CHECK_FALSE(common::process_alive(p));
}

TEST_CASE("sshd fixture: a restart keeps the identity, a rotated key presents a new one") {
    tests::SshdFixture sshd;
    std::string before = sshd.server().host_public_key();
    sshd.server().restart();
    CHECK(tests::ssh_exec(sshd, "true").exit_code == 0);
    CHECK(sshd.server().host_public_key() == before);
    sshd.server().rotate_host_key();
    sshd.server().restart();
    CHECK(sshd.server().host_public_key() != before);
    CHECK(tests::ssh_exec(sshd, "echo ok").out == "ok\n");  // the helper pins to the current key
}

namespace {

// A loopback port held by a listening socket for the object's lifetime.
struct TakenPort {
    int fd = -1;
    int port = 0;
    TakenPort() {
        fd = ::socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(fd >= 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0);
        REQUIRE(::listen(fd, 1) == 0);
        REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) == 0);
        port = ntohs(addr.sin_port);
    }
    ~TakenPort() { ::close(fd); }
};

}  // namespace

TEST_CASE("sshd server: a picked port taken before sshd binds it is replaced by another, an asked-for one is an error") {
    TakenPort taken;
    tests::TempDir dir("toolkit-sshd-port");
    common::SshdOptions options;
    options.dir = dir.path() + "/sshd";
    int picks = 0;
    // The first pick returns the taken port, as when another process grabs it in between.
    options.pick_port = [&] { return ++picks == 1 ? taken.port : common::pick_free_port(); };
    common::SshdServer server = common::SshdServer::start(options);
    CHECK(picks == 2);
    CHECK(server.port() != taken.port);
    CHECK(server.running());

    // A port the caller asked for is kept or refused, never swapped: the error names the port and why.
    common::SshdOptions fixed;
    fixed.dir = dir.path() + "/sshd-fixed";
    fixed.port = taken.port;
    try {
        (void)common::SshdServer::start(fixed);
        FAIL("sshd started on a port that is taken");
    } catch (const common::Error & e) {
        const std::string msg = e.what();
        CHECK(msg.find(std::to_string(taken.port)) != std::string::npos);
        CHECK(msg.find("Address already in use") != std::string::npos);
    }
}
