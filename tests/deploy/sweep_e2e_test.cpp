// deploy_and_analyze --sweep end to end on loopback: the real program, its members as real child
// runs (each an ordinary run directory), the `local` provider (a real sshd per instance) and the
// RunPod emulator (instances backed by a real sshd), the remote half run for real on tiny fixtures.
// SERIAL with the other e2e tests (same remote build cache, same CPU).
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

// As e2e_test.cpp: the remote build cache gets the host build's extract and analyze under the key
// bootstrap.sh computes for this tree (when the libtorch agrees), so members do not compile.
void seed_cache() {
    const char * real = std::getenv("TOOLKIT_E2E_REMOTE_BUILD");
    if (real && std::string(real) == "1") return;
    const std::string script = std::string(TOOLKIT_SOURCE_DIR) + "/deploy/remote/bootstrap.sh";
    auto t = common::run_process({"sh", script, "--print-torch"});
    REQUIRE(t.exit_code == 0);
    std::error_code ec;
    if (!fs::equivalent(t.out.substr(0, t.out.find(' ')), HOST_TORCH_DIR, ec)) return;
    auto k = common::run_process({"sh", script, "--print-key", TOOLKIT_SOURCE_DIR});
    REQUIRE(k.exit_code == 0);
    std::string dir = std::string(DEPLOY_REMOTE_CACHE) + "/build-" + k.out.substr(0, k.out.find('\n'));
    if (fs::exists(dir + "/.complete")) return;
    fs::create_directories(dir + "/bin");
    fs::copy_file(EXTRACT_BIN, dir + "/bin/extract", fs::copy_options::overwrite_existing);
    fs::copy_file(ANALYZE_BIN, dir + "/bin/analyze", fs::copy_options::overwrite_existing);
    tests::write_file(dir + "/.complete", "seeded from the host build by deploy_e2e_tests\n");
}

struct SweepEnv {
    SweepEnv() { seed_cache(); }
    tests::TempDir dir{"deploy-sweep-e2e"};
    std::string state() const { return dir / "state"; }
    std::string out() const { return dir / "sweeps"; }
    std::string sweep_dir(const std::string & name) const { return out() + "/" + name; }
};

std::vector<std::string> sweep_args(const SweepEnv & env, const std::string & file) {
    return {DEPLOY_BIN, "--sweep", file, "--state-dir", env.state(), "--ledger", env.state() + "/ledger.sqlite",
            "--remote-cache", DEPLOY_REMOTE_CACHE, "--workspace", TOOLKIT_SOURCE_DIR};
}

common::RunOptions opts() {
    common::RunOptions o;
    o.timeout = std::chrono::milliseconds(1500 * 1000);
    o.extra_env = {"BROKER_STATE_DIR=", "OMP_NUM_THREADS=2"};
    return o;
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

nlohmann::json json_file(const std::string & path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in);
}

