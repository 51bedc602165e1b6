// Tests of the provider API emulators (tests/emulators/) through the C++ launcher
// (tests/support/emulator.h): each emulator starts, serves offers in its provider's documented
// shape, runs the create -> poll -> running (SSH endpoint) -> terminate lifecycle, answers auth
// failures in the provider's shape, records requests, and fires every fault kind exactly `count`
// times. These pin the contract the broker's provider clients are written against.
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/emulator.h"
#include "tests/support/sshd_fixture.h"

#include <doctest/doctest.h>

namespace {

using json = nlohmann::json;
using tests::Emulator;
using tests::HttpReply;

const std::string kKey = "emulator-test-key";

HttpReply api(Emulator & e, const std::string & method, const std::string & target, const json & body = nullptr,
              const std::string & key = kKey) {
    std::vector<std::pair<std::string, std::string>> headers = {{"Content-Type", "application/json"}};
    if (!key.empty()) headers.emplace_back("Authorization", "Bearer " + key);
    return tests::http_call(e.port(), method, target, body.is_null() ? std::string() : body.dump(), headers);
}

HttpReply gql(Emulator & e, const std::string & query, const json & variables = json::object(),
              const std::string & key = kKey) {
    return api(e, "POST", "/graphql", json{{"query", query}, {"variables", variables}}, key);
}

struct Endpoint {
    std::string host;
    int port = 0;
    std::string user;
};

// One provider's verbs over raw HTTP, so the generic lifecycle/fault tests run against all four.
struct Driver {
    std::string provider;
    json create_match;                                                       // fault match for create
    json terminate_match;                                                    // fault match for terminate
    std::function<HttpReply(Emulator &)> search;
    std::function<bool(const json &, const std::string &)> offer_listed;     // search body lists offer?
    std::string offer_id;                                                    // the offer create() rents
    std::function<HttpReply(Emulator &)> create;
    std::function<std::string(const HttpReply &)> created_id;                // "" when the create failed
    std::function<bool(const HttpReply &)> is_capacity_error;
    std::function<HttpReply(Emulator &, const std::string &)> get;
    std::function<bool(const HttpReply &)> gone;
    std::function<bool(const HttpReply &)> failed;                           // provider's failed state
    std::function<std::optional<Endpoint>(const HttpReply &)> endpoint;      // set once ready for SSH
    std::function<HttpReply(Emulator &, const std::string &)> terminate;
    std::function<std::vector<std::string>(Emulator &)> list_ids;
    std::function<bool(const HttpReply &)> is_auth_error;
};

const char * kRunPodCreate =
    "mutation Create($input: PodFindAndDeployOnDemandInput!) { podFindAndDeployOnDemand(input: $input) "
    "{ id desiredStatus costPerHr machine { podHostId } } }";
const char * kRunPodGet =
    "query Pod($id: String!) { pod(input: {podId: $id}) { id name desiredStatus costPerHr "
    "runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } } } }";

Driver runpod_driver() {
    Driver d;
    d.provider = "runpod";
    d.create_match = {{"operation", "podFindAndDeployOnDemand"}};
    d.terminate_match = {{"operation", "podTerminate"}};
    d.offer_id = "NVIDIA H100 80GB HBM3";
    d.search = [](Emulator & e) {
        return gql(e, "{ gpuTypes { id displayName lowestPrice(input: {gpuCount: 1, secureCloud: true}) "
                      "{ uninterruptablePrice stockStatus } } }");
    };
    d.offer_listed = [](const json & body, const std::string & id) {
        for (const auto & g : body["data"]["gpuTypes"])
            if (g["id"] == id) return !g["lowestPrice"]["stockStatus"].is_null();
        return false;
    };
    d.create = [](Emulator & e) {
        json input = {{"gpuTypeId", "NVIDIA H100 80GB HBM3"}, {"gpuCount", 1}, {"cloudType", "SECURE"},
                      {"name", "toolkit-t1-worker"}, {"imageName", "runpod/pytorch:2.4.0"},
                      {"supportPublicIp", true}, {"ports", "22/tcp"}, {"startSsh", true},
                      {"containerDiskInGb", 50}, {"terminateAfter", "2099-01-01T00:00:00Z"},
                      {"env", json::array({{{"key", "RUN_ID"}, {"value", "t1"}}})}};
        return gql(e, kRunPodCreate, {{"input", input}});
    };
    d.created_id = [](const HttpReply & r) -> std::string {
        json b = r.json();
        if (r.status != 200 || b.contains("errors")) return "";
        return b["data"]["podFindAndDeployOnDemand"]["id"];
    };
    d.is_capacity_error = [](const HttpReply & r) {
        json b = r.json();
        return r.status == 200 && b["data"].is_null() && b["errors"][0]["extensions"]["code"] == "SUPPLY_CONSTRAINT" &&
               b["errors"][0]["message"].get<std::string>().find("no longer any instances available") != std::string::npos;
    };
    d.get = [](Emulator & e, const std::string & id) { return gql(e, kRunPodGet, {{"id", id}}); };
    d.gone = [](const HttpReply & r) { return r.status == 200 && r.json()["data"]["pod"].is_null(); };
    d.failed = [](const HttpReply & r) { return r.json()["data"]["pod"]["desiredStatus"] == "DEAD"; };
    d.endpoint = [](const HttpReply & r) -> std::optional<Endpoint> {
        json pod = r.json()["data"]["pod"];
        if (pod.is_null() || pod["runtime"].is_null()) return std::nullopt;
        for (const auto & p : pod["runtime"]["ports"])
            if (p["privatePort"] == 22 && p["isIpPublic"] == true && p["type"] == "tcp")
                return Endpoint{p["ip"], p["publicPort"], "root"};
        return std::nullopt;
    };
    d.terminate = [](Emulator & e, const std::string & id) {
        return gql(e, "mutation { podTerminate(input: {podId: \"" + id + "\"}) }");
    };
    d.list_ids = [](Emulator & e) {
        std::vector<std::string> ids;
        json body = gql(e, "{ myself { pods { id } } }").json();  // keep the document alive while iterating
        for (const auto & p : body["data"]["myself"]["pods"]) ids.push_back(p["id"]);
        return ids;
    };
    d.is_auth_error = [](const HttpReply & r) { return r.status == 401 && r.json().contains("errors"); };
    return d;
}

Driver vast_driver() {
    Driver d;
    d.provider = "vast";
    d.create_match = {{"method", "PUT"}, {"path_prefix", "/api/v0/asks/"}};
    d.terminate_match = {{"method", "DELETE"}, {"path_prefix", "/api/v0/instances/"}};
    d.search = [](Emulator & e) {
        return api(e, "POST", "/api/v0/bundles/",
                   {{"gpu_name", {{"eq", "RTX 4090"}}}, {"num_gpus", {{"eq", "1"}}}, {"rentable", {{"eq", true}}},
                    {"rented", {{"eq", false}}}, {"order", json::array({json::array({"dph_total", "asc"})})},
                    {"type", "on-demand"}, {"allocated_storage", 20}});
    };
    // The cheapest 1x RTX 4090 ask (deterministic catalogue; seed 0).
    d.offer_listed = [](const json & body, const std::string & id) {
        for (const auto & o : body["offers"])
            if (std::to_string(o["id"].get<long>()) == id) return true;
        return false;
    };
    d.create = [](Emulator & e) {
        // Rent the cheapest free 1x RTX 4090 ask: asks can be rented once, so look it up each time.
        json offers = api(e, "POST", "/api/v0/bundles/",
                          {{"gpu_name", {{"eq", "RTX 4090"}}}, {"num_gpus", {{"eq", "1"}}}, {"rented", {{"eq", false}}},
                           {"order", json::array({json::array({"dph_total", "asc"})})}})
                          .json()["offers"];
        long ask = offers.empty() ? 1 : offers[0]["id"].get<long>();
        return api(e, "PUT", "/api/v0/asks/" + std::to_string(ask) + "/",
                   {{"client_id", "me"}, {"image", "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"}, {"env", json::object()},
                    {"price", nullptr}, {"disk", 40}, {"label", "toolkit-t1-worker"}, {"onstart", "echo hi"},
                    {"runtype", "ssh"}});
    };
    d.created_id = [](const HttpReply & r) -> std::string {
        json b = r.json();
        if (r.status != 200 || !b.value("success", false)) return "";
        return std::to_string(b["new_contract"].get<long>());
    };
    d.is_capacity_error = [](const HttpReply & r) {
        json b = r.json();
        return r.status == 404 && b["success"] == false && b["error"] == "no_such_ask";
    };
    d.get = [](Emulator & e, const std::string & id) { return api(e, "GET", "/api/v0/instances/" + id + "/?owner=me"); };
    d.gone = [](const HttpReply & r) { return r.status == 200 && r.json()["instances"].is_null(); };
    d.failed = [](const HttpReply & r) { return r.json()["instances"]["actual_status"] == "exited"; };
    d.endpoint = [](const HttpReply & r) -> std::optional<Endpoint> {
        json i = r.json()["instances"];
        if (i.is_null() || i["actual_status"] != "running" || !i["ports"].contains("22/tcp")) return std::nullopt;
        return Endpoint{i["public_ipaddr"], std::stoi(i["ports"]["22/tcp"][0]["HostPort"].get<std::string>()), "root"};
    };
    d.terminate = [](Emulator & e, const std::string & id) {
        return api(e, "DELETE", "/api/v0/instances/" + id + "/", json::object());
    };
    d.list_ids = [](Emulator & e) {
        std::vector<std::string> ids;
        json body = api(e, "GET", "/api/v0/instances/?owner=me").json();
        for (const auto & i : body["instances"])
            ids.push_back(std::to_string(i["id"].get<long>()));
        return ids;
    };
    d.is_auth_error = [](const HttpReply & r) { return r.status == 401 && r.json()["success"] == false; };
    return d;
}

Driver lambda_driver() {
    Driver d;
    d.provider = "lambda";
    d.create_match = {{"path", "/api/v1/instance-operations/launch"}};
    d.terminate_match = {{"path", "/api/v1/instance-operations/terminate"}};
    d.offer_id = "gpu_1x_h100_sxm5";
    d.search = [](Emulator & e) { return api(e, "GET", "/api/v1/instance-types"); };
    d.offer_listed = [](const json & body, const std::string & id) {
        return body["data"].contains(id) && !body["data"][id]["regions_with_capacity_available"].empty();
    };
    d.create = [](Emulator & e) {
        return api(e, "POST", "/api/v1/instance-operations/launch",
                   {{"region_name", "us-south-1"}, {"instance_type_name", "gpu_1x_h100_sxm5"},
                    {"ssh_key_names", {"emulator-key"}}, {"quantity", 1}, {"name", "toolkit-t1-worker"}});
    };
    d.created_id = [](const HttpReply & r) -> std::string {
        if (r.status != 200) return "";
        json ids = r.json()["data"]["instance_ids"];
        return ids.empty() ? "" : ids[0].get<std::string>();
    };
    d.is_capacity_error = [](const HttpReply & r) {
        return r.status == 400 && r.json()["error"]["code"] == "instance-operations/launch/insufficient-capacity";
    };
    d.get = [](Emulator & e, const std::string & id) { return api(e, "GET", "/api/v1/instances/" + id); };
    d.gone = [](const HttpReply & r) {
        return r.status == 404 && r.json()["error"]["code"] == "global/object-does-not-exist";
    };
    d.failed = [](const HttpReply & r) { return r.json()["data"]["status"] == "unhealthy"; };
    d.endpoint = [](const HttpReply & r) -> std::optional<Endpoint> {
        json i = r.json()["data"];
        if (i["status"] != "active" || i["ip"].is_null()) return std::nullopt;
        return Endpoint{i["ip"], i.value("x_emulator_ssh_port", 22), "ubuntu"};
    };
    d.terminate = [](Emulator & e, const std::string & id) {
        return api(e, "POST", "/api/v1/instance-operations/terminate", {{"instance_ids", {id}}});
    };
    d.list_ids = [](Emulator & e) {
        std::vector<std::string> ids;
        json body = api(e, "GET", "/api/v1/instances").json();
        for (const auto & i : body["data"])
            if (i["status"] != "terminating") ids.push_back(i["id"]);
        return ids;
    };
    d.is_auth_error = [](const HttpReply & r) {
        return r.status == 401 && r.json()["error"]["code"] == "global/invalid-api-key";
    };
    return d;
}

Driver prime_driver() {
    Driver d;
    d.provider = "primeintellect";
    d.create_match = {{"method", "POST"}, {"path_prefix", "/api/v1/pods"}};
    d.terminate_match = {{"method", "DELETE"}, {"path_prefix", "/api/v1/pods/"}};
    d.offer_id = "1H100.80S.30V";
    d.search = [](Emulator & e) { return api(e, "GET", "/api/v1/availability/gpus?gpu_type=H100_80GB&page=1&page_size=100"); };
    d.offer_listed = [](const json & body, const std::string & id) {
        for (const auto & o : body["items"])
            if (o["cloudId"] == id) return true;
        return false;
    };
    d.create = [](Emulator & e) {
        return api(e, "POST", "/api/v1/pods/",
                   {{"pod", {{"name", "toolkit-t1-worker"}, {"cloudId", "1H100.80S.30V"}, {"gpuType", "H100_80GB"},
                             {"socket", "SXM5"}, {"gpuCount", 1}, {"image", "ubuntu_22_cuda_12"},
                             {"dataCenterId", "FIN-01"}, {"security", "secure_cloud"},
                             {"envVars", json::array({{{"key", "RUN_ID"}, {"value", "t1"}}})}}},
                    {"provider", {{"type", "datacrunch"}}}});
    };
    d.created_id = [](const HttpReply & r) -> std::string {
        return r.status == 200 ? r.json()["id"].get<std::string>() : "";
    };
    d.is_capacity_error = [](const HttpReply & r) {
        return r.status == 400 && r.json()["detail"].get<std::string>().find("no longer available") != std::string::npos;
    };
    d.get = [](Emulator & e, const std::string & id) { return api(e, "GET", "/api/v1/pods/" + id); };
    d.gone = [](const HttpReply & r) { return r.status == 404 && r.json()["detail"] == "Pod not found"; };
    d.failed = [](const HttpReply & r) { return r.json()["status"] == "ERROR"; };
    d.endpoint = [](const HttpReply & r) -> std::optional<Endpoint> {
        json p = r.json();
        if (p["status"] != "ACTIVE" || p["installationStatus"] != "FINISHED" || !p["sshConnection"].is_string())
            return std::nullopt;
        std::string s = p["sshConnection"];  // "user@host -p port"
        size_t at = s.find('@'), dash = s.find(" -p ");
        return Endpoint{s.substr(at + 1, dash - at - 1), std::stoi(s.substr(dash + 4)), s.substr(0, at)};
    };
    d.terminate = [](Emulator & e, const std::string & id) { return api(e, "DELETE", "/api/v1/pods/" + id); };
    d.list_ids = [](Emulator & e) {
        std::vector<std::string> ids;
        json body = api(e, "GET", "/api/v1/pods?offset=0&limit=100").json();
        for (const auto & p : body["data"]) ids.push_back(p["id"]);
        return ids;
    };
    d.is_auth_error = [](const HttpReply & r) { return r.status == 401 && r.json()["detail"] == "Authorization failed"; };
    return d;
}

std::vector<Driver> all_drivers() { return {runpod_driver(), vast_driver(), lambda_driver(), prime_driver()}; }

// Polls get() until the SSH endpoint appears; returns it and how many polls it took.
std::pair<Endpoint, int> poll_until_ready(Emulator & e, const Driver & d, const std::string & id, int max_polls = 10) {
    for (int poll = 1; poll <= max_polls; ++poll) {
        HttpReply r = d.get(e, id);
        REQUIRE(r.status == 200);
        if (auto ep = d.endpoint(r)) return {*ep, poll};
    }
    FAIL("instance " << id << " not ready after " << max_polls << " polls");
    return {};
}

void check_lifecycle(const Driver & d) {
    INFO("provider " << d.provider);
    Emulator e(d.provider, {.api_key = kKey});
    e.configure({{"ssh_host", "127.0.0.1"}, {"ssh_port", 42022}, {"boot_polls", 3}});
    HttpReply offers = d.search(e);
    REQUIRE(offers.status == 200);
    HttpReply created = d.create(e);
    std::string id = d.created_id(created);
    REQUIRE_MESSAGE(!id.empty(), created.body);
    // Not ready for exactly boot_polls observations, ready on the next one.
    auto [ep, polls] = poll_until_ready(e, d, id);
    CHECK(polls == 4);
    CHECK(ep.host == "127.0.0.1");
    CHECK(ep.port == 42022);
    CHECK(d.list_ids(e) == std::vector<std::string>{id});
    json st = e.state();
    CHECK(st["instances"].size() == 1);
    HttpReply t = d.terminate(e, id);
    CHECK(t.status == 200);
    // Lambda shows "terminating" once before the instance is gone.
    HttpReply after = d.get(e, id);
    if (!d.gone(after)) after = d.get(e, id);
    CHECK(d.gone(after));
    CHECK(d.list_ids(e).empty());
    st = e.state();
    CHECK(st["instances"].empty());
    CHECK(st["terminated"].size() == 1);
}

// Every fault kind the provider supports fires on exactly `count` matching requests.
void check_faults(const Driver & d) {
    INFO("provider " << d.provider);
    Emulator e(d.provider, {.api_key = kKey});
    e.configure({{"boot_polls", 0}});

    // http_status x2 with Retry-After, on create only.
    json m = d.create_match;
    e.inject({{"kind", "http_status"}, {"status", 429}, {"retry_after_s", 3}, {"count", 2}, {"match", m}});
    d.search(e);  // does not match: untouched
    for (int i = 0; i < 2; ++i) {
        HttpReply r = d.create(e);
        CHECK(r.status == 429);
        CHECK(r.header("Retry-After") == "3");
    }
    HttpReply ok = d.create(e);
    std::string id = d.created_id(ok);
    REQUIRE_MESSAGE(!id.empty(), ok.body);

    // capacity x1: the provider's own no-capacity shape, then creates succeed again.
    e.inject({{"kind", "capacity"}, {"count", 1}});
    CHECK(d.is_capacity_error(d.create(e)));
    std::string id2 = d.created_id(d.create(e));
    CHECK(!id2.empty());

    // drop_connection x1 and malformed_json x1 on get.
    e.inject({{"kind", "drop_connection"}, {"count", 1}});
    CHECK_THROWS(d.get(e, id));
    CHECK(d.get(e, id).status == 200);
    e.inject({{"kind", "malformed_json"}, {"count", 1}});
    HttpReply bad = d.get(e, id);
    CHECK(bad.status == 200);
    CHECK_THROWS(bad.json());
    CHECK_NOTHROW(d.get(e, id).json());

    // latency x1: only the one request is slow.
    e.inject({{"kind", "latency"}, {"latency_ms", 400}, {"count", 1}});
    auto t0 = std::chrono::steady_clock::now();
    d.get(e, id);
    auto slow = std::chrono::steady_clock::now() - t0;
    CHECK(slow >= std::chrono::milliseconds(400));

    // terminate_ignored_once: success, but the instance is still there until the next terminate.
    e.inject({{"kind", "terminate_ignored_once"}, {"match", d.terminate_match}});
    CHECK(d.terminate(e, id).status == 200);
    HttpReply still = d.get(e, id);
    CHECK_FALSE(d.gone(still));
    CHECK(d.terminate(e, id).status == 200);
    HttpReply gone = d.get(e, id);
    if (!d.gone(gone)) gone = d.get(e, id);
    CHECK(d.gone(gone));

    // instance_failed: the next observation shows the provider's failed state.
    e.inject({{"kind", "instance_failed"}, {"count", 1}});
    HttpReply failed = d.get(e, id2);
    CHECK_MESSAGE(d.failed(failed), failed.body);

    // Every fault above was used up exactly.
    json faults = e.state()["faults"];
    for (const auto & f : faults) {
        INFO("fault " << f.dump());
        CHECK(f["remaining"] == 0);
        CHECK(f["fired"] == f["count"]);
    }

    // vanish_offer (RunPod, Lambda, Prime name a stable offer; Vast asks are looked up per create).
    if (!d.offer_id.empty()) {
        CHECK(d.offer_listed(d.search(e).json(), d.offer_id));
        e.inject({{"kind", "vanish_offer"}, {"offer_id", d.offer_id}});
        CHECK_FALSE(d.offer_listed(d.search(e).json(), d.offer_id));
        CHECK(d.is_capacity_error(d.create(e)));
    }
}

}  // namespace

