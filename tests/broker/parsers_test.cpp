// Recorded response bodies (shapes from docs/providers.md) → the providers' pure parsers and request
// builders: units converted once, SSH endpoints derived the documented way, traps avoided.
#include <filesystem>
#include <fstream>
#include <iterator>

#include "broker/credentials.h"
#include "broker/providers/json_api.h"
#include "broker/providers/providers.h"
#include "common/error.h"
#include "fuzz/provider_json_check.h"

#include <doctest/doctest.h>

using namespace broker;
using namespace broker::providers;
using json = nlohmann::json;

TEST_CASE("runpod: offers are per GPU price × count, null stockStatus means not offered") {
    json data = json::parse(R"J({"gpuTypes": [
      {"id": "NVIDIA H100 80GB HBM3", "displayName": "H100 SXM", "manufacturer": "Nvidia", "memoryInGb": 80,
       "secureCloud": true, "communityCloud": false, "securePrice": 2.99, "communityPrice": null, "maxGpuCount": 8,
       "lowestPrice": {"stockStatus": "High", "uninterruptablePrice": 2.99, "minimumBidPrice": 1.5}},
      {"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "manufacturer": "Nvidia", "memoryInGb": 24,
       "secureCloud": true, "communityCloud": true, "securePrice": 0.69, "communityPrice": 0.44, "maxGpuCount": 8,
       "lowestPrice": {"stockStatus": null}}
    ]})J");
    auto offers = runpod_parse_offers(data, 2, true);
    REQUIRE(offers.size() == 1);
    CHECK(offers[0].gpu_model == "H100 SXM");
    CHECK(offers[0].manufacturer == "NVIDIA");
    CHECK(offers[0].vram_gb_per_gpu == 80);
    CHECK(offers[0].price_usd_per_hour_gpu == doctest::Approx(2.99));
    CHECK(offers[0].price_usd_per_hour_total == doctest::Approx(5.98));
    CHECK(offers[0].offer_id == "NVIDIA_H100_80GB_HBM3/secure/2");
    CHECK(offers[0].create_data["gpuTypeId"] == "NVIDIA H100 80GB HBM3");
    CHECK(runpod_parse_offers(data, 2, false).empty());  // not in community cloud
}

TEST_CASE("runpod: SSH only from a public runtime port 22, runtime null is not ready") {
    json pod = json::parse(R"J({"id": "p1", "name": "tk-r-main-dl1", "desiredStatus": "RUNNING", "costPerHr": 0.69,
      "gpuCount": 1, "machine": {"gpuDisplayName": "RTX 4090"}, "runtime": null})J");
    auto i = runpod_parse_pod(pod);
    CHECK(i.status == InstanceStatus::Running);
    CHECK_FALSE(i.ssh);
    CHECK(i.status_detail.find("runtime") != std::string::npos);
    pod["runtime"] = json::parse(R"J({"uptimeInSeconds": 12, "ports": [
      {"ip": "100.65.0.2", "isIpPublic": false, "privatePort": 22, "publicPort": 22, "type": "tcp"},
      {"ip": "203.0.113.9", "isIpPublic": true, "privatePort": 22, "publicPort": 40123, "type": "tcp"}]})J");
    i = runpod_parse_pod(pod);
    REQUIRE(i.ssh);
    CHECK(i.ssh->host == "203.0.113.9");
    CHECK(i.ssh->port == 40123);
    CHECK(i.ssh->user == "root");
    CHECK(*i.uptime_s == 12);
}

TEST_CASE("runpod: GraphQL errors in a 200 are typed by code and message") {
    auto kind = [](const char * body) {
        return runpod_graphql_error(json::parse(body), "create").kind();
    };
    CHECK(kind(R"J([{"message": "There are no longer any instances available with the requested specifications.", "extensions": {"code": "SUPPLY_CONSTRAINT"}}])J") == common::ErrorKind::Capacity);
    CHECK(kind(R"J([{"message": "Insufficient balance", "extensions": {"code": "INSUFFICIENT_BALANCE"}}])J") == common::ErrorKind::Quota);
    CHECK(kind(R"J([{"message": "pod not found to terminate"}])J") == common::ErrorKind::NotFound);
    CHECK(kind(R"J([{"message": "Unauthorized", "extensions": {"code": "UNAUTHENTICATED"}}])J") == common::ErrorKind::Auth);
    CHECK(kind(R"J([{"message": "something odd"}])J") == common::ErrorKind::Network);
}

