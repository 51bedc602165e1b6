// A real sshd on 127.0.0.1 whose sessions see $HOME as a private temporary directory (SetEnv), so
// jobs, workspaces and manifests of one test never meet another's; plus a local scratch directory
// and bifrost state (known-hosts, caches, control sockets) isolated the same way.
#pragma once

#include <memory>
#include <string>

#include "bifrost/bifrost.h"
#include "tests/support/sshd_fixture.h"
#include "tests/support/temp_dir.h"

namespace tests {

class RemoteFixture {
public:
    explicit RemoteFixture(std::vector<std::string> extra_config = {});
    bifrost::Endpoint endpoint() const;
    bifrost::ConnectOptions options() const;
    bifrost::Client client() const;
    std::string target() const { return sshd->target(); }
    const std::string & home() const { return home_dir.path(); }
    const std::string & local() const { return local_dir.path(); }
    // Runs the bifrost program with isolated state; returns exit code, stdout, stderr.
    struct Cli {
        int code;
        std::string out;
        std::string err;
    };
    Cli cli(const std::vector<std::string> & args, const std::string & stdin_data = {}) const;

    TempDir home_dir{"bifrost-home"};
    TempDir local_dir{"bifrost-local"};
    TempDir state_dir{"bifrost-state"};
    std::unique_ptr<SshdFixture> sshd;
    std::unique_ptr<EnvGuard> known_hosts_env, cache_env, runtime_env;
};

// One remote command over any transport (a connection, a multiplexed channel), its output collected.
struct Ran {
    int code = -1;
    std::string out, err;
};
Ran run_remote(bifrost::Transport & transport, const std::string & command, const std::string & stdin_data = {});

std::string slurp(const std::string & path);
void spit(const std::string & path, const std::string & text);

}  // namespace tests
