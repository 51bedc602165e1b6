// How a run ends and what it may spend: what to do with the instance after success and after
// failure (terminate, or keep — after a failure only for a TTL, so a forgotten debug box still
// ends), the longest the run may last and the most it may cost. decide() is a pure function of
// the outcome, so every branch is unit-tested; the orchestrator only carries it out.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace deploy {

enum class EndAction { Terminate, Keep };
std::string_view end_action_name(EndAction action);
EndAction parse_end_action(std::string_view text);  // "terminate" | "keep"; usage error otherwise

struct Policy {
    EndAction on_success = EndAction::Terminate;
    EndAction on_failure = EndAction::Terminate;
    double keep_ttl_s = 2 * 3600;       // a kept instance's lifetime from the end of the run
    // The run step's limit (the job on the instance). The instance itself lives longer: its own end
    // is fixed at the create, max_duration + kLifetimeSlackS (30 min to pull and finish) from then,
    // less where max_cost_usd binds (instance_lifetime_s below), and a kept one keep_ttl more.
    double max_duration_s = 3 * 3600;
    std::optional<double> max_cost_usd; // price x elapsed; the run stops (and ends per on_failure) past it
    double heartbeat_timeout_s = 600;   // the on-instance watchdog terminates after this long without one
    // Batch schedulers: how many times the cluster may restart the run's job (a node failure, a
    // preemption, an administrator's `scontrol requeue`) before the run gives up. 0: the job is
    // submitted as not requeueable, so such an end is final (NODE_FAIL, PREEMPTED).
    int max_requeues = 1;
    // The pull and finish: a remote command that moves no data for this long is abandoned (a read
    // hung on a stuck volume, a stop that never returns), so it cannot keep a billing instance from
    // its terminate. No data, not total time: a large pull that keeps moving is never cut.
    double stall_timeout_s = 5 * 60;
};

enum class Outcome { Succeeded, Failed, Interrupted };

struct EndDecision {
    EndAction action;
    // For Keep: the instance's new deadline (unix seconds) that the watchdog and sweep enforce.
    double keep_until_unix = 0;
    std::string reason;  // one line for the summary: "on_failure: keep for 2h (until 14:05 UTC)"
};

// Interrupted runs follow on_failure: a user who pressed Ctrl-C did not get results, and keeping
// the machine is only right when they asked to keep failed runs. `cost_cap_unix` (cost_cap_unix()
// below): a kept instance's deadline never passes it, since the kept box goes on billing and
// policy.max_cost_usd caps the whole run; one already past it is terminated instead of kept.
// `watchdog_armed` false: the run ended before the instance's watchdog was started (a failure or
// Ctrl-C in create, ready or push), so nothing on it would end a kept instance at the keep deadline
// (on most providers nothing but a `broker sweep` someone runs would end it at all): a keep becomes
// a terminate, and the reason says why.
EndDecision decide(const Policy & policy, Outcome outcome, double now_unix, std::optional<double> cost_cap_unix = std::nullopt,
                   bool watchdog_armed = true);

// Dollars spent so far at a price; nullopt price (unknown) counts as 0 and is reported as unknown.
double cost_usd(double price_usd_per_hour, double elapsed_s);
// True once max_cost_usd is set and spending `price` for `elapsed_s` reaches it.
bool over_budget(const Policy & policy, double price_usd_per_hour, double elapsed_s);
// When the instance, billing `price_usd_per_hour` since `created_unix`, has cost max_cost_usd;
// nullopt without a cap or without a price (a free instance never reaches it).
std::optional<double> cost_cap_unix(const Policy & policy, double price_usd_per_hour, double created_unix);

// How long the run step lets the job run. The instance's own end (the deadline in its name, RunPod's
// terminateAfter, the watchdog's) is fixed at the create: instance_lifetime_s() from then. The run
// step starts after booting, pushing, building and downloading, and again at every --resume, so a
// full max_duration from there could outlast the instance: the backstops would kill the job before
// the flow's own timeout, and finish would find nothing left to salvage. The budget is
// min(max_duration, instance end - now - margin), never negative; the margin is kept for the pull
// and for finish (salvage after a timeout, terminate and prove).
constexpr double kPullFinishMarginS = 15 * 60;
struct RunBudget {
    double seconds = 0;      // 0: the instance ends too soon to run anything
    bool shortened = false;  // less than max_duration
};
RunBudget run_budget(double max_duration_s, double instance_end_unix, double now_unix, double margin_s = kPullFinishMarginS);

// Room after max_duration for the pull and finish, in the instance's own end when the cost cap allows.
constexpr double kLifetimeSlackS = 30 * 60;
// How long an instance at `price_usd_per_hour` may live from its create: max_duration +
// kLifetimeSlackS, but never past the moment its price x lifetime reaches policy.max_cost_usd. A cap
// is a cap: where it binds, the instance (its watchdog, the deadline in its name) ends where the cap
// is reached, and the margin to pull and finish comes out of the run's own time (run_budget). A
// free instance, or no cap: the slack as it is.
double instance_lifetime_s(const Policy & policy, double price_usd_per_hour);
// Whether policy.max_cost_usd, not max_duration + slack, sets that lifetime at this price.
bool cost_cap_binds(const Policy & policy, double price_usd_per_hour);
// The price above which policy.max_cost_usd leaves a run no time at all: the cap is reached within
// kPullFinishMarginS of the create. Offers above it are not rented. nullopt without a cap.
std::optional<double> max_price_for_run_time(const Policy & policy);

// How long a run keeps reconnecting to its instance through a network outage on our side: as long
// as the on-instance watchdog keeps the machine without our heartbeats (less a minute), and never
// less than bifrost's own 3 minutes. Past it the run fails and finish applies on_failure.
double reconnect_window_s(const Policy & policy);

}  // namespace deploy
