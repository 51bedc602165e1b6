// Jump hosts (ConnectOptions::jump) against real sshds on 127.0.0.1: the target is reached through
// one bastion and through a chain of two, and each bastion's log must show the direct-tcpip
// forward to the next hop (the sshds all listen on loopback, so the test proves the route by the
// bastions' logs, and by a bastion that forbids forwarding making the connection fail).
// Also: a refused key and an unreachable bastion name the hop, host keys of hops are pinned in the
// same file, a few MiB go both ways byte-identical, and the destructor leaves no thread or fd behind.
#include <doctest/doctest.h>

#include <dirent.h>

#include <cstring>
#include <random>
#include <string>

#include "common/error.h"
#include "common/sshd_server.h"
#include "tests/bifrost/remote_fixture.h"

using common::ErrorKind;

namespace {

int count_entries(const char * dir) {
    int n = 0;
    if (DIR * d = ::opendir(dir)) {
        while (dirent * e = ::readdir(d))
            if (e->d_name[0] != '.') ++n;
        ::closedir(d);
    }
    return n - 1;  // opendir's own fd (for /proc/self/fd); harmless for tasks since only compared
}

// A bastion: an sshd with its own client key that logs each direct-tcpip request (LogLevel DEBUG).
struct Bastion {
    explicit Bastion(std::vector<std::string> extra = {}) : sshd([&] {
        extra.push_back("LogLevel DEBUG");
        return extra;
    }()) {}
    bifrost::JumpHost hop() const { return {sshd.user(), sshd.host(), sshd.port(), sshd.client_key()}; }
    // sshd's debug line: "server_request_direct_tcpip: originator 127.0.0.1 port N, target H port P"
    bool forwarded_to(int port) const {
        return sshd.server().log_text().find("target 127.0.0.1 port " + std::to_string(port)) != std::string::npos;
    }
    tests::SshdFixture sshd;
};

using tests::run_remote;

common::Error open_error(const tests::RemoteFixture & target, const bifrost::ConnectOptions & o) {
    try {
        bifrost::Connection::open(target.endpoint(), o);
    } catch (const common::Error & e) {
        return e;
    }
    FAIL("the connection opened");
    return common::Error(ErrorKind::Internal, "unreachable");
}

}  // namespace

TEST_CASE("jump: exec through one bastion and through a chain of two, host keys pinned per hop and route") {
    tests::RemoteFixture target;
    Bastion a, b;
    auto o = target.options();
    o.jump = {a.hop()};
    {
        auto c = bifrost::Connection::open(target.endpoint(), o);
        auto r = run_remote(*c, "echo through-one; echo err >&2; exit 7");
        CHECK(r.code == 7);
        CHECK(r.out == "through-one\n");
        CHECK(r.err == "err\n");
        CHECK(run_remote(*c, "echo again").out == "again\n");  // more channels on the same session
        CHECK(c->alive());
    }
    CHECK(a.forwarded_to(target.sshd->port()));
    std::string pins = tests::slurp(o.known_hosts_path);
    const std::string a_id = "[127.0.0.1]:" + std::to_string(a.sshd.port());
    const std::string t_id = "[127.0.0.1]:" + std::to_string(target.sshd->port());
    CHECK(pins.find(a_id + " ssh-ed25519 ") != std::string::npos);
    CHECK(pins.find(t_id + "/via/" + a_id + " ssh-ed25519 ") != std::string::npos);

    o.jump = {a.hop(), b.hop()};
    {
        auto c = bifrost::Connection::open(target.endpoint(), o);
        auto r = run_remote(*c, "echo through-two; exit 3");
        CHECK(r.code == 3);
        CHECK(r.out == "through-two\n");
    }
    CHECK(a.forwarded_to(b.sshd.port()));
    CHECK(b.forwarded_to(target.sshd->port()));
    pins = tests::slurp(o.known_hosts_path);
    const std::string b_id = "[127.0.0.1]:" + std::to_string(b.sshd.port());
    CHECK(pins.find(b_id + "/via/" + a_id + " ssh-ed25519 ") != std::string::npos);
    CHECK(pins.find(t_id + "/via/" + a_id + "/" + b_id + " ssh-ed25519 ") != std::string::npos);

    // A changed host key at a bastion is refused like the target's, naming the hop.
    a.sshd.server().rotate_host_key();
    a.sshd.server().restart();
    auto e = open_error(target, o);
    CHECK(e.kind() == ErrorKind::Auth);
    CHECK(e.message().rfind("jump 1 " + a.sshd.target() + ": host key changed", 0) == 0);
}

