// The `ssh-hosts` provider: machines the user already owns, listed in a YAML inventory. "Create"
// leases a free host (a lease file linked into place), "terminate" ends our jobs there (tmux
// sessions named with the toolkit prefix "tk-", and the detached bifrost jobs started under the
// lease: ssh_hosts_end_jobs_script) and releases the lease. Nothing is rented, so price is 0 unless
// the inventory states one.
//
// Instance ids are "<host>~<lease>": the host's name and a random token drawn by the create that
// took the lease (kept in the lease file as "lease"). A host is leased again and again, and a
// terminate that arrives late (a watchdog, `broker sweep` acting on a stale ledger row) must end the
// lease it names, never a later one: with the host name alone as id it would kill the new holder's
// jobs and free the host under it. So get() knows an id only while the host's lease carries its
// token, and terminate() of any other id is a no-op (that lease has ended already). A bare host name
// (no '~', which host names cannot contain) names a lease written before tokens existed, which has
// none, and never a tokened one: ledger rows of earlier versions still end their leases.
// Search's offer ids stay the bare host names; create takes one and returns the tokened id.
//
// Inventory format (unknown keys are refused, with file:line):
//   hosts:
//     - name: box1            # the host's name: offer id, and instance ids "box1~<lease>"
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
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <random>
#include <sstream>

#include "bifrost/jobs_script.h"
#include "bifrost/shell.h"
#include "broker/credentials.h"
#include "broker/providers/providers.h"
#include "broker/readiness.h"
#include "common/config_yaml.h"
#include "common/error.h"
#include "common/file_lock.h"
#include "common/http.h"
#include "common/log.h"
#include "common/program.h"
#include "common/regular_file.h"
#include "common/shell_quote.h"

namespace fs = std::filesystem;

namespace broker::providers {

namespace {

// Separates the host from the lease token in an instance id; host names cannot contain it.
constexpr char kLeaseSep = '~';

bool valid_host_name(std::string_view name) {
    if (name.empty()) return false;
    for (char c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
    return true;
}

// An instance id split: the host, and the lease token ("" for a bare id, which names a token-less
// lease of an earlier version).
struct LeaseId {
    std::string host, token;
};

LeaseId parse_lease_id(std::string_view id) {
    LeaseId out;
    const auto sep = id.find(kLeaseSep);
    out.host = std::string(id.substr(0, sep));
    bool ok = valid_host_name(out.host);
    if (sep != std::string_view::npos) {
        out.token = std::string(id.substr(sep + 1));
        ok = ok && !out.token.empty() && out.token.find_first_not_of("0123456789abcdef") == std::string::npos;
    }
    if (!ok)
        throw common::Error::usage("ssh-hosts: '" + std::string(id) +
                                   "' is not an ssh-hosts instance id (<host>~<lease>, as `broker instances list` "
                                   "prints)");
    return out;
}

std::string lease_id(const std::string & host, const std::string & token) {
    return token.empty() ? host : host + kLeaseSep + token;
}

std::string new_lease_token() {
    std::random_device rd;
    char buf[17];
    std::snprintf(buf, sizeof buf, "%08x%08x", static_cast<unsigned>(rd()), static_cast<unsigned>(rd()));
    return buf;
}

// Seconds between the SIGTERM and the SIGKILL a lease's detached jobs get (bifrost kill's default).
constexpr int kJobGraceS = 5;

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
        nlohmann::json lease = {
            {"name", r.name}, {"created_unix", static_cast<double>(std::time(nullptr))}, {"lease", new_lease_token()}};
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
        return instance(h, lease);
    }

    std::optional<Instance> get(std::string_view id) override {
        const LeaseId want = parse_lease_id(id);
        auto lease = read_lease(want.host);
        if (!lease || lease_token(*lease) != want.token) return std::nullopt;  // ended (the host may be leased again)
        return instance(find(want.host), *lease);
    }

