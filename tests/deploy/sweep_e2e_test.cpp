// deploy_and_analyze --sweep end to end on loopback: the real program, its members as real child
// runs (each an ordinary run directory), the `local` provider (a real sshd per instance) and the
// RunPod emulator (instances backed by a real sshd), the remote half run for real on tiny fixtures.
// SERIAL with the other e2e tests (same remote build cache, same CPU).
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/file_lock.h"
#include "common/shell_quote.h"
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

struct SweepEnv : TestDir {
    SweepEnv() : TestDir("deploy-sweep-e2e") {}
    std::string out() const { return dir / "sweeps"; }
    std::string sweep_dir(const std::string & name) const { return out() + "/" + name; }
};

std::vector<std::string> sweep_args(const SweepEnv & env, const std::string & file) {
    std::vector<std::string> args{DEPLOY_BIN, "--sweep", file};
    for (const auto & a : env.state_args()) args.push_back(a);
    return args;
}

// configs/sweeps/rehearsal.yaml with its output under the test's folder and `replace` applied.
std::string rehearsal_sweep(const SweepEnv & env, const std::string & from = "", const std::string & to = "",
                            const std::string & name = "sweep.yaml") {
    std::string text = tests::read_file(std::string(TOOLKIT_SOURCE_DIR) + "/configs/sweeps/rehearsal.yaml");
    text.replace(text.find("sweep:\n"), 7, "sweep:\n  output_dir: " + env.out() + "\n");
    if (!from.empty()) {
        auto at = text.find(from);
        REQUIRE(at != std::string::npos);
        text.replace(at, from.size(), to);
    }
    std::string path = env.dir / name;
    tests::write_file(path, text);
    return path;
}

// What `broker instances list` reports (the provider's listing joined with the ledger).
nlohmann::json broker_list(const SweepEnv & env, const std::vector<std::string> & extra_env = {}) {
    common::RunOptions o = run_opts();
    o.extra_env.insert(o.extra_env.end(), extra_env.begin(), extra_env.end());
    auto r = common::run_process({BROKER_BIN, "--state-dir", env.state(), "--ledger", env.state() + "/ledger.sqlite", "instances", "list",
                                  "--json"},
                                 o);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return nlohmann::json::parse(r.out);
}

std::string member_outcome(const nlohmann::json & summary, const std::string & id) {
    for (const auto & m : summary.at("members"))
        if (m.value("member", "") == id) return m.value("outcome", "");
    return "(absent)";
}

// Pods of the emulated clouds, each backed by its own real sshd with its own HOME (members running at
// once must not share ~/toolkit/src), and its authorized_keys written by the emulator from the key
// the create (RunPod's PUBLIC_KEY) or key attach (Vast) carried.
struct Pods {
    Pods(const SweepEnv & env, int n) {
        for (int i = 0; i < n; ++i) {
            std::string home = env.dir / ("pod-home-" + std::to_string(i));
            fs::create_directories(home);
            sshd.push_back(std::make_unique<tests::SshdFixture>(std::vector<std::string>{"SetEnv HOME=" + home}));
        }
    }
    // The emulator's n-th created instance is served by sshd[which[n mod size]].
    void back(tests::Emulator & emu, const std::vector<int> & which) {
        nlohmann::json backends = nlohmann::json::array();
        for (int i : which)
            backends.push_back({{"port", sshd[i]->port()}, {"authorized_keys", sshd[i]->server().dir() + "/authorized_keys"}});
        emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_user", sshd[0]->user()}, {"boot_polls", 1}, {"ssh_backends", backends}});
    }
    // On how many pods this public key line is authorised.
    int authorized(const std::string & key_line) const {
        int n = 0;
        for (const auto & s : sshd) n += tests::read_file(s->server().dir() + "/authorized_keys").find(key_line) != std::string::npos;
        return n;
    }
    std::vector<std::unique_ptr<tests::SshdFixture>> sshd;
};

// The member's model block is followed by a resources override that puts it on `provider`.
std::string member_on(std::string text, const std::string & id, const std::string & provider) {
    auto at = text.find("  - id: " + id + "\n");
    REQUIRE(at != std::string::npos);
    at = text.find("      dtype: f32\n", at);
    REQUIRE(at != std::string::npos);
    text.insert(at + std::string("      dtype: f32\n").size(),
                "    resources: {providers: [" + provider + "], gpu_count: 1, max_price_usd_per_hour: 5, min_vram_gb: 16, disk_gb: 20}\n");
    return text;
}

common::RunOptions cloud_opts(const tests::Emulator & runpod, const tests::Emulator & vast) {
    auto o = run_opts();
    o.extra_env.insert(o.extra_env.end(), {"RUNPOD_API_KEY=test-key-runpod", "RUNPOD_BASE_URL=" + runpod.base_url(),
                                           "VAST_API_KEY=test-key-vast", "VAST_BASE_URL=" + vast.base_url()});
    return o;
}

// The same, as this process's environment (for a sweep started with ChildProcess::spawn).
struct CloudEnv {
    CloudEnv(const tests::Emulator & runpod, const tests::Emulator & vast)
        : a("RUNPOD_API_KEY", "test-key-runpod"), b("RUNPOD_BASE_URL", runpod.base_url()), c("VAST_API_KEY", "test-key-vast"),
          d("VAST_BASE_URL", vast.base_url()), e("BROKER_STATE_DIR", ""), f("OMP_NUM_THREADS", "2") {}
    tests::EnvGuard a, b, c, d, e, f;
};

