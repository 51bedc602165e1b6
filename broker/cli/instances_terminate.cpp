// `broker instances terminate ID... | --all`: asks for confirmation unless --yes, then proves it:
// re-lists until each instance is gone or terminal. Any that still bill → exit 10 (leak_risk).
#include <unistd.h>

#include <iostream>

#include "broker/cli/verbs.h"
#include "common/log.h"
#include "common/units.h"

namespace broker::cli {

int run_instances_terminate(const GlobalOptions & g, const InstancesTerminateOptions & o, const common::Output & out) {
    if (o.all == !o.refs.empty())
        throw common::Error::usage("instances terminate: name instance ids (provider:id) or --all, not both and not neither");
    auto broker = make_broker(g);
    std::vector<InstanceRef> refs;
    if (o.all) {
        std::vector<ProviderFailure> failures;
        const auto asked = broker->providers_for(o.providers);
        auto names = asked;
        if (o.providers.empty()) names.push_back("local");
        for (const auto & i : broker->list(names, failures))
            if (i.status != InstanceStatus::Terminated) refs.push_back({i.provider, i.id});
        report_failures(failures);
        // "Nothing to terminate" must not be said when nothing could be asked.
        throw_if_none_answered("instances terminate --all", asked, failures);
        if (!failures.empty())
            common::log::warn("instances on the providers above were not listed, so not terminated");
    } else {
        for (const auto & r : o.refs) refs.push_back(parse_instance_ref(r, broker->ledger()));
    }
    if (refs.empty()) {
        out.text("nothing to terminate");
        if (out.json()) out.rows({}, nlohmann::json::array());
        return 0;
    }
    if (!o.yes) {
        if (!::isatty(STDIN_FILENO))
            throw common::Error::usage("instances terminate: refusing without confirmation on a non-interactive stdin; pass --yes");
        std::cerr << "terminate " << refs.size() << " instance(s):";
        for (const auto & r : refs) std::cerr << " " << r.provider << ":" << r.id;
        std::cerr << "? [y/N] " << std::flush;
        std::string answer;
        std::getline(std::cin, answer);
        if (answer != "y" && answer != "Y" && answer != "yes") {
            common::log::info("not terminated");
            return 0;
        }
    }
    auto budget = std::chrono::duration_cast<common::Duration>(std::chrono::duration<double>(common::parse_duration_s(o.prove_timeout)));
    nlohmann::json rows = nlohmann::json::array();
    std::vector<std::string> leaks;
    for (const auto & r : refs) {
        nlohmann::json row = {{"ref", r.provider + ":" + r.id}, {"provider", r.provider}, {"id", r.id}};
        try {
            auto t = broker->terminate_and_prove(r.provider, r.id, budget, poll_interval(g));
            row["proven"] = t.proven;
            row["last_status"] = t.last_status;
            if (!t.proven) leaks.push_back(r.provider + ":" + r.id + " (still " + t.last_status + ")");
        } catch (const common::Error & e) {
            row["proven"] = false;
            row["error"] = e.message();
            leaks.push_back(r.provider + ":" + r.id + " (" + e.message() + ")");
        }
        rows.push_back(row);
    }
    out.rows({{"ref", "INSTANCE"}, {"proven", "GONE"}, {"last_status", "LAST_STATUS"}}, rows);
    if (!leaks.empty()) {
        std::string msg = "termination not proven, may still bill:";
        for (const auto & l : leaks) msg += " " + l;
        msg += "; run: broker instances terminate <id> --yes, or check the provider's console";
        throw common::Error(common::ErrorKind::LeakRisk, msg);
    }
    return 0;
}

}  // namespace broker::cli
