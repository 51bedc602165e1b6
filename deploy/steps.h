// The orchestrator as a table of named steps (docs/README.md, "Design anchors"). Each step has a function and a
// deadline; the runner journals start/done/failed with durations in the run directory, stops at the
// first failure (or interrupt), and then ALWAYS runs the finish step (policy → terminate → prove
// gone): cleanup cannot be skipped. The exit code is the kind of the first failing step, except
// that a failed finish (leak risk, 10) overrides everything.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "deploy/run_dir.h"

namespace deploy {

struct StepContext {
    const common::Deadline & deadline;  // the step's own budget; every wait inside takes it
    RunDir & dir;
};

struct Step {
    std::string name;
    std::function<void(StepContext &)> run;
    common::Duration deadline;
    // On --resume, a step already journalled as done is skipped. Steps that must run again on
    // every attach (stream the log, reconnect) set this to false and are idempotent themselves.
    bool skip_when_done = true;
    // Finishing after the deadline is a timeout (a step that ignored it). false: the step's waits are
    // bounded one by one instead (no data for policy.stall_timeout, a count of attempts), so a long
    // transfer that kept moving is not failed for its length: the pull, and finish, whose failure
    // reads as leak risk although the instance was proven gone.
    bool overrun_is_timeout = true;
};

struct StepTiming {
    std::string name;
    std::string outcome;  // done | failed | skipped | not run
    double duration_s = 0;
};

struct RunReport {
    std::vector<StepTiming> steps;           // the table's steps, then "finish"
    std::optional<common::Error> first_failure;  // of the table's steps (interrupt included)
    std::optional<common::Error> finish_failure;
    int exit_code() const;  // 0, the first failure's kind, or 10 when finish failed with leak risk
};

// Runs `steps` in order; stops after the first that throws (its error is recorded, not rethrown) or
// once common::interrupted() is set; then runs `finish` with the outcome. `finish` must not be
// interrupted by the same Ctrl-C: the interrupt flag is cleared before it runs (a second Ctrl-C
// still exits at once, per common/program.h).
RunReport run_steps(const std::vector<Step> & steps, const Step & finish, RunDir & dir, common::Clock & clock,
                    const std::function<void(const RunReport &)> & before_finish = {});

}  // namespace deploy