TEST_CASE("runpod lifecycle") { check_lifecycle(runpod_driver()); }
TEST_CASE("vast lifecycle") { check_lifecycle(vast_driver()); }
TEST_CASE("lambda lifecycle") { check_lifecycle(lambda_driver()); }
TEST_CASE("primeintellect lifecycle") { check_lifecycle(prime_driver()); }

TEST_CASE("runpod faults") { check_faults(runpod_driver()); }
TEST_CASE("vast faults") { check_faults(vast_driver()); }
TEST_CASE("lambda faults") { check_faults(lambda_driver()); }
TEST_CASE("primeintellect faults") { check_faults(prime_driver()); }

TEST_CASE("vast vanish_offer removes the ask from search and create fails") {
    Emulator e("vast", {.api_key = kKey});
    json offers = api(e, "POST", "/api/v0/bundles/", {{"gpu_name", {{"eq", "H100 SXM"}}}}).json()["offers"];
    REQUIRE(!offers.empty());
    long ask = offers[0]["id"];
    e.inject({{"kind", "vanish_offer"}, {"offer_id", ask}});
    json after = api(e, "POST", "/api/v0/bundles/", {{"gpu_name", {{"eq", "H100 SXM"}}}}).json()["offers"];
    CHECK(after.size() == offers.size() - 1);
    HttpReply r = api(e, "PUT", "/api/v0/asks/" + std::to_string(ask) + "/", {{"client_id", "me"}, {"image", "x"}});
    CHECK(r.status == 404);
    CHECK(r.json()["error"] == "no_such_ask");
}

