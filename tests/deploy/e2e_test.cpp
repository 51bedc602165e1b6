// End to end on loopback: the real deploy_and_analyze program against the `local` provider (a real
// sshd on 127.0.0.1), with the remote half really built (cached by source hash in one folder shared
// by every test here, so only the first pays for the build) and really run on the tiny OLMoE fixture
// with planted outliers. SERIAL: these share the build cache and the CPU.
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "tests/support/emulator.h"
#include "tests/support/sshd_fixture.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// The remote build is the slow part (minutes of libtorch compiles on 2 cores). The host build has
// just compiled `extract` and `analyze` from the same sources against the same Debian libtorch, so
// the shared cache is seeded with them under the key bootstrap.sh computes for this tree; the remote
// bootstrap then finds a cached build, exactly as a re-run does. TOOLKIT_E2E_REMOTE_BUILD=1 skips the
// seeding and makes the first test really build on the "instance" (the rehearsal demo always does).
// The key is the one the remote side computes too: bootstrap.sh resolves the libtorch the same way
// whatever python3 this process finds first on PATH (bootstrap_test.cpp checks that). Seeding also
// needs that libtorch to be the one the host binaries link; elsewhere the test builds for real.
void seed_remote_cache() {
    const char * real = std::getenv("TOOLKIT_E2E_REMOTE_BUILD");
    if (real && std::string(real) == "1") return;
    const std::string script = std::string(TOOLKIT_SOURCE_DIR) + "/deploy/remote/bootstrap.sh";
    auto t = common::run_process({"sh", script, "--print-torch"});
    REQUIRE(t.exit_code == 0);
    std::string torch_dir = t.out.substr(0, t.out.find(' '));
    std::error_code ec;
    if (!fs::equivalent(torch_dir, HOST_TORCH_DIR, ec)) {
        MESSAGE("not seeding the remote build cache: bootstrap.sh would link " << torch_dir << ", the host build links "
                                                                              << HOST_TORCH_DIR << "; the first test builds for real");
        return;
    }
    auto k = common::run_process({"sh", script, "--print-key", TOOLKIT_SOURCE_DIR});
    REQUIRE(k.exit_code == 0);
    std::string key = k.out.substr(0, k.out.find('\n'));
    std::string dir = std::string(DEPLOY_REMOTE_CACHE) + "/build-" + key;
    if (fs::exists(dir + "/.complete")) return;
    fs::create_directories(dir + "/bin");
    fs::copy_file(EXTRACT_BIN, dir + "/bin/extract", fs::copy_options::overwrite_existing);
    fs::copy_file(ANALYZE_BIN, dir + "/bin/analyze", fs::copy_options::overwrite_existing);
    tests::write_file(dir + "/.complete", "seeded from the host build by deploy_e2e_tests\n");
}

struct Env {
    Env() { seed_remote_cache(); }
    tests::TempDir dir{"deploy-e2e"};
    std::string state() const { return dir / "state"; }
    std::string runs() const { return dir / "runs"; }
};

std::vector<std::string> base_args(const Env & env, const std::string & config) {
    return {DEPLOY_BIN, "--config", config, "--output-dir", env.runs(), "--state-dir", env.state(),
            "--ledger", env.state() + "/ledger.sqlite", "--remote-cache", DEPLOY_REMOTE_CACHE, "--workspace", TOOLKIT_SOURCE_DIR};
}

common::RunOptions run_opts() {
    common::RunOptions o;
    o.timeout = std::chrono::milliseconds(1500 * 1000);
    o.extra_env = {"BROKER_STATE_DIR=", "OMP_NUM_THREADS=2"};
    return o;
}

std::string rehearsal_with(const Env & env, const std::string & extra_yaml, const std::string & name = "run.yaml") {
    std::string text = tests::read_file(std::string(TOOLKIT_SOURCE_DIR) + "/configs/rehearsal.yaml");
    // Drop the policy section and append the test's own (keys may not repeat).
    auto pos = text.find("\npolicy:");
    if (!extra_yaml.empty() && extra_yaml.find("policy:") != std::string::npos && pos != std::string::npos) text = text.substr(0, pos + 1);
    std::string path = env.dir / name;
    tests::write_file(path, text + extra_yaml);
    return path;
}

std::string only_run_dir(const Env & env) {
    std::string found;
    if (!fs::exists(env.runs())) return found;
    for (const auto & e : fs::directory_iterator(env.runs())) found = e.path().string();
    return found;
}

// Local instances still present in the broker state (each is a directory with meta.json).
int local_instances(const Env & env) {
    int n = 0;
    if (!fs::exists(env.state() + "/local")) return 0;
    for (const auto & e : fs::directory_iterator(env.state() + "/local"))
        if (fs::exists(e.path() / "meta.json")) ++n;
    return n;
}

nlohmann::json state_of(const std::string & run_dir) {
    std::ifstream in(run_dir + "/state.json");
    return nlohmann::json::parse(in);
}

bool journal_has(const std::string & run_dir, const std::string & step, const std::string & event) {
    std::ifstream in(run_dir + "/journal.jsonl");
    std::string line;
    while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_discarded() && j.value("step", "") == step && j.value("event", "") == event) return true;
    }
    return false;
}

}  // namespace

