// Running a sweep (see sweep.h): one child process per member, at most max_parallel at once, starts
// staggered by download_stagger (so model downloads do not all hit the Hub together), a live table
// built from each member's run directory (journal.jsonl: the step; state.json: price and times),
// Ctrl-C (or the budget, --fail-fast, an error of the sweep's own) forwarded as one SIGTERM to every
// running member, each waited for through its finish, and a summary at the end.
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string_view>
#include <thread>

#include "broker/instance.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "common/program.h"
#include "common/regular_file.h"
#include "common/subprocess.h"
#include "deploy/download_slots.h"
#include "deploy/policy.h"
#include "deploy/run_dir.h"
#include "deploy/sweep.h"

namespace fs = std::filesystem;

namespace deploy {

namespace {

double now_unix() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string money(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", v);
    return b;
}

std::string elapsed_text(double s) {
    char b[32];
    int t = static_cast<int>(s);
    std::snprintf(b, sizeof b, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    return b;
}


struct Member {
    const SweepMember * spec = nullptr;
    std::string dir;
    std::string action;       // new | resume | done (finished before) | skip
    // waiting | running | running elsewhere | succeeded | failed | interrupted | not started
    std::string state = "waiting";
    bool elsewhere = false;   // finished while another process drove it (the outcome says so)
    std::optional<common::ChildProcess> child;
    bool signalled = false;   // SIGTERM sent once: a second one would make the child exit without its finish
    double signalled_at = 0;
    std::string activity;     // member_activity() when last seen changing, while it finishes
    double last_progress = 0; // when that was (unix s)
    std::string stop_label;   // its outcome when it exits 130 after our SIGTERM (interrupted, stopped (budget), ...)
    bool budget_stop = false; // stopped (or never started) because the sweep's budget was reached
    std::string instance;     // "<provider>:<id>" from its state.json, printable; "" before its create
    bool instance_gone = false;  // its finish proved the instance gone
    int exit_code = -1;
    double started = 0;
    std::string step = "-";
    double cost = 0;
    bool cost_known = false;
    std::string results;
    std::string damage;       // why its run directory could not be read (state "unreadable run directory")
};

// Fields of a member's files, read without trusting their types: nlohmann's value() throws on a
// field of another type, and an exception here would stop the whole sweep over one torn file.
const nlohmann::json & field(const nlohmann::json & o, const char * key) {
    static const nlohmann::json none;
    if (!o.is_object()) return none;
    auto it = o.find(key);
    return it == o.end() ? none : *it;
}
double number_or(const nlohmann::json & o, const char * key, double fallback) {
    const auto & f = field(o, key);
    return f.is_number() ? f.get<double>() : fallback;
}
std::string string_or(const nlohmann::json & o, const char * key, const std::string & fallback = "") {
    const auto & f = field(o, key);
    return f.is_string() ? f.get<std::string>() : fallback;
}

// An id read from a member's state.json goes to the terminal and into commands we print for the
// user to paste: only characters an instance reference uses, bounded.
std::string printable(const std::string & text) {
    std::string out;
    for (char c : text.substr(0, 120))
        out += std::isalnum(static_cast<unsigned char>(c)) || std::string_view("._:@/-").find(c) != std::string_view::npos ? c : '?';
    return out;
}

// A path from a member's state.json goes to the terminal: no control characters (an escape
// sequence would rewrite the screen), bounded.
std::string no_controls(const std::string & text) {
    std::string out = text.substr(0, 4096);
    for (char & c : out)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    return out;
}

// What the member's run directory says now: the step it is in, $ so far, its instance, results.
// Read every poll while the member writes: a torn or damaged file shows as unknown here, and the
// member's own --resume is what refuses it, naming the file.
void observe(Member & m) {
    std::string text;
    try {
        text = common::read_regular_file(m.dir + "/journal.jsonl", 64u << 20, "run journal");
    } catch (const common::Error &) {
        // absent (not started yet), or not a file we can read: no step to show
    }
    std::istringstream j(text);
    std::string line, last_step;
    for (int n = 0; std::getline(j, line) && n < 100000; ++n) {
        auto e = nlohmann::json::parse(line, nullptr, false);
        if (field(e, "step").is_string()) {
            last_step = string_or(e, "step");
            if (string_or(e, "event") == "failed") last_step += " (failed)";
        }
    }
    if (!last_step.empty()) m.step = last_step.substr(0, 40);
    auto st = read_member_json(m.dir + "/state.json");
    const auto & i = field(st, "instance");
    const auto & end_record = field(st, "end");
    if (i.is_object()) {
        const double now = now_unix();
        double price = number_or(i, "price_usd_per_hour", 0.0), created = number_or(i, "created_unix", now);
        // An instance with no recorded end bills up to now, but never past the earliest deadline
        // known to end it: the one in its name, its watchdog's (unless a keep moved the watchdog to
        // the keep deadline), a keep deadline; the sweep report's rule (sweep_report.cpp,
        // earliest_known_end). Costed to now, a member left from an earlier invocation days ago
        // grew without bound and could exhaust sweep.max_cost_usd on a rerun.
        double end = number_or(end_record, "ended_unix", -1);
        if (end < 0) {
            end = now;
            auto cap = [&end](double t) {
                if (t > 0) end = std::min(end, t);
            };
            if (auto n = broker::parse_instance_name(string_or(i, "name"))) cap(static_cast<double>(n->deadline_unix));
            const double keep_until = number_or(end_record, "keep_until_unix", 0);
            if (!(keep_until > 0 && field(end_record, "watchdog_extended") == true)) cap(number_or(field(st, "watchdog"), "deadline_unix", 0));
            cap(keep_until);
        }
        m.cost = cost_usd(price, std::max(0.0, end - created));
        m.cost_known = true;
        std::string provider = string_or(i, "provider"), id = string_or(i, "id");
        if (!provider.empty() && !id.empty()) m.instance = printable(provider + ":" + id);
    }
    m.instance_gone = field(end_record, "proven_gone") == true;
    if (field(st, "results").is_object()) m.results = no_controls(string_or(st["results"], "dir"));
}

// What a stopping member visibly does, as one comparable string: its finish stops its job and pulls
// results and logs into its run directory (bifrost writes each file as NAME.bifrost-part, which grows
// as data arrives, then renames it), appends to journal.jsonl, rewrites state.json, and logs to
// `log_path`. Any change in the sizes, the number of entries or the newest modification time is
// progress. The walk is bounded (a results folder of a real run holds at most a few hundred files)
// and never follows links; an entry that vanishes under it only reads as one more change.
std::string member_activity(const std::string & run_dir, const std::string & log_path) {
    constexpr uintmax_t kMaxEntries = 20000;
    uintmax_t bytes = 0, entries = 0;
    fs::file_time_type newest{};
    auto note = [&](const fs::path & p, const fs::file_status & st) {
        std::error_code ec;
        if (fs::is_regular_file(st)) {
            auto size = fs::file_size(p, ec);
            if (!ec) bytes += size;
        }
        auto t = fs::last_write_time(p, ec);
        if (!ec && t > newest) newest = t;
    };
    std::error_code ec;
    note(run_dir, fs::symlink_status(run_dir, ec));
    for (fs::recursive_directory_iterator it(run_dir, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end;
         it.increment(ec)) {
        if (++entries > kMaxEntries) break;
        std::error_code sec;
        const auto st = it->symlink_status(sec);
        if (!sec && !fs::is_symlink(st)) note(it->path(), st);
    }
    std::error_code lec;
    note(log_path, fs::symlink_status(log_path, lec));
    return std::to_string(bytes) + " " + std::to_string(entries) + " " + std::to_string(newest.time_since_epoch().count());
}

// Outcome of a run directory that finished before this sweep started: failed when any step failed.
std::string finished_outcome(const std::string & dir) {
    RunDir d = RunDir::open(dir);
    std::map<std::string, std::string> last;
    for (const auto & e : d.journal())
        if (e.event == "done" || e.event == "failed") last[e.step] = e.event;
    for (const auto & [step, ev] : last)
        if (ev == "failed") return "failed";
    return "succeeded";
}

// Sets what to do with the member's run directory: run it new, resume it, or nothing (finished
// before; with retry_failed a failed one is moved aside and run new). A directory another process
// drives (a member that outlived an earlier sweep: members run in their own sessions) is "running
// elsewhere": never a second driver alongside it; it is classified again once that process lets go.
void classify_readable(Member & m, bool retry_failed);

// A run directory that cannot be read (a damaged journal, state.json or run.json: a full disk, an
// edit, a sync tool) is neither resumed nor moved aside: the member is reported with the reason
// (file and key) and the other members go on; the sweep then exits with a usage error.
void classify(Member & m, bool retry_failed) {
    try {
        classify_readable(m, retry_failed);
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::Usage && e.kind() != common::ErrorKind::NotFound) throw;
        m.action = "skip";
        m.state = "unreadable run directory";
        m.damage = e.message();
        common::log::error("sweep: ", m.spec->id, ": its run directory cannot be read, so it is not run or resumed (nothing in it was "
                           "changed): ", no_controls(e.message()));
    }
}

void classify_readable(Member & m, bool retry_failed) {
    if (run_dir_driven_elsewhere(m.dir)) {
        m.action = "resume";
        m.state = "running elsewhere";
        common::log::warn("sweep: ", m.spec->id, ": ", m.dir,
                          " is driven by another process (a member of an earlier sweep that is still running?); "
                          "waiting for it instead of starting a second one");
        return;
    }
    std::error_code ec;
    if (fs::exists(m.dir + "/run.json")) {
        if (RunDir::open(m.dir).step_done("finish")) {
            std::string outcome = finished_outcome(m.dir);
            if (outcome == "failed" && retry_failed) {
                std::string aside = m.dir + ".failed-" + std::to_string(static_cast<long long>(now_unix()));
                fs::rename(m.dir, aside);
                common::log::info("sweep: ", m.spec->id, ": failed before; its directory moved to ", aside, "; running it again");
                m.action = "new";
                m.state = "waiting";
            } else {
                m.action = "done";
                m.state = outcome;
                m.exit_code = outcome == "succeeded" ? 0 : -1;
                observe(m);
            }
        } else {
            m.action = "resume";
            m.state = "waiting";
        }
    } else {
        if (fs::exists(m.dir, ec) && !fs::is_empty(m.dir, ec)) {
            // Created but no run.json: the run never started; nothing was rented for it.
            fs::rename(m.dir, m.dir + ".incomplete-" + std::to_string(static_cast<long long>(now_unix())));
        }
        m.action = "new";
        m.state = "waiting";
    }
}

// Members a sweep stopped waiting for (a Ctrl-C while they finish) stay running in their own
// sessions. Their ChildProcess objects are kept here for the rest of the process rather than
// destroyed: the destructor would SIGTERM their process trees and SIGKILL them 2 s later.
std::vector<common::ChildProcess> & detached_children() {
    static auto * kept = new std::vector<common::ChildProcess>;
    return *kept;
}

}  // namespace

nlohmann::json read_member_json(const std::string & path) {
    std::string text;
    try {
        // Not a regular file (a FIFO would block an ifstream for ever), or too large: as absent.
        text = common::read_regular_file(path, 4u << 20, "member file");
    } catch (const common::Error &) {
        return nullptr;
    }
    auto j = nlohmann::json::parse(text, nullptr, false);
    return j.is_discarded() ? nlohmann::json(nullptr) : j;
}

std::string sweep_dir(const SweepFile & s) { return s.output_dir + "/" + s.name; }

double finish_quiet_s(const SweepRunOptions & o, const RunConfig & member) {
    if (o.finish_wait_s) return *o.finish_wait_s;
    return std::max(kPullFinishMarginS + 5 * 60, member.policy.stall_timeout_s + 5 * 60);
}

int run_sweep(const SweepFile & s, const SweepRunOptions & o, const common::Output & out) {
    const std::string root = sweep_dir(s);
    fs::create_directories(root);
    {
        nlohmann::json info{{"sweep", s.name}, {"source", s.source}, {"members", nlohmann::json::array()}};
        for (const auto & m : s.members) info["members"].push_back(m.id);
        std::ofstream(root + "/sweep.json") << info.dump(1) << "\n";
    }
    std::vector<Member> members;
    for (const auto & spec : s.members) {
        Member m;
        m.spec = &spec;
        m.dir = root + "/" + spec.id;
        classify(m, o.retry_failed);
        members.push_back(std::move(m));
    }

    auto log_of = [&](const Member & m) { return root + "/" + m.spec->id + ".log"; };
    auto describe = [&](const Member & m) {
        return m.spec->id + " (step " + m.step + ", " + (m.instance.empty() ? "no instance recorded yet" : "instance " + m.instance) +
               ", run directory " + m.dir + ")";
    };

    // What an "interrupted twice" exit (common/program.h) leaves behind: the members still running,
    // each in its own session, which go on without the sweep to stop their jobs and end their
    // instances. The handler can only write a buffer prepared beforehand, so it is kept up to date
    // at every draw, and cleared when the sweep returns (or throws).
    std::string note;
    struct NoteClear {
        ~NoteClear() { common::set_interrupt_note(""); }
    } note_clear;
    auto update_note = [&]() {
        std::string list;
        size_t n = 0;
        for (const auto & m : members) {
            if (m.state != "running" && m.state != "finishing on its own") continue;
            ++n;
            list += "sweep:   " + describe(m) + ", log " + log_of(m) + ": " +
                    (m.signalled ? std::string("stopping (SIGTERM sent)")
                     : m.child  ? "not stopped: it runs its job to the end; `kill " + std::to_string(m.child->pid()) + "` stops it"
                                : std::string("not stopped")) +
                    "\n";
        }
        std::string text;
        if (n > 0)
            text = "sweep: left " + std::to_string(n) + (n == 1 ? " member" : " members") +
                   " still running, each in its own session: it goes on without the sweep and ends its instance per its policy "
                   "when it stops. What may still bill:\n" + list +
                   "sweep: `broker instances list` shows what still runs; the same `--sweep " + s.source +
                   "` reports these members once they have finished\n";
        if (text == note) return;
        note = text;
        common::set_interrupt_note(note);
    };

    std::map<std::string, std::string> shown;  // member → last line printed (plain mode)
    size_t table_lines = 0;
    auto draw = [&]() {
        update_note();
        if (o.live) {
            std::string t;
            char line[512];
            std::snprintf(line, sizeof line, "%-24s %-22s %9s %9s  %s\n", "MEMBER", "STEP", "ELAPSED", "$ SO FAR", "STATE");
            t += line;
            for (const auto & m : members) {
                std::snprintf(line, sizeof line, "%-24s %-22s %9s %9s  %s\n", m.spec->id.c_str(), m.step.c_str(),
                              m.started > 0 ? elapsed_text(now_unix() - m.started).c_str() : "-",
                              m.cost_known ? money(m.cost).c_str() : "-", m.state.c_str());
                t += line;
            }
            if (table_lines > 0) std::cout << "\x1b[" << table_lines << "A\x1b[J";
            std::cout << t << std::flush;
            table_lines = members.size() + 1;
            return;
        }
        for (const auto & m : members) {
            std::string l = m.spec->id + ": " + m.state + " step " + m.step;
            if (shown[m.spec->id] == l) continue;
            shown[m.spec->id] = l;
            std::string cost = m.cost_known ? " $" + money(m.cost) : "";
            std::cerr << "sweep: " << l << cost << "\n" << std::flush;
        }
    };

    bool stopping = false, budget_reached = false, was_interrupted = false, detached = false;
    std::string stop_label = "interrupted";  // a member we stopped that exits 130 (the budget has its own)
    double next_start = 0;
    // What the sweep has cost so far: every member's price x instance lifetime up to now (or its end),
    // members finished in an earlier invocation included.
    auto spent = [&]() {
        double sum = 0;
        for (const auto & m : members) sum += m.cost_known ? m.cost : 0;
        return sum;
    };
    // A member that exited: its outcome from its exit code, and from why we stopped it if we did.
    auto settle = [&](Member & m, int rc) {
        m.exit_code = rc;
        observe(m);
        m.state = rc == 0 ? "succeeded" : rc == 130 ? (m.signalled ? m.stop_label : "interrupted") : "failed";
    };

    std::exception_ptr failure;
    std::string failure_message;
    int failure_code = 1;
    try {
        for (;;) {
            if (common::interrupted() && !stopping) {
                common::log::warn("sweep: interrupted; stopping every running member (each ends its instance per its policy)");
                stopping = true;
                was_interrupted = true;
            }
            for (auto & m : members) {
                if (m.state == "running" || m.state == "running elsewhere") observe(m);  // it bills all the same
                if (m.state == "running elsewhere" && !run_dir_driven_elsewhere(m.dir)) {
                    // The other process let go: what it left decides (finished, or to be resumed here).
                    classify(m, false);
                    if (m.action == "done") {
                        m.elsewhere = true;
                        common::log::info("sweep: ", m.spec->id, ": finished by the process that drove it (", m.state, ")");
                    }
                }
            }
            if (s.max_cost_usd && !budget_reached && spent() >= *s.max_cost_usd) {
                common::log::warn("sweep: the accrued cost $", money(spent()), " reached sweep.max_cost_usd $", money(*s.max_cost_usd),
                                  "; starting no more members and stopping the running ones (each ends its instance per its policy)");
                budget_reached = true;
                for (auto & m : members) m.budget_stop = m.state == "running" || m.state == "waiting";
                stopping = true;
            }
            int running = 0;
            for (auto & m : members) {
                if (m.state == "running elsewhere") ++running;  // not ours, but an instance all the same
                if (m.state != "running") continue;
                auto rc = m.child->wait_for(std::chrono::milliseconds(0));
                if (!rc) {
                    ++running;
                    continue;
                }
                if (*rc != 0 && run_dir_driven_elsewhere(m.dir)) {
                    // It refused to start: another process took this run directory first.
                    m.child.reset();
                    m.state = "running elsewhere";
                    ++running;
                    common::log::warn("sweep: ", m.spec->id, ": ", m.dir, " is driven by another process; waiting for it");
                    continue;
                }
                settle(m, *rc);
                if (m.state == "failed" && o.fail_fast && !stopping) {
                    common::log::warn("sweep: ", m.spec->id, " failed (exit ", *rc, "); --fail-fast: stopping the others");
                    stopping = true;
                }
            }
            if (stopping) break;  // to the wait below
            for (auto & m : members) {
                if (running >= s.max_parallel || now_unix() < next_start) break;
                if (m.state != "waiting" || m.action == "done") continue;
                if (run_dir_driven_elsewhere(m.dir)) {  // taken since it was classified: never a second driver
                    classify(m, false);
                    ++running;
                    continue;
                }
                std::vector<std::string> argv{o.program};
                if (m.action == "resume") {
                    argv.insert(argv.end(), {"--resume", m.dir});
                } else {
                    argv.insert(argv.end(), {"--sweep", s.source, "--member", m.spec->id, "--run-dir", m.dir});
                }
                argv.insert(argv.end(), o.child_args.begin(), o.child_args.end());
                if (s.max_concurrent_downloads > 0)
                    argv.insert(argv.end(), {"--download-slots", format_download_slots({root + "/download-slots", s.max_concurrent_downloads})});
                argv.push_back("--json");
                common::ChildProcess::Options co;
                co.stdout_path = root + "/" + m.spec->id + ".summary.json";
                co.stderr_path = root + "/" + m.spec->id + ".log";
                m.child = common::ChildProcess::spawn(argv, co);
                m.state = "running";
                m.started = now_unix();
                ++running;
                next_start = now_unix() + s.download_stagger_s;
                common::log::info("sweep: ", m.spec->id, ": ", m.action == "resume" ? "resumed" : "started", " (", m.dir,
                                  "; log ", co.stderr_path, ")");
            }
            draw();
            bool busy = false;
            for (const auto & m : members)
                busy = busy || m.state == "running" || m.state == "running elsewhere" || (m.state == "waiting" && m.action != "done");
            if (!busy) break;
            std::this_thread::sleep_for(std::chrono::duration<double>(o.poll_s));
        }
    } catch (const std::exception & e) {
        // The loop itself failed (a member's log that cannot be opened, a fork that fails, a run
        // directory that cannot be read): the members it started are mid-run on paid instances.
        // Leaving now would let ~ChildProcess SIGTERM their whole process trees and SIGKILL them 2 s
        // later, in the middle of their finish; they are stopped and waited for like on Ctrl-C.
        failure = std::current_exception();
        failure_message = e.what();
        if (const auto * ce = dynamic_cast<const common::Error *>(&e)) failure_code = common::exit_code(ce->kind());
        common::log::error("sweep: ", failure_message, "; stopping every running member (each ends its instance per its policy)");
        stopping = true;
        stop_label = "stopped (sweep error)";
    }

    // Stopping: every running member gets one SIGTERM and is waited for while it stops its job,
    // saves what it can and ends its instance (its finish), for as long as it shows progress (a
    // large salvage pull moves data for as long as it takes). A member is killed only after its
    // quiet window without progress, or at the hard cap, and reported so that its instance can be
    // ended by hand.
    auto quiet_s = [&](const Member & m) { return finish_quiet_s(o, m.spec->config); };
    auto cap_s = [&](const Member & m) { return std::max(o.finish_hard_cap_s, quiet_s(m)); };
    auto log_below_table = [&]() { table_lines = 0; };  // a log line went out: draw the table anew below it
    std::vector<std::string> killed;
    auto wait_for_members = [&]() {
        // From here on a Ctrl-C means "stop waiting", not "exit at once" (common's handler exits on a
        // second signal): the one that started this stop is cleared before any member is signalled
        // (a second signal of the same press, within common::kSignalBurstS, is still ignored).
        if (common::interrupted()) was_interrupted = true;
        common::consume_interrupt();
        double now = now_unix();
        for (auto & m : members) {
            if (m.child && m.state == "running" && !m.signalled) {
                // The member's own pid only: its ssh and bifrost processes are what its finish uses.
                ::kill(m.child->pid(), SIGTERM);
                m.signalled = true;
                m.signalled_at = now;
                m.activity = member_activity(m.dir, log_of(m));
                m.last_progress = now;
                m.stop_label = m.budget_stop ? "stopped (budget)" : stop_label;
            }
            if (m.state == "waiting" && m.action != "done") m.state = m.budget_stop ? "not started (budget)" : "not started";
        }
        update_note();  // they are stopping now
        double next_progress = now;
        for (;;) {
            std::vector<Member *> left;
            for (auto & m : members) {
                if (m.state != "running") continue;
                if (auto rc = m.child->wait_for(std::chrono::milliseconds(0))) {
                    settle(m, *rc);
                    continue;
                }
                observe(m);
                now = now_unix();
                if (auto a = member_activity(m.dir, log_of(m)); a != m.activity) {
                    m.activity = a;
                    m.last_progress = now;
                }
                const bool quiet = now - m.last_progress >= quiet_s(m), capped = now - m.signalled_at >= cap_s(m);
                if (!quiet && !capped) {
                    left.push_back(&m);
                    continue;
                }
                m.child->kill_hard();
                m.child.reset();
                m.exit_code = 128 + SIGKILL;
                observe(m);
                m.state = "killed";
                killed.push_back(describe(m));
                common::log::error(
                    "sweep: ", m.spec->id, ": killed: still running ", common::format_duration(now - m.signalled_at), " after SIGTERM, ",
                    quiet ? "with no progress for " + common::format_duration(now - m.last_progress) +
                                " (its run directory and log unchanged)"
                          : "at the limit of " + common::format_duration(cap_s(m)) + " for a finish, though still changing its files",
                    "; run directory ", m.dir, "; ",
                    m.instance.empty()
                        ? std::string("no instance recorded, but a create may have been sent: `broker instances list` shows it")
                    : m.instance_gone ? "its instance " + m.instance + " was already proven gone"
                                      : "its instance " + m.instance + " may still bill: `deploy_and_analyze --resume " + m.dir +
                                            "` finishes the run (terminate and prove gone), or `broker instances terminate " +
                                            m.instance + " --yes`");
                log_below_table();
            }
            draw();
            if (left.empty()) return;
            if (common::interrupted()) {
                // The user wants out. The members are not killed for it: each goes on with its finish
                // in its own session; what may still run is named so that it can be checked.
                was_interrupted = true;
                detached = true;
                common::log::warn("sweep: interrupted while members finish: no longer waiting for ", left.size(),
                                  left.size() == 1 ? " member" : " members",
                                  " still finishing; nothing was killed: each goes on in its own session, stops its job and "
                                  "ends its instance:");
                for (auto * m : left) {
                    common::log::warn("sweep:   ", describe(*m), ", log ", root, "/", m->spec->id, ".log");
                    m->state = "finishing on its own";
                    detached_children().push_back(std::move(*m->child));
                    m->child.reset();
                }
                common::log::warn("sweep: `broker instances list` shows what still runs (`broker sweep` ends anything past the deadline "
                                  "in its name); the same `--sweep ", s.source, "` reports these members once they have finished");
                log_below_table();
                return;
            }
            if (now >= next_progress) {
                std::string names;
                double cap = 0;
                for (auto * m : left) {
                    names += (names.empty() ? "" : "; ") + describe(*m) + ": " +
                             (now - m->last_progress < 1 ? std::string("progressing")
                                                         : "quiet for " + common::format_duration(now - m->last_progress)) +
                             ", " + common::format_duration(quiet_s(*m)) + " quiet allowed";
                    cap = std::max(cap, cap_s(*m));
                }
                common::log::warn("sweep: waiting for ", left.size(), left.size() == 1 ? " member" : " members",
                                  " to finish (stop the job, save what it can, end the instance): ", names,
                                  ". Killed once quiet that long (its run directory and log unchanged), or ", common::format_duration(cap),
                                  " after SIGTERM in any case; Ctrl-C stops the waiting and leaves them to finish on their own");
                log_below_table();
                next_progress = now + o.progress_s;
            }
            // Short sleeps: a Ctrl-C is seen before the user presses it again (a signal that arrives
            // before this loop has seen the last one, and not within the same press, ends the process
            // at once, printing the members still running: common/program.h, update_note above).
            for (double slept = 0; slept < o.poll_s && !common::interrupted(); slept += 0.05)
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    };
    if (stopping) wait_for_members();

    // The summary: per member, then the total.
    nlohmann::json rows = nlohmann::json::array();
    double total = 0;
    int exit_code = 0;
    bool leak = false, interrupted = false;
    for (auto & m : members) {
        observe(m);
        auto summary = read_member_json(root + "/" + m.spec->id + ".summary.json");
        if (summary.is_object()) {
            if (summary.contains("cost_usd") && summary["cost_usd"].is_number()) {
                m.cost = summary["cost_usd"].get<double>();
                m.cost_known = true;
            }
            if (summary.contains("results_dir") && summary["results_dir"].is_string()) m.results = summary["results_dir"];
        }
        total += m.cost_known ? m.cost : 0;
        leak = leak || m.exit_code == 10 || (m.state == "killed" && !m.instance_gone);
        interrupted = interrupted || m.state == "interrupted" || m.state == "not started" || m.state == "running elsewhere" ||
                      m.state == "finishing on its own";
        if (m.state == "stopped (budget)" && m.exit_code == 130) m.exit_code = common::exit_code(common::ErrorKind::Quota);
        if (exit_code == 0 && m.state == "failed") exit_code = m.exit_code > 0 ? m.exit_code : 1;
        if (exit_code == 0 && !m.damage.empty()) exit_code = common::exit_code(common::ErrorKind::Usage);
        rows.push_back({{"member", m.spec->id},
                        {"outcome", m.elsewhere ? m.state + " (elsewhere)" : m.action == "done" ? m.state + " (earlier)" : m.state},
                        {"exit_code", m.exit_code},
                        {"cost_usd", m.cost_known ? money(m.cost) : "-"},
                        {"results", m.results.empty() ? "-" : m.results},
                        {"instance", m.instance.empty() ? "-" : m.instance},
                        {"run_dir", m.dir}});
        if (!m.damage.empty()) rows.back()["error"] = m.damage;
    }
    if (leak) exit_code = 10;
    else if (failure) exit_code = failure_code;
    else if (exit_code == 0 && budget_reached) exit_code = common::exit_code(common::ErrorKind::Quota);
    else if (exit_code == 0 && (interrupted || was_interrupted)) exit_code = 130;
    nlohmann::json summary{{"sweep", s.name}, {"dir", root}, {"members", rows}, {"total_cost_usd", total}, {"exit_code", exit_code}};
    if (failure) summary["error"] = failure_message;
    if (s.max_cost_usd) {
        summary["max_cost_usd"] = *s.max_cost_usd;
        summary["budget_reached"] = budget_reached;
    }
    bool any_succeeded = false;
    for (const auto & m : members) any_succeeded = any_succeeded || m.state == "succeeded";
    if (!o.analyze_program.empty() && any_succeeded && !detached) {  // detached: the user asked to leave now
        try {
            summary["report"] = write_sweep_report(s, o.analyze_program);
        } catch (const common::Error & e) {
            common::log::warn("sweep: the combined report could not be written: ", e.message());
        }
    }
    std::ofstream(root + "/summary.json") << summary.dump(1) << "\n";
    if (out.json()) {
        out.object(summary);
    } else {
        out.rows({{"member", "MEMBER"}, {"outcome", "OUTCOME"}, {"cost_usd", "COST $"}, {"results", "RESULTS"}}, rows);
        out.text("sweep " + s.name + ": total $" + money(total) +
                 (s.max_cost_usd ? " of the $" + money(*s.max_cost_usd) + " budget" + (budget_reached ? " (reached: members stopped)" : "") : "") +
                 "; " + root + " (resume with the same command; --retry-failed reruns the failed members)");
        if (summary.contains("report")) out.text("report: " + summary["report"].get<std::string>());
        for (const auto & k : killed) out.text("killed while finishing: " + k);
        for (const auto & m : members)
            if (!m.damage.empty()) out.text("not run: " + m.spec->id + ": " + no_controls(m.damage));
    }
    if (failure) {
        if (leak) {
            std::string why;
            for (const auto & k : killed) why += (why.empty() ? "" : "; ") + k;
            throw common::Error(common::ErrorKind::LeakRisk,
                                "sweep: " + failure_message + "; an instance may still bill: " +
                                    (why.empty() ? "a member's finish could not prove its instance gone (see " + root + "/summary.json)"
                                                 : "killed while finishing: " + why));
        }
        std::rethrow_exception(failure);
    }
    return exit_code;
}

}  // namespace deploy
