#include "tests/deploy/e2e_support.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <doctest/doctest.h>

namespace fs = std::filesystem;

namespace tests::e2e {

void seed_remote_cache() {
    const char * real = std::getenv("TOOLKIT_E2E_REMOTE_BUILD");
    if (real && std::string(real) == "1") return;
    const std::string script = std::string(TOOLKIT_SOURCE_DIR) + "/deploy/remote/bootstrap.sh";
    auto t = common::run_process({"sh", script, "--print-torch"});
    REQUIRE(t.exit_code == 0);
    std::string torch_dir = t.out.substr(0, t.out.find(' '));
    std::error_code ec;
    if (!fs::equivalent(torch_dir, HOST_TORCH_DIR, ec)) {
        MESSAGE("not seeding the remote build cache: bootstrap.sh would link " << torch_dir << ", the host build links "
                                                                              << HOST_TORCH_DIR << "; the first test builds for real");
        return;
    }
    auto k = common::run_process({"sh", script, "--print-key", TOOLKIT_SOURCE_DIR});
    REQUIRE(k.exit_code == 0);
    std::string key = k.out.substr(0, k.out.find('\n'));
    std::string dir = std::string(DEPLOY_REMOTE_CACHE) + "/build-" + key;
    if (fs::exists(dir + "/.complete")) return;
    fs::create_directories(dir + "/bin");
    fs::copy_file(EXTRACT_BIN, dir + "/bin/extract", fs::copy_options::overwrite_existing);
    fs::copy_file(ANALYZE_BIN, dir + "/bin/analyze", fs::copy_options::overwrite_existing);
    tests::write_file(dir + "/.complete", "seeded from the host build by deploy_e2e_tests\n");
}

TestDir::TestDir(const std::string & prefix) : dir(prefix) { seed_remote_cache(); }

std::vector<std::string> TestDir::state_args() const {
    return {"--state-dir", state(), "--ledger", state() + "/ledger.sqlite", "--remote-cache", DEPLOY_REMOTE_CACHE, "--workspace",
            TOOLKIT_SOURCE_DIR};
}

common::RunOptions run_opts() {
    common::RunOptions o;
    o.timeout = std::chrono::milliseconds(1500 * 1000);
    o.extra_env = {"BROKER_STATE_DIR=", "OMP_NUM_THREADS=2"};
    return o;
}

nlohmann::json json_file(const std::string & path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in);
}

bool journal_has(const std::string & run_dir, const std::string & step, const std::string & event) {
    std::ifstream in(run_dir + "/journal.jsonl");
    std::string line;
    while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_discarded() && j.value("step", "") == step && j.value("event", "") == event) return true;
    }
    return false;
}

int local_instances(const TestDir & env) {
    int n = 0;
    if (!fs::exists(env.state() + "/local")) return 0;
    for (const auto & e : fs::directory_iterator(env.state() + "/local"))
        if (fs::exists(e.path() / "meta.json")) ++n;
    return n;
}

std::set<int> outlier_dims(const std::string & run_dir) {
    auto j = json_file(run_dir + "/results/analysis/outliers.json");
    std::set<int> dims;
    for (const auto & f : j.at("feature_profiles"))
        if (f.value("outlier", false)) dims.insert(f.at("dim").get<int>());
    return dims;
}

}  // namespace tests::e2e
