// `broker instances list`: our instances on every provider with a key (plus local and ssh-hosts when
// named, and slurm when clusters are defined), with status, GPU, price, uptime, cost so far and the SSH command.
//
// "Nothing is billing" and "could not ask" must never look alike: a provider that could not be
// asked is a warning on stderr and an entry in the --json output's "failed_providers"; when none of
// the providers asked answered, the command fails (exit 6 when they were unreachable). A partial
// answer exits 0 with the warnings (broker/README.md, "Listings when a provider does not answer").
#include "broker/cli/verbs.h"
#include "broker/registry.h"
#include "common/log.h"

namespace broker::cli {

int run_instances_list(const GlobalOptions & g, const InstancesListOptions & o, const common::Output & out) {
    auto broker = make_broker(g);
    // The providers the user asked about: named ones, or every cloud with a key. Local instances are
    // added when none were named (they cost nothing to look at) but do not count as an answer.
    const auto asked = broker->providers_for(o.providers);
    auto names = asked;
    if (o.providers.empty()) names.push_back("local");
    // Our Slurm jobs are listed whenever clusters are defined: looking costs nothing.
    if (o.providers.empty() && !broker->config().slurm_clusters.empty()) names.push_back("slurm");
    std::vector<ProviderFailure> failures;
    auto instances = broker->list(names, failures);
    report_failures(failures);
    nlohmann::json rows = nlohmann::json::array();
    for (const auto & i : instances) {
        auto row = instance_to_json(i, broker->clock().unix_now());
        row["ref"] = i.provider + ":" + i.id;
        row["ssh_command"] = ssh_command(i, ssh_key_for(i, broker->ledger()));
        rows.push_back(row);
    }
    const nlohmann::json listing = {{"instances", rows}, {"failed_providers", failures_to_json(failures)}};
    try {
        throw_if_none_answered("instances list", asked, failures);
    } catch (const common::Error &) {
        if (out.json()) out.object(listing);  // scripts still get the failures as data; the exit says it
        throw;
    }
    if (out.json()) {
        out.object(listing);
    } else {
        out.rows({{"ref", "INSTANCE"},
                  {"name", "NAME"},
                  {"status", "STATUS"},
                  {"status_raw", "RAW"},
                  {"gpu_model", "GPU"},
                  {"gpu_count", "N"},
                  {"price_usd_per_hour", "$/H"},
                  {"uptime_s", "UPTIME_S"},
                  {"cost_so_far_usd", "COST_$"},
                  {"ssh", "SSH"}},
                 with_table_prices(rows));
        if (!failures.empty())
            common::log::warn("the list above leaves out ", failures.size(),
                              " provider(s) that could not be asked; their instances may still bill");
    }
    return 0;
}

}  // namespace broker::cli
