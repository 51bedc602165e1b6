// The sweep file (deploy/sweep.h): reading base + member overrides, every check made before
// renting (ids, collisions, member configs, families, budget), the shipped predecessor sweeps, and
// the dry-run plan against the RunPod and Vast emulators with a Hub stand-in serving config.json
// (tests/deploy/hub-configs): offers chosen per member, nothing created.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <sstream>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "broker/broker.h"
#include "common/error.h"
#include "common/program.h"
#include "common/subprocess.h"
#include "deploy/download_slots.h"
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

TEST_CASE("sweep: a member's resources.offload_gb overlays the base, and offload below min_cpu_ram_gb is refused naming the member") {
    std::string cloud = "sweep: {name: offload}\nbase:\n  data: {synthetic_tokens: {vocab: 64}}\n"
                        "  resources: {providers: [runpod], gpu: H200, gpu_count: 2, max_price_usd_per_hour: 9}\n"
                        "  policy: {max_duration: 3h}\nmembers:\n";
    auto s = deploy::parse_sweep(cloud + "  - id: glm-two\n    model: {hub: zai-org/GLM-4.5-Air}\n"
                                         "  - id: glm-one\n    model: {hub: zai-org/GLM-4.5-Air}\n    resources: {gpu_count: 1, offload_gb: 110}\n",
                                 "t.yaml");
    REQUIRE(s.members.size() == 2);
    CHECK(s.members[0].config.resources.offload_gb == 0);
    CHECK(s.members[0].config.resources.gpu_count == 2);
    CHECK(s.members[1].config.resources.offload_gb == 110);
    CHECK(s.members[1].config.resources.gpu_count == 1);
    CHECK(s.members[1].config.resources.gpu_filter == "H200");  // the rest from the base
    CHECK(*deploy::offer_min_ram_gb(s.members[1].config.resources) == 137);  // ceil(110 x 1.1 + 16)
    auto m = usage_message(cloud + "  - id: short-ram\n    model: {hub: zai-org/GLM-4.5-Air}\n"
                                   "    resources: {gpu_count: 1, offload_gb: 110, min_cpu_ram_gb: 64}\n");
    CHECK(m.find("short-ram") != std::string::npos);
    CHECK(m.find("resources.min_cpu_ram_gb") != std::string::npos);
    CHECK(m.find("resources.offload_gb") != std::string::npos);
    m = usage_message(cloud + "  - id: bad-offload\n    model: {hub: zai-org/GLM-4.5-Air}\n    resources: {offload_gb: -3}\n");
    CHECK(m.find("resources.offload_gb: -3 is out of range") != std::string::npos);
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

TEST_CASE("sweep: a bad member config, unknown family or key, and an unbounded member under a budget are refused naming the member") {
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
    // Bounds adding up past the budget are allowed: the budget is enforced on the accrued cost while
    // running (see "sweep run: the live budget ..." below).
    auto over = deploy::parse_sweep(cloud + "  - id: first\n    model: {hub: a/b}\n    policy: {max_cost_usd: 6}\n"
                                            "  - id: second\n    model: {hub: a/c}\n    policy: {max_cost_usd: 6}\n",
                                    "t");
    CHECK(over.members.size() == 2);
    CHECK(*over.max_cost_usd == doctest::Approx(10));
    m = usage_message(cloud + "  - id: unbounded\n    model: {hub: a/b}\n");
    CHECK(m.find("no cost bound") != std::string::npos);
    // The price cap bounds a member too, over the instance's lifetime: $2/h x (3h + 30 min to pull
    // and finish) = $7; kept after the run (keep_ttl 1h), $9; a cost cap below that binds.
    auto s = deploy::parse_sweep(cloud + "  - id: by-price\n    model: {hub: a/b}\n    resources: {max_price_usd_per_hour: 2}\n", "t");
    CHECK(*deploy::member_cost_bound_usd(s.members[0].config) == doctest::Approx(7));
    s = deploy::parse_sweep(cloud + "  - id: kept\n    model: {hub: a/b}\n    resources: {max_price_usd_per_hour: 2}\n"
                                    "    policy: {on_failure: keep, keep_ttl: 1h}\n"
                                    "  - id: kept-capped\n    model: {hub: a/b}\n    resources: {max_price_usd_per_hour: 2}\n"
                                    "    policy: {on_success: keep, keep_ttl: 1h, max_cost_usd: 8}\n",
                            "t");
    CHECK(*deploy::member_cost_bound_usd(s.members[0].config) == doctest::Approx(9));
    CHECK(deploy::member_lifetime_s(s.members[0].config.policy, 2) == doctest::Approx(4.5 * 3600));
    CHECK(*deploy::member_cost_bound_usd(s.members[1].config) == doctest::Approx(8));
    CHECK(deploy::member_lifetime_s(s.members[1].config.policy, 2) == doctest::Approx(4 * 3600));
    std::string many = kBase;
    for (int i = 0; i < 65; ++i) many += fixture_member("member" + std::to_string(1000 + i));
    CHECK(usage_message(many).find("at most 64") != std::string::npos);
}

TEST_CASE("sweep: the shipped predecessor sweeps load, none blocked since issue 13, and a blocked member is refused up front") {
    auto moe = deploy::load_sweep(std::string(TOOLKIT_SOURCE_DIR) + "/configs/sweeps/predecessor-moe.yaml");
    REQUIRE(moe.members.size() == 8);  // OLMoE twice: bf16, and fp32 as the published row was run
    int blocked = 0, olmoe_f32 = 0;
    for (const auto & m : moe.members) {
        CHECK(m.config.name.size() <= 20);
        CHECK(m.config.analysis.perplexity);  // the one-command rerun measures it, as the study did for dense models
        olmoe_f32 += m.family == "olmoe" && m.config.model.dtype == "f32";
        // From the memory estimate, except gpt-oss-120b: its packed MXFP4 experts peak at 60.8 GiB on
        // one H100, while the estimate's safety factor says ~82 GB, so the file gives 80 on one GPU.
        if (m.id == "gpt-oss-120b") {
            CHECK(m.config.resources.min_vram_gb.value_or(0) == 80);
            CHECK(m.config.resources.gpu_count == 1);
        } else {
            CHECK_FALSE(m.config.resources.min_vram_gb);
        }
        // A member is blocked exactly when its family still waits; issue #13's two (glm4_moe,
        // qwen3_next) run now.
        CHECK(m.blocked == deploy::pending_family_reason(m.family));
        blocked += m.blocked.empty() ? 0 : 1;
    }
    CHECK(blocked == 0);
    CHECK(olmoe_f32 == 1);
    for (const char * family : {"glm4_moe", "qwen3_next"}) {
        CAPTURE(family);
        CHECK(std::find(deploy::extract_families().begin(), deploy::extract_families().end(), family) !=
              deploy::extract_families().end());
        CHECK(deploy::pending_family_reason(family).empty());
    }
    CHECK_NOTHROW(deploy::refuse_blocked(moe));
    // A member marked blocked (what load_sweep does for a pending family) is refused before anything
    // is rented, naming it.
    deploy::SweepFile held = moe;
    held.members[5].blocked = "family qwen3_next (Qwen3-Next) is not implemented in extract yet";
    try {
        deploy::refuse_blocked(held);
        FAIL("a sweep with a blocked member was not refused");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find(held.members[5].id) != std::string::npos);
        CHECK(e.message().find("glm-4-5-air") == std::string::npos);
        CHECK(e.message().find("nothing was rented") != std::string::npos);
    }
    auto dense = deploy::load_sweep(std::string(TOOLKIT_SOURCE_DIR) + "/configs/sweeps/predecessor-dense.yaml");
    REQUIRE(dense.members.size() == 5);
    for (const auto & m : dense.members) {
        CHECK(m.blocked.empty());
        CHECK(m.config.analysis.perplexity);
    }
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
  - id: next-80b-offload
    family: qwen3_next
    model: {hub: Qwen/Qwen3-Next-80B-A3B-Instruct}
    resources: {gpu: H200, offload_gb: 55}
)";
    auto s = deploy::parse_sweep(yaml, "plan.yaml");
    broker::BrokerOptions bo;
    bo.state_dir = dir / "state";
    broker::Broker b(bo);
    auto plan = deploy::plan_sweep(s, b);
    INFO(plan.dump(1));
    const auto & m = plan["members"];
    REQUIRE(m.size() == 7);
    // Qwen3-8B: 8.19B parameters from config.json, ~20 GB per GPU: the cheapest 24 GB card on RunPod.
    CHECK(m[0]["state"] == "planned");
    CHECK(m[0]["params"].get<double>() == doctest::Approx(8.19e9).epsilon(0.01));
    CHECK(m[0]["min_vram_gb"].get<double>() > 16);
    CHECK(m[0]["min_vram_gb"].get<double>() <= 24);
    CHECK(m[0]["offer"].get<std::string>().rfind("runpod:", 0) == 0);
    // Over the instance's lifetime: max_duration 2h + 30 min to pull and finish.
    CHECK(m[0]["lifetime_s"].get<double>() == doctest::Approx(2.5 * 3600));
    CHECK(m[0]["cost_bound_usd"].get<double>() == doctest::Approx(2.5 * m[0]["price_usd_per_hour"].get<double>()));
    // Mixtral on two GPUs: each must hold half of ~112 GB.
    CHECK(m[1]["state"] == "planned");
    CHECK(m[1]["min_vram_gb"].get<double>() > 48);
    CHECK(m[1]["offer"].get<std::string>().find(" x2 ") != std::string::npos);
    CHECK(m[2]["offer"].get<std::string>().rfind("vast:", 0) == 0);
    CHECK(m[3]["state"] == "no-offer");
    CHECK(m[3]["note"].get<std::string>().find("nothing matches") != std::string::npos);
    CHECK(m[4]["state"] == "no-offer");
    CHECK(m[4]["note"].get<std::string>().find("no estimate") != std::string::npos);
    // Qwen3-Next-80B-A3B (79.7 B parameters, from the stand-in config.json) needs ~190 GB on one GPU.
    CHECK(m[5]["params"].get<double>() == doctest::Approx(79.67e9).epsilon(0.001));
    CHECK(m[5]["state"] == "no-offer");
    CHECK(m[5]["note"].get<std::string>().find("nothing matches") != std::string::npos);
    // The same on one H200 with 55 GB offloaded to pinned host memory: ~134 GB on the GPU.
    CHECK(m[6]["offload_gb"] == 55);
    CHECK(m[6]["min_vram_gb"].get<double>() > 100);
    CHECK(m[6]["min_vram_gb"].get<double>() <= 140);
    CHECK(m[6]["state"] == "planned");
    CHECK(m[6]["offer"].get<std::string>().find("H200") != std::string::npos);
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

