// Policy: every outcome x action, keep TTLs, and the budget arithmetic.
#include "common/error.h"
#include "deploy/policy.h"

#include <doctest/doctest.h>

using deploy::EndAction;
using deploy::Outcome;

TEST_CASE("policy: success and failure follow their own rule, interrupt follows on_failure") {
    deploy::Policy p;
    p.on_success = EndAction::Terminate;
    p.on_failure = EndAction::Keep;
    p.keep_ttl_s = 3600;
    CHECK(deploy::decide(p, Outcome::Succeeded, 1000).action == EndAction::Terminate);
    auto f = deploy::decide(p, Outcome::Failed, 1000);
    CHECK(f.action == EndAction::Keep);
    CHECK(f.keep_until_unix == doctest::Approx(4600));
    CHECK(f.reason.find("on_failure: keep for 1h") != std::string::npos);
    CHECK(deploy::decide(p, Outcome::Interrupted, 1000).action == EndAction::Keep);
    p.on_failure = EndAction::Terminate;
    CHECK(deploy::decide(p, Outcome::Interrupted, 1000).action == EndAction::Terminate);
    p.on_success = EndAction::Keep;
    CHECK(deploy::decide(p, Outcome::Succeeded, 1000).action == EndAction::Keep);
}

TEST_CASE("policy: actions parse strictly") {
    CHECK(deploy::parse_end_action("keep") == EndAction::Keep);
    CHECK(deploy::parse_end_action("terminate") == EndAction::Terminate);
    CHECK_THROWS_AS(deploy::parse_end_action("Terminate"), common::Error);
    CHECK_THROWS_AS(deploy::parse_end_action("stop"), common::Error);
}

TEST_CASE("policy: cost cap trips the budget") {
    deploy::Policy p;
    p.max_cost_usd = 4.0;
    CHECK_FALSE(deploy::over_budget(p, 2.0, 7199));
    CHECK(deploy::over_budget(p, 2.0, 7200));
    CHECK(deploy::cost_usd(3.0, 1800) == doctest::Approx(1.5));
}

TEST_CASE("policy: the instance lives max_duration + 30 min, never past the cost cap, and a binding cap takes pull and finish out of the run's time") {
    deploy::Policy p;
    p.max_duration_s = 3 * 3600;
    const double slack = 3 * 3600 + 1800;
    CHECK(deploy::kLifetimeSlackS == 1800);
    // No cap: the slack after max_duration, to pull and finish.
    CHECK(deploy::instance_lifetime_s(p, 2.0) == doctest::Approx(slack));
    CHECK_FALSE(deploy::cost_cap_binds(p, 2.0));
    CHECK_FALSE(deploy::max_price_for_run_time(p).has_value());
    // $4 at $2/h is reached 2 h after the create: the instance ends there, not 30 min later.
    p.max_cost_usd = 4.0;
    CHECK(deploy::instance_lifetime_s(p, 2.0) == doctest::Approx(2 * 3600));
    CHECK(deploy::cost_cap_binds(p, 2.0));
    CHECK(deploy::cost_usd(2.0, deploy::instance_lifetime_s(p, 2.0)) == doctest::Approx(4.0));  // billed to the cap, not past it
    // The run's budget keeps the pull-and-finish margin inside that end: the steps before took 10 min,
    // so the job gets 2 h - 10 min - 15 min, not max_duration.
    auto b = deploy::run_budget(p.max_duration_s, deploy::instance_lifetime_s(p, 2.0), 600);
    CHECK(b.seconds == doctest::Approx(7200 - 600 - deploy::kPullFinishMarginS));
    CHECK(b.shortened);
    // A cap reached between max_duration and its slack shortens only the slack.
    p.max_cost_usd = 6.5;
    CHECK(deploy::instance_lifetime_s(p, 2.0) == doctest::Approx(3.25 * 3600));
    CHECK(deploy::cost_cap_binds(p, 2.0));
    // A cap reached later than that changes nothing; nor does one on a free instance.
    p.max_cost_usd = 100;
    CHECK(deploy::instance_lifetime_s(p, 2.0) == doctest::Approx(slack));
    CHECK_FALSE(deploy::cost_cap_binds(p, 2.0));
    CHECK(deploy::instance_lifetime_s(p, 0.0) == doctest::Approx(slack));
    // The price at which the cap leaves no run time at all: reached within the 15 min margin.
    p.max_cost_usd = 4.0;
    REQUIRE(deploy::max_price_for_run_time(p).has_value());
    CHECK(*deploy::max_price_for_run_time(p) == doctest::Approx(16.0));
    const double at_limit = deploy::instance_lifetime_s(p, *deploy::max_price_for_run_time(p));
    CHECK(at_limit == doctest::Approx(deploy::kPullFinishMarginS));
    CHECK(deploy::run_budget(p.max_duration_s, at_limit, 0).seconds == doctest::Approx(0));
    CHECK(deploy::run_budget(p.max_duration_s, deploy::instance_lifetime_s(p, 15.0), 0).seconds > 0);
}

