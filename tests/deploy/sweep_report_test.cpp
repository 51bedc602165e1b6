// The sweep's combined report (deploy/sweep_report.cpp) over crafted member run directories: what an
// instance that has not ended costs, and a report.md whatever `analyze compare` makes of the members
// (results holding different analysis modes, a compare that fails).
#include <chrono>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "deploy/sweep.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;

namespace {

double now_unix() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

std::string fixture_member(const std::string & id, const std::string & extra = "") {
    return "  - id: " + id + "\n    model: {fixture: {family: olmoe, layers: 2, hidden: 32}}\n" + extra;
}

deploy::SweepFile sweep_of(const tests::TempDir & dir, const std::string & name, const std::string & members) {
    auto s = deploy::parse_sweep("sweep:\n  name: " + name + "\n  output_dir: " + dir.path() + "/out\n" +
                                     "base:\n  data: {synthetic_tokens: {vocab: 64}}\n  resources: {providers: [local], gpu_count: 0, disk_gb: 1}\n"
                                     "members:\n" + members,
                                 name + ".yaml");
    s.output_dir = dir.path() + "/out";
    return s;
}

// A member that ran to its end (journal: run done, finish done), with `state` as its state.json.
std::string member_dir(const deploy::SweepFile & s, const std::string & id, const nlohmann::json & state) {
    const std::string d = deploy::sweep_dir(s) + "/" + id;
    fs::create_directories(d + "/results/analysis");
    tests::write_file(d + "/run.json", "{\"run_id\": \"" + id + "\"}\n");
    tests::write_file(d + "/journal.jsonl", "{\"step\":\"run\",\"event\":\"start\",\"unix_s\":1000}\n{\"step\":\"run\",\"event\":\"done\",\"unix_s\":1500}\n"
                                            "{\"step\":\"finish\",\"event\":\"start\",\"unix_s\":1501}\n{\"step\":\"finish\",\"event\":\"done\",\"unix_s\":1600}\n");
    tests::write_file(d + "/state.json", state.dump() + "\n");
    return d;
}

nlohmann::json instance(double price, double created) {
    return {{"provider", "local"}, {"id", "i-1"}, {"name", "n"}, {"price_usd_per_hour", price}, {"gpu_model", "H100"},
            {"gpu_count", 1}, {"vram_gb_per_gpu", 80}, {"created_unix", created}, {"adopted", false}};
}

// The cells of the member table's row for `id` (| member | model | family | outcome | params | active | cost $ | wall | results |).
std::vector<std::string> row_of(const std::string & report, const std::string & id) {
    auto at = report.find("| " + id + " | ");
    REQUIRE_MESSAGE(at != std::string::npos, id);
    std::string line = report.substr(at + 2, report.find('\n', at) - at - 2);
    std::vector<std::string> cells;
    for (size_t p = 0; p < line.size();) {
        auto q = line.find(" | ", p);
        if (q == std::string::npos) q = line.size() - 2;  // the closing " |"
        cells.push_back(line.substr(p, q - p));
        p = q + 3;
    }
    return cells;
}

// A minimal valid analysis result (analysis/report_json.cpp validate_result) holding `modes`.
std::string result_json(const std::string & model, const std::vector<std::string> & modes, int outliers) {
    nlohmann::json m = nlohmann::json::object();
    for (const auto & name : modes)
        m[name] = {{"criteria", {{"mode", name}}},
                   {"summary", {{"num_outliers", outliers}, {"unique_dims", 1}, {"mean_layer_pct", 40.0}, {"mean_position_pct", 7.0},
                                {"median_layer_pct", 42.0}, {"median_position_pct", 6.5}}},
                   {"features", nlohmann::json::array()}};
    nlohmann::json r = {{"schema", "toolkit.analysis.result"}, {"version", 1}, {"run", {{"model_name", model}}}, {"modes", m},
                        {"layers", nlohmann::json::array()}, {"feature_profiles", nlohmann::json::array()},
                        {"histogram", {{"lower_edges", nlohmann::json::array()}, {"counts", nlohmann::json::object()}}}};
    return r.dump() + "\n";
}

}  // namespace

