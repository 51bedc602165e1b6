// Run config: YAML reading with file:line errors, flag overrides (the predecessor's names),
// cross-field validation before anything is rented, and the shipped example configs.
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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
    CHECK(error_of("model:\n  hub: a/b\ndata:\n  synthetic_tokens: {vocab: 10}\n  num_sequences: 0\n").find("data.num_sequences") !=
          std::string::npos);
}

TEST_CASE("config: relative paths are taken from the config file's folder") {
    tests::TempDir dir;
    tests::write_file(dir / "ids.json", "[1,2,3,4]");
    std::filesystem::create_directories(dir / "ckpt");
    tests::write_file(dir / "ckpt/config.json", "{}");
    // Four ids fill one window of four (validate counts them: data_check.h).
    tests::write_file(dir / "run.yaml", "model:\n  path: ckpt\ndata:\n  tokens: ids.json\n  num_sequences: 1\n  sequence_length: 4\n");
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
    for (const char * name : {"rehearsal.yaml", "olmoe-1b-7b.yaml", "qwen3-30b-a3b.yaml", "gpt-oss-20b.yaml", "gpt-oss-120b.yaml",
                             "mixtral-8x7b.yaml", "qwen3-next-80b-a3b.yaml", "glm-4.5-air.yaml"}) {
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

// ---- issue #11: numbers are range-checked where they are read, never truncated ----------------

namespace {

// The error of reading (not yet validating) a config; "" when it reads.
std::string load_error_of(const std::string & yaml) {
    try {
        (void)deploy::parse_run_config(yaml, "run.yaml");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        return e.message();
    }
    return "";
}

const char * kFixture = R"(
model:
  fixture: {family: olmoe, layers: 4, hidden: 64}
data:
  synthetic_tokens: {vocab: 128}
resources:
  providers: [local]
  gpu_count: 0
)";

}  // namespace

TEST_CASE("config: integers past their range are refused at file:line:column, not truncated into an int") {
    // 2^32 + n used to become n through static_cast<int>: 4294967296 GPUs read as 0, 4294967297 as 1.
    std::string msg = load_error_of(std::string(kMinimal) + "resources:\n  gpu_count: 4294967297\n");
    CHECK(msg.find("run.yaml:7:14: resources.gpu_count: 4294967297 is out of range: must be 0..8") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "resources:\n  gpu_count: 4294967296\n").find("resources.gpu_count: 4294967296 is out of range") !=
          std::string::npos);
    msg = load_error_of(std::string(kMinimal) + "resources:\n  disk_gb: 4294967446\n");  // was 150 GB
    CHECK(msg.find("run.yaml:7:12: resources.disk_gb: 4294967446 is out of range: must be 1..100000") != std::string::npos);
    msg = load_error_of("model:\n  fixture: {family: olmoe, layers: 4294967300, hidden: 64}\n");  // was 4 layers
    CHECK(msg.find("run.yaml:2:36: model.fixture.layers: 4294967300 is out of range: must be 1..256") != std::string::npos);
    msg = load_error_of("model:\n  fixture: {family: olmoe, layers: 4, hidden: 4294967360}\n");  // was 64
    CHECK(msg.find("model.fixture.hidden: 4294967360 is out of range: must be 8..16384") != std::string::npos);
    CHECK(msg.find("run.yaml:2:") != std::string::npos);
    // Past 64 bits too: out of range, not "not an integer".
    msg = load_error_of(std::string(kMinimal) + "resources:\n  gpu_count: 99999999999999999999\n");
    CHECK(msg.find("resources.gpu_count: 99999999999999999999 is out of range: must be 0..8") != std::string::npos);
    // A negative seed used to wrap to 2^64 - 1.
    CHECK(load_error_of("model:\n  fixture: {family: olmoe, seed: -1}\n").find("model.fixture.seed: -1 is out of range") != std::string::npos);
    CHECK(load_error_of("model:\n  hub: a/b\ndata:\n  num_sequences: 0\n").find("run.yaml:4:18: data.num_sequences: 0 is out of range") !=
          std::string::npos);
    CHECK(load_error_of("model:\n  hub: a/b\ndata:\n  synthetic_tokens: {vocab: 9223372036854775807}\n")
              .find("data.synthetic_tokens.vocab: 9223372036854775807 is out of range: must be 2..16777216") != std::string::npos);
    // Values inside the ranges still read, at both ends.
    RunConfig c = deploy::parse_run_config(std::string(kMinimal) + "resources:\n  gpu_count: 8\n  disk_gb: 100000\n");
    CHECK(c.resources.gpu_count == 8);
    CHECK(c.resources.disk_gb == 100000);
}

