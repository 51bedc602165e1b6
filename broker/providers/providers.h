// Factories and the pure wire functions of each provider, declared here so the registry can build
// providers and the unit tests can feed recorded response bodies to the parsers. Callers outside
// broker/ use broker/broker.h instead.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "broker/instance.h"
#include "broker/offer.h"
#include "broker/provider.h"

namespace broker::providers {

// One row of a provider's status table: the provider's own string -> our status. Each provider file
// keeps its table at the top; lookup_status() is the one rule for all of them: anything not in the
// table is Unknown (kept raw by the caller), never a guess and never a crash on a new status.
struct StatusRow {
    std::string_view raw;
    InstanceStatus status;
};
template <size_t N>
InstanceStatus lookup_status(const StatusRow (&table)[N], std::string_view raw) {
    for (const auto & row : table)
        if (row.raw == raw) return row.status;
    return InstanceStatus::Unknown;
}

std::unique_ptr<Provider> make_runpod(const ProviderContext & context);
std::unique_ptr<Provider> make_vast(const ProviderContext & context);
std::unique_ptr<Provider> make_lambda(const ProviderContext & context);
std::unique_ptr<Provider> make_primeintellect(const ProviderContext & context);
std::unique_ptr<Provider> make_local(const ProviderContext & context);
std::unique_ptr<Provider> make_ssh_hosts(const ProviderContext & context);

// RunPod (GraphQL)
InstanceStatus runpod_status(std::string_view desired_status);
std::vector<Offer> runpod_parse_offers(const nlohmann::json & data, int gpu_count, bool secure, bool spot = false);
Instance runpod_parse_pod(const nlohmann::json & pod);
// Classifies the GraphQL `errors` array of a 200 response into a typed error.
common::Error runpod_graphql_error(const nlohmann::json & errors, const std::string & what);

// Vast.ai (REST v0)
InstanceStatus vast_status(const nlohmann::json & actual_status);
std::vector<Offer> vast_parse_offers(const nlohmann::json & body, bool spot);
Instance vast_parse_instance(const nlohmann::json & instance);
nlohmann::json vast_search_body(const OfferFilter & filter, int disk_gb);
nlohmann::json vast_create_body(const CreateRequest & request);

// Lambda Cloud (REST v1)
InstanceStatus lambda_status(std::string_view status);
std::vector<Offer> lambda_parse_offers(const nlohmann::json & body);
Instance lambda_parse_instance(const nlohmann::json & instance);

// Prime Intellect (REST v1)
InstanceStatus prime_status(std::string_view status, std::string_view installation_status);
std::vector<Offer> prime_parse_offers(const nlohmann::json & body);
Instance prime_parse_pod(const nlohmann::json & pod);
std::optional<SshEndpoint> prime_parse_ssh(const nlohmann::json & ssh_connection);
nlohmann::json prime_create_body(const CreateRequest & request);

}  // namespace broker::providers
