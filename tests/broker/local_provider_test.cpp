// The local provider end to end through the library: search describes this machine, create starts a
// real sshd with its own home, readiness passes every SSH stage, terminate proves the daemon is gone.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "broker/broker.h"
#include "common/error.h"
#include "common/sshd_server.h"
#include "common/subprocess.h"
#include "tests/support/processes_at_once.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace broker;

TEST_CASE("local: create, wait ready over real SSH, run a command in its own home, terminate and prove") {
    tests::TempDir dir;
    common::generate_ed25519_key(dir / "id", "test");
    // broker's SSH (readiness, ssh_run) is bifrost's client with host keys not pinned: no known-hosts
    // file is written.
    const std::string known_hosts = dir / "bifrost_known_hosts";
    tests::EnvGuard known_hosts_env("BIFROST_KNOWN_HOSTS", known_hosts);
    BrokerOptions bo;
    bo.config_path = dir / "none.yaml";
    bo.state_dir = dir / "state";
    Broker b(bo);
    OfferFilter f;
    f.providers = {"local"};
    auto found = b.search(f, SortKey::Price, 0);
    REQUIRE(found.offers.size() == 1);
    CHECK(found.offers[0].cpu_ram_gb.value_or(0) > 0);
    CHECK(found.offers[0].vcpus.value_or(0) > 0);

    CreateOptions c;
    c.filter = f;
    c.ssh_private_key = dir / "id";
    c.run_id = "lt1";
    c.gpu_check = false;
    c.poll_interval = std::chrono::milliseconds(50);
    c.ready_budget = std::chrono::seconds(20);
    std::vector<std::string> stages;
    c.on_stage = [&](ReadyStage s, const std::string &) { stages.emplace_back(stage_name(s)); };
    auto r = b.create(c);
    REQUIRE(r.instance.ssh);
    CHECK(stages.back() == "ready");
    CHECK(std::find(stages.begin(), stages.end(), "ssh-banner") != stages.end());
    auto out = ssh_run(*r.instance.ssh, dir / "id", "echo $HOME; echo $TOOLKIT_WORKSPACE", std::chrono::seconds(10));
    CHECK(out.exit_code == 0);
    CHECK(out.out.find(bo.state_dir + "/local/" + r.instance.id + "/home") != std::string::npos);
    auto err = ssh_run(*r.instance.ssh, dir / "id", "echo oops >&2; exit 3", std::chrono::seconds(10));
    CHECK(err.exit_code == 3);
    CHECK(err.err == "oops\n");
    // The timeout bounds the command too, not only the connection.
    auto t0 = std::chrono::steady_clock::now();
    try {
        ssh_run(*r.instance.ssh, dir / "id", "sleep 8", std::chrono::seconds(2));
        FAIL("expected a timeout");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Timeout);
    }
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(7));
    // A host that answers without end is refused at 16 MiB, on either stream, not buffered until
    // this process is killed.
    for (const char * flood : {"yes 0123456789abcdef", "yes 0123456789abcdef >&2"}) {
        CAPTURE(flood);
        try {
            ssh_run(*r.instance.ssh, dir / "id", flood, std::chrono::seconds(30));
            FAIL("expected the answer to be refused");
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Network);
            CHECK(std::string(e.what()).find("more than 16") != std::string::npos);
        }
    }
    CHECK_FALSE(std::filesystem::exists(known_hosts));
    auto entry = b.ledger().find_instance("local", r.instance.id);
    REQUIRE(entry);
    CHECK(entry->state == "created");

    std::vector<ProviderFailure> failures;
    CHECK(b.list({"local"}, failures).size() == 1);
    auto t = b.terminate_and_prove("local", r.instance.id, std::chrono::seconds(5), std::chrono::milliseconds(50));
    CHECK(t.proven);
    CHECK(b.list({"local"}, failures).empty());
    CHECK(b.ledger().find_instance("local", r.instance.id)->state == "terminated");
}

TEST_CASE("local: a wrong SSH key never passes auth, the instance is terminated, not left behind") {
    tests::TempDir dir;
    common::generate_ed25519_key(dir / "id", "test");
    common::generate_ed25519_key(dir / "other", "test");
    // A public key that does not match the private key used for the readiness check.
    std::filesystem::copy_file(dir / "other.pub", dir / "id.pub", std::filesystem::copy_options::overwrite_existing);
    BrokerOptions bo;
    bo.config_path = dir / "none.yaml";
    bo.state_dir = dir / "state";
    Broker b(bo);
    CreateOptions c;
    c.filter.providers = {"local"};
    c.ssh_private_key = dir / "id";
    c.run_id = "lt2";
    c.gpu_check = false;
    c.poll_interval = std::chrono::milliseconds(100);
    c.ready_budget = std::chrono::seconds(2);
    try {
        b.create(c);
        FAIL("expected a readiness failure");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Auth);
        bool terminated = false;
        for (const auto & [k, v] : e.context()) terminated |= k == "terminated";
        CHECK(terminated);
    }
    std::vector<ProviderFailure> failures;
    CHECK(b.list({"local"}, failures).empty());
}

TEST_CASE("local: processes terminating and listing the same instances at once all succeed") {
    // A sweep's members end their instances while others list them, and an instance may be ended
    // twice at once (the member and its watchdog's `broker instances terminate`). Records vanish
    // under a reader; neither side may fail on that. The records here have no daemon (pid 0), so
    // only the state folder is raced.
    constexpr int kProcs = 8, kInstances = 40;
    tests::TempDir dir;
    BrokerOptions bo;
    bo.config_path = dir / "none.yaml";
    bo.state_dir = dir / "state";
    std::vector<std::string> ids;
    for (int i = 0; i < kInstances; ++i) {
        std::string id = "lrace" + std::to_string(i);
        std::string d = bo.state_dir + "/local/" + id;
        for (const char * sub : {"/home", "/workspace", "/sshd"}) std::filesystem::create_directories(d + sub);
        for (const char * f : {"/sshd/sshd_config", "/sshd/sshd.log", "/home/.profile", "/workspace/out.txt"}) std::ofstream(d + f) << "x\n";
        std::ofstream(d + "/meta.json") << R"({"id": ")" << id << R"(", "name": "tk-race", "pid": 0, "gpu_count": 0})";
        ids.push_back(id);
    }
    const int failed = tests::run_processes_at_once(kProcs, [&](int k) {
        Broker b(bo);
        auto & local = b.provider("local");
        if (k % 2 == 0) {
            for (const auto & id : ids) local.terminate(id);
        } else {
            for (int round = 0; round < 20; ++round) {
                local.list();
                for (const auto & id : ids) local.get(id);
            }
        }
    });
    CHECK_MESSAGE(failed == 0, failed, " of ", kProcs, " processes failed");
    Broker b(bo);
    CHECK(b.provider("local").list().empty());
    for (const auto & id : ids) CHECK_FALSE(std::filesystem::exists(bo.state_dir + "/local/" + id));
}
