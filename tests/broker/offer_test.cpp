// Offer normalisation, filtering and sorting (pure functions), and the instance naming convention.
#include <filesystem>

#include "broker/instance.h"
#include "broker/offer.h"
#include "common/error.h"
#include "common/subprocess.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace broker;

namespace {
Offer make(const std::string & provider, const std::string & id, const std::string & model, int n, double vram,
           double price) {
    Offer o;
    o.provider = provider;
    o.offer_id = id;
    o.manufacturer = "NVIDIA";
    o.gpu_model = model;
    o.gpu_count = n;
    o.vram_gb_per_gpu = vram;
    o.price_usd_per_hour_total = price;
    o.price_usd_per_hour_gpu = price / n;
    return o;
}
}  // namespace

TEST_CASE("offer: GPU model names are canonical across providers") {
    CHECK(canonical_gpu_model("NVIDIA GeForce RTX 4090") == "RTX 4090");
    CHECK(canonical_gpu_model("RTX_4090") == "RTX 4090");
    CHECK(canonical_gpu_model("Tesla V100-SXM2-16GB") == "V100 SXM2 16GB");
    CHECK(canonical_gpu_model("H100 SXM") == "H100 SXM");
    CHECK(canonical_gpu_model("AMD Instinct MI300X OAM") == "Instinct MI300X OAM");
}

TEST_CASE("offer: manufacturer matches case-insensitively after canonicalisation") {
    CHECK(canonical_manufacturer("Nvidia") == "NVIDIA");
    CHECK(canonical_manufacturer("nvidia") == "NVIDIA");
    CHECK(canonical_manufacturer("AMD") == "AMD");
    OfferFilter f;
    f.manufacturer = "nViDiA";
    CHECK(offer_matches(make("vast", "1", "RTX 4090", 1, 24, 0.4), f));
    f.manufacturer = "amd";
    std::string why;
    CHECK_FALSE(offer_matches(make("vast", "1", "RTX 4090", 1, 24, 0.4), f, &why));
    CHECK(why == "manufacturer");
}

TEST_CASE("offer: every filter is re-checked and names the failing condition") {
    Offer o = make("runpod", "x", "H100 SXM", 2, 80, 5.0);
    o.cpu_ram_gb = 128;
    o.disk_gb = 200;
    o.region = "US-TX-3";
    o.cloud = CloudType::Community;
    std::string why;
    auto fails = [&](OfferFilter f, const char * expect) {
        CHECK_FALSE(offer_matches(o, f, &why));
        CHECK(why == expect);
    };
    OfferFilter f;
    CHECK(offer_matches(o, f));
    f = {}; f.gpu = "a100"; fails(f, "gpu");
    f = {}; f.gpu = "h100"; CHECK(offer_matches(o, f));
    f = {}; f.min_vram_gb = 81; fails(f, "min_vram");
    f = {}; f.gpu_count = 1; fails(f, "gpus");
    f = {}; f.max_price_usd_per_hour = 4.99; fails(f, "max_price");
    f = {}; f.max_price_usd_per_hour = 5.0; CHECK(offer_matches(o, f));
    f = {}; f.min_ram_gb = 129; fails(f, "min_ram");
    f = {}; f.min_disk_gb = 201; fails(f, "min_disk");
    f = {}; f.cloud = CloudType::Secure; fails(f, "cloud");
    f = {}; f.spot = true; fails(f, "spot");
    f = {}; f.region = "eu"; fails(f, "region");
    f = {}; f.region = "us-tx"; CHECK(offer_matches(o, f));
    f = {}; f.providers = {"vast"}; fails(f, "provider");
    f = {}; f.offer_id = "y"; fails(f, "offer_id");
}

TEST_CASE("offer: an offer that does not state RAM or disk is not excluded by those filters") {
    Offer o = make("runpod", "x", "H100 SXM", 1, 80, 2.0);
    OfferFilter f;
    f.min_ram_gb = 64;
    f.min_disk_gb = 100;
    CHECK(offer_matches(o, f));
}