TEST_CASE("e2e: the rehearsal runs the whole flow, finds the planted outliers, and ends the instance") {
    Env env;
    auto r = common::run_process(base_args(env, rehearsal_with(env, "")), run_opts());
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    for (const char * step : {"estimate", "offers", "create", "ready", "push", "watchdog", "bootstrap", "fetch", "run", "pull", "finish"})
        CHECK_MESSAGE(journal_has(run, step, "done"), step);
    CHECK(fs::exists(run + "/results/analysis/report.md"));
    std::ifstream in(run + "/results/analysis/outliers.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto j = nlohmann::json::parse(text);
    // Exactly the planted dims (configs/rehearsal.yaml: 7,42@0-3) are outliers.
    std::set<int> dims;
    for (const auto & f : j.at("feature_profiles"))
        if (f.value("outlier", false)) dims.insert(f.at("dim").get<int>());
    CHECK(dims == std::set<int>{7, 42});
    auto st = state_of(run);
    CHECK(st["end"]["action"] == "terminate");
    CHECK(st["end"]["proven_gone"] == true);
    CHECK(local_instances(env) == 0);
    CHECK(fs::exists(run + "/logs/analysis.log"));
    CHECK(r.out.find("results: ") != std::string::npos);
    const char * real = std::getenv("TOOLKIT_E2E_REMOTE_BUILD");
    if (!(real && std::string(real) == "1"))
        CHECK(tests::read_file(run + "/logs/bootstrap.log").find("cached build") != std::string::npos);
}

TEST_CASE("e2e: extract failing applies on_failure (keep for a TTL), with the logs pulled") {
    Env env;
    // Token ids beyond the fixture's vocabulary of 128: extract refuses them.
    std::string cfg = rehearsal_with(env, "policy:\n  on_failure: keep\n  keep_ttl: 10m\n  heartbeat_timeout: 2m\n");
    std::string text = tests::read_file(cfg);
    text.replace(text.find("vocab: 128"), 10, "vocab: 5000");
    tests::write_file(cfg, text);
    auto r = common::run_process(base_args(env, cfg), run_opts());
    INFO(r.err);
    CHECK(r.exit_code == 8);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    CHECK(journal_has(run, "run", "failed"));
    CHECK(tests::read_file(run + "/logs/analysis.log").find("outside the vocabulary") != std::string::npos);
    auto st = state_of(run);
    CHECK(st["end"]["action"] == "keep");
    CHECK(st["end"]["watchdog_extended"] == true);
    CHECK(local_instances(env) == 1);
    // The kept instance ends with the command the run printed.
    std::string ref = st["instance"]["provider"].get<std::string>() + ":" + st["instance"]["id"].get<std::string>();
    CHECK(r.err.find("broker instances terminate " + ref) != std::string::npos);
    auto t = common::run_process({BROKER_BIN, "--state-dir", env.state(), "--ledger", env.state() + "/ledger.sqlite", "instances",
                                  "terminate", ref, "--yes"});
    CHECK(t.exit_code == 0);
    CHECK(local_instances(env) == 0);
}

TEST_CASE("e2e: Ctrl-C mid-run stops cleanly, keeps what exists, terminates, exits 130") {
    Env env;
    auto args = base_args(env, rehearsal_with(env, ""));
    auto child = common::ChildProcess::spawn(args, {.stdout_path = env.dir / "out.txt", .stderr_path = env.dir / "err.txt", .new_session = true});
    // Wait for the run step (the job is running), then Ctrl-C.
    std::string run;
    auto end = std::chrono::steady_clock::now() + 1200s;
    while (std::chrono::steady_clock::now() < end) {
        run = only_run_dir(env);
        if (!run.empty() && journal_has(run, "run", "start")) break;
        std::this_thread::sleep_for(200ms);
    }
    REQUIRE(journal_has(run, "run", "start"));
    ::kill(child.pid(), SIGINT);
    auto code = child.wait_for(120s);
    INFO(tests::read_file(env.dir / "err.txt"));
    REQUIRE(code.has_value());
    CHECK(*code == 130);
    CHECK(journal_has(run, "finish", "done"));
    CHECK(local_instances(env) == 0);
    CHECK(state_of(run)["end"]["proven_gone"] == true);
}

TEST_CASE("e2e: SIGKILLed mid-run, the on-instance watchdog ends the instance when heartbeats stop") {
    Env env;
    auto args = base_args(env, rehearsal_with(env, "policy:\n  heartbeat_timeout: 30s\n"));
    args.push_back("--test-sigkill-at-step");
    args.push_back("run");
    auto r = common::run_process(args, run_opts());
    CHECK(r.exit_code == 128 + SIGKILL);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    CHECK(journal_has(run, "watchdog", "done"));
    CHECK(local_instances(env) == 1);
    // Heartbeat timeout 30 s + a 10 s tick + the broker terminate.
    auto end = std::chrono::steady_clock::now() + 90s;
    while (local_instances(env) > 0 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1s);
    CHECK(local_instances(env) == 0);
}

TEST_CASE("e2e: --resume reattaches to a run whose orchestrator died, and finishes it") {
    Env env;
    auto args = base_args(env, rehearsal_with(env, "policy:\n  heartbeat_timeout: 10m\n"));
    args.push_back("--test-sigkill-at-step");
    args.push_back("run");
    auto r = common::run_process(args, run_opts());
    CHECK(r.exit_code == 128 + SIGKILL);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    auto again = common::run_process({DEPLOY_BIN, "--resume", run, "--state-dir", env.state(), "--ledger", env.state() + "/ledger.sqlite",
                                      "--remote-cache", DEPLOY_REMOTE_CACHE},
                                     run_opts());
    INFO(again.err);
    CHECK(again.exit_code == 0);
    CHECK(journal_has(run, "bootstrap", "skipped"));
    CHECK(fs::exists(run + "/results/analysis/outliers.json"));
    CHECK(local_instances(env) == 0);
    // A second resume only summarises.
    auto third = common::run_process({DEPLOY_BIN, "--resume", run, "--state-dir", env.state(), "--json"}, run_opts());
    CHECK(third.exit_code == 0);
    CHECK(nlohmann::json::parse(third.out)["exit_code"] == 0);
}

TEST_CASE("e2e: a bad config is refused before anything is rented") {
    Env env;
    std::string cfg = rehearsal_with(env, "policy:\n  on_succes: terminate\n");
    auto r = common::run_process(base_args(env, cfg), run_opts());
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("on_succes") != std::string::npos);
    CHECK(r.err.find("run.yaml:") != std::string::npos);
    CHECK(only_run_dir(env).empty());
    CHECK(local_instances(env) == 0);
    auto r2 = common::run_process({DEPLOY_BIN, "--gpu-count", "-3", "--output-dir", env.runs(), "--state-dir", env.state()}, run_opts());
    CHECK(r2.exit_code == 2);
    CHECK(only_run_dir(env).empty());
    auto r3 = common::run_process({DEPLOY_BIN, "--resume", env.dir / "no-such-run", "--state-dir", env.state()}, run_opts());
    CHECK(r3.exit_code == 9);
    auto r4 = common::run_process({DEPLOY_BIN, "--provider", "local", "--on-success", "maybe", "--output-dir", env.runs(),
                                   "--state-dir", env.state(), "--json"},
                                  run_opts());
    CHECK(r4.exit_code == 2);
    CHECK(nlohmann::json::parse(r4.err)["error"]["kind"] == "usage");
    auto help = common::run_process({DEPLOY_BIN, "--help"}, run_opts());
    CHECK(help.exit_code == 0);
    CHECK(help.out.find("Examples:") != std::string::npos);
    CHECK(help.out.find("--keep-running") != std::string::npos);
}

