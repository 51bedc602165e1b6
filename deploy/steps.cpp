// The step runner (see steps.h).
#include "deploy/steps.h"

#include "common/log.h"
#include "common/program.h"

namespace deploy {

int RunReport::exit_code() const {
    if (finish_failure && finish_failure->kind() == common::ErrorKind::LeakRisk) return common::exit_code(common::ErrorKind::LeakRisk);
    if (first_failure) return common::exit_code(first_failure->kind());
    if (finish_failure) return common::exit_code(finish_failure->kind());
    return 0;
}

namespace {

// Runs one step; returns the error it threw, if any.
std::optional<common::Error> run_one(const Step & step, RunDir & dir, common::Clock & clock, StepTiming & timing) {
    common::Deadline deadline(clock, step.deadline);
    StepContext ctx{deadline, dir};
    dir.append({step.name, "start", clock.unix_now(), 0, {}, {}});
    common::log::info("step ", step.name, ": started (deadline ", common::format_duration(common::to_seconds(step.deadline)), ")");
    auto t0 = clock.now();
    std::optional<common::Error> err;
    try {
        step.run(ctx);
        if (deadline.expired() && !step.overrun_is_timeout)
            common::log::info("step ", step.name, ": took longer than its deadline of ", common::format_duration(common::to_seconds(step.deadline)),
                              " (its transfers kept moving)");
        else if (deadline.expired())
            // The step finished but overran: its inner waits should have stopped it; treat as a timeout
            // so a step that ignores its deadline is noticed rather than silently accepted.
            err = common::Error(common::ErrorKind::Timeout,
                                step.name + ": finished after its deadline of " +
                                    common::format_duration(common::to_seconds(step.deadline)));
    } catch (const common::Error & e) {
        err = e;
    } catch (const std::exception & e) {
        err = common::Error(common::ErrorKind::Internal, step.name + ": " + e.what());
    }
    double dt = common::to_seconds(clock.now() - t0);
    timing.duration_s = dt;
    if (err) {
        timing.outcome = "failed";
        dir.append({step.name, "failed", clock.unix_now(), dt, std::string(common::kind_name(err->kind())), err->message()});
        // The message itself is printed once, by main, with the exit code it maps to.
        common::log::info("step ", step.name, ": failed after ", common::format_duration(dt), " (", common::kind_name(err->kind()), ")");
    } else {
        timing.outcome = "done";
        dir.append({step.name, "done", clock.unix_now(), dt, {}, {}});
        common::log::info("step ", step.name, ": done in ", common::format_duration(dt));
    }
    return err;
}

}  // namespace

RunReport run_steps(const std::vector<Step> & steps, const Step & finish, RunDir & dir, common::Clock & clock,
                    const std::function<void(const RunReport &)> & before_finish) {
    RunReport report;
    for (const auto & step : steps) {
        StepTiming t{step.name, "not run", 0};
        if (report.first_failure) {
            report.steps.push_back(t);
            continue;
        }
        if (common::interrupted()) {
            report.first_failure = common::Error(common::ErrorKind::Interrupted, "interrupted before step " + step.name);
            report.steps.push_back(t);
            continue;
        }
        bool done = false;
        try {
            done = step.skip_when_done && dir.step_done(step.name);
        } catch (const common::Error & e) {
            // The journal was damaged while this run drove it (it was read whole at the start): the
            // step is not run, and finish still runs below, so the instance is ended all the same.
            report.first_failure = e;
            report.steps.push_back(t);
            continue;
        }
        if (done) {
            t.outcome = "skipped";
            dir.append({step.name, "skipped", clock.unix_now(), 0, {}, "done in an earlier attach"});
            report.steps.push_back(t);
            continue;
        }
        auto err = run_one(step, dir, clock, t);
        if (err) report.first_failure = err;
        report.steps.push_back(t);
    }
    if (before_finish) before_finish(report);
    // The finish step runs whatever happened above; a Ctrl-C that stopped the steps must not stop
    // the cleanup that follows it (nor must a second signal of the same press: consume_interrupt
    // keeps its burst window).
    common::consume_interrupt();
    StepTiming ft{finish.name, "not run", 0};
    auto err = run_one(finish, dir, clock, ft);
    if (err) {
        // Anything that goes wrong while ending the instance means it may still bill.
        if (err->kind() != common::ErrorKind::LeakRisk)
            err = common::Error(common::ErrorKind::LeakRisk, err->message(), err->context());
        report.finish_failure = err;
    }
    report.steps.push_back(ft);
    return report;
}

}  // namespace deploy