// The two emulated clouds, their pods backed by `pods` (RunPod's by the listed sshds, Vast's by the
// others), and the environment that points broker at them.
struct Clouds {
    Clouds(const SweepEnv & env, int n_pods, const std::vector<int> & runpod_pods, const std::vector<int> & vast_pods) : pods(env, n_pods) {
        pods.back(runpod, runpod_pods);
        if (!vast_pods.empty()) pods.back(vast, vast_pods);
    }
    common::RunOptions opts() const { return cloud_opts(runpod, vast); }
    // The sweep as a process of its own (to signal it); its output in out.txt / err.txt.
    common::ChildProcess start(const SweepEnv & env, const std::vector<std::string> & args) const {
        CloudEnv e(runpod, vast);  // inherited by the sweep
        return common::ChildProcess::spawn(args, {.stdout_path = env.dir / "out.txt", .stderr_path = env.dir / "err.txt", .new_session = true});
    }
    Pods pods;
    tests::Emulator runpod{"runpod", {.api_key = "test-key-runpod"}};
    tests::Emulator vast{"vast", {.api_key = "test-key-vast"}};
};

int creates(const nlohmann::json & emulator_state) {
    int n = 0;
    for (const auto & q : emulator_state["requests"]) n += q.value("action", "") == "create";
    return n;
}

// First and last journal event of a member's run.
std::pair<double, double> journal_span(const std::string & run_dir) {
    std::ifstream in(run_dir + "/journal.jsonl");
    std::string line;
    double first = 0, last = 0;
    while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded()) continue;
        double t = j.value("unix_s", 0.0);
        if (first == 0) first = t;
        last = std::max(last, t);
    }
    return {first, last};
}

bool overlapped(const std::string & root, const std::string & a, const std::string & b) {
    auto x = journal_span(root + "/" + a), y = journal_span(root + "/" + b);
    return x.first < y.second && y.first < x.second;
}

}  // namespace

TEST_CASE("sweep e2e: the rehearsal sweep runs 3 fixture families in parallel on the local provider and writes the combined report") {
    SweepEnv env;
    std::string file = rehearsal_sweep(env);
    // Under a pseudo-terminal (script(1)), as a user at a terminal runs it: the live table is redrawn
    // in place (cursor up over the header and three members, clear to the end), not printed as lines.
    std::string command;
    for (const auto & a : sweep_args(env, file)) command += (command.empty() ? "" : " ") + common::sh_quote(a);
    auto r = common::run_process({"script", "-qfec", command, "/dev/null"}, run_opts());
    INFO(r.out);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("$ SO FAR") != std::string::npos);
    CHECK(r.out.find("\x1b[4A\x1b[J") != std::string::npos);
    CHECK(r.out.find("sweep: olmoe-tiny: running") == std::string::npos);
    std::string root = env.sweep_dir("rehearsal");
    // Each member is an ordinary run directory with exactly its own planted dims.
    CHECK(outlier_dims(root + "/olmoe-tiny") == std::set<int>{7, 42});
    CHECK(outlier_dims(root + "/qwen3-tiny") == std::set<int>{5, 30});
    CHECK(outlier_dims(root + "/mixtral-tiny") == std::set<int>{11});
    for (const char * m : {"olmoe-tiny", "qwen3-tiny", "mixtral-tiny"}) {
        CHECK_MESSAGE(journal_has(root + "/" + m, "finish", "done"), m);
        CHECK(json_file(root + "/" + m + "/state.json")["end"]["proven_gone"] == true);
        auto inspect = json_file(root + "/" + m + "/results/inspect.json");
        CHECK(inspect["params_total"].get<double>() > 0);
    }
    // Members overlapped: max_parallel 3, starts 2 s apart, each takes longer than that.
    auto start_of = [&](const std::string & m) { return json_file(root + "/" + m + "/run.json")["started_unix"].get<double>(); };
    auto finish_of = [&](const std::string & m) { return fs::last_write_time(root + "/" + m + "/state.json"); };
    CHECK(start_of("mixtral-tiny") - start_of("olmoe-tiny") >= 2.0);
    CHECK(finish_of("olmoe-tiny") > fs::last_write_time(root + "/mixtral-tiny/run.json"));
    CHECK(local_instances(env) == 0);
    // The combined report: every member, parameters from inspect.json, compared against total and active.
    std::string report = tests::read_file(root + "/report.md");
    CHECK(report.find("| olmoe-tiny | fixture:olmoe | olmoe | succeeded |") != std::string::npos);
    CHECK(report.find("| mixtral-tiny | fixture:mixtral | mixtral | succeeded |") != std::string::npos);
    CHECK(report.find("## Outliers vs active parameters") != std::string::npos);
    CHECK(fs::exists(root + "/report/total/comparison.json"));
    CHECK(fs::exists(root + "/report/active/comparison.json"));
    // The per-model table (analysis's medians, cost, wall time) and the report's own plots.
    CHECK(report.find("| member | outliers | mean layer % | median layer % |") != std::string::npos);
    for (const char * plot : {"cost_per_model", "wall_time_per_model", "median_pct_vs_total", "median_pct_vs_active"}) {
        CHECK_MESSAGE(fs::exists(root + "/report/plots/" + plot + ".png"), plot);
        CHECK_MESSAGE(fs::exists(root + "/report/plots/" + plot + ".svg"), plot);
        CHECK_MESSAGE(report.find(std::string("report/plots/") + plot + ".png") != std::string::npos, plot);
    }
    auto cmp = json_file(root + "/report/active/comparison.json");
    CHECK(cmp.dump().find("olmoe fixture") != std::string::npos);
    auto summary = json_file(root + "/summary.json");
    CHECK(summary["exit_code"] == 0);
    CHECK(member_outcome(summary, "qwen3-tiny") == "succeeded");
    // The same command again: everything finished, nothing runs again.
    std::string run_id = json_file(root + "/olmoe-tiny/run.json")["run_id"];
    auto again = common::run_process(sweep_args(env, file), run_opts());
    CHECK(again.exit_code == 0);
    // Not a TTY: a line per member instead of the table.
    CHECK(again.err.find("sweep: olmoe-tiny: succeeded") != std::string::npos);
    CHECK(again.out.find("\x1b[") == std::string::npos);
    CHECK(json_file(root + "/olmoe-tiny/run.json")["run_id"] == run_id);
    CHECK(member_outcome(json_file(root + "/summary.json"), "olmoe-tiny") == "succeeded (earlier)");
}

