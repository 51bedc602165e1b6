// deploy_and_analyze --provider slurm end to end on a real single-node Slurm (tests/support/
// slurm_fixture.h): the real program pushes through the sshd login node into the cluster's shared
// directory, builds and runs as sbatch jobs, follows their output files and pulls the results. The
// cases cover the ends the cluster decides (TIMEOUT, a requeue, a node set DOWN), Ctrl-C (scancel,
// proven by squeue) and a bad cluster definition (refused before anything is submitted).
// SERIAL with the other e2e tests (one remote build cache, one CPU).
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "tests/deploy/e2e_support.h"
#include "tests/support/slurm_fixture.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

using tests::e2e::json_file;
using tests::e2e::outlier_dims;

// One cluster, one run directory, the run config and the program's arguments.
struct SlurmRun {
    SlurmRun() {
        tests::e2e::seed_remote_cache();
        broker_config = slurm.write_broker_config(dir / "broker.yaml");
    }
    // A fixture-model rehearsal on the cluster's partition with one fake GPU; `policy` and `data`
    // replace those sections.
    std::string config(const std::string & policy = "  on_success: terminate\n  on_failure: terminate\n  max_duration: 20m\n",
                       int sequences = 8) {
        std::string text = "model:\n"
                           "  fixture: {family: olmoe, layers: 4, hidden: 64, plant: [\"7,42@0-3\"], seed: 1}\n"
                           "  dtype: f32\n"
                           "data:\n"
                           "  synthetic_tokens: {vocab: 128, seed: 1}\n"
                           "  num_sequences: " + std::to_string(sequences) + "\n"
                           "  sequence_length: 64\n"
                           "  batch_size: 2\n"
                           "capture:\n  layers: all\n  sites: [ln_attn, ln_mlp]\n"
                           "analysis:\n  mode: both\n  threshold: 6.0\n"
                           "resources:\n  providers: [slurm]\n  gpu_count: 1\n  min_vram_gb: 1\n  disk_gb: 1\n"
                           "policy:\n" + policy +
                           "output_dir: " + (dir / "runs") + "\n";
        std::string path = dir / "run.yaml";
        tests::write_file(path, text);
        return path;
    }
    std::vector<std::string> args(const std::string & config_path) const {
        return {DEPLOY_BIN, "--config", config_path, "--run-dir", run_dir(), "--state-dir", dir / "state", "--ledger",
                dir / "state/ledger.sqlite", "--remote-cache", DEPLOY_REMOTE_CACHE, "--workspace", TOOLKIT_SOURCE_DIR,
                "--scheduler-poll", "1", "--json"};
    }
    common::RunOptions opts() const {
        common::RunOptions o;
        o.timeout = std::chrono::milliseconds(900 * 1000);
        o.extra_env = env();
        return o;
    }
    std::vector<std::string> env() const {
        return {"BROKER_CONFIG=" + broker_config, "BROKER_STATE_DIR=", "OMP_NUM_THREADS=2", "SLURM_CONF=/nonexistent"};
    }
    // The program as a process of its own, to signal it; output in out.txt / err.txt.
    common::ChildProcess start(const std::vector<std::string> & a) const {
        for (const auto & kv : env()) {
            auto eq = kv.find('=');
            ::setenv(kv.substr(0, eq).c_str(), kv.substr(eq + 1).c_str(), 1);
        }
        return common::ChildProcess::spawn(a, {.stdout_path = dir / "out.txt", .stderr_path = dir / "err.txt", .new_session = true});
    }
    std::string run_dir() const { return dir / "run"; }
    nlohmann::json state() const { return json_file(run_dir() + "/state.json"); }
    // The job of `role` as this run recorded it ("" until submitted).
    std::string job_id(const std::string & role) const {
        if (!fs::exists(run_dir() + "/state.json")) return "";
        auto s = state();
        if (!s.contains("batch") || !s["batch"]["jobs"].contains(role)) return "";
        std::string id = s["batch"]["jobs"][role]["id"];
        return id.substr(id.find('/') + 1);
    }
    // Slurm's own view of a job (any state): "<state>" or "" when unknown.
    std::string slurm_state(const std::string & job) const {
        auto r = slurm.run({"squeue", "--noheader", "--states=all", "--jobs=" + job, "--format=%T"});
        return r.exit_code == 0 ? r.out.substr(0, r.out.find('\n')) : "";
    }
    bool wait_for_state(const std::string & role, const std::string & want, std::chrono::seconds limit) const {
        auto end = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < end) {
            std::string j = job_id(role);
            if (!j.empty() && slurm_state(j) == want) return true;
            std::this_thread::sleep_for(200ms);
        }
        return false;
    }
    std::string journal() const { return tests::read_file(run_dir() + "/journal.jsonl"); }
    // Starts the program on `config_path` and returns once its analysis job runs on the cluster.
    common::ChildProcess start_running(const std::string & config_path) const {
        auto child = start(args(config_path));
        bool running = wait_for_state("analysis", "RUNNING", 600s);
        INFO(tests::read_file(dir / "err.txt"), slurm.logs());
        REQUIRE(running);
        return child;
    }

    tests::SlurmFixture slurm;
    tests::TempDir dir{"deploy-slurm"};
    std::string broker_config;
};

}  // namespace