TEST_CASE("auth failures come in each provider's shape") {
    for (const Driver & d : all_drivers()) {
        INFO("provider " << d.provider);
        Emulator e(d.provider, {.api_key = kKey});
        std::string list_target = d.provider == "runpod" ? "/graphql" : d.provider == "vast" ? "/api/v0/instances/"
                                  : d.provider == "lambda"                                 ? "/api/v1/instances"
                                                                                           : "/api/v1/pods";
        std::string method = d.provider == "runpod" ? "POST" : "GET";
        json body = d.provider == "runpod" ? json{{"query", "{ myself { pods { id } } }"}} : json(nullptr);
        CHECK(d.is_auth_error(api(e, method, list_target, body, "wrong-key")));
        CHECK(d.is_auth_error(api(e, method, list_target, body, "")));
        CHECK(api(e, method, list_target, body).status == 200);
        // Nothing was created by refused requests, and the key never reaches the request log.
        CHECK(e.state()["instances"].empty());
        CHECK(e.state().dump().find(kKey) == std::string::npos);
    }
}

TEST_CASE("runpod accepts ?api_key= and serves gpuTypes unauthenticated") {
    Emulator e("runpod", {.api_key = kKey});
    HttpReply r = tests::http_call(e.port(), "POST", "/graphql?api_key=" + kKey,
                                   json{{"query", "{ myself { id pubKey } }"}}.dump(), {{"Content-Type", "application/json"}});
    CHECK(r.status == 200);
    CHECK(r.json()["data"]["myself"]["id"] == "user_emulator");
    CHECK(gql(e, "{ gpuTypes { id } }", json::object(), "").status == 200);
    CHECK(gql(e, "{ myself { id } }", json::object(), "").status == 401);
}

