// Broker: the provider-independent flows (search fan-out, create with ledger and fallthrough,
// readiness, proven termination). Providers only speak their APIs; everything here is written once.
#include "broker/broker.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <random>

#include "broker/registry.h"
#include "common/log.h"
#include "common/program.h"
#include "common/sshd_server.h"

namespace fs = std::filesystem;

namespace broker {

namespace {
std::string env_or(const char * name, const std::string & fallback) {
    const char * v = std::getenv(name);
    return v && *v ? std::string(v) : fallback;
}
}  // namespace

std::string generate_run_id() {
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    std::random_device rd;
    std::string s;
    for (int i = 0; i < 8; ++i) s += digits[rd() % 36];
    return s;
}

std::string default_ssh_key_path() {
    return env_or("BROKER_SSH_KEY", env_or("HOME", "/root") + "/.ssh/id_ed25519");
}

std::string ssh_key_for(const Instance & instance, Ledger & ledger) {
    if (instance.ssh && !instance.ssh->key_path.empty()) return instance.ssh->key_path;
    if (auto e = ledger.find_instance(instance.provider, instance.id); e && !e->ssh_key.empty()) return e->ssh_key;
    return default_ssh_key_path();
}

std::string read_public_key(const std::string & private_key_path) {
    std::string pub = private_key_path + ".pub";
    if (!fs::exists(pub))
        throw common::Error::usage(pub + ": SSH public key not found; pass --ssh-key PATH of a private key with PATH.pub "
                                   "beside it (ssh-keygen -t ed25519 -f PATH)");
    std::string text = common::read_text_file(pub);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    if (text.rfind("ssh-", 0) != 0 && text.rfind("ecdsa-", 0) != 0)
        throw common::Error::usage(pub + ": not an OpenSSH public key");
    return text;
}

Broker::Broker(BrokerOptions options) : options_(std::move(options)) {
    if (options_.config_path.empty()) options_.config_path = default_config_path();
    if (options_.state_dir.empty()) options_.state_dir = default_state_dir();
    if (options_.ledger_path.empty()) options_.ledger_path = Ledger::default_path(options_.state_dir);
    if (!options_.clock) options_.clock = &common::real_clock();
    options_.http.clock = options_.clock;
    config_ = load_config(options_.config_path);
    if (options_.hosts_file.empty()) {
        options_.hosts_file = env_or("BROKER_SSH_HOSTS", config_.ssh_hosts_inventory);
        if (options_.hosts_file.empty())
            options_.hosts_file = fs::path(options_.config_path).parent_path().string() + "/hosts.yaml";
    }
}

Broker::~Broker() = default;

Ledger & Broker::ledger() {
    if (!ledger_) ledger_ = std::make_unique<Ledger>(options_.ledger_path);
    return *ledger_;
}

bool Broker::has_credentials(const std::string & name) const {
    const auto & info = find_provider(name);
    if (info.key_env.empty()) return true;
    return !resolve_provider(config_, info.name, info.key_env, info.base_url_env).api_key.empty();
}

ProviderContext Broker::context_for(const std::string & name) const {
    const auto & info = find_provider(name);
    ProviderContext c;
    c.http = options_.http;
    c.clock = options_.clock;
    c.state_dir = options_.state_dir;
    c.hosts_file = options_.hosts_file;
    c.slurm_clusters = config_.slurm_clusters;
    if (!info.key_env.empty()) {
        auto s = resolve_provider(config_, info.name, info.key_env, info.base_url_env);
        if (s.api_key.empty()) throw common::Error::missing_credential(std::string(info.name), std::string(info.key_env));
        c.api_key = s.api_key;
        if (!s.base_url.empty()) {
            if (std::string why = base_url_problem(s.base_url); !why.empty())
                throw common::Error::usage(s.url_source + "=" + s.base_url + ": not a base URL: " + why)
                    .with("provider", std::string(info.name));
        }
        c.base_url = s.base_url.empty() ? std::string(info.default_base_url) : s.base_url;
    }
    return c;
}

Provider & Broker::provider(const std::string & name) {
    auto it = providers_.find(name);
    if (it != providers_.end()) return *it->second;
    const auto & info = find_provider(name);
    auto p = info.make(context_for(name));
    auto & ref = *p;
    providers_[name] = std::move(p);
    return ref;
}

std::vector<std::string> Broker::providers_for(const std::vector<std::string> & requested,
                                               std::vector<std::string> * skipped) const {
    std::vector<std::string> out;
    if (!requested.empty()) {
        for (const auto & r : requested) {
            find_provider(r);  // usage error when unknown
            if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
        }
        return out;
    }
    for (const auto & info : provider_table()) {
        if (info.explicit_only) continue;
        if (has_credentials(std::string(info.name))) out.emplace_back(info.name);
        else if (skipped) skipped->emplace_back(info.name);
    }
    return out;
}

SearchResult Broker::search(const OfferFilter & filter, SortKey sort, size_t limit) {
    validate_filter(filter);
    SearchResult result;
    auto names = providers_for(filter.providers, &result.skipped_no_key);
    if (names.empty())
        throw common::Error(common::ErrorKind::Auth,
                            "no provider has an API key: set RUNPOD_API_KEY, VAST_API_KEY, LAMBDA_API_KEY or "
                            "PRIME_API_KEY, or run `broker init`; or name --provider local");
    result.queried = names;
    // Providers are built here (map writes stay on this thread), then queried concurrently.
    std::vector<std::pair<std::string, Provider *>> targets;
    for (const auto & n : names) {
        try {
            targets.emplace_back(n, &provider(n));
        } catch (const common::Error & e) {
            result.failures.push_back({n, e});
        }
    }
    std::vector<std::future<std::vector<Offer>>> futures;
    // (Not a structured binding: clang 14, the fuzz build's compiler, cannot capture those.)
    for (auto & target : targets) {
        Provider * p = target.second;
        futures.push_back(std::async(std::launch::async, [p, &filter] { return p->search(filter); }));
    }
    std::vector<Offer> all;
    for (size_t i = 0; i < futures.size(); ++i) {
        try {
            auto offers = futures[i].get();
            all.insert(all.end(), offers.begin(), offers.end());
        } catch (const common::Error & e) {
            result.failures.push_back({targets[i].first, e});
        } catch (const std::exception & e) {
            result.failures.push_back({targets[i].first, common::Error::internal(targets[i].first + ": " + e.what())});
        }
    }
    if (!result.failures.empty() && result.failures.size() == names.size()) throw result.failures.front().error;
    all = filter_offers(std::move(all), filter);  // every filter re-checked here, whatever the API did
    sort_offers(all, sort);
    if (limit > 0 && all.size() > limit) all.resize(limit);
    result.offers = std::move(all);
    return result;
}

namespace {
std::optional<Instance> find_by_name(Provider & p, const std::string & name) {
    for (auto & i : p.list())
        if (i.name == name) return i;
    return std::nullopt;
}

// A create that failed this way may still have been carried out: the request reached the provider
// and the answer was lost, garbled, or cut short by Ctrl-C. Capacity, quota, auth and usage errors
// are the provider saying no.
bool create_may_have_happened(common::ErrorKind kind) {
    using K = common::ErrorKind;
    return kind == K::Network || kind == K::Timeout || kind == K::Internal || kind == K::RemoteFailed ||
           kind == K::Interrupted;
}

// After such a failure: is the instance there under our name? Listings can lag a create by seconds,
// so a miss is asked again after 2, 4 and 8 s. nullopt with `unknown` empty: looked and not there;
// with `unknown` set: the provider could not be asked (its error).
std::optional<Instance> look_for_created(Provider & p, const std::string & name, common::Clock & clock, std::string & unknown) {
    const int waits_s[] = {0, 2, 4, 8};
    for (int wait_s : waits_s) {
        if (wait_s > 0) clock.sleep_for(std::chrono::seconds(wait_s));
        try {
            if (auto found = find_by_name(p, name)) return found;
            unknown.clear();
        } catch (const common::Error & e) {
            unknown = e.message();
            if (e.kind() == common::ErrorKind::Interrupted) break;  // asked once; sweep takes it from here
        }
    }
    return std::nullopt;
}
}  // namespace

CreateResult Broker::create(const CreateOptions & o) {
    validate_filter(o.filter);
    if (o.max_attempts < 1) throw common::Error::usage("--max-attempts: must be at least 1");
    const std::string pubkey = read_public_key(o.ssh_private_key);
    auto progress = [&](const std::string & line) {
        if (o.on_progress) o.on_progress(line);
    };
    // Fresh offers at rent time: prices and availability are re-checked against the filter now, at
    // the disk this create rents (prices that include storage are asked at that size).
    OfferFilter at_rent = o.filter;
    at_rent.rent_disk_gb = o.disk_gb;
    SearchResult found = search(at_rent, o.sort, 0);
    for (const auto & f : found.failures) progress("skipping " + f.provider + ": " + f.error.message());
    if (found.offers.empty()) {
        std::string what = o.filter.offer_id.empty() ? "no offer matches the filters"
                                                      : "offer " + o.filter.offer_id + " is no longer available at a matching price";
        throw common::Error(common::ErrorKind::Capacity, what + "; run `broker search` to see what is on offer");
    }
    const std::string run_id = o.run_id.empty() ? generate_run_id() : o.run_id;
    const long long deadline = static_cast<long long>(options_.clock->unix_now() + o.max_lifetime_s);
    const std::string name = format_instance_name({run_id, o.role, deadline});
    if (!parse_instance_name(name))
        throw common::Error::usage("--run-id/--role: use lower-case letters and digits only, the whole name at most " +
                                   std::to_string(kMaxInstanceNameLength) + " characters (got '" + run_id + "', '" +
                                   o.role + "')");

    CreateResult result;
    std::optional<Instance> created;
    Offer chosen;
    for (const auto & offer : found.offers) {
        if (static_cast<int>(result.attempts.size()) >= o.max_attempts) break;
        common::throw_if_interrupted();
        CreateAttempt attempt{offer.offer_id, offer.provider, offer.price_usd_per_hour_total, ""};
        if (o.filter.max_price_usd_per_hour && offer.price_usd_per_hour_total > *o.filter.max_price_usd_per_hour) {
            attempt.outcome = "skipped: price above --max-price";
            result.attempts.push_back(attempt);
            continue;
        }
        Provider & p = provider(offer.provider);
        CreateRequest req;
        req.offer = offer;
        req.batch = o.batch;
        req.name = name;
        req.image = o.image;
        req.disk_gb = o.disk_gb;
        req.env = o.env;
        req.ssh_public_key = pubkey;
        req.deadline_unix = deadline;
        LedgerEntry intent;
        intent.name = name;
        intent.provider = offer.provider;
        intent.run_id = run_id;
        intent.deadline_unix = deadline;
        intent.offer_id = offer.offer_id;
        intent.price_usd_per_hour = offer.price_usd_per_hour_total;
        // The key this instance will accept: `instances show`/`ssh` print it later, from any directory.
        std::error_code ec;
        auto key_abs = fs::absolute(o.ssh_private_key, ec);
        intent.ssh_key = ec ? o.ssh_private_key : key_abs.lexically_normal().string();
        ledger().record_intent(intent);  // before the API call: a crash after it cannot hide the instance
        progress(std::string(o.batch ? "submitting to " : "renting ") + offer.provider + ":" + offer.offer_id + " (" + offer.gpu_model + " x" +
                 std::to_string(offer.gpu_count) + ", $" + std::to_string(offer.price_usd_per_hour_total) + "/h) as " + name);
        auto record_created = [&](const Instance & inst) {
            // The machine exists whatever happens to our bookkeeping: a ledger that fails now (disk
            // full) must not lose the id. The intent row still names the instance for `broker sweep`.
            try {
                ledger().record_created(name, inst.id);
            } catch (const common::Error & e) {
                common::log::warn("ledger: could not record ", offer.provider, ":", inst.id, " (", name, "): ", e.message(),
                                  "; `broker sweep` finds it by name");
            }
        };
        try {
            Instance inst = p.create(req);
            record_created(inst);
            attempt.outcome = "created " + inst.id;
            result.attempts.push_back(attempt);
            created = inst;
            chosen = offer;
            break;
        } catch (const common::Error & e) {
            if (create_may_have_happened(e.kind())) {
                std::string unknown;
                std::optional<Instance> maybe = look_for_created(p, name, clock(), unknown);
                if (maybe) {
                    record_created(*maybe);
                    attempt.outcome = "created " + maybe->id + " (found by name after: " + e.message() + ")";
                    result.attempts.push_back(attempt);
                    created = maybe;
                    chosen = offer;
                    break;
                }
                if (!unknown.empty()) {
                    // The ledger row stays an intent: sweep resolves it by name once the provider answers.
                    throw common::Error(common::ErrorKind::LeakRisk,
                                        "create " + name + " on " + offer.provider + ": " + e.message() +
                                            "; the provider may have created it, and looking it up failed (" + unknown +
                                            "); run `broker sweep` once the provider answers, it ends or records it")
                        .with("provider", offer.provider)
                        .with("name", name);
                }
            }
            ledger().record_failed(name, e.message());
            attempt.outcome = std::string(common::kind_name(e.kind())) + ": " + e.message();
            result.attempts.push_back(attempt);
            if (e.kind() != common::ErrorKind::Capacity) throw;
            progress("no capacity: " + e.message() + "; trying the next offer");
        }
    }
    if (!created) {
        std::string msg = "no capacity after " + std::to_string(result.attempts.size()) + " offer(s):";
        for (const auto & a : result.attempts) msg += " [" + a.provider + ":" + a.offer_id + ": " + a.outcome + "]";
        throw common::Error(common::ErrorKind::Capacity, msg);
    }
    result.offer = chosen;
    result.instance = *created;
    if (!o.wait_ready) return result;

    ReadyOptions ro;
    ro.budget = o.ready_budget;
    ro.poll_interval = o.poll_interval;
    ro.private_key_path = o.ssh_private_key;
    ro.clock = options_.clock;
    ro.on_stage = o.on_stage;
    if (o.gpu_check && chosen.gpu_count > 0) {
        ro.expect_gpu_count = chosen.gpu_count;
        ro.expect_vram_gb_per_gpu = chosen.vram_gb_per_gpu;
    }
    Provider & p = provider(chosen.provider);
    try {
        if (created->ssh && !created->ssh->key_path.empty()) ro.private_key_path = created->ssh->key_path;
        result.instance = wait_ready(p, created->id, ro);
    } catch (const common::Error & e) {
        // A machine that never became usable is terminated, not left behind.
        progress("not ready (" + e.message() + "); terminating " + chosen.provider + ":" + created->id);
        TerminateOutcome t;
        try {
            t = terminate_and_prove(chosen.provider, created->id);
        } catch (const common::Error & te) {
            throw common::Error(common::ErrorKind::LeakRisk,
                                chosen.provider + ":" + created->id + ": not ready (" + e.message() +
                                    ") and terminate failed: " + te.message() + "; run: broker instances terminate " +
                                    chosen.provider + ":" + created->id)
                .with("provider", chosen.provider)
                .with("instance", created->id);
        }
        if (!t.proven)
            throw common::Error(common::ErrorKind::LeakRisk,
                                chosen.provider + ":" + created->id + ": not ready (" + e.message() +
                                    ") and still " + t.last_status + " after terminate; run: broker instances terminate " +
                                    chosen.provider + ":" + created->id)
                .with("provider", chosen.provider)
                .with("instance", created->id);
        common::Error copy = e;
        copy.with("terminated", chosen.provider + ":" + created->id);
        throw copy;
    }
    return result;
}

TerminateOutcome Broker::terminate_and_prove(const std::string & provider_name, const std::string & id,
                                             common::Duration budget, common::Duration poll) {
    Provider & p = provider(provider_name);
    TerminateOutcome out{provider_name, id, false, ""};
    p.terminate(id);
    common::Deadline deadline(*options_.clock, budget);
    for (int look = 1;; ++look) {
        std::optional<Instance> inst = p.get(id);
        if (!inst || inst->status == InstanceStatus::Terminated) {
            out.proven = true;
            out.last_status = inst ? inst->status_raw : "gone";
            try {
                ledger().record_terminated(provider_name, id);
            } catch (const common::Error & e) {
                common::log::warn("ledger: ", e.message());
            }
            return out;
        }
        out.last_status = inst->status_raw.empty() ? std::string(status_name(inst->status)) : inst->status_raw;
        // Terminating is progress; anything else means the call did not take: send it again.
        if (inst->status != InstanceStatus::Terminating) {
            common::log::info(provider_name, ":", id, ": still ", out.last_status, " after terminate; sending it again");
            p.terminate(id);
        }
        if (!deadline.sleep(poll)) return out;
    }
}

std::vector<Instance> Broker::list(const std::vector<std::string> & names, std::vector<ProviderFailure> & failures) {
    std::vector<std::pair<std::string, Provider *>> targets;
    for (const auto & n : names) {
        try {
            targets.emplace_back(n, &provider(n));
        } catch (const common::Error & e) {
            failures.push_back({n, e});
        }
    }
    std::vector<std::future<std::vector<Instance>>> futures;
    for (auto & target : targets) {
        Provider * p = target.second;
        futures.push_back(std::async(std::launch::async, [p] { return p->list(); }));
    }
    std::vector<Instance> out;
    for (size_t i = 0; i < futures.size(); ++i) {
        try {
            auto v = futures[i].get();
            out.insert(out.end(), v.begin(), v.end());
        } catch (const common::Error & e) {
            failures.push_back({targets[i].first, e});
        }
    }
    return out;
}

InstanceRef parse_instance_ref(const std::string & text, Ledger & ledger) {
    auto colon = text.find(':');
    if (colon != std::string::npos) {
        InstanceRef r{text.substr(0, colon), text.substr(colon + 1)};
        find_provider(r.provider);
        if (r.id.empty()) throw common::Error::usage(text + ": empty instance id; use provider:id, as `broker instances list` prints");
        return r;
    }
    auto rows = ledger.find_by_id(text);
    std::vector<std::string> providers;
    for (const auto & r : rows)
        if (std::find(providers.begin(), providers.end(), r.provider) == providers.end()) providers.push_back(r.provider);
    if (providers.size() == 1) return {providers[0], text};
    if (providers.empty())
        throw common::Error::not_found(text, "not in the local ledger; use provider:id, as `broker instances list` prints");
    throw common::Error::usage(text + ": ambiguous (several providers); use provider:id");
}

}  // namespace broker
