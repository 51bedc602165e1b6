// Run config: YAML reading with file:line errors, flag overrides (the predecessor's names),
// cross-field validation before anything is rented, and the shipped example configs.
#include <filesystem>
#include <string>

#include "common/error.h"
#include "deploy/run_config.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using deploy::RunConfig;

namespace {

std::string error_of(const std::string & yaml) {
    try {
        RunConfig c = deploy::parse_run_config(yaml, "run.yaml");
        deploy::validate(c);
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        return e.message();
    }
    return "";
}

const char * kMinimal = R"(
model:
  hub: Qwen/Qwen3-30B-A3B
data:
  synthetic_tokens: {vocab: 1000}
)";

}  // namespace

TEST_CASE("config: a full config reads every section with units and policies") {
    RunConfig c = deploy::parse_run_config(R"(
name: qwen3moe
model:
  hub: Qwen/Qwen3-30B-A3B
  revision: abc123
  dtype: bf16
data:
  synthetic_tokens: {vocab: 151936, seed: 3}
  num_sequences: 16
  sequence_length: 2048
  batch_size: 2
capture:
  layers: 0-3,47
  sites: [ln_attn, ln_mlp, residual]
analysis:
  mode: paper
  threshold: 6.5
  layer_fraction: 0.3
  position_fraction: 0.05
resources:
  providers: [runpod, vast]
  gpu: A100
  gpu_count: 2
  min_vram_gb: 80
  min_cpu_ram_gb: 64
  max_price_usd_per_hour: 3.5
  disk_gb: 250
policy:
  on_success: terminate
  on_failure: keep
  keep_ttl: 90m
  max_duration: 3h
  max_cost_usd: 20
  heartbeat_timeout: 5m
)");
    deploy::validate(c);
    CHECK(c.name == "qwen3moe");
    CHECK(c.model.hub_id == "Qwen/Qwen3-30B-A3B");
    CHECK(c.model.revision == "abc123");
    CHECK(*c.data.synthetic_vocab == 151936);
    CHECK(c.data.seed == 3);
    CHECK(c.data.batch_size == 2);
    CHECK(c.capture.layers == "0-3,47");
    CHECK(c.capture.sites.size() == 3);
    CHECK(c.analysis.mode == "paper");
    CHECK(c.analysis.threshold == doctest::Approx(6.5));
    CHECK(c.resources.providers == std::vector<std::string>{"runpod", "vast"});
    CHECK(c.resources.gpu_count == 2);
    CHECK(*c.resources.min_vram_gb == doctest::Approx(80));
    CHECK(*c.resources.max_price_usd_per_hour == doctest::Approx(3.5));
    CHECK(c.resources.disk_gb == 250);
    CHECK(c.policy.on_success == deploy::EndAction::Terminate);
    CHECK(c.policy.on_failure == deploy::EndAction::Keep);
    CHECK(c.policy.keep_ttl_s == doctest::Approx(5400));
    CHECK(c.policy.max_duration_s == doctest::Approx(10800));
    CHECK(*c.policy.max_cost_usd == doctest::Approx(20));
    CHECK(c.policy.heartbeat_timeout_s == doctest::Approx(300));
}

TEST_CASE("config: min_vram_gb auto leaves the estimate in charge") {
    RunConfig c = deploy::parse_run_config(std::string(kMinimal) + "resources:\n  min_vram_gb: auto\n");
    CHECK_FALSE(c.resources.min_vram_gb.has_value());
}

TEST_CASE("config: an unknown key is refused with file:line and a suggestion") {
    std::string msg = error_of(std::string(kMinimal) + "resources:\n  max_prise_usd_per_hour: 2\n");
    CHECK(msg.find("run.yaml:") != std::string::npos);
    CHECK(msg.find("max_prise_usd_per_hour") != std::string::npos);
    CHECK(msg.find("max_price_usd_per_hour") != std::string::npos);
}

TEST_CASE("config: bad values name their key before anything is rented") {
    CHECK(error_of(std::string(kMinimal) + "policy:\n  on_success: maybe\n").find("terminate or keep") != std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "policy:\n  max_duration: soon\n").find("policy.max_duration") != std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "analysis:\n  mode: fancy\n").find("unknown mode") != std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "capture:\n  sites: [ln_attn, attn_out]\n").find("attn_out") != std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "resources:\n  gpu_count: 9\n").find("0..8") != std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "resources:\n  gpu_count: 0\n").find("local") != std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "resources:\n  max_price_usd_per_hour: -1\n").find("> 0") != std::string::npos);
    CHECK(error_of("model:\n  hub: not-an-id\ndata:\n  synthetic_tokens: {vocab: 10}\n").find("owner/name") != std::string::npos);
    CHECK(error_of("model:\n  hub: a/b\n  fixture: {family: olmoe}\ndata:\n  synthetic_tokens: {vocab: 10}\n")
              .find("exactly one") != std::string::npos);
    CHECK(error_of("model:\n  hub: a/b\n").find("exactly one of text") != std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "name: Has-Caps\n").find("lower-case") != std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "data:\n  num_sequences: 0\n").find("") != std::string::npos);
}

