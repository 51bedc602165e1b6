// A run directory is a folder on the user's disk, and its files can be damaged: a full disk cuts one
// short, a crash tears a journal line, a hand edit or a sync tool puts a value of another type in.
// These tests take the finished rehearsal run of tests/deploy/data/old-format and damage every field
// of its run.json, state.json and journal.jsonl in turn (wrong types, huge and negative numbers,
// removed keys, whole lines replaced), cut each file at many lengths, and put a directory, a FIFO, a
// dangling symlink or a huge file in each one's place. For every copy, `--resume` (run_resume, as
// the program calls it) must either go on sensibly (summarise the run) or refuse with a usage or
// not-found error that names the damaged file, never a crash, an internal error or a library
// message; and the sweep's report over all of them must be written, each damaged member listed.
// Nothing in a run directory may be changed or removed by a refusal.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/error.h"
#include "common/output.h"
#include "deploy/flow.h"
#include "deploy/run_config.h"
#include "deploy/run_dir.h"
#include "deploy/steps.h"
#include "deploy/sweep.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kFinished = std::string(TOOLKIT_SOURCE_DIR) + "/tests/deploy/data/old-format/finished";
const char * const kFiles[] = {"run.json", "state.json", "journal.jsonl"};

// What a directory holds, to see that nothing was written, replaced or removed (the lock file a
// driver takes is not the user's data).
std::map<std::string, std::string> snapshot(const std::string & dir) {
    std::map<std::string, std::string> out;
    for (const auto & e : fs::recursive_directory_iterator(dir)) {
        const std::string rel = fs::relative(e.path(), dir).string();
        if (rel == "lock") continue;
        const auto st = e.symlink_status();
        if (fs::is_symlink(st)) out[rel] = "symlink " + fs::read_symlink(e.path()).string();
        else if (fs::is_directory(st)) out[rel] = "directory";
        else if (fs::is_fifo(st)) out[rel] = "fifo";
        else if (fs::file_size(e.path()) > (1u << 20)) out[rel] = "large " + std::to_string(fs::file_size(e.path()));
        else out[rel] = tests::read_file(e.path().string());
    }
    return out;
}

// Every JSON pointer in `j` below `at`, containers included.
void pointers(const json & j, const json::json_pointer & at, std::vector<json::json_pointer> & out) {
    if (j.is_object())
        for (const auto & [k, v] : j.items()) {
            out.push_back(at / k);
            pointers(v, at / k, out);
        }
    else if (j.is_array())
        for (size_t i = 0; i < j.size(); ++i) {
            out.push_back(at / i);
            pointers(j[i], at / i, out);
        }
}

// The values a damaged or edited field may hold instead of its own.
std::vector<json> wrong_values() {
    return {"x", 1e300, -1e300, -1, json(std::numeric_limits<uint64_t>::max()), 0, 2.5, true, nullptr, json::array(),
            json::object(), std::string(5000, 'z'), "\x1b[2J"};
}

// Each mutation of `doc`: every field set to each wrong value, and every field removed.
std::vector<std::pair<std::string, json>> mutations(const json & doc) {
    std::vector<std::pair<std::string, json>> out;
    std::vector<json::json_pointer> ps;
    pointers(doc, json::json_pointer(), ps);
    for (const auto & p : ps) {
        for (const auto & v : wrong_values()) {
            if (doc.at(p) == v) continue;
            json m = doc;
            m.at(p) = v;
            out.emplace_back(p.to_string() + " = " + v.dump().substr(0, 30), std::move(m));
        }
        json m = doc;
        json & parent = m.at(p.parent_pointer());
        if (parent.is_object()) parent.erase(p.back());
        else parent.erase(static_cast<size_t>(std::stoul(p.back())));
        out.emplace_back(p.to_string() + " removed", std::move(m));
    }
    return out;
}

struct Damaged {
    std::string label;  // what was done, for the failure message
    std::string file;   // the damaged file's name
    std::string dir;    // the damaged copy of the run directory
};

class Workshop {
public:
    explicit Workshop(const tests::TempDir & tmp) : root_(tmp / "out/hostile") { fs::create_directories(root_); }

