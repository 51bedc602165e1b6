// deploy_and_analyze's command line: every flag is used by the mode it is given to or refused (exit
// 2, naming it); with --sweep the flags that mean the same for every member reach every member (the
// plan says so, and each member's run.json holds them); --resume keeps its run's config; and every
// command line the configs document (configs/*.yaml and configs/sweeps/*.yaml comments) plans an
// offer for each run against the provider emulators (--dry-run, nothing rented).
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "tests/support/emulator.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;

namespace {

common::RunOptions opts(std::vector<std::string> env = {}) {
    common::RunOptions o;
    o.timeout = std::chrono::milliseconds(300 * 1000);
    o.extra_env = {"BROKER_STATE_DIR=", "OMP_NUM_THREADS=2"};
    o.extra_env.insert(o.extra_env.end(), env.begin(), env.end());
    o.cwd = TOOLKIT_SOURCE_DIR;  // the configs' documented commands name configs/... from the tree's root
    return o;
}

// The four clouds' emulators and a Hub stand-in serving config.json (tests/deploy/hub-configs), as
// the environment of a deploy_and_analyze process; broker state under `dir`.
struct Clouds {
    explicit Clouds(const tests::TempDir & d) : dir(d) {
        hub = common::ChildProcess::spawn({"python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                                           std::string(TOOLKIT_SOURCE_DIR) + "/tests/deploy/hub-configs"},
                                          {.stdout_path = dir / "hub.out"});
        int port = 0;
        for (int i = 0; i < 100 && port == 0; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            std::string t = tests::read_file(dir / "hub.out");
            auto at = t.find(" port ");
            if (at != std::string::npos && t.find(' ', at + 6) != std::string::npos) port = std::stoi(t.substr(at + 6));
        }
        REQUIRE(port > 0);
        env = {"RUNPOD_API_KEY=k-runpod", "RUNPOD_BASE_URL=" + runpod.base_url(), "VAST_API_KEY=k-vast", "VAST_BASE_URL=" + vast.base_url(),
               "LAMBDA_API_KEY=k-lambda", "LAMBDA_BASE_URL=" + lambda.base_url(), "PRIME_API_KEY=k-prime",
               "PRIME_BASE_URL=" + prime.base_url(), "HF_ENDPOINT=http://127.0.0.1:" + std::to_string(port),
               "BROKER_CONFIG=" + (dir / "none.yaml")};
    }
    std::vector<std::string> state() const { return {"--state-dir", dir / "state", "--ledger", dir / "state/ledger.sqlite"}; }
    // Nothing was created on any cloud.
    void check_nothing_created() {
        for (auto * emu : {&runpod, &vast, &lambda, &prime}) {
            CAPTURE(emu->provider());
            CHECK(emu->state()["instances"].empty());
        }
    }
    const tests::TempDir & dir;
    tests::Emulator runpod{"runpod", {.api_key = "k-runpod"}};
    tests::Emulator vast{"vast", {.api_key = "k-vast"}};
    tests::Emulator lambda{"lambda", {.api_key = "k-lambda"}};
    tests::Emulator prime{"primeintellect", {.api_key = "k-prime"}};
    common::ChildProcess hub;
    std::vector<std::string> env;
};

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string> & more) {
    args.insert(args.end(), more.begin(), more.end());
    return args;
}

bool has_run_dir(const std::string & parent) {
    std::error_code ec;
    if (!fs::exists(parent, ec)) return false;
    for (const auto & e : fs::directory_iterator(parent, ec))
        if (fs::exists(e.path() / "run.json")) return true;
    return false;
}

}  // namespace

TEST_CASE("cli: --report and --max-parallel without --sweep are refused with exit 2 and run nothing") {
    tests::TempDir dir("cli-sweep-only");
    // Without the refusal either would start the rehearsal (here on one GPU of this machine, which
    // fails at its offers step after writing a run directory).
    for (std::vector<std::string> flag : {std::vector<std::string>{"--report"}, {"--max-parallel", "2"}}) {
        CAPTURE(flag[0]);
        auto r = common::run_process(with({DEPLOY_BIN, "--gpu-count", "1", "--output-dir", dir / "runs", "--state-dir", dir / "state"}, flag),
                                     opts());
        CHECK(r.exit_code == 2);
        CHECK(r.err.find(flag[0] + ": only with --sweep") != std::string::npos);
        CHECK_FALSE(has_run_dir(dir / "runs"));
    }
}

