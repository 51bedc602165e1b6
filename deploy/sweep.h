// deploy_and_analyze --sweep FILE: many run configs as one study (issue #15). This part reads and
// checks the sweep file and plans it (--dry-run); nothing here rents anything.
//
// A sweep file (YAML, read through common::ConfigNode with the same bounds and file:line errors
// as a run config; see configs/sweeps/*.yaml):
//
//   sweep:                       # the sweep itself
//     name: predecessor-moe      # [a-z0-9-], 3..40 characters: the sweep directory's name
//     max_cost_usd: 150          # the whole sweep: enforced while running on the members' accrued cost
//     max_parallel: 4            # members running at once (--max-parallel overrides)
//     download_stagger: 30s      # between two members' starts
//     max_concurrent_downloads: 2  # Hub downloads at once across the members (default: no cap)
//   base:                        # a run config's sections (configs/*.yaml keys); model optional
//     data: ...
//   members:                     # at most kMaxMembers
//     - id: qwen3-30b-a3b        # [a-z0-9-], 4..24 characters, unique also with the dashes dropped
//       config: ../qwen3-30b-a3b.yaml   # optional: this run config file instead of base
//       family: qwen3_moe        # optional: the model_type, checked against what extract implements
//       model: {hub: Qwen/Qwen3-30B-A3B}
//       resources: {gpu_count: 2, min_vram_gb: 44}   # any run-config section overrides
//
// A member whose family extract does not implement yet (pending_family_reason; none now) is
// `blocked`: the dry run shows it with the reason; a real sweep refuses the file up front.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "broker/broker.h"
#include "common/output.h"
#include "deploy/policy.h"
#include "deploy/run_config.h"

