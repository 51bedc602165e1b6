// config.json: both key spellings, and errors that name the file and key.
#include <ATen/ATen.h>
#include <sys/stat.h>

#include <filesystem>
#include <limits>

#include "common/error.h"
#include "extractor/checkpoint/hf_config.h"
#include "extractor/families/family.h"
#include "fuzz/hf_config_check.h"
#include "tests/extractor/test_util.h"
#include "tests/support/temp_dir.h"
#include "tests/support/error_of.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {
nlohmann::json base() {
    return nlohmann::json::parse(R"({"model_type":"llama","vocab_size":32,"hidden_size":16,"num_hidden_layers":2,
        "num_attention_heads":4,"intermediate_size":24})");
}
using tests::error_of;
}  // namespace

TEST_CASE("config: legacy (torch_dtype, rope_theta, rope_scaling.type) and v5 (dtype, rope_parameters) keys agree") {
    nlohmann::json legacy = base(), v5 = base();
    legacy["torch_dtype"] = "bfloat16";
    legacy["rope_theta"] = 500000.0;
    legacy["rope_scaling"] = {{"type", "llama3"}, {"factor", 8.0}, {"original_max_position_embeddings", 8192}};
    v5["dtype"] = "bfloat16";
    v5["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0},
                             {"original_max_position_embeddings", 8192}};
    HfConfig a = parse_hf_config(legacy, "legacy/config.json"), b = parse_hf_config(v5, "v5/config.json");
    CHECK(a.dtype == b.dtype);
    CHECK(a.rope.type == "llama3");
    CHECK(b.rope.type == "llama3");
    CHECK(*a.rope.theta == *b.rope.theta);
    CHECK(a.num_key_value_heads == 4);  // defaults to the query heads
    const Family & f = find_family("llama");
    CHECK(at::equal(f.parse_config(a).rope.inv_freq, f.parse_config(b).rope.inv_freq));
    CHECK(f.parse_config(a).head_dim == 4);
}

TEST_CASE("config: a missing or mistyped key, an unknown family or rope type is an error naming file and key") {
    nlohmann::json j = base();
    j.erase("hidden_size");
    CHECK(error_of([&] { parse_hf_config(j, "m/config.json"); }) == "m/config.json: key hidden_size: missing (required)");
    j = base();
    j["num_hidden_layers"] = "two";
    CHECK(error_of([&] { parse_hf_config(j, "m/config.json"); }).find("key num_hidden_layers: has the wrong type") != std::string::npos);
    j = base();
    j["num_key_value_heads"] = 3;
    CHECK(error_of([&] { parse_hf_config(j, "m/config.json"); }).find("must divide") != std::string::npos);
    j = base();
    j["rope_parameters"] = {{"rope_type", "longrope"}};
    CHECK(error_of([&] { parse_hf_config(j, "m/config.json"); }).find("longrope") != std::string::npos);
    CHECK(error_of([] { find_family("gpt2"); }) == "model_type \"gpt2\" is not supported (supported: llama, qwen2, qwen3, olmoe, qwen3_moe, mixtral, gpt_oss, glm4_moe, qwen3_next)");
}

// --- hostile config.json (issue #11): num_hidden_layers 1e9 grew `extract inspect` to 23 GB.

