// Every registered family on tiny fixture checkpoints (CPU): capture shapes, layer subsets,
// determinism, sharded = single file, legacy = v5 config keys, fast = plain paths, planted outliers.
#include <ATen/ATen.h>

#include <filesystem>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"
#include "extractor/compat.h"
#include "extractor/families/family.h"
#include "extractor/sinks/sinks.h"
#include "tests/extractor/test_util.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {

FixtureOptions tiny(const std::string & family, const std::string & dir) {
    FixtureOptions f;
    f.family = family;
    f.out_dir = dir;
    f.layers = 3;
    if (family == "qwen3_moe") f.mlp_only_layers = {1};
    return f;
}

void check_same(const tests::CollectSink & a, const tests::CollectSink & b, double tol = 0.0) {
    REQUIRE(a.got.size() == b.got.size());
    for (const auto & [k, t] : a.got) {
        INFO("layer " << k.second << " " << site_name(k.first));
        REQUIRE(b.got.count(k));
        if (tol == 0.0) CHECK(at::equal(t, b.got.at(k)));
        else CHECK(at::allclose(t, b.got.at(k), tol, tol));
    }
}

}  // namespace

TEST_CASE("families: every registered family runs on its fixture and writes [B,T,H] captures for every layer and site") {
    tests::TempDir dir;
    const std::string ids = tests::write_ids(dir / "ids.json", 40, 128);
    for (const Family * fam : all_families()) {
        const std::string name(fam->name());
        INFO("family " << name);
        write_fixture(tiny(name, dir / name));
        ExtractOptions o;
        o.model_dir = dir / name;
        o.load.device = "cpu";
        o.load.dtype = at::kFloat;
        o.input.tokens_file = ids;
        o.input.seq_len = 12;
        o.input.num_sequences = 3;
        o.input.batch_size = 2;
        o.sites = {Site::LnAttn, Site::LnMlp, Site::Residual};
        o.out_dir = dir / ("out-" + name);
        ExtractResult r = run_extraction(o);
        CHECK(r.tokens == 36);
        CHECK(r.batches == 2);
        CHECK(r.metadata["layers_extracted"].size() == 3);
        CHECK(std::filesystem::exists(dir / ("out-" + name + "/metadata.json")));
        SafetensorsFile last = SafetensorsFile::open(dir / ("out-" + name + "/activations/batch_00001.safetensors"));
        for (int l = 0; l < 3; ++l)
            for (const char * s : {"ln_attn", "ln_mlp", "residual"}) {
                const std::string t = "layer_" + std::to_string(l) + "_" + s;
                REQUIRE(last.contains(t));
                CHECK(last.info(t).shape == std::vector<int64_t>{1, 12, 64});  // last batch holds 1 row
                CHECK(last.info(t).dtype == "F32");
                CHECK(at::isfinite(last.load(t)).all().item<bool>());
            }
        // Third window of the id stream: ids[24..35] with id_i = (7 i + 3) % 128.
        at::Tensor expect = (at::arange(24, 36, at::kLong) * 7 + 3).remainder(128).view({1, 12});
        CHECK(at::equal(last.load("token_ids"), expect));
        CHECK(last.load("sequence_indices").item<int64_t>() == 2);
    }
}

TEST_CASE("capture: a layer subset yields exactly the values of the full run, and runs only up to its last layer") {
    tests::TempDir dir;
    write_fixture(tiny("olmoe", dir / "m"));
    const std::string ids = tests::write_ids(dir / "ids.json", 30, 128);
    auto full = tests::run_collect(dir / "m", ids);
    auto sub = tests::run_collect(dir / "m", ids, {1});
    CHECK(sub.got.size() == 2);
    CHECK(at::equal(sub.got.at({Site::LnAttn, 1}), full.got.at({Site::LnAttn, 1})));
    CHECK(at::equal(sub.got.at({Site::LnMlp, 1}), full.got.at({Site::LnMlp, 1})));
    CHECK(full.got.size() == 6);
}

TEST_CASE("determinism: the same fixture seed gives identical files and two runs give bit-identical captures") {
    tests::TempDir dir;
    write_fixture(tiny("qwen3_moe", dir / "a"));
    write_fixture(tiny("qwen3_moe", dir / "b"));
    CHECK(tests::read_file(dir / "a/model.safetensors") == tests::read_file(dir / "b/model.safetensors"));
    FixtureOptions other = tiny("qwen3_moe", dir / "c");
    other.seed = 1;
    write_fixture(other);
    CHECK(tests::read_file(dir / "a/model.safetensors") != tests::read_file(dir / "c/model.safetensors"));
    const std::string ids = tests::write_ids(dir / "ids.json", 30, 128);
    check_same(tests::run_collect(dir / "a", ids), tests::run_collect(dir / "a", ids));
}

