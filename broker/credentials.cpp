#include "broker/credentials.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "common/config_yaml.h"
#include "common/error.h"
#include "common/log.h"

namespace fs = std::filesystem;

namespace broker {

namespace {
std::string env_or_empty(const char * name) {
    const char * v = std::getenv(name);
    return v ? v : "";
}
std::string home_dir() {
    std::string h = env_or_empty("HOME");
    return h.empty() ? "/tmp" : h;
}
// YAML double-quoted scalar (keys may contain characters YAML would interpret).
std::string yaml_quote(const std::string & s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}
}  // namespace

std::string default_config_path() {
    std::string p = env_or_empty("BROKER_CONFIG");
    if (!p.empty()) return p;
    std::string x = env_or_empty("XDG_CONFIG_HOME");
    return (x.empty() ? home_dir() + "/.config" : x) + "/toolkit/broker.yaml";
}

std::string default_state_dir() {
    std::string p = env_or_empty("BROKER_STATE_DIR");
    if (!p.empty()) return p;
    std::string x = env_or_empty("XDG_STATE_HOME");
    return (x.empty() ? home_dir() + "/.local/state" : x) + "/toolkit";
}

BrokerConfig load_config(const std::string & path) {
    BrokerConfig cfg;
    cfg.path = path;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return cfg;
        throw common::Error::io(path, "read the broker config", errno);
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        throw common::Error(common::ErrorKind::Auth,
                            path + ": refusing a credentials file that group or others can read (mode " +
                                ([&] { std::ostringstream o; o << std::oct << (st.st_mode & 0777); return o.str(); })() +
                                "); run: chmod 600 " + path)
            .with("file", path);
    auto root = common::ConfigNode::load_file(path);
    if (root.is_null()) return cfg;
    root.check_keys({"runpod", "vast", "lambda", "primeintellect", "ssh_hosts", "slurm"});
    for (const char * name : {"runpod", "vast", "lambda", "primeintellect"}) {
        auto node = root.find(name);
        if (!node || node->is_null()) continue;
        node->check_keys({"api_key", "base_url"});
        ProviderSettings s;
        s.api_key = node->get_string("api_key", "");
        s.base_url = node->get_string("base_url", "");
        s.key_source = path;
        s.url_source = path + ": " + name + ".base_url";
        common::log::add_secret(s.api_key);
        cfg.providers[name] = s;
    }
    if (auto hosts = root.find("ssh_hosts"); hosts && !hosts->is_null()) {
        hosts->check_keys({"inventory"});
        cfg.ssh_hosts_inventory = hosts->get_string("inventory", "");
    }
    // Checked here, whole, so a bad cluster definition stops every command before one reaches a cluster.
    if (auto slurm = root.find("slurm"); slurm && !slurm->is_null()) cfg.slurm_clusters = parse_slurm_clusters(*slurm);
    return cfg;
}

ProviderSettings resolve_provider(const BrokerConfig & config, std::string_view provider, std::string_view key_env,
                                  std::string_view url_env) {
    ProviderSettings s;
    if (auto it = config.providers.find(std::string(provider)); it != config.providers.end()) s = it->second;
    if (!key_env.empty()) {
        std::string k = env_or_empty(std::string(key_env).c_str());
        if (!k.empty()) {
            s.api_key = k;
            s.key_source = std::string(key_env);
        }
    }
    if (!url_env.empty()) {
        std::string u = env_or_empty(std::string(url_env).c_str());
        if (!u.empty()) {
            s.base_url = u;
            s.url_source = std::string(url_env);
        }
    }
    common::log::add_secret(s.api_key);
    return s;
}

std::string base_url_problem(std::string_view url) {
    std::string_view rest = url;
    if (rest.substr(0, 7) == "http://") rest.remove_prefix(7);
    else if (rest.substr(0, 8) == "https://") rest.remove_prefix(8);
    else return "not http:// or https://";
    auto end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, end);
    if (authority.empty()) return "no host";
    for (char c : authority)
        if (static_cast<unsigned char>(c) <= ' ' || c == '@' || c == '\\') return "the host part has a space, '@' or '\\'";
    if (end == std::string_view::npos) return "";
    std::string_view tail = rest.substr(end);
    if (tail.find_first_not_of('/') == std::string_view::npos) return "";  // "http://h:1/"
    return "it has a path or query (" + std::string(tail.substr(0, 60)) +
           "); give scheme://host[:port] only, the broker adds the API's path itself";
}

std::string expand_home(const std::string & p) {
    if (p.rfind("~/", 0) == 0) return env_or_empty("HOME") + p.substr(1);
    return p;
}

void create_private_directories(const std::string & dir) {
    if (dir.empty()) return;
    std::error_code ec;
    if (fs::is_directory(dir, ec)) return;
    fs::path p(dir);
    if (p.has_relative_path() && p.has_parent_path() && p.parent_path() != p)
        create_private_directories(p.parent_path().string());
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw common::Error::io(dir, "create the directory", errno);
}

void write_config(const std::string & path, const BrokerConfig & config) {
    create_private_directories(fs::path(path).parent_path().string());
    std::ostringstream y;
    y << "# broker credentials and settings (written by `broker init`; keep this file mode 0600)\n";
    for (const auto & [name, s] : config.providers) {
        y << name << ":\n";
        y << "  api_key: " << yaml_quote(s.api_key) << "\n";
        if (!s.base_url.empty()) y << "  base_url: " << yaml_quote(s.base_url) << "\n";
    }
    if (!config.ssh_hosts_inventory.empty())
        y << "ssh_hosts:\n  inventory: " << yaml_quote(config.ssh_hosts_inventory) << "\n";
    std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw common::Error::io(tmp, "create", errno);
    ::fchmod(fd, 0600);  // an existing tmp file keeps its old mode otherwise
    std::string text = y.str();
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ok = (::fsync(fd) == 0) && ok;
    ::close(fd);
    if (!ok) throw common::Error::io(tmp, "write", errno);
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw common::Error::io(path, "rename into place", errno);
}

}  // namespace broker
