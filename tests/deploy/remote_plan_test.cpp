// Remote plan: quoting, the job script (checked by sh -n and run against fake binaries), the
// watchdog config, and the real watchdog.sh ending an "instance" when heartbeats stop.
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "deploy/remote_plan.h"
#include "deploy/run_config.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;

TEST_CASE("remote plan: shell_quote survives quotes, spaces and dollars") {
    tests::TempDir dir;
    std::string nasty = "it's a $HOME `x` \"y\"";
    auto r = common::run_process({"sh", "-c", "printf %s " + deploy::shell_quote(nasty)});
    CHECK(r.out == nasty);
}

TEST_CASE("remote plan: the rehearsal job writes the fixture, extracts, analyses, in that order") {
    auto cfg = deploy::rehearsal_defaults();
    auto l = deploy::remote_layout("/home/u", "r1", "");
    CHECK(l.cache_dir == "/home/u/.cache/toolkit");
    CHECK(l.run_dir == "/home/u/toolkit/runs/r1");
    std::string job = deploy::job_script(cfg, l, "/c/bin", "");
    auto fx = job.find("extract\" fixture --family 'olmoe'");
    auto ex = job.find("extract\" run '/home/u/toolkit/runs/r1/model' --tokens '/home/u/toolkit/runs/r1/input/tokens.json'");
    auto an = job.find("analyze\" run");
    REQUIRE(fx != std::string::npos);
    REQUIRE(ex != std::string::npos);
    REQUIRE(an != std::string::npos);
    CHECK(fx < ex);
    CHECK(ex < an);
    CHECK(job.find("--plant '7,42@0-3'") != std::string::npos);
    CHECK(job.find("--device cpu") != std::string::npos);
    CHECK(job.find("device=cpu\n") != std::string::npos);
    CHECK(job.find("--mode 'both'") != std::string::npos);
    CHECK(common::run_process({"sh", "-n", "-c", job}).exit_code == 0);
}

TEST_CASE("remote plan: the job stops at the first failing program (set -e)") {
    tests::TempDir dir;
    fs::create_directories(dir / "bin");
    // Fake programs: extract fails on `run`, so analyze must never start.
    tests::write_file(dir / "bin/extract", "#!/bin/sh\necho \"extract $1\" >> " + dir.path() + "/calls\n[ \"$1\" = run ] && exit 3\nexit 0\n");
    tests::write_file(dir / "bin/analyze", "#!/bin/sh\necho analyze >> " + dir.path() + "/calls\n");
    fs::permissions(dir / "bin/extract", fs::perms::owner_all);
    fs::permissions(dir / "bin/analyze", fs::perms::owner_all);
    auto cfg = deploy::rehearsal_defaults();
    auto l = deploy::remote_layout(dir.path(), "r1", "");
    auto r = common::run_process({"sh", "-c", deploy::job_script(cfg, l, dir / "bin", "")});
    CHECK(r.exit_code == 3);
    CHECK(tests::read_file(dir / "calls") == "extract fixture\nextract run\n");
}

TEST_CASE("remote plan: a hub model on GPUs uses the fetched checkpoint and the jsonl field") {
    auto cfg = deploy::parse_run_config("model:\n  hub: Qwen/Qwen3-30B-A3B\ndata:\n  synthetic_tokens: {vocab: 10}\n");
    cfg.data.synthetic_vocab.reset();
    cfg.data.jsonl_file = "/x/docs.jsonl";
    cfg.data.text_field = "content";
    cfg.resources.gpu_count = 2;
    cfg.capture.layers = "0-3";
    auto l = deploy::remote_layout("/root", "r2", "/cache");
    std::string job = deploy::job_script(cfg, l, "/cache/b/bin", "/cache/models/Qwen--Qwen3-30B-A3B/main");
    CHECK(job.find("fixture") == std::string::npos);
    CHECK(job.find("run '/cache/models/Qwen--Qwen3-30B-A3B/main' --jsonl '/root/toolkit/runs/r2/input/docs.jsonl' --text-field 'content'") != std::string::npos);
    CHECK(job.find("--device auto") != std::string::npos);
    CHECK(job.find("--layers '0-3'") != std::string::npos);
    CHECK(job.find("if nvidia-smi -L >/dev/null 2>&1; then device=cuda; fi") != std::string::npos);
    CHECK(job.find("analyze\" run \"$run/activations\" --out \"$run/results/analysis\" --device \"$device\"") != std::string::npos);
}