TEST_CASE("sweep report: an instance with no recorded end is costed up to now (or its passed keep deadline) and flagged as maybe still billing") {
    tests::TempDir dir("sweep-report-billing");
    auto s = sweep_of(dir, "billing", fixture_member("ended") + fixture_member("open") + fixture_member("kept-past") + fixture_member("kept-on"));
    const double now = now_unix();
    // Ended: one hour at $1.00, whatever the time now.
    member_dir(s, "ended", {{"instance", instance(1.0, now - 7200)},
                            {"end", {{"action", "terminate"}, {"proven_gone", true}, {"ended_unix", now - 3600}}}});
    // No end at all (the driver died before its finish): 1 h so far at $3.60, still counting.
    member_dir(s, "open", {{"instance", instance(3.6, now - 3600)}});
    // Kept, its keep deadline passed 1 h ago with nothing proving the instance gone: 1 h at $2.00.
    member_dir(s, "kept-past", {{"instance", instance(2.0, now - 7200)},
                                {"end", {{"action", "keep"}, {"keep_until_unix", now - 3600}}}});
    // Kept, deadline ahead: billing now, 30 min so far at $4.00.
    member_dir(s, "kept-on", {{"instance", instance(4.0, now - 1800)},
                              {"end", {{"action", "keep"}, {"keep_until_unix", now + 3600}}}});
    const std::string report = tests::read_file(deploy::write_sweep_report(s, "analyze-is-not-run-without-results"));
    INFO(report);
    auto cost = [&](const std::string & id) { return row_of(report, id).at(6); };
    CHECK(cost("ended") == "1.00");
    CHECK(cost("open").rfind("3.60", 0) == 0);  // $0.001 a second: the test has seconds to spare
    CHECK(cost("open").find("may still be billing") != std::string::npos);
    CHECK(cost("kept-past").rfind("2.00", 0) == 0);
    CHECK(cost("kept-past").find("may still be billing") != std::string::npos);
    CHECK(cost("kept-on").rfind("2.00", 0) == 0);
    CHECK(cost("kept-on").find("may still be billing") != std::string::npos);
    CHECK(cost("ended").find("billing") == std::string::npos);
    // The total counts them and says that part may still grow.
    CHECK(report.find("Total cost: $8.60") != std::string::npos);
    CHECK(report.find("$7.60 of it for 3 instances that may still be billing") != std::string::npos);
}

TEST_CASE("sweep report: a terminated instance not proven gone is flagged, its cost up to the end recorded") {
    tests::TempDir dir("sweep-report-unproven");
    auto s = sweep_of(dir, "unproven", fixture_member("unproven"));
    const double now = now_unix();
    member_dir(s, "unproven", {{"instance", instance(1.0, now - 7200)},
                               {"end", {{"action", "terminate"}, {"proven_gone", false}, {"ended_unix", now - 3600}}}});
    const std::string report = tests::read_file(deploy::write_sweep_report(s, "analyze-is-not-run-without-results"));
    INFO(report);
    CHECK(row_of(report, "unproven").at(6).rfind("1.00 ", 0) == 0);
    CHECK(row_of(report, "unproven").at(6).find("may still be billing") != std::string::npos);
    CHECK(report.find("$1.00 of it for 1 instance that may still be billing") != std::string::npos);
}