TEST_CASE("vast: MB are converted once, dph_total is the whole offer") {
    json body = json::parse(R"J({"offers": [
      {"id": 4711, "num_gpus": 2, "gpu_name": "RTX 4090", "gpu_ram": 24564, "gpu_arch": "nvidia", "dph_total": 0.81,
       "min_bid": 0.5, "cpu_ram": 128000, "disk_space": 500.5, "geolocation": "Austin, TX, US", "hosting_type": 1,
       "rentable": true, "cuda_max_good": 12.8, "driver_version": "550.54", "cpu_cores_effective": 32}]})J");
    auto offers = vast_parse_offers(body, false);
    REQUIRE(offers.size() == 1);
    const auto & o = offers[0];
    CHECK(o.offer_id == "4711");
    CHECK(o.vram_gb_per_gpu == 24);
    CHECK(o.price_usd_per_hour_total == doctest::Approx(0.81));
    CHECK(o.price_usd_per_hour_gpu == doctest::Approx(0.405));
    CHECK(*o.cpu_ram_gb == 125);
    CHECK(*o.disk_gb == doctest::Approx(500.5));
    CHECK(o.cloud == CloudType::Secure);
    CHECK(o.manufacturer == "NVIDIA");
    CHECK(o.cuda_version == "12.8");
    CHECK_FALSE(o.spot);
    auto spot = vast_parse_offers(body, true);
    CHECK(spot[0].price_usd_per_hour_total == doctest::Approx(0.5));
    CHECK(spot[0].spot);
}

TEST_CASE("vast: an on-demand create sends no price (a price makes it an interruptible bid)J") {
    CreateRequest r;
    r.offer.offer_id = "4711";
    r.offer.price_usd_per_hour_total = 0.81;
    r.name = "tk-r-main-dl1";
    r.env = {{"A", "1"}};
    json body = vast_create_body(r);
    CHECK_FALSE(body.contains("price"));
    CHECK(body["label"] == "tk-r-main-dl1");
    CHECK(body["env"]["A"] == "1");
    r.offer.spot = true;
    CHECK(vast_create_body(r)["price"].get<double>() == doctest::Approx(0.81));
}

TEST_CASE("vast: search body pushes filters in Vast units") {
    OfferFilter f;
    f.gpu_count = 2;
    f.min_vram_gb = 24;
    f.max_price_usd_per_hour = 1.5;
    json q = vast_search_body(f, 50);
    CHECK(q["num_gpus"]["eq"] == "2");
    CHECK(q["gpu_ram"]["gte"].get<double>() == doctest::Approx(0.93 * 24 * 1024).epsilon(0.001));  // 0.93 × 24 GiB snaps to 24
    CHECK(q["type"] == "on-demand");
    CHECK(q["rentable"]["eq"] == true);
    CHECK_FALSE(q.contains("id"));
    CHECK(q["limit"] == 200);
    f.offer_id = "10000037";
    CHECK(vast_search_body(f, 50)["id"]["eq"] == "10000037");  // a known ask, whatever its price rank
    f.offer_id = "1; drop";
    CHECK_THROWS_AS(vast_search_body(f, 50), common::Error);
    f.offer_id.clear();
    f.gpu = "h100";  // pushed as the exact names it matches: the usual 200 rows are all H100s
    q = vast_search_body(f, 50);
    CHECK(q["gpu_name"]["in"] == json::array({"H100 PCIE", "H100 SXM", "H100 NVL"}));
    CHECK(q["limit"] == 200);
    f.gpu = "mi300x";  // no known Vast name: the cheapest 1000 rows, filtered locally
    q = vast_search_body(f, 50);
    CHECK_FALSE(q.contains("gpu_name"));
    CHECK(q["limit"] == 1000);
}

TEST_CASE("vast: --gpu becomes the gpu_name values it matches by the local rule, and only those") {
    // Substrings, as the local re-check reads --gpu (case-insensitive, as typed or canonicalised).
    CHECK(vast_gpu_names_for("h100") == std::vector<std::string>{"H100 PCIE", "H100 SXM", "H100 NVL"});
    CHECK(vast_gpu_names_for("H100-SXM") == std::vector<std::string>{"H100 SXM"});
    CHECK(vast_gpu_names_for("a100") == std::vector<std::string>{"A100 PCIE", "A100 SXM4", "A100 SXM", "A100X"});
    CHECK(vast_gpu_names_for("4090") == std::vector<std::string>{"RTX 4090", "RTX 4090D", "RTX 4090 Ti"});
    CHECK(vast_gpu_names_for("v100") == std::vector<std::string>{"Tesla V100", "Quadro GV100"});
    CHECK(vast_gpu_names_for("NVIDIA GeForce RTX 3090") == std::vector<std::string>{"RTX 3090", "RTX 3090 Ti"});
    // A substring, as everywhere: "h200" is in "GH200 SXM" too, which the local re-check keeps as well.
    CHECK(vast_gpu_names_for("h200") == std::vector<std::string>{"GH200 SXM", "H200", "H200 NVL"});
    CHECK(vast_gpu_names_for("").empty());
    CHECK(vast_gpu_names_for("mi300x").empty());
    CHECK(vast_gpu_names_for("\"]}; drop").empty());
    // Every name sent is one the local re-check keeps, and every known name the re-check would keep
    // is sent: the server and the local filter admit the same rows.
    for (const std::string query : {"h100", "a10", "rtx", "ti", "pro 6000", "Tesla T4", "instinct"}) {
        auto names = vast_gpu_names_for(query);
        INFO(query);
        CHECK(!names.empty());
        json body = {{"offers", json::array()}};
        for (const auto & n : names)
            body["offers"].push_back({{"id", 1}, {"gpu_name", n}, {"gpu_ram", 24564}, {"num_gpus", 1}, {"dph_total", 0.5}});
        OfferFilter f;
        f.gpu = query;
        CHECK(filter_offers(vast_parse_offers(body, false), f).size() == names.size());
    }
}