TEST_CASE("slurm deploy: the rehearsal runs through sbatch on the real cluster and ends with the report") {
    SlurmRun t;
    auto r = common::run_process(t.args(t.config()), t.opts());
    INFO(r.out, r.err, t.slurm.logs());
    REQUIRE(r.exit_code == 0);
    auto summary = nlohmann::json::parse(r.out);
    CHECK(summary["exit_code"] == 0);
    CHECK(summary["instance"].get<std::string>().rfind("slurm:" + t.slurm.cluster_name() + "/", 0) == 0);
    // The planted dims, found by the job that ran under Slurm, and the report beside them.
    CHECK(outlier_dims(t.run_dir()) == std::set<int>{7, 42});
    CHECK(fs::exists(t.run_dir() + "/results/analysis/report.md"));
    // Two jobs, both ended as COMPLETED in Slurm's own view: the build without a GPU, the run with one.
    const std::string build = t.job_id("build"), run = t.job_id("analysis");
    REQUIRE(!build.empty());
    REQUIRE(!run.empty());
    CHECK(t.slurm_state(build) == "COMPLETED");
    CHECK(t.slurm_state(run) == "COMPLETED");
    auto gres = [&](const std::string & job) {
        return t.slurm.run({"squeue", "--noheader", "--states=all", "--jobs=" + job, "--format=%b|%j"}).out;
    };
    CHECK(gres(build).find("gpu") == std::string::npos);
    CHECK(gres(run).find("gres:gpu:tiny:1|tk-") != std::string::npos);
    // The job's output came home as it ran, with its start line and extract's own lines.
    std::string log = tests::read_file(t.run_dir() + "/logs/analysis.log");
    CHECK(log.find("toolkit-batch: start job " + run + " restart 0") != std::string::npos);
    CHECK(tests::read_file(t.run_dir() + "/logs/build.log").find("bin_dir=") != std::string::npos);
    // Everything happened in the cluster's shared directory (nothing under the login user's home).
    auto s = t.state();
    CHECK(s["remote"]["home"] == t.slurm.shared_dir());
    CHECK(s["end"]["proven_gone"] == true);
    CHECK(t.journal().find("\"step\":\"site\"") != std::string::npos);
    // broker sees nothing of ours still running on the cluster.
    auto list = common::run_process({BROKER_BIN, "--state-dir", t.dir / "state", "--ledger", t.dir / "state/ledger.sqlite", "instances",
                                     "list", "--json", "--provider", "slurm"},
                                    t.opts());
    INFO(list.err);
    REQUIRE(list.exit_code == 0);
    CHECK(nlohmann::json::parse(list.out)["instances"].empty());
}

TEST_CASE("slurm deploy: Ctrl-C while the job runs cancels it, proven by squeue, and exits 130") {
    SlurmRun t;
    auto child = t.start_running(t.config("  on_failure: terminate\n  max_duration: 20m\n", 20000));
    INFO(tests::read_file(t.dir / "err.txt"), t.slurm.logs());
    std::this_thread::sleep_for(2s);
    ::kill(child.pid(), SIGINT);
    auto code = child.wait_for(180s);
    REQUIRE(code.has_value());
    CHECK(*code == 130);
    const std::string job = t.job_id("analysis");
    CHECK(t.slurm_state(job) == "CANCELLED");
    CHECK(t.state()["end"]["proven_gone"] == true);
    CHECK(t.state()["batch"]["jobs"]["analysis"]["offset"].get<uint64_t>() > 0);  // its output so far came home
}

