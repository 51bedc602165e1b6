// The ssh-hosts provider's leases under <state_dir>/ssh-hosts/leases, through the library: several
// processes lease at once (a sweep's members), and a lease that could not be written whole must
// not hold its host. No host is contacted: create only takes the lease.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "broker/broker.h"
#include "common/error.h"
#include "tests/support/processes_at_once.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace broker;

namespace {

BrokerOptions hosts_options(const tests::TempDir & dir, int hosts) {
    std::string yaml = "hosts:\n";
    for (int i = 0; i < hosts; ++i)
        yaml += "  - name: box" + std::to_string(i) + "\n    host: 127.0.0.1\n    port: 1\n    user: me\n    key: /nonexistent\n";
    tests::write_file(dir / "hosts.yaml", yaml);
    BrokerOptions bo;
    bo.config_path = dir / "none.yaml";
    bo.state_dir = dir / "state";
    bo.hosts_file = dir / "hosts.yaml";
    return bo;
}

CreateRequest lease_request(const std::string & host, const std::string & name) {
    CreateRequest r;
    r.offer.provider = "ssh-hosts";
    r.offer.offer_id = host;
    r.name = name;
    r.ssh_public_key = "ssh-ed25519 AAAA test";
    return r;
}

}  // namespace

TEST_CASE("ssh-hosts: processes leasing the same hosts at once never share one") {
    constexpr int kProcs = 8, kHosts = 16;
    tests::TempDir dir;
    const BrokerOptions bo = hosts_options(dir, kHosts);
    int won[2];  // each process writes the hosts it leased, "NN\n"
    REQUIRE(::pipe(won) == 0);
    const int failed = tests::run_processes_at_once(kProcs, [&](int k) {
        ::close(won[0]);
        Broker b(bo);
        auto & hosts = b.provider("ssh-hosts");
        for (int h = 0; h < kHosts; ++h) {
            try {
                hosts.create(lease_request("box" + std::to_string(h), "tk-m" + std::to_string(k)));
                char line[8];
                const int n = std::snprintf(line, sizeof line, "%02d\n", h);
                (void)!::write(won[1], line, n);  // short writes to a pipe are atomic
            } catch (const common::Error & e) {
                if (e.kind() != common::ErrorKind::Capacity) throw;
            }
        }
    });
    ::close(won[1]);  // the children have exited: their ends are closed, so the read ends
    std::string all;
    char buf[256];
    for (ssize_t n; (n = ::read(won[0], buf, sizeof buf)) > 0;) all.append(buf, n);
    ::close(won[0]);
    CHECK_MESSAGE(failed == 0, failed, " of ", kProcs, " processes failed");
    std::map<int, int> leases;
    for (size_t i = 0; i + 3 <= all.size(); i += 3) ++leases[std::stoi(all.substr(i, 2))];
    CHECK(leases.size() == kHosts);
    for (const auto & [h, n] : leases) CHECK_MESSAGE(n == 1, "box", h, " leased ", n, " times");
    Broker b(bo);
    auto listed = b.provider("ssh-hosts").list();
    CHECK(listed.size() == kHosts);
    for (const auto & i : listed) CHECK(i.name.rfind("tk-m", 0) == 0);
}

TEST_CASE("ssh-hosts: a lease that could not be written whole leaves the host free") {
    // A holder that dies (or hits a full disk) while taking the lease must not leave a nameless
    // lease behind: `broker sweep` judges leases by the deadline in their name, so such a host
    // would stay taken until someone noticed.
    tests::TempDir dir;
    const BrokerOptions bo = hosts_options(dir, 1);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        // Every write that grows a file fails (EFBIG), as a full disk would fail it.
        ::signal(SIGXFSZ, SIG_IGN);
        rlimit none{0, 0};
        ::setrlimit(RLIMIT_FSIZE, &none);
        try {
            Broker b(bo);
            b.provider("ssh-hosts").create(lease_request("box0", "tk-m0"));
            ::_exit(0);
        } catch (const common::Error &) {
            ::_exit(3);
        } catch (...) {
            ::_exit(4);
        }
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 3);  // the create failed, and said so
    Broker b(bo);
    auto & hosts = b.provider("ssh-hosts");
    CHECK_FALSE(hosts.get("box0"));
    CHECK(hosts.list().empty());
    CHECK(hosts.search({}).size() == 1);
    const std::string id = hosts.create(lease_request("box0", "tk-m1")).id;
    auto leased = hosts.get(id);
    REQUIRE(leased);
    CHECK(leased->name == "tk-m1");
}

namespace {

// The lease file of `host` as the provider keeps it, for tests that plant or inspect one.
std::string lease_file(const tests::TempDir & dir, const std::string & host) {
    return dir / ("state/ssh-hosts/leases/" + host + ".json");
}

}  // namespace