TEST_CASE("config: values set by flags or read back from run.json are held to the same ranges") {
    RunConfig c = deploy::parse_run_config(kMinimal);
    deploy::Overrides o;
    o.num_sequences = int64_t{1} << 40;
    deploy::apply_overrides(c, o);
    CHECK_THROWS_WITH_AS(deploy::validate(c), doctest::Contains("data.num_sequences: 1099511627776 is out of range"), common::Error);
    // run.json (--resume): a gpu_count that does not fit an int is refused, not truncated to 0.
    auto j = deploy::config_to_json(deploy::parse_run_config(kMinimal));
    j["resources"]["gpu_count"] = int64_t{4294967296};
    CHECK_THROWS_WITH_AS(deploy::config_from_json(j), doctest::Contains("gpu_count: 4294967296 is out of range"), common::Error);
    j["resources"]["gpu_count"] = 1;
    j["policy"]["max_duration_s"] = 1e30;
    CHECK_THROWS_WITH_AS(deploy::config_from_json(j), doctest::Contains("run.json: policy.max_duration"), common::Error);
}

TEST_CASE("config: durations, prices and costs are bounded at load (a huge max_duration overflowed the deadline)") {
    std::string msg = load_error_of(std::string(kMinimal) + "policy:\n  max_duration: 999999999999999999h\n");
    CHECK(msg.find("run.yaml:7:17: policy.max_duration: '999999999999999999h' is out of range: must be longer than 0s and at most 30d") !=
          std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "policy:\n  keep_ttl: 31d\n").find("policy.keep_ttl: '31d' is out of range") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "policy:\n  heartbeat_timeout: 2d\n")
              .find("policy.heartbeat_timeout: '2d' is out of range: must be at least 30s and at most 1d") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "policy:\n  heartbeat_timeout: 10s\n").find("at least 30s") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "policy:\n  max_duration: 0s\n").find("policy.max_duration") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "policy:\n  max_cost_usd: 1e300\n").find("policy.max_cost_usd: 1e+300 is out of range") !=
          std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "resources:\n  max_price_usd_per_hour: 1e12\n")
              .find("resources.max_price_usd_per_hour: 1000000000000 is out of range") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "resources:\n  min_cpu_ram_gb: -4\n").find("resources.min_cpu_ram_gb") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "resources:\n  min_vram_gb: 1e9\n").find("resources.min_vram_gb") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "resources:\n  safety_factor: 1000\n").find("resources.safety_factor") != std::string::npos);
    // The edges still read.
    RunConfig c = deploy::parse_run_config(std::string(kMinimal) + "policy:\n  max_duration: 30d\n  keep_ttl: 720h\n  heartbeat_timeout: 30s\n");
    CHECK(c.policy.max_duration_s == doctest::Approx(30 * 86400));
    // --max-duration goes through validate.
    deploy::Overrides o;
    o.max_duration = "999999999999999999h";
    deploy::apply_overrides(c, o);
    CHECK_THROWS_WITH_AS(deploy::validate(c), doctest::Contains("policy.max_duration: 1e+18h is out of range"), common::Error);
    o.max_duration = "soon";
    CHECK_THROWS_WITH_AS(deploy::apply_overrides(c, o), doctest::Contains("--max-duration: 'soon'"), common::Error);
}