TEST_CASE("vast: show object, direct SSH port as a string, proxy fallback") {
    json inst = json::parse(R"J({"id": 99, "label": "tk-r-main-dl1", "actual_status": "running", "num_gpus": 1,
      "gpu_name": "RTX 4090", "dph_total": 0.4, "public_ipaddr": "198.51.100.7", "ssh_host": "ssh5.vast.ai",
      "ssh_port": 10022, "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41234"}]}, "start_date": 1700000000})J");
    auto i = vast_parse_instance(inst);
    REQUIRE(i.ssh);
    CHECK(i.ssh->host == "198.51.100.7");
    CHECK(i.ssh->port == 41234);
    inst["ports"] = json::object();
    i = vast_parse_instance(inst);
    REQUIRE(i.ssh);
    CHECK(i.ssh->host == "ssh5.vast.ai");
    CHECK(i.ssh->port == 10022);
    inst["actual_status"] = nullptr;
    CHECK(vast_parse_instance(inst).status == InstanceStatus::Pending);
    CHECK(vast_parse_instance(inst).status_raw == "null");
}

TEST_CASE("lambda: one offer per type and region with capacity, cents for the whole instance") {
    json data = json::parse(R"J({
      "gpu_8x_h100_sxm5": {"instance_type": {"name": "gpu_8x_h100_sxm5", "description": "8x H100 (80 GB SXM5)",
        "gpu_description": "H100 (80 GB SXM5)", "price_cents_per_hour": 2392,
        "specs": {"vcpus": 208, "memory_gib": 1800, "storage_gib": 24780, "gpus": 8}},
        "regions_with_capacity_available": [{"name": "us-east-1", "description": "Virginia"}, {"name": "us-west-1"}]},
      "gpu_1x_a10": {"instance_type": {"name": "gpu_1x_a10", "description": "1x A10 (24 GB PCIe)",
        "gpu_description": "A10 (24 GB PCIe)", "price_cents_per_hour": 75,
        "specs": {"vcpus": 30, "memory_gib": 200, "storage_gib": 1400, "gpus": 1}},
        "regions_with_capacity_available": []}})J");
    auto offers = lambda_parse_offers(data);
    REQUIRE(offers.size() == 2);
    const auto & o = offers[0];
    CHECK(o.gpu_model == "H100 SXM5");
    CHECK(o.vram_gb_per_gpu == 80);
    CHECK(o.gpu_count == 8);
    CHECK(o.price_usd_per_hour_total == doctest::Approx(23.92));
    CHECK(o.price_usd_per_hour_gpu == doctest::Approx(2.99));
    CHECK(*o.cpu_ram_gb == 1800);
    CHECK(o.manufacturer == "NVIDIA");
    CHECK(o.offer_id == "gpu_8x_h100_sxm5@us-east-1");
}

TEST_CASE("lambda: SSH user is ubuntu and ip null means not yet") {
    json d = json::parse(R"J({"id": "i-1", "name": "tk-r-main-dl1", "status": "booting", "ip": null,
      "instance_type": {"gpu_description": "A10 (24 GB PCIe)", "price_cents_per_hour": 75, "specs": {"gpus": 1}}})J");
    auto i = lambda_parse_instance(d);
    CHECK(i.status == InstanceStatus::Pending);
    CHECK_FALSE(i.ssh);
    CHECK(*i.price_usd_per_hour == doctest::Approx(0.75));
    d["status"] = "active";
    d["ip"] = "192.0.2.10";
    i = lambda_parse_instance(d);
    REQUIRE(i.ssh);
    CHECK(i.ssh->user == "ubuntu");
    CHECK(i.ssh->port == 22);
}

TEST_CASE("primeintellect: sshConnection as string, list, [null] and with an ssh prefix") {
    auto e = prime_parse_ssh("root@1.2.3.4 -p 22000");
    REQUIRE(e);
    CHECK(e->user == "root");
    CHECK(e->host == "1.2.3.4");
    CHECK(e->port == 22000);
    e = prime_parse_ssh(json::array({"ubuntu@5.6.7.8 -p 2200", "ubuntu@5.6.7.9 -p 2200"}));
    REQUIRE(e);
    CHECK(e->user == "ubuntu");
    CHECK(e->host == "5.6.7.8");
    CHECK_FALSE(prime_parse_ssh(json::array({nullptr})));
    CHECK_FALSE(prime_parse_ssh(nullptr));
    e = prime_parse_ssh("ssh root@9.9.9.9");
    REQUIRE(e);
    CHECK(e->port == 22);
}

