// Every CLI verb on every emulated cloud: search → create (real SSH readiness against an sshd) →
// instances list/show/ssh → terminate (proven) → gone; plus stop/start where the cloud has them.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "bifrost/bifrost.h"
#include "bifrost/target.h"
#include "tests/broker/cli_support.h"

#include <doctest/doctest.h>

using namespace broker_tests;
using json = nlohmann::json;

namespace {

// The cheapest offer id a filtered search returns, as provider:offer_id.
std::string first_offer(const Cli & cli, const std::string & provider, std::vector<std::string> filters) {
    std::vector<std::string> args = {"search", "--provider", provider, "--limit", "5"};
    args.insert(args.end(), filters.begin(), filters.end());
    json rows = cli.json(args);
    REQUIRE(!rows.empty());
    return provider + ":" + rows[0]["offer_id"].get<std::string>();
}

void lifecycle(const std::string & provider, std::vector<std::string> filters) {
    tests::SshdFixture sshd;
    tests::Emulator emu(provider, {.api_key = kKey});
    back_with_sshd(emu, sshd);
    Cli cli;
    cli.use(emu);

    // search: rows carry the normalised fields, and the filter holds on every row.
    json rows = cli.json({"search", "--provider", provider, "--gpus", "1", "--max-price", "3.5", "--limit", "0"});
    REQUIRE(!rows.empty());
    for (const auto & r : rows) {
        CHECK(r["provider"] == provider);
        CHECK(r["gpu_count"] == 1);
        CHECK(r["price_usd_per_hour_total"].get<double>() <= 3.5);
        CHECK(r["vram_gb_per_gpu"].get<double>() > 0);
        CHECK(!r["manufacturer"].get<std::string>().empty());
    }
    for (size_t i = 1; i < rows.size(); ++i)
        CHECK(rows[i - 1]["price_usd_per_hour_total"].get<double>() <= rows[i]["price_usd_per_hour_total"].get<double>());

    // create from an offer id; readiness goes through TCP, banner, auth and `true` on the real sshd.
    std::string offer = first_offer(cli, provider, filters);
    std::vector<std::string> create = {"--json", "create", "--offer", offer, "--ssh-key", sshd.client_key(),
                                       "--run-id", "it1", "--no-gpu-check", "--ready-timeout", "60s"};
    auto r = cli.run(create);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    json created = json::parse(r.out);
    std::string id = created["id"];
    std::string ref = provider + ":" + id;
    CHECK(created["name"].get<std::string>().rfind("tk-it1-main-dl", 0) == 0);
    CHECK(created["ready"] == true);
    CHECK(created["ssh_command"].get<std::string>().find("-p " + std::to_string(sshd.port())) != std::string::npos);
    // The ledger holds the instance before and after: a second broker process finds it by bare id.
    json shown = cli.json({"instances", "show", id});
    CHECK(shown["ref"] == ref);

    json listed = cli.json({"instances", "list", "--provider", provider})["instances"];
    REQUIRE(listed.size() == 1);
    CHECK(listed[0]["ref"] == ref);
    CHECK(listed[0]["run_id"] == "it1");

    auto ssh = cli.run({"instances", "ssh", ref, "--print", "--ssh-key", sshd.client_key()});
    CHECK(ssh.exit_code == 0);
    CHECK(ssh.out.find("ssh -p ") != std::string::npos);

    // terminate without --yes on a non-interactive stdin is refused (usage), nothing is touched.
    CHECK(cli.run({"instances", "terminate", ref}).exit_code == 2);
    CHECK(cli.json({"instances", "list", "--provider", provider})["instances"].size() == 1);

    json term = cli.json({"instances", "terminate", ref, "--yes"});
    REQUIRE(term.size() == 1);
    CHECK(term[0]["proven"] == true);
    CHECK(cli.json({"instances", "list", "--provider", provider})["instances"].empty());
    auto gone = cli.run({"instances", "show", ref});
    CHECK(gone.exit_code == 9);
}

}  // namespace