    // A fresh copy of the finished run with `file` replaced by what `damage` leaves there.
    void add(const std::string & label, const std::string & file, const std::function<void(const std::string & path)> & damage) {
        const std::string id = "m" + std::to_string(cases_.size());
        const std::string dir = root_ + "/" + id;
        fs::create_directories(dir);
        for (const char * f : kFiles) fs::copy_file(kFinished + "/" + f, dir + "/" + f);
        for (const auto & e : fs::directory_iterator(dir)) fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write);
        damage(dir + "/" + file);
        cases_.push_back({label, file, dir});
    }
    void add_text(const std::string & label, const std::string & file, const std::string & text) {
        add(label, file, [&](const std::string & path) { tests::write_file(path, text); });
    }
    const std::vector<Damaged> & cases() const { return cases_; }
    const std::string & root() const { return root_; }

private:
    std::string root_;
    std::vector<Damaged> cases_;
};

void build_cases(Workshop & w) {
    for (const char * f : {"run.json", "state.json"}) {
        const json doc = json::parse(tests::read_file(kFinished + "/" + f));
        for (const auto & [label, m] : mutations(doc)) w.add_text(std::string(f) + ": " + label, f, m.dump(2) + "\n");
        w.add_text(std::string(f) + ": an array", f, "[]\n");
        w.add_text(std::string(f) + ": a number", f, "5\n");
    }
    // The journal: each line's fields mutated in place; each line replaced by JSON of another shape
    // or by junk (a torn line is skipped, as after a crash mid-append).
    std::vector<std::string> lines;
    {
        std::istringstream in(tests::read_file(kFinished + "/journal.jsonl"));
        for (std::string l; std::getline(in, l);) lines.push_back(l);
    }
    auto journal_with = [&](size_t n, const std::string & line) {
        std::string text;
        for (size_t i = 0; i < lines.size(); ++i) text += (i == n ? line : lines[i]) + "\n";
        return text;
    };
    for (size_t n = 0; n < lines.size(); ++n) {
        for (const auto & [label, m] : mutations(json::parse(lines[n])))
            w.add_text("journal.jsonl line " + std::to_string(n + 1) + ": " + label, "journal.jsonl", journal_with(n, m.dump()));
        for (const std::string & junk : std::vector<std::string>{"5", "[]", "\"s\"", "null", "{}", "{\"step\":", std::string(1 << 20, 'x')})
            w.add_text("journal.jsonl line " + std::to_string(n + 1) + " is " + junk.substr(0, 12), "journal.jsonl", journal_with(n, junk));
    }
    // Cut short (a full disk, a copy interrupted), and other kinds of file in its place.
    for (const char * f : kFiles) {
        const std::string whole = tests::read_file(kFinished + "/" + f);
        for (size_t len = 0; len < whole.size(); len += len < 8 ? 1 : 61)
            w.add_text(std::string(f) + " cut to " + std::to_string(len) + " bytes", f, whole.substr(0, len));
        w.add(std::string(f) + " is a directory", f, [](const std::string & p) {
            fs::remove(p);
            fs::create_directory(p);
        });
        w.add(std::string(f) + " is a FIFO", f, [](const std::string & p) {
            fs::remove(p);
            REQUIRE(::mkfifo(p.c_str(), 0600) == 0);
        });
        w.add(std::string(f) + " is a dangling symlink", f, [](const std::string & p) {
            fs::remove(p);
            fs::create_symlink("nowhere", p);
        });
        w.add(std::string(f) + " is 80 MiB", f, [](const std::string & p) {
            fs::resize_file(p, 80u << 20);  // sparse: costs no disk
        });
        w.add(std::string(f) + " is binary junk", f, [](const std::string & p) { tests::write_file(p, std::string("\x00\xff\xfe{\x01", 5)); });
    }
}

bool names_a_library_exception(const std::string & message) {
    for (const char * raw : {"json.exception", "type_error", "parse_error", "out_of_range", "unexpected error", "basic_string"})
        if (message.find(raw) != std::string::npos) return true;
    return false;
}

}  // namespace

