// The one interface every cloud implements (the shape of SkyPilot's sky/provision; docs/README.md,
// "Design anchors"). Waiting, cleanup, ledger and output are written once, outside the providers; a
// provider only speaks its API and maps units and statuses. Optional abilities are declared in
// ProviderCaps, never discovered by catching errors.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "broker/instance.h"
#include "broker/offer.h"
#include "broker/slurm_cluster.h"
#include "common/clock.h"
#include "common/http.h"

namespace broker {

// How an instance can be ended when nobody is left to end it (the process that rented it died, the
// laptop closed): what deploy's on-instance watchdog does when heartbeats stop or its deadline
// passes. Deploy picks its watchdog behaviour from this alone and never asks which provider it is.
enum class SelfEnd {
    // Nothing on the instance can end it (no scoped credential: Lambda, Prime Intellect; a leased
    // host is not ours to end: ssh-hosts). The backstop is the native deadline, when the provider
    // has one, and `broker sweep` reading the deadline in the instance's name.
    None,
    // An HTTP request with a credential scoped to this one instance, which the provider puts in the
    // instance's PID 1 environment (RunPod's pod key, Vast's container key): self_end_request().
    ScopedRequest,
    // A command run on the instance ends it (a batch allocation cancels itself): self_stop_command().
    SelfStop,
    // The instance lives on the orchestrator's own machine (the local rehearsal): running
    // `broker instances terminate <provider>:<id>` there, with the same state dir and ledger, ends it.
    BrokerOnHost,
};

// What a provider can do, declared (a constant of the provider: it must not depend on the context,
// and a provider's constructor must not touch the network or files, so provider_caps() can build
// one with an empty context to ask).
struct ProviderCaps {
    bool stop_start = false;       // stop() and start() do something (RunPod, Vast, local)
    // The provider itself ends the instance at a deadline that create() sends from
    // CreateRequest::deadline_unix, whoever is still alive then (RunPod: terminateAfter).
    bool native_deadline = false;
    bool spot = false;             // offers interruptible instances
    bool needs_api_key = true;     // false for local and ssh-hosts
    SelfEnd self_end = SelfEnd::None;
    // Instances run on this machine (the local rehearsal): they cost nothing, need no GPU, have no
    // container environment on PID 1, and may share folders with the broker's state dir.
    bool on_this_machine = false;
    // Work runs as scheduler jobs (slurm): SSH reaches a login node that shares a work directory
    // with the compute nodes, create() with CreateRequest::batch submits a job that does the work
    // and ends, and batch_site() says where to push. deploy_and_analyze then builds and runs through
    // the scheduler and never on the login node (deploy/README.md, "Batch schedulers").
    bool batch_jobs = false;
};

// Where a batch provider's work is prepared: the login node, and a directory it shares with the
// compute nodes.
struct BatchSite {
    SshEndpoint login;     // with the key that opens it and its jump hosts (login.jump)
    std::string work_dir;  // absolute
    bool fetch_on_login = true;  // downloads run on the login node; false: as a CPU job (the site's choice)
};

// An HTTP request as data, complete: every value is already in it (path segments percent-encoded,
// the body JSON-encoded by nlohmann), built by the same function the provider's own call uses.
// Whoever sends it adds only the Authorization header; nothing is spliced into it afterwards.
struct HttpCall {
    std::string method;                                        // "POST", "DELETE", ...
    std::string url;                                           // scheme://host[:port]/path
    std::vector<std::pair<std::string, std::string>> headers;  // never Authorization
    std::string body;                                          // "" when none
};

// SelfEnd::ScopedRequest: the request that terminates one instance, and how to read its answer.
struct SelfEndRequest {
    HttpCall call;
    // The variable of the instance's PID 1 environment that holds the scoped key, sent as
    // "Authorization: Bearer <key>". Never the account key.
    std::string credential_env;
    // Success is a 2xx answer whose body does not contain `failure_marker` (RunPod answers GraphQL
    // errors with HTTP 200), or one of `gone_statuses` (the instance is already gone; none of the
    // clouds lists one now, since a bare status from a machine that is still running proves nothing).
    std::string failure_marker;
    std::vector<long> gone_statuses;
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
    std::vector<SlurmCluster> slurm_clusters;  // the broker config's `slurm:` section, already checked
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
    // Only called when caps().self_end == SelfEnd::ScopedRequest: the request that ends `id`, built
    // by the same function terminate() sends (one builder per provider).
    virtual SelfEndRequest self_end_request(std::string_view id) const;
    // Only called when caps().self_end == SelfEnd::SelfStop: the argv that, run on the instance,
    // ends `id` (each element one word; the caller quotes them).
    virtual std::vector<std::string> self_stop_command(std::string_view id) const;
    // Only called when caps().batch_jobs: the site an offer of this provider runs at.
    virtual BatchSite batch_site(const Offer & offer) const;
    // Only called when caps().batch_jobs: what an ended job's Instance::status_raw means.
    virtual BatchEnd batch_end(std::string_view status_raw) const;

protected:
    // For create(), once the provider has accepted it and named the instance `id`. From then on the
    // id must reach the caller, because a lost id is a machine billing with nobody to end it. Runs
    // `follow_up` (e.g. attaching the SSH key) and reads the instance back with get(); when either
    // fails, or get() does not see it yet, warns and returns a bare Pending record with the id.
    // Readiness judges that machine next, and terminate ends it if it never becomes usable.
    Instance created(const std::string & id, const std::string & instance_name, const std::function<void()> & follow_up = {});
};

// The capabilities of the provider called `name`, without credentials (usage error naming the valid
// providers when unknown). Deploy validates a config with it before anything is rented.
ProviderCaps provider_caps(std::string_view name);
// The provider whose instances run on this machine (caps().on_this_machine): the rehearsal's.
std::string_view this_machine_provider();

}  // namespace broker
