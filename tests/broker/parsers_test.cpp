// Recorded response bodies (shapes from providers-api.md) → the providers' pure parsers and request
// builders: units converted once, SSH endpoints derived the documented way, traps avoided.
#include "broker/providers/providers.h"
#include "common/error.h"

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
    CHECK(q["gpu_ram"]["gte"].get<double>() == doctest::Approx(22800));
    CHECK(q["type"] == "on-demand");
    CHECK(q["rentable"]["eq"] == true);
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
