// The real `broker` program on what the providers answer (issue #11): transient GraphQL errors and
// malformed bodies are retried on reads only; "nothing is billing" and "could not ask" look
// different; enumerated filters refuse unknown values; RunPod offers carry their region; Vast spot
// rows include storage and prices show enough digits; show/ssh print the instance's own key;
// GraphQL text never carries values; hostile bodies are exit 6 naming the provider, never a crash.
#include <cstdio>

#include "common/sshd_server.h"
#include "tests/broker/cli_support.h"

#include <doctest/doctest.h>

using namespace broker_tests;
using json = nlohmann::json;

namespace {
std::string unreachable_url() { return "http://127.0.0.1:" + std::to_string(common::pick_free_port()); }

// The stderr line of a --json error, parsed (the last {"error": ...} object).
json json_error(const common::ProcessResult & r) {
    auto at = r.err.rfind("{\"error\"");
    REQUIRE(at != std::string::npos);
    return json::parse(r.err.substr(at));
}

std::string base64(const std::string & bytes) {
    static const char * t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (size_t i = 0; i < bytes.size(); i += 3) {
        unsigned v = static_cast<unsigned char>(bytes[i]) << 16;
        if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
        if (i + 2 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 2]);
        out += t[(v >> 18) & 63];
        out += t[(v >> 12) & 63];
        out += i + 1 < bytes.size() ? t[(v >> 6) & 63] : '=';
        out += i + 2 < bytes.size() ? t[v & 63] : '=';
    }
    return out;
}

json requests(tests::Emulator & emu, const std::string & action) {
    json out = json::array();
    const json state = emu.state();
    for (const auto & r : state["requests"])
        if (r.value("action", "") == action) out.push_back(r);
    return out;
}
}  // namespace