// ---- running: the sweep runner against a stand-in member program --------------------------------
// run_sweep's contract with a member is the command line, the run directory (journal.jsonl,
// state.json) and the exit code. This stand-in keeps that contract without renting anything: it
// records its argv, "rents" at FAKE_PRICE $/h from now, runs FAKE_SECONDS, and on SIGTERM runs its
// "finish" (a `terminating` file at once; FAKE_FINISH_PULL seconds of a salvage pull, a
// results/*.bifrost-part file growing every 0.2 s; then FAKE_FINISH quiet seconds; then journal and
// end time in state.json) and exits 130, as the real member does.
namespace {

const char * kFakeMember = R"(#!/bin/sh
dir=; prev=
for a in "$@"; do
  [ "$prev" = --run-dir ] && dir=$a
  [ "$prev" = --resume ] && dir=$a
  prev=$a
done
mkdir -p "$dir"
printf '%s\n' "$*" > "$dir/argv"
start=$(date +%s)
printf '{"run_id": "fake"}\n' > "$dir/run.json"
printf '{"step":"create","event":"done","unix_s":%s}\n{"step":"run","event":"start","unix_s":%s}\n' "$start" "$start" > "$dir/journal.jsonl"
id="fake-$$"
printf '{"instance": {"provider": "local", "id": "%s", "price_usd_per_hour": %s, "created_unix": %s}}\n' "$id" "$FAKE_PRICE" "$start" > "$dir/state.json"
end_run() {
  now=$(date +%s)
  printf '{"step":"run","event":"%s","unix_s":%s}\n{"step":"finish","event":"done","unix_s":%s}\n' "$1" "$now" "$now" >> "$dir/journal.jsonl"
  printf '{"instance": {"provider": "local", "id": "%s", "price_usd_per_hour": %s, "created_unix": %s}, "end": {"ended_unix": %s, "by": "%s", "proven_gone": true}}\n' \
    "$id" "$FAKE_PRICE" "$start" "$now" "$2" > "$dir/state.json"
}
pull() {
  mkdir -p "$dir/results"
  i=0
  while [ "$i" -lt $((${FAKE_FINISH_PULL:-0} * 5)) ]; do printf chunk >> "$dir/results/big.bin.bifrost-part"; sleep 0.2; i=$((i + 1)); done
}
trap 'touch "$dir/terminating"; pull; sleep "${FAKE_FINISH:-0}"; end_run failed SIGTERM; exit 130' TERM
i=0
while [ "$i" -lt $((FAKE_SECONDS * 10)) ]; do sleep 0.1; i=$((i + 1)); done
end_run done finished
exit 0
)";

