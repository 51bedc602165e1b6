// End to end on loopback: the real deploy_and_analyze program against the `local` provider (a real
// sshd on 127.0.0.1), with the remote half really built (cached by source hash in one folder shared
// by every test here, so only the first pays for the build) and really run on the tiny OLMoE fixture
// with planted outliers. SERIAL: these share the build cache and the CPU.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/sshd_server.h"
#include "common/subprocess.h"
#include "tests/deploy/e2e_support.h"
#include "tests/support/emulator.h"
#include "tests/support/sshd_fixture.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using namespace tests::e2e;

namespace {

struct Env : TestDir {
    Env() : TestDir("deploy-e2e") {}
    std::string runs() const { return dir / "runs"; }
};

std::vector<std::string> base_args(const Env & env, const std::string & config) {
    std::vector<std::string> args{DEPLOY_BIN, "--config", config, "--output-dir", env.runs()};
    for (const auto & a : env.state_args()) args.push_back(a);
    return args;
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

nlohmann::json state_of(const std::string & run_dir) { return json_file(run_dir + "/state.json"); }

// A one-GPU run on a cloud emulator: the rehearsal's model and job, the cloud's resources, and the
// given `policy:` entries.
std::string cloud_config(const Env & env, const std::string & cloud, const std::string & policy) {
    std::string text = tests::read_file(std::string(TOOLKIT_SOURCE_DIR) + "/configs/rehearsal.yaml");
    text = text.substr(0, text.find("\nresources:") + 1) + "resources:\n  providers: [" + cloud +
           "]\n  gpu_count: 1\n  max_price_usd_per_hour: 5\n  min_vram_gb: 16\n  disk_gb: 20\npolicy:\n" + policy;
    const std::string path = env.dir / (cloud + ".yaml");
    tests::write_file(path, text);
    return path;
}

// The emulator's key and address in the environment of deploy_and_analyze (and of its broker).
common::RunOptions cloud_opts(const tests::Emulator & emu, const std::string & cloud) {
    std::string upper = cloud;
    for (auto & c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    auto o = run_opts();
    o.extra_env.push_back(upper + "_API_KEY=test-key-" + cloud);
    o.extra_env.push_back(upper + "_BASE_URL=" + emu.base_url());
    return o;
}

// deploy_and_analyze on `config`, the instance reached with the sshd fixture's key and no GPU check.
std::vector<std::string> sshd_backed_args(const Env & env, const std::string & config, const tests::SshdFixture & sshd) {
    auto args = base_args(env, config);
    for (const char * a : {"--no-gpu-check", "--ssh-key"}) args.push_back(a);
    args.push_back(sshd.client_key());
    return args;
}

// The sshd line that makes a pod of env.dir/pod-home whose sessions find the test's stand-ins for
// system commands (`fakes`: name → sh script body) first on PATH, in env.dir/pod-bin: how a test
// makes one remote command hang or drop the connection, as a stuck volume or a network blip would.
// A stand-in reaches the real command with `PATH=${PATH#*:} exec NAME "$@"` (the rest of PATH).
std::string pod_with_fakes(const Env & env, const std::vector<std::pair<std::string, std::string>> & fakes) {
    fs::create_directories(env.dir / "pod-home");
    fs::create_directories(env.dir / "pod-bin");
    for (const auto & [name, body] : fakes) {
        const std::string path = env.dir / ("pod-bin/" + name);
        tests::write_file(path, "#!/bin/sh\n" + body);
        fs::permissions(path, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read |
                                  fs::perms::others_exec);
    }
    const char * path = std::getenv("PATH");
    return "SetEnv HOME=" + env.dir / "pod-home" + " PATH=" + env.dir / "pod-bin" + ":" + (path ? path : "/usr/bin:/bin");
}

// How long `step` took, from its last done/failed line in the run's journal (-1: none).
double step_seconds(const std::string & run_dir, const std::string & step) {
    double s = -1;
    std::ifstream in(run_dir + "/journal.jsonl");
    std::string line;
    while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_object() && j.value("step", "") == step && (j.value("event", "") == "done" || j.value("event", "") == "failed"))
            s = j.value("duration_s", -1.0);
    }
    return s;
}

}  // namespace

