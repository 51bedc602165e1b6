// The step runner: journal with durations, stop at the first failure, finish always runs, exit
// code of the first failing step, leak risk overrides, interrupts, resume skips done steps.
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/program.h"
#include "deploy/steps.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace std::chrono_literals;

namespace {

deploy::Step step(const std::string & name, std::vector<std::string> & trace, common::FakeClock & clock,
                  common::Duration takes = 1s) {
    return {name, [&trace, &clock, name, takes](deploy::StepContext &) {
                clock.advance(takes);
                trace.push_back(name);
            },
            10min};
}

}  // namespace

TEST_CASE("steps: all steps run in order, each journalled with its duration, then finish") {
    tests::TempDir dir;
    auto rd = deploy::RunDir::create(dir / "run", {{"run_id", "x"}});
    common::FakeClock clock;
    std::vector<std::string> trace;
    auto report = deploy::run_steps({step("a", trace, clock, 2s), step("b", trace, clock, 3s)}, step("finish", trace, clock), rd, clock);
    CHECK(trace == std::vector<std::string>{"a", "b", "finish"});
    CHECK(report.exit_code() == 0);
    REQUIRE(report.steps.size() == 3);
    CHECK(report.steps[0].duration_s == doctest::Approx(2));
    CHECK(report.steps[1].duration_s == doctest::Approx(3));
    auto j = rd.journal();
    REQUIRE(j.size() == 6);
    CHECK(j[1].event == "done");
    CHECK(j[1].duration_s == doctest::Approx(2));
    CHECK(rd.step_done("a"));
    CHECK(rd.step_done("finish"));
}

TEST_CASE("steps: the first failure stops the table, finish still runs, exit code is its kind") {
    tests::TempDir dir;
    auto rd = deploy::RunDir::create(dir / "run", {{"run_id", "x"}});
    common::FakeClock clock;
    std::vector<std::string> trace;
    deploy::Step bad{"bad", [](deploy::StepContext &) { throw common::Error(common::ErrorKind::RemoteFailed, "extract exited 1"); }, 1min};
    auto report = deploy::run_steps({step("a", trace, clock), bad, step("c", trace, clock)}, step("finish", trace, clock), rd, clock);
    CHECK(trace == std::vector<std::string>{"a", "finish"});
    CHECK(report.exit_code() == 8);
    CHECK(report.steps[2].outcome == "not run");
    auto j = rd.journal();
    bool failed_logged = false;
    for (const auto & e : j)
        if (e.step == "bad" && e.event == "failed") failed_logged = e.kind == "remote_failed" && e.message == "extract exited 1";
    CHECK(failed_logged);
}

TEST_CASE("steps: a finish that fails is leak risk (10) and overrides the first failure") {
    tests::TempDir dir;
    auto rd = deploy::RunDir::create(dir / "run", {{"run_id", "x"}});
    common::FakeClock clock;
    std::vector<std::string> trace;
    deploy::Step bad{"bad", [](deploy::StepContext &) { throw common::Error(common::ErrorKind::Capacity, "no offers"); }, 1min};
    deploy::Step finish{"finish", [](deploy::StepContext &) { throw common::Error(common::ErrorKind::Network, "terminate: 503"); }, 1min};
    auto report = deploy::run_steps({bad}, finish, rd, clock);
    CHECK(report.exit_code() == 10);
    REQUIRE(report.finish_failure);
    CHECK(report.finish_failure->kind() == common::ErrorKind::LeakRisk);
}

TEST_CASE("steps: a step that overruns its deadline is a timeout") {
    tests::TempDir dir;
    auto rd = deploy::RunDir::create(dir / "run", {{"run_id", "x"}});
    common::FakeClock clock;
    std::vector<std::string> trace;
    deploy::Step slow{"slow", [&clock](deploy::StepContext &) { clock.advance(2min); }, 1min};
    auto report = deploy::run_steps({slow}, step("finish", trace, clock), rd, clock);
    CHECK(report.exit_code() == 7);
}

