// Loader errors: each broken checkpoint gives an error naming the file and the tensor.
#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"
#include "extractor/model.h"
#include "tests/extractor/test_util.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {

struct Failure {
    common::ErrorKind kind = common::ErrorKind::Internal;
    std::string message;
};

Failure load_error(const std::string & dir) {
    LoadOptions o;
    o.device = "cpu";
    o.dtype = at::kFloat;
    o.show_progress = false;
    try {
        (void)load_model(dir, o);
    } catch (const common::Error & e) {
        return {e.kind(), e.message()};
    }
    return {common::ErrorKind::Internal, "<no error>"};
}

// Rewrites model.safetensors with `edit` applied to the tensor list.
void rewrite(const std::string & dir, const std::function<void(std::vector<std::pair<std::string, at::Tensor>> &)> & edit) {
    SafetensorsFile f = SafetensorsFile::open(dir + "/model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> ts;
    for (const auto & n : f.names()) ts.emplace_back(n, f.load(n));
    edit(ts);
    write_safetensors(dir + "/model.safetensors.new", ts);
    std::filesystem::rename(dir + "/model.safetensors.new", dir + "/model.safetensors");
}

}  // namespace

TEST_CASE("loader: missing tensor, wrong shape, wrong dtype, truncated file and bad header each name the file and tensor") {
    tests::TempDir dir;
    FixtureOptions f;
    f.family = "olmoe";
    f.out_dir = dir / "m";
    write_fixture(f);
    const std::string file = dir / "m/model.safetensors";
    const std::string victim = "model.layers.1.mlp.experts.3.up_proj.weight";
    const std::string pristine = tests::read_file(file);

    SUBCASE("missing tensor") {
        rewrite(dir / "m", [&](auto & ts) { std::erase_if(ts, [&](auto & p) { return p.first == victim; }); });
        Failure e = load_error(dir / "m");
        CHECK(e.kind == common::ErrorKind::Usage);
        CHECK(e.message.find("tensor " + victim + ": missing from the checkpoint") != std::string::npos);
        CHECK(e.message.find(dir / "m") != std::string::npos);
    }
    SUBCASE("wrong shape") {
        rewrite(dir / "m", [&](auto & ts) {
            for (auto & p : ts)
                if (p.first == victim) p.second = at::zeros({96, 63});
        });
        Failure e = load_error(dir / "m");
        CHECK(e.message == file + ": tensor " + victim + ": shape [96,63] but config.json implies [96,64] (dtype F32)");
    }
    SUBCASE("wrong dtype") {
        rewrite(dir / "m", [&](auto & ts) {
            for (auto & p : ts)
                if (p.first == victim) p.second = p.second.to(at::kInt);
        });
        Failure e = load_error(dir / "m");
        CHECK(e.message == file + ": tensor " + victim + ": dtype I32 is not a supported weight dtype (BF16, F16, F32)");
    }
    SUBCASE("truncated file") {
        tests::write_file(file, pristine.substr(0, pristine.size() - 100));
        Failure e = load_error(dir / "m");
        CHECK(e.message.find(file + ": bad safetensors header:") == 0);
        CHECK(e.message.find("truncated (last tensor ") != std::string::npos);
    }
    SUBCASE("bad header") {
        std::string broken = pristine;
        broken[8] = '[';
        tests::write_file(file, broken);
        Failure e = load_error(dir / "m");
        CHECK(e.message == file + ": bad safetensors header: header is not a JSON object");
    }
    SUBCASE("no weights at all") {
        std::filesystem::remove(file);
        Failure e = load_error(dir / "m");
        CHECK(e.kind == common::ErrorKind::NotFound);
    }
}

TEST_CASE("loader: a model that cannot fit the budgets is refused before any byte is read") {
    tests::TempDir dir;
    FixtureOptions f;
    f.family = "llama";
    f.out_dir = dir / "m";
    write_fixture(f);
    LoadOptions o;
    o.device = "cpu";
    o.max_memory = "0=1MiB";
    try {
        (void)plan_model(dir / "m", o);
        FAIL("expected an error");
    } catch (const common::Error & e) {
        CHECK(e.message().find("--max-memory names GPUs but --device is cpu") != std::string::npos);
    }
}

TEST_CASE("loader: a config.json claiming more layers than the checkpoint holds is named as such, also when fewer are run") {
    tests::TempDir dir;
    FixtureOptions f;
    f.family = "llama";
    f.layers = 2;
    f.out_dir = dir / "m";
    write_fixture(f);
    auto config = nlohmann::json::parse(tests::read_file(dir / "m/config.json"));
    config["num_hidden_layers"] = 40;
    tests::write_file(dir / "m/config.json", config.dump());
    const std::string expected = dir / "m/config.json: key num_hidden_layers: 40 but the checkpoint in " + dir / "m" +
                                 " has no tensors for layer 39 (model.layers.39.*)";
    Failure e = load_error(dir / "m");
    CHECK(e.kind == common::ErrorKind::Usage);
    CHECK(e.message == expected);
    // Before: running layer 0 alone loaded and ran a "40-layer" model from a 2-layer checkpoint.
    LoadOptions o;
    o.device = "cpu";
    o.dtype = at::kFloat;
    o.show_progress = false;
    o.run_layers = 1;
    try {
        (void)load_model(dir / "m", o);
        FAIL("expected an error");
    } catch (const common::Error & err) {
        CHECK(err.message() == expected);
    }
}

TEST_CASE("loader: load options outside their range are usage errors before anything is read") {
    auto err = [](const std::function<void(LoadOptions &)> & edit) {
        LoadOptions o;
        o.device = "cpu";
        edit(o);
        try {
            check_load_options(o);
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Usage);
            return e.message();
        }
        return std::string("<no error>");
    };
    CHECK(err([](LoadOptions &) {}) == "<no error>");
    CHECK(err([](LoadOptions & o) { o.device = "cuda:3"; }) == "<no error>");
    CHECK(err([](LoadOptions & o) { o.device = "tpu"; }) == "--device \"tpu\" is not cpu, cuda, cuda:N or auto");
    CHECK(err([](LoadOptions & o) { o.device = "cuda:x"; }).find("--device \"cuda:x\"") == 0);
    CHECK(err([](LoadOptions & o) { o.device = "cuda:-1"; }).find("--device \"cuda:-1\"") == 0);
    CHECK(err([](LoadOptions & o) { o.stall_timeout_s = -1; }).find("--load-stall-timeout must be a positive number") == 0);
    CHECK(err([](LoadOptions & o) { o.stall_timeout_s = 0; }).find("--load-stall-timeout") == 0);
    CHECK(err([](LoadOptions & o) { o.stall_timeout_s = std::nan(""); }).find("--load-stall-timeout") == 0);
    CHECK(err([](LoadOptions & o) { o.threads = -5; }) == "--load-threads must be 1 to 256, got -5");
    CHECK(err([](LoadOptions & o) { o.threads = 0; }).find("--load-threads") == 0);
}