TEST_CASE("sweep report: an instance with no recorded end is costed no further than the earliest deadline known to end it, which its flag names") {
    tests::TempDir dir("sweep-report-deadline");
    auto s = sweep_of(dir, "deadline", fixture_member("killed") + fixture_member("watched") + fixture_member("kept-moved") +
                                           fixture_member("kept-stuck") + fixture_member("ahead") + fixture_member("unproven"));
    const double now = now_unix();
    const double created = std::floor(now - 3 * 86400);  // reported three days after the create
    auto named = [](double price, double created_unix, double deadline) {
        auto i = instance(price, created_unix);
        i["name"] = "tk-abc123-main-dl" + std::to_string(static_cast<long long>(deadline));
        return i;
    };
    auto watchdog = [](double deadline) { return nlohmann::json{{"action", "request"}, {"deadline_unix", deadline}, {"heartbeat_timeout_s", 600}}; };
    // The reviewer's case: killed during its run step (no end, no watchdog record: an older run
    // directory), $2/h, the deadline in its name 1.5 h after its create: $3.00, not 72 h of billing.
    member_dir(s, "killed", {{"instance", named(2.0, created, created + 5400)}});
    // The watchdog's deadline before the name's: 1 h.
    member_dir(s, "watched", {{"instance", named(2.0, created, created + 7200)}, {"watchdog", watchdog(created + 3600)}});
    // Kept, its watchdog moved to the keep deadline (3 h): the watchdog's first deadline (1 h) no longer applies.
    member_dir(s, "kept-moved", {{"instance", named(2.0, created, created + 5 * 3600)}, {"watchdog", watchdog(created + 3600)},
                                 {"end", {{"action", "keep"}, {"keep_until_unix", created + 3 * 3600}, {"watchdog_extended", true}}}});
    // Kept, but the watchdog could not be moved: it still ends the instance at its first deadline.
    member_dir(s, "kept-stuck", {{"instance", named(2.0, created, created + 5 * 3600)}, {"watchdog", watchdog(created + 3600)},
                                 {"end", {{"action", "keep"}, {"keep_until_unix", created + 3 * 3600}, {"watchdog_extended", false}}}});
    // Its deadline still ahead: 30 min so far at $4.00, and the flag says until when it may bill.
    member_dir(s, "ahead", {{"instance", named(4.0, now - 1800, now + 3600)}});
    // A terminate not proven: costed to its end, billing at most until its name's deadline.
    member_dir(s, "unproven", {{"instance", named(1.0, created, created + 7200)},
                               {"end", {{"action", "terminate"}, {"proven_gone", false}, {"ended_unix", created + 3600}}}});
    const std::string report = tests::read_file(deploy::write_sweep_report(s, "analyze-is-not-run-without-results"));
    INFO(report);
    auto cost = [&](const std::string & id) { return row_of(report, id).at(6); };
    const std::string at = [&](double t) { return common::format_utc_minute(t); }(created + 5400);
    CHECK(cost("killed") == "3.00 (no end recorded, not proven gone: may still be billing, costed until its name's deadline " + at + ")");
    CHECK(cost("watched") == "2.00 (no end recorded, not proven gone: may still be billing, costed until its watchdog's deadline " +
                                 common::format_utc_minute(created + 3600) + ")");
    CHECK(cost("kept-moved") == "6.00 (kept, not proven gone: may still be billing, costed until its keep deadline " +
                                    common::format_utc_minute(created + 3 * 3600) + ")");
    CHECK(cost("kept-stuck").rfind("2.00 (kept, not proven gone: may still be billing, costed until its watchdog's deadline ", 0) == 0);
    CHECK(cost("ahead").rfind("2.00 (no end recorded, costed to now: may still be billing until its name's deadline " +
                                  common::format_utc_minute(now + 3600) + ")", 0) == 0);
    CHECK(cost("unproven") == "1.00 (not proven gone: may still be billing until its name's deadline " + common::format_utc_minute(created + 7200) + ")");
    CHECK(report.find("Total cost: $16.00") != std::string::npos);
}

#ifdef ANALYZE_BIN
TEST_CASE("sweep report: members whose results hold only the paper mode are compared in it, with the real analyze") {
    tests::TempDir dir("sweep-report-paper");
    auto s = sweep_of(dir, "paper", fixture_member("both-run") + fixture_member("paper-run", "    analysis: {mode: paper}\n"));
    const double now = now_unix();
    for (const char * id : {"both-run", "paper-run"}) {
        const bool paper_only = std::string(id) == "paper-run";
        const auto d = member_dir(s, id, {{"instance", instance(1.0, now - 7200)}, {"end", {{"action", "terminate"}, {"proven_gone", true}, {"ended_unix", now - 3600}}}});
        tests::write_file(d + "/results/analysis/outliers.json",
                          result_json(id, paper_only ? std::vector<std::string>{"paper"} : std::vector<std::string>{"predecessor", "paper"}, paper_only ? 5 : 9));
        tests::write_file(d + "/results/inspect.json", paper_only ? "{\"params_total\": 7e9, \"params_active\": 1.3e9}\n" : "{\"params_total\": 3e10, \"params_active\": 3e9}\n");
    }
    const std::string report = tests::read_file(deploy::write_sweep_report(s, ANALYZE_BIN));
    INFO(report);
    CHECK(report.find("compare failed") == std::string::npos);
    CHECK(report.find("paper mode") != std::string::npos);
    const auto cmp = nlohmann::json::parse(tests::read_file(deploy::sweep_dir(s) + "/report/total/comparison.json"));
    CHECK(cmp.at("mode") == "paper");
    const auto active = nlohmann::json::parse(tests::read_file(deploy::sweep_dir(s) + "/report/active/comparison.json"));
    CHECK(active.at("params_kind") == "active");
    // analysis's figures per member: the paper mode's outliers.
    CHECK(report.find("| paper-run | 5 | 40.0 | 42.0 | 7.0 | 6.5 |") != std::string::npos);
    CHECK(report.find("| both-run | 9 | 40.0 | 42.0 | 7.0 | 6.5 |") != std::string::npos);
    CHECK(row_of(report, "paper-run").at(6) == "1.00");
}