TEST_CASE("config: policy.stall_timeout (finish's bound on a remote command without progress) reads, is ranged and kept in run.json") {
    CHECK(deploy::parse_run_config(kMinimal).policy.stall_timeout_s == doctest::Approx(300));  // the default: 5 minutes
    RunConfig c = deploy::parse_run_config(std::string(kMinimal) + "policy:\n  stall_timeout: 90s\n");
    CHECK(c.policy.stall_timeout_s == doctest::Approx(90));
    CHECK(deploy::config_from_json(deploy::config_to_json(c)).policy.stall_timeout_s == doctest::Approx(90));
    CHECK(load_error_of(std::string(kMinimal) + "policy:\n  stall_timeout: 1s\n")
              .find("policy.stall_timeout: '1s' is out of range: must be at least 5s and at most 6h") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "policy:\n  stall_timeout: 7h\n").find("policy.stall_timeout") != std::string::npos);
    auto j = deploy::config_to_json(c);
    j["policy"]["stall_timeout_s"] = 0;
    CHECK_THROWS_WITH_AS(deploy::config_from_json(j), doctest::Contains("run.json: policy.stall_timeout"), common::Error);
    j["policy"].erase("stall_timeout_s");  // a run directory from before the key: the default
    CHECK(deploy::config_from_json(j).policy.stall_timeout_s == doctest::Approx(300));
}

TEST_CASE("config: capture.layers syntax is checked at load") {
    std::string msg = load_error_of(std::string(kMinimal) + "capture:\n  layers: banana\n");
    CHECK(msg.find("run.yaml:7:11: capture.layers: 'banana'") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "capture:\n  layers: 3-1\n").find("upwards") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "capture:\n  layers: 0-2000000000\n").find("at most 1023") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "capture:\n  layers: \"\"\n").find("no layers given") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "capture:\n  layers: \"1;2\"\n").find("capture.layers") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "capture:\n  layers: \"0-3 \"\n").find("capture.layers") != std::string::npos);
    CHECK(deploy::parse_run_config(std::string(kMinimal) + "capture:\n  layers: 0-3,47\n").capture.layers == "0-3,47");
    CHECK(deploy::parse_run_config(std::string(kMinimal) + "capture:\n  layers: all\n").capture.layers.empty());
    // What `extract run --layers` accepts (spaces before a number, empty parts) reads here too.
    CHECK(deploy::parse_capture_layers("0-3, 47,") == std::vector<int>{0, 1, 2, 3, 47});
    CHECK(deploy::parse_capture_layers("5,1-2,2") == std::vector<int>{1, 2, 5});
}

TEST_CASE("config: capture.layers past the model's layers is refused before renting (fixture, local checkpoint)") {
    CHECK(error_of(std::string(kFixture) + "capture:\n  layers: 0-3\n").empty());
    std::string msg = error_of(std::string(kFixture) + "capture:\n  layers: 0-7\n");
    CHECK(msg.find("capture.layers: '0-7' names layer 7 but the olmoe fixture has 4 layers (0-3)") != std::string::npos);
    tests::TempDir dir;
    std::filesystem::create_directories(dir / "ckpt");
    tests::write_file(dir / "ckpt/config.json", R"({"model_type": "llama", "num_hidden_layers": 2})");
    tests::write_file(dir / "ids.json", "[1,2,3]");
    tests::write_file(dir / "run.yaml", "model:\n  path: ckpt\ndata:\n  tokens: ids.json\n  num_sequences: 1\n  sequence_length: 3\ncapture:\n  layers: 0-3\n");
    RunConfig c = deploy::load_run_config(dir / "run.yaml");
    const std::string expected = "names layer 3 but " + (dir / "ckpt") + " (config.json) has 2 layers";
    CHECK_THROWS_WITH_AS(deploy::validate(c), doctest::Contains(expected.c_str()), common::Error);
    c.capture.layers = "1";
    CHECK_NOTHROW(deploy::validate(c));
    // A config.json that is not JSON is refused here rather than on the instance.
    tests::write_file(dir / "ckpt/config.json", "{not json");
    CHECK_THROWS_WITH_AS(deploy::validate(c), doctest::Contains("not a JSON object"), common::Error);
    // The Hub form: the estimate step passes the fetched config.json.
    RunConfig h = deploy::parse_run_config(std::string(kMinimal) + "capture:\n  layers: 0-3,47\n");
    CHECK_NOTHROW(deploy::check_capture_layers(h, nlohmann::json{{"num_hidden_layers", 48}}));
    CHECK_THROWS_WITH_AS(deploy::check_capture_layers(h, nlohmann::json{{"num_hidden_layers", 40}}),
                         doctest::Contains("names layer 47 but Qwen/Qwen3-30B-A3B (config.json) has 40 layers"), common::Error);
    CHECK_NOTHROW(deploy::check_capture_layers(h, nlohmann::json::object()));  // no count: extract will say
}