TEST_CASE("jump: a refused key, an unreachable bastion and a bastion without forwarding fail naming the hop") {
    tests::RemoteFixture target;
    Bastion a, b;
    auto o = target.options();
    SUBCASE("the target's key at the bastion") {
        auto hop = a.hop();
        hop.key_path = target.sshd->client_key();
        o.jump = {hop};
        auto e = open_error(target, o);
        CHECK(e.kind() == ErrorKind::Auth);
        CHECK(e.message().rfind("jump 1 " + a.sshd.target() + ": SSH authentication refused", 0) == 0);
    }
    SUBCASE("the bastion's key at the second hop") {
        auto hop = b.hop();
        hop.key_path = a.sshd.client_key();
        o.jump = {a.hop(), hop};
        auto e = open_error(target, o);
        CHECK(e.kind() == ErrorKind::Auth);
        CHECK(e.message().rfind("jump 2 " + b.sshd.target() + ": SSH authentication refused", 0) == 0);
    }
    SUBCASE("the bastion's key at the target") {
        o.key_path = a.sshd.client_key();
        o.jump = {a.hop()};
        auto e = open_error(target, o);
        CHECK(e.kind() == ErrorKind::Auth);
        CHECK(e.message().find("through jump 1 " + a.sshd.target() + ": " + target.sshd->target() +
                               ": SSH authentication refused") == 0);
    }
    SUBCASE("nothing listening at the bastion") {
        bifrost::JumpHost dead{a.sshd.user(), "127.0.0.1", common::pick_free_port(), a.sshd.client_key()};
        o.jump = {dead};
        auto e = open_error(target, o);
        CHECK(e.kind() == ErrorKind::Network);
        CHECK(e.message().rfind("jump 1 " + dead.label() + ": cannot connect: ", 0) == 0);
    }
    SUBCASE("nothing listening behind the bastion") {
        const int port = common::pick_free_port();
        o.jump = {a.hop()};
        auto ep = target.endpoint();
        ep.port = port;
        try {
            bifrost::Connection::open(ep, o);
            FAIL("opened");
        } catch (const common::Error & e) {
            CHECK(e.kind() == ErrorKind::Network);
            CHECK(e.message().rfind("jump 1 " + a.sshd.target() + ": cannot reach " + ep.label() + " from there: ", 0) == 0);
        }
    }
    SUBCASE("a bastion that forbids TCP forwarding") {
        Bastion closed({"AllowTcpForwarding no"});
        o.jump = {closed.hop()};
        auto e = open_error(target, o);
        CHECK(e.kind() == ErrorKind::Network);
        CHECK(e.message().rfind("jump 1 " + closed.sshd.target() + ": cannot reach " + target.sshd->target(), 0) == 0);
    }
}

TEST_CASE("jump: MiBs both ways through two bastions are byte-identical and no thread or fd outlives the connection") {
    tests::RemoteFixture target;
    Bastion a, b;
    auto o = target.options();
    o.jump = {a.hop(), b.hop()};
    std::string data(6u << 20, '\0');
    std::mt19937_64 rng(16);
    for (size_t i = 0; i + 8 <= data.size(); i += 8) {
        uint64_t v = rng();
        std::memcpy(&data[i], &v, 8);
    }
    const int tasks_before = count_entries("/proc/self/task");
    const int fds_before = count_entries("/proc/self/fd");
    {
        auto c = bifrost::Connection::open(target.endpoint(), o);
        CHECK(count_entries("/proc/self/task") == tasks_before + 2);  // one relay thread per bastion
        auto r = run_remote(*c, "cat", data);  // stdin up, stdout down
        CHECK(r.code == 0);
        CHECK(r.out.size() == data.size());
        CHECK(r.out == data);
        r = run_remote(*c, "head -c 20000000 /dev/zero | tr '\\0' x; cat >/dev/null");
        CHECK(r.code == 0);
        CHECK(r.out == std::string(20000000, 'x'));
    }
    CHECK(count_entries("/proc/self/task") == tasks_before);
    CHECK(count_entries("/proc/self/fd") == fds_before);
    // A failed chain cleans up too.
    auto bad = b.hop();
    bad.key_path = target.sshd->client_key();
    o.jump = {a.hop(), bad};
    CHECK(open_error(target, o).kind() == ErrorKind::Auth);
    CHECK(count_entries("/proc/self/task") == tasks_before);
    CHECK(count_entries("/proc/self/fd") == fds_before);
}

TEST_CASE("jump: the connection notices a bastion that dies") {
    tests::RemoteFixture target;
    Bastion a;
    auto o = target.options();
    o.jump = {a.hop()};
    auto c = bifrost::Connection::open(target.endpoint(), o);
    CHECK(run_remote(*c, "echo up").out == "up\n");
    a.sshd.server().kill_hard();
    bool threw = false;
    try {
        run_remote(*c, "sleep 1; echo never");
    } catch (const common::Error & e) {
        threw = true;
        CHECK((e.kind() == ErrorKind::Network || e.kind() == ErrorKind::Timeout));
    }
    CHECK(threw);
    CHECK_FALSE(c->alive());
}