struct FakeSweep {
    explicit FakeSweep(const std::string & head) {
        tests::write_file(dir / "member.sh", kFakeMember);
        fs::permissions(dir / "member.sh", fs::perms::owner_all);
        std::string yaml = "sweep:\n  name: fake\n  output_dir: " + dir.path() + "/out\n" + head +
                           "base:\n  data: {synthetic_tokens: {vocab: 64}}\n  resources: {providers: [local], gpu_count: 0, disk_gb: 1}\n"
                           "members:\n";
        for (const char * id : {"first", "second", "third"})
            yaml += "  - id: " + std::string(id) + "-one\n    model: {fixture: {family: olmoe, layers: 2, hidden: 32}}\n";
        tests::write_file(dir / "sweep.yaml", yaml);
        sweep = deploy::load_sweep(dir / "sweep.yaml");
        options.program = dir / "member.sh";
        options.poll_s = 0.1;
    }
    // Runs the sweep with the runner's stderr (the per-change lines) captured, and common::log's
    // lines (written to fd 2) in `log`.
    int run() {
        std::fflush(stderr);
        const std::string log_path = dir.path() + "/runner-log.txt";
        int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        REQUIRE(log_fd >= 0);
        int saved_fd = ::dup(2);
        ::dup2(log_fd, 2);
        ::close(log_fd);
        std::ostringstream err, out;
        auto * old_err = std::cerr.rdbuf(err.rdbuf());
        auto * old_out = std::cout.rdbuf(out.rdbuf());
        common::Output o(common::OutputFormat::Table);
        int code = -1;
        error.reset();
        try {
            code = deploy::run_sweep(sweep, options, o);
        } catch (const common::Error & e) {
            error = e;
        } catch (const std::exception & e) {  // any other escape is a bug of the runner: reported, not thrown past the redirections
            error = common::Error(common::ErrorKind::Internal, std::string("not a common::Error: ") + e.what());
        }
        std::cerr.rdbuf(old_err);
        std::cout.rdbuf(old_out);
        std::fflush(stderr);
        ::dup2(saved_fd, 2);
        ::close(saved_fd);
        log = tests::read_file(log_path);
        lines = err.str();
        table = out.str();
        return code;
    }
    nlohmann::json summary() const { return nlohmann::json::parse(tests::read_file(dir.path() + "/out/fake/summary.json")); }
    std::string outcome(const std::string & id) const {
        const auto s = summary();  // kept alive for the loop
        for (const auto & m : s["members"])
            if (m["member"] == id) return m["outcome"];
        return "(absent)";
    }
    std::string member_dir(const std::string & id) const { return dir.path() + "/out/fake/" + id; }
    nlohmann::json member_state(const std::string & id) const { return nlohmann::json::parse(tests::read_file(member_dir(id) + "/state.json")); }
    tests::TempDir dir{"sweep-run"};
    deploy::SweepFile sweep;
    deploy::SweepRunOptions options;
    std::string lines, table, log;
    std::optional<common::Error> error;  // what run_sweep threw, if anything
};

}  // namespace

TEST_CASE("sweep run: the live budget stops launching and stops the running members once the accrued cost reaches it") {
    tests::EnvGuard price("FAKE_PRICE", "360"), seconds("FAKE_SECONDS", "60");  // $0.10 a second each
    FakeSweep f("  max_parallel: 2\n  download_stagger: 0s\n  max_cost_usd: 0.5\n");
    auto t0 = std::chrono::steady_clock::now();
    int code = f.run();
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(f.lines);
    CHECK(code == 5);  // quota: the budget
    CHECK(took < 20);  // two members at $0.10/s reach $0.50 in ~3 s, not their 60 s
    CHECK(f.outcome("first-one") == "stopped (budget)");
    CHECK(f.outcome("second-one") == "stopped (budget)");
    CHECK(f.outcome("third-one") == "not started (budget)");
    auto s = f.summary();
    CHECK(s["budget_reached"] == true);
    CHECK(s["total_cost_usd"].get<double>() > 0.3);  // whole seconds in the stand-in's record
    CHECK(s["total_cost_usd"].get<double>() < 1.5);
    // Each running member was stopped through its own finish (SIGTERM), not killed.
    for (const char * m : {"first-one", "second-one"})
        CHECK(nlohmann::json::parse(tests::read_file(f.dir.path() + "/out/fake/" + m + "/state.json"))["end"]["by"] == "SIGTERM");
    CHECK_FALSE(fs::exists(f.dir.path() + "/out/fake/third-one/run.json"));
}

TEST_CASE("sweep run: under the budget every member finishes, and without a TTY each change is a line") {
    tests::EnvGuard price("FAKE_PRICE", "0.36"), seconds("FAKE_SECONDS", "1");
    FakeSweep f("  max_parallel: 3\n  download_stagger: 0s\n  max_cost_usd: 5\n  max_concurrent_downloads: 2\n");
    f.options.live = false;
    CHECK(f.run() == 0);
    CHECK(f.summary()["budget_reached"] == false);
    for (const char * m : {"first-one", "second-one", "third-one"}) CHECK(f.outcome(std::string(m)) == "succeeded");
    // One line per change, none repeated: running, then succeeded, per member; no escape sequences.
    CHECK(f.lines.find("sweep: first-one: running step run") != std::string::npos);
    CHECK(f.lines.find("sweep: first-one: succeeded step finish") != std::string::npos);
    CHECK(f.lines.find("\x1b[") == std::string::npos);
    size_t at = f.lines.find("sweep: second-one: running step run");
    REQUIRE(at != std::string::npos);
    CHECK(f.lines.find("sweep: second-one: running step run", at + 1) == std::string::npos);
    // Every member is told where the sweep's download slots are and how many.
    std::string argv = tests::read_file(f.dir.path() + "/out/fake/first-one/argv");
    CHECK(argv.find("--download-slots " + f.dir.path() + "/out/fake/download-slots:2") != std::string::npos);
}

TEST_CASE("sweep run: a member left from an earlier run with no recorded end counts toward the budget only up to its name's deadline") {
    tests::EnvGuard price("FAKE_PRICE", "0.36"), seconds("FAKE_SECONDS", "1");
    FakeSweep f("  max_parallel: 3\n  download_stagger: 0s\n  max_cost_usd: 10\n");
    f.options.live = false;
    // first-one finished three days ago without an end record (an older run directory: killed while
    // it ran, its finish recorded by a later --resume that could not reach it), $2/h, the deadline
    // in its instance's name 1.5 h after its create: $3.00 at most, not 72 h ($144) that would
    // exhaust the $10 budget before the other members start.
    const double created = std::floor(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() - 3 * 86400);
    const std::string d = f.member_dir("first-one");
    fs::create_directories(d);
    tests::write_file(d + "/run.json", "{\"run_id\": \"abc123\"}\n");
    tests::write_file(d + "/journal.jsonl", "{\"step\":\"run\",\"event\":\"start\",\"unix_s\":" + std::to_string(created) +
                                                "}\n{\"step\":\"finish\",\"event\":\"done\",\"unix_s\":" + std::to_string(created + 60) + "}\n");
    tests::write_file(d + "/state.json", nlohmann::json{{"instance", {{"provider", "local"}, {"id", "i-1"},
                                                                      {"name", "tk-abc123-main-dl" + std::to_string(static_cast<long long>(created + 5400))},
                                                                      {"price_usd_per_hour", 2.0}, {"created_unix", created}}}}
                                                 .dump());
    CHECK(f.run() == 0);
    INFO(f.log);
    CHECK(f.summary()["budget_reached"] == false);
    CHECK(f.outcome("first-one") == "succeeded (earlier)");
    for (const char * m : {"second-one", "third-one"}) CHECK(f.outcome(std::string(m)) == "succeeded");
    const auto summary = f.summary();
    for (const auto & m : summary["members"])
        if (m["member"] == "first-one") CHECK(m["cost_usd"] == "3.00");
}