TEST_CASE("retries: a transient GraphQL error inside HTTP 200 is asked again on a search, a persistent one is exit 6") {
    tests::Emulator emu("runpod", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    emu.inject({{"kind", "graphql_error"}, {"message", "Something broke upstream"}, {"count", 2}});
    auto r = cli.run({"--json", "search", "--provider", "runpod", "--cloud", "secure", "--gpus", "1"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(!json::parse(r.out).empty());
    CHECK(count_requests(emu, "search") == 3);  // two errors, then the answer
    emu.reset();
    emu.inject({{"kind", "graphql_error"}, {"message", "Something broke upstream"}, {"count", 100}});
    r = cli.run({"search", "--provider", "runpod", "--cloud", "secure"});
    CHECK(r.exit_code == 6);
    CHECK(r.err.find("Something broke upstream") != std::string::npos);
    CHECK(r.err.find("after 4 attempts") != std::string::npos);
    CHECK(count_requests(emu, "search") == 4);  // bounded
    // A GraphQL error about the request itself (capacity, auth, bad input) is not transient: one try.
    emu.reset();
    emu.inject({{"kind", "graphql_error"}, {"message", "Unauthorized"}, {"code", "UNAUTHENTICATED"}, {"count", 100}});
    r = cli.run({"search", "--provider", "runpod", "--cloud", "secure"});
    CHECK(r.exit_code == 3);
    CHECK(count_requests(emu, "search") == 1);
}

TEST_CASE("retries: one malformed JSON body is asked again on search, list and show, never on a create") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    emu.inject({{"kind", "malformed_json"}, {"match", {{"action", "search"}}}, {"count", 1}});
    json rows = cli.json({"search", "--provider", "vast", "--gpu", "4090", "--gpus", "1"});
    CHECK(!rows.empty());
    CHECK(count_requests(emu, "search") == 2);
    json c = cli.json({"create", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--ssh-key", cli.dir() / "id", "--no-wait"});
    const std::string ref = "vast:" + c["id"].get<std::string>();
    emu.inject({{"kind", "malformed_json"}, {"match", {{"action", "list"}}}, {"count", 1}});
    CHECK(cli.json({"instances", "list", "--provider", "vast"})["instances"].size() == 1);
    emu.inject({{"kind", "malformed_json"}, {"match", {{"action", "get"}}}, {"count", 1}});
    CHECK(cli.json({"instances", "show", ref})["ref"] == ref);
    cli.json({"instances", "terminate", ref, "--yes"});
    // A create whose answer is garbled is not sent again: it is looked up by name (not found here,
    // because the emulator answered without processing it), so exit 6 after exactly one create.
    emu.reset();
    emu.inject({{"kind", "malformed_json"}, {"match", {{"action", "create"}}}, {"count", 1}});
    auto r = cli.run({"create", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--ssh-key", cli.dir() / "id", "--no-wait"});
    CHECK(r.exit_code == 6);
    CHECK(count_requests(emu, "create") == 1);
    CHECK(count_requests(emu, "list") >= 1);
}

TEST_CASE("listings: every provider unreachable is exit 6 with a warning each and failed_providers in --json") {
    Cli cli;
    cli.set("VAST_API_KEY", kKey);
    cli.set("VAST_BASE_URL", unreachable_url());
    cli.set("LAMBDA_API_KEY", kKey);
    cli.set("LAMBDA_BASE_URL", unreachable_url());
    for (const std::vector<std::string> & verb : {std::vector<std::string>{"instances", "list"}, {"sweep"}}) {
        std::vector<std::string> args = {"--json"};
        args.insert(args.end(), verb.begin(), verb.end());
        auto r = cli.run(args);
        INFO(verb[0], ": ", r.err);
        CHECK(r.exit_code == 6);
        CHECK(r.err.find("vast: skipped") != std::string::npos);
        CHECK(r.err.find("lambda: skipped") != std::string::npos);
        CHECK(json_error(r)["error"]["message"].get<std::string>().find("no provider answered") != std::string::npos);
        json out = json::parse(r.out);
        CHECK(out[verb[0] == "sweep" ? "actions" : "instances"].empty());
        REQUIRE(out["failed_providers"].size() == 2);
        for (const auto & f : out["failed_providers"]) {
            CHECK(f["kind"] == "network");
            CHECK(f["exit_code"] == 6);
        }
        // The table view exits the same way.
        CHECK(cli.run(verb).exit_code == 6);
    }
    // terminate --all must not say "nothing to terminate" when nothing could be asked.
    auto t = cli.run({"instances", "terminate", "--all", "--yes"});
    CHECK(t.exit_code == 6);
    CHECK(t.out.find("nothing to terminate") == std::string::npos);
}

TEST_CASE("listings: a partial answer exits 0 with a warning and the failure in --json, all answering shows none") {
    tests::Emulator runpod("runpod", {.api_key = kKey});
    Cli cli;
    cli.use(runpod);
    cli.set("VAST_API_KEY", kKey);
    cli.set("VAST_BASE_URL", unreachable_url());
    auto r = cli.run({"--json", "instances", "list"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    json out = json::parse(r.out);
    CHECK(out["instances"].empty());
    REQUIRE(out["failed_providers"].size() == 1);
    CHECK(out["failed_providers"][0]["provider"] == "vast");
    CHECK(r.err.find("vast: skipped") != std::string::npos);
    r = cli.run({"--json", "sweep"});
    CHECK(r.exit_code == 0);
    CHECK(json::parse(r.out)["failed_providers"].size() == 1);
    r = cli.run({"--json", "instances", "list", "--provider", "runpod"});
    CHECK(r.exit_code == 0);
    CHECK(json::parse(r.out)["failed_providers"].empty());
    CHECK(r.err.find("skipped") == std::string::npos);
}

TEST_CASE("filters: an unknown --manufacturer is exit 2 naming the value and the accepted ones, so are the other enumerations") {
    Cli cli;
    struct Case {
        std::vector<std::string> args;
        std::string value, accepted;
    };
    const std::vector<Case> cases = {
        {{"--manufacturer", "foo"}, "'foo'", "nvidia, amd"},
        {{"--cloud", "private"}, "'private'", "secure, community"},
        {{"--sort", "cheapest"}, "'cheapest'", "price, price-per-gpu, vram, value"},
        {{"--provider", "aws"}, "'aws'", "runpod, vast, lambda, primeintellect, local, ssh-hosts"},
    };
    for (const auto & c : cases) {
        std::vector<std::string> args = {"search", "--provider", "local"};
        if (c.args[0] == "--provider") args = {"search"};
        args.insert(args.end(), c.args.begin(), c.args.end());
        auto r = cli.run(args);
        INFO(c.args[0], ": ", r.err);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find(c.value) != std::string::npos);
        CHECK(r.err.find(c.accepted) != std::string::npos);
    }
    common::generate_ed25519_key(cli.dir() / "id", "t");
    CHECK(cli.run({"create", "--provider", "local", "--manufacturer", "foo", "--ssh-key", cli.dir() / "id"}).exit_code == 2);
    // Accepted spellings still work.
    CHECK(cli.run({"search", "--provider", "local", "--manufacturer", "NVIDIA"}).exit_code == 0);
    CHECK(cli.run({"search", "--provider", "local", "--cloud", "Secure"}).exit_code == 0);
}

TEST_CASE("regions: RunPod offers carry their data centre or country, --region filters them, create rents there") {
    tests::Emulator emu("runpod", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    json all = cli.json({"search", "--provider", "runpod", "--gpus", "1", "--limit", "0"});
    REQUIRE(!all.empty());
    for (const auto & o : all) CHECK(o["region"].is_string());
    json ro = cli.json({"search", "--provider", "runpod", "--gpus", "1", "--limit", "0", "--region", "romania"});
    REQUIRE(!ro.empty());
    for (const auto & o : ro) {
        CHECK(o["region"] == "EU-RO-1 (Romania)");
        CHECK(o["gpu_model"].get<std::string>().find("H200") == std::string::npos);  // not stocked there
    }
    CHECK(cli.json({"search", "--provider", "runpod", "--gpu", "h200", "--region", "romania"}).empty());
    json tx = cli.json({"search", "--provider", "runpod", "--gpu", "h200", "--region", "us-tx"});
    REQUIRE(tx.size() == 1);
    CHECK(tx[0]["region"] == "US-TX-3 (United States)");
    json community = cli.json({"search", "--provider", "runpod", "--cloud", "community", "--region", "RO", "--limit", "0"});
    REQUIRE(!community.empty());
    for (const auto & o : community) CHECK(o["cloud"] == "community");
    // create --region rents in that data centre: dataCenterId travels with the create.
    common::generate_ed25519_key(cli.dir() / "id", "t");
    json c = cli.json({"create", "--provider", "runpod", "--gpu", "4090", "--cloud", "secure", "--region", "romania",
                       "--ssh-key", cli.dir() / "id", "--no-wait"});
    json creates = requests(emu, "create");
    REQUIRE(creates.size() == 1);
    CHECK(creates[0]["body"]["variables"]["input"]["dataCenterId"] == "EU-RO-1");
    cli.json({"instances", "terminate", "runpod:" + c["id"].get<std::string>(), "--yes"});
}

TEST_CASE("graphql: search values travel as variables, never in the query text") {
    tests::Emulator emu("runpod", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    cli.json({"search", "--provider", "runpod", "--min-ram", "123", "--min-disk", "4567", "--gpus", "2"});
    json searches = requests(emu, "search");
    REQUIRE(!searches.empty());
    for (const auto & s : searches) {
        std::string q = s["body"]["query"];
        CHECK(q.find("123") == std::string::npos);
        CHECK(q.find("4567") == std::string::npos);
        CHECK(s["body"]["variables"]["lowestPrice"]["minMemoryInGb"] == 123);
        CHECK(s["body"]["variables"]["lowestPrice"]["minDisk"] == 4567);
        CHECK(s["body"]["variables"]["lowestPrice"]["gpuCount"] == 2);
    }
    // Renting by an id that is not a RunPod offer id is a usage error, and no query is sent for it.
    common::generate_ed25519_key(cli.dir() / "id", "t");
    const int before = count_requests(emu, "search");
    auto r = cli.run({"create", "--offer", "runpod:x/secure/2 }) { id", "--ssh-key", cli.dir() / "id"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("not a RunPod offer id") != std::string::npos);
    CHECK(count_requests(emu, "search") == before);
}

TEST_CASE("prices: Vast spot rows include storage like on-demand rows, the table shows four decimals") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    json od = cli.json({"search", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--limit", "1"});
    REQUIRE(od.size() == 1);
    const std::string id = od[0]["offer_id"];
    // The emulator's own record of that ask, at the storage the broker searches with (50 GB).
    auto reply = tests::http_call(emu.port(), "POST", "/api/v0/bundles/", json({{"allocated_storage", 50.0}}).dump(),
                                  {{"Authorization", std::string("Bearer ") + kKey}, {"Content-Type", "application/json"}});
    const json catalogue = reply.json();  // kept alive: range-for does not extend a temporary's member
    json ask;
    for (const auto & o : catalogue["offers"])
        if (std::to_string(o["id"].get<long long>()) == id) ask = o;
    REQUIRE(ask.is_object());
    const double storage = ask["dph_total"].get<double>() - ask["dph_base"].get<double>();
    CHECK(storage > 0.005);
    CHECK(od[0]["price_usd_per_hour_total"].get<double>() == doctest::Approx(ask["dph_total"].get<double>()));
    json spot = cli.json({"search", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--spot", "--limit", "0"});
    json row;
    for (const auto & o : spot)
        if (o["offer_id"] == id) row = o;
    REQUIRE(row.is_object());
    CHECK(row["price_usd_per_hour_total"].get<double>() == doctest::Approx(ask["min_bid"].get<double>() + storage));
    // The table shows the price to four decimals: storage-sized differences stay visible.
    auto table = cli.run({"search", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--limit", "1"});
    char want[32];
    std::snprintf(want, sizeof want, "%.4f", ask["dph_total"].get<double>());
    CHECK(table.out.find(want) != std::string::npos);
    // The spot create bids the machine's floor (storage is billed apart), not the row's total.
    common::generate_ed25519_key(cli.dir() / "id", "t");
    json c = cli.json({"create", "--offer", "vast:" + id, "--spot", "--ssh-key", cli.dir() / "id", "--no-wait"});
    json creates = requests(emu, "create");
    REQUIRE(creates.size() == 1);
    CHECK(creates[0]["body"]["price"].get<double>() == doctest::Approx(ask["min_bid"].get<double>()));
    cli.json({"instances", "terminate", "vast:" + c["id"].get<std::string>(), "--yes"});
}

TEST_CASE("keys: instances show, list and ssh --print name the key the instance was created with") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;  // BROKER_SSH_KEY points at <dir>/nokey: the default must not be what is printed
    cli.use(emu);
    const std::string key = cli.dir() / "run_key";
    common::generate_ed25519_key(key, "t");
    json c = cli.json({"create", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--ssh-key", key, "--no-wait"});
    const std::string ref = "vast:" + c["id"].get<std::string>();
    json shown = cli.json({"instances", "show", ref});
    CHECK(shown["ssh_command"].get<std::string>().find("-i " + key + " ") != std::string::npos);
    json listed = cli.json({"instances", "list", "--provider", "vast"})["instances"];
    REQUIRE(listed.size() == 1);
    CHECK(listed[0]["ssh_command"].get<std::string>().find("-i " + key + " ") != std::string::npos);
    auto printed = cli.run({"instances", "ssh", ref, "--print"});
    CHECK(printed.out.find("-i " + key + " ") != std::string::npos);
    CHECK(printed.out.find("nokey") == std::string::npos);
    // --ssh-key still wins.
    printed = cli.run({"instances", "ssh", ref, "--print", "--ssh-key", "/other/key"});
    CHECK(printed.out.find("-i /other/key ") != std::string::npos);
    // An instance the ledger does not know (adopted elsewhere) falls back to the default key.
    Cli other;
    other.use(emu);
    CHECK(other.json({"instances", "show", ref})["ssh_command"].get<std::string>().find("nokey") != std::string::npos);
    cli.json({"instances", "terminate", ref, "--yes"});
}

TEST_CASE("hostile bodies: huge numbers, wrong types, deep nesting, giant arrays, binary junk are exit 6 naming the provider") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    std::string giant = "{\"offers\": [0";
    for (int i = 0; i < 20000; ++i) giant += ",0";
    giant += "]}";
    const std::vector<std::pair<std::string, std::string>> bodies = {
        {"huge number", R"({"offers": [{"id": 1, "num_gpus": 1e300, "dph_total": 1, "gpu_name": "RTX 4090"}]})"},
        {"number beyond double", R"({"offers": [{"id": 1, "dph_total": 1e999}]})"},
        {"wrong type", R"({"offers": {"id": 1}})"},
        {"wrong field type", R"({"offers": [{"id": 1, "rentable": "yes", "dph_total": 1}]})"},
        {"deep nesting", std::string(200000, '[') + std::string(200000, ']')},
        {"giant array", giant},
        {"binary junk", std::string("\xff\xfe\x00\x01 not json", 13)},
        {"truncated UTF-8 in a string", std::string("{\"offers\": [{\"gpu_name\": \"\xc3\"}]}")},
    };
    for (const auto & [what, body] : bodies) {
        emu.reset();
        emu.inject({{"kind", "http_status"}, {"status", 200}, {"body_base64", base64(body)}, {"count", 10}});
        auto r = cli.run({"--json", "search", "--provider", "vast"});
        INFO(what, ": ", r.err.substr(0, 400));
        CHECK(r.exit_code == 6);
        json err = json_error(r);  // parses: the message is valid UTF-8 whatever the body was
        CHECK(err["error"]["kind"] == "network");
        CHECK(err["error"]["provider"] == "vast");
    }
    // A 500 whose body is not UTF-8: the --json error is still valid JSON (it used to abort).
    emu.reset();
    emu.inject({{"kind", "http_status"}, {"status", 500}, {"body_base64", base64("\xff\xfe oops")}, {"count", 10}});
    auto r = cli.run({"--json", "instances", "list", "--provider", "vast"});
    CHECK(r.exit_code == 6);
    CHECK(json_error(r)["error"]["provider"] == "vast");
}

TEST_CASE("vast: --offer vast:N rents N even when it is not among the cheapest rows, and --gpu looks past them") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    json rows = cli.json({"search", "--provider", "vast", "--gpu", "h100", "--gpus", "1"});
    REQUIRE(!rows.empty());
    const std::string id = rows[0]["offer_id"];
    // 300 cheaper asks than any H100: more than one page of the cheapest rows.
    emu.configure({{"filler_offers", 300}});
    rows = cli.json({"search", "--provider", "vast", "--gpu", "h100", "--gpus", "1"});
    CHECK(!rows.empty());
    auto r = cli.run({"--json", "create", "--offer", "vast:" + id, "--ssh-key", cli.dir() / "id", "--no-wait"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(json::parse(r.out)["offer_id"] == id);
    json searches = requests(emu, "search");
    CHECK(searches.back()["body"]["id"]["eq"] == id);
    cli.json({"instances", "terminate", "vast:" + json::parse(r.out)["id"].get<std::string>(), "--yes"});
    // An id that is not an ask number is refused before anything is asked.
    auto bad = cli.run({"create", "--offer", "vast:abc", "--ssh-key", cli.dir() / "id", "--no-wait"});
    CHECK(bad.exit_code == 2);
}

TEST_CASE("vast: --gpu h100 finds the H100s behind more than 1000 cheaper asks of other cards") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    // 1500 RTX 3060 asks cheaper than any H100: the 1000 cheapest rows hold no H100 at all.
    emu.configure({{"filler_offers", 1500}});
    auto r = cli.run({"--json", "search", "--provider", "vast", "--gpu", "h100", "--gpus", "1"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    json rows = json::parse(r.out);
    REQUIRE(!rows.empty());
    for (const auto & row : rows) CHECK(row["gpu_model"] == "H100 SXM");
    CHECK(r.err.find("1000 cheapest") == std::string::npos);  // pushed: nothing to warn about
    json body = requests(emu, "search").back()["body"];
    CHECK(body["gpu_name"]["in"] == json::array({"H100 PCIE", "H100 SXM", "H100 NVL"}));
    CHECK(body["limit"] == 200);
    // A card with no known Vast name is still searched, the old way, and the user is told the
    // answer may be incomplete: here the MI300X asks lie beyond the 1000 cheapest rows.
    auto unknown = cli.run({"--json", "search", "--provider", "vast", "--gpu", "mi300x"});
    INFO(unknown.err);
    CHECK(unknown.exit_code == 0);
    CHECK(json::parse(unknown.out).empty());
    CHECK(unknown.err.find("--gpu mi300x matches no gpu_name") != std::string::npos);
    CHECK(unknown.err.find("1000 cheapest") != std::string::npos);
    body = requests(emu, "search").back()["body"];
    CHECK_FALSE(body.contains("gpu_name"));
    CHECK(body["limit"] == 1000);
    // With fewer cheaper asks the fallback finds them, still warning.
    emu.configure({{"filler_offers", 300}});
    unknown = cli.run({"--json", "search", "--provider", "vast", "--gpu", "mi300x"});
    CHECK(unknown.exit_code == 0);
    CHECK(!json::parse(unknown.out).empty());
    CHECK(unknown.err.find("--gpu mi300x matches no gpu_name") != std::string::npos);
}

TEST_CASE("vast: --min-vram 48 keeps the L40S (46068 MiB) and 141 the H200 (143771 MiB) that the server admitted") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    json l40s = cli.json({"search", "--provider", "vast", "--gpu", "l40s", "--min-vram", "48", "--gpus", "1"});
    REQUIRE(!l40s.empty());
    CHECK(l40s[0]["vram_gb_per_gpu"] == 48);  // the nominal size, as the other clouds state it
    CHECK(!cli.json({"search", "--provider", "vast", "--gpu", "h200", "--min-vram", "141", "--gpus", "1"}).empty());
    // A floor above the card still excludes it.
    CHECK(cli.json({"search", "--provider", "vast", "--gpu", "4090", "--min-vram", "32", "--gpus", "1"}).empty());
}

TEST_CASE("vast: --max-price holds for the disk a create rents (dph_total includes storage at allocated_storage)") {
    tests::Emulator emu("vast", {.api_key = kKey});
    Cli cli;
    cli.use(emu);
    common::generate_ed25519_key(cli.dir() / "id", "t");
    // The cheapest verified 4090 is about $0.57/h with 50 GB and $0.98/h with 2000 GB of storage.
    json rows = cli.json({"search", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--max-price", "0.7"});
    REQUIRE(!rows.empty());
    auto r = cli.run({"create", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--max-price", "0.7", "--disk", "2000",
                      "--ssh-key", cli.dir() / "id", "--no-wait"});
    INFO(r.err);
    CHECK(r.exit_code == 4);
    CHECK(count_requests(emu, "create") == 0);
    CHECK(requests(emu, "search").back()["body"]["allocated_storage"] == 2000);
    // A disk the price allows is rented, and priced at that disk.
    auto ok = cli.run({"--json", "create", "--provider", "vast", "--gpu", "4090", "--gpus", "1", "--max-price", "0.7",
                       "--disk", "100", "--ssh-key", cli.dir() / "id", "--no-wait"});
    INFO(ok.err);
    REQUIRE(ok.exit_code == 0);
    CHECK(requests(emu, "search").back()["body"]["allocated_storage"] == 100);
    cli.json({"instances", "terminate", "vast:" + json::parse(ok.out)["id"].get<std::string>(), "--yes"});
}

TEST_CASE("listings: a Vast or Prime listing that never ends is an error, never a partial list read as complete") {
    {
        tests::Emulator emu("vast", {.api_key = kKey});
        Cli cli;
        cli.use(emu);
        // Every page names one instance that is not ours and a next page, forever.
        json page = {{"instances", json::array({{{"id", 1}, {"label", "someone-else"}, {"actual_status", "running"}}})},
                     {"next_token", "more"}};
        emu.inject({{"kind", "http_status"}, {"status", 200}, {"body", page}, {"match", {{"action", "list"}}}, {"count", 1000}});
        auto r = cli.run({"--json", "instances", "list", "--provider", "vast"});
        INFO(r.err);
        CHECK(r.exit_code == 6);
        CHECK(r.err.find("partial") != std::string::npos);
    }
    {
        tests::Emulator emu("primeintellect", {.api_key = kKey});
        Cli cli;
        cli.use(emu);
        json pods = json::array();
        for (int i = 0; i < 100; ++i) pods.push_back({{"id", "p" + std::to_string(i)}, {"name", "someone-else"}});
        json page = {{"total_count", 1000000}, {"data", pods}};
        emu.inject({{"kind", "http_status"}, {"status", 200}, {"body", page}, {"match", {{"action", "list"}}}, {"count", 1000}});
        auto r = cli.run({"--json", "instances", "list", "--provider", "primeintellect"});
        INFO(r.err);
        CHECK(r.exit_code == 6);
        CHECK(r.err.find("partial") != std::string::npos);
    }
}
