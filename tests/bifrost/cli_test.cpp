// Walks the `bifrost` program: every verb has help with examples, listings and results have
// --json, exit codes follow the documented table (exec/run: the remote status, 255 for ours).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "common/sshd_server.h"
#include "common/subprocess.h"
#include "tests/bifrost/remote_fixture.h"

namespace {
const std::vector<std::string> kVerbs = {"exec", "push", "pull", "run", "jobs", "logs", "kill"};
}

TEST_CASE("cli: every verb has a description, help with examples, and the top-level help lists them") {
    tests::RemoteFixture remote;
    auto top = remote.cli({"--help"});
    CHECK(top.code == 0);
    for (const auto & verb : kVerbs) {
        CAPTURE(verb);
        CHECK(top.out.find(verb) != std::string::npos);
        auto h = remote.cli({verb, "--help"});
        CHECK(h.code == 0);
        CHECK(h.out.find("Examples:") != std::string::npos);
        CHECK(h.out.find("bifrost " + verb) != std::string::npos);
    }
    CHECK(remote.cli({"--version"}).code == 0);
    auto bad = remote.cli({"frobnicate"});
    CHECK(bad.code == 2);
    CHECK(remote.cli({"--compress", "maybe", "jobs", "x"}).code == 2);
}

TEST_CASE("cli: exec returns the remote status, keeps streams apart, and uses 255 for its own failures") {
    tests::RemoteFixture remote;
    auto r = remote.cli({"-q", "--persist", "3", "exec", remote.target(), "--sh", "--", "echo out; echo err >&2; exit 17"});
    CHECK(r.code == 17);
    CHECK(r.out == "out\n");
    CHECK(r.err == "err\n");
    r = remote.cli({"--persist", "3", "exec", remote.target(), "--", "printf", "%s|", "a b", "$HOME"});
    CHECK(r.out == "a b|$HOME|");
    r = remote.cli({"--persist", "3", "exec", remote.target(), "--", "cat"}, "piped stdin");
    CHECK(r.out == "piped stdin");
    r = remote.cli({"exec", "127.0.0.1:1", "--", "true"});
    CHECK(r.code == 255);
    CHECK(r.err.find("network") != std::string::npos);
    CHECK(remote.cli({"exec", "bad target", "--", "true"}).code == 255);
}

TEST_CASE("cli: listings and results print JSON with --json, errors have documented exit codes") {
    tests::RemoteFixture remote;
    const std::string t = remote.target();
    tests::spit(remote.local() + "/src/a.txt", "a");
    auto push = remote.cli({"--json", "--persist", "3", "push", t, remote.local() + "/src", "--to", "~/src"});
    REQUIRE(push.code == 0);
    auto pj = nlohmann::json::parse(push.out);
    CHECK(pj["files_sent"] == 1);
    CHECK(pj["remote_dir"] == remote.home() + "/src");
    auto run = remote.cli({"--json", "--persist", "3", "run", "--detach", "--name", "j1", t, "--", "sh", "-c", "echo hi; exit 3"});
    REQUIRE(run.code == 0);
    CHECK(nlohmann::json::parse(run.out)["name"] == "j1");
    auto attached = remote.cli({"--persist", "3", "run", "--name", "j2", t, "--sh", "--", "echo attached; exit 6"});
    CHECK(attached.code == 6);
    CHECK(attached.out == "attached\n");
    auto jobs = remote.cli({"--json", "--persist", "3", "jobs", t});
    REQUIRE(jobs.code == 0);
    auto jj = nlohmann::json::parse(jobs.out);
    REQUIRE(jj.is_array());
    CHECK(jj.size() == 2);
    auto table = remote.cli({"--persist", "3", "jobs", t});
    CHECK(table.out.find("NAME") != std::string::npos);
    auto logs = remote.cli({"--persist", "3", "logs", t, "j1", "-f"});
    CHECK(logs.out == "hi\n");
    auto pull = remote.cli({"--json", "--persist", "3", "pull", t, "~/src", remote.local() + "/back"});
    REQUIRE(pull.code == 0);
    CHECK(nlohmann::json::parse(pull.out)["files_fetched"] == 1);
    auto kill = remote.cli({"--json", "--persist", "3", "kill", t, "j1"});
    CHECK(kill.code == 0);
    CHECK(nlohmann::json::parse(kill.out)["status"] == "failed(3)");

    CHECK(remote.cli({"--persist", "3", "logs", t, "nope"}).code == 9);
    CHECK(remote.cli({"jobs", "user@host:notaport"}).code == 2);
    CHECK(remote.cli({"jobs", "nosuchcloud:abc123"}).code == 2);  // broker: unknown provider
    CHECK(remote.cli({"--persist", "0", "jobs", "127.0.0.1:1"}).code == 6);
    auto err_json = remote.cli({"--json", "--persist", "0", "jobs", "127.0.0.1:1"});
    CHECK(nlohmann::json::parse(err_json.err)["error"]["kind"] == "network");
    // Changed host key: auth (3).
    remote.sshd->server().rotate_host_key();
    remote.sshd->server().restart();
    auto changed = remote.cli({"--persist", "0", "jobs", t});
    CHECK(changed.code == 3);
    CHECK(changed.err.find("host key changed") != std::string::npos);
}

