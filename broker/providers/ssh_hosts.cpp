// The `ssh-hosts` provider: machines the user already owns, listed in a YAML inventory. "Create"
// leases a free host (an exclusive lock file), "terminate" ends our jobs there (tmux sessions named
// with the toolkit prefix "tk-") and releases the lease. Nothing is rented, so price is 0 unless the
// inventory states one. Inventory format (unknown keys are refused, with file:line):
//   hosts:
//     - name: box1            # the instance id while leased
//       host: 10.0.0.5
//       port: 22              # optional, default 22
//       user: me
//       key: ~/.ssh/id_ed25519
//       gpus: 2               # optional, default 0
//       gpu_model: RTX 4090   # optional
//       vram_gb: 24           # optional, per GPU
//       ram_gb: 128           # optional
//       region: lab           # optional
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>

#include "broker/credentials.h"
#include "broker/providers/providers.h"
#include "broker/readiness.h"
#include "common/config_yaml.h"
#include "common/error.h"
#include "common/log.h"

namespace fs = std::filesystem;

namespace broker::providers {

namespace {

struct Host {
    std::string name, host, user, key, gpu_model, region;
    int port = 22;
    int gpus = 0;
    double vram_gb = 0;
    std::optional<double> ram_gb;
    double price = 0;
};

class SshHosts final : public Provider {
public:
    explicit SshHosts(const ProviderContext & c) : inventory_(c.hosts_file), leases_(c.state_dir + "/ssh-hosts/leases") {}

    std::string_view name() const override { return "ssh-hosts"; }
    ProviderCaps caps() const override {
        return {.stop_start = false, .native_deadline = false, .spot = false, .needs_api_key = false};
    }

    std::vector<Offer> search(const OfferFilter &) override {
        std::vector<Offer> out;
        for (const auto & h : load()) {
            if (fs::exists(lease_path(h.name))) continue;  // leased: not on offer
            Offer o;
            o.provider = "ssh-hosts";
            o.offer_id = h.name;
            o.manufacturer = h.gpus > 0 ? "NVIDIA" : "";
            o.gpu_model = h.gpus > 0 ? canonical_gpu_model(h.gpu_model) : "none";
            o.vram_gb_per_gpu = h.vram_gb;
            o.gpu_count = h.gpus;
            o.price_usd_per_hour_total = h.price;
            o.price_usd_per_hour_gpu = h.gpus > 0 ? h.price / h.gpus : h.price;
            o.region = h.region;
            o.availability = "free";
            o.cpu_ram_gb = h.ram_gb;
            out.push_back(std::move(o));
        }
        return out;
    }

    Instance create(const CreateRequest & r) override {
        const Host h = find(r.offer.offer_id);
        create_private_directories(leases_);
        nlohmann::json lease = {{"name", r.name}, {"created_unix", static_cast<double>(std::time(nullptr))}};
        // The lease is written whole under a name of this process's own, then link(2)ed into place:
        // link fails with EEXIST when the host is leased, so two concurrent creates cannot both get
        // it, and the lease never exists empty. An empty one (its writer died or hit a full disk)
        // would hold the host under no name, which `broker sweep` cannot judge and so never frees.
        const std::string tmp = leases_ + "/.new-" + h.name + "-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}());
        const std::string path = lease_path(h.name);
        int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) throw common::Error::io(tmp, "create lease", errno);
        std::string text = lease.dump();
        int err = 0;  // the first failure's errno
        if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) err = errno ? errno : EIO;
        if (::close(fd) != 0 && !err) err = errno;
        if (!err && ::link(tmp.c_str(), path.c_str()) != 0) err = errno;
        ::unlink(tmp.c_str());
        if (err == EEXIST)
            throw common::Error(common::ErrorKind::Capacity, "ssh-hosts: " + h.name + ": already leased").with("provider", "ssh-hosts");
        if (err) throw common::Error::io(path, "write lease", err);
        return *get(h.name);
    }

