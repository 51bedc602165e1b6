// The run directory and its journal (see run_dir.h). Every write is whole-or-nothing: the journal
// appends one line with O_APPEND and fsyncs it; state.json goes through a temporary file and rename.
#include "deploy/run_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
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

nlohmann::json read_json(const std::string & path) {
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

}  // namespace

RunDir::RunDir(std::string path, nlohmann::json run_info, nlohmann::json state)
    : path_(std::move(path)), run_info_(std::move(run_info)), state_(std::move(state)) {}

RunDir RunDir::create(const std::string & path, const nlohmann::json & run_info) {
    std::error_code ec;
    if (fs::exists(path, ec) && !fs::is_empty(path, ec))
        throw common::Error::usage(path + ": run directory exists and is not empty; use --resume " + path +
                                   " to continue that run");
    fs::create_directories(path + "/logs", ec);
    if (ec) throw common::Error::io(path + "/logs", "create", ec.value());
    fs::create_directories(path + "/results", ec);
    if (ec) throw common::Error::io(path + "/results", "create", ec.value());
    write_atomic(path + "/run.json", run_info.dump(2) + "\n");
    RunDir d(path, run_info, nlohmann::json::object());
    d.save_state();
    return d;
}

RunDir RunDir::open(const std::string & path) {
    if (!fs::exists(path + "/run.json"))
        throw common::Error::not_found(path, "is not a run directory (no run.json); give the folder printed at the start of the run");
    nlohmann::json state = fs::exists(path + "/state.json") ? read_json(path + "/state.json") : nlohmann::json::object();
    return RunDir(path, read_json(path + "/run.json"), state);
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

void RunDir::save_state() { write_atomic(path_ + "/state.json", state_.dump(2) + "\n"); }

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
