// The one list of providers: name, credential and base-URL variables, default base URL, factory.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "broker/credentials.h"
#include "broker/provider.h"

namespace broker {

struct ProviderInfo {
    std::string_view name;
    std::string_view key_env;       // "" when no key is needed
    std::string_view base_url_env;  // "" when there is no API
    std::string_view default_base_url;
    bool explicit_only;  // local and ssh-hosts join a search or create only when named with --provider
    std::unique_ptr<Provider> (*make)(const ProviderContext &);
};

const std::vector<ProviderInfo> & provider_table();
// Usage error naming the valid providers when `name` is unknown.
const ProviderInfo & find_provider(std::string_view name);

}  // namespace broker
