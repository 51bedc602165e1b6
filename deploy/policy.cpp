// Policy decisions (see policy.h). Pure functions; the orchestrator applies them.
#include "deploy/policy.h"

#include <algorithm>

#include "common/clock.h"
#include "common/error.h"

namespace deploy {

std::string_view end_action_name(EndAction action) {
    return action == EndAction::Terminate ? "terminate" : "keep";
}

EndAction parse_end_action(std::string_view text) {
    if (text == "terminate") return EndAction::Terminate;
    if (text == "keep") return EndAction::Keep;
    throw common::Error::usage("policy: unknown action '" + std::string(text) + "': use terminate or keep");
}

EndDecision decide(const Policy & policy, Outcome outcome, double now_unix, std::optional<double> cost_cap_unix, bool watchdog_armed) {
    const bool ok = outcome == Outcome::Succeeded;
    const std::string rule = ok ? "on_success" : "on_failure";
    EndAction action = ok ? policy.on_success : policy.on_failure;
    EndDecision d{action, 0, {}};
    if (action == EndAction::Terminate) {
        d.reason = rule + ": terminate";
        return d;
    }
    if (!watchdog_armed)
        return EndDecision{EndAction::Terminate, 0,
                           rule + ": keep, but the run ended before its watchdog was armed, so no watchdog would end the instance: terminate"};
    d.keep_until_unix = now_unix + policy.keep_ttl_s;
    const std::string then = "; the watchdog and `broker sweep` end it then)";
    if (!cost_cap_unix || *cost_cap_unix >= d.keep_until_unix) {
        d.reason = rule + ": keep for " + common::format_duration(policy.keep_ttl_s) + " (until " +
                   common::format_utc_minute(d.keep_until_unix) + then;
    } else if (*cost_cap_unix > now_unix) {
        // The kept box bills on: policy.max_cost_usd caps it as it capped the run.
        d.keep_until_unix = *cost_cap_unix;
        d.reason = rule + ": keep for " + common::format_duration(*cost_cap_unix - now_unix) + ", not keep_ttl " +
                   common::format_duration(policy.keep_ttl_s) + ": policy.max_cost_usd is reached then (until " +
                   common::format_utc_minute(d.keep_until_unix) + then;
    } else {
        d = EndDecision{EndAction::Terminate, 0, rule + ": keep, but policy.max_cost_usd is already reached: terminate"};
    }
    return d;
}

double cost_usd(double price_usd_per_hour, double elapsed_s) { return price_usd_per_hour * elapsed_s / 3600.0; }

bool over_budget(const Policy & policy, double price_usd_per_hour, double elapsed_s) {
    return policy.max_cost_usd && cost_usd(price_usd_per_hour, elapsed_s) >= *policy.max_cost_usd;
}


std::optional<double> cost_cap_unix(const Policy & policy, double price_usd_per_hour, double created_unix) {
    if (!policy.max_cost_usd || price_usd_per_hour <= 0) return std::nullopt;
    return created_unix + *policy.max_cost_usd / price_usd_per_hour * 3600.0;
}

RunBudget run_budget(double max_duration_s, double instance_end_unix, double now_unix, double margin_s) {
    const double left = std::max(0.0, instance_end_unix - now_unix - margin_s);
    if (left >= max_duration_s) return {max_duration_s, false};
    return {left, true};
}

double reconnect_window_s(const Policy & policy) { return std::max(180.0, policy.heartbeat_timeout_s - 60); }

double instance_lifetime_s(const Policy & policy, double price_usd_per_hour) {
    const double slack = policy.max_duration_s + kLifetimeSlackS;
    if (!policy.max_cost_usd || price_usd_per_hour <= 0) return slack;
    return std::min(slack, *policy.max_cost_usd / price_usd_per_hour * 3600.0);
}

bool cost_cap_binds(const Policy & policy, double price_usd_per_hour) {
    return instance_lifetime_s(policy, price_usd_per_hour) < policy.max_duration_s + kLifetimeSlackS;
}

std::optional<double> max_price_for_run_time(const Policy & policy) {
    if (!policy.max_cost_usd) return std::nullopt;
    return *policy.max_cost_usd * 3600.0 / kPullFinishMarginS;
}

}  // namespace deploy