TEST_CASE("primeintellect: offers keep cloudId and dataCenter apart, create uses the offer's provider and image") {
    json body = json::parse(R"J({"totalCount": 1, "items": [
      {"cloudId": "H100_80GB.x-1", "gpuType": "H100_80GB", "socket": "SXM5", "provider": "datacrunch",
       "dataCenter": "FIN-01", "country": "FI", "gpuCount": 2, "gpuMemory": 80, "security": "secure_cloud",
       "stockStatus": "High", "prices": {"onDemand": 4.2, "communityPrice": null, "currency": "USD"},
       "memory": {"defaultCount": 180}, "disk": {"defaultCount": 400}, "vcpu": {"defaultCount": 40},
       "images": ["ubuntu_22_cuda_12", "cuda_12_4_pytorch_2_5"], "isSpot": false}]})J");
    auto offers = prime_parse_offers(body);
    REQUIRE(offers.size() == 1);
    const auto & o = offers[0];
    CHECK(o.price_usd_per_hour_total == doctest::Approx(4.2));
    CHECK(o.price_usd_per_hour_gpu == doctest::Approx(2.1));
    CHECK(o.underlying_provider == "datacrunch");
    CHECK(o.gpu_model == "H100 80GB");
    CreateRequest r;
    r.offer = o;
    r.name = "tk-r-main-dl1";
    r.image = "runpod/pytorch:2.4";  // a Docker reference is not a Prime image name
    json c = prime_create_body(r);
    CHECK(c["provider"]["type"] == "datacrunch");
    CHECK(c["pod"]["cloudId"] == "H100_80GB.x-1");
    CHECK(c["pod"]["dataCenterId"] == "FIN-01");
    CHECK(c["pod"]["image"] == "ubuntu_22_cuda_12");
    r.image = "cuda_12_4_pytorch_2_5";
    CHECK(prime_create_body(r)["pod"]["image"] == "cuda_12_4_pytorch_2_5");
}

TEST_CASE("runpod: secure offers are one per data centre that stocks the type, community offers carry the country") {
    json data = json::parse(R"J({"gpuTypes": [
      {"id": "NVIDIA H200", "displayName": "H200 SXM", "manufacturer": "Nvidia", "memoryInGb": 141,
       "secureCloud": true, "communityCloud": true, "securePrice": 4.13, "communityPrice": 3.59, "maxGpuCount": 8,
       "lowestPrice": {"stockStatus": "Medium", "countryCode": "RO"}}],
      "dataCenters": [
        {"id": "US-TX-3", "name": "Texas 3", "location": "United States", "listed": true,
         "gpuAvailability": [{"gpuTypeId": "NVIDIA H200", "stockStatus": "High"}]},
        {"id": "EU-RO-1", "name": "Romania 1", "location": "Romania", "listed": true,
         "gpuAvailability": [{"gpuTypeId": "NVIDIA H200", "stockStatus": null}]},
        {"id": "US-KS-2", "name": "Kansas 2", "location": "United States", "listed": true,
         "gpuAvailability": [{"gpuTypeId": "NVIDIA H200", "stockStatus": "Low"}]}]})J");
    auto secure = runpod_parse_offers(data, 2, true);
    REQUIRE(secure.size() == 2);  // EU-RO-1 does not stock it
    CHECK(secure[0].region == "US-TX-3 (United States)");
    CHECK(secure[0].availability == "High");
    CHECK(secure[0].offer_id == "NVIDIA_H200/secure/US-TX-3/2");
    CHECK(secure[0].create_data["dataCenterId"] == "US-TX-3");
    CHECK(secure[1].region == "US-KS-2 (United States)");
    CHECK(runpod_offer_gpu_count(secure[1].offer_id) == 2);
    OfferFilter f;
    f.region = "kansas";  // not a word the data carries for that data centre: no match
    CHECK(filter_offers(secure, f).empty());
    f.region = "us-ks";
    CHECK(filter_offers(secure, f).size() == 1);
    auto community = runpod_parse_offers(data, 1, false);
    REQUIRE(community.size() == 1);
    CHECK(community[0].region == "RO");
    CHECK(community[0].create_data["countryCode"] == "RO");
    CHECK(community[0].offer_id == "NVIDIA_H200/community/1");
    // Without dataCenters (an older answer) there is one regionless offer, as before.
    data.erase("dataCenters");
    auto plain = runpod_parse_offers(data, 1, true);
    REQUIRE(plain.size() == 1);
    CHECK(plain[0].region.empty());
    CHECK(plain[0].offer_id == "NVIDIA_H200/secure/1");
}

TEST_CASE("runpod: an offer id must end in a GPU count, the create rents in the offer's data centre or country") {
    CHECK(runpod_offer_gpu_count("NVIDIA_H100_80GB_HBM3/secure/US-TX-3/4/spot") == 4);
    CHECK(runpod_offer_gpu_count("NVIDIA_H100_80GB_HBM3/community/8") == 8);
    for (const char * bad : {"x", "x/secure/0", "x/secure/999999999999", "x/secure/-1", "x/secure/2 }) {"})
        CHECK_THROWS_AS(runpod_offer_gpu_count(bad), common::Error);
    CreateRequest r;
    r.offer.gpu_count = 1;
    r.offer.create_data = {{"gpuTypeId", "NVIDIA H200"}, {"cloudType", "SECURE"}, {"dataCenterId", "US-KS-2"}};
    json req = runpod_create_request(r);
    CHECK(req["variables"]["input"]["dataCenterId"] == "US-KS-2");
    CHECK_FALSE(req["variables"]["input"].contains("countryCode"));
}