TEST_CASE("config: relative paths are taken from the config file's folder") {
    tests::TempDir dir;
    tests::write_file(dir / "ids.json", "[1,2,3,4]");
    std::filesystem::create_directories(dir / "ckpt");
    tests::write_file(dir / "ckpt/config.json", "{}");
    tests::write_file(dir / "run.yaml", "model:\n  path: ckpt\ndata:\n  tokens: ids.json\n");
    RunConfig c = deploy::load_run_config(dir / "run.yaml");
    deploy::validate(c);
    CHECK(c.model.local_path == dir / "ckpt");
    CHECK(c.data.tokens_file == dir / "ids.json");
}

TEST_CASE("config: a missing data file or checkpoint is refused") {
    tests::TempDir dir;
    tests::write_file(dir / "run.yaml", "model:\n  path: nowhere\ndata:\n  tokens: ids.json\n");
    RunConfig c = deploy::load_run_config(dir / "run.yaml");
    CHECK_THROWS_WITH_AS(deploy::validate(c), doctest::Contains("no config.json"), common::Error);
}

TEST_CASE("config: flags override the file, with the predecessor's names") {
    RunConfig c = deploy::parse_run_config(kMinimal);
    deploy::Overrides o;
    o.model = "allenai/OLMoE-1B-7B-0125";
    o.gpu_count = 2;
    o.gpu_filter = "H100";
    o.min_vram_gb = 40;
    o.min_cpu_ram_gb = 64;
    o.num_sequences = 32;
    o.keep_running = true;
    o.providers = {"vast"};
    deploy::apply_overrides(c, o);
    deploy::validate(c);
    CHECK(c.model.hub_id == "allenai/OLMoE-1B-7B-0125");
    CHECK(c.resources.gpu_count == 2);
    CHECK(c.resources.gpu_filter == "H100");
    CHECK(*c.resources.min_vram_gb == 40);
    CHECK(*c.resources.min_cpu_ram_gb == 64);
    CHECK(c.data.num_sequences == 32);
    CHECK(c.policy.on_success == deploy::EndAction::Keep);
    CHECK(c.policy.on_failure == deploy::EndAction::Keep);
    CHECK(c.resources.providers == std::vector<std::string>{"vast"});
}

TEST_CASE("config: --model naming an existing directory means a local checkpoint") {
    tests::TempDir dir;
    RunConfig c = deploy::parse_run_config(kMinimal);
    deploy::Overrides o;
    o.model = dir.path();
    deploy::apply_overrides(c, o);
    CHECK(c.model.local_path == dir.path());
    CHECK(c.model.hub_id.empty());
}

TEST_CASE("config: the shipped example configs load and validate") {
    for (const char * name : {"rehearsal.yaml", "olmoe-1b-7b.yaml", "qwen3-30b-a3b.yaml"}) {
        CAPTURE(name);
        RunConfig c = deploy::load_run_config(std::string(TOOLKIT_SOURCE_DIR) + "/configs/" + name);
        CHECK_NOTHROW(deploy::validate(c));
    }
}

TEST_CASE("config: the embedded rehearsal default matches configs/rehearsal.yaml") {
    RunConfig file = deploy::load_run_config(std::string(TOOLKIT_SOURCE_DIR) + "/configs/rehearsal.yaml");
    RunConfig def = deploy::rehearsal_defaults();
    deploy::validate(def);
    CHECK(file.name == def.name);
    REQUIRE(file.model.fixture);
    CHECK(file.model.fixture->family == def.model.fixture->family);
    CHECK(file.model.fixture->layers == def.model.fixture->layers);
    CHECK(file.model.fixture->plants == def.model.fixture->plants);
    CHECK(file.data.num_sequences == def.data.num_sequences);
    CHECK(file.data.sequence_length == def.data.sequence_length);
    CHECK(file.resources.providers == def.resources.providers);
    CHECK(file.policy.heartbeat_timeout_s == def.policy.heartbeat_timeout_s);
}

TEST_CASE("config: the resolved config round-trips through run.json (for --resume)") {
    RunConfig c = deploy::load_run_config(std::string(TOOLKIT_SOURCE_DIR) + "/configs/qwen3-30b-a3b.yaml");
    c.policy.max_cost_usd = 12.5;
    RunConfig back = deploy::config_from_json(deploy::config_to_json(c));
    CHECK(deploy::config_to_json(back) == deploy::config_to_json(c));
    RunConfig r = deploy::rehearsal_defaults();
    CHECK(deploy::config_to_json(deploy::config_from_json(deploy::config_to_json(r))) == deploy::config_to_json(r));
}