TEST_CASE("runpod gpuTypes in the documented shape, inline and variable inputs") {
    Emulator e("runpod");
    json inline_form = gql(e, "query { gpuTypes(input: {id: \"AMD Instinct MI300X OAM\"}) { id displayName manufacturer "
                              "memoryInGb secureCloud communityCloud securePrice communityPrice secureSpotPrice "
                              "maxGpuCount lowestPrice(input: {gpuCount: 8, secureCloud: true}) { minimumBidPrice "
                              "uninterruptablePrice stockStatus maxUnreservedGpuCount availableGpuCounts } } }")
                           .json();
    json g = inline_form["data"]["gpuTypes"][0];
    CHECK(inline_form["data"]["gpuTypes"].size() == 1);
    CHECK(g["manufacturer"] == "AMD");
    CHECK(g["memoryInGb"] == 192);
    CHECK(g["communityCloud"] == false);
    CHECK(g["communityPrice"].is_null());
    CHECK(g["lowestPrice"]["uninterruptablePrice"] == g["securePrice"]);  // per GPU (README)
    CHECK(g["lowestPrice"]["minimumBidPrice"].get<double>() < g["securePrice"].get<double>());
    CHECK(g["lowestPrice"]["stockStatus"].is_string());

    json vars = gql(e, "query Gpus($f: GpuTypeFilter, $n: Int) { gpuTypes(input: $f) { id memoryInGb "
                       "community: lowestPrice(input: {gpuCount: $n, secureCloud: false}) { stockStatus } } }",
                    {{"f", {{"id", "NVIDIA H200"}}}, {"n", 1}})
                    .json();
    // H200 is secure-only: no community offer (stockStatus null), and the alias is honoured.
    CHECK(vars["data"]["gpuTypes"][0]["memoryInGb"] == 141);
    CHECK(vars["data"]["gpuTypes"][0]["community"]["stockStatus"].is_null());

    json all = gql(e, "{ gpuTypes { id memoryInGb } }").json()["data"]["gpuTypes"];
    std::vector<int> vram;
    for (const auto & t : all) vram.push_back(t["memoryInGb"]);
    CHECK(vram == std::vector<int>{80, 141, 80, 40, 24, 48, 192});

    // Fragments, inline fragments, @include/@skip and __typename, as real clients write them.
    json frag = gql(e, "query Q($withPrice: Boolean!) { gpuTypes(input: {id: \"NVIDIA L40S\"}) { ...G "
                       "... on GpuType { manufacturer } } } fragment G on GpuType { __typename id "
                       "securePrice @include(if: $withPrice) memoryInGb @skip(if: true) }",
                    {{"withPrice", false}})
                    .json()["data"]["gpuTypes"][0];
    CHECK(frag == json{{"__typename", "GpuType"}, {"id", "NVIDIA L40S"}, {"manufacturer", "Nvidia"}});

    HttpReply typo = gql(e, "{ gpuTypes { id memoryInGB } }");
    CHECK(typo.status == 400);
    CHECK(typo.json()["errors"][0]["message"] == "Cannot query field \"memoryInGB\" on type \"GpuType\".");
    HttpReply syntax = gql(e, "{ gpuTypes { id }");
    CHECK(syntax.status == 400);
    CHECK(syntax.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED");
}

TEST_CASE("runpod pod states, public port, TTL and errors") {
    Emulator e("runpod", {.api_key = kKey});
    e.configure({{"ssh_port", 31022}, {"boot_polls", 1}});
    json input = {{"gpuTypeId", "NVIDIA GeForce RTX 4090"}, {"gpuCount", 2}, {"cloudType", "COMMUNITY"},
                  {"name", "no-public"}, {"imageName", "img"}, {"ports", "22/tcp,8888/http"}};
    std::string id = gql(e, kRunPodCreate, {{"input", input}}).json()["data"]["podFindAndDeployOnDemand"]["id"];
    gql(e, kRunPodGet, {{"id", id}});
    json pod = gql(e, kRunPodGet, {{"id", id}}).json()["data"]["pod"];
    // Without supportPublicIp, port 22 is private (reachable only through the PTY-only proxy).
    REQUIRE(!pod["runtime"].is_null());
    CHECK(pod["costPerHr"] == doctest::Approx(2 * 0.59));
    for (const auto & p : pod["runtime"]["ports"]) CHECK(p["isIpPublic"] == false);

    // podStop -> EXITED with runtime null; podResume boots again.
    json stopped = gql(e, "mutation { podStop(input: {podId: \"" + id + "\"}) { id desiredStatus } }").json();
    CHECK(stopped["data"]["podStop"]["desiredStatus"] == "EXITED");
    pod = gql(e, kRunPodGet, {{"id", id}}).json()["data"]["pod"];
    CHECK(pod["desiredStatus"] == "EXITED");
    CHECK(pod["runtime"].is_null());
    gql(e, "mutation { podResume(input: {podId: \"" + id + "\", gpuCount: 2}) { id desiredStatus } }");
    CHECK(gql(e, kRunPodGet, {{"id", id}}).json()["data"]["pod"]["runtime"].is_null());
    CHECK(!gql(e, kRunPodGet, {{"id", id}}).json()["data"]["pod"]["runtime"].is_null());

    // runtime_null: runtime goes null for 2 more polls.
    e.inject({{"kind", "runtime_null"}, {"polls", 2}, {"match", {{"operation", "Pod"}}}});
    CHECK(gql(e, kRunPodGet, {{"id", id}}).json()["data"]["pod"]["runtime"].is_null());
    CHECK(gql(e, kRunPodGet, {{"id", id}}).json()["data"]["pod"]["runtime"].is_null());
    CHECK(!gql(e, kRunPodGet, {{"id", id}}).json()["data"]["pod"]["runtime"].is_null());

    // runtime_null on a create: that pod boots `polls` observations later (boot_polls 1 + 2).
    e.inject({{"kind", "runtime_null"}, {"polls", 2}, {"match", {{"operation", "podFindAndDeployOnDemand"}}}});
    json late = input;
    late["name"] = "late";
    std::string late_id = gql(e, kRunPodCreate, {{"input", late}}).json()["data"]["podFindAndDeployOnDemand"]["id"];
    for (int i = 0; i < 3; ++i) CHECK(gql(e, kRunPodGet, {{"id", late_id}}).json()["data"]["pod"]["runtime"].is_null());
    CHECK(!gql(e, kRunPodGet, {{"id", late_id}}).json()["data"]["pod"]["runtime"].is_null());

    // graphql_error: HTTP 200 with errors[] and data null, exactly once.
    e.inject({{"kind", "graphql_error"}, {"message", "Something broke"}, {"code", "INTERNAL_SERVER_ERROR"}});
    HttpReply err = gql(e, kRunPodGet, {{"id", id}});
    CHECK(err.status == 200);
    CHECK(err.json()["errors"][0]["message"] == "Something broke");
    CHECK(err.json()["data"].is_null());
    CHECK(gql(e, kRunPodGet, {{"id", id}}).json().contains("data"));

    // terminateAfter in the past: the pod is gone at the next observation.
    json ttl = input;
    ttl["name"] = "ttl";
    ttl["terminateAfter"] = "2001-01-01T00:00:00Z";
    std::string ttl_id = gql(e, kRunPodCreate, {{"input", ttl}}).json()["data"]["podFindAndDeployOnDemand"]["id"];
    CHECK(gql(e, kRunPodGet, {{"id", ttl_id}}).json()["data"]["pod"].is_null());

    // Volume without a mount path; unknown GPU; terminate twice.
    json vol = input;
    vol["volumeInGb"] = 20;
    json v = gql(e, kRunPodCreate, {{"input", vol}}).json();
    CHECK(v["errors"][0]["message"].get<std::string>().find("mount") != std::string::npos);
    gql(e, "mutation { podTerminate(input: {podId: \"" + id + "\"}) }");
    json again = gql(e, "mutation { podTerminate(input: {podId: \"" + id + "\"}) }").json();
    CHECK(again["errors"][0]["message"] == "pod not found to terminate");
}

TEST_CASE("vast search operators, units and dph_total with storage") {
    Emulator e("vast", {.api_key = kKey});
    auto search = [&](const json & q) { return api(e, "POST", "/api/v0/bundles/", q).json()["offers"]; };
    json h100 = search({{"gpu_name", {{"eq", "H100 SXM"}}}, {"num_gpus", {{"eq", "8"}}}, {"allocated_storage", 100}});
    REQUIRE(!h100.empty());
    for (const auto & o : h100) {
        CHECK(o["gpu_ram"].get<int>() > 79000);  // MB per GPU
        CHECK(o["gpu_total_ram"] == o["gpu_ram"].get<int>() * 8);
        CHECK(o["cpu_ram"].get<int>() > 100000);  // MB
        CHECK(o["gpu_arch"] == "nvidia");
        // dph_total = base + storage: 100 GB at $0.15/GB/month.
        CHECK(o["dph_total"].get<double>() == doctest::Approx(o["dph_base"].get<double>() + 0.15 * 100 / 720));
    }
    // VRAM by the query language's x1000 rule, string numbers, in/notin, gt on floats, order desc, limit.
    json big = search({{"gpu_ram", {{"gte", 100000.0}}}, {"num_gpus", {{"in", json::array({"1", "2"})}}},
                       {"gpu_arch", {{"notin", json::array({"amd"})}}}, {"reliability2", {{"gt", 0.99}}},
                       {"order", json::array({json::array({"dph_total", "desc"})})}, {"limit", 3}});
    REQUIRE(big.size() == 2);
    CHECK(big[0]["gpu_name"] == "H200");
    CHECK(big[0]["num_gpus"] == 2);
    CHECK(big[1]["num_gpus"] == 1);
    CHECK(search({{"gpu_arch", {{"eq", "amd"}}}}).size() == 8);
    // The other search forms answer the same filter.
    json q = {{"gpu_name", {{"eq", "L40S"}}}, {"num_gpus", {{"eq", 4}}}};
    CHECK(api(e, "PUT", "/api/v0/search/asks/", {{"select_cols", {"*"}}, {"q", q}}).json()["offers"].size() == 2);
}

TEST_CASE("vast bid below min_bid still returns a stopped contract, stop/start, v1 pages") {
    Emulator e("vast", {.api_key = kKey});
    e.configure({{"boot_polls", 0}});
    json offers = api(e, "POST", "/api/v0/bundles/", {{"gpu_name", {{"eq", "A100 SXM4"}}}, {"num_gpus", {{"eq", "1"}}}})
                      .json()["offers"];
    REQUIRE(offers.size() == 2);
    std::string ask0 = std::to_string(offers[0]["id"].get<long>());
    HttpReply bid = api(e, "PUT", "/api/v0/asks/" + ask0 + "/", {{"client_id", "me"}, {"image", "x"}, {"price", 0.01}});
    json b = bid.json();
    CHECK(b["success"] == false);
    REQUIRE(b.contains("new_contract"));
    json inst = api(e, "GET", "/api/v0/instances/" + std::to_string(b["new_contract"].get<long>()) + "/").json()["instances"];
    CHECK(inst["intended_status"] == "stopped");
    CHECK(inst["is_bid"] == true);

    std::string ask1 = std::to_string(offers[1]["id"].get<long>());
    long id = api(e, "PUT", "/api/v0/asks/" + ask1 + "/", {{"client_id", "me"}, {"image", "x"}, {"price", nullptr}})
                  .json()["new_contract"];
    std::string path = "/api/v0/instances/" + std::to_string(id) + "/";
    CHECK(api(e, "GET", path).json()["instances"]["is_bid"] == false);
    CHECK(api(e, "PUT", path, {{"state", "stopped"}}).json()["success"] == true);
    CHECK(api(e, "GET", path).json()["instances"]["actual_status"] == "exited");
    api(e, "PUT", path, {{"state", "running"}});
    CHECK(api(e, "GET", path).json()["instances"]["actual_status"] == "running");

    json page1 = api(e, "GET", "/api/v1/instances/?limit=1").json();
    CHECK(page1["instances"].size() == 1);
    REQUIRE(page1["next_token"].is_string());
    json page2 = api(e, "GET", "/api/v1/instances/?limit=1&after_token=" + page1["next_token"].get<std::string>()).json();
    CHECK(page2["instances"].size() == 1);
    CHECK(page2["next_token"].is_null());
    HttpReply missing = api(e, "DELETE", "/api/v0/instances/1/", json::object());
    CHECK(missing.status == 404);
    CHECK(missing.json()["error"] == "no_such_instance");
}

TEST_CASE("lambda launch rules, partial launch, rate limit, partial terminate") {
    Emulator e("lambda", {.api_key = kKey});
    auto launch = [&](const json & body) { return api(e, "POST", "/api/v1/instance-operations/launch", body); };
    json t = api(e, "GET", "/api/v1/instance-types").json()["data"]["gpu_2x_h100_sxm5"];
    CHECK(t["instance_type"]["price_cents_per_hour"] == 638);
    CHECK(t["instance_type"]["description"] == "2x H100 (80 GB SXM5)");
    CHECK(t["instance_type"]["specs"]["gpus"] == 2);
    CHECK(t["regions_with_capacity_available"][0]["name"] == "us-south-1");

    HttpReply two_keys = launch({{"region_name", "us-south-1"}, {"instance_type_name", "gpu_1x_h100_sxm5"},
                                 {"ssh_key_names", {"a", "b"}}});
    CHECK(two_keys.status == 400);
    CHECK(two_keys.json()["field_errors"].contains("ssh_key_names"));
    // us-south-1 has 2 free gpu_2x_h100_sxm5: asking for 3 launches 2.
    HttpReply partial = launch({{"region_name", "us-south-1"}, {"instance_type_name", "gpu_2x_h100_sxm5"},
                                {"ssh_key_names", {"emulator-key"}}, {"quantity", 3}});
    json ids = partial.json()["data"]["instance_ids"];
    CHECK(ids.size() == 2);
    CHECK(api(e, "GET", "/api/v1/instance-types").json()["data"]["gpu_2x_h100_sxm5"]["regions_with_capacity_available"].empty());
    HttpReply term = api(e, "POST", "/api/v1/instance-operations/terminate", {{"instance_ids", {ids[0], "nope"}}});
    CHECK(term.json()["data"]["terminated_instances"].size() == 1);

    e.configure({{"launch_interval_s", 30}});
    launch({{"region_name", "us-east-1"}, {"instance_type_name", "gpu_1x_a10"}, {"ssh_key_names", {"emulator-key"}}});
    HttpReply limited = launch({{"region_name", "us-east-1"}, {"instance_type_name", "gpu_1x_a10"},
                                {"ssh_key_names", {"emulator-key"}}});
    CHECK(limited.status == 429);
    CHECK(!limited.header("Retry-After").empty());
}

TEST_CASE("primeintellect create validation and sshConnection formats") {
    Emulator e("primeintellect", {.api_key = kKey});
    e.configure({{"boot_polls", 1}, {"ssh_connection_format", "list"}, {"ssh_port", 2200}});
    json offers = api(e, "GET", "/api/v1/availability/gpus?gpu_type=A100_80GB&gpu_count=8").json();
    REQUIRE(offers["totalCount"] == 2);
    json o = offers["items"][0];
    CHECK(o["gpuCount"] == 8);
    CHECK(o["gpuMemory"] == 80);
    CHECK(o["prices"]["currency"] == "USD");
    json pod = {{"name", "p"}, {"cloudId", o["cloudId"]}, {"gpuType", o["gpuType"]}, {"gpuCount", 8},
                {"image", "ubuntu_22_cuda_12"}, {"dataCenterId", o["dataCenter"]}};
    HttpReply wrong_provider = api(e, "POST", "/api/v1/pods/", {{"pod", pod}, {"provider", {{"type", "someoneelse"}}}});
    CHECK(wrong_provider.status == 400);
    HttpReply missing = api(e, "POST", "/api/v1/pods/", {{"pod", {{"name", "p"}}}});
    CHECK(missing.status == 422);
    CHECK(missing.json()["detail"][0]["msg"] == "field required");
    std::string id = api(e, "POST", "/api/v1/pods/", {{"pod", pod}, {"provider", {{"type", o["provider"]}}}}).json()["id"];
    json installing = api(e, "GET", "/api/v1/pods/" + id).json();
    CHECK(installing["status"] == "ACTIVE");
    CHECK(installing["installationStatus"] == "INSTALLING");
    CHECK(installing["sshConnection"] == json::array({nullptr}));
    json status = api(e, "GET", "/api/v1/pods/status?pod_ids=" + id).json()["data"][0];
    CHECK(status["sshConnection"] == json::array({"root@127.0.0.1 -p 2200"}));
    CHECK(status["installationProgress"] == 100);
    api(e, "DELETE", "/api/v1/pods/" + id);
    json history = api(e, "GET", "/api/v1/pods/history").json()["data"];
    CHECK(history.size() == 1);
    CHECK(history[0]["status"] == "TERMINATED");
}

TEST_CASE("request log records bodies, operations and redacted headers") {
    Emulator rp("runpod", {.api_key = kKey});
    runpod_driver().create(rp);
    json req = rp.state()["requests"][0];
    CHECK(req["method"] == "POST");
    CHECK(req["path"] == "/graphql");
    CHECK(req["body"]["variables"]["input"]["terminateAfter"] == "2099-01-01T00:00:00Z");
    CHECK(req["operations"] == json::array({"Create", "podFindAndDeployOnDemand"}));
    CHECK(req["headers"]["authorization"] == "<redacted>");

    Emulator vast("vast", {.api_key = kKey});
    vast_driver().create(vast);
    json reqs = vast.state()["requests"];
    REQUIRE(reqs.size() == 2);  // search, then create
    CHECK(reqs[1]["method"] == "PUT");
    CHECK(reqs[1]["body"].contains("price"));
    CHECK(reqs[1]["body"]["price"].is_null());  // on-demand: no bid price sent
    CHECK(reqs[1]["body"]["label"] == "toolkit-t1-worker");
    // Control calls are not provider requests.
    vast.state();
    CHECK(vast.state()["requests"].size() == 2);
}

TEST_CASE("configured latency delays provider answers, not the control API") {
    Emulator e("lambda", {.api_key = kKey, .latency_ms = 300});
    auto t0 = std::chrono::steady_clock::now();
    CHECK(api(e, "GET", "/api/v1/instance-types").status == 200);
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(300));
    e.configure({{"latency_ms", 0}});
    t0 = std::chrono::steady_clock::now();
    api(e, "GET", "/api/v1/instances");
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(300));
    // Auth failures are delayed too (every provider-API answer is).
    e.configure({{"latency_ms", 300}});
    t0 = std::chrono::steady_clock::now();
    CHECK(api(e, "GET", "/api/v1/instances", nullptr, "bad").status == 401);
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(300));
}

