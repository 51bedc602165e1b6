// The sweep file (deploy/sweep.h): reading base + member overrides, every check made before
// renting (ids, collisions, member configs, families, budget), the shipped predecessor sweeps, and
// the dry-run plan against the RunPod and Vast emulators with a Hub stand-in serving config.json
// (tests/deploy/hub-configs): offers chosen per member, nothing created.
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "broker/broker.h"
#include "common/error.h"
#include "common/subprocess.h"
#include "deploy/sweep.h"
#include "tests/support/emulator.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;

namespace {

const char * kBase = R"(sweep:
  name: tiny-sweep
  max_parallel: 3
  download_stagger: 10s
base:
  data: {synthetic_tokens: {vocab: 64}, num_sequences: 2, sequence_length: 16}
  resources: {providers: [local], gpu_count: 0, disk_gb: 1}
  policy: {max_duration: 1h, on_failure: terminate}
members:
)";

std::string usage_message(const std::string & yaml) {
    try {
        deploy::parse_sweep(yaml, "t.yaml");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        return e.message();
    }
    FAIL("no error for:\n" << yaml);
    return "";
}

std::string fixture_member(const std::string & id, const std::string & family = "olmoe") {
    return "  - id: " + id + "\n    model: {fixture: {family: " + family + ", layers: 2, hidden: 32}}\n";
}

}  // namespace

TEST_CASE("sweep: base plus member overrides give each member its own resolved run config") {
    std::string yaml = std::string(kBase) + fixture_member("olmoe-tiny") +
                       "  - id: llama-tiny\n    family: llama\n    model: {fixture: {family: llama, layers: 3, hidden: 16}, dtype: f32}\n"
                       "    resources: {gpu_count: 2, min_vram_gb: 40, disk_gb: 20, providers: [runpod]}\n"
                       "    policy: {max_duration: 30m, heartbeat_timeout: 2m, max_cost_usd: 3}\n";
    auto s = deploy::parse_sweep(yaml, "t.yaml");
    CHECK(s.name == "tiny-sweep");
    CHECK(s.max_parallel == 3);
    CHECK(s.download_stagger_s == 10);
    REQUIRE(s.members.size() == 2);
    const auto & a = s.members[0];
    CHECK(a.id == "olmoe-tiny");
    CHECK(a.family == "olmoe");
    CHECK(a.config.name == "olmoetiny");
    CHECK(a.config.output_dir == "runs/sweeps/tiny-sweep");
    CHECK(a.config.resources.gpu_count == 0);
    CHECK(a.config.data.num_sequences == 2);
    CHECK(a.config.policy.max_duration_s == 3600);
    const auto & b = s.members[1];
    CHECK(b.config.model.fixture->layers == 3);
    CHECK(b.config.model.dtype == "f32");
    CHECK(b.config.resources.gpu_count == 2);
    CHECK(*b.config.resources.min_vram_gb == 40);
    CHECK(b.config.resources.disk_gb == 20);
    CHECK(b.config.policy.max_duration_s == 1800);
    CHECK(b.config.policy.heartbeat_timeout_s == 120);
    CHECK(b.config.data.num_sequences == 2);  // from the base
    CHECK(b.config.policy.on_failure == deploy::EndAction::Terminate);
    CHECK(*deploy::member_cost_bound_usd(b.config) == 3);
}

TEST_CASE("sweep: ids that are short, repeated or equal without dashes are refused before renting") {
    CHECK(usage_message(std::string(kBase) + fixture_member("q3")).find("4..24") != std::string::npos);
    CHECK(usage_message(std::string(kBase) + fixture_member("Qwen-big")).find("lower-case") != std::string::npos);
    CHECK(usage_message(std::string(kBase) + fixture_member("qwen3-8b") + fixture_member("qwen3-8b")).find("used twice") !=
          std::string::npos);
    auto m = usage_message(std::string(kBase) + fixture_member("qwen3-8b") + fixture_member("qwen38b"));
    CHECK(m.find("same once dashes are dropped") != std::string::npos);
    // Ids past 20 characters without dashes agree on the run name's first 20.
    m = usage_message(std::string(kBase) + fixture_member("abcdefghijklmnopqrstuv") + fixture_member("abcdefghijklmnopqrstuw"));
    CHECK(m.find("share the run name") != std::string::npos);
}

