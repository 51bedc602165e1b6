// Where the broker's secrets and settings come from: environment variables first (RUNPOD_API_KEY,
// RUNPOD_BASE_URL, ...), then the config file written by `broker init` in the XDG config dir. The
// file must be private (mode 0600): one readable by group or others is refused, not used. Every key
// that is loaded is registered with the log redactor at once.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/slurm_cluster.h"

namespace broker {

struct ProviderSettings {
    std::string api_key;
    std::string base_url;  // scheme://host[:port]; empty: the provider's public default
    std::string key_source;  // "RUNPOD_API_KEY" or the config file path, for messages
    std::string url_source;  // "RUNPOD_BASE_URL" or "<config file>: runpod.base_url", for messages
};

struct BrokerConfig {
    std::string path;  // the file read (may not exist)
    std::map<std::string, ProviderSettings> providers;
    std::string ssh_hosts_inventory;
    std::vector<SlurmCluster> slurm_clusters;  // `slurm:` (broker/slurm_cluster.h)
};

// $BROKER_CONFIG, else $XDG_CONFIG_HOME/toolkit/broker.yaml, else ~/.config/toolkit/broker.yaml.
std::string default_config_path();
// $BROKER_STATE_DIR, else $XDG_STATE_HOME/toolkit, else ~/.local/state/toolkit.
std::string default_state_dir();
// A missing file is an empty config. Refuses a file readable by group/others (Auth) and bad YAML (Usage).
BrokerConfig load_config(const std::string & path);
// Environment overrides the file. `key_env`/`url_env` name the variables (RUNPOD_API_KEY, RUNPOD_BASE_URL).
ProviderSettings resolve_provider(const BrokerConfig & config, std::string_view provider, std::string_view key_env,
                                  std::string_view url_env);
// "" when `url` is scheme://host[:port] (http or https; a trailing '/' is allowed), else why not.
// The cloud clients append the API's whole path (/graphql, /api/v0/..., /api/v1/...) themselves, so
// a base URL with a path ("http://host/api/v1") would reach routes that do not exist, whose 404s
// must not be read as "already gone".
std::string base_url_problem(std::string_view url);
// "~/x" → "$HOME/x" (key paths in the ssh-hosts inventory and the slurm: section); other paths as given.
std::string expand_home(const std::string & path);
// Writes the file with mode 0600 (created that way, never chmod-ed after the fact).
void write_config(const std::string & path, const BrokerConfig & config);
// mkdir -p where every directory it creates is 0700 (the state and config dirs hold the ledger,
// keys and leases); directories that exist already are left as they are.
void create_private_directories(const std::string & dir);

}  // namespace broker