TEST_CASE("e2e: the same flow against the RunPod emulator (instance backed by a real sshd) proves the cloud wiring") {
    Env env;
    fs::create_directories(env.dir / "pod-home");
    tests::SshdFixture sshd({"SetEnv HOME=" + env.dir / "pod-home"});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 2}});
    std::string text = tests::read_file(std::string(TOOLKIT_SOURCE_DIR) + "/configs/rehearsal.yaml");
    text = text.substr(0, text.find("\nresources:") + 1) +
           "resources:\n  providers: [runpod]\n  gpu_count: 1\n  max_price_usd_per_hour: 5\n  min_vram_gb: 16\n  disk_gb: 20\n"
           "policy:\n  on_success: terminate\n  on_failure: terminate\n  max_duration: 1h\n  heartbeat_timeout: 5m\n";
    tests::write_file(env.dir / "runpod.yaml", text);
    auto args = base_args(env, env.dir / "runpod.yaml");
    for (const char * a : {"--no-gpu-check", "--ssh-key"}) args.push_back(a);
    args.push_back(sshd.client_key());
    auto opts = run_opts();
    opts.extra_env.push_back("RUNPOD_API_KEY=test-key-runpod");
    opts.extra_env.push_back("RUNPOD_BASE_URL=" + emu.base_url());
    auto r = common::run_process(args, opts);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    CHECK(fs::exists(run + "/results/analysis/outliers.json"));
    auto st = state_of(run);
    CHECK(st["instance"]["provider"] == "runpod");
    CHECK(st["end"]["proven_gone"] == true);
    CHECK(st["watchdog"]["action"] == "request");  // broker's terminate request, sent by the watchdog
    // The emulator saw the whole life: search, create (with its terminateAfter deadline), terminate.
    auto es = emu.state();
    CHECK(es["instances"].empty());
    CHECK(es["terminated"].size() == 1);
    bool created = false, terminated = false;
    for (const auto & q : es["requests"]) {
        created = created || q.value("action", "") == "create";
        terminated = terminated || q.value("action", "") == "terminate";
    }
    CHECK(created);
    CHECK(terminated);
    // The account key never reached the instance's run files or the local run directory (the pushed
    // source tree is left out: this very test file spells the key).
    auto grep = common::run_process({"grep", "-rl", "test-key-runpod", env.dir / "pod-home/toolkit/runs", run});
    CHECK(grep.out.empty());
}
