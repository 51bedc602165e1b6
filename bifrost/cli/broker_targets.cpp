// Lets the `bifrost` program take broker instance ids ("runpod:abc123", or a bare id the ledger
// knows) wherever it takes a target. The bifrost library itself stays independent of broker: only
// this program-level file links the two, through bifrost's InstanceResolver hook.
#include "bifrost/cli/commands.h"

#include "bifrost/target.h"
#include "broker/broker.h"

namespace bifrost::cli {

void install_broker_resolver() {
    set_instance_resolver([](std::string_view text) -> std::optional<Endpoint> {
        broker::Broker broker;  // reads the same config, credentials and ledger as `broker`
        broker::InstanceRef ref = broker::parse_instance_ref(std::string(text), broker.ledger());
        std::optional<broker::Instance> instance = broker.provider(ref.provider).get(ref.id);
        if (!instance) return std::nullopt;
        if (!instance->ssh)
            throw common::Error(common::ErrorKind::NotFound,
                                ref.provider + ":" + ref.id + ": no SSH endpoint yet (status " +
                                    instance->status_raw + "); wait with `broker instances show " + ref.provider +
                                    ":" + ref.id + "`");
        return Endpoint{instance->ssh->user, instance->ssh->host, instance->ssh->port, instance->ssh->key_path};
    });
}

}  // namespace bifrost::cli