TEST_CASE("sweep run: on a TTY the table is redrawn in place (member, step, elapsed, $ so far, state)") {
    tests::EnvGuard price("FAKE_PRICE", "3.6"), seconds("FAKE_SECONDS", "1");
    FakeSweep f("  max_parallel: 3\n  download_stagger: 0s\n");
    f.options.live = true;
    CHECK(f.run() == 0);
    CHECK(f.table.find("MEMBER") != std::string::npos);
    CHECK(f.table.find("$ SO FAR") != std::string::npos);
    CHECK(f.table.find("\x1b[4A\x1b[J") != std::string::npos);  // header + 3 members, moved over and cleared
    CHECK(f.table.find("0:00:0") != std::string::npos);         // elapsed
    CHECK(f.lines.find("sweep: first-one: running") == std::string::npos);
}

TEST_CASE("sweep run: a member whose run directory another process drives is waited for, never resumed alongside it") {
    tests::EnvGuard price("FAKE_PRICE", "0.36"), seconds("FAKE_SECONDS", "1");
    FakeSweep f("  max_parallel: 3\n  download_stagger: 0s\n");
    // first-one was started by an earlier sweep and its member process outlived it (members run in
    // their own sessions): it is mid-run, and it holds its run directory's lock. Here that driver is
    // flock(1), which ends the run two seconds from now and lets go.
    const std::string d = f.dir.path() + "/out/fake/first-one";
    fs::create_directories(d);
    tests::write_file(d + "/run.json", "{\"run_id\": \"elsewhere\"}\n");
    tests::write_file(d + "/journal.jsonl", "{\"step\":\"create\",\"event\":\"done\",\"unix_s\":1}\n{\"step\":\"run\",\"event\":\"start\",\"unix_s\":1}\n");
    auto driver = common::ChildProcess::spawn(
        {"flock", d + "/lock", "sh", "-c", "sleep 2; printf '{\"step\":\"finish\",\"event\":\"done\",\"unix_s\":2}\\n' >> \"$0\"",
         d + "/journal.jsonl"},
        {});
    for (int i = 0; i < 100 && common::run_process({"flock", "-n", d + "/lock", "true"}).exit_code == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(common::run_process({"flock", "-n", d + "/lock", "true"}).exit_code != 0);
    CHECK(f.run() == 0);
    INFO(f.lines);
    CHECK_FALSE(fs::exists(d + "/argv"));  // this sweep never started a second driver for it
    CHECK(f.lines.find("sweep: first-one: running elsewhere") != std::string::npos);
    CHECK(f.outcome("first-one") == "succeeded (elsewhere)");
    CHECK(f.outcome("second-one") == "succeeded");
    CHECK(f.outcome("third-one") == "succeeded");
    CHECK(driver.wait_for(std::chrono::seconds(5)).has_value());
}

TEST_CASE("sweep run: an error in the sweep's own loop stops the running members through their finish and waits for it") {
    // The error: the second member's log cannot be opened (a directory is in its place), so its start
    // throws while the first member is mid-run. That member takes 3 s to finish; the sweep used to
    // leave at once, its ChildProcess destructor SIGKILLing the member 2 s into its finish.
    tests::EnvGuard price("FAKE_PRICE", "0.36"), seconds("FAKE_SECONDS", "60"), finish("FAKE_FINISH", "3");
    FakeSweep f("  max_parallel: 2\n  download_stagger: 1s\n");
    fs::create_directories(f.dir.path() + "/out/fake/second-one.log");
    f.run();
    INFO(f.log);
    REQUIRE(f.error.has_value());
    CHECK(f.error->message().find("second-one.log") != std::string::npos);
    // The member ran its own finish to the end: SIGTERM, not SIGKILL.
    auto st = f.member_state("first-one");
    CHECK(st["end"]["by"] == "SIGTERM");
    CHECK(st["end"]["proven_gone"] == true);
    CHECK(f.log.find("stopping every running member") != std::string::npos);
    CHECK(f.log.find("waiting for 1 member to finish") != std::string::npos);
    CHECK(f.log.find("instance local:fake-") != std::string::npos);
    // The summary is written all the same and says what each member did.
    CHECK(f.outcome("first-one") == "stopped (sweep error)");
    CHECK(f.outcome("second-one") == "not started");
    CHECK(f.outcome("third-one") == "not started");
    auto s = f.summary();
    CHECK(s["error"].get<std::string>().find("second-one.log") != std::string::npos);
    CHECK(s["exit_code"] == common::exit_code(f.error->kind()));
    CHECK(s["exit_code"] != 0);
}

TEST_CASE("sweep run: a member still running finish_wait_s after its SIGTERM is killed and reported with its run directory and instance") {
    tests::EnvGuard price("FAKE_PRICE", "360"), seconds("FAKE_SECONDS", "60"), finish("FAKE_FINISH", "60");
    FakeSweep f("  max_parallel: 1\n  download_stagger: 0s\n  max_cost_usd: 0.2\n");
    f.options.finish_wait_s = 1;
    auto t0 = std::chrono::steady_clock::now();
    int code = f.run();
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(f.log);
    CHECK_FALSE(f.error.has_value());
    CHECK(code == 10);  // leak risk: its instance was never proven gone
    CHECK(took < 20);   // not the member's 60 s finish
    CHECK(f.outcome("first-one") == "killed");
    CHECK(f.outcome("second-one") == "not started (budget)");
    const std::string id = f.member_state("first-one")["instance"]["id"];
    CHECK_FALSE(f.member_state("first-one").contains("end"));  // killed inside its finish
    CHECK(f.log.find("first-one: killed") != std::string::npos);
    CHECK(f.log.find(f.member_dir("first-one")) != std::string::npos);
    CHECK(f.log.find("broker instances terminate local:" + id + " --yes") != std::string::npos);
    CHECK(f.log.find("--resume " + f.member_dir("first-one")) != std::string::npos);
    CHECK(f.table.find("killed while finishing: first-one") != std::string::npos);
    for (const auto & m : f.summary()["members"])
        if (m["member"] == "first-one") CHECK(m["instance"] == "local:" + id);
}

TEST_CASE("sweep run: a stopping member's quiet window is 20 min, or its stall_timeout + 5 min where longer, unless the sweep sets one") {
    deploy::SweepRunOptions o;
    deploy::RunConfig c;
    CHECK(c.policy.stall_timeout_s == 300);
    CHECK(deploy::finish_quiet_s(o, c) == doctest::Approx(20 * 60));
    c.policy.stall_timeout_s = 3600;  // a command that moves nothing is abandoned only after an hour
    CHECK(deploy::finish_quiet_s(o, c) == doctest::Approx(3600 + 300));
    o.finish_wait_s = 1;
    CHECK(deploy::finish_quiet_s(o, c) == doctest::Approx(1));
    CHECK(o.finish_hard_cap_s == doctest::Approx(4 * 3600));
}

TEST_CASE("sweep run: a stopping member that keeps pulling its results is waited for past finish_wait_s, and ends through its own finish") {
    // The member's finish pulls for 4 s (its results file grows), far past the 1 s without progress
    // that would kill it: a large salvage pull is not cut for its length.
    tests::EnvGuard price("FAKE_PRICE", "360"), seconds("FAKE_SECONDS", "60"), pull("FAKE_FINISH_PULL", "4");
    FakeSweep f("  max_parallel: 1\n  download_stagger: 0s\n  max_cost_usd: 0.2\n");
    f.options.finish_wait_s = 1;
    auto t0 = std::chrono::steady_clock::now();
    int code = f.run();
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(f.log);
    CHECK_FALSE(f.error.has_value());
    CHECK(code == 5);  // the budget, not leak risk
    CHECK(took >= 4);
    CHECK(f.outcome("first-one") == "stopped (budget)");
    auto st = f.member_state("first-one");
    CHECK(st["end"]["by"] == "SIGTERM");
    CHECK(st["end"]["proven_gone"] == true);
    CHECK(tests::read_file(f.member_dir("first-one") + "/results/big.bin.bifrost-part") == [] {
        std::string all;
        for (int i = 0; i < 20; ++i) all += "chunk";
        return all;
    }());
    CHECK(f.log.find("first-one: killed") == std::string::npos);
}

TEST_CASE("sweep run: a stopping member whose pull stops moving is killed finish_wait_s after its last progress, one still changing its files at the hard cap") {
    {
        // 2 s of pulling, then silence: killed about 1 s after the last chunk, not 1 s after SIGTERM.
        tests::EnvGuard price("FAKE_PRICE", "360"), seconds("FAKE_SECONDS", "60"), pull("FAKE_FINISH_PULL", "2"), finish("FAKE_FINISH", "60");
        FakeSweep f("  max_parallel: 1\n  download_stagger: 0s\n  max_cost_usd: 0.2\n");
        f.options.finish_wait_s = 1;
        auto t0 = std::chrono::steady_clock::now();
        int code = f.run();
        double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        INFO(f.log);
        CHECK(code == 10);
        CHECK(took >= 3);
        CHECK(took < 20);
        CHECK(f.outcome("first-one") == "killed");
        CHECK(f.log.find("first-one: killed: still running") != std::string::npos);
        CHECK(f.log.find("with no progress for 1") != std::string::npos);
        CHECK(f.log.find("its run directory and log unchanged") != std::string::npos);
        CHECK(fs::file_size(f.member_dir("first-one") + "/results/big.bin.bifrost-part") == 10 * 5);
    }
    {
        // Progress for ever (a log that grows without end is not a finish): killed at the hard cap.
        tests::EnvGuard price("FAKE_PRICE", "360"), seconds("FAKE_SECONDS", "60"), pull("FAKE_FINISH_PULL", "60");
        FakeSweep f("  max_parallel: 1\n  download_stagger: 0s\n  max_cost_usd: 0.2\n");
        f.options.finish_wait_s = 1;
        f.options.finish_hard_cap_s = 3;
        auto t0 = std::chrono::steady_clock::now();
        int code = f.run();
        double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        INFO(f.log);
        CHECK(code == 10);
        CHECK(took >= 3);
        CHECK(took < 20);
        CHECK(f.outcome("first-one") == "killed");
        CHECK(f.log.find("at the limit of 3.0s for a finish, though still changing its files") != std::string::npos);
    }
}

TEST_CASE("sweep run: Ctrl-C while members finish stops the waiting, never kills them, and names their run directories and instances") {
    tests::EnvGuard price("FAKE_PRICE", "0.36"), seconds("FAKE_SECONDS", "60"), finish("FAKE_FINISH", "5");
    FakeSweep f("  max_parallel: 1\n  download_stagger: 0s\n");
    // deploy_and_analyze's own handlers (a flag; a second signal before the flag is cleared exits at
    // once), for this test only.
    struct sigaction old_int {}, old_term {}, old_hup {}, old_pipe {};
    ::sigaction(SIGINT, nullptr, &old_int);
    ::sigaction(SIGTERM, nullptr, &old_term);
    ::sigaction(SIGHUP, nullptr, &old_hup);
    ::sigaction(SIGPIPE, nullptr, &old_pipe);
    common::reset_interrupted();
    common::install_interrupt_handlers(common::OnHangup::Continue);
    const std::string d = f.member_dir("first-one");
    std::atomic<std::chrono::steady_clock::time_point> second{};
    std::thread user([&] {
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (!fs::exists(d + "/state.json") && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        std::this_thread::sleep_for(std::chrono::milliseconds(300));  // its trap is set right after state.json
        ::kill(::getpid(), SIGINT);
        const auto first = std::chrono::steady_clock::now();
        // The member got its SIGTERM, so the sweep is waiting (it clears the first Ctrl-C before that).
        while (!fs::exists(d + "/terminating") && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        // A second press, not part of the first (common::kSignalBurstS).
        std::this_thread::sleep_until(first + std::chrono::milliseconds(1200));
        second = std::chrono::steady_clock::now();
        ::kill(::getpid(), SIGINT);
    });
    int code = f.run();
    const auto returned = std::chrono::steady_clock::now();
    // Read as the sweep returns: the member's 5 s finish has not ended yet.
    const bool member_ended_first = f.member_state("first-one").contains("end");
    user.join();
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGTERM, &old_term, nullptr);
    ::sigaction(SIGHUP, &old_hup, nullptr);
    ::sigaction(SIGPIPE, &old_pipe, nullptr);
    common::reset_interrupted();
    INFO(f.log);
    CHECK(code == 130);
    // It left on the second press, without waiting for the member's 5 s finish. (Timed from that
    // press, not from the start: on a busy 2-core machine the member's start alone varies by seconds.)
    CHECK_FALSE(member_ended_first);
    CHECK(std::chrono::duration<double>(returned - second.load()).count() < 2.5);
    CHECK(f.outcome("first-one") == "finishing on its own");
    CHECK(f.outcome("second-one") == "not started");
    const std::string id = f.member_state("first-one")["instance"]["id"];
    CHECK(f.log.find("interrupted while members finish: no longer waiting for 1 member") != std::string::npos);
    CHECK(f.log.find("nothing was killed") != std::string::npos);
    CHECK(f.log.find("first-one (step run, instance local:" + id + ", run directory " + d + ")") != std::string::npos);
    CHECK(f.log.find("broker instances list") != std::string::npos);
    // The member goes on and ends its "instance" through its own finish.
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (!f.member_state("first-one").contains("end") && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(f.member_state("first-one")["end"]["by"] == "SIGTERM");
}

namespace {

// The sweep in a child process of the test, with deploy_and_analyze's signal handlers: an
// "interrupted twice" exit really ends that process, and the test sends it signals from outside.
// Its log lines (and the handler's) go to the FakeSweep's runner-log.txt.
pid_t fork_sweep(FakeSweep & f) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        common::reset_interrupted();
        common::install_interrupt_handlers(common::OnHangup::Continue);
        const int code = f.run();
        std::fflush(nullptr);
        ::_exit(code);
    }
    return pid;
}

// The child's exit code once it has exited within `timeout` (128 + N for a signal), nullopt if not.
std::optional<int> exited_within(pid_t pid, std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        int status = 0;
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (r < 0 || std::chrono::steady_clock::now() >= until) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

// Waits until the member has written its state.json and set its trap.
void wait_member_started(const std::string & dir) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!fs::exists(dir + "/state.json") && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // its trap is set right after state.json
}

}  // namespace

TEST_CASE("sweep run: two signals 10 ms apart are one Ctrl-C: the sweep stops its members through their finish and writes its summary") {
    tests::EnvGuard price("FAKE_PRICE", "0.36"), seconds("FAKE_SECONDS", "60"), finish("FAKE_FINISH", "2");
    FakeSweep f("  max_parallel: 1\n  download_stagger: 0s\n");
    const std::string d = f.member_dir("first-one");
    const pid_t sweep = fork_sweep(f);
    REQUIRE(sweep > 0);
    wait_member_started(d);
    ::kill(sweep, SIGINT);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ::kill(sweep, SIGINT);  // a terminal that sends two, a key pressed twice in a hurry
    // Not "interrupted twice: exiting now": the sweep goes on, waiting for its member's 2 s finish.
    auto early = exited_within(sweep, std::chrono::milliseconds(1000));
    auto code = early ? early : exited_within(sweep, std::chrono::seconds(30));
    if (!code) ::kill(sweep, SIGKILL), (void)exited_within(sweep, std::chrono::seconds(5));
    const std::string id = f.member_state("first-one")["instance"]["id"];  // fake-<pid of the member>
    if (::kill(static_cast<pid_t>(std::stol(id.substr(5))), SIGKILL) == 0) FAIL("the member was left running");
    const std::string log = tests::read_file(f.dir.path() + "/runner-log.txt");
    INFO(log);
    CHECK_FALSE(early.has_value());
    REQUIRE(code.has_value());
    CHECK(*code == 130);
    CHECK(log.find("interrupted twice") == std::string::npos);
    CHECK(f.outcome("first-one") == "interrupted");  // its summary was written: the sweep saw it end
    CHECK(f.member_state("first-one")["end"]["by"] == "SIGTERM");
}

TEST_CASE("sweep run: a second Ctrl-C over a second after the first, before the sweep acted on it, exits at once naming the members still running") {
    tests::EnvGuard price("FAKE_PRICE", "0.36"), seconds("FAKE_SECONDS", "60"), finish("FAKE_FINISH", "0");
    FakeSweep f("  max_parallel: 1\n  download_stagger: 0s\n");
    f.options.poll_s = 8;  // the sweep looks again only after 8 s: both presses come before it sees the first
    const std::string d = f.member_dir("first-one");
    const pid_t sweep = fork_sweep(f);
    REQUIRE(sweep > 0);
    wait_member_started(d);
    const std::string id = f.member_state("first-one")["instance"]["id"];  // fake-<pid of the member>
    const pid_t member = static_cast<pid_t>(std::stol(id.substr(5)));
    ::kill(sweep, SIGINT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    const auto second = std::chrono::steady_clock::now();
    ::kill(sweep, SIGINT);
    auto code = exited_within(sweep, std::chrono::seconds(3));
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - second).count();
    if (!code) ::kill(sweep, SIGKILL), (void)exited_within(sweep, std::chrono::seconds(5));
    const bool member_alive = ::kill(member, 0) == 0;
    ::kill(member, SIGKILL);  // the member is left running by design; not past this test
    const std::string log = tests::read_file(f.dir.path() + "/runner-log.txt");
    INFO(log);
    REQUIRE(code.has_value());
    CHECK(*code == 130);
    CHECK(took < 1.5);
    CHECK(member_alive);  // in its own session: the sweep's exit does not take it along
    CHECK(log.find("interrupted twice: exiting now") != std::string::npos);
    CHECK(log.find("sweep: left 1 member still running") != std::string::npos);
    CHECK(log.find("first-one (step ") != std::string::npos);
    CHECK(log.find("run directory " + d + ")") != std::string::npos);
    CHECK(log.find("log " + f.dir.path() + "/out/fake/first-one.log") != std::string::npos);
    CHECK(log.find("not stopped: it runs its job to the end; `kill " + std::to_string(member) + "` stops it") != std::string::npos);
    CHECK(log.find("broker instances list") != std::string::npos);
}

TEST_CASE("sweep run: a member's state.json with fields of the wrong type is shown as unknown, not an error that stops the sweep") {
    tests::EnvGuard price("FAKE_PRICE", "\"a lot\""), seconds("FAKE_SECONDS", "1");
    FakeSweep f("  max_parallel: 3\n  download_stagger: 0s\n");
    int code = f.run();
    INFO(f.log);
    CHECK_MESSAGE(!f.error.has_value(), (f.error ? f.error->message() : ""));
    CHECK(code == 0);
    for (const char * m : {"first-one", "second-one", "third-one"}) CHECK(f.outcome(std::string(m)) == "succeeded");
}

TEST_CASE("sweep run: a member whose run directory cannot be read is neither run nor moved aside, the others run, and the sweep exits 2 naming the file") {
    tests::EnvGuard price("FAKE_PRICE", "0.36"), seconds("FAKE_SECONDS", "1");
    FakeSweep f("  max_parallel: 3\n  download_stagger: 0s\n");
    // first-one finished in an earlier sweep, and its journal was damaged since (an edit, a sync tool).
    const std::string d = f.member_dir("first-one");
    fs::create_directories(d);
    tests::write_file(d + "/run.json", "{\"run_id\": \"fake\"}\n");
    tests::write_file(d + "/state.json", "{}\n");
    const std::string journal = "{\"step\":\"run\",\"event\":\"done\",\"unix_s\":1}\n{\"step\":\"finish\",\"event\":\"done\",\"unix_s\":\"late\"}\n";
    tests::write_file(d + "/journal.jsonl", journal);
    int code = f.run();
    INFO(f.log);
    CHECK_FALSE(f.error.has_value());
    CHECK(code == 2);
    CHECK(f.outcome("first-one") == "unreadable run directory");
    CHECK(f.outcome("second-one") == "succeeded");
    CHECK(f.outcome("third-one") == "succeeded");
    CHECK(f.log.find(d + "/journal.jsonl:2: unix_s: expected a number, got string") != std::string::npos);
    CHECK(f.table.find("not run: first-one: " + d + "/journal.jsonl:2") != std::string::npos);
    for (const auto & m : f.summary()["members"])
        if (m["member"] == "first-one") CHECK(m["error"].get<std::string>().find("journal.jsonl:2") != std::string::npos);
    // Left exactly as it was: not resumed, not moved aside.
    CHECK_FALSE(fs::exists(d + "/argv"));
    CHECK(tests::read_file(d + "/journal.jsonl") == journal);
    CHECK(tests::read_file(d + "/state.json") == "{}\n");
}

TEST_CASE("download slots: at most N holders across processes, a wait ends at the deadline, a slot frees on release") {
    tests::TempDir dir("download-slots");
    CHECK(deploy::parse_download_slots("/a/b:c:3").dir == "/a/b:c");
    CHECK(deploy::parse_download_slots("/a/b:c:3").count == 3);
    for (const char * bad : {"nocount", "/x:0", "/x:65", "/x:-1", ":2", "/x:", "/x:1000"}) CHECK_THROWS_AS(deploy::parse_download_slots(bad), common::Error);
    common::RealClock clock;
    deploy::DownloadSlotSpec spec{dir / "slots", 1};
    auto a = deploy::DownloadSlot::acquire(spec, common::Deadline(clock, std::chrono::seconds(5)), 0.05);
    CHECK(a.held());
    CHECK(a.index() == 0);
    // Another process cannot take it: the lock is flock(2) on the slot file.
    CHECK(common::run_process({"flock", "-n", dir / "slots/slot-0", "true"}).exit_code != 0);
    try {
        deploy::DownloadSlot::acquire(spec, common::Deadline(clock, std::chrono::milliseconds(300)), 0.05);
        FAIL("a second holder got the only slot");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Timeout);
    }
    // Two slots: a second holder gets the other one.
    auto b = deploy::DownloadSlot::acquire({dir / "slots", 2}, common::Deadline(clock, std::chrono::seconds(5)), 0.05);
    CHECK(b.index() == 1);
    a = deploy::DownloadSlot();
    CHECK(common::run_process({"flock", "-n", dir / "slots/slot-0", "true"}).exit_code == 0);
    // Held by another process, the slot is waited for and taken when that process ends.
    auto holder = common::ChildProcess::spawn({"flock", dir / "slots/slot-0", "sleep", "1"}, {});
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto t0 = std::chrono::steady_clock::now();
    auto c = deploy::DownloadSlot::acquire(spec, common::Deadline(clock, std::chrono::seconds(10)), 0.05);
    CHECK(c.held());
    CHECK(std::chrono::steady_clock::now() - t0 > std::chrono::milliseconds(300));
    CHECK_FALSE(deploy::DownloadSlot::acquire({}, common::Deadline(clock, std::chrono::seconds(1))).held());  // no cap
}