TEST_CASE("run dir hostile: every field, length and kind of run.json, state.json and journal.jsonl damaged: --resume and the sweep report go on or refuse naming the file") {
    tests::TempDir tmp("run-dir-hostile");
    Workshop w(tmp);
    build_cases(w);
    MESSAGE(w.cases().size() << " damaged copies");
    deploy::FlowOptions o;
    o.broker.state_dir = tmp / "broker-state";
    o.broker.ledger_path = tmp / "broker-state/ledger.sqlite";
    int summarised = 0, refused = 0, would_drive = 0;
    std::map<std::string, std::optional<common::ErrorKind>> unreadable;  // member id -> why its run directory was refused
    for (const auto & c : w.cases()) {
        CAPTURE(c.label);
        const auto before = snapshot(c.dir);
        // A copy that no longer records its finish would be driven for real (a connection to the
        // instance it names): its reading is checked here; resuming an unfinished run is what
        // run_state_test and the e2e tests do.
        bool finished = false;
        auto & refusal = unreadable[fs::path(c.dir).filename().string()];
        try {
            finished = deploy::RunDir::open(c.dir).step_done("finish");
        } catch (const common::Error & e) {
            refusal = e.kind();
        } catch (const std::exception & e) {
            FAIL("reading the run directory threw a non-toolkit exception: " << e.what());
        }
        if (!refusal && !finished) {
            ++would_drive;
            continue;
        }
        std::ostringstream text;
        common::Output out(common::OutputFormat::Json, text);
        try {
            int code = deploy::run_resume(c.dir, o, out);
            ++summarised;
            CHECK(code >= 0);
            CHECK_NOTHROW((void)json::parse(text.str()));
        } catch (const common::Error & e) {
            ++refused;
            INFO(e.message());
            CHECK((e.kind() == common::ErrorKind::Usage || e.kind() == common::ErrorKind::NotFound));
            CHECK(e.message().find(c.file) != std::string::npos);
            CHECK_FALSE(names_a_library_exception(e.message()));
            CHECK(e.message().find('\x1b') == std::string::npos);
        } catch (const std::exception & e) {
            FAIL("--resume threw a non-toolkit exception: " << e.what());
        }
        CHECK(snapshot(c.dir) == before);
    }
    MESSAGE(summarised << " summarised, " << refused << " refused, " << would_drive << " no longer finished (not driven here)");
    CHECK(refused > 100);
    CHECK(summarised > 100);

    // The sweep's report over every damaged copy at once: written, a row per member, each copy
    // that cannot be read listed as such, nothing changed.
    deploy::SweepFile sweep;
    sweep.name = "hostile";
    sweep.output_dir = tmp / "out";
    std::map<std::string, std::map<std::string, std::string>> before;
    for (const auto & c : w.cases()) {
        deploy::SweepMember m;
        m.id = fs::path(c.dir).filename().string();
        sweep.members.push_back(m);
        before[m.id] = snapshot(c.dir);
    }
    std::string report;
    try {
        report = tests::read_file(deploy::write_sweep_report(sweep, "analyze-is-not-run-without-results"));
    } catch (const std::exception & e) {
        FAIL("the sweep report failed: " << e.what());
    }
    for (size_t n = 0; n < sweep.members.size(); ++n) {
        const auto & m = sweep.members[n];
        CAPTURE(m.id);
        CAPTURE(w.cases()[n].label);
        const auto at = report.find("| " + m.id + " | ");
        REQUIRE(at != std::string::npos);
        const std::string row = report.substr(at, report.find('\n', at) - at);
        // A run.json that is not there (a dangling link) is a member that has not run.
        std::string want;
        if (const auto refusal = unreadable[m.id])
            want = fs::exists(w.root() + "/" + m.id + "/run.json") ? "unreadable run directory" : "| not run |";
        if (!want.empty()) CHECK(row.find(want) != std::string::npos);
        else CHECK(row.find("unreadable run directory") == std::string::npos);
        CHECK(row.find('\x1b') == std::string::npos);
        CHECK(snapshot(w.root() + "/" + m.id) == before[m.id]);
    }
}

