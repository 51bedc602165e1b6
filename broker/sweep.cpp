// `broker sweep`: reconciles the ledger with the providers' own listings (the truth) and terminates
// instances past the deadline carried in their names. Rows the ledger holds are checked against the
// provider; instances the providers list that the ledger does not know are adopted, not ignored.
#include <algorithm>

#include "broker/broker.h"
#include "common/log.h"

namespace broker {

namespace {
// An intent with no instance after this long is a create that never happened (or was cleaned up).
constexpr double kIntentGraceS = 15 * 60;
}  // namespace

std::vector<SweepAction> Broker::sweep(const std::vector<std::string> & names, bool dry_run,
                                       std::vector<ProviderFailure> & failures) {
    std::vector<SweepAction> actions;
    const double now = options_.clock->unix_now();
    std::vector<ProviderFailure> list_failures;
    auto instances = list(names, list_failures);
    failures.insert(failures.end(), list_failures.begin(), list_failures.end());
    auto failed_provider = [&](const std::string & p) {
        return std::any_of(list_failures.begin(), list_failures.end(), [&](const auto & f) { return f.provider == p; });
    };

    for (const auto & inst : instances) {
        auto parsed = parse_instance_name(inst.name);
        if (!parsed) continue;
        auto by_name = ledger().find_by_name(inst.name);
        if (by_name && by_name->provider == inst.provider && by_name->state == "intent") {
            // The create's outcome was never recorded (crash, lost answer): the name links them.
            if (!dry_run) ledger().record_created(inst.name, inst.id);
            actions.push_back({inst.provider, inst.id, inst.name, "recorded", "intent without outcome; found by name"});
        } else if (!ledger().find_instance(inst.provider, inst.id)) {
            LedgerEntry e;
            e.name = inst.name;
            e.provider = inst.provider;
            e.instance_id = inst.id;
            e.run_id = parsed->run_id;
            e.deadline_unix = parsed->deadline_unix;
            e.price_usd_per_hour = inst.price_usd_per_hour.value_or(0);
            if (!dry_run) ledger().adopt(e);
            actions.push_back({inst.provider, inst.id, inst.name, "adopted", "listed by the provider, unknown to the ledger"});
        }
        if (parsed->deadline_unix > 0 && now > parsed->deadline_unix && inst.status != InstanceStatus::Terminated) {
            if (dry_run) {
                actions.push_back({inst.provider, inst.id, inst.name, "would-terminate", "past its deadline"});
                continue;
            }
            try {
                auto t = terminate_and_prove(inst.provider, inst.id);
                actions.push_back({inst.provider, inst.id, inst.name, t.proven ? "terminated" : "leak-risk",
                                   t.proven ? "past its deadline" : "still " + t.last_status + " after terminate"});
            } catch (const common::Error & e) {
                actions.push_back({inst.provider, inst.id, inst.name, "leak-risk", e.message()});
            }
        }
    }

    for (const auto & e : ledger().open_entries()) {
        if (std::find(names.begin(), names.end(), e.provider) == names.end() || failed_provider(e.provider)) continue;
        auto listed = std::find_if(instances.begin(), instances.end(), [&](const Instance & i) {
            return i.provider == e.provider && (i.name == e.name || (!e.instance_id.empty() && i.id == e.instance_id));
        });
        if (e.state == "intent") {
            if (listed != instances.end()) {
                if (!dry_run) ledger().record_created(e.name, listed->id);
                actions.push_back({e.provider, listed->id, e.name, "recorded", "intent without outcome; found by name"});
            } else if (now - e.updated_unix > kIntentGraceS) {
                if (!dry_run) ledger().record_failed(e.name, "no instance with this name appeared");
                actions.push_back({e.provider, "", e.name, "closed", "intent without an instance"});
            }
            continue;
        }
        if (listed == instances.end() && !e.instance_id.empty()) {
            // Not in the listing: ask directly before declaring it gone (listings can lag).
            std::optional<Instance> got;
            try {
                got = provider(e.provider).get(e.instance_id);
            } catch (const common::Error & err) {
                failures.push_back({e.provider, err});
                continue;
            }
            if (!got || got->status == InstanceStatus::Terminated) {
                if (!dry_run) ledger().record_terminated(e.provider, e.instance_id);
                actions.push_back({e.provider, e.instance_id, e.name, "gone", "no longer listed by the provider"});
            }
        }
    }
    return actions;
}

}  // namespace broker