TEST_CASE("download slots: a wait calls its callback at every poll (a resumed run heartbeats its watchdog there), a free slot never") {
    tests::TempDir dir("download-slots-wait");
    common::RealClock clock;
    deploy::DownloadSlotSpec spec{dir / "slots", 1};
    int calls = 0;
    auto count = [&calls] { ++calls; };
    auto a = deploy::DownloadSlot::acquire(spec, common::Deadline(clock, std::chrono::seconds(5)), 0.05, count);
    CHECK(a.held());
    CHECK(calls == 0);
    // Held elsewhere for 0.5 s: about ten polls of 0.05 s, each calling back.
    auto holder = common::ChildProcess::spawn({"flock", dir / "slots/slot-0", "sleep", "0.5"}, {});
    a = deploy::DownloadSlot();
    for (int i = 0; i < 100 && common::run_process({"flock", "-n", dir / "slots/slot-0", "true"}).exit_code == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto b = deploy::DownloadSlot::acquire(spec, common::Deadline(clock, std::chrono::seconds(10)), 0.05, count);
    CHECK(b.held());
    CHECK(calls >= 3);
    // A callback that throws ends the wait with its error.
    calls = 0;
    try {
        deploy::DownloadSlot::acquire(spec, common::Deadline(clock, std::chrono::seconds(10)), 0.05,
                                      [] { throw common::Error(common::ErrorKind::Network, "heartbeat: host gone"); });
        FAIL("the wait went on past a failing callback");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Network);
    }
}