TEST_CASE("cli: a refused key is auth (3) for listings and 255 with the kind for exec") {
    tests::RemoteFixture remote;
    tests::TempDir keys;
    common::generate_ed25519_key(keys / "other", "other");
    auto run_with = [&](std::vector<std::string> args) {
        std::vector<std::string> argv = {BIFROST_EXE, "--key", keys / "other", "--persist", "0"};
        argv.insert(argv.end(), args.begin(), args.end());
        return common::run_process(argv);
    };
    auto jobs = run_with({"jobs", remote.target()});
    CHECK(jobs.exit_code == 3);
    CHECK(jobs.err.find("authentication refused") != std::string::npos);
    auto exec = run_with({"exec", remote.target(), "--", "true"});
    CHECK(exec.exit_code == 255);
    CHECK(exec.err.find("error kind: auth") != std::string::npos);
}

// logs -f always exited 0 and said nothing of how the job ended.
TEST_CASE("cli: logs -f ends with the job's final state on stderr and an exit status that tells success from failure") {
    tests::RemoteFixture remote;
    const std::string t = remote.target();
    REQUIRE(remote.cli({"--persist", "0", "run", "--detach", "--name", "ok", t, "--", "sh", "-c", "sleep 1; echo fine"}).code == 0);
    REQUIRE(remote.cli({"--persist", "0", "run", "--detach", "--name", "bad", t, "--", "sh", "-c", "sleep 1; echo broken; exit 3"}).code == 0);
    auto ok = remote.cli({"--persist", "0", "logs", "-f", t, "ok"});
    CHECK(ok.code == 0);
    CHECK(ok.out == "fine\n");
    CHECK(ok.err.find("job ok succeeded") != std::string::npos);
    auto bad = remote.cli({"--persist", "0", "logs", "-f", t, "bad"});
    CHECK(bad.code == 8);
    CHECK(bad.out == "broken\n");
    CHECK(bad.err.find("job bad failed (exit 3)") != std::string::npos);
    // Without -f the log is printed and the status is 0, as before.
    CHECK(remote.cli({"--persist", "0", "logs", t, "bad"}).code == 0);
}

namespace {
// True when `line` has a word starting with "~" outside single quotes: the local shell would
// replace it with the local home directory before bifrost saw the remote path.
bool has_unquoted_tilde_word(const std::string & line) {
    bool quoted = false;
    for (size_t i = 0; i < line.size(); ++i) {
        if (line[i] == '\'') quoted = !quoted;
        else if (!quoted && line[i] == '~' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '=')) return true;
    }
    return false;
}
}  // namespace

// The examples showed `--to ~/project` and `--cwd ~/project`: copied into a shell, ~ becomes the
// local home directory, and the remote path is wrong.
TEST_CASE("cli: no example hands the local shell an unquoted ~ meant for the remote") {
    tests::RemoteFixture remote;
    std::vector<std::string> helps = {remote.cli({"--help"}).out};
    for (const auto & verb : kVerbs) helps.push_back(remote.cli({verb, "--help"}).out);
    int examples = 0;
    for (const auto & help : helps) {
        std::istringstream lines(help);
        std::string line;
        while (std::getline(lines, line)) {
            if (line.rfind("  bifrost ", 0) != 0) continue;
            ++examples;
            CAPTURE(line);
            CHECK_FALSE(has_unquoted_tilde_word(line));
        }
    }
    CHECK(examples > 10);
}