    std::vector<Instance> list() override {
        std::vector<Instance> out;
        if (!fs::exists(leases_)) return out;
        for (const auto & e : fs::directory_iterator(leases_)) {
            // Leases are "<host>.json"; ".new-*" (a lease being written) and ".<host>.lock" are not.
            const std::string file = e.path().filename().string();
            if (file.size() <= 5 || !file.ends_with(".json")) continue;
            const std::string host = file.substr(0, file.size() - 5);
            try {
                if (!valid_host_name(host)) throw common::Error::usage("not a lease of this provider");
                // One read gives the id and the rest: they cannot come from two different leases.
                if (auto lease = read_lease(host)) out.push_back(instance(find(host), *lease));
            } catch (const common::Error & err) {
                common::log::warn("ssh-hosts: lease ", file, ": ", err.message());
            }
        }
        return out;
    }

    void terminate(std::string_view id) override {
        const LeaseId want = parse_lease_id(id);
        if (!fs::exists(leases_)) return;
        // The lease holds the host until it is removed, so no create can take the host while we end
        // the jobs: link(2) fails while the lease exists. Only another terminate could remove it
        // under us, so terminates of one host are serialised by a lock file of that host, held from
        // the token check to the removal. A second terminate of the same lease (two watchdogs, a
        // sweep) waits, then finds the lease gone and does nothing. Were the lock dropped around
        // the SSH job kill (up to 20 s), that second terminate could pass the check, the first
        // remove the lease, a create lease the host again and the second's kill end the new
        // holder's jobs. The lock is per host, so a slow kill delays only terminates of that host;
        // create never takes it and is never delayed by it.
        common::FileLock lock(leases_ + "/." + want.host + ".lock");
        auto lease = read_lease(want.host);
        if (!lease) return;  // released already
        if (lease_token(*lease) != want.token) {
            // That lease has ended and the host is leased again: its jobs are not ours to end.
            common::log::info("ssh-hosts: ", std::string(id), ": that lease has ended (", want.host,
                              " is leased again as ", lease_id(want.host, lease_token(*lease)), "); nothing to do");
            return;
        }
        const Host h = find(want.host);
        end_jobs(h, std::string(id), *lease);
        // Checked again before removing: every terminate of this version holds the lock, but one of
        // an earlier version (no lock, no tokens) may have released the host meanwhile.
        lease = read_lease(want.host);
        if (!lease || lease_token(*lease) != want.token) return;
        std::error_code ec;
        fs::remove(lease_path(h.name), ec);
        if (ec) throw common::Error::io(lease_path(h.name), "release lease", ec.value());
    }

private:
    std::string lease_path(const std::string & name) const { return leases_ + "/" + name + ".json"; }

    // Ends what the lease left running on the host, in one SSH command: the toolkit's tmux sessions
    // ("tk-*") and the detached bifrost jobs of this lease, and reports each. Failures are warnings:
    // the lease is released anyway (the machine does not bill), and the warning says what may remain.
    void end_jobs(const Host & h, const std::string & id, const nlohmann::json & lease) const {
        std::optional<JobWindow> window = lease_window(h, id, lease);
        const std::string script = ssh_hosts_end_jobs_script(window, std::time(nullptr));
        SshRunResult r;
        try {
            r = ssh_run(SshEndpoint{h.host, h.port, h.user, h.key}, h.key, "sh -c " + common::sh_quote(script),
                        std::chrono::seconds(kJobGraceS + 25));
        } catch (const common::Error & e) {
            common::log::warn("ssh-hosts: ", h.name, ": could not end toolkit jobs over SSH (", e.message(),
                              "); releasing the lease anyway (the machine does not bill); its tmux sessions and "
                              "detached jobs may still run there");
            return;
        }
        if (r.exit_code != 0)
            common::log::warn("ssh-hosts: ", h.name, ": ending jobs exited ", r.exit_code, ": ",
                              common::http::safe_text(r.err, 300));
        report_ended(h.name, id, r.out, window.has_value());
    }