TEST_CASE("sweep report: each member's outcome from its own journal, a run the sweep stopped or killed named as such") {
    tests::TempDir dir("sweep-report-outcomes");
    std::string yaml = "sweep:\n  name: outcomes\n  output_dir: " + dir.path() + "/out\n" +
                       "base:\n  data: {synthetic_tokens: {vocab: 64}}\n  resources: {providers: [local], gpu_count: 0, disk_gb: 1}\n"
                       "members:\n";
    for (const char * id : {"ok-run", "bad-run", "stopped-run", "leaky-run", "killed-run", "never-run"})
        yaml += fixture_member(id);
    auto sweep = deploy::parse_sweep(yaml, "outcomes.yaml");
    sweep.output_dir = dir.path() + "/out";
    auto member = [&](const std::string & id, const std::string & events) {
        const std::string d = dir.path() + "/out/outcomes/" + id;
        fs::create_directories(d);
        tests::write_file(d + "/run.json", "{\"run_id\": \"" + id + "\"}\n");
        std::string journal;
        double t = 1000;
        std::istringstream in(events);
        for (std::string ev; in >> ev; t += 1) {  // step:event[:kind]
            auto a = ev.find(':'), b = ev.find(':', a + 1);
            nlohmann::json j{{"step", ev.substr(0, a)}, {"event", ev.substr(a + 1, b == std::string::npos ? b : b - a - 1)}, {"unix_s", t}};
            if (b != std::string::npos) j["kind"] = ev.substr(b + 1);
            journal += j.dump() + "\n";
        }
        tests::write_file(d + "/journal.jsonl", journal);
    };
    member("ok-run", "run:start run:done finish:start finish:done");
    member("bad-run", "run:start run:failed:remote_failed finish:start finish:done");
    member("stopped-run", "run:start run:failed:interrupted finish:start finish:done");
    member("leaky-run", "run:start run:failed:interrupted finish:start finish:failed:leak_risk");
    member("killed-run", "run:start run:failed:interrupted finish:start");
    std::string report = tests::read_file(deploy::write_sweep_report(sweep, "analyze-is-not-run-without-results"));
    INFO(report);
    auto outcome_of = [&](const std::string & id) {
        auto at = report.find("| " + id + " | ");
        REQUIRE(at != std::string::npos);
        // | id | model | family | outcome |
        for (int cell = 0; cell < 3; ++cell) at = report.find(" | ", at) + 3;
        return report.substr(at, report.find(" | ", at) - at);
    };
    CHECK(outcome_of("ok-run") == "succeeded");
    CHECK(outcome_of("bad-run") == "failed");
    CHECK(outcome_of("stopped-run") == "stopped");
    CHECK(outcome_of("leaky-run") == "finish failed (its instance may still bill)");
    CHECK(outcome_of("killed-run") == "unfinished (stopped inside its finish: its instance may still bill)");
    CHECK(outcome_of("never-run") == "not run");
}