TEST_CASE("cli: --sweep refuses the flags that size or name one run, and flags its mode would not use, naming each") {
    tests::TempDir dir("cli-sweep-refused");
    const std::string sweep = std::string(TOOLKIT_SOURCE_DIR) + "/configs/sweeps/rehearsal.yaml";
    struct Case {
        std::vector<std::string> args;
        std::string expect;
    };
    const std::vector<Case> cases{
        {{"--dry-run", "--gpu-count", "2"}, "--gpu-count: cannot go with --sweep"},
        {{"--model", "Qwen/Qwen3-8B", "--min-vram", "auto"}, "--model, --min-vram: cannot go with --sweep"},
        {{"--dry-run", "--workspace", "/tmp"}, "--workspace: not used with --sweep --dry-run"},
        {{"--dry-run", "--fail-fast"}, "--fail-fast: not used with --sweep --dry-run"},
        {{"--report", "--max-price", "3"}, "--max-price, --state-dir: not used with --sweep --report"},
        {{"--run-dir", dir / "x"}, "--run-dir: not used with --sweep (the sweep gives each member its own --run-dir)"},
        {{"--dry-run", "--report"}, "--dry-run and --report: give one"},
    };
    for (const auto & c : cases) {
        CAPTURE(c.expect);
        auto r = common::run_process(with(with({DEPLOY_BIN, "--sweep", sweep, "--output-dir", dir / "sweeps"}, c.args), {"--state-dir", dir / "state"}),
                                     opts());
        CHECK(r.exit_code == 2);
        CHECK(r.err.find(c.expect) != std::string::npos);
        CHECK_FALSE(fs::exists(dir / "sweeps"));
    }
}

TEST_CASE("cli: --sweep --dry-run applies --provider, --max-price, --max-duration and --keep-running to every member and says so") {
    tests::TempDir dir("cli-sweep-flags");
    Clouds clouds(dir);
    tests::write_file(dir / "sweep.yaml", R"(sweep: {name: flags-test}
base:
  data: {synthetic_tokens: {vocab: 64}}
  resources: {providers: [runpod, vast], gpu_count: 1, min_vram_gb: auto, max_price_usd_per_hour: 10}
  policy: {max_duration: 3h}
members:
  - id: qwen3-small
    model: {hub: Qwen/Qwen3-0.6B}
  - id: qwen3-eight
    model: {hub: Qwen/Qwen3-8B}
    resources: {providers: [runpod]}
)");
    const std::vector<std::string> base = with({DEPLOY_BIN, "--sweep", dir / "sweep.yaml", "--dry-run"}, clouds.state());
    // The file alone: RunPod first; the lifetime is max_duration + 30 min.
    auto plain = common::run_process(with(base, {"--json"}), opts(clouds.env));
    INFO(plain.err);
    REQUIRE(plain.exit_code == 0);
    auto p = nlohmann::json::parse(plain.out);
    for (const auto & m : p["members"]) {
        CAPTURE(m.dump());
        CHECK(m["offer"].get<std::string>().rfind("runpod:", 0) == 0);
        CHECK(m["lifetime_s"].get<double>() == doctest::Approx(3.5 * 3600));
    }
    CHECK(p["overrides"].empty());
    // The command line over every member (the second member's own providers included).
    const std::vector<std::string> flags{"--provider", "vast", "--max-price", "1.5", "--max-duration", "1h", "--keep-running"};
    auto r = common::run_process(with(with(base, flags), {"--json"}), opts(clouds.env));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    auto plan = nlohmann::json::parse(r.out);
    CHECK(plan["overrides"] == nlohmann::json(flags));
    REQUIRE(plan["members"].size() == 2);
    for (const auto & m : plan["members"]) {
        CAPTURE(m.dump());
        CHECK(m["state"] == "planned");
        CHECK(m["offer"].get<std::string>().rfind("vast:", 0) == 0);
        CHECK(m["price_usd_per_hour"].get<double>() <= 1.5);
        CHECK(m["max_duration_s"].get<double>() == 3600);
        // 1 h + 30 min for pull and finish + keep_ttl (2 h by default): --keep-running keeps it.
        CHECK(m["lifetime_s"].get<double>() == doctest::Approx(3.5 * 3600));
        CHECK(m["cost_bound_usd"].get<double>() == doctest::Approx(m["price_usd_per_hour"].get<double>() * 3.5));
    }
    // The table states them too.
    auto text = common::run_process(with(base, flags), opts(clouds.env));
    CHECK(text.exit_code == 0);
    CHECK(text.out.find("command line, applied to every member after the sweep file: --provider vast --max-price 1.5 --max-duration 1h "
                        "--keep-running") != std::string::npos);
    // A value that makes a member invalid is refused naming it.
    auto bad = common::run_process(with(base, {"--num-sequences", "0"}), opts(clouds.env));
    CHECK(bad.exit_code == 2);
    CHECK(bad.err.find("member qwen3-small with the command line's flags") != std::string::npos);
    clouds.check_nothing_created();
}