TEST_CASE("e2e: the rehearsal runs the whole flow, finds the planted outliers, and ends the instance") {
    Env env;
    auto r = common::run_process(base_args(env, rehearsal_with(env, "")), run_opts());
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    for (const char * step : {"estimate", "offers", "create", "ready", "push", "watchdog", "fetch", "bootstrap", "run", "pull", "finish"})
        CHECK_MESSAGE(journal_has(run, step, "done"), step);
    CHECK(fs::exists(run + "/results/analysis/report.md"));
    // Exactly the planted dims (configs/rehearsal.yaml: 7,42@0-3) are outliers.
    CHECK(outlier_dims(run) == std::set<int>{7, 42});
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

// The run directory once its run step has started (the job is running), or "" after 1200 s.
std::string wait_for_run_step(const Env & env) {
    auto end = std::chrono::steady_clock::now() + 1200s;
    while (std::chrono::steady_clock::now() < end) {
        std::string run = only_run_dir(env);
        if (!run.empty() && journal_has(run, "run", "start")) return run;
        std::this_thread::sleep_for(200ms);
    }
    return "";
}

TEST_CASE("e2e: a closed terminal (SIGHUP) mid-run does not stop the run: it finishes, pulls and ends the instance") {
    Env env;
    auto child = common::ChildProcess::spawn(base_args(env, rehearsal_with(env, "")),
                                             {.stdout_path = env.dir / "out.txt", .stderr_path = env.dir / "err.txt", .new_session = true});
    const std::string run = wait_for_run_step(env);
    REQUIRE(!run.empty());
    ::kill(child.pid(), SIGHUP);
    auto code = child.wait_for(1200s);
    INFO(tests::read_file(env.dir / "err.txt"));
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    CHECK(journal_has(run, "pull", "done"));
    CHECK(fs::exists(run + "/results/analysis/report.md"));
    CHECK(state_of(run)["end"]["proven_gone"] == true);
    CHECK(local_instances(env) == 0);
}

TEST_CASE("e2e: Ctrl-C with stderr on a pipe whose reader has gone (2>&1 | tee) still ends the instance, exit 130") {
    Env env;
    const std::string fifo = env.dir / "stderr.fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // The reader (tee's part) drains the pipe until told to go, then closes it.
    const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(reader >= 0);
    std::atomic<bool> reader_gone{false};
    std::thread drain([&] {
        char buf[4096];
        while (!reader_gone) {
            struct pollfd p {reader, POLLIN, 0};
            if (::poll(&p, 1, 100) > 0) (void)!::read(reader, buf, sizeof buf);
        }
        ::close(reader);
    });
    // A key of its own, so the run starts no ssh-keygen. (The local provider's sshd start-up sets
    // SIGPIPE aside anyway through common::run_process; on a cloud nothing else does, and this case
    // guards the behaviour, while tests/common checks the disposition itself.)
    common::generate_ed25519_key(env.dir / "id", "t");
    auto args = base_args(env, rehearsal_with(env, ""));
    args.push_back("--ssh-key");
    args.push_back(env.dir / "id");
    auto child = common::ChildProcess::spawn(args, {.stdout_path = env.dir / "out.txt", .stderr_path = fifo, .new_session = true});
    const std::string run = wait_for_run_step(env);
    reader_gone = true;
    drain.join();
    REQUIRE(!run.empty());
    ::kill(child.pid(), SIGINT);  // its next log line ("step run: interrupted") meets a closed pipe
    auto code = child.wait_for(120s);
    REQUIRE(code.has_value());
    CHECK(*code == 130);
    CHECK(journal_has(run, "finish", "done"));
    CHECK(state_of(run)["end"]["proven_gone"] == true);
    CHECK(local_instances(env) == 0);
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

TEST_CASE("e2e: --resume of a damaged run directory exits 2 or 9 naming the file and key, never an unexpected error, and changes nothing") {
    // The finished rehearsal of tests/deploy/data/old-format, damaged as a full disk, an edit or a
    // sync tool leaves it (run_dir_hostile_test.cpp damages every field; this is the program's exit).
    tests::TempDir dir("deploy-e2e-damaged");
    const std::string finished = std::string(TOOLKIT_SOURCE_DIR) + "/tests/deploy/data/old-format/finished";
    struct Case {
        std::string file, find, replace, expect;
        int code;
    };
    const std::vector<Case> cases{
        {"journal.jsonl", "\"step\":\"create\"", "\"step\":5", "journal.jsonl:5: step: expected a string, got number", 2},
        {"state.json", "\"price_usd_per_hour\": 0.0", "\"price_usd_per_hour\": \"cheap\"",
         "state.json: instance.price_usd_per_hour: expected a number, got string", 2},
        {"run.json", "\"max_duration_s\": 3600.0", "\"max_duration_s\": \"1h\"",
         "run.json: config.policy.max_duration_s: expected a number, got string", 2},
        {"state.json", "", "{\"instance\": {\"provider\": \"lo", "state.json: not valid JSON", 2},
        {"run.json", "", "", "is not a run directory (no run.json)", 9},
    };
    for (size_t n = 0; n < cases.size(); ++n) {
        const auto & c = cases[n];
        CAPTURE(c.expect);
        const std::string run = dir / ("run" + std::to_string(n));
        fs::create_directories(run);
        for (const char * f : {"run.json", "state.json", "journal.jsonl"}) {
            fs::copy_file(finished + "/" + f, run + "/" + f);
            fs::permissions(run + "/" + f, fs::perms::owner_read | fs::perms::owner_write);
        }
        const std::string path = run + "/" + c.file;
        if (c.code == 9) {
            fs::remove(path);
        } else if (c.find.empty()) {
            tests::write_file(path, c.replace);  // cut short
        } else {
            std::string text = tests::read_file(path);
            const auto at = text.find(c.find);
            REQUIRE(at != std::string::npos);
            tests::write_file(path, text.replace(at, c.find.size(), c.replace));
        }
        std::map<std::string, std::string> before;
        for (const auto & e : fs::directory_iterator(run)) before[e.path().string()] = tests::read_file(e.path().string());
        auto r = common::run_process({DEPLOY_BIN, "--resume", run, "--state-dir", dir / "state"}, run_opts());
        INFO(r.err);
        CHECK(r.exit_code == c.code);
        CHECK(r.err.find(c.expect) != std::string::npos);
        CHECK(r.err.find("unexpected error") == std::string::npos);
        CHECK(r.err.find("json.exception") == std::string::npos);
        std::map<std::string, std::string> after;
        for (const auto & e : fs::directory_iterator(run)) after[e.path().string()] = tests::read_file(e.path().string());
        CHECK(after == before);
    }
}

TEST_CASE("e2e: the same flow against the RunPod emulator (instance backed by a real sshd) proves the cloud wiring") {
    Env env;
    fs::create_directories(env.dir / "pod-home");
    tests::SshdFixture sshd({"SetEnv HOME=" + env.dir / "pod-home"});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 2}});
    auto args = sshd_backed_args(
        env, cloud_config(env, "runpod", "  on_success: terminate\n  on_failure: terminate\n  max_duration: 1h\n  heartbeat_timeout: 5m\n"), sshd);
    auto opts = cloud_opts(emu, "runpod");
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

namespace {

// A GPU run on the Vast emulator. The runs below never get past the create step, so no sshd backs
// the instance and nothing is built.
std::string vast_config(const Env & env) {
    return cloud_config(env, "vast", "  on_success: terminate\n  on_failure: keep\n  max_duration: 1h\n  heartbeat_timeout: 5m\n");
}

common::RunOptions vast_opts(const tests::Emulator & vast) { return cloud_opts(vast, "vast"); }

std::vector<std::string> resume_args(const Env & env, const std::string & run) {
    std::vector<std::string> args{DEPLOY_BIN, "--resume", run};
    for (const auto & a : env.state_args()) args.push_back(a);
    return args;
}

// A run SIGKILLed between the provider's create answer and its state write: the instance exists on
// the emulator, state.json knows only the intent.
std::string killed_after_create_answer(const Env & env, tests::Emulator & vast) {
    auto args = base_args(env, vast_config(env));
    for (const char * a : {"--test-sigkill-at-step", "create:answered"}) args.push_back(a);
    auto r = common::run_process(args, vast_opts(vast));
    INFO(r.err);
    REQUIRE(r.exit_code == 128 + SIGKILL);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    REQUIRE(vast.state()["instances"].size() == 1);
    auto st = state_of(run);
    REQUIRE(st.contains("create_intent"));
    REQUIRE_FALSE(st.contains("instance"));
    return run;
}

}  // namespace