TEST_CASE("sweep report: a comparison file that is not a regular file (a FIFO) or too large is left out, never read blocking or whole") {
    tests::TempDir dir("sweep-report-fifo");
    auto sweep = deploy::parse_sweep("sweep:\n  name: fifo\n  output_dir: " + dir.path() + "/out\nbase:\n  data: {synthetic_tokens: {vocab: 64}}\n"
                                     "  resources: {providers: [local], gpu_count: 0, disk_gb: 1}\nmembers:\n" + fixture_member("ok-run"),
                                     "fifo.yaml");
    const std::string d = dir.path() + "/out/fifo/ok-run";
    fs::create_directories(d + "/results/analysis");
    tests::write_file(d + "/run.json", "{\"run_id\": \"ok-run\"}\n");
    tests::write_file(d + "/journal.jsonl", "{\"step\":\"run\",\"event\":\"done\",\"unix_s\":1}\n{\"step\":\"finish\",\"event\":\"done\",\"unix_s\":2}\n");
    tests::write_file(d + "/results/analysis/outliers.json", "{}\n");
    // A stand-in for `analyze compare` that leaves a FIFO as the total comparison (an ifstream blocks
    // on it for ever) and 3 MiB as the active one.
    const std::string analyze = dir / "analyze.sh";
    tests::write_file(analyze, "#!/bin/sh\nfor a in \"$@\"; do [ \"$prev\" = -o ] && out=$a; prev=$a; done\nmkdir -p \"$out\"\n"
                               "case \"$out\" in *total) mkfifo \"$out/comparison.md\";; *) head -c 3145728 /dev/zero | tr '\\0' x > \"$out/comparison.md\";; esac\n");
    fs::permissions(analyze, fs::perms::owner_all);
    auto done = std::make_shared<std::promise<std::string>>();
    auto result = done->get_future();
    std::thread([done, sweep, analyze] {
        try {
            done->set_value(tests::read_file(deploy::write_sweep_report(sweep, analyze)));
        } catch (const std::exception & e) {
            done->set_value(std::string("threw: ") + e.what());
        }
    }).detach();  // never joined: a report blocked on the FIFO would hold the test for ever
    REQUIRE_MESSAGE(result.wait_for(std::chrono::seconds(30)) == std::future_status::ready, "the report blocked reading a FIFO");
    const std::string report = result.get();
    CHECK(report.find("threw: ") == std::string::npos);
    CHECK(report.find("| ok-run | ") != std::string::npos);
    CHECK(report.find("xxxxxxxx") == std::string::npos);  // the oversized comparison is left out
}