TEST_CASE("config: every count must be a JSON integer within its bound, the error names file, key and range") {
    auto err = [](const std::string & key, const nlohmann::json & v) {
        nlohmann::json j = base();
        j[key] = v;
        return error_of([&] { parse_hf_config(j, "m/config.json"); });
    };
    CHECK(err("num_hidden_layers", 1e9) ==
          "m/config.json: key num_hidden_layers: must be an integer, got 1000000000.0 (allowed: 1 to 1024)");
    CHECK(err("num_hidden_layers", 2.0).find("key num_hidden_layers: must be an integer, got 2.0") != std::string::npos);
    CHECK(err("num_hidden_layers", 2000) == "m/config.json: key num_hidden_layers: 2000 is out of range (allowed: 1 to 1024)");
    CHECK(err("num_hidden_layers", -1).find("key num_hidden_layers: -1 is out of range") != std::string::npos);
    CHECK(err("num_hidden_layers", true).find("key num_hidden_layers: has the wrong type (boolean") != std::string::npos);
    CHECK(err("vocab_size", std::numeric_limits<uint64_t>::max()) ==
          "m/config.json: key vocab_size: 18446744073709551615 is out of range (allowed: 1 to 4194304)");
    CHECK(err("hidden_size", 1 << 20).find("key hidden_size: 1048576 is out of range") != std::string::npos);
    CHECK(err("num_attention_heads", 1e6).find("key num_attention_heads: must be an integer") != std::string::npos);
    CHECK(err("num_key_value_heads", 8).find("key num_key_value_heads: 8 is out of range (allowed: 1 to 4)") != std::string::npos);
    CHECK(err("head_dim", 2.5).find("key head_dim: must be an integer, got 2.5") != std::string::npos);
    CHECK(err("intermediate_size", -5).find("key intermediate_size: -5 is out of range") != std::string::npos);
    CHECK(err("max_position_embeddings", 1e30).find("key max_position_embeddings: must be an integer") != std::string::npos);
    CHECK(err("num_experts", 100000).find("key num_experts: 100000 is out of range") != std::string::npos);
    CHECK(err("num_local_experts", 1.5).find("key num_local_experts: must be an integer") != std::string::npos);
    CHECK(err("num_experts_per_tok", -2).find("key num_experts_per_tok: -2 is out of range") != std::string::npos);
    CHECK(err("moe_intermediate_size", 1e12).find("key moe_intermediate_size: must be an integer") != std::string::npos);
    CHECK(err("decoder_sparse_step", 0).find("key decoder_sparse_step: 0 is out of range") != std::string::npos);
    CHECK(err("mlp_only_layers", {0, 1.0}).find("key mlp_only_layers[1]: must be an integer") != std::string::npos);
    CHECK(err("mlp_only_layers", {5}).find("key mlp_only_layers[0]: 5 is out of range (allowed: 0 to 1)") != std::string::npos);
    CHECK(err("mlp_only_layers", std::vector<int>(3, 0)).find("key mlp_only_layers: 3 entries, more than 2") != std::string::npos);
    CHECK(err("partial_rotary_factor", 1e18).find("key partial_rotary_factor: must be in (0, 1]") != std::string::npos);
    CHECK(err("rms_norm_eps", true).find("key rms_norm_eps: has the wrong type (boolean") != std::string::npos);
    // JSON text parses non-negative integers as unsigned: the lower bound holds for them too (found
    // by hf_config_fuzz: "decoder_sparse_step": 0 and "num_hidden_layers": 0 were accepted).
    for (const char * key : {"num_hidden_layers", "decoder_sparse_step", "vocab_size"}) {
        nlohmann::json without = base();
        without.erase(key);
        std::string text = without.dump();
        text.insert(1, "\"" + std::string(key) + "\":0,");
        nlohmann::json parsed = nlohmann::json::parse(text);
        REQUIRE(parsed[key].is_number_unsigned());
        CHECK(error_of([&] { parse_hf_config(parsed, "m/config.json"); }).find("key " + std::string(key) + ": 0 is out of range") !=
              std::string::npos);
    }
    // Each within its bound, but experts x layers rows in the weight plan are bounded too.
    nlohmann::json j = base();
    j["num_hidden_layers"] = 1024;
    j["num_experts"] = 4096;
    CHECK(error_of([&] { parse_hf_config(j, "m/config.json"); }) ==
          "m/config.json: key num_experts: 4096 experts x 1024 layers is more than 65536 experts in all");
    // The bounds leave real checkpoints alone (Qwen3-30B-A3B's sizes).
    j = base();
    for (auto [k, v] : std::vector<std::pair<const char *, int64_t>>{{"vocab_size", 151936}, {"hidden_size", 2048},
                                                                     {"num_hidden_layers", 48}, {"num_attention_heads", 32},
                                                                     {"num_key_value_heads", 4}, {"head_dim", 128},
                                                                     {"num_experts", 128}, {"num_experts_per_tok", 8},
                                                                     {"moe_intermediate_size", 768}, {"max_position_embeddings", 40960}})
        j[k] = v;
    CHECK(parse_hf_config(j, "m/config.json").num_experts == 128);
}

