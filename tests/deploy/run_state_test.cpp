// The typed RunState (deploy/run_dir.h) against run directories written by the untyped flow
// (tests/deploy/data/old-format, real output of that code): they read back field for field, write
// back byte-identical JSON, and resume. Hostile state files are refused naming the key.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_lock.h"
#include "common/output.h"
#include "deploy/flow.h"
#include "deploy/run_config.h"
#include "deploy/run_dir.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;

namespace {

const std::string kOld = std::string(TOOLKIT_SOURCE_DIR) + "/tests/deploy/data/old-format";

nlohmann::json read_json(const std::string & path) {
    std::ifstream in(path);
    REQUIRE(in);
    return nlohmann::json::parse(in);
}

// A writable copy of an old-format run directory.
std::string copy_run(const tests::TempDir & dir, const std::string & name) {
    std::string to = dir / name;
    fs::copy(kOld + "/" + name, to, fs::copy_options::recursive);
    for (const auto & e : fs::directory_iterator(to)) fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write);
    return to;
}

}  // namespace

TEST_CASE("run state: old-format state.json files read back typed and write back unchanged") {
    for (const std::string name : {"finished", "killed-at-run"}) {
        CAPTURE(name);
        auto j = read_json(kOld + "/" + name + "/state.json");
        auto s = deploy::run_state_from_json(j);
        CHECK(deploy::to_json(s) == j);
        CHECK(deploy::to_json(s).dump(2) == j.dump(2));
        REQUIRE(s.instance.has_value());
        CHECK(s.instance->provider == "local");
        CHECK(s.instance->ref() == "local:" + j["instance"]["id"].get<std::string>());
        REQUIRE(s.instance->ssh.has_value());
        CHECK(s.instance->ssh->host == "127.0.0.1");
        CHECK(s.estimated);
        CHECK_FALSE(s.min_vram_gb.has_value());  // a CPU run: null, not absent
        REQUIRE(s.offers.has_value());
        CHECK(s.offers->at(0).offer_id == "localhost");
        CHECK(s.jobs.at("bootstrap").offset == 134);
        CHECK(s.jobs.at("bootstrap").state == "succeeded");
        CHECK(s.unknown.empty());
    }
    auto done = deploy::run_state_from_json(read_json(kOld + "/finished/state.json"));
    CHECK(done.jobs.at("analysis").offset == 1947);
    REQUIRE(done.end.has_value());
    CHECK(done.end->proven_gone == true);
    CHECK(done.end->action == "terminate");
    REQUIRE(done.watchdog.has_value());
    CHECK(done.watchdog->action == "command");
    auto killed = deploy::run_state_from_json(read_json(kOld + "/killed-at-run/state.json"));
    CHECK_FALSE(killed.end.has_value());
    CHECK_FALSE(killed.jobs.count("analysis"));
}

TEST_CASE("run state: keys this version does not know survive a save") {
    nlohmann::json j{{"from_the_future", {{"x", 1}}}, {"bin_dir", "/b"}};
    auto s = deploy::run_state_from_json(j);
    CHECK(s.bin_dir == "/b");
    CHECK(deploy::to_json(s) == j);
}

TEST_CASE("run state: a state file with wrong types or absurd counts is refused naming the key") {
    auto refused = [](const nlohmann::json & j, const std::string & key) {
        CAPTURE(j.dump());
        try {
            deploy::run_state_from_json(j, "RUN/state.json");
            FAIL("accepted");
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Usage);
            CHECK(e.message().find("RUN/state.json: " + key + ": expected") == 0);
        }
    };
    refused(nlohmann::json::array(), "(top level)");
    refused({{"instance", {{"id", 5}}}}, "instance.id");
    refused({{"instance", {{"gpu_count", 1e12}}}}, "instance.gpu_count");
    refused({{"instance", {{"ssh", {{"port", "22"}}}}}}, "instance.ssh.port");
    refused({{"jobs", {{"analysis", {{"offset", -1}}}}}}, "jobs.analysis.offset");
    refused({{"jobs", {{"analysis", "x"}}}}, "jobs.analysis");
    refused({{"offers", {{"a", 1}}}}, "offers");
    refused({{"offers", {1}}}, "offers[0]");
    refused({{"end", {{"proven_gone", "yes"}}}}, "end.proven_gone");
    refused({{"min_vram_gb", "80"}}, "min_vram_gb");
    nlohmann::json many = nlohmann::json::object();
    for (int i = 0; i < 100; ++i) many["j" + std::to_string(i)] = {{"offset", 0}};
    refused({{"jobs", many}}, "jobs");
}