TEST_CASE("e2e: a create that failed after the provider made the instance is found by name in finish and terminated") {
    Env env;
    tests::Emulator vast("vast", {.api_key = "test-key-vast"});
    std::string run = killed_after_create_answer(env, vast);
    // The next attach's create cannot adopt it: the listing answers 503 to every try of one list call
    // (common::http makes 4), so the create step fails with the instance unrecorded, as a create
    // whose read-back failed does. Finish's own lookup by name gets the listing.
    vast.inject({{"kind", "http_status"}, {"status", 503}, {"match", {{"action", "list"}}}, {"count", 4}});
    auto r = common::run_process(resume_args(env, run), vast_opts(vast));
    INFO(r.err);
    REQUIRE(journal_has(run, "create", "failed"));
    CHECK(r.exit_code == 6);  // the create's network failure; finish proved the instance gone
    CHECK(journal_has(run, "finish", "done"));
    CHECK(r.err.find("nothing to end") == std::string::npos);
    CHECK(vast.state()["instances"].empty());
    auto st = state_of(run);
    REQUIRE(st.contains("instance"));
    CHECK(st["instance"]["adopted"] == true);
    // Terminated although on_failure is keep: nothing was set up on it, no watchdog guards it.
    CHECK(st["end"]["action"] == "terminate");
    CHECK(st["end"]["proven_gone"] == true);
}

TEST_CASE("e2e: when finish cannot look up an instance a failed create may have made, the run ends as leak risk naming run and provider") {
    Env env;
    tests::Emulator vast("vast", {.api_key = "test-key-vast"});
    std::string run = killed_after_create_answer(env, vast);
    vast.inject({{"kind", "http_status"}, {"status", 503}, {"match", {{"action", "list"}}}, {"count", 1000}});
    auto r = common::run_process(resume_args(env, run), vast_opts(vast));
    INFO(r.err);
    REQUIRE(journal_has(run, "create", "failed"));
    CHECK(r.exit_code == 10);
    CHECK(journal_has(run, "finish", "failed"));
    CHECK(r.err.find("nothing to end") == std::string::npos);
    std::string instance_run_id = json_file(run + "/run.json")["instance_run_id"];
    CHECK(r.err.find(instance_run_id) != std::string::npos);
    CHECK(r.err.find("vast") != std::string::npos);
    CHECK(vast.state()["instances"].size() == 1);
}

TEST_CASE("e2e: on_failure keep with a run that fails before its watchdog is armed terminates the instance and proves it gone, saying why") {
    Env env;
    tests::Emulator vast("vast", {.api_key = "test-key-vast"});
    // The instance fails as it boots: the ready step fails, on Vast (no deadline of its own), with
    // nothing set up on the instance and no watchdog armed. on_failure is keep.
    vast.inject({{"kind", "instance_failed"}, {"match", {{"action", "create"}}}});
    auto r = common::run_process(base_args(env, vast_config(env)), vast_opts(vast));
    INFO(r.err);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    REQUIRE(journal_has(run, "ready", "failed"));
    CHECK_FALSE(journal_has(run, "watchdog", "start"));
    CHECK(r.exit_code == 8);  // the ready step's failure; finish proved the instance gone
    CHECK(journal_has(run, "finish", "done"));
    auto st = state_of(run);
    CHECK(st["watchdog"].is_null());
    CHECK(st["end"]["action"] == "terminate");
    CHECK(st["end"]["proven_gone"] == true);
    const std::string reason = st["end"]["reason"];
    CHECK(reason.find("on_failure: keep, but the run ended before its watchdog was armed") == 0);
    CHECK(reason.find("terminate") != std::string::npos);
    CHECK(vast.state()["instances"].empty());
    CHECK(vast.state()["terminated"].size() == 1);
    CHECK(r.err.find("keep for") == std::string::npos);  // no keep deadline that nothing would enforce
}

namespace {

// A GPU run that may rent on RunPod, then on Vast (both emulated; nothing backs their instances), and
// the environment that reaches both.
std::string runpod_then_vast_config(const Env & env) {
    std::string text = tests::read_file(cloud_config(env, "runpod", "  on_failure: terminate\n  max_duration: 1h\n"));
    text.replace(text.find("providers: [runpod]"), 19, "providers: [runpod, vast]");
    const std::string path = env.dir / "runpod-then-vast.yaml";
    tests::write_file(path, text);
    return path;
}
common::RunOptions both_clouds(const tests::Emulator & runpod, const tests::Emulator & vast) {
    auto o = cloud_opts(runpod, "runpod");
    for (const auto & e : cloud_opts(vast, "vast").extra_env)
        if (e.rfind("VAST_", 0) == 0) o.extra_env.push_back(e);
    return o;
}

// A run of that config stopped (SIGKILL) as its create step starts: the offers step found offers on
// both clouds, nothing is rented yet.
std::string stopped_before_create(const Env & env, const tests::Emulator & runpod, const tests::Emulator & vast) {
    auto args = base_args(env, runpod_then_vast_config(env));
    for (const char * a : {"--test-sigkill-at-step", "create"}) args.push_back(a);
    auto r = common::run_process(args, both_clouds(runpod, vast));
    INFO(r.err);
    REQUIRE(r.exit_code == 128 + SIGKILL);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    REQUIRE(journal_has(run, "offers", "done"));
    std::set<std::string> offered;
    const auto st = state_of(run);
    for (const auto & o : st["offers"]) offered.insert(o["provider"].get<std::string>());
    REQUIRE(offered == std::set<std::string>{"runpod", "vast"});
    return run;
}

}  // namespace

