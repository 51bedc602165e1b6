// The broker's public API, for the `broker` program and for deploy_and_analyze: search offers across
// providers, create an instance (ledger first, fallthrough on capacity, staged readiness), prove a
// termination, list, and sweep. Library code throws common::Error and never prints; progress goes
// through the callbacks.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "broker/credentials.h"
#include "broker/instance.h"
#include "broker/ledger.h"
#include "broker/offer.h"
#include "broker/provider.h"
#include "broker/readiness.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/http.h"

namespace broker {

struct BrokerOptions {
    std::string config_path;  // empty: default_config_path()
    std::string state_dir;    // empty: default_state_dir()
    std::string ledger_path;  // empty: Ledger::default_path(state_dir)
    std::string hosts_file;   // empty: $BROKER_SSH_HOSTS, config, or <config dir>/hosts.yaml
    common::http::Options http;
    common::Clock * clock = &common::real_clock();
};

struct ProviderFailure {
    std::string provider;
    common::Error error;
};

struct SearchResult {
    std::vector<Offer> offers;  // filtered, sorted, limited
    std::vector<ProviderFailure> failures;
    std::vector<std::string> queried;
    std::vector<std::string> skipped_no_key;  // providers left out because no key is configured
};

struct CreateOptions {
    OfferFilter filter;          // offers considered (filter.offer_id: rent exactly that offer)
    SortKey sort = SortKey::Price;
    int max_attempts = 3;        // offers tried when capacity errors fall through
    std::string image = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04";
    int disk_gb = 50;
    std::vector<std::pair<std::string, std::string>> env;
    std::string ssh_private_key;  // the public key is read from <path>.pub
    std::string run_id;           // empty: generated
    std::string role = "main";
    std::optional<BatchScript> batch;  // batch_jobs providers: the job's work (CreateRequest::batch)
    double max_lifetime_s = 12 * 3600;  // the deadline in the name; RunPod also enforces it itself
    bool wait_ready = true;
    bool gpu_check = true;
    common::Duration ready_budget = std::chrono::minutes(15);
    common::Duration poll_interval = std::chrono::seconds(5);
    std::function<void(const std::string &)> on_progress;  // one line per event
    std::function<void(ReadyStage, const std::string &)> on_stage;
};

struct CreateAttempt {
    std::string offer_id;
    std::string provider;
    double price_usd_per_hour = 0;
    std::string outcome;  // "created", "capacity: ...", ...
};

struct CreateResult {
    Instance instance;
    Offer offer;
    std::vector<CreateAttempt> attempts;
};

struct TerminateOutcome {
    std::string provider;
    std::string id;
    bool proven = false;     // gone or terminal on a re-list
    std::string last_status; // raw status on the last look
};

struct SweepAction {
    std::string provider, id, name, action, detail;
};

class Broker {
public:
    explicit Broker(BrokerOptions options = {});
    ~Broker();

    // The providers a filter addresses: its --provider list, or every cloud with a key configured
    // (local and ssh-hosts only when named). Unknown names are usage errors.
    std::vector<std::string> providers_for(const std::vector<std::string> & requested,
                                           std::vector<std::string> * skipped_no_key = nullptr) const;
    Provider & provider(const std::string & name);  // Auth error when its key is missing
    bool has_credentials(const std::string & name) const;

    // Queries the providers concurrently; a failing provider is reported in `failures`, not thrown,
    // unless every provider failed (then the first failure is thrown).
    SearchResult search(const OfferFilter & filter, SortKey sort, size_t limit);
    CreateResult create(const CreateOptions & options);
    TerminateOutcome terminate_and_prove(const std::string & provider, const std::string & id,
                                         common::Duration budget = std::chrono::minutes(2),
                                         common::Duration poll = std::chrono::seconds(3));
    std::vector<Instance> list(const std::vector<std::string> & providers, std::vector<ProviderFailure> & failures);
    std::vector<SweepAction> sweep(const std::vector<std::string> & providers, bool dry_run,
                                   std::vector<ProviderFailure> & failures);

    Ledger & ledger();
    const BrokerOptions & options() const { return options_; }
    const BrokerConfig & config() const { return config_; }
    common::Clock & clock() { return *options_.clock; }

private:
    ProviderContext context_for(const std::string & name) const;

    BrokerOptions options_;
    BrokerConfig config_;
    std::map<std::string, std::unique_ptr<Provider>> providers_;
    std::unique_ptr<Ledger> ledger_;
};

// "runpod:abc123" → {runpod, abc123}. A bare id is looked up in the ledger; ambiguous or unknown
// bare ids are usage/not-found errors that say to use provider:id.
struct InstanceRef {
    std::string provider;
    std::string id;
};
InstanceRef parse_instance_ref(const std::string & text, Ledger & ledger);

std::string generate_run_id();
// Reads <private_key>.pub; Usage error naming the file when it is missing.
std::string read_public_key(const std::string & private_key_path);
// $BROKER_SSH_KEY, else ~/.ssh/id_ed25519.
std::string default_ssh_key_path();
// The private key that opens `instance`: the one its provider dictates (ssh-hosts inventory), else
// the one recorded in the ledger when it was created, else default_ssh_key_path().
std::string ssh_key_for(const Instance & instance, Ledger & ledger);

}  // namespace broker