TEST_CASE("run state: RunDir saves the typed state in the old keys and reopens it") {
    tests::TempDir dir;
    auto rd = deploy::RunDir::create(dir / "run", {{"run_id", "x"}});
    rd.state().instance = deploy::InstanceRecord{.provider = "p", .id = "i1", .created_unix = 5.0};
    rd.state().jobs["analysis"].offset = 42;
    rd.state().end = deploy::EndRecord{.action = "keep", .keep_until_unix = 99.0};
    rd.save_state();
    auto j = read_json(dir / "run/state.json");
    CHECK(j["instance"]["provider"] == "p");
    CHECK(j["instance"]["created_unix"] == 5.0);
    CHECK_FALSE(j["instance"].contains("native_deadline"));
    CHECK(j["jobs"]["analysis"] == nlohmann::json{{"offset", 42}});
    CHECK(j["end"] == nlohmann::json{{"action", "keep"}, {"keep_until_unix", 99.0}});
    auto again = deploy::RunDir::open(dir / "run");
    CHECK(again.state().jobs.at("analysis").offset == 42);
    CHECK(again.state().end->keep_until_unix == 99.0);
}

TEST_CASE("run state: the estimate record keeps offload and ring only with offload, and records and run.json from before it read as none") {
    deploy::RunState s;
    s.estimated = true;
    s.min_vram_gb = 138;
    s.estimate = deploy::EstimateRecord{106852251264, 13424129664, 213.7, 3.0, 137.4, 137.4, 110, 9.37};
    auto j = deploy::to_json(s);
    CHECK(j["estimate"]["offload_gb"] == 110);
    CHECK(j["estimate"]["ring_gb"] == 9.37);
    auto back = deploy::run_state_from_json(j);
    REQUIRE(back.estimate.has_value());
    CHECK(back.estimate->offload_gb == 110);
    CHECK(back.estimate->ring_gb == 9.37);
    CHECK(deploy::to_json(back) == j);
    // Without offload the record is the one written before offload existed, and reads back so.
    s.estimate->offload_gb = 0;
    s.estimate->ring_gb = 0;
    j = deploy::to_json(s);
    CHECK_FALSE(j["estimate"].contains("offload_gb"));
    CHECK_FALSE(j["estimate"].contains("ring_gb"));
    back = deploy::run_state_from_json(j);
    CHECK(back.estimate->offload_gb == 0);
    CHECK(deploy::to_json(back) == j);
    // The old-format run directories' run.json (no resources.offload_gb) load with no offload.
    for (const std::string name : {"finished", "killed-at-run"}) {
        CAPTURE(name);
        auto run = read_json(kOld + "/" + name + "/run.json");
        REQUIRE_FALSE(run["config"]["resources"].contains("offload_gb"));
        auto c = deploy::config_from_json(run.at("config"));
        CHECK(c.resources.offload_gb == 0);
        CHECK(deploy::config_to_json(c)["resources"]["offload_gb"] == 0);
    }
}

TEST_CASE("run state: a finished run directory of the old format resumes and summarises as that code did") {
    tests::TempDir dir;
    std::string run = copy_run(dir, "finished");
    const auto before = tests::read_file(run + "/state.json");
    deploy::FlowOptions o;
    o.broker.state_dir = dir / "broker-state";
    o.broker.ledger_path = dir / "broker-state/ledger.sqlite";
    std::ostringstream text;
    common::Output out(common::OutputFormat::Json, text);
    CHECK(deploy::run_resume(run, o, out) == 0);
    auto summary = nlohmann::json::parse(text.str());
    auto expected = read_json(kOld + "/finished-resume-summary.json");
    summary.erase("run_dir");
    expected.erase("run_dir");
    CHECK(summary == expected);
    CHECK(tests::read_file(run + "/state.json") == before);  // summarising writes nothing
}

