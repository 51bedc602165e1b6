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
    hosts.create(lease_request("box0", "tk-m1"));
    CHECK(hosts.get("box0")->name == "tk-m1");
}
