// `broker instances show ID`: one instance, as the provider reports it now.
#include "broker/cli/verbs.h"

namespace broker::cli {

int run_instances_show(const GlobalOptions & g, const InstancesShowOptions & o, const common::Output & out) {
    auto broker = make_broker(g);
    InstanceRef ref = parse_instance_ref(o.ref, broker->ledger());
    auto inst = broker->provider(ref.provider).get(ref.id);
    if (!inst) throw common::Error::not_found(ref.provider + ":" + ref.id, "the provider does not list it (terminated or never existed)");
    auto obj = instance_to_json(*inst, broker->clock().unix_now());
    obj["ref"] = ref.provider + ":" + ref.id;
    obj["ssh_command"] = ssh_command(*inst, ssh_key_for(*inst, broker->ledger()));
    if (!inst->status_detail.empty()) obj["status_detail"] = inst->status_detail;
    out.object(out.json() ? obj : with_table_prices(obj));
    return 0;
}

}  // namespace broker::cli