TEST_CASE("config: a config.json that is a directory, a FIFO or over 1 MiB is refused by name, without blocking") {
    tests::TempDir dir;
    std::filesystem::create_directories(dir / "d/config.json");
    CHECK(error_of([&] { read_hf_config(dir / "d"); }) == dir / "d/config.json: is a directory, not a regular file (expected a config.json)");
    std::filesystem::create_directories(dir / "f");
    const std::string fifo = dir / "f/config.json";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    std::string msg;
    CHECK(tests::finishes_without_blocking_on(fifo, [&] { msg = error_of([&] { read_hf_config(dir / "f"); }); }));
    CHECK(msg == fifo + ": is a FIFO (named pipe), not a regular file (expected a config.json)");
    std::filesystem::create_directories(dir / "b");
    tests::write_file(dir / "b/config.json", base().dump() + std::string(1 << 20, ' '));
    CHECK(error_of([&] { read_hf_config(dir / "b"); }).find(dir / "b/config.json: 1048" ) == 0);
    try {
        read_hf_config(dir / "nothing");
        FAIL("expected an error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::NotFound);
    }
}

TEST_CASE("config: committed fuzz regression inputs are refused or parsed within bounds, never crash") {
    namespace fs = std::filesystem;
    int seen = 0;
    for (const auto & e : fs::directory_iterator(HF_CONFIG_FUZZ_REGRESSIONS_DIR)) {
        const std::string text = tests::read_file(e.path().string());
        nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (!j.is_discarded()) {
            try {
                HfConfig c = parse_hf_config(j, e.path().string());
                CHECK(fuzz_checks::hf_config_within_limits(c));
            } catch (const common::Error & err) {
                CHECK(err.kind() == common::ErrorKind::Usage);
            }
        }
        ++seen;
    }
    MESSAGE("replayed " << seen << " regression inputs");
    CHECK(seen >= 1);
}

TEST_CASE("config: a negative rms_norm_eps, a non-positive rope theta or factor and an odd rotary width are refused naming the key") {
    // Each was accepted: eps -1 made NaN norms, theta 0 and factor 0 inf/NaN frequencies, and an odd
    // rotary width cos/sin one column wider than the rotated dims (transformers itself fails there).
    auto err = [](const nlohmann::json & edits) {
        nlohmann::json j = base();
        for (const auto & [k, v] : edits.items()) j[k] = v;
        return error_of([&] { find_family(j["model_type"].get<std::string>()).parse_config(parse_hf_config(j, "m/config.json")); });
    };
    CHECK(err({{"rms_norm_eps", -1e-6}}).find("m/config.json: key rms_norm_eps: must not be negative") != std::string::npos);
    CHECK(err({{"rope_theta", 0}}).find("m/config.json: key rope_theta: must be positive") != std::string::npos);
    CHECK(err({{"rope_theta", -10000.0}}).find("key rope_theta: must be positive") != std::string::npos);
    CHECK(err({{"rope_parameters", {{"rope_type", "default"}, {"rope_theta", -1.0}}}}).find("key rope_parameters.rope_theta: must be positive") !=
          std::string::npos);
    CHECK(err({{"rope_scaling", {{"rope_type", "linear"}, {"factor", 0.0}}}}).find("key rope_scaling.factor: must be positive") !=
          std::string::npos);
    CHECK(err({{"rope_parameters", {{"rope_type", "yarn"}, {"factor", -4.0}}}}).find("key rope_parameters.factor: must be positive") !=
          std::string::npos);
    CHECK(err({{"rope_parameters", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0}, {"high_freq_factor", 4.0}}}})
              .find("key rope_parameters.high_freq_factor: must be above low_freq_factor") != std::string::npos);
    // head_dim 16 x 0.3 = 4.8 -> 4 rotary dims is fine; x 0.35 = 5.6 -> 5 is odd.
    const std::string odd = err({{"head_dim", 16}, {"partial_rotary_factor", 0.35}});
    CHECK(odd.find("m/config.json: key partial_rotary_factor: head_dim 16 x 0.35") != std::string::npos);
    CHECK(odd.find("= 5 rotary dims; must be even") != std::string::npos);
    CHECK(err({{"head_dim", 16}, {"partial_rotary_factor", 0.3}}) == "<no error>");
    CHECK(err({{"rms_norm_eps", 0.0}}) == "<no error>");  // 0 is for HF to allow
}
