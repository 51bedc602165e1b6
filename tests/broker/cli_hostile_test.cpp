// Provider answers that try to do harm through the broker: an SSH host or user that would be shell
// or ssh-option text (no endpoint is used, with a warning naming the provider and instance; the
// printed ssh command never carries it).
#include <filesystem>

#include "tests/broker/cli_support.h"

#include <doctest/doctest.h>

using namespace broker_tests;
using json = nlohmann::json;

namespace {
std::vector<std::string> create_args(const std::string & provider, const std::string & key) {
    std::vector<std::string> a = {"--json", "create", "--provider", provider, "--ssh-key", key, "--no-wait", "--gpus", "1"};
    if (provider == "vast" || provider == "primeintellect") a.insert(a.end(), {"--gpu", "4090"});
    if (provider == "lambda") a.insert(a.end(), {"--gpu", "a10"});
    return a;
}
}  // namespace

TEST_CASE("hostile ssh: a host or user that is shell text is no endpoint on every cloud, and nothing runs") {
    for (const auto & c : clouds()) {
        tests::Emulator emu(c.name, {.api_key = kKey});
        Cli cli;
        cli.use(emu);
        common::generate_ed25519_key(cli.dir() / "id", "t");
        const std::string marker = cli.dir() / "pwned";
        std::vector<json> configs = {{{"ssh_host", "127.0.0.9;touch " + marker + ";"}}};
        // The user comes from the answer only on Prime (sshConnection) and in the Lambda emulator's
        // test-only field; RunPod and Vast are always root.
        if (c.name == "primeintellect" || c.name == "lambda")
            configs.push_back({{"ssh_host", "127.0.0.1"}, {"ssh_user", "-oProxyCommand=touch " + marker}});
        for (const auto & config : configs) {
            emu.reset();
            json cfg = config;
            cfg["boot_polls"] = 0;
            emu.configure(cfg);
            auto made = cli.run(create_args(c.name, cli.dir() / "id"));
            INFO(c.name, " ", config.dump(), ": ", made.err);
            REQUIRE(made.exit_code == 0);
            const std::string id = json::parse(made.out)["id"];
            const std::string ref = c.name + ":" + id;
            auto shown = cli.run({"--json", "instances", "show", ref});
            INFO(shown.err);
            REQUIRE(shown.exit_code == 0);
            json s = json::parse(shown.out);
            CHECK(s["ssh"].is_null());
            CHECK(s["ssh_command"] == "");
            CHECK(shown.err.find(c.name + ": instance " + id) != std::string::npos);
            json listed = cli.json({"instances", "list", "--provider", c.name})["instances"];
            REQUIRE(listed.size() == 1);
            CHECK(listed[0]["ssh_command"] == "");
            auto ssh = cli.run({"instances", "ssh", ref, "--print"});
            CHECK(ssh.exit_code == 9);
            CHECK(ssh.out.find(';') == std::string::npos);
            CHECK(ssh.out.find("ProxyCommand") == std::string::npos);
            CHECK_FALSE(std::filesystem::exists(marker));
            cli.json({"instances", "terminate", ref, "--yes"});
        }
    }
}