TEST_CASE("checkpoint layouts: sharded = single file, legacy config keys = v5 keys, bf16 file loads in f32") {
    tests::TempDir dir;
    const std::string ids = tests::write_ids(dir / "ids.json", 30, 128);
    write_fixture(tiny("qwen3", dir / "single"));
    FixtureOptions sharded = tiny("qwen3", dir / "sharded");
    sharded.shards = 3;
    write_fixture(sharded);
    CHECK(std::filesystem::exists(dir / "sharded/model.safetensors.index.json"));
    CHECK(std::filesystem::exists(dir / "sharded/model-00003-of-00003.safetensors"));
    FixtureOptions legacy = tiny("qwen3", dir / "legacy");
    legacy.legacy_keys = true;
    write_fixture(legacy);
    CHECK(tests::read_file(dir / "legacy/config.json").find("torch_dtype") != std::string::npos);
    auto base = tests::run_collect(dir / "single", ids);
    check_same(base, tests::run_collect(dir / "sharded", ids));
    check_same(base, tests::run_collect(dir / "legacy", ids));
    FixtureOptions bf = tiny("qwen3", dir / "bf16");
    bf.dtype = at::kBFloat16;
    write_fixture(bf);
    check_same(base, tests::run_collect(dir / "bf16", ids), 0.1);  // weights rounded to bf16, computed in f32
}

TEST_CASE("compat: fast paths (libtorch 2.x SDPA) and plain paths agree where both exist") {
    tests::TempDir dir;
    const std::string ids = tests::write_ids(dir / "ids.json", 30, 128);
    for (const char * fam : {"llama", "olmoe"}) {
        write_fixture(tiny(fam, dir / fam));
        compat::set_fast_paths(true);
        auto fast = tests::run_collect(dir / fam, ids);
        compat::set_fast_paths(false);
        auto plain = tests::run_collect(dir / fam, ids);
        compat::set_fast_paths(true);
        check_same(fast, plain, 1e-5);
    }
    if (!compat::has_sdpa()) MESSAGE("libtorch " << compat::torch_version() << " has no SDPA: only the plain path exists here");
}

TEST_CASE("fixture: planted outliers reach |x| >= 6 at the planted dims of the planted layers only") {
    tests::TempDir dir;
    FixtureOptions f = tiny("olmoe", dir / "m");
    f.plants = {parse_plant("7,42@0-1")};
    write_fixture(f);
    const std::string ids = tests::write_ids(dir / "ids.json", 40, 128);
    ExtractOptions o;
    o.model_dir = dir / "m";
    o.load.device = "cpu";
    o.load.dtype = at::kFloat;
    o.input.tokens_file = ids;
    o.input.seq_len = 20;
    o.input.num_sequences = 2;
    o.absmax = true;
    ExtractResult r = run_extraction(o);
    for (const auto & row : r.absmax) {
        const int layer = row["layer"];
        INFO(row.dump());
        if (layer <= 1) {
            CHECK((row["max_dim"] == 7 || row["max_dim"] == 42));
            CHECK(row["count_ge_6"].get<int64_t>() >= 40);  // of 80 planted values (2 dims x 40 tokens)
        } else {
            CHECK(row["count_ge_6"].get<int64_t>() == 0);
        }
    }
}

TEST_CASE("qwen3_moe: mlp_only_layers get a dense MLP, the others experts, and the weight table says so") {
    HfConfig hf = parse_hf_config(nlohmann::json::parse(R"({"model_type":"qwen3_moe","vocab_size":10,"hidden_size":8,
        "num_hidden_layers":4,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,"intermediate_size":12,
        "num_experts":4,"num_experts_per_tok":2,"moe_intermediate_size":6,"mlp_only_layers":[1],"decoder_sparse_step":2})"),
                                  "config.json");
    const Family & f = find_family("qwen3_moe");
    ModelConfig c = f.parse_config(hf);
    // sparse iff not in mlp_only_layers and (l+1) % 2 == 0
    CHECK(c.layer_is_moe == std::vector<bool>{false, false, false, true});
    WeightPlan plan = f.plan_weights(c, false);
    int dense = 0, experts = 0;
    for (const auto & s : plan.sources) {
        if (s.name.find("mlp.gate_proj") != std::string::npos) ++dense;
        if (s.name.find("mlp.experts.") != std::string::npos) ++experts;
    }
    CHECK(dense == 3);
    CHECK(experts == 4 * 3);
}

TEST_CASE("random weights: a config.json alone runs with --random-weights") {
    tests::TempDir dir;
    write_fixture(tiny("llama", dir / "m"));
    std::filesystem::remove(dir / "m/model.safetensors");
    ExtractOptions o;
    o.model_dir = dir / "m";
    o.random_weights = true;
    o.load.device = "cpu";
    o.input.tokens_file = tests::write_ids(dir / "ids.json", 30, 128);
    o.input.seq_len = 10;
    o.absmax = true;
    ExtractResult r = run_extraction(o);
    CHECK(r.tokens == 30);
    CHECK(r.absmax.size() == 6);
}