TEST_CASE("control API refuses bad faults and config, reset keeps config") {
    Emulator e("vast", {.api_key = kKey});
    CHECK_THROWS(e.inject({{"kind", "graphql_error"}}));  // RunPod only
    CHECK_THROWS(e.inject({{"kind", "no_such_kind"}}));
    CHECK_THROWS(e.inject({{"kind", "http_status"}}));    // needs status
    CHECK_THROWS(e.configure({{"ssh_prot", 22}}));
    e.configure({{"ssh_port", 2345}, {"boot_polls", 0}});
    std::string id = vast_driver().created_id(vast_driver().create(e));
    REQUIRE(!id.empty());
    e.inject({{"kind", "latency"}, {"latency_ms", 1}, {"count", 5}});
    e.reset();
    json st = e.state();
    CHECK(st["instances"].empty());
    CHECK(st["requests"].empty());
    CHECK(st["faults"].empty());
    CHECK(st["config"]["ssh_port"] == 2345);
}

TEST_CASE("created instances point at a real sshd") {
    tests::SshdFixture sshd;
    for (const Driver & d : all_drivers()) {
        INFO("provider " << d.provider);
        Emulator e(d.provider, {.api_key = kKey});
        e.configure({{"ssh_host", sshd.host()}, {"ssh_port", sshd.port()}, {"ssh_user", sshd.user()}, {"boot_polls", 1}});
        std::string id = d.created_id(d.create(e));
        REQUIRE(!id.empty());
        Endpoint ep = poll_until_ready(e, d, id).first;
        CHECK(ep.host == sshd.host());
        CHECK(ep.port == sshd.port());
        if (d.provider == "primeintellect") CHECK(ep.user == sshd.user());
    }
    // Every endpoint above is this sshd; one real exec proves it answers (an exec costs seconds).
    tests::SshExecResult r = tests::ssh_exec(sshd, "echo ready");
    CHECK(r.exit_code == 0);
    CHECK(r.out == "ready\n");
}

TEST_CASE("launcher reports a failed start with the emulator's stderr") {
    try {
        Emulator e("no-such-cloud");
        FAIL("expected the launcher to throw");
    } catch (const std::exception & ex) {
        std::string what = ex.what();
        CHECK(what.find("no-such-cloud") != std::string::npos);
        CHECK(what.find("invalid choice") != std::string::npos);  // argparse's message, from stderr
    }
}