// ---- resources.offload_gb: a model larger than the GPUs on fewer GPUs ----------------------------

TEST_CASE("config: resources.offload_gb reads (default 0), is range-checked at file:line:column, and round-trips through run.json") {
    CHECK(deploy::parse_run_config(kMinimal).resources.offload_gb == 0);
    RunConfig c = deploy::parse_run_config(std::string(kMinimal) + "resources:\n  gpu_count: 1\n  offload_gb: 90\n");
    deploy::validate(c);
    CHECK(c.resources.offload_gb == 90);
    CHECK(deploy::parse_run_config(std::string(kMinimal) + "resources:\n  offload_gb: 0\n").resources.offload_gb == 0);  // 0 = none
    CHECK(deploy::parse_run_config(std::string(kMinimal) + "resources:\n  offload_gb: 40.5\n").resources.offload_gb == 40.5);
    CHECK(load_error_of(std::string(kMinimal) + "resources:\n  offload_gb: -1\n")
              .find("run.yaml:7:15: resources.offload_gb: -1 is out of range: must be >= 0 and at most 100000") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "resources:\n  offload_gb: 1e6\n").find("resources.offload_gb: 1000000 is out of range") !=
          std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "resources:\n  offload_gb: lots\n").find("run.yaml:7:15") != std::string::npos);
    CHECK(load_error_of(std::string(kMinimal) + "resources:\n  offload: 90\n").find("offload") != std::string::npos);  // unknown key
    // run.json: written, read back; a run directory from before offload (no key) reads as 0.
    auto j = deploy::config_to_json(c);
    CHECK(j["resources"]["offload_gb"] == 90);
    CHECK(deploy::config_from_json(j).resources.offload_gb == 90);
    j["resources"].erase("offload_gb");
    CHECK(deploy::config_from_json(j).resources.offload_gb == 0);
    j["resources"]["offload_gb"] = -5;
    CHECK_THROWS_WITH_AS(deploy::config_from_json(j), doctest::Contains("run.json: resources.offload_gb: -5 is out of range"), common::Error);
}

TEST_CASE("config: --offload-gb overrides the file and is held to the same range") {
    RunConfig c = deploy::load_run_config(std::string(TOOLKIT_SOURCE_DIR) + "/configs/glm-4.5-air.yaml");
    CHECK(c.resources.offload_gb == 0);  // the file's default: two H200s, nothing offloaded
    deploy::Overrides o;
    o.gpu_count = 1;
    o.offload_gb = 110;
    deploy::apply_overrides(c, o);
    deploy::validate(c);  // the documented one-GPU command: min_cpu_ram_gb 128 >= 110
    CHECK(c.resources.gpu_count == 1);
    CHECK(c.resources.offload_gb == 110);
    CHECK(*deploy::offer_min_ram_gb(c.resources) == 128);  // given in the file, so kept
    deploy::Overrides none;
    deploy::apply_overrides(c, none);
    CHECK(c.resources.offload_gb == 110);  // an unset flag leaves it alone
    o.offload_gb = -1;
    deploy::apply_overrides(c, o);
    CHECK_THROWS_WITH_AS(deploy::validate(c), doctest::Contains("resources.offload_gb: -1 is out of range"), common::Error);
}

