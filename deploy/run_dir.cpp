// The run directory and its journal (see run_dir.h). Every write is whole-or-nothing: the journal
// appends one line with O_APPEND and fsyncs it; state.json goes through a temporary file and rename.
#include "deploy/run_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "common/error.h"

namespace fs = std::filesystem;

namespace deploy {

namespace {

void write_atomic(const std::string & path, const std::string & text) {
    std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw common::Error::io(tmp, "create", errno);
    size_t off = 0;
    while (off < text.size()) {
        ssize_t n = ::write(fd, text.data() + off, text.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            ::close(fd);
            throw common::Error::io(tmp, "write", e);
        }
        off += static_cast<size_t>(n);
    }
    ::fsync(fd);
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw common::Error::io(path, "rename", errno);
}

// run.json and state.json are a few KiB; anything near this is not ours.
constexpr uintmax_t kMaxRunFileBytes = 16u << 20;

nlohmann::json read_json(const std::string & path) {
    std::error_code ec;
    if (auto size = fs::file_size(path, ec); !ec && size > kMaxRunFileBytes)
        throw common::Error::usage(path + ": " + std::to_string(size) + " bytes; a run directory's files are far smaller");
    std::ifstream in(path);
    if (!in) throw common::Error::not_found(path, "cannot be read");
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception & e) {
        throw common::Error(common::ErrorKind::Usage, path + ": not valid JSON: " + e.what());
    }
}

nlohmann::json to_json(const JournalEvent & e) {
    nlohmann::json j{{"step", e.step}, {"event", e.event}, {"unix_s", e.unix_s}};
    if (e.event == "done" || e.event == "failed") j["duration_s"] = e.duration_s;
    if (!e.kind.empty()) j["kind"] = e.kind;
    if (!e.message.empty()) j["message"] = e.message;
    return j;
}

// Reads one typed field of state.json. Every wrong type is a usage error naming the file and the
// key path ("state.json: instance.gpu_count: expected an integer, got string").
class Reader {
public:
    Reader(const nlohmann::json & j, std::string source, std::string path) : j_(j), source_(std::move(source)), path_(std::move(path)) {
        if (!j_.is_object()) fail("", "an object");
    }
    bool has(const char * key) const { return j_.contains(key) && !j_.at(key).is_null(); }
    Reader object(const char * key) const { return Reader(j_.at(key), source_, name(key)); }
    std::string string(const char * key, const std::string & fallback = "") const {
        if (!has(key)) return fallback;
        if (!j_.at(key).is_string()) fail(key, "a string");
        return j_.at(key).get<std::string>();
    }
    double number(const char * key, double fallback = 0) const {
        if (!has(key)) return fallback;
        if (!j_.at(key).is_number()) fail(key, "a number");
        return j_.at(key).get<double>();
    }
    template <class Int>
    Int integer(const char * key, Int fallback = 0) const {
        if (!has(key)) return fallback;
        const auto & v = j_.at(key);
        bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<Int>::max())
                    : v.is_number_integer() ? v.get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<Int>::min()) &&
                                                  (v.get<int64_t>() < 0 || static_cast<uint64_t>(v.get<int64_t>()) <=
                                                                               static_cast<uint64_t>(std::numeric_limits<Int>::max()))
                                            : false;
        if (!fits) fail(key, "an integer in range");
        return v.is_number_unsigned() ? static_cast<Int>(v.get<uint64_t>()) : static_cast<Int>(v.get<int64_t>());
    }
    bool boolean(const char * key, bool fallback = false) const {
        if (!has(key)) return fallback;
        if (!j_.at(key).is_boolean()) fail(key, "true or false");
        return j_.at(key).get<bool>();
    }
    std::optional<std::string> opt_string(const char * key) const { return has(key) ? std::optional(string(key)) : std::nullopt; }
    std::optional<double> opt_number(const char * key) const { return has(key) ? std::optional(number(key)) : std::nullopt; }
    std::optional<bool> opt_boolean(const char * key) const { return has(key) ? std::optional(boolean(key)) : std::nullopt; }
    const nlohmann::json & json() const { return j_; }
    [[noreturn]] void fail(const std::string & key, const std::string & expected) const {
        const auto & v = key.empty() ? j_ : j_.at(key);
        const std::string where = !key.empty() ? name(key) : path_.empty() ? "(top level)" : path_;
        throw common::Error::usage(source_ + ": " + where + ": expected " + expected + ", got " +
                                   v.type_name());
    }
    std::string name(const std::string & key) const { return path_.empty() ? key : path_ + "." + key; }