TEST_CASE("runpod: no value a user or a server wrote becomes GraphQL text, values travel as variables") {
    OfferFilter plain, odd;
    odd.min_ram_gb = 123;
    odd.min_disk_gb = 4567;
    json a = runpod_search_request(plain, 1, true), b = runpod_search_request(odd, 8, false);
    CHECK(a["query"] == b["query"]);  // constant text
    CHECK(b["variables"]["lowestPrice"]["minMemoryInGb"] == 123);
    CHECK(b["variables"]["lowestPrice"]["minDisk"] == 4567);
    CHECK(b["variables"]["lowestPrice"]["gpuCount"] == 8);
    CHECK(b["variables"]["lowestPrice"]["secureCloud"] == false);
    // A server-provided gpuTypeId that looks like GraphQL stays a variable value.
    CreateRequest r;
    r.offer.gpu_count = 1;
    r.name = "tk-r-main-dl1";
    r.offer.create_data = {{"gpuTypeId", "x\") { id } mutation M { podTerminate(input: {podId: \"p\"}) }"},
                           {"cloudType", "SECURE"}};
    json evil = runpod_create_request(r);
    r.offer.create_data["gpuTypeId"] = "NVIDIA H100";
    CHECK(evil["query"] == runpod_create_request(r)["query"]);
    CHECK(evil["variables"]["input"]["gpuTypeId"].get<std::string>().find("podTerminate") != std::string::npos);
}

TEST_CASE("vast: spot rows add the storage charge dph_total includes, the create bids the machine's floor") {
    json body = json::parse(R"J({"offers": [
      {"id": 7, "num_gpus": 1, "gpu_name": "RTX 4090", "gpu_ram": 24564, "gpu_arch": "nvidia",
       "dph_base": 1.2, "dph_total": 1.210417, "min_bid": 0.66, "storage_cost": 0.15}]})J");
    auto od = vast_parse_offers(body, false);
    auto spot = vast_parse_offers(body, true);
    REQUIRE(od.size() == 1);
    REQUIRE(spot.size() == 1);
    CHECK(od[0].price_usd_per_hour_total == doctest::Approx(1.210417));
    CHECK(spot[0].price_usd_per_hour_total == doctest::Approx(0.66 + 0.010417));
    CHECK(spot[0].create_data["bid"].get<double>() == doctest::Approx(0.66));
    // Without dph_base the charge comes from storage_cost ($/GB/month) at the search's storage.
    body["offers"][0].erase("dph_base");
    spot = vast_parse_offers(body, true, 50);
    CHECK(spot[0].price_usd_per_hour_total == doctest::Approx(0.66 + 0.15 * 50 / 720.0));
    CreateRequest r;
    r.offer = spot[0];
    CHECK(vast_create_body(r)["price"].get<double>() == doctest::Approx(0.66));
}

namespace {
// Runs `parse` on `body`; true when it throws Error(Network) naming `provider` (exit 6, provider named).
template <class F>
bool network_error_naming(const std::string & provider, F && parse) {
    try {
        parse();
    } catch (const common::Error & e) {
        bool named = false;
        for (const auto & [k, v] : e.context()) named |= k == "provider" && v == provider;
        if (e.kind() == common::ErrorKind::Network && named) return true;
        FAIL_CHECK("wrong error: kind ", common::kind_name(e.kind()), ": ", e.message());
        return false;
    } catch (const std::exception & e) {
        FAIL_CHECK("not a common::Error: ", e.what());
        return false;
    }
    return false;
}
}  // namespace