TEST_CASE("sweep: a bad member config, unknown family or key, and an over-budget sweep are refused naming the member") {
    auto m = usage_message(std::string(kBase) + fixture_member("good-one") + "  - id: bad-gpus\n    model: {hub: a/b}\n"
                                                                            "    resources: {gpu_count: 9}\n");
    CHECK(m.find("gpu_count") != std::string::npos);
    m = usage_message(std::string(kBase) + "  - id: no-model\n    resources: {gpu_count: 0}\n");
    CHECK(m.find("no-model") != std::string::npos);
    m = usage_message(std::string(kBase) + "  - id: strange\n    family: gpt9\n    model: {hub: a/b}\n");
    CHECK(m.find("unknown family 'gpt9'") != std::string::npos);
    m = usage_message(std::string(kBase) + "  - id: typo-key\n    model: {hub: a/b}\n    resorces: {gpu_count: 1}\n");
    CHECK(m.find("resorces") != std::string::npos);
    m = usage_message(std::string(kBase) + "  - id: mismatch\n    family: llama\n    model: {fixture: {family: olmoe}}\n");
    CHECK(m.find("the fixture is 'olmoe'") != std::string::npos);
    std::string cloud = "sweep: {name: costly, max_cost_usd: 10}\nbase:\n  data: {synthetic_tokens: {vocab: 64}}\n"
                        "  resources: {providers: [runpod], gpu_count: 1, min_vram_gb: 24}\nmembers:\n";
    m = usage_message(cloud + "  - id: first\n    model: {hub: a/b}\n    policy: {max_cost_usd: 6}\n"
                              "  - id: second\n    model: {hub: a/c}\n    policy: {max_cost_usd: 6}\n");
    CHECK(m.find("add up to $12.00, over sweep.max_cost_usd $10.00") != std::string::npos);
    m = usage_message(cloud + "  - id: unbounded\n    model: {hub: a/b}\n");
    CHECK(m.find("no cost bound") != std::string::npos);
    // The price cap bounds a member too: $2/h x 3h = $6.
    auto s = deploy::parse_sweep(cloud + "  - id: by-price\n    model: {hub: a/b}\n    resources: {max_price_usd_per_hour: 2}\n", "t");
    CHECK(*deploy::member_cost_bound_usd(s.members[0].config) == doctest::Approx(6));
    std::string many = kBase;
    for (int i = 0; i < 65; ++i) many += fixture_member("member" + std::to_string(1000 + i));
    CHECK(usage_message(many).find("at most 64") != std::string::npos);
}

TEST_CASE("sweep: the shipped predecessor sweeps load, and a real sweep refuses the issue-13 families up front") {
    auto moe = deploy::load_sweep(std::string(TOOLKIT_SOURCE_DIR) + "/configs/sweeps/predecessor-moe.yaml");
    REQUIRE(moe.members.size() == 7);
    int blocked = 0;
    for (const auto & m : moe.members) {
        CHECK(m.config.name.size() <= 20);
        // From the memory estimate, except gpt-oss-120b: its packed MXFP4 experts peak at 60.8 GiB on
        // one H100, while the estimate's safety factor says ~82 GB, so the file gives 80 on one GPU.
        if (m.id == "gpt-oss-120b") {
            CHECK(m.config.resources.min_vram_gb.value_or(0) == 80);
            CHECK(m.config.resources.gpu_count == 1);
        } else {
            CHECK_FALSE(m.config.resources.min_vram_gb);
        }
        // A member is blocked exactly when its family still waits on issue #13; glm4_moe runs.
        CHECK(m.blocked == deploy::pending_family_reason(m.family));
        if (m.family == "glm4_moe") CHECK(m.blocked.empty());
        if (!m.blocked.empty()) {
            ++blocked;
            CHECK(m.family == "qwen3_next");
            CHECK(m.blocked.find("issue #13") != std::string::npos);
        }
    }
    CHECK(std::find(deploy::extract_families().begin(), deploy::extract_families().end(), "glm4_moe") !=
          deploy::extract_families().end());
    if (blocked > 0) {
        try {
            deploy::refuse_blocked(moe);
            FAIL("a sweep with blocked members was not refused");
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Usage);
            CHECK(e.message().find("qwen3-next-80b-a3b") != std::string::npos);
            CHECK(e.message().find("glm-4-5-air") == std::string::npos);
            CHECK(e.message().find("nothing was rented") != std::string::npos);
        }
    } else {
        CHECK_NOTHROW(deploy::refuse_blocked(moe));
    }
    auto dense = deploy::load_sweep(std::string(TOOLKIT_SOURCE_DIR) + "/configs/sweeps/predecessor-dense.yaml");
    REQUIRE(dense.members.size() == 5);
    for (const auto & m : dense.members) CHECK(m.blocked.empty());
    CHECK_NOTHROW(deploy::refuse_blocked(dense));
}