private:
    const nlohmann::json & j_;
    std::string source_;
    std::string path_;
};

// No real run has more than a few offers (three per provider) or jobs (bootstrap, fetch, analysis).
constexpr size_t kMaxOffers = 1000;
constexpr size_t kMaxJobs = 64;
constexpr size_t kMaxJumps = 8;  // bifrost's own bound on a chain
constexpr size_t kMaxProviders = 64;

template <class T>
void put(nlohmann::json & j, const char * key, const std::optional<T> & v) {
    if (v) j[key] = *v;
}

}  // namespace

nlohmann::json to_json(const RunState & s) {
    nlohmann::json j = s.unknown.is_object() ? s.unknown : nlohmann::json::object();
    if (s.estimated) j["min_vram_gb"] = s.min_vram_gb ? nlohmann::json(*s.min_vram_gb) : nlohmann::json(nullptr);
    if (s.estimate)
        j["estimate"] = {{"params", s.estimate->params},         {"params_active", s.estimate->params_active},
                         {"weights_gb", s.estimate->weights_gb}, {"activations_gb", s.estimate->activations_gb},
                         {"total_gb", s.estimate->total_gb},     {"per_gpu_gb", s.estimate->per_gpu_gb}};
    if (s.estimate && s.estimate->offload_gb > 0) {  // written only with offload: records from before it stay as they were
        j["estimate"]["offload_gb"] = s.estimate->offload_gb;
        j["estimate"]["ring_gb"] = s.estimate->ring_gb;
    }
    if (s.offers) {
        j["offers"] = nlohmann::json::array();
        for (const auto & o : *s.offers) j["offers"].push_back(o.row);
    }
    if (s.create_intent) {
        j["create_intent"] = {{"run_id", s.create_intent->run_id}, {"unix_s", s.create_intent->unix_s}};
        if (s.create_intent->providers) j["create_intent"]["providers"] = *s.create_intent->providers;
    }
    if (s.instance) {
        const auto & i = *s.instance;
        auto & o = j["instance"] = {{"provider", i.provider},          {"id", i.id},
                                    {"name", i.name},                  {"price_usd_per_hour", i.price_usd_per_hour},
                                    {"gpu_model", i.gpu_model},        {"gpu_count", i.gpu_count},
                                    {"vram_gb_per_gpu", i.vram_gb_per_gpu}};
        put(o, "created_unix", i.created_unix);
        put(o, "native_deadline", i.native_deadline);
        if (i.adopted) o["adopted"] = true;
        if (i.ssh) o["ssh"] = {{"host", i.ssh->host}, {"port", i.ssh->port}, {"user", i.ssh->user}};
    }
    if (s.remote) j["remote"] = {{"home", s.remote->home}, {"cache_dir", s.remote->cache_dir}};
    if (s.watchdog)
        j["watchdog"] = {{"action", s.watchdog->action},
                         {"deadline_unix", s.watchdog->deadline_unix},
                         {"heartbeat_timeout_s", s.watchdog->heartbeat_timeout_s}};
    put(j, "container_env", s.container_env);
    if (!s.jobs.empty()) {
        auto & jobs = j["jobs"] = nlohmann::json::object();
        for (const auto & [name, job] : s.jobs) {
            auto & o = jobs[name] = {{"offset", job.offset}};
            put(o, "state", job.state);
            put(o, "exit_code", job.exit_code);
        }
    }
    put(j, "bin_dir", s.bin_dir);
    put(j, "model_dir", s.model_dir);
    if (s.batch) {
        const auto & b = *s.batch;
        auto & o = j["batch"] = {{"provider", b.provider},
                                 {"offer_id", b.offer_id},
                                 {"login", {{"host", b.login.host}, {"port", b.login.port}, {"user", b.login.user}}},
                                 {"login_key", b.login_key},
                                 {"work_dir", b.work_dir},
                                 {"fetch_on_login", b.fetch_on_login},
                                 {"jump", nlohmann::json::array()},
                                 {"jobs", nlohmann::json::object()}};
        for (const auto & h : b.jump) o["jump"].push_back({{"host", h.host}, {"port", h.port}, {"user", h.user}, {"key", h.key}});
        for (const auto & [role, job] : b.jobs) {
            auto & r = o["jobs"][role] = {{"id", job.id},       {"name", job.name},         {"output_path", job.output_path},
                                          {"offset", job.offset}, {"restarts", job.restarts}, {"submitted_unix", job.submitted_unix}};
            put(r, "end_state", job.end_state);
            put(r, "exit_code", job.exit_code);
        }
        put(o, "submitting", b.submitting);
    }
    if (s.results) j["results"] = {{"dir", s.results->dir}, {"outliers_json", s.results->outliers_json}};
    if (s.end) j["end"] = to_json(*s.end);
    return j;
}

