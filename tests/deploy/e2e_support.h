// What the end-to-end tests of deploy_and_analyze (e2e_test.cpp, sweep_e2e_test.cpp) share: a test
// folder whose broker state and ledger the program is pointed at, the remote build cache seeded from
// the host build, the options a run gets, and readers of what a run directory and the broker state
// hold. Built as the deploy_e2e_support library (tests/deploy/CMakeLists.txt), which carries DEPLOY_BIN,
// DEPLOY_REMOTE_CACHE and the other program paths for deploy_e2e_tests and deploy_slurm_tests.
#pragma once

#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "tests/support/temp_dir.h"

namespace tests::e2e {

// The remote build is the slow part (minutes of libtorch compiles on 2 cores). The host build has
// just compiled `extract` and `analyze` from the same sources against the same Debian libtorch, so
// the shared cache (DEPLOY_REMOTE_CACHE) is seeded with them under the key bootstrap.sh computes for
// this tree; the remote bootstrap then finds a cached build, exactly as a re-run does.
// TOOLKIT_E2E_REMOTE_BUILD=1 skips the seeding and makes the first test really build on the
// "instance" (the rehearsal demo always does). The key is the one the remote side computes too:
// bootstrap.sh resolves the libtorch the same way whatever python3 this process finds first on PATH
// (bootstrap_test.cpp checks that). Seeding also needs that libtorch to be the one the host binaries
// link; elsewhere the first test builds for real.
void seed_remote_cache();

// A test's folder (removed at the end), with the broker state under it; seeds the remote build
// cache when made.
struct TestDir {
    explicit TestDir(const std::string & prefix);
    tests::TempDir dir;
    std::string state() const { return dir / "state"; }
    // The arguments that point deploy_and_analyze at this state, its ledger, the shared remote build
    // cache and this source tree as the workspace.
    std::vector<std::string> state_args() const;
};

// Options of a deploy_and_analyze or broker run: a generous timeout, no inherited BROKER_STATE_DIR,
// 2 OpenMP threads.
common::RunOptions run_opts();

nlohmann::json json_file(const std::string & path);

// Whether the run's journal.jsonl has `event` for `step`.
bool journal_has(const std::string & run_dir, const std::string & step, const std::string & event);

// Local instances still present in the broker state (each is a directory with meta.json).
int local_instances(const TestDir & env);

// The dims results/analysis/outliers.json of a run directory marks as outliers.
std::set<int> outlier_dims(const std::string & run_dir);

}  // namespace tests::e2e