TEST_CASE("steps: a step whose waits are bounded one by one (pull, finish) may outlast its deadline without failing") {
    tests::TempDir dir;
    auto rd = deploy::RunDir::create(dir / "run", {{"run_id", "x"}});
    common::FakeClock clock;
    std::vector<std::string> trace;
    // A large pull that kept moving, then a long salvage in finish: both done, not timeouts, and the
    // finish not turned into leak risk.
    deploy::Step pull{"pull", [&clock](deploy::StepContext &) { clock.advance(30min); }, 20min, true, false};
    deploy::Step finish{"finish", [&clock](deploy::StepContext &) { clock.advance(15min); }, 10min, true, false};
    auto report = deploy::run_steps({pull}, finish, rd, clock);
    CHECK(report.exit_code() == 0);
    CHECK(report.steps[0].outcome == "done");
    CHECK(report.steps[1].outcome == "done");
    CHECK_FALSE(report.finish_failure.has_value());
}

TEST_CASE("steps: an interrupt stops before the next step, finish runs with the flag cleared") {
    tests::TempDir dir;
    auto rd = deploy::RunDir::create(dir / "run", {{"run_id", "x"}});
    common::FakeClock clock;
    std::vector<std::string> trace;
    common::install_interrupt_handlers();
    deploy::Step ctrl_c{"a", [&trace](deploy::StepContext &) {
                            trace.push_back("a");
                            ::raise(SIGINT);
                        },
                        1min};
    bool finish_saw_interrupt = true;
    deploy::Step finish{"finish", [&](deploy::StepContext &) { finish_saw_interrupt = common::interrupted(); }, 1min};
    auto report = deploy::run_steps({ctrl_c, step("b", trace, clock)}, finish, rd, clock);
    CHECK(trace == std::vector<std::string>{"a"});
    CHECK(report.exit_code() == 130);
    CHECK_FALSE(finish_saw_interrupt);
    common::reset_interrupted();
}

TEST_CASE("steps: on resume, done steps are skipped and the others run") {
    tests::TempDir dir;
    common::FakeClock clock;
    std::vector<std::string> trace;
    {
        auto rd = deploy::RunDir::create(dir / "run", {{"run_id", "x"}});
        deploy::Step bad{"b", [](deploy::StepContext &) { throw common::Error(common::ErrorKind::Network, "lost"); }, 1min};
        deploy::run_steps({step("a", trace, clock), bad}, step("finish", trace, clock), rd, clock);
    }
    trace.clear();
    auto rd = deploy::RunDir::open(dir / "run");
    deploy::Step always = step("stream", trace, clock);
    always.skip_when_done = false;
    auto report = deploy::run_steps({step("a", trace, clock), step("b", trace, clock), always}, step("finish", trace, clock), rd, clock);
    CHECK(trace == std::vector<std::string>{"b", "stream", "finish"});
    CHECK(report.steps[0].outcome == "skipped");
    CHECK(report.exit_code() == 0);
}

TEST_CASE("run dir: refuses to reuse a non-empty directory, state survives reopen, torn journal line ignored") {
    tests::TempDir dir;
    auto rd = deploy::RunDir::create(dir / "run", {{"run_id", "x"}});
    rd.state().instance = deploy::InstanceRecord{.provider = "local", .id = "l123"};
    rd.save_state();
    rd.append({"a", "start", 1, 0, {}, {}});
    CHECK_THROWS_AS(deploy::RunDir::create(dir / "run", {}), common::Error);
    {
        FILE * f = std::fopen((dir / "run/journal.jsonl").c_str(), "a");
        std::fputs("{\"step\":\"a\",\"ev", f);  // a crash mid-append
        std::fclose(f);
    }
    auto again = deploy::RunDir::open(dir / "run");
    REQUIRE(again.state().instance.has_value());
    CHECK(again.state().instance->id == "l123");
    CHECK(again.journal().size() == 1);
    CHECK(again.run_info()["run_id"] == "x");
    CHECK_THROWS_AS(deploy::RunDir::open(dir / "nothing"), common::Error);
}

TEST_CASE("run id: sortable timestamp with a random suffix") {
    std::string id = deploy::new_run_id(1.8e9);
    CHECK(id.size() == 20);
    CHECK(id.substr(0, 15) == "20270115-080000");
}
