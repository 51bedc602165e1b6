#include "broker/registry.h"

#include "broker/providers/providers.h"
#include "common/error.h"
#include "common/log.h"

namespace broker {

const std::vector<ProviderInfo> & provider_table() {
    static const std::vector<ProviderInfo> table = {
        {"runpod",         "RUNPOD_API_KEY", "RUNPOD_BASE_URL", "https://api.runpod.io",          false, providers::make_runpod},
        {"vast",           "VAST_API_KEY",   "VAST_BASE_URL",   "https://console.vast.ai",        false, providers::make_vast},
        {"lambda",         "LAMBDA_API_KEY", "LAMBDA_BASE_URL", "https://cloud.lambdalabs.com",   false, providers::make_lambda},
        {"primeintellect", "PRIME_API_KEY",  "PRIME_BASE_URL",  "https://api.primeintellect.ai",  false, providers::make_primeintellect},
        {"local",          "",               "",                "",                               true,  providers::make_local},
        {"ssh-hosts",      "",               "",                "",                               true,  providers::make_ssh_hosts},
        {"slurm",          "",               "",                "",                               true,  providers::make_slurm},
    };
    return table;
}

const ProviderInfo & find_provider(std::string_view name) {
    for (const auto & p : provider_table())
        if (p.name == name) return p;
    std::string valid;
    for (const auto & p : provider_table()) valid += (valid.empty() ? "" : ", ") + std::string(p.name);
    throw common::Error::usage("unknown provider '" + std::string(name) + "'; valid providers: " + valid);
}

void Provider::stop(std::string_view id) {
    throw common::Error::internal(std::string(name()) + ": stop(" + std::string(id) + ") called without the stop_start capability");
}
void Provider::start(std::string_view id) {
    throw common::Error::internal(std::string(name()) + ": start(" + std::string(id) + ") called without the stop_start capability");
}

SelfEndRequest Provider::self_end_request(std::string_view id) const {
    throw common::Error::internal(std::string(name()) + ": self_end_request(" + std::string(id) +
                                  ") called but the provider does not declare SelfEnd::ScopedRequest");
}
std::vector<std::string> Provider::self_stop_command(std::string_view id) const {
    throw common::Error::internal(std::string(name()) + ": self_stop_command(" + std::string(id) +
                                  ") called but the provider does not declare SelfEnd::SelfStop");
}

BatchEnd Provider::batch_end(std::string_view status_raw) const {
    throw common::Error::internal(std::string(name()) + ": batch_end(" + std::string(status_raw) +
                                  ") called but the provider does not declare batch_jobs");
}

BatchSite Provider::batch_site(const Offer & offer) const {
    throw common::Error::internal(std::string(name()) + ": batch_site(" + offer.offer_id +
                                  ") called but the provider does not declare batch_jobs");
}

Instance Provider::created(const std::string & id, const std::string & instance_name, const std::function<void()> & follow_up) {
    std::string trouble;
    if (follow_up) {
        try {
            follow_up();
        } catch (const common::Error & e) {
            trouble = e.message();
        }
    }
    try {
        if (auto i = get(id)) {
            if (trouble.empty()) return *i;
            common::log::warn(name(), ": created ", id, " (", instance_name, "), but: ", trouble);
            return *i;
        }
        if (trouble.empty()) trouble = "it is not listed yet";
    } catch (const common::Error & e) {
        if (!trouble.empty()) trouble += "; ";
        trouble += "reading it back: " + e.message();
    }
    common::log::warn(name(), ": created ", id, " (", instance_name, "), but: ", trouble,
                      "; keeping it as pending so that it is watched and ended");
    Instance bare;
    bare.provider = std::string(name());
    bare.id = id;
    bare.name = instance_name;
    bare.status = InstanceStatus::Pending;
    return bare;
}

ProviderCaps provider_caps(std::string_view name) {
    // caps() is a constant of each provider and constructors do no I/O (provider.h), so an empty
    // context is enough to ask.
    return find_provider(name).make(ProviderContext{})->caps();
}

std::string_view this_machine_provider() {
    for (const auto & p : provider_table())
        if (p.make(ProviderContext{})->caps().on_this_machine) return p.name;
    throw common::Error::internal("no provider runs instances on this machine");
}

}  // namespace broker
