// What may prove that an instance is gone: only the provider's own not-found answer (Vast
// "no_such_instance" or show's null, Lambda "global/object-does-not-exist", RunPod "pod not found"
// inside an HTTP 200, Prime's "Pod not found" detail). A bare or HTML 404 (a proxy, a base URL that
// repeats the API's path, a changed route) or an empty 200 says nothing, so `instances terminate`
// must end in leak risk (exit 10) while the instance still bills.
#include "tests/broker/cli_support.h"

#include <doctest/doctest.h>

using namespace broker_tests;
using json = nlohmann::json;

namespace {

// Filters that make a --no-wait create succeed on each emulated cloud.
std::vector<std::string> create_args(const std::string & provider, const std::string & key) {
    std::vector<std::string> a = {"create", "--provider", provider, "--ssh-key", key, "--no-wait", "--gpus", "1"};
    if (provider == "vast" || provider == "primeintellect") a.insert(a.end(), {"--gpu", "4090"});
    if (provider == "lambda") a.insert(a.end(), {"--gpu", "a10"});
    return a;
}

// Rents one instance on `provider` with a fresh key (--no-wait) and returns its id.
std::string created_id(Cli & cli, const std::string & provider) {
    common::generate_ed25519_key(cli.dir() / "id", "t");
    auto args = create_args(provider, cli.dir() / "id");
    args.insert(args.begin(), "--json");
    auto made = cli.run(args);
    INFO(provider, ": ", made.err);
    REQUIRE(made.exit_code == 0);
    return json::parse(made.out)["id"].get<std::string>();
}

// Instances the emulator still holds (and bills), by id.
bool still_there(tests::Emulator & emu, const std::string & id) {
    const json state = emu.state();
    for (const auto & i : state["instances"]) {
        std::string have = i["id"].is_string() ? i["id"].get<std::string>() : i["id"].dump();
        if (have == id) return true;
    }
    return false;
}

}  // namespace

TEST_CASE("gone: an HTML 404 on terminate or on the proving get is leak risk on every cloud, never proof") {
    for (const auto & c : clouds()) {
        tests::Emulator emu(c.name, {.api_key = kKey});
        emu.configure({{"boot_polls", 1}});
        Cli cli;
        cli.use(emu);
        const std::string id = created_id(cli, c.name);
        const std::string ref = c.name + ":" + id;

        // The terminate call answered by something that is not the API (a proxy's HTML 404).
        emu.inject({{"kind", "http_status"}, {"status", 404}, {"body", "<html>Not Found</html>"},
                    {"match", {{"action", "terminate"}}}, {"count", 1}});
        auto r = cli.run({"instances", "terminate", ref, "--yes", "--prove-timeout", "2s"});
        INFO(r.err);
        CHECK(r.exit_code == 10);
        CHECK(r.err.find("may still bill") != std::string::npos);
        CHECK(still_there(emu, id));

        // The terminate is taken but ignored; every look afterwards is an HTML 404.
        emu.inject({{"kind", "terminate_ignored_once"}, {"count", 1}});
        emu.inject({{"kind", "http_status"}, {"status", 404}, {"body", "<html>Not Found</html>"},
                    {"match", {{"action", "get"}}}, {"count", 1000}});
        r = cli.run({"instances", "terminate", ref, "--yes", "--prove-timeout", "2s"});
        INFO(r.err);
        CHECK(r.exit_code == 10);
        CHECK(still_there(emu, id));
        emu.reset();
    }
}

TEST_CASE("gone: the provider's own not-found answers still prove an instance gone, a second terminate included") {
    for (const auto & c : clouds()) {
        tests::Emulator emu(c.name, {.api_key = kKey});
        emu.configure({{"boot_polls", 1}});
        Cli cli;
        cli.use(emu);
        const std::string ref = c.name + ":" + created_id(cli, c.name);
        json t = cli.json({"instances", "terminate", ref, "--yes"});
        CHECK(t[0]["proven"] == true);
        // Already gone: the provider answers its own "not found" (or null) to both calls.
        auto again = cli.run({"--json", "instances", "terminate", ref, "--yes"});
        INFO(again.err);
        CHECK(again.exit_code == 0);
        auto show = cli.run({"instances", "show", ref});
        CHECK(show.exit_code == 9);
    }
}

TEST_CASE("gone: a base URL that repeats the API path is refused naming the variable, and proves nothing") {
    tests::Emulator emu("primeintellect", {.api_key = kKey});
    emu.configure({{"boot_polls", 1}});
    Cli good;
    good.use(emu);
    common::generate_ed25519_key(good.dir() / "id", "t");
    json made = good.json(create_args("primeintellect", good.dir() / "id"));
    const std::string id = made["id"];

    Cli bad;
    bad.set("PRIME_API_KEY", kKey);
    bad.set("PRIME_BASE_URL", emu.base_url() + "/api/v1");
    auto r = bad.run({"instances", "terminate", "primeintellect:" + id, "--yes", "--prove-timeout", "2s"});
    INFO(r.err);
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("PRIME_BASE_URL") != std::string::npos);
    CHECK(still_there(emu, id));
    auto s = bad.run({"search", "--provider", "primeintellect"});
    CHECK(s.exit_code == 2);
    CHECK(s.err.find("PRIME_BASE_URL") != std::string::npos);
    // A trailing slash is still a base URL.
    Cli slash;
    slash.set("PRIME_API_KEY", kKey);
    slash.set("PRIME_BASE_URL", emu.base_url() + "/");
    CHECK(slash.run({"search", "--provider", "primeintellect"}).exit_code == 0);
    good.json({"instances", "terminate", "primeintellect:" + id, "--yes"});
}

TEST_CASE("gone: an empty HTTP 200 to Prime's get is asked again and is never gone") {
    tests::Emulator emu("primeintellect", {.api_key = kKey});
    emu.configure({{"boot_polls", 1}});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    json made = cli.json(create_args("primeintellect", cli.dir() / "id"));
    const std::string id = made["id"];
    const std::string ref = "primeintellect:" + id;

    // One empty answer is transient: asked again, the show succeeds.
    emu.inject({{"kind", "http_status"}, {"status", 200}, {"body", ""}, {"match", {{"action", "get"}}}, {"count", 1}});
    auto shown = cli.run({"--json", "instances", "show", ref});
    INFO(shown.err);
    CHECK(shown.exit_code == 0);

    // The terminate is ignored and every look is an empty 200: not proven, exit 10, still billing.
    emu.inject({{"kind", "terminate_ignored_once"}, {"count", 1}});
    emu.inject({{"kind", "http_status"}, {"status", 200}, {"body", ""}, {"match", {{"action", "get"}}}, {"count", 1000}});
    auto r = cli.run({"instances", "terminate", ref, "--yes", "--prove-timeout", "2s"});
    INFO(r.err);
    CHECK(r.exit_code == 10);
    CHECK(still_there(emu, id));
    emu.reset();
}