TEST_CASE("slurm deploy: a job past its time limit ends as TIMEOUT, reported as such, with its log home") {
    SlurmRun t;
    // One minute of --time (Slurm's smallest) for a run that needs several.
    auto r = common::run_process(t.args(t.config("  on_failure: terminate\n  max_duration: 1m\n", 20000)), t.opts());
    INFO(r.out, r.err, t.slurm.logs());
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("TIMEOUT") != std::string::npos);
    CHECK(r.err.find("time limit") != std::string::npos);
    CHECK(t.slurm_state(t.job_id("analysis")) == "TIMEOUT");
    CHECK(t.state()["batch"]["jobs"]["analysis"]["end_state"] == "TIMEOUT");
    CHECK(tests::read_file(t.run_dir() + "/logs/analysis.log").find("toolkit-batch: start job") != std::string::npos);
    CHECK(t.journal().find("\"kind\":\"timeout\"") != std::string::npos);
}

TEST_CASE("slurm deploy: a requeue by the administrator restarts the job within policy.max_requeues and the run still succeeds") {
    SlurmRun t;
    auto child = t.start_running(t.config("  on_failure: terminate\n  max_duration: 20m\n  max_requeues: 1\n", 800));
    INFO(tests::read_file(t.dir / "err.txt"), t.slurm.logs());
    const std::string job = t.job_id("analysis");
    auto rq = t.slurm.run({"scontrol", "requeue", job});
    INFO(rq.err);
    REQUIRE(rq.exit_code == 0);
    auto code = child.wait_for(600s);
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    CHECK(t.state()["batch"]["jobs"]["analysis"]["restarts"] == 1);
    CHECK(t.journal().find("the cluster restarted the job") != std::string::npos);
    CHECK(outlier_dims(t.run_dir()) == std::set<int>{7, 42});
}

TEST_CASE("slurm deploy: a node set DOWN under the job is NODE_FAIL, reported, and with max_requeues 0 not retried") {
    SlurmRun t;
    auto child = t.start_running(t.config("  on_failure: terminate\n  max_duration: 20m\n  max_requeues: 0\n", 20000));
    INFO(tests::read_file(t.dir / "err.txt"), t.slurm.logs());
    REQUIRE(t.slurm.run({"scontrol", "update", "nodename=" + t.slurm.node(), "state=down", "reason=test"}).exit_code == 0);
    auto code = child.wait_for(300s);
    REQUIRE(code.has_value());
    CHECK(*code != 0);
    CHECK(*code != 10);  // not a leak
    std::string err = tests::read_file(t.dir / "err.txt");
    CHECK(err.find("NODE_FAIL") != std::string::npos);
    CHECK(err.find("not restarted") != std::string::npos);
    CHECK(t.slurm_state(t.job_id("analysis")) == "NODE_FAIL");
    CHECK(t.state()["end"]["proven_gone"] == true);
}

TEST_CASE("slurm deploy: a bad cluster definition is refused before anything reaches the cluster") {
    SlurmRun t;
    // A misspelt key in the cluster's definition: the broker config loader refuses it, naming file and line.
    t.broker_config = t.slurm.write_broker_config(t.dir / "bad.yaml", "      acount: lab\n");
    auto r = common::run_process(t.args(t.config()), t.opts());
    INFO(r.out, r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("bad.yaml") != std::string::npos);
    CHECK(r.err.find("acount") != std::string::npos);
    CHECK(t.slurm.run({"squeue", "--noheader", "--states=all"}).out.empty());
    CHECK(!fs::exists(t.slurm.shared_dir() + "/toolkit"));
}

