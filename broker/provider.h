// The one interface every cloud implements (the shape of SkyPilot's sky/provision; docs/README.md,
// "Design anchors"). Waiting, cleanup, ledger and output are written once, outside the providers; a
// provider only speaks its API and maps units and statuses. Optional abilities are declared in
// ProviderCaps, never discovered by catching errors.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/instance.h"
#include "broker/offer.h"
#include "common/clock.h"
#include "common/http.h"

namespace broker {

struct ProviderCaps {
    bool stop_start = false;       // stop() and start() do something (RunPod, Vast, local)
    bool native_deadline = false;  // the cloud terminates at a deadline we send (RunPod terminateAfter)
    bool spot = false;             // offers interruptible instances
    bool needs_api_key = true;     // false for local and ssh-hosts
};

// Everything a provider needs from the outside: its key, its base URL, HTTP settings, a clock and
// a state directory (local instances, ssh-host leases). Built by the registry from credentials.
struct ProviderContext {
    std::string api_key;
    std::string base_url;    // scheme://host[:port]; the API's own path prefix is added by the provider
    common::http::Options http;
    common::Clock * clock = &common::real_clock();
    std::string state_dir;   // per-user state (XDG_STATE_HOME/toolkit)
    std::string hosts_file;  // ssh-hosts inventory
};

class Provider {
public:
    virtual ~Provider() = default;
    virtual std::string_view name() const = 0;
    virtual ProviderCaps caps() const = 0;
    // Offers, with whatever filters the API supports pushed down; the broker re-checks every filter.
    virtual std::vector<Offer> search(const OfferFilter & filter) = 0;
    // One attempt to rent `request.offer`. Throws Error(Capacity) when the offer is gone or full (the
    // caller falls through to the next offer), Error(Quota) for balance problems. The ledger intent
    // is written by the caller before this runs.
    virtual Instance create(const CreateRequest & request) = 0;
    // nullopt: the provider no longer knows the instance (gone).
    virtual std::optional<Instance> get(std::string_view id) = 0;
    // Instances whose name carries our prefix (others on the account are not ours to touch).
    virtual std::vector<Instance> list() = 0;
    // Ends billing. An instance that is already gone is success.
    virtual void terminate(std::string_view id) = 0;
    // Only called when caps().stop_start.
    virtual void stop(std::string_view id);
    virtual void start(std::string_view id);
};

}  // namespace broker
