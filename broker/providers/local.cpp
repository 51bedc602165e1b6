// The `local` provider: an instance is a real OpenSSH sshd on 127.0.0.1 (common/sshd_server.h) with
// its own home and workspace directories, so a whole run can be rehearsed before paying and tests
// exercise the real SSH path. The one offer describes this machine honestly: CPU count, RAM, free
// disk, and GPUs from nvidia-smi when present (else 0 GPUs). Price is 0.
// State: <state_dir>/local/<id>/{meta.json, home/, workspace/, sshd/}. The daemon outlives the
// broker process that started it (it is the instance) and is ended by terminate.
// Several processes use the folder at once (a sweep's members, their watchdogs, `broker sweep`):
// meta.json is replaced by rename, so it is whole or absent, and a record that vanishes while read
// is an instance another process just ended, not an error.
#include <signal.h>
#include <stdio.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "broker/credentials.h"
#include "broker/providers/providers.h"
#include "common/error.h"
#include "common/log.h"
#include "common/sshd_server.h"
#include "common/subprocess.h"

namespace fs = std::filesystem;

namespace broker::providers {

namespace {

struct GpuInfo {
    std::string model;
    double vram_gb = 0;
};

std::vector<GpuInfo> query_gpus() {
    std::vector<GpuInfo> gpus;
    try {
        common::RunOptions ro;
        ro.timeout = std::chrono::milliseconds(10000);
        auto r = common::run_process({"nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"}, ro);
        if (r.exit_code != 0) return gpus;
        std::istringstream in(r.out);
        std::string line;
        while (std::getline(in, line)) {
            auto comma = line.rfind(',');
            if (comma == std::string::npos) continue;
            GpuInfo g;
            g.model = line.substr(0, comma);
            try {
                g.vram_gb = std::round(std::stod(line.substr(comma + 1)) * 1048576.0 / 1e9);
            } catch (...) {
                continue;
            }
            gpus.push_back(g);
        }
    } catch (const common::Error &) {
        // nvidia-smi absent: a CPU-only machine.
    }
    return gpus;
}

double mem_total_gb() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    double kb = 0;
    std::string unit;
    while (in >> key >> kb >> unit)
        if (key == "MemTotal:") return std::round(kb * 1024.0 / 1e9);
    return 0;
}

std::string random_id() {
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    std::random_device rd;
    std::string s = "l";
    for (int i = 0; i < 9; ++i) s += digits[rd() % 36];
    return s;
}

// Daemons started by this process are kept here on purpose: an instance must outlive the command
// that created it, so its ChildProcess is never destroyed (destruction would stop it).
std::vector<common::SshdServer> & detached_daemons() {
    static auto * keep = new std::vector<common::SshdServer>;
    return *keep;
}

class Local final : public Provider {
public:
    explicit Local(const ProviderContext & c) : root_(c.state_dir + "/local") {}

    std::string_view name() const override { return "local"; }
    ProviderCaps caps() const override {
        return {.stop_start = true, .native_deadline = false, .spot = false, .needs_api_key = false,
                .self_end = SelfEnd::BrokerOnHost, .on_this_machine = true};
    }

    std::vector<Offer> search(const OfferFilter &) override {
        auto gpus = query_gpus();
        Offer o;
        o.provider = "local";
        o.offer_id = "localhost";
        o.gpu_count = static_cast<int>(gpus.size());
        if (gpus.empty()) {
            o.manufacturer = "";
            o.gpu_model = "none";
        } else {
            o.manufacturer = "NVIDIA";
            o.gpu_model = canonical_gpu_model(gpus[0].model);
            o.vram_gb_per_gpu = gpus[0].vram_gb;
        }
        o.region = "localhost";
        o.availability = "available";
        o.cpu_ram_gb = mem_total_gb();
        o.vcpus = static_cast<int>(std::thread::hardware_concurrency());
        create_private_directories(root_);  // holds instance keys: 0700 when we create it
        struct statvfs sv {};
        if (::statvfs(root_.c_str(), &sv) == 0) o.disk_gb = std::round(double(sv.f_bavail) * sv.f_frsize / 1e9);
        return {o};
    }

    Instance create(const CreateRequest & r) override {
        if (r.ssh_public_key.empty())
            throw common::Error::usage("local: create: an SSH public key is required (--ssh-key KEY with KEY.pub beside it)");
        std::string id = random_id();
        std::string dir = root_ + "/" + id;
        fs::create_directories(dir + "/home");
        fs::create_directories(dir + "/workspace");
        nlohmann::json meta = {{"id", id},
                               {"name", r.name},
                               {"created_unix", static_cast<double>(std::time(nullptr))},
                               {"public_key", r.ssh_public_key},
                               {"gpu_count", r.offer.gpu_count},
                               {"gpu_model", r.offer.gpu_model}};
        write_meta(dir, meta);
        launch(dir, meta);
        return *get(id);
    }

    std::optional<Instance> get(std::string_view id) override {
        if (!valid_id(id)) return std::nullopt;
        auto meta = read_meta(root_ + "/" + std::string(id));
        if (!meta) return std::nullopt;
        return to_instance(*meta);
    }

