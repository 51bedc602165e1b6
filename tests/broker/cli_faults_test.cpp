// The CLI under the emulators' faults: latency, 429 with Retry-After, 500, GraphQL errors inside a
// 200, capacity errors with fallthrough, runtime null for the first polls, a vanished offer, a
// terminate that leaves the instance running once, dropped connections, malformed JSON; and bad
// input: unknown provider, impossible filter, missing or wrong key, unreachable API.
#include <sys/stat.h>

#include <chrono>
#include <map>
#include <memory>
#include <thread>

#include "broker/ledger.h"
#include "common/sshd_server.h"
#include "tests/broker/cli_support.h"

#include <doctest/doctest.h>

using namespace broker_tests;
using json = nlohmann::json;

TEST_CASE("faults runpod: a GraphQL error inside HTTP 200 is an error, not an empty result") {
    tests::Emulator emu("runpod", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    // Persistent (a transient one is asked again: cli_answers_test.cpp).
    emu.inject({{"kind", "graphql_error"}, {"message", "Something broke upstream"}, {"count", 100}});
    auto r = cli.run({"search", "--provider", "runpod"});
    CHECK(r.exit_code == 6);
    CHECK(r.err.find("Something broke upstream") != std::string::npos);
}

TEST_CASE("faults runpod: capacity errors fall through to the next offer, runtime null for the first polls") {
    tests::SshdFixture sshd;
    tests::Emulator emu("runpod", {.api_key = kKey});
    back_with_sshd(emu, sshd, 1);
    Cli cli;
    cli.use(emu);
    emu.inject({{"kind", "capacity"}, {"count", 1}});
    emu.inject({{"kind", "runtime_null"}, {"polls", 3}, {"match", {{"operation", "podFindAndDeployOnDemand"}}}});
    auto r = cli.run({"--json", "create", "--provider", "runpod", "--gpus", "1", "--ssh-key", sshd.client_key(),
                      "--no-gpu-check", "--max-attempts", "3"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    json c = json::parse(r.out);
    REQUIRE(c["attempts"].size() == 2);
    CHECK(c["attempts"][0]["outcome"].get<std::string>().rfind("capacity", 0) == 0);
    CHECK(c["ready"] == true);
    CHECK(count_requests(emu, "create") == 2);
    cli.json({"instances", "terminate", "runpod:" + c["id"].get<std::string>(), "--yes"});
}

TEST_CASE("faults: capacity on every attempt ends in exit 4 after the bounded number of offers") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    emu.inject({{"kind", "capacity"}, {"count", 10}});
    auto r = cli.run({"create", "--provider", "vast", "--gpu", "4090", "--ssh-key", cli.dir() / "id", "--max-attempts", "2"});
    CHECK(r.exit_code == 4);
    CHECK(count_requests(emu, "create") == 2);
    CHECK(r.err.find("no capacity after 2 offer(s)") != std::string::npos);
}

TEST_CASE("faults vast: 429 with Retry-After and a 500 are retried, latency is tolerated") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    emu.inject({{"kind", "http_status"}, {"status", 429}, {"retry_after_s", 1}, {"count", 1}});
    emu.inject({{"kind", "http_status"}, {"status", 500}, {"count", 1}});
    emu.inject({{"kind", "latency"}, {"latency_ms", 300}, {"count", 1}});
    auto start = std::chrono::steady_clock::now();
    auto r = cli.run({"--json", "search", "--provider", "vast", "--gpu", "h100"});
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(!json::parse(r.out).empty());
    CHECK(count_requests(emu, "search") == 3);
    CHECK(took >= 1.0);  // the Retry-After second was honoured
}

TEST_CASE("faults vast: an offer that vanished before the rent is a capacity error (exit 4)") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    json rows = cli.json({"search", "--provider", "vast", "--gpu", "4090", "--gpus", "1"});
    REQUIRE(!rows.empty());
    std::string id = rows[0]["offer_id"];
    emu.inject({{"kind", "vanish_offer"}, {"offer_id", std::stoll(id)}, {"count", 100}});
    auto r = cli.run({"create", "--offer", "vast:" + id, "--ssh-key", cli.dir() / "id"});
    CHECK(r.exit_code == 4);
    CHECK(r.err.find(id) != std::string::npos);
    CHECK(count_requests(emu, "create") == 0);  // re-checked at rent time: no blind create
}