    // What "started under this lease" means for the detached jobs, on this machine's clock (the
    // script converts): from the lease's creation on, up to the start of another lease held now by
    // an inventory entry that reaches the same account (one machine listed twice), whose jobs land
    // in the same ~/.bifrost/jobs. nullopt when the lease states no usable creation time: nothing
    // then says which jobs are its.
    std::optional<JobWindow> lease_window(const Host & h, const std::string & id, const nlohmann::json & lease) const {
        auto created = lease_created(lease);
        if (!created) {
            common::log::warn("ssh-hosts: ", id, ": the lease states no creation time, so which detached bifrost jobs "
                              "are its is unknown; they are left running (see `bifrost jobs` on ", h.name, ")");
            return std::nullopt;
        }
        JobWindow w{*created, std::nullopt};
        for (const auto & other : load()) {
            if (other.name == h.name || to_lower(other.host) != to_lower(h.host) || other.port != h.port ||
                other.user != h.user)
                continue;
            std::optional<nlohmann::json> other_lease;
            try {
                other_lease = read_lease(other.name);
            } catch (const common::Error &) {
                other_lease = nlohmann::json::object();  // unreadable: held, since when unknown
            }
            if (!other_lease) continue;
            // From the later of the two starts on, a job may be either lease's: not ours to end.
            // A lease with no start could have started any time: all of ours are shared then.
            const long long from = std::max(lease_created(*other_lease).value_or(*created), *created);
            w.shared_from = w.shared_from ? std::min(*w.shared_from, from) : from;
        }
        return w;
    }

    static std::optional<long long> lease_created(const nlohmann::json & lease) {
        auto c = lease.find("created_unix");
        if (c == lease.end() || !c->is_number()) return std::nullopt;
        const double v = c->get<double>();
        // A time in seconds since 1970, before the year 5000: anything else is not one of ours.
        if (!std::isfinite(v) || v <= 0 || v > 95617584000.0) return std::nullopt;
        return static_cast<long long>(v);
    }

    // Reads the script's report lines (the host's output: each field is checked before it is shown).
    static void report_ended(const std::string & host, const std::string & id, const std::string & out, bool looked) {
        int stopped = 0, lines = 0;
        std::istringstream in(out);
        std::string line;
        while (std::getline(in, line) && ++lines <= 1000) {
            std::vector<std::string> f;
            for (size_t start = 0;;) {
                const size_t tab = line.find('\t', start);
                f.push_back(line.substr(start, tab - start));
                if (tab == std::string::npos) break;
                start = tab + 1;
            }
            const std::string what = f[0];
            if (what == "noclock") {
                common::log::warn("ssh-hosts: ", host, ": could not read the host's clock; detached bifrost jobs of ", id,
                                  " are left running (see `bifrost jobs` on ", host, ")");
                continue;
            }
            if (what == "session" && f.size() == 2) {
                common::log::info("ssh-hosts: ", host, ": ended tmux session ", common::http::safe_text(f[1], 80));
                continue;
            }
            if (f.size() < 2 || !bifrost::valid_job_name(f[1])) continue;  // not a line of ours
            const std::string & job = f[1];
            const bool pid_ok = f.size() >= 3 && !f[2].empty() && f[2].size() <= 10 &&
                                f[2].find_first_not_of("0123456789") == std::string::npos;
            if (what == "stopped" && f.size() == 4 && pid_ok && (f[3] == "TERM" || f[3] == "KILL")) {
                ++stopped;
                common::log::info("ssh-hosts: ", host, ": stopped detached job ", job, " (process group ", f[2], ") with SIG",
                                  f[3], f[3] == "KILL" ? " after " + std::to_string(kJobGraceS) + " s of SIGTERM" : "");
            } else if (what == "shared" && f.size() == 3 && pid_ok) {
                common::log::warn("ssh-hosts: ", host, ": left detached job ", job, " (pid ", f[2],
                                  ") running: it started after another lease of the same account began, so it may be that "
                                  "lease's; end it with `bifrost kill` if it is not");
            } else if (what == "skipped" && f.size() == 3) {
                common::log::warn("ssh-hosts: ", host, ": left detached job ", job, " running: ",
                                  common::http::safe_text(f[2], 120));
            }
        }
        if (looked && stopped == 0) common::log::info("ssh-hosts: ", host, ": no detached bifrost job of ", id, " was running");
    }