TEST_CASE("cli runpod: search, create with SSH readiness, list, show, ssh, terminate") {
    lifecycle("runpod", {"--gpu", "4090", "--gpus", "1"});
}
TEST_CASE("cli vast: search, create with SSH readiness, list, show, ssh, terminate") {
    lifecycle("vast", {"--gpu", "4090", "--gpus", "1"});
}
TEST_CASE("cli lambda: search, create with SSH readiness, list, show, ssh, terminate") {
    // The emulator's x_emulator_ssh_user/port extension stands in for Lambda's fixed ubuntu@:22.
    lifecycle("lambda", {"--gpu", "a10"});
}
TEST_CASE("cli primeintellect: search, create with SSH readiness, list, show, ssh, terminate") {
    lifecycle("primeintellect", {"--gpu", "4090", "--gpus", "1"});
}

TEST_CASE("cli runpod: create sends supportPublicIp, terminateAfter and the key, stop and start") {
    tests::SshdFixture sshd;
    tests::Emulator emu("runpod", {.api_key = kKey});
    back_with_sshd(emu, sshd, 1);
    Cli cli;
    cli.use(emu);
    json c = cli.json({"create", "--provider", "runpod", "--gpu", "4090", "--gpus", "1", "--ssh-key", sshd.client_key(),
                       "--no-gpu-check", "--max-lifetime", "2h"});
    std::string ref = "runpod:" + c["id"].get<std::string>();
    json input;
    const json state = emu.state();
    for (const auto & r : state["requests"])
        if (r.value("action", "") == "create") input = r["body"]["variables"]["input"];
    CHECK(input["supportPublicIp"] == true);
    CHECK(input.contains("terminateAfter"));
    bool key_sent = false;
    for (const auto & e : input["env"]) key_sent |= e["key"] == "PUBLIC_KEY";
    CHECK(key_sent);
    json stopped = cli.json({"instances", "stop", ref});
    CHECK(stopped["status_raw"] == "EXITED");
    json started = cli.json({"instances", "start", ref});
    CHECK(started["status"] != "stopped");
    CHECK(cli.json({"instances", "terminate", ref, "--yes"})[0]["proven"] == true);
}