std::set<int> outlier_dims(const std::string & member_dir) {
    auto j = json_file(member_dir + "/results/analysis/outliers.json");
    std::set<int> dims;
    for (const auto & f : j.at("feature_profiles"))
        if (f.value("outlier", false)) dims.insert(f.at("dim").get<int>());
    return dims;
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

int local_instances(const SweepEnv & env) {
    int n = 0;
    if (!fs::exists(env.state() + "/local")) return 0;
    for (const auto & e : fs::directory_iterator(env.state() + "/local"))
        if (fs::exists(e.path() / "meta.json")) ++n;
    return n;
}

// What `broker instances list` reports (the provider's listing joined with the ledger).
nlohmann::json broker_list(const SweepEnv & env, const std::vector<std::string> & extra_env = {}) {
    common::RunOptions o = opts();
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

}  // namespace

TEST_CASE("sweep e2e: the rehearsal sweep runs 3 fixture families in parallel on the local provider and writes the combined report") {
    SweepEnv env;
    std::string file = rehearsal_sweep(env);
    auto r = common::run_process(sweep_args(env, file), opts());
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
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
    auto cmp = json_file(root + "/report/active/comparison.json");
    CHECK(cmp.dump().find("olmoe fixture") != std::string::npos);
    auto summary = json_file(root + "/summary.json");
    CHECK(summary["exit_code"] == 0);
    CHECK(member_outcome(summary, "qwen3-tiny") == "succeeded");
    // The same command again: everything finished, nothing runs again.
    std::string run_id = json_file(root + "/olmoe-tiny/run.json")["run_id"];
    auto again = common::run_process(sweep_args(env, file), opts());
    CHECK(again.exit_code == 0);
    CHECK(json_file(root + "/olmoe-tiny/run.json")["run_id"] == run_id);
    CHECK(member_outcome(json_file(root + "/summary.json"), "olmoe-tiny") == "succeeded (earlier)");
}

TEST_CASE("sweep e2e: against the RunPod emulator one member falls through a capacity error, one fails in extract and is terminated, --retry-failed completes it") {
    SweepEnv env;
    fs::create_directories(env.dir / "pod-home");
    tests::SshdFixture sshd({"SetEnv HOME=" + env.dir / "pod-home"});
    tests::Emulator emu("runpod", {.api_key = "test-key-runpod"});
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 1}});
    emu.inject({{"kind", "capacity"}, {"count", 1}});  // the first create is refused: the broker takes the next offer
    // One sshd stands for every pod, so members run one at a time (they would share its ~/toolkit/src).
    std::string cloud = "  resources:\n    providers: [runpod]\n    gpu_count: 1\n    max_price_usd_per_hour: 5\n    min_vram_gb: 16\n"
                        "    disk_gb: 20\n";
    auto make = [&](const std::string & vocab, const std::string & name) {
        std::string text = tests::read_file(rehearsal_sweep(env, "max_parallel: 3", "max_parallel: 1", name));
        auto swap = [&](const std::string & from, const std::string & to) {
            auto at = text.find(from);
            REQUIRE(at != std::string::npos);
            text.replace(at, from.size(), to);
        };
        swap("  resources:\n    providers: [local]\n    gpu_count: 0\n    disk_gb: 1\n", cloud);
        // qwen3-tiny's tokens go past its fixture's vocabulary of 128: extract refuses them.
        swap("      dtype: f32\n  - id: mixtral-tiny",
             "      dtype: f32\n    data: {synthetic_tokens: {vocab: " + vocab + ", seed: 1}}\n  - id: mixtral-tiny");
        tests::write_file(env.dir / name, text);
        return std::string(env.dir / name);
    };
    std::string bad = make("5000", "bad.yaml");
    auto args = sweep_args(env, bad);
    args.push_back("--no-gpu-check");
    args.insert(args.end(), {"--ssh-key", sshd.client_key()});
    auto o = opts();
    o.extra_env.insert(o.extra_env.end(), {"RUNPOD_API_KEY=test-key-runpod", "RUNPOD_BASE_URL=" + emu.base_url()});
    auto r = common::run_process(args, o);
    INFO(r.err);
    CHECK(r.exit_code == 8);  // the failed member's exit code (remote failure)
    std::string root = env.sweep_dir("rehearsal");
    INFO("qwen3-tiny: " << tests::read_file(root + "/qwen3-tiny.log"));
    auto summary = json_file(root + "/summary.json");
    CHECK(member_outcome(summary, "olmoe-tiny") == "succeeded");
    CHECK(member_outcome(summary, "qwen3-tiny") == "failed");
    CHECK(member_outcome(summary, "mixtral-tiny") == "succeeded");
    CHECK(tests::read_file(root + "/qwen3-tiny/logs/analysis.log").find("outside the vocabulary") != std::string::npos);
    auto failed_state = json_file(root + "/qwen3-tiny/state.json");
    CHECK(failed_state["end"]["action"] == "terminate");  // its policy: on_failure terminate
    CHECK(failed_state["end"]["proven_gone"] == true);
    auto es = emu.state();
    CHECK(es["instances"].empty());
    CHECK(es["terminated"].size() == 3);
    int creates = 0;
    for (const auto & q : es["requests"]) creates += q.value("action", "") == "create";
    CHECK(creates == 4);  // one refused for capacity, then three pods
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
    es = emu.state();
    CHECK(es["instances"].empty());
    CHECK(es["terminated"].size() == 4);
}

TEST_CASE("sweep e2e: Ctrl-C mid-sweep stops every member, each instance is proven gone, the summary says what finished") {
    SweepEnv env;
    // Two members at a time: Ctrl-C while the first two are on their instances finds the third not started.
    std::string file = rehearsal_sweep(env, "max_parallel: 3", "max_parallel: 2");
    auto child = common::ChildProcess::spawn(sweep_args(env, file),
                                             {.stdout_path = env.dir / "out.txt", .stderr_path = env.dir / "err.txt", .new_session = true});
    std::string root = env.sweep_dir("rehearsal");
    auto end = std::chrono::steady_clock::now() + 1200s;
    bool running = false;  // both on their instances (qwen3-tiny starts 2 s after olmoe-tiny)
    while (std::chrono::steady_clock::now() < end && !running) {
        running = journal_has(root + "/olmoe-tiny", "push", "start") && journal_has(root + "/qwen3-tiny", "push", "start");
        std::this_thread::sleep_for(100ms);
    }
    REQUIRE(running);
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
        if (fs::exists(root + "/" + m + "/state.json") && json_file(root + "/" + m + "/state.json").contains("instance"))
            CHECK(json_file(root + "/" + m + "/state.json")["end"]["proven_gone"] == true);
    }
    CHECK(tests::read_file(env.dir / "out.txt").find("not started") != std::string::npos);
    // The provider has nothing left and the broker's listing (provider + ledger) shows no instance.
    CHECK(local_instances(env) == 0);
    auto list = broker_list(env);
    INFO(list.dump());
    CHECK(list.dump().find("running") == std::string::npos);
    CHECK(list.dump().find("starting") == std::string::npos);
}
