// `broker instances list`: our instances on every provider with a key (plus local and ssh-hosts when
// named), with status, GPU, price, uptime, cost so far and the SSH command.
#include "broker/cli/verbs.h"
#include "broker/registry.h"

namespace broker::cli {

namespace {
std::vector<std::string> with_local(Broker & b, const std::vector<std::string> & requested) {
    auto names = b.providers_for(requested);
    if (requested.empty()) names.push_back("local");  // local instances cost nothing to look at
    return names;
}
}  // namespace

int run_instances_list(const GlobalOptions & g, const InstancesListOptions & o, const common::Output & out) {
    auto broker = make_broker(g);
    std::vector<ProviderFailure> failures;
    auto instances = broker->list(with_local(*broker, o.providers), failures);
    report_failures(failures);
    nlohmann::json rows = nlohmann::json::array();
    for (const auto & i : instances) {
        auto row = instance_to_json(i, broker->clock().unix_now());
        row["ref"] = i.provider + ":" + i.id;
        row["ssh_command"] = ssh_command(i, i.ssh && !i.ssh->key_path.empty() ? i.ssh->key_path : "");
        rows.push_back(row);
    }
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
             rows);
    if (!failures.empty() && instances.empty() && failures.size() == 1 && o.providers.size() == 1) throw failures[0].error;
    return 0;
}

}  // namespace broker::cli
