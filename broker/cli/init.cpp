// `broker init`: writes the config file (mode 0600) from the keys in the current environment, so keys
// never pass through command-line arguments (visible in `ps` and shell history).
#include <cstdlib>
#include <filesystem>

#include "broker/cli/verbs.h"
#include "broker/credentials.h"
#include "broker/registry.h"

namespace broker::cli {

int run_init(const GlobalOptions & g, const InitOptions & o, const common::Output & out) {
    std::string path = g.config.empty() ? default_config_path() : g.config;
    if (std::filesystem::exists(path) && !o.force)
        throw common::Error::usage(path + ": already exists; pass --force to rewrite it");
    BrokerConfig cfg;
    cfg.path = path;
    nlohmann::json saved = nlohmann::json::array();
    for (const auto & info : provider_table()) {
        if (info.key_env.empty()) continue;
        const char * key = std::getenv(std::string(info.key_env).c_str());
        const char * url = std::getenv(std::string(info.base_url_env).c_str());
        if (!key || !*key) continue;
        ProviderSettings s;
        s.api_key = key;
        if (url) s.base_url = url;
        cfg.providers[std::string(info.name)] = s;
        saved.push_back(std::string(info.name));
    }
    if (cfg.providers.empty())
        throw common::Error::usage("init: no API key in the environment; export RUNPOD_API_KEY, VAST_API_KEY, "
                                   "LAMBDA_API_KEY and/or PRIME_API_KEY, then run `broker init` again");
    write_config(path, cfg);
    out.object({{"config", path}, {"mode", "0600"}, {"providers", saved}});
    return 0;
}

int run_providers_list(const GlobalOptions & g, const ProvidersListOptions &, const common::Output & out) {
    auto broker = make_broker(g);
    nlohmann::json rows = nlohmann::json::array();
    for (const auto & info : provider_table()) {
        std::string name(info.name);
        bool configured = broker->has_credentials(name);
        nlohmann::json row = {{"provider", name}, {"configured", configured}, {"key_env", std::string(info.key_env)}};
        try {
            auto caps = broker->provider(name).caps();
            row["stop_start"] = caps.stop_start;
            row["native_deadline"] = caps.native_deadline;
            row["spot"] = caps.spot;
        } catch (const common::Error &) {
            row["stop_start"] = nullptr;
        }
        rows.push_back(row);
    }
    out.rows({{"provider", "PROVIDER"}, {"configured", "KEY"}, {"key_env", "ENV"}, {"stop_start", "STOP/START"},
              {"native_deadline", "NATIVE_DEADLINE"}},
             rows);
    return 0;
}

}  // namespace broker::cli