TEST_CASE("policy: the run step's budget ends before the instance's own end, leaving room to pull and finish") {
    // An instance created at t=0 for max_duration 1h lives until 1h + 30 min (name deadline,
    // terminateAfter, watchdog); 15 min of that are kept for pull and finish.
    const double max_duration = 3600, instance_end = 5400, margin = deploy::kPullFinishMarginS;
    CHECK(margin == 900);
    // Booting and building took 10 min: the job gets its whole max_duration.
    auto quick = deploy::run_budget(max_duration, instance_end, 600);
    CHECK(quick.seconds == doctest::Approx(3600));
    CHECK_FALSE(quick.shortened);
    // Exactly at the edge: still the whole max_duration.
    CHECK_FALSE(deploy::run_budget(max_duration, instance_end, 900).shortened);
    // They took 45 min: the job gets what is left before the instance's end, less the margin.
    auto slow = deploy::run_budget(max_duration, instance_end, 2700);
    CHECK(slow.seconds == doctest::Approx(1800));
    CHECK(slow.shortened);
    // A resume late in the instance's life gets only the rest, not a fresh max_duration.
    CHECK(deploy::run_budget(max_duration, instance_end, 4000).seconds == doctest::Approx(500));
    // Inside the margin, or past the end: no time at all (never negative).
    auto none = deploy::run_budget(max_duration, instance_end, 4600);
    CHECK(none.seconds == 0);
    CHECK(none.shortened);
    CHECK(deploy::run_budget(max_duration, instance_end, 9000).seconds == 0);
    // Another margin is honoured.
    CHECK(deploy::run_budget(max_duration, instance_end, 2700, 300).seconds == doctest::Approx(2400));
}

TEST_CASE("policy: a run reconnects through an outage for as long as the watchdog keeps its instance") {
    deploy::Policy p;
    p.heartbeat_timeout_s = 600;
    CHECK(deploy::reconnect_window_s(p) == 540);
    p.heartbeat_timeout_s = 3600;
    CHECK(deploy::reconnect_window_s(p) == 3540);
    p.heartbeat_timeout_s = 120;  // never below bifrost's own window
    CHECK(deploy::reconnect_window_s(p) == 180);
}

TEST_CASE("policy: a kept instance's deadline never passes the moment the cost cap is reached") {
    deploy::Policy p;
    p.on_success = EndAction::Keep;  // --keep-running
    p.on_failure = EndAction::Keep;
    p.keep_ttl_s = 2 * 3600;
    // No cap, or no price (a free local instance): the whole keep TTL.
    CHECK_FALSE(deploy::cost_cap_unix(p, 2.0, 1000).has_value());
    p.max_cost_usd = 3.0;
    CHECK_FALSE(deploy::cost_cap_unix(p, 0.0, 1000).has_value());
    // $3 at $2/h is reached 1.5 h after the create.
    auto cap = deploy::cost_cap_unix(p, 2.0, 1000);
    REQUIRE(cap.has_value());
    CHECK(*cap == doctest::Approx(1000 + 5400));
    // The run ended 1 h after the create: keeping for 2 h would bill past the cap; kept for 30 min.
    auto k = deploy::decide(p, Outcome::Succeeded, 1000 + 3600, cap);
    CHECK(k.action == EndAction::Keep);
    CHECK(k.keep_until_unix == doctest::Approx(*cap));
    CHECK(k.reason.find("max_cost_usd") != std::string::npos);
    // A cap further away than the TTL changes nothing.
    auto far = deploy::decide(p, Outcome::Failed, 1000, deploy::cost_cap_unix(p, 0.5, 1000));
    CHECK(far.keep_until_unix == doctest::Approx(1000 + 7200));
    // Already at or past the cap (the run stopped at it): nothing more may be spent; terminated.
    auto spent = deploy::decide(p, Outcome::Failed, *cap, cap);
    CHECK(spent.action == EndAction::Terminate);
    CHECK(spent.reason.find("max_cost_usd") != std::string::npos);
    // Terminate stays terminate whatever the cap.
    p.on_failure = EndAction::Terminate;
    CHECK(deploy::decide(p, Outcome::Failed, 1000, cap).action == EndAction::Terminate);
}

TEST_CASE("policy: a keep with no watchdog armed (the run ended in create, ready or push) is a terminate that says why") {
    deploy::Policy p;
    p.on_failure = EndAction::Keep;
    p.on_success = EndAction::Keep;
    p.keep_ttl_s = 3600;
    for (auto outcome : {Outcome::Failed, Outcome::Interrupted, Outcome::Succeeded}) {
        auto d = deploy::decide(p, outcome, 1000, std::nullopt, false);
        CHECK(d.action == EndAction::Terminate);
        CHECK(d.keep_until_unix == 0);
        CHECK(d.reason.find(outcome == Outcome::Succeeded ? "on_success: keep, but" : "on_failure: keep, but") == 0);
        CHECK(d.reason.find("before its watchdog was armed") != std::string::npos);
        CHECK(d.reason.find("keep for") == std::string::npos);  // no deadline that nothing enforces
        // Armed: the keep stands.
        CHECK(deploy::decide(p, outcome, 1000, std::nullopt, true).action == EndAction::Keep);
    }
    // A terminate is a terminate, armed or not, with its own reason.
    p.on_failure = EndAction::Terminate;
    CHECK(deploy::decide(p, Outcome::Failed, 1000, std::nullopt, false).reason == "on_failure: terminate");
}
