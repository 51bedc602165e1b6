// Helpers for the broker CLI integration tests: run the real `broker` program (no shell) with an
// isolated config/state/ledger, against emulators on 127.0.0.1 whose instances are real sshds.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "tests/support/emulator.h"
#include "tests/support/sshd_fixture.h"
#include "tests/support/temp_dir.h"

namespace broker_tests {

inline const char * const kKey = "test-key-0123456789";

struct Env {
    std::string name;      // provider name for the CLI
    std::string key_env;   // RUNPOD_API_KEY
    std::string url_env;   // RUNPOD_BASE_URL
};
inline const std::vector<Env> & clouds() {
    static const std::vector<Env> v = {{"runpod", "RUNPOD_API_KEY", "RUNPOD_BASE_URL"},
                                       {"vast", "VAST_API_KEY", "VAST_BASE_URL"},
                                       {"lambda", "LAMBDA_API_KEY", "LAMBDA_BASE_URL"},
                                       {"primeintellect", "PRIME_API_KEY", "PRIME_BASE_URL"}};
    return v;
}
inline const Env & cloud(const std::string & name) {
    for (const auto & e : clouds())
        if (e.name == name) return e;
    throw std::runtime_error("unknown cloud " + name);
}

class Cli {
public:
    Cli() {
        env_ = {"BROKER_CONFIG=" + dir_ / "broker.yaml", "BROKER_STATE_DIR=" + dir_ / "state",
                "BROKER_LEDGER=" + dir_ / "ledger.sqlite", "BROKER_POLL_INTERVAL=100ms",
                "BROKER_SSH_KEY=" + dir_ / "nokey"};
        // No keys from the developer's environment leak into a test.
        for (const auto & c : clouds()) {
            env_.push_back(c.key_env + "=");
            env_.push_back(c.url_env + "=");
        }
    }
    // Points `provider` at an emulator with the test key.
    void use(const tests::Emulator & emu, const std::string & key = kKey) {
        const auto & c = cloud(emu.provider());
        set(c.key_env, key);
        set(c.url_env, emu.base_url());
    }
    void set(const std::string & name, const std::string & value) { env_.push_back(name + "=" + value); }

    common::ProcessResult run(std::vector<std::string> args, int timeout_s = 90) const {
        args.insert(args.begin(), BROKER_BIN);
        common::RunOptions o;
        o.extra_env = env_;
        o.timeout = std::chrono::milliseconds(timeout_s * 1000);
        return common::run_process(args, o);
    }
    nlohmann::json json(std::vector<std::string> args) const {
        args.insert(args.begin(), "--json");
        auto r = run(args);
        if (r.exit_code != 0) throw std::runtime_error("broker failed (" + std::to_string(r.exit_code) + "): " + r.err);
        return nlohmann::json::parse(r.out);
    }
    const tests::TempDir & dir() const { return dir_; }
    const std::vector<std::string> & env() const { return env_; }

private:
    tests::TempDir dir_;
    std::vector<std::string> env_;
};

// An emulator whose instances are backed by `sshd` and boot after `boot_polls` observations.
inline void back_with_sshd(tests::Emulator & emu, const tests::SshdFixture & sshd, int boot_polls = 2) {
    emu.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()},
                   {"boot_polls", boot_polls}, {"api_key", kKey}});
}

inline int count_requests(tests::Emulator & emu, const std::string & action) {
    int n = 0;
    const nlohmann::json state = emu.state();  // keep it alive: range-for does not extend a temporary's member
    for (const auto & r : state["requests"])
        if (r.value("action", "") == action) ++n;
    return n;
}

}  // namespace broker_tests