TEST_CASE("config: offload sets the offers' minimum RAM when min_cpu_ram_gb is not given, and is refused below it or without GPUs") {
    deploy::ResourcesConfig r;
    CHECK_FALSE(deploy::offer_min_ram_gb(r).has_value());  // no offload, no floor
    r.offload_gb = 90;
    CHECK(*deploy::offer_min_ram_gb(r) == 115);  // ceil(90 x 1.1 + 16): pinned layers plus the process
    r.offload_gb = 40;
    CHECK(*deploy::offer_min_ram_gb(r) == 60);
    r.offload_gb = 0.5;
    CHECK(*deploy::offer_min_ram_gb(r) == 17);
    r.min_cpu_ram_gb = 256;
    CHECK(*deploy::offer_min_ram_gb(r) == 256);  // given: it is the floor
    r.offload_gb = 0;
    r.min_cpu_ram_gb = 64;
    CHECK(*deploy::offer_min_ram_gb(r) == 64);
    // min_cpu_ram_gb below the pinned memory: refused naming both keys.
    std::string msg = error_of(std::string(kMinimal) + "resources:\n  gpu_count: 1\n  min_cpu_ram_gb: 64\n  offload_gb: 90\n");
    CHECK(msg.find("config: resources.min_cpu_ram_gb: 64 GB is less than resources.offload_gb (90 GB") != std::string::npos);
    CHECK(error_of(std::string(kMinimal) + "resources:\n  gpu_count: 1\n  min_cpu_ram_gb: 90\n  offload_gb: 90\n").empty());
    // The flags meet the same check.
    RunConfig c = deploy::parse_run_config(std::string(kMinimal) + "resources:\n  min_cpu_ram_gb: 64\n");
    deploy::Overrides o;
    o.offload_gb = 90;
    deploy::apply_overrides(c, o);
    CHECK_THROWS_WITH_AS(deploy::validate(c), doctest::Contains("resources.offload_gb"), common::Error);
    // A CPU run has no GPU to stream to.
    msg = error_of(std::string(kFixture) + "  offload_gb: 8\n");
    CHECK(msg.find("resources.offload_gb: 8 GB with gpu_count 0") != std::string::npos);
    CHECK(error_of(std::string(kFixture) + "  offload_gb: 0\n").empty());
}

TEST_CASE("config: a resumed run's run.json is held to every check that needs no local file: an edited string is refused naming the key") {
    // The qwen3 config names a Hub model and a local data file; the round trip needs neither here.
    const RunConfig hub = deploy::load_run_config(std::string(TOOLKIT_SOURCE_DIR) + "/configs/qwen3-30b-a3b.yaml");
    const RunConfig fixture = deploy::rehearsal_defaults();
    struct Case {
        const RunConfig * base;
        std::vector<std::string> path;  // into the config JSON
        nlohmann::json value;
        std::string expect;
    };
    const std::vector<Case> cases{
        {&fixture, {"capture", "sites"}, {"x; rm -rf ~"}, "run.json: capture.sites: unknown site 'x; rm -rf ~'"},
        {&fixture, {"capture", "sites"}, {"x\x1b[2J"}, "run.json: capture.sites: unknown site 'x?[2J'"},  // no escape reaches the terminal
        {&fixture, {"resources", "providers"}, {"local; rm -rf ~"}, "run.json: resources.providers: 'local; rm -rf ~' is not a provider name"},
        {&hub, {"model", "hub"}, "Qwen/Qwen3$(reboot)", "run.json: model.hub: 'Qwen/Qwen3$(reboot)' is not a Hugging Face id"},
        {&hub, {"model", "dtype"}, "fp4", "run.json: model.dtype: unknown dtype 'fp4'"},
        {&fixture, {"model", "hub"}, "a/b", "run.json: model: give exactly one model source"},
        {&fixture, {"analysis", "mode"}, "everything", "run.json: analysis.mode: unknown mode 'everything'"},
        {&fixture, {"name"}, "Rehearsal-1", "run.json: name: 'Rehearsal-1': use at most 20 lower-case letters and digits"},
        {&fixture, {"capture", "layers"}, "0-500", "run.json: capture.layers: '0-500' names layer 500 but the olmoe fixture has"},
        {&hub, {"data", "hub_rows", "dataset"}, "x/y?z=1", "run.json: config.data.hub_rows.dataset"},
        {&fixture, {"hf_token_env"}, "", "run.json: hf_token_env: must name an environment variable"},
        {&hub, {"data", "text"}, "/elsewhere/also.txt", "run.json: data: give exactly one of text, jsonl, tokens"},
    };
    for (const auto & c : cases) {
        CAPTURE(c.expect);
        auto j = deploy::config_to_json(*c.base);
        CHECK_NOTHROW((void)deploy::config_from_json(j, "RUN/run.json"));  // untouched, it resumes
        nlohmann::json * at = &j;
        for (const auto & k : c.path) at = &(*at)[k];
        *at = c.value;
        const std::string expect = "RUN/" + c.expect;
        CHECK_THROWS_WITH_AS((void)deploy::config_from_json(j, "RUN/run.json"), doctest::Contains(expect.c_str()), common::Error);
    }
}