TEST_CASE("e2e: a provider whose API fails during the create's search is named with its error, and the create moves on to the next provider") {
    Env env;
    tests::Emulator runpod("runpod", {.api_key = "test-key-runpod"});
    tests::Emulator vast("vast", {.api_key = "test-key-vast"});
    std::string run = stopped_before_create(env, runpod, vast);
    // From here RunPod's API answers every search with 503 (common::http's retries included).
    runpod.inject({{"kind", "http_status"}, {"status", 503}, {"match", {{"action", "search"}}}, {"count", 1000}});
    auto args = resume_args(env, run);
    for (const char * a : {"--test-sigkill-at-step", "create:answered"}) args.push_back(a);  // only the create matters here
    auto r = common::run_process(args, both_clouds(runpod, vast));
    INFO(r.err);
    CHECK(r.exit_code == 128 + SIGKILL);
    CHECK(vast.state()["instances"].size() == 1);  // rented on the next provider
    // The warning names the provider and what its API answered, not "no offer matches".
    CHECK(r.err.find("no offer matches") == std::string::npos);
    auto at = r.err.find("create: runpod: ");
    REQUIRE(at != std::string::npos);
    CHECK(r.err.substr(at, r.err.find('\n', at) - at).find("503") != std::string::npos);
}

TEST_CASE("e2e: when every provider's API fails during the create's search, the run's error names each provider and its error") {
    Env env;
    tests::Emulator runpod("runpod", {.api_key = "test-key-runpod"});
    tests::Emulator vast("vast", {.api_key = "test-key-vast"});
    std::string run = stopped_before_create(env, runpod, vast);
    runpod.inject({{"kind", "http_status"}, {"status", 503}, {"match", {{"action", "search"}}}, {"count", 1000}});
    vast.inject({{"kind", "http_status"}, {"status", 502}, {"match", {{"action", "search"}}}, {"count", 1000}});
    auto r = common::run_process(resume_args(env, run), both_clouds(runpod, vast));
    INFO(r.err);
    CHECK(r.exit_code == 6);  // network: the providers' APIs failed, not "no capacity"
    CHECK(journal_has(run, "create", "failed"));
    CHECK(journal_has(run, "finish", "done"));
    CHECK(runpod.state()["instances"].empty());
    CHECK(vast.state()["instances"].empty());
    CHECK(r.err.find("no offer matches") == std::string::npos);
    // The step's error (the journal's, and main's last line) names both, each with its own answer.
    std::string message;
    std::ifstream in(run + "/journal.jsonl");
    for (std::string line; std::getline(in, line);) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_object() && j.value("step", "") == "create" && j.value("event", "") == "failed") message = j.value("message", "");
    }
    INFO(message);
    auto rp = message.find("runpod: "), va = message.find("vast: ");
    REQUIRE(rp != std::string::npos);
    REQUIRE(va != std::string::npos);
    CHECK(message.find("503", rp) != std::string::npos);
    CHECK(message.find("502", va) != std::string::npos);
}

TEST_CASE("e2e: a terminate that fails in finish leaves the on-instance watchdog armed, and the watchdog ends the pod") {
    Env env;
    fs::create_directories(env.dir / "pod-home");
    // The pod's scoped key is in its environment, where RunPod puts it (the watchdog reads it there).
    tests::SshdFixture sshd({"SetEnv HOME=" + env.dir / "pod-home" + " RUNPOD_API_KEY=test-key-runpod"});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 2}});
    // Finish's terminate gets 503 on every try (common::http makes 4); the watchdog's later request is answered.
    emu.inject({{"kind", "http_status"}, {"status", 503}, {"match", {{"action", "terminate"}}}, {"count", 4}});
    auto args = sshd_backed_args(
        env, cloud_config(env, "runpod", "  on_success: terminate\n  on_failure: terminate\n  max_duration: 1h\n  heartbeat_timeout: 30s\n"), sshd);
    auto opts = cloud_opts(emu, "runpod");
    auto r = common::run_process(args, opts);
    INFO(r.err);
    CHECK(r.exit_code == 10);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    CHECK(journal_has(run, "pull", "done"));
    REQUIRE(emu.state()["instances"].size() == 1);
    std::string remote = env.dir / ("pod-home/toolkit/runs/" + json_file(run + "/run.json")["run_id"].get<std::string>());
    std::string conf = tests::read_file(remote + "/watchdog.conf");
    INFO(conf);
    CHECK(conf.find("DISARMED=1") == std::string::npos);
    // Its deadline moved near (a quarter of an hour) instead.
    auto at = conf.find("DEADLINE_UNIX=");
    REQUIRE(at != std::string::npos);
    double deadline = std::stod(conf.substr(at + 14));
    double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    CHECK(deadline <= now + 15 * 60);
    // No heartbeats since the run ended: the watchdog sends broker's terminate request within the
    // heartbeat timeout (30 s) and a tick.
    auto end = std::chrono::steady_clock::now() + 150s;
    while (!emu.state()["instances"].empty() && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1s);
    std::string log = tests::read_file(remote + "/watchdog.log");
    INFO(log);
    CHECK(emu.state()["instances"].empty());
    CHECK(log.find("disarmed") == std::string::npos);
    CHECK(log.find("terminating instance") != std::string::npos);
}