TEST_CASE("cli: a sweep's members are started with its command line's flags, and --resume refuses one that would change the run") {
    tests::TempDir dir("cli-sweep-members");
    // One member on this machine's local provider with one GPU: none here, so it ends at its offers
    // step, after its run directory (run.json, the resolved config) is written. Nothing is rented.
    tests::write_file(dir / "sweep.yaml", "sweep: {name: members-test, output_dir: " + (dir / "file-out") + R"(}
base:
  data: {synthetic_tokens: {vocab: 64}, num_sequences: 2, sequence_length: 16}
  resources: {providers: [local], gpu_count: 1, min_vram_gb: 1, disk_gb: 1}
  policy: {max_duration: 1h, on_failure: terminate}
members:
  - id: fixture-one
    model: {fixture: {family: olmoe, layers: 2, hidden: 32}}
)");
    auto r = common::run_process({DEPLOY_BIN, "--sweep", dir / "sweep.yaml", "--state-dir", dir / "state", "--output-dir", dir / "flag-out",
                                  "--max-duration", "45m", "--num-sequences", "3", "--threshold", "5.5", "--on-success", "keep"},
                                 opts());
    INFO(r.err);
    CHECK(r.exit_code != 0);  // the member failed at its offers step
    CHECK_FALSE(fs::exists(dir / "file-out"));  // --output-dir moved the sweep directory
    const std::string member = dir / "flag-out/members-test/fixture-one";
    REQUIRE(fs::exists(member + "/run.json"));
    auto info = nlohmann::json::parse(tests::read_file(member + "/run.json"));
    const auto & c = info["config"];
    CHECK(c["policy"]["max_duration_s"] == 2700);
    CHECK(c["data"]["num_sequences"] == 3);
    CHECK(c["analysis"]["threshold"] == 5.5);
    CHECK(c["policy"]["on_success"] == "keep");
    CHECK(c["policy"]["on_failure"] == "terminate");  // from the file: not given
    // --resume with flags that agree with run.json (what a sweep passes a member it resumes): no refusal.
    auto same = common::run_process({DEPLOY_BIN, "--resume", member, "--state-dir", dir / "state", "--max-duration", "45m", "--threshold", "5.5"},
                                    opts());
    CHECK(same.err.find("would change") == std::string::npos);
    CHECK(same.exit_code != 2);
    // One that would change it is refused, naming it, and the run is left as it was.
    const std::string journal = tests::read_file(member + "/journal.jsonl");
    auto changed = common::run_process(
        {DEPLOY_BIN, "--resume", member, "--state-dir", dir / "state", "--max-duration", "45m", "--max-price", "3", "--num-sequences", "4"}, opts());
    CHECK(changed.exit_code == 2);
    CHECK(changed.err.find("--max-price, --num-sequences would change the run's config") != std::string::npos);
    CHECK(tests::read_file(member + "/journal.jsonl") == journal);
    auto moved = common::run_process({DEPLOY_BIN, "--resume", member, "--state-dir", dir / "state", "--output-dir", dir / "elsewhere"}, opts());
    CHECK(moved.exit_code == 2);
    CHECK(moved.err.find("--output-dir: not used with --resume") != std::string::npos);
}