TEST_CASE("faults lambda: a terminate that leaves the instance running once is re-sent and proven") {
    tests::Emulator emu("lambda", {.api_key = kKey});
    emu.configure({{"boot_polls", 1}});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    json c = cli.json({"create", "--provider", "lambda", "--gpu", "a10", "--ssh-key", cli.dir() / "id", "--no-wait"});
    std::string ref = "lambda:" + c["id"].get<std::string>();
    emu.inject({{"kind", "terminate_ignored_once"}});
    json t = cli.json({"instances", "terminate", ref, "--yes"});
    CHECK(t[0]["proven"] == true);
    CHECK(count_requests(emu, "terminate") >= 2);
}

TEST_CASE("faults runpod: a terminate that never takes is reported as leak risk (exit 10)") {
    tests::SshdFixture sshd;
    tests::Emulator emu("runpod", {.api_key = kKey});
    back_with_sshd(emu, sshd, 1);
    Cli cli;
    cli.use(emu);
    json c = cli.json({"create", "--provider", "runpod", "--gpus", "1", "--ssh-key", sshd.client_key(), "--no-wait"});
    std::string ref = "runpod:" + c["id"].get<std::string>();
    emu.inject({{"kind", "terminate_ignored_once"}, {"count", 1000}});
    auto r = cli.run({"instances", "terminate", ref, "--yes", "--prove-timeout", "1s"});
    CHECK(r.exit_code == 10);
    CHECK(r.err.find("may still bill") != std::string::npos);
    emu.reset();  // clears faults and instances
}