TEST_CASE("sweep report: results with no mode in common are compared per mode") {
    tests::TempDir dir("sweep-report-permode");
    auto s = sweep_of(dir, "permode", fixture_member("pred-run", "    analysis: {mode: predecessor}\n") +
                                          fixture_member("paper-run", "    analysis: {mode: paper}\n"));
    for (const char * id : {"pred-run", "paper-run"}) {
        const bool paper = std::string(id) == "paper-run";
        const auto d = member_dir(s, id, nlohmann::json::object());
        tests::write_file(d + "/results/analysis/outliers.json", result_json(id, {paper ? "paper" : "predecessor"}, paper ? 5 : 9));
        tests::write_file(d + "/results/inspect.json", "{\"params_total\": 7e9, \"params_active\": 1.3e9}\n");
    }
    const std::string report = tests::read_file(deploy::write_sweep_report(s, ANALYZE_BIN));
    INFO(report);
    CHECK(report.find("compare failed") == std::string::npos);
    for (const char * mode : {"predecessor", "paper"}) {
        CAPTURE(mode);
        const auto cmp = nlohmann::json::parse(tests::read_file(deploy::sweep_dir(s) + "/report/" + mode + "/total/comparison.json"));
        CHECK(cmp.at("mode") == mode);
        CHECK(cmp.at("rows").size() == 1);
    }
    CHECK(report.find("| paper-run | 5 |") != std::string::npos);
    CHECK(report.find("| pred-run | 9 |") != std::string::npos);
}
#endif

TEST_CASE("sweep report: when analyze compare fails the member table (cost, wall time, outcome) is still written, the error stated") {
    tests::TempDir dir("sweep-report-cmpfail");
    auto s = sweep_of(dir, "cmpfail", fixture_member("ok-run"));
    const double now = now_unix();
    const auto d = member_dir(s, "ok-run", {{"instance", instance(1.0, now - 7200)}, {"end", {{"action", "terminate"}, {"proven_gone", true}, {"ended_unix", now - 3600}}}});
    tests::write_file(d + "/results/analysis/outliers.json", result_json("ok-run", {"predecessor"}, 3));
    // A stand-in for `analyze compare` that fails as a damaged result makes the real one fail.
    const std::string analyze = dir / "analyze.sh";
    tests::write_file(analyze, "#!/bin/sh\necho 'error: ok-run/results/analysis/outliers.json: not a valid analysis result | `rm -rf /`' >&2\nexit 2\n");
    fs::permissions(analyze, fs::perms::owner_all);
    const std::string report = tests::read_file(deploy::write_sweep_report(s, analyze));
    INFO(report);
    CHECK(row_of(report, "ok-run").at(3) == "succeeded");
    CHECK(row_of(report, "ok-run").at(6) == "1.00");
    CHECK(row_of(report, "ok-run").at(7) == "600 s");  // first to last journal event
    CHECK(report.find("Total cost: $1.00") != std::string::npos);
    CHECK(report.find("analyze compare (total, predecessor mode) failed") != std::string::npos);
    CHECK(report.find("not a valid analysis result") != std::string::npos);
    CHECK(report.find("`rm") == std::string::npos);  // the program's text is shown as text, not Markdown
    CHECK(report.find("| `") == std::string::npos);
}