namespace {

// The deploy_and_analyze command lines a file's comments document ("#   deploy_and_analyze ..." or
// "#   build.../deploy_and_analyze ..."), split on blanks (they hold no quoting).
std::vector<std::vector<std::string>> documented_commands(const std::string & path) {
    std::vector<std::vector<std::string>> out;
    std::istringstream in(tests::read_file(path));
    std::string line;
    const std::regex doc(R"(^#\s+(\S*/)?deploy_and_analyze\s+(.*)$)");
    std::smatch m;
    while (std::getline(in, line)) {
        if (!std::regex_match(line, m, doc)) continue;
        std::vector<std::string> args;
        std::istringstream words(m[2].str());
        for (std::string w; words >> w;) {
            if (w == "#") break;  // a comment after the command
            args.push_back(w);
        }
        out.push_back(args);
    }
    return out;
}

// The flags configs/README.md's table gives a config file ("| glm-4.5-air.yaml | ... `--gpu-count 1
// --offload-gb 110` |": each `--...` fragment), as `--config configs/FILE FLAGS...`.
std::vector<std::vector<std::string>> readme_commands() {
    std::vector<std::vector<std::string>> out;
    std::istringstream in(tests::read_file(std::string(TOOLKIT_SOURCE_DIR) + "/configs/README.md"));
    const std::regex row(R"(^\| ([a-z0-9.-]+\.yaml) \|(.*)$)"), fragment("`(--[^`]*)`");
    std::smatch m;
    for (std::string line; std::getline(in, line);) {
        if (!std::regex_match(line, m, row)) continue;
        const std::string file = "configs/" + m[1].str(), rest = m[2].str();
        for (std::sregex_iterator it(rest.begin(), rest.end(), fragment), end; it != end; ++it) {
            std::vector<std::string> args{"--config", file};
            std::istringstream words((*it)[1].str());
            for (std::string w; words >> w;) args.push_back(w);
            out.push_back(args);
        }
    }
    return out;
}

}  // namespace

TEST_CASE("cli: every command line the configs document plans an offer for each run on the emulators (--dry-run)") {
    tests::TempDir dir("cli-documented");
    Clouds clouds(dir);
    int commands = 0;
    auto run_plan = [&](std::vector<std::string> args) {
        std::string shown;
        for (const auto & a : args) shown += " " + a;
        CAPTURE(shown);
        if (std::find(args.begin(), args.end(), "--dry-run") == args.end()) args.push_back("--dry-run");
        args.insert(args.begin(), DEPLOY_BIN);
        auto r = common::run_process(with(with(args, clouds.state()), {"--json"}), opts(clouds.env));
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
        auto plan = nlohmann::json::parse(r.out);
        REQUIRE_FALSE(plan["members"].empty());
        for (const auto & m : plan["members"]) {
            CAPTURE(m.dump());
            CHECK(m["state"] == "planned");
        }
        ++commands;
    };
    const auto readme = readme_commands();
    CHECK(readme.size() >= 4);  // Mixtral's, Qwen3-Next's two and GLM-4.5-Air's two
    for (const auto & args : readme) run_plan(args);
    for (const auto & folder : {std::string("configs"), std::string("configs/sweeps")}) {
        for (const auto & e : fs::directory_iterator(std::string(TOOLKIT_SOURCE_DIR) + "/" + folder)) {
            if (e.path().extension() != ".yaml") continue;
            const std::string rel = folder + "/" + e.path().filename().string();
            auto documented = documented_commands(e.path());
            // The file's own settings, as `--config FILE` or `--sweep FILE` runs them.
            documented.push_back({folder == "configs" ? "--config" : "--sweep", rel});
            for (const auto & args : documented) {
                // A command in a file's comment runs that file, by its path from the tree's root.
                CAPTURE(rel);
                CHECK(std::find(args.begin(), args.end(), rel) != args.end());
                run_plan(args);
            }
        }
    }
    CHECK(commands >= 25);  // 8 configs + 3 sweeps, the commands their comments document, the README's flags
    clouds.check_nothing_created();
}