TEST_CASE("remote plan: synthetic tokens are deterministic, in range, and the right shape") {
    auto a = nlohmann::json::parse(deploy::synthetic_tokens_json(100, 3, 7, 5));
    auto b = nlohmann::json::parse(deploy::synthetic_tokens_json(100, 3, 7, 5));
    auto c = nlohmann::json::parse(deploy::synthetic_tokens_json(100, 3, 7, 6));
    CHECK(a == b);
    CHECK(a != c);
    REQUIRE(a.size() == 3);
    for (const auto & seq : a) {
        CHECK(seq.size() == 7);
        for (const auto & id : seq) CHECK((id.get<int64_t>() >= 0 && id.get<int64_t>() < 100));
    }
}

namespace {

std::string watchdog_script() { return std::string(TOOLKIT_SOURCE_DIR) + "/deploy/remote/watchdog.sh"; }

bool wait_for_file(const std::string & path, std::chrono::seconds budget) {
    auto end = std::chrono::steady_clock::now() + budget;
    while (std::chrono::steady_clock::now() < end) {
        if (fs::exists(path)) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return fs::exists(path);
}

}  // namespace

TEST_CASE("watchdog: terminates when heartbeats stop, not while they come") {
    tests::TempDir dir;
    auto l = deploy::remote_layout(dir.path(), "r", "");
    fs::create_directories(l.run_dir);
    deploy::WatchdogSettings w;
    w.action = "command";
    w.terminate_command = "touch " + deploy::shell_quote(dir / "terminated");
    w.heartbeat_timeout_s = 3;
    w.tick_s = 1;
    tests::write_file(l.watchdog_conf, deploy::watchdog_config(w, l));
    auto wd = common::ChildProcess::spawn({"sh", watchdog_script(), l.watchdog_conf}, {.stdout_path = dir / "wd.log"});
    // Heartbeats for ~4 s (longer than the timeout): no termination.
    for (int i = 0; i < 8; ++i) {
        tests::write_file(l.heartbeat_file, "");
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    CHECK_FALSE(fs::exists(dir / "terminated"));
    // Then silence: it must act within timeout + a tick or two.
    CHECK(wait_for_file(dir / "terminated", std::chrono::seconds(8)));
    CHECK(wd.wait_for(std::chrono::milliseconds(3000)).value_or(-1) == 0);
    CHECK(tests::read_file(dir / "wd.log").find("no heartbeat") != std::string::npos);
}

TEST_CASE("watchdog: the deadline ends the instance even with fresh heartbeats; disarm stops it") {
    tests::TempDir dir;
    auto l = deploy::remote_layout(dir.path(), "r", "");
    fs::create_directories(l.run_dir);
    deploy::WatchdogSettings w;
    w.action = "command";
    w.terminate_command = "touch " + deploy::shell_quote(dir / "terminated");
    w.heartbeat_timeout_s = 600;
    w.tick_s = 1;
    w.deadline_unix = static_cast<double>(std::time(nullptr)) + 2;
    tests::write_file(l.heartbeat_file, "");
    tests::write_file(l.watchdog_conf, deploy::watchdog_config(w, l));
    auto wd = common::ChildProcess::spawn({"sh", watchdog_script(), l.watchdog_conf}, {.stdout_path = dir / "wd.log"});
    CHECK(wait_for_file(dir / "terminated", std::chrono::seconds(6)));
    CHECK(tests::read_file(dir / "wd.log").find("deadline") != std::string::npos);

    fs::remove(dir / "terminated");
    w.disarmed = true;
    tests::write_file(l.watchdog_conf, deploy::watchdog_config(w, l));
    auto wd2 = common::ChildProcess::spawn({"sh", watchdog_script(), l.watchdog_conf}, {.stdout_path = dir / "wd2.log"});
    CHECK(wd2.wait_for(std::chrono::milliseconds(3000)).value_or(-1) == 0);
    CHECK_FALSE(fs::exists(dir / "terminated"));
}