TEST_CASE("e2e: a finish command hung on the instance is abandoned at policy.stall_timeout and the pod is still terminated") {
    Env env;
    // Salvage pulls the watchdog's log after a failure; reading it hangs, as a read on a stuck volume
    // does. Without a bound, finish waits out the whole sleep before it terminates.
    tests::SshdFixture sshd({pod_with_fakes(env, {{"tail", "case \"$*\" in *watchdog.log*) sleep 240 ;; esac\nPATH=${PATH#*:} exec tail \"$@\"\n"}})});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 2}});
    std::string cfg = cloud_config(env, "runpod",
                                   "  on_failure: terminate\n  max_duration: 1h\n  heartbeat_timeout: 5m\n  stall_timeout: 15s\n");
    std::string text = tests::read_file(cfg);
    text.replace(text.find("vocab: 128"), 10, "vocab: 5000");  // extract refuses the tokens: the run fails fast
    tests::write_file(cfg, text);
    auto r = common::run_process(sshd_backed_args(env, cfg, sshd), cloud_opts(emu, "runpod"));
    INFO(r.err);
    CHECK(r.exit_code == 8);  // the run's own failure; finish ended the pod
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    CHECK(journal_has(run, "finish", "done"));
    CHECK(r.err.find("moved no data for 15") != std::string::npos);
    CHECK(r.err.find("policy.stall_timeout") != std::string::npos);
    // The bound plus the rest of finish (terminate and prove), well short of the 240 s hang.
    CHECK(step_seconds(run, "finish") < 15 + 60);
    CHECK(emu.state()["instances"].empty());
    CHECK(state_of(run)["end"]["proven_gone"] == true);
    // What arrived before the hang is kept (the job's log, the results folder the job made).
    CHECK(tests::read_file(run + "/logs/analysis.log").find("outside the vocabulary") != std::string::npos);
}

namespace {

// The run's analysis job on the host: bifrost's name (the role and the run id) and its folder under
// the pod's home (~/.bifrost/jobs/NAME: pid, killed, exit.CODE).
std::string analysis_job_name(const std::string & run) { return "analysis-" + json_file(run + "/run.json")["run_id"].get<std::string>(); }
std::string analysis_job_dir(const Env & env, const std::string & run) { return env.dir / ("pod-home/.bifrost/jobs/" + analysis_job_name(run)); }
// The job's process group (its wrapper leads it), 0 when it has not recorded one.
pid_t job_group(const std::string & job) {
    std::error_code ec;
    if (!fs::exists(job + "/pid", ec)) return 0;
    return static_cast<pid_t>(std::stol("0" + tests::read_file(job + "/pid")));
}
bool job_running(const std::string & job) {
    const pid_t g = job_group(job);
    return g > 0 && ::kill(-g, 0) == 0;
}
void kill_job(const std::string & job) {
    if (const pid_t g = job_group(job); g > 0) ::kill(-g, SIGKILL);
}

// A `nproc` stand-in for the pod: job.sh's first line (`$(nproc)`) takes 5 minutes, so the job
// outlives a short max_duration.
const char * const kSlowJobNproc =
    "case \"$(tr '\\0' ' ' < /proc/$PPID/cmdline)\" in *job.sh*) sleep 300 ;; esac\nPATH=${PATH#*:} exec nproc \"$@\"\n";

}  // namespace

TEST_CASE("e2e: a job still running when the run step's budget runs out is stopped before salvage, then the pod is terminated") {
    Env env;
    // The job's `$(nproc)` (job.sh's first line) takes 5 minutes: the job outlives max_duration.
    tests::SshdFixture sshd({pod_with_fakes(env, {{"nproc", kSlowJobNproc}})});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 2}});
    auto args = sshd_backed_args(env, cloud_config(env, "runpod", "  on_failure: terminate\n  max_duration: 20s\n  heartbeat_timeout: 5m\n"), sshd);
    auto r = common::run_process(args, cloud_opts(emu, "runpod"));
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    const std::string job = analysis_job_dir(env, run);
    const bool still_running = job_running(job);
    if (still_running) kill_job(job);  // never leave the test's job behind
    INFO(r.err);
    CHECK(r.exit_code == 7);  // the run step's deadline
    CHECK(journal_has(run, "run", "failed"));
    CHECK(r.err.find("stopping job " + analysis_job_name(run)) != std::string::npos);
    CHECK_FALSE(still_running);
    CHECK(fs::exists(job + "/killed"));
    CHECK(state_of(run)["jobs"][analysis_job_name(run)]["state"] == "killed");
    CHECK(journal_has(run, "finish", "done"));
    CHECK(emu.state()["instances"].empty());
}

TEST_CASE("e2e: two runs on one host: the finish stop of one ends its own job, never the other run's") {
    Env env;
    // One sshd stands in for both pods (one host, one ~/.bifrost/jobs), as a leased machine, the
    // user's own, or a run resumed there while another uses it. Both runs' jobs hang (kSlowJobNproc).
    tests::SshdFixture sshd({pod_with_fakes(env, {{"nproc", kSlowJobNproc}})});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 2}});
    tests::EnvGuard key("RUNPOD_API_KEY", "test-key-runpod"), url("RUNPOD_BASE_URL", emu.base_url());
    auto args_for = [&](const std::string & name, const std::string & policy) {
        auto args = sshd_backed_args(env, cloud_config(env, "runpod", policy), sshd);
        for (size_t i = 0; i + 1 < args.size(); ++i)
            if (args[i] == "--output-dir") args[i + 1] = env.dir / name;
        return args;
    };
    auto run_in = [&](const std::string & name) {
        std::string found;
        std::error_code ec;
        for (const auto & e : fs::directory_iterator(env.dir / name, ec)) found = e.path().string();
        return found;
    };
    // Whatever happens below, no job of the test is left sleeping on the host.
    struct KillJobsAtEnd {
        std::string jobs;
        ~KillJobsAtEnd() {
            std::error_code ec;
            for (const auto & e : fs::directory_iterator(jobs, ec)) kill_job(e.path().string());
        }
    } kill_jobs_at_end{env.dir / "pod-home/.bifrost/jobs"};
    // Run A, in the background, until its job runs.
    auto a = common::ChildProcess::spawn(args_for("runs-a", "  on_failure: terminate\n  max_duration: 20m\n  heartbeat_timeout: 5m\n"),
                                         {.stdout_path = env.dir / "a-out.txt", .stderr_path = env.dir / "a-err.txt", .new_session = true});
    std::string run_a;
    auto until = std::chrono::steady_clock::now() + 1200s;
    std::string started;  // the name A's state.json records its analysis job under
    while (started.empty() && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(200ms);
        run_a = run_in("runs-a");
        if (run_a.empty() || !journal_has(run_a, "run", "start")) continue;
        const auto st = state_of(run_a);
        if (st.contains("jobs"))
            for (const auto & [name, job] : st["jobs"].items())
                if (name.rfind("analysis", 0) == 0) started = name;
    }
    INFO(tests::read_file(env.dir / "a-err.txt"));
    REQUIRE(!run_a.empty());
    REQUIRE(!started.empty());
    CHECK(started == analysis_job_name(run_a));  // its own name on the host, with its run id
    const std::string job_a = env.dir / ("pod-home/.bifrost/jobs/" + started);
    until = std::chrono::steady_clock::now() + 60s;
    while (!job_running(job_a) && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(100ms);
    REQUIRE(job_running(job_a));
    // Run B on the same host: its job outlives its max_duration of 20 s, and its finish stops it.
    auto b = common::run_process(args_for("runs-b", "  on_failure: terminate\n  max_duration: 20s\n  heartbeat_timeout: 5m\n"), cloud_opts(emu, "runpod"));
    const std::string run_b = run_in("runs-b");
    REQUIRE(!run_b.empty());
    const std::string job_b = analysis_job_dir(env, run_b);
    const bool a_survived = job_running(job_a), b_left = job_running(job_b);
    if (b_left) kill_job(job_b);
    INFO(b.err);
    CHECK(b.exit_code == 7);  // its own run step's deadline
    CHECK(analysis_job_name(run_a) != analysis_job_name(run_b));
    CHECK(b.err.find("stopping job " + analysis_job_name(run_b)) != std::string::npos);
    CHECK(b.err.find("stopping job " + started) == std::string::npos);
    CHECK_FALSE(b_left);
    CHECK(fs::exists(job_b + "/killed"));
    CHECK(a_survived);
    CHECK_FALSE(fs::exists(job_a + "/killed"));
    // A is still on its run step, and its Ctrl-C stops its own job.
    ::kill(a.pid(), SIGINT);
    auto code = a.wait_for(180s);
    const bool a_left = job_running(job_a);
    if (a_left) kill_job(job_a);
    REQUIRE(code.has_value());
    CHECK(*code == 130);
    CHECK_FALSE(a_left);
    CHECK(state_of(run_a)["jobs"][started]["state"] == "killed");
    CHECK(emu.state()["instances"].empty());
}