TEST_CASE("sweep report plots: member values only in data files, never gnuplot code, and gnuplot draws them") {
    // A label that would run a program if it reached gnuplot's language.
    const std::string hostile = "evil\"; system(\"touch PWNED\"); `touch PWNED2` \"";
    nlohmann::json table = nlohmann::json::array();
    table.push_back({{"label", hostile}, {"params", 7e9}, {"params_active", 1.3e9}, {"cost_usd", 1.5}, {"wall_s", 900},
                     {"num_outliers", 12}, {"median_layer_pct", 40.0}, {"median_position_pct", 3.5}, {"perplexity", 11.2}});
    table.push_back({{"label", "qwen3-tiny"}, {"params", 5e6}, {"cost_usd", 0.2}, {"wall_s", 60}, {"num_outliers", 2},
                     {"median_layer_pct", 50.0}, {"median_position_pct", 1.0}});
    table.push_back({{"label", "no-results"}});
    auto job = deploy::sweep_plot_job(table);
    CHECK(job.script.find("evil") == std::string::npos);
    CHECK(job.script.find("system") == std::string::npos);
    CHECK(job.script.find("qwen3-tiny") == std::string::npos);
    std::vector<std::string> names;
    for (const auto & o : job.outputs) names.push_back(o);
    for (const char * want : {"cost_per_model.png", "cost_per_model.svg", "wall_time_per_model.png", "median_pct_vs_total.svg",
                              "median_pct_vs_active.png", "perplexity_vs_outliers.png"})
        CHECK_MESSAGE(std::find(names.begin(), names.end(), want) != names.end(), want);
    std::string data;
    for (const auto & [name, text] : job.data_files) data += text;
    CHECK(data.find("qwen3-tiny\t0.2") != std::string::npos);
    CHECK(data.find("system") != std::string::npos);        // the hostile label is data...
    CHECK(data.find('"') == std::string::npos);             // ...with its quotes and backquotes gone
    CHECK(data.find('`') == std::string::npos);
    // Only one member measured perplexity; the one without results is in no plot.
    CHECK(data.find("no-results") == std::string::npos);
    // gnuplot itself draws them, and nothing from the label runs.
    if (common::run_process({"sh", "-c", "command -v gnuplot"}).exit_code != 0) return;
    tests::TempDir dir("sweep-plots");
    for (const auto & [name, text] : job.data_files) tests::write_file(dir / name, text);
    common::RunOptions o;
    o.stdin_data = job.script;
    o.cwd = dir.path();
    auto r = common::run_process({"gnuplot", "--default-settings"}, o);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    for (const auto & out : job.outputs) CHECK_MESSAGE(fs::file_size(dir / out) > 1000, out);
    CHECK_FALSE(fs::exists(dir / "PWNED"));
    CHECK_FALSE(fs::exists(dir / "PWNED2"));
}
