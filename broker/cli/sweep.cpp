// `broker sweep`: reconcile ledger and provider listings; terminate instances past their deadline.
// Providers that could not be asked are warnings on stderr and "failed_providers" in --json; when
// none of the providers asked answered, the sweep fails (exit 6 when unreachable) instead of
// reporting an empty, clean-looking sweep (broker/README.md).
#include "broker/cli/verbs.h"
#include "common/log.h"

namespace broker::cli {

int run_sweep(const GlobalOptions & g, const SweepCliOptions & o, const common::Output & out) {
    auto broker = make_broker(g);
    const auto asked = broker->providers_for(o.providers);
    auto names = asked;
    if (o.providers.empty()) names.push_back("local");
    std::vector<ProviderFailure> failures;
    auto actions = broker->sweep(names, o.dry_run, failures);
    report_failures(failures);
    nlohmann::json rows = nlohmann::json::array();
    bool leak = false;
    for (const auto & a : actions) {
        rows.push_back({{"provider", a.provider}, {"id", a.id}, {"name", a.name}, {"action", a.action}, {"detail", a.detail}});
        if (a.action == "leak-risk") leak = true;
    }
    const nlohmann::json result = {{"actions", rows}, {"failed_providers", failures_to_json(failures)}};
    try {
        throw_if_none_answered("sweep", asked, failures);
    } catch (const common::Error &) {
        if (out.json()) out.object(result);
        throw;
    }
    if (out.json()) out.object(result);
    else out.rows({{"provider", "PROVIDER"}, {"id", "ID"}, {"name", "NAME"}, {"action", "ACTION"}, {"detail", "DETAIL"}}, rows);
    if (leak) throw common::Error(common::ErrorKind::LeakRisk, "sweep: some instances past their deadline could not be proven terminated");
    if (!failures.empty())
        common::log::warn("sweep: ", failures.size(), " provider failure(s) above: instances there were not checked");
    return 0;
}

}  // namespace broker::cli