TEST_CASE("sweep e2e: against the RunPod and Vast emulators one member falls through a capacity error, one fails in extract and is terminated, --retry-failed completes it") {
    SweepEnv env;
    Clouds clouds(env, 3, {0, 1}, {2});
    auto & runpod = clouds.runpod;
    auto & vast = clouds.vast;
    auto & pods = clouds.pods;
    runpod.inject({{"kind", "capacity"}, {"count", 1}});  // the first create is refused: the broker takes the next offer
    auto make = [&](const std::string & vocab, const std::string & name) {
        std::string text = tests::read_file(rehearsal_sweep(env, "", "", name));
        // qwen3-tiny's tokens go past its fixture's vocabulary of 128: extract refuses them.
        auto at = text.find("      dtype: f32\n  - id: mixtral-tiny");
        REQUIRE(at != std::string::npos);
        text.insert(at + std::string("      dtype: f32\n").size(), "    data: {synthetic_tokens: {vocab: " + vocab + ", seed: 1}}\n");
        text = member_on(text, "olmoe-tiny", "runpod");
        text = member_on(text, "mixtral-tiny", "runpod");
        text = member_on(text, "qwen3-tiny", "vast");
        tests::write_file(env.dir / name, text);
        return std::string(env.dir / name);
    };
    // No --ssh-key: every member makes its own key and the emulators install it on the member's pod,
    // as the clouds do with the key a create carries; the three members run at once.
    auto args = sweep_args(env, make("5000", "bad.yaml"));
    args.push_back("--no-gpu-check");
    auto o = clouds.opts();
    auto r = common::run_process(args, o);
    INFO(r.err);
    CHECK(r.exit_code == 8);  // the failed member's exit code (remote failure)
    std::string root = env.sweep_dir("rehearsal");
    INFO("qwen3-tiny: " << tests::read_file(root + "/qwen3-tiny.log"));
    auto summary = json_file(root + "/summary.json");
    CHECK(member_outcome(summary, "olmoe-tiny") == "succeeded");
    CHECK(member_outcome(summary, "qwen3-tiny") == "failed");
    CHECK(member_outcome(summary, "mixtral-tiny") == "succeeded");
    CHECK(outlier_dims(root + "/olmoe-tiny") == std::set<int>{7, 42});
    CHECK(outlier_dims(root + "/mixtral-tiny") == std::set<int>{11});
    CHECK(tests::read_file(root + "/qwen3-tiny/logs/analysis.log").find("outside the vocabulary") != std::string::npos);
    auto failed_state = json_file(root + "/qwen3-tiny/state.json");
    CHECK(failed_state["instance"]["provider"] == "vast");
    CHECK(failed_state["end"]["action"] == "terminate");  // its policy: on_failure terminate
    CHECK(failed_state["end"]["proven_gone"] == true);
    // Members overlapped: each had its own pod (own sshd, own key) at the same time.
    CHECK(overlapped(root, "olmoe-tiny", "qwen3-tiny"));
    CHECK(overlapped(root, "olmoe-tiny", "mixtral-tiny"));
    for (const char * m : {"olmoe-tiny", "qwen3-tiny", "mixtral-tiny"}) {
        std::string pub = tests::read_file(root + "/" + m + "/ssh/id_ed25519.pub");
        CHECK_MESSAGE(pods.authorized(pub.substr(0, pub.find('\n'))) == 1, m);  // its key, on exactly one pod
    }
    // The emulators' own lists: nothing left; the failed pod is among the terminated.
    auto rs = runpod.state(), vs = vast.state();
    CHECK(rs["instances"].empty());
    CHECK(vs["instances"].empty());
    CHECK(rs["terminated"].size() == 2);
    REQUIRE(vs["terminated"].size() == 1);
    CHECK(vs["terminated"][0]["id"].dump() == failed_state["instance"]["id"].get<std::string>());
    CHECK(creates(rs) == 3);  // one refused for capacity, then two pods
    CHECK(creates(vs) == 1);
    CHECK(fs::exists(root + "/report.md"));
    CHECK(tests::read_file(root + "/report.md").find("| qwen3-tiny | fixture:qwen3 | qwen3 | failed |") != std::string::npos);

    // Fixed, and only the failed member runs again.
    std::string olmoe_id = json_file(root + "/olmoe-tiny/run.json")["run_id"];
    args[2] = make("128", "fixed.yaml");
    args.push_back("--retry-failed");
    auto r2 = common::run_process(args, o);
    INFO(r2.err);
    CHECK(r2.exit_code == 0);
    auto s2 = json_file(root + "/summary.json");
    CHECK(member_outcome(s2, "qwen3-tiny") == "succeeded");
    CHECK(member_outcome(s2, "olmoe-tiny") == "succeeded (earlier)");
    CHECK(json_file(root + "/olmoe-tiny/run.json")["run_id"] == olmoe_id);
    CHECK(outlier_dims(root + "/qwen3-tiny") == std::set<int>{5, 30});
    bool kept_aside = false;
    for (const auto & e : fs::directory_iterator(root)) kept_aside = kept_aside || e.path().filename().string().rfind("qwen3-tiny.failed-", 0) == 0;
    CHECK(kept_aside);
    rs = runpod.state();
    vs = vast.state();
    CHECK(rs["instances"].empty());
    CHECK(vs["instances"].empty());
    CHECK(creates(rs) == 3);
    CHECK(vs["terminated"].size() == 2);
}