TEST_CASE("hostile bodies: huge numbers, wrong types, wrong shapes are Error(Network) naming the provider") {
    CHECK(network_error_naming("vast", [] { vast_parse_offers(json::parse(R"({"offers": [{"id": 1, "num_gpus": 1e300, "dph_total": 1}]})"), false); }));
    CHECK(network_error_naming("vast", [] { vast_parse_offers(json::parse(R"({"offers": {"a": 1}})"), false); }));
    CHECK(network_error_naming("vast", [] { vast_parse_offers(json::parse(R"({"offers": [{"id": 1, "rentable": "yes"}]})"), false); }));
    CHECK(network_error_naming("vast", [] { vast_parse_create(json::parse(R"({"success": true, "new_contract": 1e300})")); }));
    CHECK(network_error_naming("vast", [] { vast_parse_instance(json::parse(R"({"id": 1, "ssh_host": "h", "ssh_port": 99999})")); }));
    CHECK(network_error_naming("runpod", [] { runpod_parse_offers(json::parse(R"({"gpuTypes": [{"id": "x", "secureCloud": "yes"}]})"), 1, true); }));
    CHECK(network_error_naming("runpod", [] { runpod_parse_offers(json::parse(R"({"gpuTypes": 5})"), 1, true); }));
    CHECK(network_error_naming("runpod", [] { runpod_parse_pod(json::parse(R"({"id": "p", "gpuCount": -1e200})")); }));
    CHECK(network_error_naming("runpod", [] { runpod_parse_pods(json::parse(R"({"myself": {"pods": "none"}})")); }));
    CHECK(network_error_naming("lambda", [] { lambda_parse_launch(json::parse(R"({"instance_ids": [42]})")); }));
    CHECK(network_error_naming("lambda", [] { lambda_parse_instances(json::parse(R"({"x": 1})")); }));
    CHECK(network_error_naming("lambda", [] {
        lambda_parse_offers(json::parse(R"({"t": {"instance_type": {"specs": {"gpus": 1, "vcpus": 1e100}, "price_cents_per_hour": 1},
                                                "regions_with_capacity_available": [{"name": "r"}]}})"));
    }));
    CHECK(network_error_naming("primeintellect", [] { prime_parse_pod(json::parse(R"({"id": "p", "installationStatus": "X", "installationProgress": 1e30})")); }));
    CHECK(network_error_naming("primeintellect", [] { prime_parse_ssh(json::parse(R"("root@1.2.3.4 -p 99999999999")")); }));
    CHECK(network_error_naming("primeintellect", [] { prime_parse_offers(json::parse(R"({"items": [{"isSpot": "no", "prices": {"onDemand": 1}}]})")); }));
    // Numbers that no double holds never become JSON at all.
    CHECK(network_error_naming("vast", [] { parse_body("vast", "search offers", R"({"offers": [{"dph_total": 1e999}]})"); }));
}

TEST_CASE("hostile bodies: nesting, giant arrays and oversize bodies are refused before parsing") {
    CHECK(parse_body("vast", "x", "[[[[1]]]]").is_array());
    CHECK(network_error_naming("vast", [] { parse_body("vast", "x", std::string(100000, '[') + std::string(100000, ']')); }));
    std::string nested;
    for (size_t i = 0; i < kMaxJsonDepth; ++i) nested += "[";
    CHECK_NOTHROW(parse_body("vast", "x", nested + std::string(kMaxJsonDepth, ']')));
    CHECK(network_error_naming("vast", [&] { parse_body("vast", "x", nested + "[" + std::string(kMaxJsonDepth + 1, ']')); }));
    std::string giant = "{\"offers\": [0";
    for (size_t i = 0; i < kMaxJsonArrayItems; ++i) giant += ",0";
    CHECK(network_error_naming("vast", [&] { parse_body("vast", "x", giant + "]}"); }));
    CHECK(network_error_naming("vast", [] { parse_body("vast", "x", std::string(200, ' ') + "{}", 200, 1, 100); }));
    // Commas inside strings are not array items; brackets inside strings are not nesting.
    CHECK_NOTHROW(parse_body("vast", "x", "[\"" + std::string(50000, ',') + std::string(100, '[') + "\"]"));
}

TEST_CASE("hostile bodies: long server strings cannot exhaust the stack (no regex on them)") {
    json t = {{"t", {{"instance_type", {{"gpu_description", std::string(1 << 20, '1') + " GB"},
                                       {"specs", {{"gpus", 1}}},
                                       {"price_cents_per_hour", 100}}},
                     {"regions_with_capacity_available", json::array({{{"name", "r"}}})}}}};
    auto offers = lambda_parse_offers(t);
    REQUIRE(offers.size() == 1);
    CHECK(offers[0].vram_gb_per_gpu == 0);  // more than 6 digits is not a VRAM size
    CHECK_FALSE(parse_instance_name("tk-" + std::string(1 << 20, 'a') + "-main-dl1"));
    json pod = {{"id", "p"}, {"name", "tk-" + std::string(1 << 20, 'a') + "-main-dl1"}};
    CHECK(runpod_parse_pods({{"myself", {{"pods", json::array({pod})}}}}).empty());
}

TEST_CASE("fuzz regressions: every committed provider_json input still satisfies the fuzz property") {
    namespace fs = std::filesystem;
    const fs::path dir = BROKER_FUZZ_REGRESSIONS_DIR;
    REQUIRE(fs::is_directory(dir));
    int n = 0;
    for (const auto & entry : fs::directory_iterator(dir)) {
        if (!entry.is_regular_file()) continue;
        std::ifstream in(entry.path(), std::ios::binary);
        std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        INFO(entry.path().filename().string());
        CHECK(fuzz_provider_json::run_one(bytes) == "");
        ++n;
    }
    CHECK(n > 0);
}