TEST_CASE("run state: a run of the old format killed at its run step resumes: the typed state finds its instance gone and finishes") {
    // The fixture's instance was terminated after the kill, so the resumed run step cannot reach its
    // host (bifrost retries a refused connection for about a minute, then reports a timeout), and
    // finish must prove it gone from
    // the typed instance record alone.
    tests::TempDir dir;
    std::string run = copy_run(dir, "killed-at-run");
    deploy::FlowOptions o;
    o.broker.state_dir = dir / "broker-state";
    o.broker.ledger_path = dir / "broker-state/ledger.sqlite";
    o.poll_s = 0.2;
    std::ostringstream text;
    common::Output out(common::OutputFormat::Json, text);
    int code = deploy::run_resume(run, o, out);
    CHECK((code == 7 || code == 3));  // timeout (refused for bifrost's minute) or auth (another sshd took the port)
    auto s = deploy::RunDir::open(run).state();
    REQUIRE(s.end.has_value());
    CHECK(s.end->action == "terminate");
    CHECK(s.end->proven_gone == true);
    CHECK(s.jobs.at("bootstrap").offset == 134);  // kept as the old run left it
    CHECK_FALSE(s.jobs.count("analysis"));        // never started: the host was gone
    auto summary = nlohmann::json::parse(text.str());
    CHECK(summary["instance"] == "local:" + s.instance->id);
    CHECK(summary["end"]["proven_gone"] == true);
}

TEST_CASE("run dir lock: while one process drives a run directory a second driver refuses, naming it, and changes nothing") {
    tests::TempDir dir;
    std::string run = copy_run(dir, "killed-at-run");
    const auto state_before = tests::read_file(run + "/state.json");
    const auto journal_before = tests::read_file(run + "/journal.jsonl");
    deploy::FlowOptions o;
    o.broker.state_dir = dir / "broker-state";
    o.broker.ledger_path = dir / "broker-state/ledger.sqlite";
    std::ostringstream text;
    common::Output out(common::OutputFormat::Json, text);
    {
        // The first driver (flock(2) locks of two open()s conflict within one process too).
        common::FileLock first(run + "/lock");
        try {
            deploy::run_resume(run, o, out);
            FAIL("a second driver resumed a run directory another process holds");
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Usage);
            CHECK(e.message().find(run) != std::string::npos);
            CHECK(e.message().find("another process") != std::string::npos);
        }
        CHECK(tests::read_file(run + "/state.json") == state_before);
        CHECK(tests::read_file(run + "/journal.jsonl") == journal_before);
        // A new run into a directory being driven refuses the same way, before writing run.json.
        auto config = deploy::config_from_json(read_json(run + "/run.json").at("config"));
        config.resources.providers = {"vast"};  // nothing to rent here should the refusal not come
        config.resources.gpu_count = 1;
        config.resources.min_vram_gb = 16;
        tests::EnvGuard key("VAST_API_KEY", std::nullopt), url("VAST_BASE_URL", "http://127.0.0.1:9");
        const std::string fresh = dir / "fresh";
        fs::create_directories(fresh);
        common::FileLock other(fresh + "/lock");
        o.run_dir = fresh;
        try {
            deploy::run_new(config, o, out);
            FAIL("a second driver started a run in a directory another process holds");
        } catch (const common::Error & e) {
            INFO(e.message());
            CHECK(e.kind() == common::ErrorKind::Usage);
            CHECK(e.message().find(fresh) != std::string::npos);
        }
        CHECK_FALSE(fs::exists(fresh + "/run.json"));
    }
    // Once the first driver is gone the directory is free: a finished run summarises as before.
    std::string done = copy_run(dir, "finished");
    { common::FileLock released(done + "/lock"); }
    o.run_dir.clear();
    CHECK(deploy::run_resume(done, o, out) == 0);
}