TEST_CASE("sweep e2e: Ctrl-C mid-sweep stops every member, each instance is proven gone, the summary says what finished") {
    SweepEnv env;
    Clouds clouds(env, 1, {0}, {});
    // Two members at a time (olmoe-tiny on local, qwen3-tiny on a RunPod pod): Ctrl-C while both are
    // on their instances finds the third not started.
    std::string file = rehearsal_sweep(env, "max_parallel: 3", "max_parallel: 2");
    std::string text = member_on(tests::read_file(file), "qwen3-tiny", "runpod");
    // olmoe-tiny gets a long run (about a minute here), so it is still on its instance when the pod
    // member reaches its push even on a slow CI machine; otherwise it can finish first, free its slot,
    // and mixtral-tiny starts before the Ctrl-C (seen in CI).
    auto olmoe = text.find("  - id: olmoe-tiny\n");
    REQUIRE(olmoe != std::string::npos);
    text.insert(olmoe + std::string("  - id: olmoe-tiny\n").size(), "    data: {num_sequences: 4000}\n");
    tests::write_file(file, text);
    auto args = sweep_args(env, file);
    args.push_back("--no-gpu-check");
    auto o = clouds.opts();
    auto child = clouds.start(env, args);
    std::string root = env.sweep_dir("rehearsal");
    auto end = std::chrono::steady_clock::now() + 1200s;
    bool running = false;  // both on their instances (qwen3-tiny starts 2 s after olmoe-tiny)
    while (std::chrono::steady_clock::now() < end && !running) {
        running = journal_has(root + "/olmoe-tiny", "push", "start") && journal_has(root + "/qwen3-tiny", "push", "start");
        std::this_thread::sleep_for(100ms);
    }
    REQUIRE(running);
    // The premise of the "not started" check below: the third member is still waiting for a slot.
    REQUIRE_FALSE(fs::exists(root + "/mixtral-tiny/journal.jsonl"));
    ::kill(child.pid(), SIGINT);
    auto code = child.wait_for(180s);
    INFO(tests::read_file(env.dir / "err.txt"));
    REQUIRE(code.has_value());
    CHECK(*code == 130);
    auto summary = json_file(root + "/summary.json");
    CHECK(summary["exit_code"] == 130);
    CHECK(member_outcome(summary, "mixtral-tiny") == "not started");
    for (std::string m : {"olmoe-tiny", "qwen3-tiny"}) {
        std::string outcome = member_outcome(summary, m);
        INFO(m << ": " << outcome);
        CHECK((outcome == "interrupted" || outcome == "succeeded"));
        REQUIRE(json_file(root + "/" + m + "/state.json").contains("instance"));
        CHECK(json_file(root + "/" + m + "/state.json")["end"]["proven_gone"] == true);
    }
    std::string out = tests::read_file(env.dir / "out.txt");
    CHECK(out.find("not started") != std::string::npos);
    CHECK(out.find("interrupted") != std::string::npos);
    // Nothing left: the emulator's own list, the local provider, and broker's listing (providers + ledger).
    auto rs = clouds.runpod.state();
    CHECK(rs["instances"].empty());
    CHECK(rs["terminated"].size() == 1);
    CHECK(local_instances(env) == 0);
    auto list = broker_list(env, o.extra_env);
    INFO(list.dump());
    CHECK(list.dump().find("running") == std::string::npos);
    CHECK(list.dump().find("starting") == std::string::npos);
}