TEST_CASE("slurm deploy: a SIGKILLed run is picked up by --resume, which follows the same job id from its saved offset") {
    SlurmRun t;
    auto child = t.start_running(t.config("  on_failure: terminate\n  max_duration: 20m\n", 1500));
    INFO(tests::read_file(t.dir / "err.txt"), t.slurm.logs());
    std::this_thread::sleep_for(3s);  // some output has come home
    child.kill_hard();
    const std::string job = t.job_id("analysis");
    CHECK(t.slurm_state(job) == "RUNNING");  // the cluster's job outlives the process that follows it
    auto r = common::run_process({DEPLOY_BIN, "--resume", t.run_dir(), "--state-dir", t.dir / "state", "--ledger",
                                  t.dir / "state/ledger.sqlite", "--scheduler-poll", "1", "--json"},
                                 t.opts());
    INFO(r.out, r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(t.job_id("analysis") == job);  // followed, not submitted again
    const std::string names = t.slurm.run({"squeue", "--noheader", "--states=all", "--format=%j"}).out;
    int mains = 0;
    for (size_t at = names.find("-main-"); at != std::string::npos; at = names.find("-main-", at + 1)) ++mains;
    CHECK(mains == 1);
    // The local log is the job's output file byte for byte: nothing repeated, nothing lost across the kill.
    auto s = t.state();
    CHECK(tests::read_file(t.run_dir() + "/logs/analysis.log") == tests::read_file(s["batch"]["jobs"]["analysis"]["output_path"]));
    CHECK(outlier_dims(t.run_dir()) == std::set<int>{7, 42});
}

TEST_CASE("slurm deploy: a job submitted but not recorded is never taken for none: finish fails as leak risk when it cannot look, and a resume completes the run") {
    SlurmRun t;
    // SIGKILL between sbatch's answer and the state write: the build job exists, the run knows only
    // that it was submitting one.
    auto args = t.args(t.config());
    for (const char * a : {"--test-sigkill-at-step", "build:submitted"}) args.push_back(a);
    auto killed = common::run_process(args, t.opts());
    INFO(killed.err, t.slurm.logs());
    REQUIRE(killed.exit_code == 128 + SIGKILL);
    REQUIRE(t.job_id("build").empty());
    const std::string names = t.slurm.run({"squeue", "--noheader", "--states=all", "--format=%j"}).out;
    REQUIRE(names.find("-build-") != std::string::npos);
    // The next attach cannot reach the scheduler (the login node in the broker config is a closed
    // port; the run's own SSH record still works): its build step cannot look for the job, and
    // neither can finish, which must not say that nothing was submitted.
    std::string broken = tests::read_file(t.broker_config);
    const std::string login = "login: " + t.slurm.login().target();
    REQUIRE(broken.find(login) != std::string::npos);
    broken.replace(broken.find(login), login.size(), "login: " + t.slurm.login().user() + "@127.0.0.1:1");
    common::write_text_file(t.dir / "unreachable.yaml", broken, 0600);  // broker reads only a private config
    std::vector<std::string> resume{DEPLOY_BIN, "--resume", t.run_dir(), "--state-dir", t.dir / "state", "--ledger",
                                    t.dir / "state/ledger.sqlite", "--scheduler-poll", "1", "--json"};
    auto o = t.opts();
    o.extra_env[0] = "BROKER_CONFIG=" + (t.dir / "unreachable.yaml");
    auto blind = common::run_process(resume, o);
    INFO(blind.out, blind.err);
    CHECK(blind.exit_code == 10);
    CHECK(blind.err.find("no job was submitted") == std::string::npos);
    const std::string run_id = json_file(t.run_dir() + "/run.json")["instance_run_id"];
    CHECK(blind.err.find(run_id) != std::string::npos);
    CHECK(blind.err.find("slurm") != std::string::npos);
    // With the scheduler reachable again the same run goes on to its end (the build job is found or,
    // once ended, built again from the cache) and nothing of it is left queued.
    auto again = common::run_process(resume, t.opts());
    INFO(again.out, again.err);
    CHECK(again.exit_code == 0);
    CHECK(outlier_dims(t.run_dir()) == std::set<int>{7, 42});
    CHECK(t.slurm.run({"squeue", "--noheader", "--format=%j"}).out.find(run_id) == std::string::npos);
}

TEST_CASE("slurm deploy: a sweep on the cluster submits one job per member, at most max_parallel at once, and writes the combined report") {
    SlurmRun t;
    std::string text = "sweep:\n  name: onslurm\n  max_parallel: 2\n  output_dir: " + (t.dir / "sweeps") +
                       "\n"
                       "base:\n"
                       "  data: {synthetic_tokens: {vocab: 128, seed: 1}, num_sequences: 8, sequence_length: 64, batch_size: 2}\n"
                       "  capture: {layers: all, sites: [ln_attn, ln_mlp]}\n"
                       "  analysis: {mode: both, threshold: 6.0}\n"
                       "  resources: {providers: [slurm], gpu_count: 1, min_vram_gb: 1, disk_gb: 1}\n"
                       "  policy: {max_duration: 20m}\n"
                       "members:\n"
                       "  - id: olmoe-tiny\n"
                       "    model: {fixture: {family: olmoe, layers: 4, hidden: 64, plant: [\"7,42@0-3\"], seed: 1}, dtype: f32}\n"
                       "  - id: qwen3-tiny\n"
                       "    model: {fixture: {family: qwen3, layers: 3, hidden: 48, plant: [\"5,30@0-2\"], seed: 2}, dtype: f32}\n";
    tests::write_file(t.dir / "sweep.yaml", text);
    auto r = common::run_process({DEPLOY_BIN, "--sweep", t.dir / "sweep.yaml", "--state-dir", t.dir / "state", "--ledger",
                                  t.dir / "state/ledger.sqlite", "--remote-cache", DEPLOY_REMOTE_CACHE, "--workspace", TOOLKIT_SOURCE_DIR,
                                  "--scheduler-poll", "1"},
                                 t.opts());
    INFO(r.out, r.err, t.slurm.logs());
    REQUIRE(r.exit_code == 0);
    const std::string root = t.dir / "sweeps/onslurm";
    CHECK(outlier_dims(root + "/olmoe-tiny") == std::set<int>{7, 42});
    CHECK(outlier_dims(root + "/qwen3-tiny") == std::set<int>{5, 30});
    CHECK(fs::exists(root + "/report.md"));
    // Each member ran as its own Slurm job (plus its build job), all ended.
    std::string jobs = t.slurm.run({"squeue", "--noheader", "--states=all", "--format=%T %j"}).out;
    int completed_mains = 0;
    for (size_t at = jobs.find("COMPLETED tk-"); at != std::string::npos; at = jobs.find("COMPLETED tk-", at + 1))
        completed_mains += jobs.substr(at, jobs.find('\n', at) - at).find("-main-") != std::string::npos;
    CHECK(completed_mains == 2);
    CHECK(jobs.find("RUNNING") == std::string::npos);
    CHECK(jobs.find("PENDING") == std::string::npos);
}

TEST_CASE("slurm deploy: with fetch: job the Hub download runs as a CPU job, the token reaches it outside the job script, and the run succeeds") {
    SlurmRun t;
    t.broker_config = t.slurm.write_broker_config(t.dir / "broker-fetch.yaml", "      fetch: job\n");
    // A Hub on loopback: a checkpoint under <repo>/resolve/main, served by Python's file server.
    const std::string repo = "t" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count() % 1000000000) + "/olmoe-a";
    auto fx = common::run_process({EXTRACT_BIN, "fixture", "--out", t.dir / ("hub/" + repo + "/resolve/main"), "--family", "olmoe", "--layers",
                                   "4", "--hidden", "64", "--seed", "1", "--plant", "7,42@0-3"});
    REQUIRE(fx.exit_code == 0);
    auto hub = common::ChildProcess::spawn({"python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", t.dir / "hub", "0"},
                                           {.stdout_path = t.dir / "hub.out", .stderr_path = t.dir / "hub.err"});
    std::string port;
    for (int i = 0; i < 100 && port.empty(); ++i) {
        std::this_thread::sleep_for(50ms);
        std::string text = tests::read_file(t.dir / "hub.out");
        auto at = text.find(" port ");
        if (at != std::string::npos) port = text.substr(at + 6, text.find(' ', at + 6) - at - 6);
    }
    REQUIRE(!port.empty());
    std::string config = tests::read_file(t.config());
    config.replace(config.find("  fixture:"), config.find('\n', config.find("  fixture:")) - config.find("  fixture:"), "  hub: " + repo);
    tests::write_file(t.dir / "hub-run.yaml", config);
    auto o = t.opts();
    const std::string token = "hf_testtoken_must_not_leak_0123";
    o.extra_env.insert(o.extra_env.end(), {"HF_ENDPOINT=http://127.0.0.1:" + port, "HF_TOKEN=" + token});
    auto r = common::run_process(t.args(t.dir / "hub-run.yaml"), o);
    INFO(r.out, r.err, tests::read_file(t.dir / "hub.err"));
    REQUIRE(r.exit_code == 0);
    CHECK(outlier_dims(t.run_dir()) == std::set<int>{7, 42});
    const std::string fetch_job = t.job_id("fetch");
    REQUIRE(!fetch_job.empty());
    CHECK(t.slurm_state(fetch_job) == "COMPLETED");
    CHECK(tests::read_file(t.run_dir() + "/logs/fetch.log").find("model_dir=") != std::string::npos);
    // The token is in no job script Slurm keeps, in no log, and its hand-over file is gone.
    for (const auto & job : {fetch_job, t.job_id("build"), t.job_id("analysis")}) {
        auto script = t.slurm.run({"scontrol", "write", "batch_script", job, "-"});
        CHECK(script.exit_code == 0);
        CHECK(script.out.find(token) == std::string::npos);
    }
    for (const auto & e : fs::recursive_directory_iterator(t.run_dir()))
        if (e.is_regular_file()) CHECK_MESSAGE(tests::read_file(e.path()).find(token) == std::string::npos, e.path().string());
    std::string leftovers;
    for (const auto & e : fs::recursive_directory_iterator(t.slurm.shared_dir()))
        if (e.path().filename() == ".hf_token") leftovers += e.path().string() + " ";
    CHECK(leftovers.empty());
}

