// The run directory and its journal (see run_dir.h). Every write is whole-or-nothing: the journal
// appends one line with O_APPEND and fsyncs it; state.json goes through a temporary file and rename.
#include "deploy/run_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <limits>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "common/error.h"
#include "common/regular_file.h"
#include "deploy/json_fields.h"

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

// run.json and state.json are a few KiB, the journal a few dozen lines a run; anything near these
// sizes is not ours (and is refused before a byte is read, by common::read_regular_file).
constexpr uint64_t kMaxRunFileBytes = 16u << 20;
constexpr uint64_t kMaxJournalBytes = 64u << 20;

// A run directory's JSON file, refused (usage, naming the file) when it is not a regular file, too
// large, or not JSON: a damaged file is the user's to look at, never guessed around or replaced.
nlohmann::json read_json(const std::string & path, std::string_view what) {
    const std::string text = common::read_regular_file(path, kMaxRunFileBytes, what);
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception & e) {
        // The library's own message names its exception class, not the problem: say where it broke.
        const auto * pe = dynamic_cast<const nlohmann::json::parse_error *>(&e);
        std::string where = text.empty()                    ? "the file is empty"
                            : pe && pe->byte >= text.size() ? "it ends mid-value after " + std::to_string(text.size()) + " bytes (cut short?)"
                            : pe                            ? "broken at byte " + std::to_string(pe->byte)
                                                            : "a number too large for JSON";
        throw common::Error(common::ErrorKind::Usage, path + ": not valid JSON: " + where + "; the " + std::string(what) +
                                                          " is damaged (a full disk, a crash, an edit?) and was left as it is")
            .with("file", path);
    }
}

nlohmann::json to_json(const JournalEvent & e) {
    nlohmann::json j{{"step", e.step}, {"event", e.event}, {"unix_s", e.unix_s}};
    if (e.event == "done" || e.event == "failed") j["duration_s"] = e.duration_s;
    if (!e.kind.empty()) j["kind"] = e.kind;
    if (!e.message.empty()) j["message"] = e.message;
    return j;
}

using Reader = JsonFields;

// No real run has more than a few offers (three per provider) or jobs (bootstrap, fetch, analysis).
constexpr size_t kMaxOffers = 1000;
constexpr size_t kMaxJobs = 64;
constexpr size_t kMaxJumps = 8;  // bifrost's own bound on a chain
constexpr size_t kMaxProviders = 64;
// Prices and sizes feed deadlines and the cost cap: a value past these is damage, not a machine.
constexpr double kMaxPrice = 1e6, kMaxGb = 1e6;

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
    s.min_vram_gb = r.has("min_vram_gb") ? std::optional(r.number("min_vram_gb", 0, 0, kMaxGb)) : std::nullopt;
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
                                 o.number("price_usd_per_hour_total", 0, 0, kMaxPrice), rows[n]});
        }
    }
    if (r.has("create_intent")) {
        auto c = r.object("create_intent");
        s.create_intent = CreateIntent{c.string("run_id"), c.unix_time("unix_s"), std::nullopt};
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
                                    .price_usd_per_hour = i.number("price_usd_per_hour", 0, 0, kMaxPrice), .gpu_model = i.string("gpu_model"),
                                    .gpu_count = i.integer<int>("gpu_count"), .vram_gb_per_gpu = i.number("vram_gb_per_gpu", 0, 0, kMaxGb),
                                    .created_unix = i.opt_unix_time("created_unix"), .native_deadline = i.opt_boolean("native_deadline"),
                                    .adopted = i.boolean("adopted"), .ssh = std::move(ssh)};
    }
    if (r.has("remote")) {
        auto m = r.object("remote");
        s.remote = RemoteRecord{m.string("home"), m.string("cache_dir")};
    }
    if (r.has("watchdog")) {
        auto w = r.object("watchdog");
        s.watchdog = WatchdogRecord{w.string("action"), w.unix_time("deadline_unix"), w.number("heartbeat_timeout_s", 0, 0, kMaxUnixTime)};
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
                               o.integer<int>("restarts"), o.opt_string("end_state"), std::nullopt, o.unix_time("submitted_unix")};
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
                          .keep_until_unix = e.opt_unix_time("keep_until_unix"), .watchdog_extended = e.opt_boolean("watchdog_extended"),
                          .proven_gone = e.opt_boolean("proven_gone"), .last_status = e.opt_string("last_status"),
                          .ended_unix = e.opt_unix_time("ended_unix")};
    }
    return s;
}

RunDir::RunDir(std::string path, nlohmann::json run_info, RunState state)
    : path_(std::move(path)), run_info_(std::move(run_info)), state_(std::move(state)) {
    // run.json's own fields, typed once here (a wrong type is refused naming the key, not met later
    // as a type_error deep in a step). The ids become remote paths and instance names: only the
    // characters new_run_id and run_new write.
    const std::string source = path_ + "/run.json";
    JsonFields info(run_info_, source, "");
    auto id = [&](const char * key, bool (*allowed)(char)) {
        std::string v = info.string(key);
        if (v.size() > 64 || v == "." || v.find("..") != std::string::npos || !std::all_of(v.begin(), v.end(), allowed))
            info.fail(key, "at most 64 of the characters run ids use", "'" + v.substr(0, 64) + "'");
        return v;
    };
    run_id_ = id("run_id", [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.'; });
    instance_run_id_ = id("instance_run_id", [](char c) {
        return std::islower(static_cast<unsigned char>(c)) != 0 || std::isdigit(static_cast<unsigned char>(c)) != 0;
    });
    workspace_ = info.string("workspace");
    info.opt_unix_time("started_unix");
    if (info.has("config")) info.object("config");  // an object (config_from_json reads its fields)
}

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
    std::error_code ec;
    if (!fs::exists(path + "/run.json", ec))
        throw common::Error::not_found(path, "is not a run directory (no run.json); give the folder printed at the start of the run");
    const std::string state_path = path + "/state.json";
    RunState state = fs::exists(state_path, ec) ? run_state_from_json(read_json(state_path, "run state file"), state_path) : RunState{};
    return RunDir(path, read_json(path + "/run.json", "run description"), std::move(state));
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
    const std::string path = path_ + "/journal.jsonl";
    std::string text;
    try {
        text = common::read_regular_file(path, kMaxJournalBytes, "run journal");
    } catch (const common::Error & e) {
        if (e.kind() == common::ErrorKind::NotFound) return {};  // no step has started yet
        throw;
    }
    std::vector<JournalEvent> out;
    size_t line_no = 0;
    for (size_t at = 0; at < text.size();) {
        size_t nl = text.find('\n', at);
        std::string_view line(text.data() + at, (nl == std::string::npos ? text.size() : nl) - at);
        at = nl == std::string::npos ? text.size() : nl + 1;
        ++line_no;
        if (line.empty()) continue;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception &) {
            continue;  // a torn line from a crash or a full disk mid-append: that event did not complete
        }
        // A whole line of the wrong shape was written by someone else (an edit, a sync tool): the
        // record of what ran cannot be trusted past it, so it is refused naming the line and key.
        JsonFields f(j, path + ":" + std::to_string(line_no), "");
        JournalEvent e;
        e.step = f.string("step");
        e.event = f.string("event");
        e.unix_s = f.unix_time("unix_s");
        e.duration_s = f.number("duration_s", 0, 0, kMaxUnixTime);
        e.kind = f.string("kind");
        e.message = f.string("message");
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