TEST_CASE("sweep e2e: an error in the sweep's own loop while a member is on its RunPod pod lets that member finish and end the pod") {
    SweepEnv env;
    Clouds clouds(env, 1, {0}, {});
    std::string file = rehearsal_sweep(env, "max_parallel: 3", "max_parallel: 2");
    std::string text = member_on(tests::read_file(file), "olmoe-tiny", "runpod");
    // olmoe-tiny runs for about a minute, so it is mid-run when the sweep's loop fails.
    auto olmoe = text.find("  - id: olmoe-tiny\n");
    REQUIRE(olmoe != std::string::npos);
    text.insert(olmoe + std::string("  - id: olmoe-tiny\n").size(), "    data: {num_sequences: 4000}\n");
    tests::write_file(file, text);
    // The failure, at a moment the test chooses: qwen3-tiny's run directory is held by another
    // process (as by a member of an earlier sweep), so the sweep waits for it; once it lets go the
    // sweep starts qwen3-tiny, and its log cannot be opened (a directory is in its place): the
    // sweep's own loop throws while olmoe-tiny is on its pod.
    std::string root = env.sweep_dir("rehearsal");
    const std::string held = root + "/qwen3-tiny";
    fs::create_directories(held);
    fs::create_directories(root + "/qwen3-tiny.log");
    auto holder = common::ChildProcess::spawn({"flock", held + "/lock", "sleep", "3600"}, {});
    for (int i = 0; i < 100 && common::run_process({"flock", "-n", held + "/lock", "true"}).exit_code == 0; ++i)
        std::this_thread::sleep_for(20ms);
    REQUIRE(common::run_process({"flock", "-n", held + "/lock", "true"}).exit_code != 0);
    auto args = sweep_args(env, file);
    args.push_back("--no-gpu-check");
    auto o = clouds.opts();
    auto child = clouds.start(env, args);
    auto end = std::chrono::steady_clock::now() + 1200s;
    while (std::chrono::steady_clock::now() < end && !journal_has(root + "/olmoe-tiny", "run", "start") && child.running())
        std::this_thread::sleep_for(100ms);
    INFO(tests::read_file(env.dir / "err.txt"));
    REQUIRE(journal_has(root + "/olmoe-tiny", "run", "start"));
    REQUIRE_FALSE(journal_has(root + "/olmoe-tiny", "finish", "start"));
    // The member's finish starts by asking the provider about its pod: that answer now takes 6 s,
    // so the finish lasts longer than the 2 s the sweep used to give a member before its SIGKILL.
    clouds.runpod.inject({{"kind", "latency"}, {"latency_ms", 6000}, {"match", {{"action", "get"}}}, {"count", 1}});
    holder.stop();
    auto code = child.wait_for(300s);
    std::string err = tests::read_file(env.dir / "err.txt");
    INFO(err);
    INFO("olmoe-tiny: " << tests::read_file(root + "/olmoe-tiny.log"));
    REQUIRE(code.has_value());
    CHECK(*code == 1);  // the loop's own error (an I/O error: EISDIR), printed after the members finished
    CHECK(err.find("qwen3-tiny.log: open: Is a directory") != std::string::npos);
    CHECK(err.find("waiting for 1 member to finish") != std::string::npos);
    CHECK(err.find("olmoe-tiny (step run, instance runpod:") != std::string::npos);
    CHECK(err.find("killed") == std::string::npos);
    // The member went through its whole finish: the slow answer, then terminate and proof.
    auto faults = clouds.runpod.state()["faults"];
    REQUIRE(faults.size() == 1);
    CHECK(faults[0]["fired"] == 1);
    auto st = json_file(root + "/olmoe-tiny/state.json");
    CHECK(st["end"]["action"] == "terminate");
    CHECK(st["end"]["proven_gone"] == true);
    CHECK(journal_has(root + "/olmoe-tiny", "finish", "done"));
    // The summary says what each member did, and the error.
    auto summary = json_file(root + "/summary.json");
    CHECK(summary["exit_code"] == 1);
    CHECK(summary["error"].get<std::string>().find("qwen3-tiny.log") != std::string::npos);
    CHECK(member_outcome(summary, "olmoe-tiny") == "stopped (sweep error)");
    CHECK(member_outcome(summary, "qwen3-tiny") == "not started");
    CHECK(member_outcome(summary, "mixtral-tiny") == "not started");
    // Nothing left: the emulator's own list and broker's listing.
    auto rs = clouds.runpod.state();
    CHECK(rs["instances"].empty());
    CHECK(rs["terminated"].size() == 1);
    auto list = broker_list(env, o.extra_env);
    INFO(list.dump());
    CHECK(list.dump().find("running") == std::string::npos);
    CHECK(list.dump().find("starting") == std::string::npos);
}