nlohmann::json to_json(const EndRecord & end) {
    nlohmann::json o{{"action", end.action}};
    put(o, "reason", end.reason);
    put(o, "keep_until_unix", end.keep_until_unix);
    put(o, "watchdog_extended", end.watchdog_extended);
    put(o, "proven_gone", end.proven_gone);
    put(o, "last_status", end.last_status);
    put(o, "ended_unix", end.ended_unix);
    return o;
}

RunState run_state_from_json(const nlohmann::json & j, const std::string & source) {
    Reader r(j, source, "");
    RunState s;
    static const char * const kKnown[] = {"min_vram_gb", "estimate", "offers", "create_intent", "instance", "remote", "watchdog",
                                          "container_env", "jobs", "bin_dir", "model_dir", "batch", "results", "end"};
    for (const auto & [key, value] : j.items())
        if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) s.unknown[key] = value;
    s.estimated = j.contains("min_vram_gb");
    s.min_vram_gb = r.opt_number("min_vram_gb");
    if (r.has("estimate")) {
        auto e = r.object("estimate");
        s.estimate = EstimateRecord{e.integer<int64_t>("params"), e.integer<int64_t>("params_active"), e.number("weights_gb"),
                                    e.number("activations_gb"),   e.number("total_gb"),                e.number("per_gpu_gb"),
                                    e.number("offload_gb"),       e.number("ring_gb")};
    }
    if (r.has("offers")) {
        const auto & rows = j.at("offers");
        if (!rows.is_array()) r.fail("offers", "an array");
        if (rows.size() > kMaxOffers) r.fail("offers", "at most " + std::to_string(kMaxOffers) + " offers");
        s.offers.emplace();
        for (size_t n = 0; n < rows.size(); ++n) {
            Reader o(rows[n], source, "offers[" + std::to_string(n) + "]");
            s.offers->push_back({o.string("provider"), o.string("offer_id"), o.string("gpu_model"), o.integer<int>("gpu_count"),
                                 o.number("price_usd_per_hour_total"), rows[n]});
        }
    }
    if (r.has("create_intent")) {
        auto c = r.object("create_intent");
        s.create_intent = CreateIntent{c.string("run_id"), c.number("unix_s"), std::nullopt};
        if (c.has("providers")) {
            const auto & ps = c.json().at("providers");
            if (!ps.is_array()) c.fail("providers", "an array");
            if (ps.size() > kMaxProviders) c.fail("providers", "at most " + std::to_string(kMaxProviders) + " providers");
            s.create_intent->providers.emplace();
            for (const auto & p : ps) {
                if (!p.is_string()) c.fail("providers", "an array of strings");
                s.create_intent->providers->push_back(p.get<std::string>());
            }
        }
    }
    if (r.has("instance")) {
        auto i = r.object("instance");
        std::optional<SshRecord> ssh;
        if (i.has("ssh")) {
            auto h = i.object("ssh");
            ssh = SshRecord{h.string("host"), h.integer<int>("port", 22), h.string("user")};
        }
        s.instance = InstanceRecord{.provider = i.string("provider"), .id = i.string("id"), .name = i.string("name"),
                                    .price_usd_per_hour = i.number("price_usd_per_hour"), .gpu_model = i.string("gpu_model"),
                                    .gpu_count = i.integer<int>("gpu_count"), .vram_gb_per_gpu = i.number("vram_gb_per_gpu"),
                                    .created_unix = i.opt_number("created_unix"), .native_deadline = i.opt_boolean("native_deadline"),
                                    .adopted = i.boolean("adopted"), .ssh = std::move(ssh)};
    }
    if (r.has("remote")) {
        auto m = r.object("remote");
        s.remote = RemoteRecord{m.string("home"), m.string("cache_dir")};
    }
    if (r.has("watchdog")) {
        auto w = r.object("watchdog");
        s.watchdog = WatchdogRecord{w.string("action"), w.number("deadline_unix"), w.number("heartbeat_timeout_s")};
    }
    s.container_env = r.opt_boolean("container_env");
    if (r.has("jobs")) {
        auto jobs = r.object("jobs");
        if (jobs.json().size() > kMaxJobs) r.fail("jobs", "at most " + std::to_string(kMaxJobs) + " jobs");
        for (const auto & [name, value] : jobs.json().items()) {
            auto o = jobs.object(name.c_str());
            JobRecord job;
            job.offset = o.integer<uint64_t>("offset");
            job.state = o.opt_string("state");
            if (o.has("exit_code")) job.exit_code = o.integer<int>("exit_code");
            s.jobs[name] = std::move(job);
        }
    }
    s.bin_dir = r.opt_string("bin_dir");
    s.model_dir = r.opt_string("model_dir");
    if (r.has("batch")) {
        auto b = r.object("batch");
        auto login = b.object("login");
        BatchRecord rec{b.string("provider"), b.string("offer_id"),
                        SshRecord{login.string("host"), login.integer<int>("port", 22), login.string("user")},
                        b.string("login_key"), b.string("work_dir"), {}, b.boolean("fetch_on_login", true), {}};
        if (b.has("jump")) {
            const auto & hops = b.json().at("jump");
            if (!hops.is_array()) b.fail("jump", "an array");
            if (hops.size() > kMaxJumps) b.fail("jump", "at most " + std::to_string(kMaxJumps) + " jump hosts");
            for (size_t n = 0; n < hops.size(); ++n) {
                Reader h(hops[n], source, "batch.jump[" + std::to_string(n) + "]");
                rec.jump.push_back({h.string("host"), h.integer<int>("port", 22), h.string("user"), h.string("key")});
            }
        }
        auto jobs = b.object("jobs");
        if (jobs.json().size() > kMaxJobs) b.fail("jobs", "at most " + std::to_string(kMaxJobs) + " jobs");
        for (const auto & [role, value] : jobs.json().items()) {
            auto o = jobs.object(role.c_str());
            BatchJobRecord job{o.string("id"), o.string("name"), o.string("output_path"), o.integer<uint64_t>("offset"),
                               o.integer<int>("restarts"), o.opt_string("end_state"), std::nullopt, o.number("submitted_unix")};
            if (o.has("exit_code")) job.exit_code = o.integer<int>("exit_code");
            rec.jobs[role] = std::move(job);
        }
        rec.submitting = b.opt_string("submitting");
        s.batch = std::move(rec);
    }
    if (r.has("results")) {
        auto o = r.object("results");
        s.results = ResultsRecord{o.string("dir"), o.string("outliers_json")};
    }
    if (r.has("end")) {
        auto e = r.object("end");
        s.end = EndRecord{.action = e.string("action"), .reason = e.opt_string("reason"),
                          .keep_until_unix = e.opt_number("keep_until_unix"), .watchdog_extended = e.opt_boolean("watchdog_extended"),
                          .proven_gone = e.opt_boolean("proven_gone"), .last_status = e.opt_string("last_status"),
                          .ended_unix = e.opt_number("ended_unix")};
    }
    return s;
}