TEST_CASE("e2e: --resume of a run directory from before the job names carried the run id follows its job under the bare name") {
    Env env;
    fs::create_directories(env.dir / "pod-home");
    tests::SshdFixture sshd({"SetEnv HOME=" + env.dir / "pod-home"});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 2}});
    auto args = sshd_backed_args(
        env, cloud_config(env, "runpod", "  on_failure: terminate\n  max_duration: 1h\n  heartbeat_timeout: 10m\n"), sshd);
    for (const char * a : {"--test-sigkill-at-step", "run"}) args.push_back(a);
    auto r = common::run_process(args, cloud_opts(emu, "runpod"));
    INFO(r.err);
    REQUIRE(r.exit_code == 128 + SIGKILL);
    const std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    const std::string run_id = json_file(run + "/run.json")["run_id"];
    // As an earlier version left it: its jobs under their bare roles, in state.json and on the host,
    // the analysis job started (here one that prints a line and fails, so that following it shows).
    const std::string jobs = env.dir / "pod-home/.bifrost/jobs";
    fs::rename(jobs + "/bootstrap-" + run_id, jobs + "/bootstrap");
    auto st = state_of(run);
    REQUIRE(st["jobs"].contains("bootstrap-" + run_id));
    st["jobs"]["bootstrap"] = st["jobs"]["bootstrap-" + run_id];
    st["jobs"].erase("bootstrap-" + run_id);
    st["jobs"]["analysis"] = {{"offset", 0}};
    tests::write_file(run + "/state.json", st.dump(2));
    auto started = common::run_process({BIFROST_BIN, "--key", sshd.client_key(), "--known-hosts", env.dir / "bifrost-known-hosts", "run",
                                        "--detach", "--name", "analysis", sshd.user() + "@127.0.0.1:" + std::to_string(sshd.port()), "--",
                                        "sh", "-c", "echo the job an older version started; exit 3"},
                                       run_opts());
    INFO(started.err);
    REQUIRE(started.exit_code == 0);
    auto resume = resume_args(env, run);
    for (const std::string & a : {std::string("--no-gpu-check"), std::string("--ssh-key"), sshd.client_key()}) resume.push_back(a);
    auto again = common::run_process(resume, cloud_opts(emu, "runpod"));
    INFO(again.err);
    CHECK(again.exit_code == 8);  // that job's failure, followed to its end
    CHECK(again.err.find("run (extract + analyze): failed (exit 3)") != std::string::npos);
    CHECK(tests::read_file(run + "/logs/analysis.log") == "the job an older version started\n");
    CHECK_FALSE(fs::exists(jobs + "/analysis-" + run_id));  // no second job was started under the new name
    CHECK(journal_has(run, "bootstrap", "skipped"));
    CHECK(journal_has(run, "finish", "done"));
    CHECK(emu.state()["instances"].empty());
}

namespace {

// A stand-in `tail` for the pod: the first `drops` reads of the results' outliers.json (the pull's
// file reads are `tail -c +OFFSET`) send up to 100 bytes and then kill the sshd process serving
// the connection, as a network blip would drop it; later reads are the real tail's.
std::string tail_dropping_pull(int drops) {
    return "case \"$*\" in\n"
           "*outliers.json*)\n"
           "  n=$(cat \"$HOME/pull-drops\" 2>/dev/null || echo 0)\n"
           "  if [ \"$n\" -lt " + std::to_string(drops) + " ]; then\n"
           "    echo $((n + 1)) > \"$HOME/pull-drops\"\n"
           "    PATH=${PATH#*:} tail \"$@\" | head -c 100\n"
           "    sleep 1\n"  // the bytes reach the client before the drop
           "    p=$$\n"
           "    while [ \"$p\" -gt 1 ]; do\n"
           "      p=$(sed -n 's/^PPid:[[:space:]]*//p' /proc/$p/status)\n"
           "      if [ \"$(cat /proc/$p/comm)\" = sshd ]; then kill -9 \"$p\"; break; fi\n"
           "    done\n"
           "    sleep 30\n"
           "    exit 1\n"
           "  fi ;;\n"
           "esac\n"
           "PATH=${PATH#*:} exec tail \"$@\"\n";
}

// A stand-in `head`: the real one with its stdout unbuffered (stdbuf), so each chunk is passed on
// as it comes. GNU head's stdio buffer holds a small file's bytes until the end, so before a drop
// nothing of it would reach the client and the pulls above would have nothing to resume from.
const char * const kUnbufferedHead = "PATH=${PATH#*:} exec stdbuf -o0 head \"$@\"\n";

}  // namespace