    std::optional<Instance> get(std::string_view id) override {
        if (!fs::exists(lease_path(std::string(id)))) return std::nullopt;
        const Host h = find(std::string(id));
        nlohmann::json lease;
        try {
            std::ifstream in(lease_path(h.name));
            lease = nlohmann::json::parse(in);
        } catch (...) {
            lease = nlohmann::json::object();
        }
        Instance i;
        i.provider = "ssh-hosts";
        i.id = h.name;
        i.name = lease.value("name", "");
        i.status = InstanceStatus::Running;
        i.status_raw = "leased";
        i.gpu_model = h.gpu_model;
        i.gpu_count = h.gpus;
        i.vram_gb_per_gpu = h.vram_gb;
        i.price_usd_per_hour = h.price;
        i.created_unix = lease.value("created_unix", 0.0);
        i.ssh = SshEndpoint{h.host, h.port, h.user, h.key};
        return i;
    }

    std::vector<Instance> list() override {
        std::vector<Instance> out;
        if (!fs::exists(leases_)) return out;
        for (const auto & e : fs::directory_iterator(leases_)) {
            if (e.path().filename().string().front() == '.') continue;  // ".new-*": a lease being written
            std::string id = e.path().stem().string();
            try {
                if (auto i = get(id)) out.push_back(*i);
            } catch (const common::Error & err) {
                common::log::warn("ssh-hosts: lease ", id, ": ", err.message());
            }
        }
        return out;
    }

    void terminate(std::string_view id) override {
        if (!fs::exists(lease_path(std::string(id)))) return;
        const Host h = find(std::string(id));
        // Our jobs on an owned machine are the tmux sessions named with the toolkit prefix.
        const std::string cmd =
            "tmux ls -F '#{session_name}' 2>/dev/null | grep '^tk-' | while read -r s; do tmux kill-session -t \"$s\"; done; true";
        try {
            auto r = ssh_run(SshEndpoint{h.host, h.port, h.user, h.key}, h.key, cmd, std::chrono::seconds(20));
            if (r.exit_code != 0) common::log::warn("ssh-hosts: ", h.name, ": ending jobs exited ", r.exit_code, ": ", r.err);
        } catch (const common::Error & e) {
            common::log::warn("ssh-hosts: ", h.name, ": could not end toolkit jobs over SSH (", e.message(),
                              "); releasing the lease anyway (the machine does not bill)");
        }
        std::error_code ec;
        fs::remove(lease_path(h.name), ec);
        if (ec) throw common::Error::io(lease_path(h.name), "release lease", ec.value());
    }

private:
    std::string lease_path(const std::string & name) const { return leases_ + "/" + name + ".json"; }

    std::vector<Host> load() const {
        if (inventory_.empty() || !fs::exists(inventory_))
            throw common::Error(common::ErrorKind::Usage,
                                "ssh-hosts: no inventory" + (inventory_.empty() ? std::string() : " at " + inventory_) +
                                    "; set BROKER_SSH_HOSTS or ssh_hosts.inventory in the broker config")
                .with("provider", "ssh-hosts");
        auto root = common::ConfigNode::load_file(inventory_);
        root.check_keys({"hosts"});
        std::vector<Host> hosts;
        for (const auto & n : root.at("hosts").elements()) {
            n.check_keys({"name", "host", "port", "user", "key", "gpus", "gpu_model", "vram_gb", "ram_gb", "region",
                          "price_usd_per_hour"});
            Host h;
            h.name = n.at("name").as_string();
            for (char c : h.name)
                if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
                    n.at("name").fail("host names may contain letters, digits, '-', '_' and '.' only");
            h.host = n.at("host").as_string();
            h.port = static_cast<int>(n.get_int("port", 22));
            h.user = n.at("user").as_string();
            h.key = expand_home(n.at("key").as_string());
            h.gpus = static_cast<int>(n.get_int("gpus", 0));
            h.gpu_model = n.get_string("gpu_model", "");
            h.vram_gb = n.get_double("vram_gb", 0);
            if (n.has("ram_gb")) h.ram_gb = n.get_double("ram_gb", 0);
            h.region = n.get_string("region", "");
            h.price = n.get_double("price_usd_per_hour", 0);
            hosts.push_back(h);
        }
        return hosts;
    }

    Host find(const std::string & name) const {
        for (const auto & h : load())
            if (h.name == name) return h;
        throw common::Error::not_found("ssh-hosts:" + name, "not in the inventory " + inventory_);
    }

    std::string inventory_;
    std::string leases_;
};

}  // namespace

std::unique_ptr<Provider> make_ssh_hosts(const ProviderContext & c) { return std::make_unique<SshHosts>(c); }

}  // namespace broker::providers