TEST_CASE("sweep e2e: a SIGKILLed sweep leaves each member to its own deadline, and the same command then only summarises") {
    SweepEnv env;
    Clouds clouds(env, 2, {0}, {1});
    auto & runpod = clouds.runpod;
    auto & vast = clouds.vast;
    std::string file = rehearsal_sweep(env);
    std::string text = member_on(tests::read_file(file), "qwen3-tiny", "runpod");
    tests::write_file(file, member_on(text, "mixtral-tiny", "vast"));
    auto args = sweep_args(env, file);
    args.push_back("--no-gpu-check");
    auto o = clouds.opts();
    auto child = clouds.start(env, args);
    std::string root = env.sweep_dir("rehearsal");
    const std::vector<std::string> members{"olmoe-tiny", "qwen3-tiny", "mixtral-tiny"};
    auto all = [&](const std::string & step, const std::string & event) {
        for (const auto & m : members)
            if (!journal_has(root + "/" + m, step, event)) return false;
        return true;
    };
    auto end = std::chrono::steady_clock::now() + 1200s;
    while (std::chrono::steady_clock::now() < end && !all("watchdog", "done")) std::this_thread::sleep_for(100ms);
    REQUIRE(all("watchdog", "done"));
    bool finished_before = all("finish", "done");
    ::kill(child.pid(), SIGKILL);
    REQUIRE(child.wait_for(10s).has_value());
    // Every instance carries its own deadline: in its name (broker sweep and the provider listing),
    // in its watchdog, and for RunPod also the provider's own terminateAfter.
    for (const auto & m : members) {
        INFO(m);
        auto st = json_file(root + "/" + m + "/state.json");
        std::string name = st["instance"]["name"];
        auto dl = name.rfind("-dl");
        REQUIRE(dl != std::string::npos);
        double deadline = std::stod(name.substr(dl + 3)), created = st["instance"]["created_unix"];
        CHECK(deadline > created);
        CHECK(deadline <= created + 3600 + 1800 + 60);  // max_duration 1h + room to pull and finish
        CHECK(st["watchdog"]["deadline_unix"].get<double>() > created);
    }
    bool terminate_after = false;
    const auto created = runpod.state();  // kept alive for the loop
    for (const auto & q : created["requests"])
        if (q.value("action", "") == "create") terminate_after = q.dump().find("terminateAfter") != std::string::npos;
    CHECK(terminate_after);
    // The members were not the sweep's to end: they go on and end their own instances.
    CHECK_FALSE(finished_before);
    end = std::chrono::steady_clock::now() + 600s;
    while (std::chrono::steady_clock::now() < end && !all("finish", "done")) std::this_thread::sleep_for(200ms);
    REQUIRE(all("finish", "done"));
    std::this_thread::sleep_for(2s);  // the last child writes its summary after its journal
    CHECK(runpod.state()["instances"].empty());
    CHECK(vast.state()["instances"].empty());
    CHECK(local_instances(env) == 0);
    for (const auto & m : members) CHECK(json_file(root + "/" + m + "/state.json")["end"]["proven_gone"] == true);
    // The same command again rents nothing and reports what the members did on their own.
    auto again = common::run_process(args, o);
    INFO(again.err);
    CHECK(again.exit_code == 0);
    for (const auto & m : members) CHECK(member_outcome(json_file(root + "/summary.json"), m) == "succeeded (earlier)");
    CHECK(creates(runpod.state()) == 1);
}

namespace {

// A Hub stand-in that punishes crowds: every file answer takes `delay_s`, and a request that arrives
// while `cap` others are in flight gets 429 (Retry-After: 1), as the Hub's rate limit does. It
// records the most requests it saw in flight at once and how many 429s it sent, in stats.json.
struct CrowdHub {
    tests::TempDir dir{"crowd-hub"};
    common::ChildProcess server;
    int port = 0;
    CrowdHub(int cap, double delay_s) {
        tests::write_file(dir / "server.py", R"PY(
import http.server, json, os, sys, threading, time
root, cap, delay, statf = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
lock = threading.Lock()
st = {"in_flight": 0, "max_in_flight": 0, "answered_429": 0, "requests": 0}
def save():
    with open(statf + ".tmp", "w") as f: json.dump(st, f)
    os.replace(statf + ".tmp", statf)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with lock:
            st["requests"] += 1
            crowded = st["in_flight"] >= cap
            if crowded: st["answered_429"] += 1
            else:
                st["in_flight"] += 1
                st["max_in_flight"] = max(st["max_in_flight"], st["in_flight"])
            save()
        if crowded:
            self.send_response(429); self.send_header("Retry-After", "1"); self.end_headers(); return
        try:
            time.sleep(delay)
            p = os.path.join(root, self.path.lstrip("/"))
            if not os.path.isfile(p):
                self.send_response(404); self.end_headers(); return
            data = open(p, "rb").read()
            self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
        finally:
            with lock:
                st["in_flight"] -= 1; save()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
save()
print(s.server_address[1], flush=True)
s.serve_forever()
)PY");
        fs::create_directories(dir / "root");
        server = common::ChildProcess::spawn({"python3", dir / "server.py", dir / "root", std::to_string(cap), std::to_string(delay_s),
                                              dir / "stats.json"},
                                             {.stdout_path = dir / "port"});
        for (int i = 0; i < 100 && port == 0; ++i) {
            std::this_thread::sleep_for(50ms);
            std::string p = tests::read_file(dir / "port");
            if (!p.empty() && p.back() == '\n') port = std::stoi(p);
        }
        REQUIRE(port > 0);
    }
    // A fixture checkpoint served as the Hub repo `repo` (revision main).
    void put_fixture(const std::string & repo, const std::vector<std::string> & fixture_args) {
        std::vector<std::string> argv{EXTRACT_BIN, "fixture", "--out", dir / ("root/" + repo + "/resolve/main")};
        argv.insert(argv.end(), fixture_args.begin(), fixture_args.end());
        auto r = common::run_process(argv);
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
    }
    nlohmann::json stats() const { return json_file(dir / "stats.json"); }
};

}  // namespace