RunDir::RunDir(std::string path, nlohmann::json run_info, RunState state)
    : path_(std::move(path)), run_info_(std::move(run_info)), state_(std::move(state)) {}

namespace {
constexpr const char * kLockFile = "lock";

// Empty but for the lock file its driver took before creating it.
bool empty_but_lock(const std::string & path) {
    std::error_code ec;
    for (const auto & e : fs::directory_iterator(path, ec))
        if (e.path().filename() != kLockFile) return false;
    return true;
}
}  // namespace

common::FileLock lock_run_dir(const std::string & path) {
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) throw common::Error::io(path, "create", ec.value());
    auto lock = common::FileLock::try_lock(path + "/" + kLockFile);
    if (!lock)
        throw common::Error::usage(path + ": this run is being driven by another process (it holds " + path + "/" + kLockFile +
                                   "): a second driver could rent a second instance and overwrite its state; wait for that "
                                   "process to end (or stop it), then --resume " + path);
    return std::move(*lock);
}

bool run_dir_driven_elsewhere(const std::string & path) {
    std::error_code ec;
    if (!fs::is_directory(path, ec)) return false;
    return !common::FileLock::try_lock(path + "/" + kLockFile).has_value();
}

RunDir RunDir::create(const std::string & path, const nlohmann::json & run_info) {
    std::error_code ec;
    if (fs::exists(path, ec) && !empty_but_lock(path))
        throw common::Error::usage(path + ": run directory exists and is not empty; use --resume " + path +
                                   " to continue that run");
    fs::create_directories(path + "/logs", ec);
    if (ec) throw common::Error::io(path + "/logs", "create", ec.value());
    fs::create_directories(path + "/results", ec);
    if (ec) throw common::Error::io(path + "/results", "create", ec.value());
    write_atomic(path + "/run.json", run_info.dump(2) + "\n");
    RunDir d(path, run_info, RunState{});
    d.save_state();
    return d;
}

