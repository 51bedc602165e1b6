// `broker instances stop ID` / `start ID`: only for providers that can (ProviderCaps::stop_start).
// A stopped instance may still bill for storage; the output says so.
#include "broker/cli/verbs.h"

namespace broker::cli {

int run_instances_power(const GlobalOptions & g, const InstancesPowerOptions & o, const common::Output & out) {
    auto broker = make_broker(g);
    InstanceRef ref = parse_instance_ref(o.ref, broker->ledger());
    Provider & p = broker->provider(ref.provider);
    if (!p.caps().stop_start)
        throw common::Error::usage(ref.provider + " cannot stop or start instances; use `broker instances terminate`");
    if (o.start) p.start(ref.id);
    else p.stop(ref.id);
    auto inst = p.get(ref.id);
    nlohmann::json obj = {{"ref", ref.provider + ":" + ref.id},
                          {"requested", o.start ? "start" : "stop"},
                          {"status", inst ? std::string(status_name(inst->status)) : "gone"},
                          {"status_raw", inst ? inst->status_raw : "gone"}};
    if (!o.start) obj["note"] = "a stopped instance may still bill for its disk";
    out.object(obj);
    return 0;
}

}  // namespace broker::cli