TEST_CASE("slurm deploy: the built-in rehearsal with --provider slurm runs on the cluster without a GPU") {
    SlurmRun t;
    auto r = common::run_process({DEPLOY_BIN, "--provider", "slurm", "--run-dir", t.run_dir(), "--state-dir", t.dir / "state", "--ledger",
                                  t.dir / "state/ledger.sqlite", "--remote-cache", DEPLOY_REMOTE_CACHE, "--workspace", TOOLKIT_SOURCE_DIR,
                                  "--scheduler-poll", "1"},
                                 t.opts());
    INFO(r.out, r.err, t.slurm.logs());
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("succeeded") != std::string::npos);
    CHECK(outlier_dims(t.run_dir()) == std::set<int>{7, 42});
    const std::string run = t.job_id("analysis");
    CHECK(t.slurm_state(run) == "COMPLETED");
    CHECK(t.slurm.run({"squeue", "--noheader", "--states=all", "--jobs=" + run, "--format=%b"}).out.find("gpu") == std::string::npos);
}

TEST_CASE("slurm deploy: a login node behind a bastion (jump:) is reached through it for the push, the jobs and the pull") {
    SlurmRun t;
    // The bastion: its own sshd and client key, logging each forward it makes (LogLevel DEBUG).
    tests::SshdFixture bastion(std::vector<std::string>{"LogLevel DEBUG"});
    t.broker_config = t.slurm.write_broker_config(t.dir / "broker-jump.yaml",
                                                  "      jump:\n        - {login: " + bastion.target() + ", key: " + bastion.client_key() + "}\n");
    auto r = common::run_process(t.args(t.config()), t.opts());
    INFO(r.out, r.err, t.slurm.logs());
    REQUIRE(r.exit_code == 0);
    CHECK(outlier_dims(t.run_dir()) == std::set<int>{7, 42});
    auto jump = t.state()["batch"]["jump"];
    REQUIRE(jump.size() == 1);
    CHECK(jump[0]["port"] == bastion.port());
    // Every login-node session went through the bastion: it forwarded to the login node's port.
    CHECK(bastion.server().log_text().find("target 127.0.0.1 port " + std::to_string(t.slurm.login().port())) != std::string::npos);
    CHECK(r.err.find("via " + bastion.target()) != std::string::npos);
}