TEST_CASE("run dir hostile: a run.json without its ids or config, and a state.json lost while the journal records steps, are refused before anything runs") {
    tests::TempDir tmp("run-dir-hostile-ids");
    deploy::FlowOptions o;
    o.broker.state_dir = tmp / "broker-state";
    o.broker.ledger_path = tmp / "broker-state/ledger.sqlite";
    std::ostringstream text;
    common::Output out(common::OutputFormat::Json, text);
    auto copy = [&](const std::string & name) {
        const std::string dir = tmp / name;
        fs::create_directories(dir);
        for (const char * f : kFiles) fs::copy_file(kFinished + "/" + f, dir + "/" + f);
        for (const auto & e : fs::directory_iterator(dir)) fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write);
        return dir;
    };
    auto refusal = [&](const std::string & dir) -> common::Error {
        const auto before = snapshot(dir);
        try {
            deploy::run_resume(dir, o, out);
        } catch (const common::Error & e) {
            CHECK(snapshot(dir) == before);
            return e;
        }
        FAIL("resumed");
        return common::Error::internal("");
    };
    for (const char * key : {"run_id", "instance_run_id", "config"}) {
        CAPTURE(key);
        const std::string dir = copy(std::string("no-") + key);
        json info = json::parse(tests::read_file(dir + "/run.json"));
        info.erase(key);
        tests::write_file(dir + "/run.json", info.dump(2));
        auto e = refusal(dir);
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find(dir + "/run.json: " + key + ": expected") == 0);
        CHECK(e.message().find("missing") != std::string::npos);
    }
    // An id that would become a remote path outside the run's own folder.
    {
        const std::string dir = copy("escaping-id");
        json info = json::parse(tests::read_file(dir + "/run.json"));
        info["run_id"] = "../../elsewhere";
        tests::write_file(dir + "/run.json", info.dump(2));
        auto e = refusal(dir);
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find("run.json: run_id: expected") != std::string::npos);
    }
    // state.json gone, the journal says create was done: the record of the instance is lost. The
    // finish line is dropped so that the run would be driven (a finished one is only summarised).
    {
        const std::string dir = copy("state-lost");
        fs::remove(dir + "/state.json");
        std::string kept;
        std::istringstream in(tests::read_file(dir + "/journal.jsonl"));
        for (std::string l; std::getline(in, l);)
            if (l.find("\"finish\"") == std::string::npos) kept += l + "\n";
        tests::write_file(dir + "/journal.jsonl", kept);
        auto e = refusal(dir);
        CHECK(e.kind() == common::ErrorKind::NotFound);
        CHECK(e.message().find(dir + "/state.json: missing") == 0);
        CHECK(e.message().find("tk-rehearsal261206071736auvg") != std::string::npos);
        CHECK_FALSE(fs::exists(dir + "/state.json"));  // not recreated empty
    }
}

TEST_CASE("run dir hostile: a journal line damaged while the run drives it fails that step, and finish still runs") {
    tests::TempDir tmp("run-dir-hostile-steps");
    auto rd = deploy::RunDir::create(tmp / "run", {{"run_id", "x"}});
    common::FakeClock clock;
    bool finished = false, second_ran = false;
    std::vector<deploy::Step> steps{
        {"first", [&](deploy::StepContext &) { tests::write_file(tmp / "run/journal.jsonl", "{\"step\": 5}\n"); }, std::chrono::minutes(1)},
        {"second", [&](deploy::StepContext &) { second_ran = true; }, std::chrono::minutes(1)},
    };
    deploy::Step finish{"finish", [&](deploy::StepContext &) { finished = true; }, std::chrono::minutes(1), true, false};
    auto report = deploy::run_steps(steps, finish, rd, clock);
    REQUIRE(report.first_failure.has_value());
    CHECK(report.first_failure->kind() == common::ErrorKind::Usage);
    CHECK(report.first_failure->message().find("journal.jsonl:1: step: expected a string, got number") != std::string::npos);
    CHECK_FALSE(second_ran);
    CHECK(finished);
}