    std::vector<Instance> list() override {
        std::vector<Instance> out;
        if (!fs::exists(root_)) return out;
        for (const auto & e : fs::directory_iterator(root_)) {
            if (!valid_id(e.path().filename().string())) continue;  // ".ending-*": being removed
            auto meta = read_meta(e.path().string());
            if (!meta) continue;
            Instance i = to_instance(*meta);
            if (parse_instance_name(i.name)) out.push_back(std::move(i));
        }
        return out;
    }

    void terminate(std::string_view id) override {
        if (!valid_id(id)) return;
        std::string dir = root_ + "/" + std::string(id);
        auto meta = read_meta(dir);
        if (!meta) return;
        // The daemon goes first, so a terminate cut short leaves the record for the next one.
        kill_daemon(*meta);
        // Two processes may end one instance at once (a member and its watchdog): the rename to a
        // name of this process's own lets exactly one of them remove the folder, and lists stop
        // showing it at once. The loser finds the folder gone, which is the outcome it wanted.
        std::string gone = root_ + "/.ending-" + std::string(id) + "-" + std::to_string(::getpid()) + "-" + random_id();
        if (::rename(dir.c_str(), gone.c_str()) != 0) {
            if (errno == ENOENT) return;
            throw common::Error::io(dir, "rename to " + gone, errno);
        }
        std::error_code ec;
        fs::remove_all(gone, ec);
        if (ec) throw common::Error::io(gone, "remove", ec.value());
    }

    void stop(std::string_view id) override {
        auto meta = valid_id(id) ? read_meta(root_ + "/" + std::string(id)) : std::nullopt;
        if (!meta) throw common::Error::not_found("local:" + std::string(id));
        kill_daemon(*meta);
    }

    void start(std::string_view id) override {
        std::string dir = root_ + "/" + std::string(id);
        auto meta = valid_id(id) ? read_meta(dir) : std::nullopt;
        if (!meta) throw common::Error::not_found("local:" + std::string(id));
        if (alive(*meta)) return;
        launch(dir, *meta);
    }

private:
    void launch(const std::string & dir, nlohmann::json & meta) {
        common::SshdOptions so;
        so.dir = dir + "/sshd";
        so.port = meta.value("port", 0);
        so.authorized_key = meta.value("public_key", "");
        // The session sees its own home and workspace (sshd's SetEnv overrides the login defaults).
        so.extra_config = {"SetEnv HOME=" + dir + "/home TOOLKIT_WORKSPACE=" + dir + "/workspace"};
        auto server = common::SshdServer::start(so);
        meta["port"] = server.port();
        meta["pid"] = server.pid();
        meta["user"] = server.user();
        write_meta(dir, meta);
        detached_daemons().push_back(std::move(server));
    }

    static bool alive(const nlohmann::json & meta) {
        pid_t pid = meta.value("pid", 0);
        return pid > 0 && common::process_alive(pid);
    }

    static void kill_daemon(const nlohmann::json & meta) {
        pid_t pid = meta.value("pid", 0);
        if (pid <= 0 || !common::process_alive(pid)) return;
        auto children = common::process_descendants(pid);
        ::kill(pid, SIGTERM);
        for (pid_t c : children) ::kill(c, SIGTERM);
        for (int i = 0; i < 100 && common::process_alive(pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (common::process_alive(pid)) ::kill(pid, SIGKILL);
        for (pid_t c : common::process_descendants(pid)) ::kill(c, SIGKILL);
    }

    Instance to_instance(const nlohmann::json & meta) const {
        Instance i;
        i.provider = "local";
        i.id = meta.value("id", "");
        i.name = meta.value("name", "");
        bool up = alive(meta);
        i.status = up ? InstanceStatus::Running : InstanceStatus::Stopped;
        i.status_raw = up ? "sshd-running" : "sshd-stopped";
        i.gpu_count = meta.value("gpu_count", 0);
        i.gpu_model = meta.value("gpu_model", "");
        i.price_usd_per_hour = 0.0;
        i.created_unix = meta.value("created_unix", 0.0);
        if (up) i.ssh = SshEndpoint{"127.0.0.1", meta.value("port", 22), meta.value("user", ""), ""};
        return i;
    }

    // An id names a folder right under root_; a leading '.' marks one that terminate is removing.
    static bool valid_id(std::string_view id) {
        return !id.empty() && id.front() != '.' && id.find('/') == std::string_view::npos;
    }

    // nullopt when the record is absent, or vanished while we looked: another process ended it.
    static std::optional<nlohmann::json> read_meta(const std::string & dir) {
        const std::string path = dir + "/meta.json";
        std::ifstream in(path);
        if (!in) {
            std::error_code ec;
            if (!fs::exists(path, ec)) return std::nullopt;
            throw common::Error::io(path, "open", errno ? errno : EIO);
        }
        try {
            return nlohmann::json::parse(in);
        } catch (const nlohmann::json::exception &) {
            throw common::Error(common::ErrorKind::Internal, path + ": unreadable local instance record");
        }
    }
    static void write_meta(const std::string & dir, const nlohmann::json & meta) {
        common::write_text_file(dir + "/meta.json.tmp", meta.dump(2), 0600);
        fs::rename(dir + "/meta.json.tmp", dir + "/meta.json");
    }

    std::string root_;
};

}  // namespace

std::unique_ptr<Provider> make_local(const ProviderContext & c) { return std::make_unique<Local>(c); }

}  // namespace broker::providers