RunDir RunDir::open(const std::string & path) {
    if (!fs::exists(path + "/run.json"))
        throw common::Error::not_found(path, "is not a run directory (no run.json); give the folder printed at the start of the run");
    const std::string state_path = path + "/state.json";
    RunState state = fs::exists(state_path) ? run_state_from_json(read_json(state_path), state_path) : RunState{};
    return RunDir(path, read_json(path + "/run.json"), std::move(state));
}

void RunDir::append(const JournalEvent & event) {
    std::string line = to_json(event).dump() + "\n";
    std::string p = path_ + "/journal.jsonl";
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) throw common::Error::io(p, "open", errno);
    ssize_t n = ::write(fd, line.data(), line.size());
    int e = errno;
    ::fsync(fd);
    ::close(fd);
    if (n != static_cast<ssize_t>(line.size())) throw common::Error::io(p, "append", n < 0 ? e : EIO);
}

std::vector<JournalEvent> RunDir::journal() const {
    std::vector<JournalEvent> out;
    std::ifstream in(path_ + "/journal.jsonl");
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception &) {
            continue;  // a torn final line from a crash mid-append: the event did not complete
        }
        JournalEvent e;
        e.step = j.value("step", "");
        e.event = j.value("event", "");
        e.unix_s = j.value("unix_s", 0.0);
        e.duration_s = j.value("duration_s", 0.0);
        e.kind = j.value("kind", "");
        e.message = j.value("message", "");
        out.push_back(std::move(e));
    }
    return out;
}

bool RunDir::step_done(const std::string & step) const {
    std::string last;
    for (const auto & e : journal())
        if (e.step == step && e.event != "note") last = e.event;
    return last == "done";
}

void RunDir::save_state() { write_atomic(path_ + "/state.json", to_json(state_).dump(2) + "\n"); }

std::string new_run_id(double unix_now) {
    std::time_t t = static_cast<std::time_t>(unix_now);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    std::random_device rd;
    std::string suffix;
    for (int i = 0; i < 4; ++i) suffix += digits[rd() % 36];
    return std::string(buf) + "-" + suffix;
}

}  // namespace deploy