namespace deploy {

constexpr size_t kMaxSweepMembers = 64;

struct SweepMember {
    std::string id;          // unique in the sweep; its run directory is <sweep dir>/<id>
    std::string family;      // declared model_type ("" when not declared and not a fixture)
    std::string blocked;     // non-empty: why this member cannot run yet
    RunConfig config;        // the member's resolved run config (name = id without dashes)
};

struct SweepFile {
    std::string source;
    std::string name;
    std::optional<double> max_cost_usd;
    int max_parallel = 2;
    double download_stagger_s = 30;
    int max_concurrent_downloads = 0;  // 0: no cap
    std::string output_dir = "runs/sweeps";
    std::vector<SweepMember> members;
    // The command line's flags applied to every member (apply_sweep_overrides), as given: shown in
    // the plan, so a dry run says what the members will get beyond the file.
    std::vector<std::string> overrides;
};

// Families extract implements (the same list its fixture writer knows), and those waiting on an
// issue, with the words for the message.
const std::vector<std::string> & extract_families();
std::string pending_family_reason(const std::string & family);  // "" when not pending

// Reads and checks the whole file: ids (syntax, length, unique, unique once compacted into an
// instance name), every member's run config (validate()), families, and, under a budget, that every
// runnable member has a cost bound (member_cost_bound_usd: a SIGKILLed sweep leaves each member to
// its own). Members whose bounds add up past sweep.max_cost_usd are allowed (a warning says so):
// the budget is enforced while the sweep runs. Throws common::Error(usage) naming file:line:column
// or the member.
SweepFile load_sweep(const std::string & path);
SweepFile parse_sweep(const std::string & yaml_text, const std::string & name = "<sweep>");

// Flags of `deploy_and_analyze --sweep FILE` for every member (--provider, --max-price, --max-cost,
// --max-duration, --keep-running, --num-sequences, ...): applied to each member's resolved config
// after the file (base, then the member's own keys), so the command line wins; each member is then
// checked again (validate), naming it. overrides.output_dir moves the sweep directory
// (<output_dir>/<name>) and every member's run directory in it. Fields that size one model or name
// one run (model, name, gpu_count, min_vram_gb, min_cpu_ram_gb, offload_gb) differ per member and
// are refused (usage), naming the flag. `shown`: the flags as given, kept in sweep.overrides.
void apply_sweep_overrides(SweepFile & sweep, const Overrides & overrides, const std::vector<std::string> & shown);

// How long a member's instance may bill at `price_usd_per_hour`: instance_lifetime_s (the run's
// max_duration plus kLifetimeSlackS for pull and finish, less where max_cost_usd binds), plus
// keep_ttl when on_success or on_failure keeps it (a kept instance lives on for keep_ttl after its
// run, never past the cost cap).
double member_lifetime_s(const Policy & policy, double price_usd_per_hour);
// The most a member can cost: policy.max_cost_usd, else max_price x member_lifetime_s at that
// price; nullopt when neither bounds it (a sweep with a budget refuses such a member).
std::optional<double> member_cost_bound_usd(const RunConfig & config);

// A real sweep refuses blocked members before renting anything (usage error naming them).
void refuse_blocked(const SweepFile & sweep);

// The dry run: per member the estimate (from config.json when min_vram_gb is auto and it can be
// read; the network is asked only for Hub models), the cheapest matching offer in provider order,
// and the cost bound; plus the total. Nothing is created. One JSON object:
//   {"sweep", "members": [{"id", "model", "family", "state", "gpu_count", "min_vram_gb",
//     "estimate_gb", "params", "offer", "price_usd_per_hour", "max_duration_s", "lifetime_s",
//     "cost_bound_usd", "note"}], "total_cost_bound_usd", "max_cost_usd", "overrides"}
// lifetime_s is member_lifetime_s at the offer's price (at max_price without an offer; absent when
// neither is known), the time the cost bound is taken over.
nlohmann::json plan_sweep(const SweepFile & sweep, broker::Broker & broker);
// The same plan for one run (deploy_and_analyze --config FILE --dry-run): one row, "run": true.
nlohmann::json plan_run(const RunConfig & config, broker::Broker & broker);
// The plan as a table (member rows, then the total and the budget), or the object itself with --json.
void print_sweep_plan(const nlohmann::json & plan, const common::Output & out);

// ---- running a sweep ----------------------------------------------------------------------------
// Each member runs as a child process of this same program, an ordinary single run
// (`deploy_and_analyze --sweep FILE --member ID --run-dir <sweep dir>/<id>`, or `--resume` of that
// directory). Children, not threads: the single-run flow keeps its process-wide state (the
// interrupt flag, log verbosity, the bifrost client) as it is, a member that crashes cannot take
// the others down, Ctrl-C is forwarded as SIGTERM to each child, which then runs its own finish
// (terminate and prove gone), and `--resume <member dir>` is the ordinary resume. Children run in
// their own sessions: a SIGKILLed sweep leaves them running to their own end (each instance keeps
// its own deadline and watchdog).
//
// Stopping (Ctrl-C/SIGTERM, the budget, --fail-fast, or an error in the sweep's own loop): each
// running member gets one SIGTERM (a second would make it exit without its finish) and the sweep
// waits for it to exit, naming who it waits for every progress_s. A Ctrl-C during that wait stops
// the waiting, not the members: they go on with their finish in their own sessions, and the sweep
// lists each one's instance and run directory before it exits 130. The wait follows each member's
// progress: its finish stops its job, pulls results and logs into its run directory (files that
// grow as data arrives), writes its journal and state.json, and logs; while any of those changes the
// member is waited for (a large salvage pull is never cut for its length). Only a member that shows
// no progress for its quiet window, or is still there at finish_hard_cap_s, is SIGKILLed, and
// reported with its run directory and instance (leak risk, exit 10, unless its instance was already
// proven gone).
struct SweepRunOptions {
    std::string program;                  // this binary (/proc/self/exe)
    std::vector<std::string> child_args;  // flags every child gets (--state-dir, --workspace, ...)
    bool fail_fast = false;               // the first failed member stops the others
    bool retry_failed = false;            // finished-and-failed members run again (their old directory kept aside)
    double poll_s = 1;
    bool live = false;                    // redraw a table in place (stdout is a TTY); else a line per change
    std::string analyze_program;          // for the combined report at the end; empty: no report
    // A stopping member's quiet window: how long it may show no progress before it is killed. Unset:
    // kPullFinishMarginS + 5 min (the 15 min a finish is given before the instance's own end, plus
    // 5 min for the step it was in to reach its next poll), or the member's policy.stall_timeout +
    // 5 min where that is longer (a command that moves nothing is abandoned only after it, and proving
    // the instance gone may take 5 min more, neither writing anything here).
    std::optional<double> finish_wait_s;
    // The most a stopping member is waited for in all, progressing or not (a member whose log grows
    // for ever is not finishing); never less than its quiet window.
    double finish_hard_cap_s = 4 * 3600;
    double progress_s = 30;               // while waiting: who is still finishing, this often
};

// The sweep directory: <output_dir>/<name>. A member already finished there is not run again
// (unless it failed and retry_failed); one that started and did not finish is resumed. Ends with a
// summary (per member: outcome, exit code, cost, results path; the total) on `out`, and writes it
// to <sweep dir>/summary.json (outcome per member: succeeded, failed, interrupted, stopped (budget),
// stopped (sweep error), not started, killed, finishing on its own, ...). Returns 0 when every
// member succeeded, 10 when any member reports leak risk or was killed with its instance not
// proven gone, 130 after Ctrl-C, else the first failed member's exit code. An error in the sweep's
// own loop stops the members as above, writes the summary, and is then thrown (as leak risk when a
// member had to be killed).
int run_sweep(const SweepFile & sweep, const SweepRunOptions & options, const common::Output & out);
// A stopping member's quiet window (SweepRunOptions::finish_wait_s, or its default for `member`).
double finish_quiet_s(const SweepRunOptions & options, const RunConfig & member);

// The combined report: <sweep dir>/report.md, with `analyze compare` run twice over the members'
// outliers.json (parameter counts from each member's own results/inspect.json, which the job writes
// with `extract inspect`: once against total, once against active parameters) into
// <sweep dir>/report/{total,active}/ (comparison.md/.json and plots), and per member the outcome,
// cost and wall time. The compare uses the first mode (predecessor, paper) every member's results
// hold; with none in common it runs per mode into report/<mode>/{total,active}/. An instance not
// proven ended (no ended_unix, or a terminate not proven) is costed up to now, or to a keep
// deadline that has passed, and flagged as maybe still billing in its row and the total. Members
// without results are listed, not compared. A compare that fails is stated in the report (its
// message as text), which is written all the same. Returns the report's path.
std::string write_sweep_report(const SweepFile & sweep, const std::string & analyze_program);
// The report's own plots (PNG and SVG): cost and wall time per member, median layer % and median
// sequence % vs total and vs active parameters, perplexity vs outliers. `table` holds one object per
// member: "label" and any of params, params_active, cost_usd, wall_s, num_outliers,
// median_layer_pct, median_position_pct, perplexity. Only our own text and formatted numbers go
// into the script; labels and values go into the data files (see sweep_report.cpp).
struct SweepPlotJob {
    std::string script;
    std::vector<std::pair<std::string, std::string>> data_files;  // bare name -> contents
    std::vector<std::string> outputs;                             // bare names of the plots
};
SweepPlotJob sweep_plot_job(const nlohmann::json & table);
std::string sweep_dir(const SweepFile & sweep);
// A small JSON file from a member's run directory (state, summary, inspect.json); null when
// absent, torn (a member may be writing it) or over 4 MiB.
nlohmann::json read_member_json(const std::string & path);

}  // namespace deploy