TEST_CASE("e2e: a connection dropped twice while a successful run's results are pulled is reconnected, and the results arrive whole") {
    Env env;
    tests::SshdFixture sshd({pod_with_fakes(env, {{"tail", tail_dropping_pull(2)}, {"head", kUnbufferedHead}})});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 2}});
    auto args = sshd_backed_args(env, cloud_config(env, "runpod", "  on_success: terminate\n  on_failure: terminate\n  max_duration: 1h\n  heartbeat_timeout: 5m\n"), sshd);
    auto r = common::run_process(args, cloud_opts(emu, "runpod"));
    INFO(r.err);
    CHECK(tests::read_file(env.dir / "pod-home/pull-drops") == "2\n");  // the connection really dropped twice
    CHECK(r.exit_code == 0);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    CHECK(journal_has(run, "pull", "done"));
    CHECK(r.err.find("reconnecting to resume the pull (attempt 3 of 4)") != std::string::npos);
    CHECK(r.err.find("checksum mismatch") == std::string::npos);  // resumed from what arrived, never restarted
    CHECK(outlier_dims(run) == std::set<int>{7, 42});  // verified by checksum, parsed: whole
    CHECK_FALSE(fs::exists(run + "/results/analysis/outliers.json.bifrost-part"));
    CHECK(state_of(run)["end"]["proven_gone"] == true);
    CHECK(emu.state()["instances"].empty());
}

TEST_CASE("e2e: when every pull attempt of the results drops, the run fails naming the pull, keeps what arrived, and still ends the pod") {
    Env env;
    tests::SshdFixture sshd({pod_with_fakes(env, {{"tail", tail_dropping_pull(1000)}, {"head", kUnbufferedHead}})});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 2}});
    auto args = sshd_backed_args(env, cloud_config(env, "runpod", "  on_success: terminate\n  on_failure: terminate\n  max_duration: 1h\n  heartbeat_timeout: 5m\n"), sshd);
    auto r = common::run_process(args, cloud_opts(emu, "runpod"));
    INFO(r.err);
    CHECK(r.exit_code == 6);  // network: not a success, and not leak risk
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    CHECK(journal_has(run, "pull", "failed"));
    CHECK(r.err.find("pull: the connection to the instance failed 4 times") != std::string::npos);
    CHECK(r.err.find("What arrived is kept in " + run + "/results") != std::string::npos);
    // Of outliers.json what came is kept (each attempt resumed from it and added its 100 bytes).
    const std::string part = run + "/results/analysis/outliers.json.bifrost-part";
    REQUIRE(fs::exists(part));
    CHECK(fs::file_size(part) >= 200);
    CHECK(state_of(run)["end"]["proven_gone"] == true);
    CHECK(emu.state()["instances"].empty());
}

TEST_CASE("e2e: --keep-running under policy.max_cost_usd keeps the pod only until the cost cap is reached") {
    Env env;
    tests::SshdFixture sshd({pod_with_fakes(env, {})});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 2}});
    // $0.20 at the emulator's cheapest offer (well under $1/h) lasts minutes, far short of the 2 h keep
    // and of max_duration + 30 min.
    auto args = sshd_backed_args(env, cloud_config(env, "runpod", "  keep_ttl: 2h\n  max_duration: 1h\n  max_cost_usd: 0.2\n  heartbeat_timeout: 5m\n"), sshd);
    args.push_back("--keep-running");
    auto r = common::run_process(args, cloud_opts(emu, "runpod"));
    INFO(r.err);
    CHECK(r.exit_code == 0);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    auto st = state_of(run);
    REQUIRE(st["end"]["action"] == "keep");
    const double price = st["instance"]["price_usd_per_hour"];
    REQUIRE(price > 0);
    const double cap_at = st["instance"]["created_unix"].get<double>() + 0.2 / price * 3600;
    REQUIRE(0.2 / price * 3600 < 3600 + 1800);  // the cap binds
    CHECK(st["end"]["keep_until_unix"].get<double>() == doctest::Approx(cap_at).epsilon(1e-9));
    // The watchdog was armed with the cap as its deadline from the start, not max_duration + 30 min:
    // a run whose driver dies bills no further than the cap either. The name's deadline (RunPod's
    // terminateAfter) is the cap at the offered price, counted from the create's call.
    CHECK(st["watchdog"]["deadline_unix"].get<double>() == doctest::Approx(cap_at).epsilon(1e-9));
    const std::string name = st["instance"]["name"];
    REQUIRE(name.rfind("-dl") != std::string::npos);
    CHECK(std::stod(name.substr(name.rfind("-dl") + 3)) <= cap_at + 1);
    CHECK(st["end"]["watchdog_extended"] == true);
    // The deadline the pod's watchdog enforces.
    std::string remote = env.dir / ("pod-home/toolkit/runs/" + json_file(run + "/run.json")["run_id"].get<std::string>());
    std::string conf = tests::read_file(remote + "/watchdog.conf");
    auto at = conf.find("DEADLINE_UNIX=");
    REQUIRE(at != std::string::npos);
    CHECK(std::stod(conf.substr(at + 14)) <= cap_at + 1);
    CHECK(r.err.find("policy.max_cost_usd is reached then") != std::string::npos);
    CHECK(emu.state()["instances"].size() == 1);  // kept; the test folder's removal takes the watchdog's config, and it exits
}

