#include "tests/bifrost/remote_fixture.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/subprocess.h"

namespace tests {

RemoteFixture::RemoteFixture(std::vector<std::string> extra_config) {
    // sshd honours only the first SetEnv line: add HOME to the caller's line if there is one.
    bool merged = false;
    for (auto & line : extra_config)
        if (line.rfind("SetEnv ", 0) == 0) {
            line += " HOME=" + home_dir.path();
            merged = true;
        }
    if (!merged) extra_config.push_back("SetEnv HOME=" + home_dir.path());
    sshd = std::make_unique<SshdFixture>(extra_config);
    ::mkdir((state_dir.path() + "/run").c_str(), 0700);
    known_hosts_env = std::make_unique<EnvGuard>("BIFROST_KNOWN_HOSTS", state_dir.path() + "/known_hosts");
    cache_env = std::make_unique<EnvGuard>("XDG_CACHE_HOME", state_dir.path() + "/cache");
    runtime_env = std::make_unique<EnvGuard>("XDG_RUNTIME_DIR", state_dir.path() + "/run");
}

bifrost::Endpoint RemoteFixture::endpoint() const {
    bifrost::Endpoint e;
    e.user = sshd->user();
    e.host = sshd->host();
    e.port = sshd->port();
    return e;
}

bifrost::ConnectOptions RemoteFixture::options() const {
    bifrost::ConnectOptions o;
    o.key_path = sshd->client_key();
    o.known_hosts_path = state_dir.path() + "/known_hosts";
    o.connect_timeout_s = 5;
    return o;
}

bifrost::Client RemoteFixture::client() const { return bifrost::Client::connect(bifrost::parse_target(target()), options()); }

RemoteFixture::Cli RemoteFixture::cli(const std::vector<std::string> & args, const std::string & stdin_data) const {
    std::vector<std::string> argv = {BIFROST_EXE, "--key", sshd->client_key()};
    argv.insert(argv.end(), args.begin(), args.end());
    common::RunOptions ro;
    ro.stdin_data = stdin_data;
    ro.timeout = std::chrono::milliseconds(60000);
    auto r = common::run_process(argv, ro);
    return {r.exit_code, r.out, r.err};
}

Ran run_remote(bifrost::Transport & transport, const std::string & command, const std::string & stdin_data) {
    Ran r;
    bifrost::RemoteCommand rc;
    rc.command = command;
    rc.stdin_data = stdin_data;
    rc.on_stdout = [&](std::string_view d) { r.out.append(d); };
    rc.on_stderr = [&](std::string_view d) { r.err.append(d); };
    r.code = transport.run(rc);
    return r;
}

std::string slurp(const std::string & path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

void spit(const std::string & path, const std::string & text) {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
}

}  // namespace tests
