// The two programs together: `bifrost` accepts a broker instance id as its target and reaches the
// instance the broker created (an emulated RunPod pod backed by a real sshd).
#include <nlohmann/json.hpp>

#include "tests/broker/cli_support.h"
#include <doctest/doctest.h>

using broker_tests::Cli;
using nlohmann::json;

namespace {
common::ProcessResult run_bifrost(const Cli & cli, std::vector<std::string> args, const std::string & known_hosts) {
    args.insert(args.begin(), BIFROST_BIN);
    common::RunOptions o;
    o.extra_env = cli.env();
    o.extra_env.push_back("BIFROST_KNOWN_HOSTS=" + known_hosts);
    o.extra_env.push_back("BIFROST_CONTROL_PERSIST=0");
    o.timeout = std::chrono::seconds(60);
    return common::run_process(args, o);
}
}  // namespace

TEST_CASE("bifrost: a broker instance id provider:id is a target") {
    tests::SshdFixture sshd;
    tests::Emulator emu("runpod", {.api_key = broker_tests::kKey});
    broker_tests::back_with_sshd(emu, sshd);
    Cli cli;
    cli.use(emu);
    json created = cli.json({"create", "--provider", "runpod", "--gpu", "4090", "--gpus", "1", "--ssh-key",
                             sshd.client_key(), "--run-id", "bt1", "--no-gpu-check", "--ready-timeout", "60s"});
    std::string id = created["id"];
    std::string known_hosts = cli.dir() / "known_hosts";

    auto r = run_bifrost(cli, {"--key", sshd.client_key(), "exec", "runpod:" + id, "--", "echo", "hello from", id},
                         known_hosts);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == "hello from " + id + "\n");
    auto status = run_bifrost(cli, {"--key", sshd.client_key(), "exec", "runpod:" + id, "--sh", "--", "exit 4"},
                              known_hosts);
    CHECK(status.exit_code == 4);

    // Unknown ids and providers are refused with the documented codes (9 not found, 2 usage).
    CHECK(run_bifrost(cli, {"--key", sshd.client_key(), "exec", "runpod:nosuchpod", "--", "true"}, known_hosts)
              .exit_code == 255);
    auto unknown = run_bifrost(cli, {"--json", "--key", sshd.client_key(), "jobs", "nosuchcloud:abc"}, known_hosts);
    CHECK(unknown.exit_code == 2);

    cli.json({"instances", "terminate", "runpod:" + id, "--yes"});
}