TEST_CASE("sweep dry run: offers per member from the RunPod and Vast emulators, estimate from config.json, nothing rented") {
    tests::TempDir dir("sweep-plan");
    tests::Emulator runpod("runpod", {.api_key = "k-runpod"});
    tests::Emulator vast("vast", {.api_key = "k-vast"});
    // A Hub stand-in: the folder laid out as the Hub serves config.json.
    auto hub = common::ChildProcess::spawn({"python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                                            std::string(TOOLKIT_SOURCE_DIR) + "/tests/deploy/hub-configs"},
                                           {.stdout_path = dir / "hub.out"});
    int port = 0;
    for (int i = 0; i < 100 && port == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        std::string t = tests::read_file(dir / "hub.out");
        auto at = t.find(" port ");
        if (at != std::string::npos && t.find(' ', at + 6) != std::string::npos) port = std::stoi(t.substr(at + 6));
    }
    REQUIRE(port > 0);
    tests::EnvGuard e1("RUNPOD_API_KEY", "k-runpod"), e2("RUNPOD_BASE_URL", runpod.base_url()), e3("VAST_API_KEY", "k-vast"),
        e4("VAST_BASE_URL", vast.base_url()), e5("HF_ENDPOINT", "http://127.0.0.1:" + std::to_string(port)),
        e6("BROKER_CONFIG", dir / "none.yaml"), e7("LAMBDA_API_KEY", std::nullopt), e8("PRIME_API_KEY", std::nullopt);
    std::string yaml = R"(sweep: {name: plan-test, max_cost_usd: 100}
base:
  data: {synthetic_tokens: {vocab: 64}}
  resources: {providers: [runpod, vast], gpu_count: 1, min_vram_gb: auto, max_price_usd_per_hour: 10}
  policy: {max_duration: 2h, max_cost_usd: 20}
members:
  - id: qwen3-8b
    model: {hub: Qwen/Qwen3-8B}
  - id: mixtral-two
    model: {hub: mistralai/Mixtral-8x7B-v0.1}
    resources: {gpu_count: 2}
  - id: vast-only
    model: {hub: Qwen/Qwen3-0.6B}
    resources: {providers: [vast]}
  - id: nowhere
    model: {hub: Qwen/Qwen3-0.6B}
    resources: {gpu_count: 8, min_vram_gb: 1000}
  - id: no-config
    model: {hub: nobody/missing}
  - id: next-80b
    family: qwen3_next
    model: {hub: Qwen/Qwen3-Next-80B-A3B-Instruct}
)";
    auto s = deploy::parse_sweep(yaml, "plan.yaml");
    broker::BrokerOptions bo;
    bo.state_dir = dir / "state";
    broker::Broker b(bo);
    auto plan = deploy::plan_sweep(s, b);
    INFO(plan.dump(1));
    const auto & m = plan["members"];
    REQUIRE(m.size() == 6);
    // Qwen3-8B: 8.19B parameters from config.json, ~20 GB per GPU: the cheapest 24 GB card on RunPod.
    CHECK(m[0]["state"] == "planned");
    CHECK(m[0]["params"].get<double>() == doctest::Approx(8.19e9).epsilon(0.01));
    CHECK(m[0]["min_vram_gb"].get<double>() > 16);
    CHECK(m[0]["min_vram_gb"].get<double>() <= 24);
    CHECK(m[0]["offer"].get<std::string>().rfind("runpod:", 0) == 0);
    CHECK(m[0]["cost_bound_usd"].get<double>() == doctest::Approx(2 * m[0]["price_usd_per_hour"].get<double>()));
    // Mixtral on two GPUs: each must hold half of ~112 GB.
    CHECK(m[1]["state"] == "planned");
    CHECK(m[1]["min_vram_gb"].get<double>() > 48);
    CHECK(m[1]["offer"].get<std::string>().find(" x2 ") != std::string::npos);
    CHECK(m[2]["offer"].get<std::string>().rfind("vast:", 0) == 0);
    CHECK(m[3]["state"] == "no-offer");
    CHECK(m[3]["note"].get<std::string>().find("nothing matches") != std::string::npos);
    CHECK(m[4]["state"] == "no-offer");
    CHECK(m[4]["note"].get<std::string>().find("no estimate") != std::string::npos);
    CHECK(m[5]["state"] == "blocked");
    double sum = 0;
    for (const auto & r : m)
        if (r.contains("cost_bound_usd")) sum += r["cost_bound_usd"].get<double>();
    CHECK(plan["total_cost_bound_usd"].get<double>() == doctest::Approx(sum));
    // Searched, never created.
    for (auto * emu : {&runpod, &vast}) {
        auto st = emu->state();
        CHECK(st["instances"].empty());
        bool searched = false;
        for (const auto & q : st["requests"]) {
            CHECK(q.value("action", "") != "create");
            searched = searched || q.value("action", "") == "search";
        }
        CHECK(searched);  // vast: the vast-only member and the fall-through of the one RunPod cannot place
    }
    hub.stop();
}