TEST_CASE("gone: only each provider's own not-found answer means gone, never a bare or HTML 404") {
    common::http::Response html;
    html.status = 404;
    html.body = "<html>Not Found</html>";
    // A 404 whose body is not the provider's marker is a network error saying so, never NotFound.
    for (const char * p : {"vast", "runpod", "lambda", "primeintellect"}) {
        auto e = api_status_error(p, "terminate x", html);
        CHECK(e.kind() == common::ErrorKind::Network);
        CHECK(e.message().find("not-found answer") != std::string::npos);
    }
    CHECK(api_status_error("vast", "get x", html, true).kind() == common::ErrorKind::NotFound);

    CHECK(vast_says_no_such_instance(R"({"success": false, "error": "no_such_instance", "msg": "Instance 1 not found."})"));
    CHECK_FALSE(vast_says_no_such_instance(R"({"success": false, "error": "not_found"})"));
    CHECK_FALSE(vast_says_no_such_instance("<html>no_such_instance</html>"));
    CHECK_FALSE(vast_says_no_such_instance(""));

    CHECK(prime_says_pod_not_found(404, R"({"detail": "Pod not found"})"));
    CHECK_FALSE(prime_says_pod_not_found(404, R"({"detail": "Not Found"})"));  // FastAPI: no such route
    CHECK_FALSE(prime_says_pod_not_found(404, "<html>Pod not found</html>"));
    CHECK_FALSE(prime_says_pod_not_found(200, R"({"detail": "Pod not found"})"));

    CHECK(runpod_says_pod_not_found(json::parse(R"({"errors": [{"message": "pod not found to terminate"}], "data": null})")));
    CHECK_FALSE(runpod_says_pod_not_found(json::parse(R"({"errors": [{"message": "Not found: /api/graphql"}]})")));
    CHECK_FALSE(runpod_says_pod_not_found(json::parse(R"({"data": {"pod": null}})")));

    // Lambda: NotFound only from global/object-does-not-exist; another code at 404 is a wrong route.
    auto lambda_kind = [](long status, const std::string & body) {
        try {
            lambda_data(status, try_parse_body(body).value_or(json()), body, "get x");
        } catch (const common::Error & e) {
            return e.kind();
        }
        return common::ErrorKind::Internal;
    };
    CHECK(lambda_kind(404, R"({"error": {"code": "global/object-does-not-exist", "message": "Instance not found."}})") ==
          common::ErrorKind::NotFound);
    CHECK(lambda_kind(404, R"({"error": {"code": "global/invalid-address", "message": "Endpoint not found"}})") ==
          common::ErrorKind::Network);
    CHECK(lambda_kind(404, "<html>Not Found</html>") == common::ErrorKind::Network);
}

TEST_CASE("base URLs: scheme://host[:port] only, since every client appends the API's whole path") {
    CHECK(base_url_problem("http://127.0.0.1:8080") == "");
    CHECK(base_url_problem("https://api.primeintellect.ai/") == "");
    CHECK(base_url_problem("http://127.0.0.1:8080/api/v1").find("path") != std::string::npos);
    CHECK(base_url_problem("https://api.runpod.io/graphql") != "");
    CHECK(base_url_problem("http://h:1?x=1") != "");
    CHECK(base_url_problem("ftp://h") != "");
    CHECK(base_url_problem("http://") != "");
    CHECK(base_url_problem("http://user:pw@h") != "");
}

TEST_CASE("create answers: a 5xx, a 429 or a non-JSON error leaves open that the create happened") {
    auto answer = [](long status, std::string body) {
        common::http::Response r;
        r.status = status;
        r.body = std::move(body);
        return create_answer_is_ambiguous(r);
    };
    CHECK(answer(503, R"({"success": false, "msg": "Service Unavailable"})"));
    CHECK(answer(500, R"({"detail": "no capacity available"})"));
    CHECK(answer(429, R"({"detail": "Too many requests"})"));
    CHECK(answer(404, "<html>Not available</html>"));
    CHECK(answer(400, ""));
    CHECK_FALSE(answer(404, R"({"success": false, "error": "no_such_ask"})"));
    CHECK_FALSE(answer(400, R"({"detail": "No capacity available"})"));
    CHECK_FALSE(answer(200, R"({"success": false})"));
}

TEST_CASE("runpod: extensions.code wins over the message, and 'not enough balance' is quota, not capacity") {
    auto kind = [](const char * body) { return runpod_graphql_error(json::parse(body), "create").kind(); };
    CHECK(kind(R"J([{"message": "Not enough balance to deploy this pod", "extensions": {"code": "INSUFFICIENT_BALANCE"}}])J") ==
          common::ErrorKind::Quota);
    CHECK(kind(R"J([{"message": "Not enough balance to deploy this pod"}])J") == common::ErrorKind::Quota);
    CHECK(kind(R"J([{"message": "Not enough GPUs free right now"}])J") == common::ErrorKind::Capacity);
    CHECK(kind(R"J([{"message": "pod not found, not enough rights", "extensions": {"code": "FORBIDDEN"}}])J") ==
          common::ErrorKind::Auth);
}