TEST_CASE("ssh-hosts: a late terminate of an ended lease leaves the host's next lease alone") {
    // A watchdog or `broker sweep` acting on a stale ledger row terminates an id whose lease has
    // already ended. The host may be leased again by then: that new holder's lease (and its jobs)
    // must survive, so each lease has an id of its own, not the host's name.
    tests::TempDir dir;
    const BrokerOptions bo = hosts_options(dir, 1);
    Broker b(bo);
    auto & hosts = b.provider("ssh-hosts");
    const std::string first = hosts.create(lease_request("box0", "tk-a")).id;
    CHECK(first.rfind("box0~", 0) == 0);
    hosts.terminate(first);
    CHECK_FALSE(hosts.get(first));
    CHECK(hosts.search({}).size() == 1);

    const std::string second = hosts.create(lease_request("box0", "tk-b")).id;
    CHECK(second.rfind("box0~", 0) == 0);
    CHECK(second != first);
    CHECK_FALSE(hosts.get(first));  // the old id does not name the new lease

    hosts.terminate(first);  // late: a no-op
    auto still = hosts.get(second);
    REQUIRE(still);
    CHECK(still->id == second);
    CHECK(still->name == "tk-b");
    auto listed = hosts.list();
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].id == second);
    CHECK(listed[0].name == "tk-b");
    CHECK(hosts.search({}).empty());  // still leased
    CHECK_FALSE(hosts.get(first));

    hosts.terminate(second);
    CHECK_FALSE(hosts.get(second));
    CHECK(hosts.list().empty());
    CHECK(hosts.search({}).size() == 1);
}

TEST_CASE("ssh-hosts: a lease from before lease tokens is addressed by the bare host name, and only by it") {
    // Leases written by earlier versions carry no token and their ledger rows hold the bare host
    // name: those rows must still end their lease, and must never end a newer, tokened one.
    tests::TempDir dir;
    const BrokerOptions bo = hosts_options(dir, 1);
    std::filesystem::create_directories(std::filesystem::path(lease_file(dir, "box0")).parent_path());
    tests::write_file(lease_file(dir, "box0"), R"({"name": "tk-old", "created_unix": 1000})");
    Broker b(bo);
    auto & hosts = b.provider("ssh-hosts");

    auto old = hosts.get("box0");
    REQUIRE(old);
    CHECK(old->id == "box0");
    CHECK(old->name == "tk-old");
    auto listed = hosts.list();
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].id == "box0");
    CHECK_FALSE(hosts.get("box0~0123456789abcdef"));  // a tokened id does not name a token-less lease
    hosts.terminate("box0~0123456789abcdef");
    CHECK(std::filesystem::exists(lease_file(dir, "box0")));

    hosts.terminate("box0");
    CHECK_FALSE(std::filesystem::exists(lease_file(dir, "box0")));
    CHECK_FALSE(hosts.get("box0"));
    CHECK(hosts.search({}).size() == 1);

    // A bare id never names a tokened lease: the old row's late terminate leaves the new lease.
    const std::string fresh = hosts.create(lease_request("box0", "tk-new")).id;
    CHECK(fresh != "box0");
    CHECK_FALSE(hosts.get("box0"));
    hosts.terminate("box0");
    auto kept = hosts.get(fresh);
    REQUIRE(kept);
    CHECK(kept->name == "tk-new");
    CHECK(hosts.list().size() == 1);
}

TEST_CASE("ssh-hosts: a malformed instance id is refused, naming the id") {
    tests::TempDir dir;
    const BrokerOptions bo = hosts_options(dir, 1);
    Broker b(bo);
    auto & hosts = b.provider("ssh-hosts");
    hosts.create(lease_request("box0", "tk-a"));
    for (const std::string id : {"", "~0123abcd", "box0~", "box0~not-hex", "box0~ab~cd", "../box0", "box 0", "box0/x",
                                 "box0:0123abcd"}) {
        INFO("id '", id, "'");
        for (int verb = 0; verb < 2; ++verb) {
            try {
                if (verb == 0)
                    (void)hosts.get(id);
                else
                    hosts.terminate(id);
                FAIL_CHECK("accepted");
            } catch (const common::Error & e) {
                CHECK(e.kind() == common::ErrorKind::Usage);
                CHECK(e.message().find("'" + id + "'") != std::string::npos);
            }
        }
    }
    CHECK(hosts.list().size() == 1);  // nothing was released on the way
}

TEST_CASE("ssh-hosts: processes ending a lease that already ended never end the host's next lease") {
    // Process 0 ends the lease and takes the host again at once; the others keep terminating the
    // ended lease's id meanwhile, as several watchdogs and sweeps holding a stale row would.
    constexpr int kProcs = 6, kLateTerminates = 40;
    tests::TempDir dir;
    const BrokerOptions bo = hosts_options(dir, 1);
    std::string stale;
    {
        Broker b(bo);
        stale = b.provider("ssh-hosts").create(lease_request("box0", "tk-old")).id;
    }
    const int failed = tests::run_processes_at_once(kProcs, [&](int k) {
        Broker b(bo);
        auto & hosts = b.provider("ssh-hosts");
        if (k == 0) {
            hosts.terminate(stale);
            hosts.create(lease_request("box0", "tk-new"));
        }
        for (int i = 0; i < kLateTerminates; ++i) hosts.terminate(stale);
    });
    CHECK_MESSAGE(failed == 0, failed, " of ", kProcs, " processes failed");
    Broker b(bo);
    auto & hosts = b.provider("ssh-hosts");
    CHECK_FALSE(hosts.get(stale));
    auto listed = hosts.list();
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].name == "tk-new");
    CHECK(listed[0].id != stale);
    CHECK(hosts.get(listed[0].id));
}