TEST_CASE("e2e: a keep whose watchdog cannot be moved to the keep deadline states the deadline that really ends the instance") {
    Env env;
    // Writing the watchdog's config once it runs (watchdog.conf.pid exists: the watchdog step is
    // over) fails on the pod, as on a full disk: finish cannot move the watchdog to the keep deadline.
    tests::SshdFixture sshd({pod_with_fakes(env, {{"cat", "out=$(readlink /proc/$$/fd/1)\n"
                                                          "case \"$out\" in */watchdog.conf*) if [ -f \"${out%/*}/watchdog.conf.pid\" ]; then\n"
                                                          "  echo 'cat: write error: No space left on device' >&2; exit 1; fi ;; esac\n"
                                                          "PATH=${PATH#*:} exec cat \"$@\"\n"}})});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 2}});
    std::string cfg = cloud_config(env, "runpod", "  on_failure: keep\n  keep_ttl: 10m\n  max_duration: 1h\n  heartbeat_timeout: 5m\n");
    std::string text = tests::read_file(cfg);
    text.replace(text.find("vocab: 128"), 10, "vocab: 5000");  // extract refuses the tokens: the run fails after the watchdog
    tests::write_file(cfg, text);
    auto r = common::run_process(sshd_backed_args(env, cfg, sshd), cloud_opts(emu, "runpod"));
    INFO(r.err);
    CHECK(r.exit_code == 8);
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    auto st = state_of(run);
    REQUIRE(st["watchdog"].is_object());
    REQUIRE(st["end"]["action"] == "keep");
    CHECK(st["end"]["watchdog_extended"] == false);
    // The deadline recorded is the one that ends the instance: the earlier of the watchdog's (as
    // armed) and the one in its name, about 1 h 30 min after the create; not the keep's 10 min.
    const std::string name = st["instance"]["name"];
    REQUIRE(name.rfind("-dl") != std::string::npos);
    const double real_end = std::min(std::stod(name.substr(name.rfind("-dl") + 3)), st["watchdog"]["deadline_unix"].get<double>());
    const double keep_until = st["end"]["keep_until_unix"];
    CHECK(keep_until == doctest::Approx(real_end).epsilon(1e-9));
    const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    CHECK(keep_until > now + 60 * 60);
    const std::string reason = st["end"]["reason"];
    INFO(reason);
    CHECK(reason.find("on_failure: keep, but the watchdog could not be moved to the keep deadline") == 0);
    CHECK(reason.find("5m00s after the last heartbeat") != std::string::npos);
    CHECK(r.err.find("the watchdog and `broker sweep` end it then") == std::string::npos);
    // The pod's watchdog config is still the whole one armed (the failed write left it, not an empty
    // file that would end nothing): its deadline is the one stated.
    std::string remote = env.dir / ("pod-home/toolkit/runs/" + json_file(run + "/run.json")["run_id"].get<std::string>());
    std::string conf = tests::read_file(remote + "/watchdog.conf");
    auto at = conf.find("DEADLINE_UNIX=");
    REQUIRE(at != std::string::npos);
    CHECK(std::stod(conf.substr(at + 14)) == doctest::Approx(st["watchdog"]["deadline_unix"].get<double>()).epsilon(1e-9));
    CHECK(emu.state()["instances"].size() == 1);  // kept; the test folder's removal takes the watchdog's config, and it exits
}

TEST_CASE("e2e: a policy.max_cost_usd too small to leave the run any time at the offered prices is refused before renting") {
    Env env;
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    // $0.05 buys a few minutes of the cheapest offer, less than the 15 min kept to pull and finish
    // inside the instance's end (which is where the cap is reached).
    auto r = common::run_process(base_args(env, cloud_config(env, "runpod", "  max_duration: 1h\n  max_cost_usd: 0.05\n")),
                                 cloud_opts(emu, "runpod"));
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("policy.max_cost_usd: $0.05 buys") != std::string::npos);
    CHECK(r.err.find("no time would be left to run the job") != std::string::npos);
    for (const auto & q : emu.state()["requests"]) CHECK(q.value("action", "") != "create");
    CHECK(emu.state()["instances"].empty());
    std::string run = only_run_dir(env);
    REQUIRE(!run.empty());
    CHECK_FALSE(state_of(run).contains("instance"));
}

TEST_CASE("e2e: under a binding policy.max_cost_usd, a create that falls through to a pricier offer gets the deadline that offer's price allows") {
    Env env;
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    // The first create (the cheapest offer) finds no capacity, as when the last machine of that
    // offer was taken between the offers step and the rent: the run gets the next offer, which costs more.
    emu.inject({{"kind", "capacity"}, {"match", {{"action", "create"}}}, {"count", 1}});
    constexpr double kCap = 0.4;  // binds at every offer here (it buys under 1 h of max_duration + 30 min)
    auto args = base_args(env, cloud_config(env, "runpod", "  max_duration: 1h\n  max_cost_usd: 0.4\n"));
    for (const char * a : {"--test-sigkill-at-step", "create:answered"}) args.push_back(a);  // only the create matters here
    auto r = common::run_process(args, cloud_opts(emu, "runpod"));
    INFO(r.err);
    REQUIRE(r.exit_code == 128 + SIGKILL);
    auto es = emu.state();
    REQUIRE(es["instances"].size() == 1);
    const auto & pod = es["instances"][0];
    const double price = pod["costPerHr"];
    // It really fell through: the pod costs more than the cheapest offer the offers step recorded.
    double cheapest = 1e9;
    const auto st = state_of(only_run_dir(env));
    for (const auto & o : st["offers"]) cheapest = std::min(cheapest, o["price_usd_per_hour_total"].get<double>());
    REQUIRE(price > cheapest + 0.05);
    double created = 0;
    for (const auto & q : es["requests"])
        if (q.value("action", "") == "create") created = q["time"];  // the last create: the one that rented
    REQUIRE(created > 0);
    // The deadline in its name (RunPod's terminateAfter, enforced by RunPod itself) is no later than
    // where the cap is reached at the price rented (computed at the cheapest price, it was minutes later).
    const std::string name = pod["name"];
    REQUIRE(name.rfind("-dl") != std::string::npos);
    const double deadline = std::stod(name.substr(name.rfind("-dl") + 3));
    CHECK(deadline <= created + kCap / price * 3600 + 1);
    CHECK(deadline > created + 15 * 60);  // and it still leaves the run time (the lifetime at its bound)
    CHECK(r.err.find("trying the next offer") != std::string::npos);
}
