// The fixture itself: a real sshd, a real libssh client, real keys.
#include <signal.h>

#include <thread>

#include "common/subprocess.h"
#include "tests/support/sshd_fixture.h"
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
