// The deploy_and_analyze flow over broker (offers, instances, terminate-and-prove) and bifrost
// (push, detached jobs, logs, pull): [data] → estimate → offers → [slot] → create → ready → push →
// watchdog → fetch → bootstrap → run (streamed) → pull, then finish (policy → terminate → prove
// gone), each a named step with a deadline in the step table (steps.h), journalled in the run
// directory. `data` runs only for a Hub rows source, `slot` only with --download-slots (a sweep).
#pragma once

#include <string>

#include "broker/broker.h"
#include "common/clock.h"
#include "common/output.h"
#include "deploy/download_slots.h"
#include "deploy/run_config.h"

namespace deploy {

struct FlowOptions {
    std::string workspace;          // the source tree pushed to the instance (the repository root)
    std::string run_dir;            // empty: <config.output_dir>/<run id>
    std::string ssh_key;            // empty: a fresh ed25519 key per run in RUN_DIR/ssh/
    std::string remote_cache_dir;   // empty: <broker state dir>/remote-cache for local, ~/.cache/toolkit elsewhere
    std::string broker_program;     // the `broker` binary, for the local rehearsal's watchdog
    std::string analyze_program;    // local `analyze`: redraws the plots after the pull when the instance drew none
    broker::BrokerOptions broker;
    double poll_s = 2;              // job status/log poll while streaming
    double ready_poll_s = 5;
    // Batch schedulers: how often the scheduler is asked about a job (squeue over a fresh SSH login;
    // sites limit logins). The job's output is read every poll_s over the open connection.
    double scheduler_poll_s = 10;
    bool gpu_check = true;          // readiness runs nvidia-smi and checks GPU count and VRAM
    DownloadSlotSpec download_slots;  // a sweep's cap on Hub downloads at once; the fetch step holds a slot
    // Test hook: SIGKILL this process once the named step has started ("run"), or at a named point:
    // "create:answered" (the provider created the instance, not yet recorded in state.json),
    // "<role>:submitted" (a batch job, e.g. "build:submitted", submitted but not yet recorded).
    std::string stop_after_step_started;
};

// Runs a new run; returns the exit code (0, the first failing step's kind, or 10 for leak risk).
// Prints the summary on `out` (table or --json).
int run_new(const RunConfig & config, const FlowOptions & options, const common::Output & out);

// Reattaches to RUN_DIR: skips the steps already done, reconnects, streams the job from the saved
// log offset, pulls and finishes. A finished run is only summarised.
int run_resume(const std::string & run_dir, const FlowOptions & options, const common::Output & out);

}  // namespace deploy
