// config.json: both key spellings, and errors that name the file and key.
#include <ATen/ATen.h>

#include "common/error.h"
#include "extractor/checkpoint/hf_config.h"
#include "extractor/families/family.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {
nlohmann::json base() {
    return nlohmann::json::parse(R"({"model_type":"llama","vocab_size":32,"hidden_size":16,"num_hidden_layers":2,
        "num_attention_heads":4,"intermediate_size":24})");
}
std::string error_of(const std::function<void()> & f) {
    try {
        f();
    } catch (const common::Error & e) {
        return e.message();
    }
    return "<no error>";
}
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
    CHECK(error_of([] { find_family("gpt2"); }) == "model_type \"gpt2\" is not supported (supported: llama, qwen2, qwen3, olmoe, qwen3_moe)");
}