TEST_CASE("faults primeintellect: malformed JSON is a network error, a dropped create is looked up by name, not resent") {
    tests::Emulator emu("primeintellect", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    emu.inject({{"kind", "malformed_json"}, {"count", 5}});
    auto r = cli.run({"search", "--provider", "primeintellect"});
    CHECK(r.exit_code == 6);
    CHECK(r.err.find("not JSON") != std::string::npos);
    emu.reset();
    emu.inject({{"kind", "drop_connection"}, {"match", {{"action", "create"}}}, {"count", 1}});
    r = cli.run({"create", "--provider", "primeintellect", "--gpu", "4090", "--gpus", "1", "--ssh-key", cli.dir() / "id",
                 "--no-wait"});
    CHECK(r.exit_code == 6);
    CHECK(count_requests(emu, "create") == 1);  // never resent blindly
    CHECK(count_requests(emu, "list") >= 1);    // looked up by name instead
}

TEST_CASE("faults: one failing provider is reported, the others still answer") {
    tests::Emulator runpod("runpod", {.api_key = kKey});
    tests::Emulator vast("vast", {.api_key = kKey});
    Cli cli;
    cli.use(runpod);
    cli.use(vast);
    runpod.inject({{"kind", "http_status"}, {"status", 503}, {"count", 100}});
    auto r = cli.run({"--json", "search", "--gpus", "1"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    json rows = json::parse(r.out);
    REQUIRE(!rows.empty());
    for (const auto & row : rows) CHECK(row["provider"] == "vast");
    CHECK(r.err.find("runpod: skipped") != std::string::npos);
}

TEST_CASE("bad input: wrong key is exit 3 on every cloud, and the key never appears in any output") {
    for (const auto & c : clouds()) {
        tests::Emulator emu(c.name, {.api_key = kKey});
        Cli cli;
        cli.use(emu, "wrong-key-SECRET-4242");
        auto r = cli.run({"--json", "-vv", "search", "--provider", c.name});
        INFO(c.name, ": ", r.err);
        CHECK(r.exit_code == 3);
        CHECK(r.err.find("wrong-key-SECRET-4242") == std::string::npos);
        CHECK(r.out.find("wrong-key-SECRET-4242") == std::string::npos);
        json err = json::parse(r.err.substr(r.err.rfind("{\"error\"")));
        CHECK(err["error"]["kind"] == "auth");
    }
}

TEST_CASE("bad input: missing key, unknown provider, impossible filter, unreachable API") {
    Cli cli;
    auto r = cli.run({"search", "--provider", "runpod"});
    CHECK(r.exit_code == 3);
    CHECK(r.err.find("RUNPOD_API_KEY") != std::string::npos);
    r = cli.run({"search", "--provider", "aws"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("valid providers") != std::string::npos);
    r = cli.run({"search", "--provider", "local", "--gpus", "0"});
    CHECK(r.exit_code == 2);
    r = cli.run({"search", "--provider", "local", "--spot", "--on-demand"});
    CHECK(r.exit_code == 2);
    cli.set("VAST_API_KEY", kKey);
    cli.set("VAST_BASE_URL", "http://127.0.0.1:" + std::to_string(common::pick_free_port()));
    r = cli.run({"search", "--provider", "vast"});
    CHECK(r.exit_code == 6);
    CHECK(r.err.find("no response") != std::string::npos);
}

TEST_CASE("sweep: an instance past its deadline is terminated, one created elsewhere is adopted") {
    tests::Emulator emu("vast", {.api_key = kKey});
    emu.configure({{"boot_polls", 1}});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    json c = cli.json({"create", "--provider", "vast", "--gpu", "4090", "--ssh-key", cli.dir() / "id", "--no-wait",
                       "--max-lifetime", "1s"});
    std::this_thread::sleep_for(std::chrono::milliseconds(2100));
    // A second machine's ledger has never seen it: sweep adopts it and terminates it.
    Cli other;
    other.use(emu);
    json actions = other.json({"sweep", "--provider", "vast"})["actions"];
    bool adopted = false, terminated = false;
    for (const auto & a : actions) {
        adopted |= a["action"] == "adopted";
        terminated |= a["action"] == "terminated" && a["id"] == c["id"];
    }
    CHECK(adopted);
    CHECK(terminated);
    CHECK(cli.json({"instances", "list", "--provider", "vast"})["instances"].empty());
    // The first ledger still says "created": its sweep marks it gone.
    json mine = cli.json({"sweep", "--provider", "vast"})["actions"];
    REQUIRE(mine.size() == 1);
    CHECK(mine[0]["action"] == "gone");
}

TEST_CASE("init: writes a 0600 config from the environment, the broker then uses it") {
    tests::Emulator emu("runpod", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    json w = cli.json({"init"});
    CHECK(w["providers"][0] == "runpod");
    CHECK(cli.run({"init"}).exit_code == 2);  // no silent overwrite
    Cli fresh;  // no env keys, only the file
    fresh.set("BROKER_CONFIG", cli.dir() / "broker.yaml");
    CHECK(!fresh.json({"search", "--provider", "runpod"}).empty());
    ::chmod((cli.dir() / "broker.yaml").c_str(), 0644);
    CHECK(fresh.run({"search", "--provider", "runpod"}).exit_code == 3);
}

TEST_CASE("readiness: a machine that never becomes reachable is terminated, not left behind (exit 7)") {
    tests::SshdFixture sshd;
    tests::Emulator emu("runpod", {.api_key = kKey});
    back_with_sshd(emu, sshd, 1);
    Cli cli;
    cli.use(emu);
    emu.inject({{"kind", "runtime_null"}, {"polls", 100000}, {"match", {{"operation", "podFindAndDeployOnDemand"}}}});
    auto r = cli.run({"--json", "create", "--provider", "runpod", "--gpus", "1", "--ssh-key", sshd.client_key(),
                      "--no-gpu-check", "--ready-timeout", "2s"});
    CHECK(r.exit_code == 7);
    json err = json::parse(r.err.substr(r.err.rfind("{\"error\"")));
    CHECK(err["error"]["stage"] == "provider");
    CHECK(err["error"].contains("terminated"));
    CHECK(count_requests(emu, "terminate") >= 1);
    CHECK(cli.json({"instances", "list", "--provider", "runpod"})["instances"].empty());
}

TEST_CASE("readiness: the GPU check compares nvidia-smi with the offer, a mismatch terminates (exit 8)") {
    tests::SshdFixture sshd;
    tests::Emulator emu("vast", {.api_key = kKey});
    back_with_sshd(emu, sshd, 1);
    Cli cli;
    cli.use(emu);
    // The test machine's sshd has no GPUs (or not the offer's): the check must fail, not pass silently.
    auto r = cli.run({"create", "--provider", "vast", "--gpu", "h100", "--gpus", "8", "--ssh-key", sshd.client_key(),
                      "--ready-timeout", "30s"});
    CHECK(r.exit_code == 8);
    CHECK(r.err.find("GPU check failed") != std::string::npos);
    CHECK(cli.json({"instances", "list", "--provider", "vast"})["instances"].empty());
}

TEST_CASE("ledger: a crash between the provider's create and our record cannot hide the instance") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    json rows = cli.json({"search", "--provider", "vast", "--gpu", "4090", "--gpus", "1"});
    REQUIRE(!rows.empty());
    const std::string name = "tk-crash1-main-dl4000000000";
    {
        // What `broker create` writes before calling the provider; then it "crashed".
        broker::Ledger ledger(cli.dir() / "ledger.sqlite");
        broker::LedgerEntry e;
        e.name = name;
        e.provider = "vast";
        e.run_id = "crash1";
        e.deadline_unix = 4000000000;
        e.offer_id = rows[0]["offer_id"];
        ledger.record_intent(e);
    }
    // The provider did create it (the answer was lost with the process).
    auto reply = tests::http_call(emu.port(), "PUT", "/api/v0/asks/" + rows[0]["offer_id"].get<std::string>() + "/",
                                  json({{"client_id", "me"}, {"image", "x"}, {"disk", 10}, {"label", name}}).dump(),
                                  {{"Authorization", std::string("Bearer ") + kKey}, {"Content-Type", "application/json"}});
    REQUIRE(reply.status == 200);
    std::string id = std::to_string(reply.json()["new_contract"].get<long long>());
    json actions = cli.json({"sweep", "--provider", "vast"})["actions"];
    bool recorded = false;
    for (const auto & a : actions) recorded |= a["action"] == "recorded" && a["id"] == id;
    CHECK(recorded);
    // Now a bare id resolves through the ledger, and terminate proves it.
    CHECK(cli.json({"instances", "terminate", id, "--yes"})[0]["proven"] == true);
}

TEST_CASE("sweep: deadlines are enforced on runpod, lambda and primeintellect too") {
    std::vector<std::unique_ptr<tests::Emulator>> emus;
    Cli cli;
    common::generate_ed25519_key(cli.dir() / "id", "t");
    std::map<std::string, std::string> ids;
    const std::map<std::string, std::string> gpu = {{"runpod", "4090"}, {"lambda", "a10"}, {"primeintellect", "4090"}};
    for (const auto & [p, g] : gpu) {
        emus.push_back(std::make_unique<tests::Emulator>(p, tests::EmulatorOptions{.api_key = kKey}));
        emus.back()->configure({{"boot_polls", 1}});
        cli.use(*emus.back());
        json c = cli.json({"create", "--provider", p, "--gpu", g, "--ssh-key", cli.dir() / "id", "--no-wait",
                           "--max-lifetime", "1s"});
        ids[p] = c["id"];
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    json actions = cli.json({"sweep", "--provider", "runpod", "--provider", "lambda", "--provider", "primeintellect"})["actions"];
    for (const auto & [p, id] : ids) {
        bool terminated = false;
        // RunPod enforces terminateAfter itself: by the sweep the pod may already be gone (ledger: "gone").
        for (const auto & a : actions)
            terminated |= a["provider"] == p && a["id"] == id &&
                          (a["action"] == "terminated" || (p == "runpod" && a["action"] == "gone"));
        INFO(p);
        CHECK(terminated);
    }
    CHECK(cli.json({"instances", "list", "--provider", "runpod", "--provider", "lambda", "--provider", "primeintellect"})["instances"].empty());
}

TEST_CASE("faults vast: a create accepted but not readable back still returns its id, ledger and all") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    // Every read of the new contract and every listing fails (after the client's own retries): the
    // id from the create's answer is all there is, and it must not be dropped.
    emu.inject({{"kind", "http_status"}, {"status", 503}, {"match", {{"action", "get"}}}, {"count", 99}});
    emu.inject({{"kind", "http_status"}, {"status", 503}, {"match", {{"action", "list"}}}, {"count", 99}});
    auto r = cli.run({"--json", "create", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--ssh-key", cli.dir() / "id",
                      "--no-wait"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const std::string id = json::parse(r.out)["id"].get<std::string>();
    CHECK(r.err.find("keeping it as pending") != std::string::npos);
    broker::Ledger ledger(cli.dir() / "ledger.sqlite");
    bool recorded = false;
    for (const auto & e : ledger.open_entries()) recorded |= e.instance_id == id && e.state == "created";
    CHECK(recorded);
    emu.reset();
    CHECK(cli.json({"instances", "terminate", "vast:" + id, "--yes"})[0]["proven"] == true);
}

TEST_CASE("faults vast: a create whose answer is lost while listings fail is leak risk (exit 10), the intent kept for sweep") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    emu.inject({{"kind", "drop_connection"}, {"match", {{"action", "create"}}}, {"count", 1}});
    emu.inject({{"kind", "http_status"}, {"status", 503}, {"match", {{"action", "list"}}}, {"count", 999}});
    auto r = cli.run({"create", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--ssh-key", cli.dir() / "id", "--no-wait"});
    INFO(r.err);
    CHECK(r.exit_code == 10);
    CHECK(r.err.find("broker sweep") != std::string::npos);
    CHECK(count_requests(emu, "create") == 1);  // not resent
    broker::Ledger ledger(cli.dir() / "ledger.sqlite");
    auto open = ledger.open_entries();
    REQUIRE(open.size() == 1);
    CHECK(open[0].state == "intent");
}

TEST_CASE("faults: a 5xx or a non-JSON answer to a create is never no-capacity, whatever its text: looked up by name, no second rent") {
    struct Case {
        std::string provider;
        json fault;
        std::vector<std::string> filters;
    };
    const std::vector<Case> cases = {
        {"vast", {{"kind", "http_status"}, {"status", 503}, {"message", "Service Unavailable"}}, {"--gpu", "4090"}},
        {"primeintellect", {{"kind", "http_status"}, {"status", 503}, {"body", {{"detail", "Service Unavailable"}}}}, {"--gpu", "4090"}},
        {"lambda", {{"kind", "http_status"}, {"status", 503},
                    {"body", {{"error", {{"code", "instance-operations/launch/insufficient-capacity"},
                                         {"message", "Not enough capacity available"}}}}}}, {"--gpu", "a10"}},
        // A proxy's page instead of the API's JSON refusal, at a 4xx that would otherwise read as capacity.
        {"vast", {{"kind", "http_status"}, {"status", 404}, {"body", "<html>not available</html>"}}, {"--gpu", "4090"}},
    };
    for (const auto & c : cases) {
        tests::Emulator emu(c.provider, {.api_key = kKey});
        Cli cli;
        cli.use(emu);
        common::generate_ed25519_key(cli.dir() / "id", "t");
        json fault = c.fault;
        fault["match"] = {{"action", "create"}};
        fault["count"] = 10;
        emu.inject(fault);
        std::vector<std::string> args = {"create", "--provider", c.provider, "--gpus", "1", "--ssh-key", cli.dir() / "id",
                                         "--no-wait", "--max-attempts", "3"};
        args.insert(args.end(), c.filters.begin(), c.filters.end());
        auto r = cli.run(args);
        INFO(c.provider, " ", c.fault.dump(), ": ", r.err);
        CHECK(r.exit_code == 6);
        CHECK(count_requests(emu, "create") == 1);  // the next offer was not rented
        CHECK(count_requests(emu, "list") >= 1);    // the name was looked up instead
    }
}

TEST_CASE("faults primeintellect: ACTIVE with installation FAILED fails fast, DELETING is waited on without a second DELETE") {
    tests::Emulator emu("primeintellect", {.api_key = kKey});
    emu.configure({{"boot_polls", 1}});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    emu.inject({{"kind", "instance_failed"}, {"status", "ACTIVE"}, {"match", {{"action", "create"}}}});
    auto start = std::chrono::steady_clock::now();
    auto r = cli.run({"create", "--provider", "primeintellect", "--gpu", "4090", "--gpus", "1", "--ssh-key", cli.dir() / "id",
                      "--no-gpu-check", "--ready-timeout", "20s"});
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    INFO(r.err);
    CHECK(r.exit_code == 8);  // failed, not a 20 s wait ending in a timeout
    CHECK(took < 15);
    CHECK(emu.state()["instances"].empty());  // and terminated

    emu.reset();
    emu.configure({{"boot_polls", 1}, {"deleting_polls", 3}});
    json c = cli.json({"create", "--provider", "primeintellect", "--gpu", "4090", "--gpus", "1", "--ssh-key", cli.dir() / "id",
                       "--no-wait"});
    json t = cli.json({"instances", "terminate", "primeintellect:" + c["id"].get<std::string>(), "--yes"});
    CHECK(t[0]["proven"] == true);
    CHECK(count_requests(emu, "terminate") == 1);
}

TEST_CASE("faults lambda: a launch answered 429 without Retry-After is asked again after the launch rate limit, not at once") {
    tests::Emulator emu("lambda", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    emu.inject({{"kind", "http_status"}, {"status", 429}, {"match", {{"action", "create"}}}, {"count", 1}});
    json c = cli.json({"create", "--provider", "lambda", "--gpu", "a10", "--ssh-key", cli.dir() / "id", "--no-wait"});
    std::vector<double> at;
    const json state = emu.state();
    for (const auto & q : state["requests"])
        if (q.value("action", "") == "create") at.push_back(q["time"].get<double>());
    REQUIRE(at.size() == 2);
    CHECK(at[1] - at[0] >= 5.9);  // 12 s jittered ±50 %: at least 6 s (was 0.25-0.75 s)
    cli.json({"instances", "terminate", "lambda:" + c["id"].get<std::string>(), "--yes"});
}