TEST_CASE("vast: VRAM is snapped to the nominal size, and the server's gpu_ram floor admits exactly what the local check keeps") {
    CHECK(vast_vram_gb(24564) == 24);    // RTX 4090
    CHECK(vast_vram_gb(46068) == 48);    // L40S: 45.0 GiB reported
    CHECK(vast_vram_gb(45837) == 48);    // the same card on another host
    CHECK(vast_vram_gb(143771) == 141);  // H200: 140.4 GiB
    CHECK(vast_vram_gb(81559) == 80);    // H100
    CHECK(vast_vram_gb(196608) == 192);  // MI300X
    CHECK(vast_vram_gb(11264) == 11);    // RTX 2080 Ti: not a 12 GB card
    CHECK(vast_vram_gb(22528) == 22);    // 22.0 GiB: below 0.93 × 24, so not snapped up
    CHECK(vast_vram_gb(0) == 0);
    auto vast_offer = [](double mib) {
        Offer o;
        o.provider = "vast";
        o.gpu_count = 1;
        o.vram_gb_per_gpu = vast_vram_gb(mib);
        return o;
    };
    for (double asked : {11.0, 12.0, 16.0, 23.0, 24.0, 40.0, 45.0, 48.0, 80.0, 141.0, 192.0, 194.0}) {
        OfferFilter f;
        f.min_vram_gb = asked;
        const double floor_mb = vast_min_gpu_ram_mb(asked);
        for (int mib = static_cast<int>(asked * 700); mib <= static_cast<int>(asked * 1200); ++mib) {
            bool server = mib >= floor_mb, local = offer_matches(vast_offer(mib), f);
            if (server != local) {
                FAIL_CHECK("asked " << asked << " GB, gpu_ram " << mib << ": server " << server << ", local " << local);
                break;
            }
        }
    }
    OfferFilter f;
    f.min_vram_gb = 48;
    CHECK(offer_matches(vast_offer(46068), f));        // the L40S the server admitted is kept
    f.min_vram_gb = 141;
    CHECK(offer_matches(vast_offer(143771), f));       // and the H200
    f.min_vram_gb = 194;
    CHECK_FALSE(offer_matches(vast_offer(196608), f)); // a 192 GB card is not a 194 GB one
    f.min_vram_gb = 12;
    CHECK_FALSE(offer_matches(vast_offer(11264), f));  // nor an 11 GB card a 12 GB one
}

TEST_CASE("hostile bodies: offers that multiply (types x data centres, types x regions, items) are capped per provider") {
    // RunPod: 300 types, each stocked in all of 300 data centres: 90000 offers uncapped, built in
    // one pass over dataCenters (the rescans were types x data centres x entries).
    json types = json::array(), dcs = json::array();
    for (int t = 0; t < 300; ++t)
        types.push_back({{"id", "T" + std::to_string(t)}, {"secureCloud", true}, {"securePrice", 1.0},
                         {"memoryInGb", 80}, {"lowestPrice", {{"stockStatus", "High"}}}});
    for (int d = 0; d < 300; ++d) {
        json avail = json::array();
        for (int t = 0; t < 300; ++t) avail.push_back({{"gpuTypeId", "T" + std::to_string(t)}, {"stockStatus", "High"}});
        dcs.push_back({{"id", "DC" + std::to_string(d)}, {"gpuAvailability", avail}});
    }
    auto offers = runpod_parse_offers({{"gpuTypes", types}, {"dataCenters", dcs}}, 1, true);
    CHECK(offers.size() == kMaxOffersPerProvider);
    size_t of_first = 0;
    for (const auto & o : offers) of_first += o.create_data["gpuTypeId"] == "T0";
    CHECK(of_first == kMaxPlacesPerType);
    // The index keeps the server's order and one offer per data centre that stocks the type.
    CHECK(offers[0].create_data["dataCenterId"] == "DC0");
    CHECK(offers[1].create_data["dataCenterId"] == "DC1");

    // Lambda: one type with 9000 regions with capacity.
    json regions = json::array();
    for (int r = 0; r < 9000; ++r) regions.push_back({{"name", "r" + std::to_string(r)}});
    json lambda_types = json::object();
    for (int t = 0; t < 200; ++t)
        lambda_types["gpu_1x_t" + std::to_string(t)] = {
            {"instance_type", {{"gpu_description", "A10 (24 GB PCIe)"}, {"price_cents_per_hour", 75}, {"specs", {{"gpus", 1}}}}},
            {"regions_with_capacity_available", regions}};
    auto lam = lambda_parse_offers(lambda_types);
    CHECK(lam.size() <= kMaxOffersPerProvider);
    size_t of_t0 = 0;
    for (const auto & o : lam) of_t0 += o.create_data["instance_type"] == "gpu_1x_t0";
    CHECK(of_t0 == kMaxPlacesPerType);

    // Prime: one page of 9000 items.
    json items = json::array();
    for (int i = 0; i < 9000; ++i)
        items.push_back({{"cloudId", "c" + std::to_string(i)}, {"gpuType", "H100_80GB"}, {"gpuCount", 1},
                         {"gpuMemory", 80}, {"prices", {{"onDemand", 2.0}}}});
    CHECK(prime_parse_offers({{"items", items}}).size() == kMaxOffersPerProvider);
}
