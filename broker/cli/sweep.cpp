// `broker sweep`: reconcile ledger and provider listings; terminate instances past their deadline.
#include "broker/cli/verbs.h"

namespace broker::cli {

int run_sweep(const GlobalOptions & g, const SweepCliOptions & o, const common::Output & out) {
    auto broker = make_broker(g);
    auto names = broker->providers_for(o.providers);
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
    out.rows({{"provider", "PROVIDER"}, {"id", "ID"}, {"name", "NAME"}, {"action", "ACTION"}, {"detail", "DETAIL"}}, rows);
    if (leak) throw common::Error(common::ErrorKind::LeakRisk, "sweep: some instances past their deadline could not be proven terminated");
    return 0;
}

}  // namespace broker::cli