TEST_CASE("offer: impossible filters are usage errors") {
    OfferFilter f;
    f.gpu_count = 0;
    CHECK_THROWS_AS(validate_filter(f), common::Error);
    f = {};
    f.max_price_usd_per_hour = -1;
    CHECK_THROWS_AS(validate_filter(f), common::Error);
    f = {};
    f.min_vram_gb = 5000;
    try {
        validate_filter(f);
        FAIL("expected an error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find("--min-vram") != std::string::npos);
    }
}

TEST_CASE("offer: sorting by price, per-GPU price, VRAM and value") {
    std::vector<Offer> v = {make("a", "1", "A", 1, 24, 0.5), make("b", "2", "B", 2, 80, 4.0), make("c", "3", "C", 8, 80, 8.0)};
    sort_offers(v, SortKey::Price);
    CHECK(v[0].offer_id == "1");
    CHECK(v[2].offer_id == "3");
    sort_offers(v, SortKey::PricePerGpu);
    CHECK(v[0].offer_id == "1");  // 0.5/GPU
    CHECK(v[1].offer_id == "3");  // 1.0/GPU
    sort_offers(v, SortKey::Vram);
    CHECK(v[0].offer_id == "2");  // 80 GB, cheaper than the other 80 GB
    sort_offers(v, SortKey::Value);
    CHECK(v[0].offer_id == "3");  // 640 GB for $8 = 80 GB/$
    CHECK(parse_sort_key("PRICE") == SortKey::Price);
    CHECK_THROWS_AS(parse_sort_key("cheapest"), common::Error);
}

TEST_CASE("instance: names carry prefix, run id, role and deadline, and parse back") {
    std::string n = format_instance_name({"ab12", "main", 1800000000});
    CHECK(n == "tk-ab12-main-dl1800000000");
    auto p = parse_instance_name(n);
    REQUIRE(p);
    CHECK(p->run_id == "ab12");
    CHECK(p->role == "main");
    CHECK(p->deadline_unix == 1800000000);
    CHECK_FALSE(parse_instance_name("my-own-pod"));
    CHECK_FALSE(parse_instance_name("tk-AB-main-dl1"));
}

TEST_CASE("instance: JSON rows carry uptime, cost so far and the SSH endpoint") {
    Instance i;
    i.provider = "runpod";
    i.id = "p1";
    i.name = "tk-r1-main-dl100";
    i.status = InstanceStatus::Running;
    i.price_usd_per_hour = 2.0;
    i.uptime_s = 1800;
    i.ssh = SshEndpoint{"1.2.3.4", 2222, "root", ""};
    auto j = instance_to_json(i, 0);
    CHECK(j["cost_so_far_usd"].get<double>() == doctest::Approx(1.0));
    CHECK(j["ssh"] == "root@1.2.3.4:2222");
    CHECK(j["run_id"] == "r1");
    CHECK(ssh_command(i, "/k") == "ssh -p 2222 -i /k root@1.2.3.4");
}

TEST_CASE("offer: an unknown manufacturer is a usage error naming the value and the accepted ones") {
    OfferFilter f;
    f.manufacturer = "foo";
    try {
        validate_filter(f);
        FAIL("expected an error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find("--manufacturer") != std::string::npos);
        CHECK(e.message().find("'foo'") != std::string::npos);
        CHECK(e.message().find("nvidia, amd") != std::string::npos);
    }
    for (const char * ok : {"nvidia", "NVIDIA", "Nvidia", "amd", "AMD", "nvidia corporation"}) {
        f.manufacturer = ok;
        CHECK_NOTHROW(validate_filter(f));
    }
    f = {};
    f.min_ram_gb = 1e300;  // would overflow the integer pushed to RunPod
    CHECK_THROWS_AS(validate_filter(f), common::Error);
    f = {};
    f.min_disk_gb = 1e300;
    CHECK_THROWS_AS(validate_filter(f), common::Error);
}

TEST_CASE("instance: SSH hosts and users from a provider must be plain names") {
    for (const char * ok : {"1.2.3.4", "203.0.113.9", "ssh5.vast.ai", "host-1.example.com.", "2001:db8::1", "localhost"})
        CHECK_MESSAGE(valid_ssh_host(ok), ok);
    for (const char * bad : {"", "127.0.0.9;touch X;", "-oProxyCommand=x", "a b", "h$(id)", "a..b", "x\n", "1.2.3.4:22",
                             "[::1]", "host/x", "-h.example"})
        CHECK_FALSE_MESSAGE(valid_ssh_host(bad), bad);
    CHECK_FALSE(valid_ssh_host(std::string(254, 'a')));
    for (const char * ok : {"root", "ubuntu", "_svc", "a-b_c9"}) CHECK_MESSAGE(valid_ssh_user(ok), ok);
    for (const char * bad : {"", "-oProxyCommand=touch X", "Root", "a;b", "a b", "9user", "u$"})
        CHECK_FALSE_MESSAGE(valid_ssh_user(bad), bad);
    CHECK_FALSE(valid_ssh_user(std::string(33, 'a')));
}

TEST_CASE("instance: every word of the printed ssh command stays one word in a shell") {
    tests::TempDir dir;
    const std::string marker = dir / "pwned";
    Instance i;
    i.ssh = SshEndpoint{"127.0.0.9;touch " + marker + ";", 22, "root", ""};  // as if it had passed a parser
    const std::string key = dir / "my key;$(touch " + marker + ")";
    std::string cmd = ssh_command(i, key);
    REQUIRE(cmd.rfind("ssh ", 0) == 0);
    // The same words, printed one per line by the shell instead of run by ssh.
    auto r = common::run_process({"sh", "-c", "printf '%s\\n' " + cmd.substr(4)});
    REQUIRE(r.exit_code == 0);
    CHECK(r.out == "-p\n22\n-i\n" + key + "\nroot@127.0.0.9;touch " + marker + ";\n");
    CHECK_FALSE(std::filesystem::exists(marker));
    // Plain values stay readable.
    i.ssh = SshEndpoint{"1.2.3.4", 2222, "root", ""};
    CHECK(ssh_command(i, "/home/a/.ssh/id_ed25519") == "ssh -p 2222 -i /home/a/.ssh/id_ed25519 root@1.2.3.4");
}