    // The host's lease, nullopt when it has none. A lease that does not parse (one of this version
    // always does: it is written whole, then linked) reads as an empty, token-less one.
    std::optional<nlohmann::json> read_lease(const std::string & host) const {
        const std::string path = lease_path(host);
        std::string text;
        try {
            // One open: link/unlink swap the lease whole. A lease is a few dozen bytes; 64 KiB bounds
            // whatever else sits under its name.
            text = common::read_regular_file(path, 64 * 1024, "ssh-hosts lease");
        } catch (const common::Error & e) {
            if (e.kind() == common::ErrorKind::NotFound) return std::nullopt;
            throw;
        }
        auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (!j.is_object()) return nlohmann::json::object();
        return j;
    }

    // "" for a lease of an earlier version, written before leases had tokens.
    static std::string lease_token(const nlohmann::json & lease) {
        auto t = lease.find("lease");
        return t != lease.end() && t->is_string() ? t->get<std::string>() : std::string();
    }

    static Instance instance(const Host & h, const nlohmann::json & lease) {
        Instance i;
        i.provider = "ssh-hosts";
        i.id = lease_id(h.name, lease_token(lease));
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
            if (!valid_host_name(h.name))
                n.at("name").fail("host names may contain letters, digits, '-', '_' and '.' only, and not be empty");
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

std::string ssh_hosts_end_jobs_script(const std::optional<JobWindow> & window, long long local_now) {
    // POSIX sh, run as `sh -c` whatever the account's login shell. Every value put into it is an
    // integer formatted here; names and pids come from the host's own files and are only ever
    // quoted expansions, checked before use.
    std::string s =
        // The toolkit's tmux sessions (deploy's and the CLI's, named "tk-..."), as before.
        "tmux ls -F \"#{session_name}\" 2>/dev/null | grep \"^tk-\" | while read -r s; do\n"
        "  tmux kill-session -t \"$s\" 2>/dev/null && printf \"session\\t%s\\n\" \"$s\"\n"
        "done\n";
    if (!window) return s + "exit 0\n";
    // The lease's times are this machine's clock; a job's start_time is the host's (`date +%s` in
    // bifrost's wrapper). The offset is measured now: the host's time minus ours, both read in this
    // round trip, so it errs late by the connection's latency. The 2 s margins absorb whole-second
    // rounding and keep both bounds inside the lease: a job from just before it, or from just after a
    // second lease of the account began, is never taken for this lease's.
    s += "R=$(date +%s 2>/dev/null)\n"
         "case $R in \"\"|*[!0-9]*) echo noclock; exit 0;; esac\n"
         "[ ${#R} -le 12 ] || { echo noclock; exit 0; }\n"
         "off=$((R - " + std::to_string(local_now) + "))\n"
         "lo=$((" + std::to_string(window->created) + " + off + 2))\n";
    s += window->shared_from ? "hi=$((" + std::to_string(*window->shared_from) + " + off - 2))\n" : std::string("hi=\n");
    // bifrost's layout (bifrost/jobs.cpp): ~/.bifrost/jobs/NAME/{pid,ident,start_time,exit.CODE,
    // exit_code,killed}, the wrapper `sh $HOME/.bifrost/jobs/NAME/run.sh` leading its own process
    // group (setsid). Whether a job has ended and whether its pid is still its wrapper are bifrost's
    // own answers (job_exit_code, job_alive: the recorded boot id and start time), so `bifrost jobs`
    // and this terminate never disagree. One case is stricter here: an older record's exit_code that
    // exists but is empty (the wrapper's write failed, e.g. a full disk) means the job's command
    // returned, so it counts as ended even though job_exit_code prints nothing for it. A job is this
    // lease's when it is still running and started inside the window; it is stopped only when that
    // pid is still its wrapper and leads its group, so a stale or planted pid file can never turn a
    // kill on some other process.
    s += bifrost::job_shell_functions();
    s += "cd \"$HOME/.bifrost/jobs\" 2>/dev/null || exit 0\n"
         "w=\"sh $HOME/.bifrost/jobs/\"\n"
         "sent=\n"
         "for j in */; do\n"
         "  n=${j%/}\n"
         "  case $n in \"\"|*[!A-Za-z0-9._-]*) continue;; esac\n"
         "  [ -f \"$n/pid\" ] && [ ! -e \"$n/exit_code\" ] && [ -z \"$(job_exit_code \"$n\")\" ] || continue\n"
         "  pid=$(head -c 24 \"$n/pid\" | tr -d \"\\n\")\n"
         "  st=$(head -c 24 \"$n/start_time\" 2>/dev/null | tr -d \"\\n\")\n"
         "  case $pid in \"\"|0*|1|*[!0-9]*) continue;; esac\n"
         "  [ ${#pid} -le 10 ] && kill -0 \"$pid\" 2>/dev/null || continue\n"
         // The pid names another process now (reused after a reboot): the job itself is gone.
         "  job_alive \"$n\" || continue\n"
         "  case $st in \"\"|*[!0-9]*) printf \"skipped\\t%s\\tits start_time is not a time\\n\" \"$n\"; continue;; esac\n"
         "  [ ${#st} -le 12 ] && [ \"$st\" -ge \"$lo\" ] || continue\n"
         "  if [ -n \"$hi\" ] && [ \"$st\" -ge \"$hi\" ]; then printf \"shared\\t%s\\t%s\\n\" \"$n\" \"$pid\"; continue; fi\n"
         "  if [ -r \"/proc/$pid/cmdline\" ]; then\n"
         "    a=$(tr \"\\000\" \" \" < \"/proc/$pid/cmdline\")\n"
         "    g=$(sed \"s/.*) //\" \"/proc/$pid/stat\" | cut -d \" \" -f 3)\n"
         "  else\n"
         "    a=$(ps -o args= -p \"$pid\" 2>/dev/null)\n"
         "    g=$(ps -o pgid= -p \"$pid\" 2>/dev/null | tr -d \" \")\n"
         "  fi\n"
         "  case $a in \"$w$n/run.sh\"|\"$w$n/run.sh \"*) ;;\n"
         "    *) printf \"skipped\\t%s\\tpid %s is not its bifrost wrapper\\n\" \"$n\" \"$pid\"; continue;; esac\n"
         "  [ \"$g\" = \"$pid\" ] || { printf \"skipped\\t%s\\tpid %s does not lead its process group\\n\" \"$n\" \"$pid\"; continue; }\n"
         // As `bifrost kill` does: the job then reads "killed", not "failed".
         "  [ -L \"$n/killed\" ] || : > \"$n/killed\"\n"
         "  kill -TERM -\"$pid\" 2>/dev/null\n"
         "  sent=\"$sent $pid:$n\"\n"
         "done\n"
         "i=0\n"
         "while [ -n \"$sent\" ] && [ $i -lt " + std::to_string(kJobGraceS * 10) + " ]; do\n"
         "  up=; for e in $sent; do kill -0 -\"${e%%:*}\" 2>/dev/null && up=1; done\n"
         "  [ -n \"$up\" ] || break\n"
         "  sleep 0.1; i=$((i + 1))\n"
         "done\n"
         "for e in $sent; do\n"
         "  p=${e%%:*}; sig=TERM\n"
         "  if kill -0 -\"$p\" 2>/dev/null; then kill -KILL -\"$p\" 2>/dev/null; sig=KILL; fi\n"
         "  printf \"stopped\\t%s\\t%s\\t%s\\n\" \"${e#*:}\" \"$p\" \"$sig\"\n"
         "done\n"
         "exit 0\n";
    return s;
}

std::unique_ptr<Provider> make_ssh_hosts(const ProviderContext & c) { return std::make_unique<SshHosts>(c); }

}  // namespace broker::providers