TEST_CASE("cli runpod: --min-ram reaches the create (the machine is picked at deploy time), not only the search") {
    tests::Emulator emu("runpod", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    json c = cli.json({"create", "--provider", "runpod", "--gpu", "h100", "--gpus", "1", "--min-ram", "100",
                       "--ssh-key", cli.dir() / "id", "--no-wait"});
    json input, search;
    const json state = emu.state();
    for (const auto & r : state["requests"]) {
        if (r.value("action", "") == "create") input = r["body"]["variables"]["input"];
        if (r.value("action", "") == "search") search = r["body"]["variables"]["lowestPrice"];
    }
    CHECK(search["minMemoryInGb"] == 100);
    CHECK(input["minMemoryInGb"] == 100);
    cli.json({"instances", "terminate", "runpod:" + c["id"].get<std::string>(), "--yes"});
}

TEST_CASE("cli vast: an on-demand create sends no price, stop and start") {
    tests::SshdFixture sshd;
    tests::Emulator emu("vast", {.api_key = kKey});
    back_with_sshd(emu, sshd, 1);
    Cli cli;
    cli.use(emu);
    json c = cli.json({"create", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--ssh-key", sshd.client_key(),
                       "--no-gpu-check"});
    std::string ref = "vast:" + c["id"].get<std::string>();
    const json state = emu.state();
    for (const auto & r : state["requests"])
        if (r.value("action", "") == "create") CHECK_FALSE(r["body"].contains("price"));
    CHECK(cli.json({"instances", "stop", ref})["status"] == "stopped");
    cli.json({"instances", "start", ref});
    CHECK(cli.json({"instances", "terminate", ref, "--yes"})[0]["proven"] == true);
}

TEST_CASE("cli lambda: stop is refused as a usage error (Lambda has no stop)") {
    tests::Emulator emu("lambda", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    auto r = cli.run({"instances", "stop", "lambda:abc"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("cannot stop") != std::string::npos);
}

TEST_CASE("cli local: create a real sshd instance, list it, ssh into it, terminate it") {
    Cli cli;
    common::generate_ed25519_key(cli.dir() / "id", "t");
    json c = cli.json({"create", "--provider", "local", "--ssh-key", cli.dir() / "id", "--no-gpu-check", "--run-id", "loc"});
    std::string ref = "local:" + c["id"].get<std::string>();
    CHECK(c["ready"] == true);
    json listed = cli.json({"instances", "list", "--provider", "local"})["instances"];
    REQUIRE(listed.size() == 1);
    CHECK(listed[0]["status"] == "running");
    CHECK(cli.json({"instances", "terminate", ref, "--yes"})[0]["proven"] == true);
    CHECK(cli.json({"instances", "list", "--provider", "local"})["instances"].empty());
    // terminate --all: every instance of ours, each proven.
    cli.json({"create", "--provider", "local", "--ssh-key", cli.dir() / "id", "--no-wait", "--run-id", "a1"});
    cli.json({"create", "--provider", "local", "--ssh-key", cli.dir() / "id", "--no-wait", "--run-id", "a2"});
    CHECK(cli.json({"instances", "list"})["instances"].size() == 2);
    json all = cli.json({"instances", "terminate", "--all", "--yes"});
    REQUIRE(all.size() == 2);
    CHECK(all[0]["proven"] == true);
    CHECK(all[1]["proven"] == true);
    CHECK(cli.json({"instances", "list"})["instances"].empty());
    CHECK(cli.run({"instances", "terminate", "--all", "local:x", "--yes"}).exit_code == 2);
}

TEST_CASE("cli ssh-hosts: create leases a host, a second create finds no capacity, terminate releases it") {
    // A private $HOME: terminate stops the lease's bifrost jobs in ~/.bifrost/jobs, and this
    // machine's own (other tests') must never look like this lease's.
    tests::TempDir home("ssh-hosts-home");
    tests::SshdFixture sshd({"SetEnv HOME=" + home.path()});
    Cli cli;
    tests::write_file(cli.dir() / "hosts.yaml",
                      "hosts:\n  - name: box1\n    host: 127.0.0.1\n    port: " + std::to_string(sshd.port()) +
                          "\n    user: " + sshd.user() + "\n    key: " + sshd.client_key() +
                          "\n    gpus: 0\n    ram_gb: 16\n");
    cli.set("BROKER_SSH_HOSTS", cli.dir() / "hosts.yaml");
    json offers = cli.json({"search", "--provider", "ssh-hosts"});
    REQUIRE(offers.size() == 1);
    json c = cli.json({"create", "--provider", "ssh-hosts", "--ssh-key", sshd.client_key(), "--no-gpu-check"});
    const std::string id = c["id"];
    CHECK(id.rfind("box1~", 0) == 0);  // the host and this lease's token
    CHECK(c["ready"] == true);
    CHECK(cli.json({"search", "--provider", "ssh-hosts"}).empty());
    auto again = cli.run({"create", "--provider", "ssh-hosts", "--ssh-key", sshd.client_key(), "--no-gpu-check"});
    CHECK(again.exit_code == 4);
    CHECK(cli.json({"instances", "terminate", "ssh-hosts:" + id, "--yes"})[0]["proven"] == true);
    CHECK(cli.json({"search", "--provider", "ssh-hosts"}).size() == 1);
    // Leased again: the first lease's id, terminated late, leaves the new lease (and its jobs) alone.
    json c2 = cli.json({"create", "--provider", "ssh-hosts", "--ssh-key", sshd.client_key(), "--no-gpu-check"});
    const std::string id2 = c2["id"];
    CHECK(id2 != id);
    CHECK(cli.json({"instances", "terminate", "ssh-hosts:" + id, "--yes"})[0]["proven"] == true);
    json listed = cli.json({"instances", "list", "--provider", "ssh-hosts"})["instances"];
    REQUIRE(listed.size() == 1);
    CHECK(listed[0]["id"] == id2);
    auto bad = cli.run({"instances", "show", "ssh-hosts:box1/x"});
    CHECK(bad.exit_code == 2);
    CHECK(bad.err.find("'box1/x' is not an ssh-hosts instance id") != std::string::npos);
    CHECK(cli.json({"instances", "terminate", "ssh-hosts:" + id2, "--yes"})[0]["proven"] == true);
    CHECK(cli.json({"search", "--provider", "ssh-hosts"}).size() == 1);
}

namespace {

// A bifrost client of the sshd's account, as deploy (or a user) starts detached jobs with it.
bifrost::Client job_client(const tests::SshdFixture & sshd) {
    bifrost::ConnectOptions o;
    o.key_path = sshd.client_key();
    o.pin_host_key = false;
    o.connect_timeout_s = 5;
    return bifrost::Client::connect(bifrost::parse_target(sshd.target()), o);
}

std::string remote_sh(bifrost::Client & c, const std::string & line) {
    std::string out, err;
    const int code = c.exec(bifrost::Command::sh(line), {}, [&](std::string_view d) { out.append(d); },
                            [&](std::string_view d) { err.append(d); });
    if (code != 0) throw std::runtime_error("remote `" + line + "` exited " + std::to_string(code) + ": " + err);
    return out;
}

bifrost::JobInfo start_job(bifrost::Client & c, const std::string & name, const std::string & shell) {
    bifrost::JobSpec spec;
    spec.name = name;
    spec.command = bifrost::Command::sh(shell);
    return c.run_detached(spec);
}

// Whether any live (non-zombie) process is in process group `pgid`, from /proc/*/stat: a process
// killed a moment ago stays a zombie until its parent (here PID 1) reaps it, and kill(2) still
// finds zombies.
bool group_alive(long pgid) {
    for (const auto & entry : std::filesystem::directory_iterator("/proc")) {
        const std::string pid = entry.path().filename().string();
        if (pid.find_first_not_of("0123456789") != std::string::npos) continue;  // /proc/net, /proc/self...
        std::ifstream in(entry.path() / "stat");
        std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const auto close = stat.rfind(')');
        if (close == std::string::npos || close + 2 > stat.size()) continue;
        std::istringstream rest(stat.substr(close + 2));
        char state = 0;
        long ppid = 0, pgrp = 0;
        if (rest >> state >> ppid >> pgrp && pgrp == pgid && state != 'Z') return true;
    }
    return false;
}

// The job's state once the wrapper's exit has been seen (a killed group is reaped a moment later).
std::string settled_state(bifrost::Client & c, const std::string & name) {
    std::string state;
    for (int i = 0; i < 100 && (state = c.job(name).state) == "running"; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return state;
}

// Kills the process groups a test started when it ends, passed or failed, so a failing check
// leaves no `sleep 300` behind.
struct Reaper {
    std::vector<long> groups;
    ~Reaper() {
        for (long g : groups)
            if (g > 1 && group_alive(g)) ::kill(-static_cast<pid_t>(g), SIGKILL);
    }
};

// The lease window's bounds keep a 2 s margin on the host's clock: jobs start clear of them.
void clear_of_lease_edge() { std::this_thread::sleep_for(std::chrono::milliseconds(3200)); }

}  // namespace

TEST_CASE("cli ssh-hosts: terminate stops the lease's detached bifrost jobs, TERM then KILL, and nothing else") {
    // The sshd's sessions see a private $HOME, so ~/.bifrost/jobs is this test's alone.
    tests::TempDir home("ssh-hosts-home");
    tests::SshdFixture sshd({"SetEnv HOME=" + home.path()});
    Cli cli;
    tests::write_file(cli.dir() / "hosts.yaml",
                      "hosts:\n  - name: box1\n    host: 127.0.0.1\n    port: " + std::to_string(sshd.port()) +
                          "\n    user: " + sshd.user() + "\n    key: " + sshd.client_key() + "\n");
    cli.set("BROKER_SSH_HOSTS", cli.dir() / "hosts.yaml");
    auto c = job_client(sshd);
    Reaper reaper;

    // Started before the lease: the account's own work, never the lease's.
    const auto older = start_job(c, "older", "sleep 300");
    reaper.groups.push_back(older.pid);
    clear_of_lease_edge();
    const std::string id = cli.json({"create", "--offer", "ssh-hosts:box1", "--ssh-key", sshd.client_key(),
                                     "--no-gpu-check"})["id"];
    clear_of_lease_edge();
    // The lease's jobs: one that ends on SIGTERM, one whose whole group ignores it, one finished.
    const auto polite = start_job(c, "polite", "sleep 300");
    const auto stubborn = start_job(c, "stubborn", "trap \"\" TERM; while :; do sleep 1; done");
    reaper.groups.insert(reaper.groups.end(), {polite.pid, stubborn.pid});
    start_job(c, "done", "true");
    for (int i = 0; i < 100 && c.job("done").state == "running"; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    REQUIRE(c.job("done").state == "succeeded");
    // A pid file that names a process which is not a bifrost wrapper (a stale or planted one), with a
    // start time inside the lease: never signalled. And a job directory whose name is shell code.
    const long impostor = std::stol(remote_sh(
        c, "d=\"$HOME/.bifrost/jobs/impostor\"; mkdir -p \"$d\" && (setsid sleep 300 < /dev/null > /dev/null 2>&1 & "
           "echo $! > \"$d/pid\") && date +%s > \"$d/start_time\" && cat \"$d/pid\""));
    reaper.groups.push_back(impostor);  // setsid: it leads its own group
    remote_sh(c, "d=\"$HOME/.bifrost/jobs/\\$(touch pwned)x\"; mkdir -p \"$d\" && cp \"$HOME/.bifrost/jobs/polite/pid\" "
                 "\"$HOME/.bifrost/jobs/polite/start_time\" \"$d/\"");
    // A job recorded as ended by bifrost's rename (exit.CODE, written even on a full disk, perhaps
    // with no exit_code beside it) is over whatever its pid now names: never signalled.
    const auto ended = start_job(c, "ended", "sleep 300");
    reaper.groups.push_back(ended.pid);
    remote_sh(c, "d=\"$HOME/.bifrost/jobs/ended\"; rm -f \"$d/exit_code\" \"$d/state.running\"; : > \"$d/exit.0\"");
    // A job whose recorded identity (boot id, start time) no longer matches its pid: to bifrost the
    // pid was reused by another process after the job died (`bifrost jobs` shows it killed), so the
    // terminate must not signal what now runs under that pid, even a wrapper-looking group leader.
    const auto reborn = start_job(c, "reborn", "sleep 300");
    reaper.groups.push_back(reborn.pid);
    remote_sh(c, "d=\"$HOME/.bifrost/jobs/reborn\"; read -r b s < \"$d/ident\" && printf '%s 1\\n' \"$b\" > \"$d/ident\"");
    REQUIRE(c.job("reborn").state == "killed");
    REQUIRE(group_alive(polite.pid));
    REQUIRE(group_alive(stubborn.pid));

    auto r = cli.run({"instances", "terminate", "ssh-hosts:" + id, "--yes"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    // The report names what was stopped, and how.
    CHECK(r.err.find("stopped detached job polite (process group " + std::to_string(polite.pid) + ") with SIGTERM") !=
          std::string::npos);
    CHECK(r.err.find("stopped detached job stubborn (process group " + std::to_string(stubborn.pid) +
                     ") with SIGKILL after 5 s of SIGTERM") != std::string::npos);
    CHECK(r.err.find("left detached job impostor running: pid " + std::to_string(impostor) +
                     " is not its bifrost wrapper") != std::string::npos);
    CHECK(r.err.find("older") == std::string::npos);
    CHECK(r.err.find("job done") == std::string::npos);
    CHECK(r.err.find("job ended") == std::string::npos);
    CHECK(group_alive(ended.pid));
    CHECK(group_alive(reborn.pid));
    CHECK(r.err.find("job reborn") == std::string::npos);
    CHECK_FALSE(group_alive(polite.pid));
    CHECK_FALSE(group_alive(stubborn.pid));
    CHECK(settled_state(c, "polite") == "killed");
    CHECK(settled_state(c, "stubborn") == "killed");
    CHECK(c.job("done").state == "succeeded");
    CHECK(c.job("older").state == "running");
    CHECK(::kill(static_cast<pid_t>(impostor), 0) == 0);
    CHECK_FALSE(std::filesystem::exists(home / "pwned"));
    CHECK_FALSE(std::filesystem::exists(home / ".bifrost/jobs/pwned"));
    CHECK(cli.json({"search", "--provider", "ssh-hosts"}).size() == 1);  // released

    c.kill("older", 1);
    ::kill(-static_cast<pid_t>(ended.pid), SIGKILL);
    ::kill(-static_cast<pid_t>(reborn.pid), SIGKILL);
    ::kill(static_cast<pid_t>(impostor), SIGKILL);
    CHECK_FALSE(group_alive(older.pid));
}

TEST_CASE("cli ssh-hosts: two leases of one account: a terminate leaves the jobs the other lease may own") {
    // The same machine and account listed twice: both leases' jobs share one ~/.bifrost/jobs. Jobs
    // started once the second lease had begun may be either's, so the first lease's terminate
    // reports them and leaves them running; the second's ends them.
    tests::TempDir home("ssh-hosts-home");
    tests::SshdFixture sshd({"SetEnv HOME=" + home.path()});
    Cli cli;
    std::string yaml = "hosts:\n";
    for (const char * name : {"gpu0", "gpu1"})
        yaml += std::string("  - name: ") + name + "\n    host: 127.0.0.1\n    port: " + std::to_string(sshd.port()) +
                "\n    user: " + sshd.user() + "\n    key: " + sshd.client_key() + "\n";
    tests::write_file(cli.dir() / "hosts.yaml", yaml);
    cli.set("BROKER_SSH_HOSTS", cli.dir() / "hosts.yaml");
    auto c = job_client(sshd);
    Reaper reaper;

    const std::string first = cli.json({"create", "--offer", "ssh-hosts:gpu0", "--ssh-key", sshd.client_key(),
                                        "--no-gpu-check"})["id"];
    clear_of_lease_edge();
    const auto mine = start_job(c, "mine", "sleep 300");
    reaper.groups.push_back(mine.pid);
    clear_of_lease_edge();
    const std::string second = cli.json({"create", "--offer", "ssh-hosts:gpu1", "--ssh-key", sshd.client_key(),
                                         "--no-gpu-check"})["id"];
    clear_of_lease_edge();
    const auto theirs = start_job(c, "theirs", "sleep 300");
    reaper.groups.push_back(theirs.pid);

    auto r = cli.run({"instances", "terminate", "ssh-hosts:" + first, "--yes"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.err.find("stopped detached job mine (process group " + std::to_string(mine.pid) + ") with SIGTERM") !=
          std::string::npos);
    CHECK(r.err.find("left detached job theirs (pid " + std::to_string(theirs.pid) + ") running") != std::string::npos);
    CHECK_FALSE(group_alive(mine.pid));
    CHECK(group_alive(theirs.pid));

    // The second lease alone now: its terminate ends the job.
    r = cli.run({"instances", "terminate", "ssh-hosts:" + second, "--yes"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.err.find("stopped detached job theirs") != std::string::npos);
    CHECK_FALSE(group_alive(theirs.pid));
    CHECK(settled_state(c, "theirs") == "killed");
}

TEST_CASE("cli: every command has help with examples") {
    Cli cli;
    std::vector<std::vector<std::string>> cmds = {{"search"}, {"create"}, {"instances", "list"}, {"instances", "show"},
                                                  {"instances", "terminate"}, {"instances", "ssh"}, {"instances", "stop"},
                                                  {"instances", "start"}, {"sweep"}, {"init"}, {"providers"}};
    for (auto c : cmds) {
        c.push_back("--help");
        auto r = cli.run(c);
        INFO(c[0]);
        CHECK(r.exit_code == 0);
        CHECK(r.out.find("Examples") != std::string::npos);
    }
    CHECK(cli.run({"frobnicate"}).exit_code == 2);
    CHECK(cli.run({"search", "--sort", "cheapest", "--provider", "local"}).exit_code == 2);
    CHECK(cli.run({"search", "--cloud", "private", "--provider", "local"}).exit_code == 2);
}

TEST_CASE("cli runpod: spot offers are priced from the spot price and rented with a bid") {
    tests::SshdFixture sshd;
    tests::Emulator emu("runpod", {.api_key = kKey});
    back_with_sshd(emu, sshd, 1);
    Cli cli;
    cli.use(emu);
    json spot = cli.json({"search", "--provider", "runpod", "--gpu", "4090", "--gpus", "1", "--spot"});
    json ondemand = cli.json({"search", "--provider", "runpod", "--gpu", "4090", "--gpus", "1"});
    REQUIRE(!spot.empty());
    REQUIRE(!ondemand.empty());
    CHECK(spot[0]["spot"] == true);
    CHECK(spot[0]["price_usd_per_hour_total"].get<double>() < ondemand[0]["price_usd_per_hour_total"].get<double>());
    json c = cli.json({"create", "--offer", "runpod:" + spot[0]["offer_id"].get<std::string>(), "--ssh-key",
                       sshd.client_key(), "--no-wait"});
    const json state = emu.state();
    bool bid = false;
    for (const auto & r : state["requests"]) {
        if (r.value("action", "") != "create") continue;
        const auto & ops = r["operations"];
        bid |= std::find(ops.begin(), ops.end(), "podRentInterruptable") != ops.end() &&
               r["body"]["variables"]["input"].contains("bidPerGpu");
    }
    CHECK(bid);
    cli.json({"instances", "terminate", "runpod:" + c["id"].get<std::string>(), "--yes"});
}