TEST_CASE("sweep e2e: max_concurrent_downloads keeps the members' Hub downloads under the Hub's crowd limit") {
    SweepEnv env;
    CrowdHub hub(1, 0.5);  // a second download at the same time is answered 429
    // Repos named for this run: the remote cache keeps a finished download per repo and revision.
    std::string org = "t" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count() % 1000000000);
    hub.put_fixture(org + "/olmoe-a", {"--family", "olmoe", "--layers", "4", "--hidden", "64", "--seed", "1", "--plant", "7,42@0-3"});
    hub.put_fixture(org + "/qwen3-b", {"--family", "qwen3", "--layers", "3", "--hidden", "48", "--seed", "2", "--plant", "5,30@0-2"});
    hub.put_fixture(org + "/mixtral-c", {"--family", "mixtral", "--layers", "2", "--hidden", "32", "--seed", "3", "--plant", "11@0-1"});
    // The rehearsal sweep, its members fetched from the Hub, all three starting at once.
    std::string text = tests::read_file(rehearsal_sweep(env, "download_stagger: 2s", "download_stagger: 0s\n  max_concurrent_downloads: 1"));
    auto swap = [&](const std::string & from, const std::string & to) {
        auto at = text.find(from);
        REQUIRE(at != std::string::npos);
        text.replace(at, from.size(), to);
    };
    swap("fixture: {family: olmoe, layers: 4, hidden: 64, plant: [\"7,42@0-3\"], seed: 1}", "hub: " + org + "/olmoe-a");
    swap("fixture: {family: qwen3, layers: 3, hidden: 48, plant: [\"5,30@0-2\"], seed: 2}", "hub: " + org + "/qwen3-b");
    swap("fixture: {family: mixtral, layers: 2, hidden: 32, plant: [\"11@0-1\"], seed: 3}", "hub: " + org + "/mixtral-c");
    tests::write_file(env.dir / "hub.yaml", text);
    auto o = run_opts();
    o.extra_env.push_back("HF_ENDPOINT=http://127.0.0.1:" + std::to_string(hub.port));
    auto r = common::run_process(sweep_args(env, env.dir / "hub.yaml"), o);
    INFO(r.err);
    std::string root = env.sweep_dir("rehearsal");
    if (r.exit_code != 0)  // the members' own logs say why (they go with the temp dir otherwise)
        for (const char * m : {"olmoe-tiny", "qwen3-tiny", "mixtral-tiny"})
            if (fs::exists(root + "/" + m + ".log")) MESSAGE(m << ".log:\n" << tests::read_file(root + "/" + m + ".log"));
    REQUIRE(r.exit_code == 0);
    CHECK(outlier_dims(root + "/olmoe-tiny") == std::set<int>{7, 42});
    CHECK(outlier_dims(root + "/qwen3-tiny") == std::set<int>{5, 30});
    CHECK(outlier_dims(root + "/mixtral-tiny") == std::set<int>{11});
    auto st = hub.stats();
    INFO(st.dump());
    CHECK(st["requests"].get<int>() >= 6);  // config.json and model.safetensors of each, at least
    CHECK(st["max_in_flight"] == 1);
    CHECK(st["answered_429"] == 0);
    // Each member waited for a slot: every one held slot 1 of 1 from before its create to the end of its fetch.
    for (const char * m : {"olmoe-tiny", "qwen3-tiny", "mixtral-tiny"})
        CHECK_MESSAGE(tests::read_file(root + "/" + m + ".log").find("download slot 1 of 1") != std::string::npos, m);
}

namespace {

// The rehearsal as one sweep member runs it: its model the fixture `repo` from the Hub stand-in, the
// shortest heartbeat timeout the config allows, the run in env.dir/run.
std::string slot_member_config(const SweepEnv & env, const std::string & repo) {
    std::string text = tests::read_file(std::string(TOOLKIT_SOURCE_DIR) + "/configs/rehearsal.yaml");
    auto from = text.find("  fixture:\n");
    auto to = text.find("  dtype:");
    REQUIRE(from != std::string::npos);
    REQUIRE(to != std::string::npos);
    text.replace(from, to - from, "  hub: " + repo + "\n");
    text.replace(text.find("heartbeat_timeout: 2m"), 21, "heartbeat_timeout: 30s");
    tests::write_file(env.dir / "member.yaml", text);
    return env.dir / "member.yaml";
}

// A member's argv (--download-slots, as the sweep passes it): a new run of `config`, or a --resume.
std::vector<std::string> slot_member_args(const SweepEnv & env, const std::string & config, const std::string & slots,
                                          const std::vector<std::string> & extra = {}) {
    std::vector<std::string> args{DEPLOY_BIN};
    if (config.empty()) args.insert(args.end(), {"--resume", env.dir / "run"});
    else args.insert(args.end(), {"--config", config, "--run-dir", env.dir / "run"});
    args.insert(args.end(), {"--download-slots", slots + ":1"});
    for (const auto & a : env.state_args()) args.push_back(a);
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
}

// Waits until `file` holds `text` (or the process ends, or 20 minutes pass).
bool wait_for_text(const std::string & file, const std::string & text, common::ChildProcess & child) {
    auto end = std::chrono::steady_clock::now() + 1200s;
    while (std::chrono::steady_clock::now() < end && child.running()) {
        if (tests::read_file(file).find(text) != std::string::npos) return true;
        std::this_thread::sleep_for(200ms);
    }
    return tests::read_file(file).find(text) != std::string::npos;
}

std::string hub_repo(const std::string & name) {
    return "t" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count() % 1000000000) + "/" + name;
}

}  // namespace

TEST_CASE("sweep e2e: a member waiting for its download slot rents nothing until it has one, and the wait is no step's but its own") {
    SweepEnv env;
    CrowdHub hub(4, 0);
    const std::string repo = hub_repo("olmoe-slot");
    hub.put_fixture(repo, {"--family", "olmoe", "--layers", "4", "--hidden", "64", "--seed", "1", "--plant", "7,42@0-3"});
    // The only slot is held here (another member downloading) for a while.
    const std::string slots = env.dir / "download-slots";
    fs::create_directories(slots);
    std::optional<common::FileLock> other_member(common::FileLock(slots + "/slot-0"));
    tests::EnvGuard endpoint("HF_ENDPOINT", "http://127.0.0.1:" + std::to_string(hub.port));
    tests::EnvGuard state("BROKER_STATE_DIR", ""), threads("OMP_NUM_THREADS", "2");
    auto child = common::ChildProcess::spawn(slot_member_args(env, slot_member_config(env, repo), slots),
                                             {.stdout_path = env.dir / "out.txt", .stderr_path = env.dir / "err.txt", .new_session = true});
    const std::string run = env.dir / "run";
    REQUIRE(wait_for_text(env.dir / "err.txt", "download slots are taken", child));
    std::this_thread::sleep_for(8s);
    // Waiting, it has rented nothing: no create was sent, no instance exists.
    CHECK(local_instances(env) == 0);
    CHECK_FALSE(journal_has(run, "create", "start"));
    CHECK(tests::read_file(env.dir / "err.txt").find("nothing is rented yet") != std::string::npos);
    other_member.reset();
    auto code = child.wait_for(600s);
    const std::string err = tests::read_file(env.dir / "err.txt");
    INFO(err);
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    CHECK(outlier_dims(run) == std::set<int>{7, 42});
    CHECK(err.find("download slot 1 of 1") != std::string::npos);
    // The wait was the slot step's own: the fetch's 60 minutes did not include it.
    double slot_s = -1, fetch_s = -1;
    {
        std::ifstream in(run + "/journal.jsonl");
        for (std::string line; std::getline(in, line);) {
            auto j = nlohmann::json::parse(line, nullptr, false);
            if (!j.is_object() || j.value("event", "") != "done") continue;
            if (j.value("step", "") == "slot") slot_s = j.value("duration_s", -1.0);
            if (j.value("step", "") == "fetch") fetch_s = j.value("duration_s", -1.0);
        }
    }
    CHECK(slot_s >= 8);
    CHECK(fetch_s >= 0);
    CHECK(fetch_s < slot_s);
    // The slot was let go when the fetch ended, before the bootstrap's build began.
    const auto released = err.find("download slot released"), build = err.find("step bootstrap: started");
    REQUIRE(released != std::string::npos);
    REQUIRE(build != std::string::npos);
    CHECK(released < build);
    CHECK(local_instances(env) == 0);
}

TEST_CASE("sweep e2e: a member resumed with its instance rented heartbeats the watchdog while it waits for a slot, and once fetched takes none") {
    SweepEnv env;
    CrowdHub hub(4, 0);
    const std::string repo = hub_repo("olmoe-resume-slot");
    hub.put_fixture(repo, {"--family", "olmoe", "--layers", "4", "--hidden", "64", "--seed", "1", "--plant", "7,42@0-3"});
    const std::string slots = env.dir / "download-slots";
    fs::create_directories(slots);
    tests::EnvGuard endpoint("HF_ENDPOINT", "http://127.0.0.1:" + std::to_string(hub.port));
    tests::EnvGuard state("BROKER_STATE_DIR", ""), threads("OMP_NUM_THREADS", "2");
    const std::string run = env.dir / "run";
    // 1. Killed as its fetch starts: the instance rented, the watchdog armed (heartbeat_timeout 30 s),
    //    the slot freed by the kernel with the process.
    auto first = common::run_process(slot_member_args(env, slot_member_config(env, repo), slots, {"--test-sigkill-at-step", "fetch"}), run_opts());
    INFO(first.err);
    REQUIRE(first.exit_code == 128 + SIGKILL);
    REQUIRE(local_instances(env) == 1);
    // 2. Resumed while another member holds the only slot, for well past the heartbeat timeout and
    //    the watchdog's tick: the instance stays, since the waiting run heartbeats it.
    std::optional<common::FileLock> other_member(common::FileLock(slots + "/slot-0"));
    auto child = common::ChildProcess::spawn(slot_member_args(env, "", slots, {"--test-sigkill-at-step", "bootstrap"}),
                                             {.stdout_path = env.dir / "out.txt", .stderr_path = env.dir / "err.txt", .new_session = true});
    REQUIRE(wait_for_text(env.dir / "err.txt", "download slots are taken", child));
    std::this_thread::sleep_for(50s);  // heartbeat_timeout 30 s + the watchdog's 10 s tick, and then some
    CHECK(local_instances(env) == 1);
    CHECK(tests::read_file(env.dir / "err.txt").find("bills meanwhile") != std::string::npos);
    other_member.reset();
    auto code = child.wait_for(600s);
    INFO(tests::read_file(env.dir / "err.txt"));
    REQUIRE(code.has_value());
    REQUIRE(*code == 128 + SIGKILL);  // as the bootstrap starts: the fetch is done
    REQUIRE(journal_has(run, "fetch", "done"));
    // 3. Resumed after the fetch while the slot is held again: it takes none and does not wait.
    other_member.emplace(slots + "/slot-0");
    auto last = common::run_process(slot_member_args(env, "", slots), run_opts());
    INFO(last.err);
    CHECK(last.exit_code == 0);
    CHECK(last.err.find("download slots are taken") == std::string::npos);
    CHECK(last.err.find("no download slot needed") != std::string::npos);
    CHECK(outlier_dims(run) == std::set<int>{7, 42});
    CHECK(local_instances(env) == 0);
}
