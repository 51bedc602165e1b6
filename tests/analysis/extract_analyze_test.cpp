// The fused mode through the real `extract` program: `extract run MODEL --analyze DIR` streams the
// captures into the outlier accumulators in the same pass and writes the analysis outputs, with no
// activations on disk.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "common/subprocess.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace {
common::ProcessResult run_extract(std::vector<std::string> args) {
    args.insert(args.begin(), EXTRACT_BIN);
    common::RunOptions options;
    options.timeout = std::chrono::milliseconds(120000);
    return common::run_process(args, options);
}
}  // namespace

TEST_CASE("extract run --analyze: the planted dims are found in one pass, nothing else is written") {
    tests::TempDir dir;
    auto fixture = run_extract({"fixture", "--family", "olmoe", "--out", dir / "model", "--layers", "4", "--hidden",
                                "64", "--seed", "3", "--plant", "7,42@0-2"});
    INFO(fixture.err);
    REQUIRE(fixture.exit_code == 0);
    {
        std::ofstream ids(dir / "ids.json");
        ids << "[";
        for (int i = 0; i < 72; ++i) ids << (i ? "," : "") << (i * 37 + 5) % 120;
        ids << "]";
    }
    auto r = run_extract({"--json", "run", dir / "model", "--tokens", dir / "ids.json", "--seq-len", "24",
                          "--num-sequences", "3", "--batch-size", "2", "--dtype", "f32", "--device", "cpu",
                          "--analyze", dir / "analysis"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    auto out = nlohmann::json::parse(r.out);
    CHECK(out["analysis"]["modes"]["predecessor"]["num_outliers"] == 6);  // 2 dims x 3 sequences
    CHECK(out["out_dir"].is_null());
    CHECK(std::filesystem::exists(dir / "analysis/outliers.stats.cbor"));
    CHECK(std::filesystem::exists(dir / "analysis/report.md"));
    auto result = nlohmann::json::parse(tests::read_file(dir / "analysis/outliers.json"));
    std::vector<int> dims;
    for (const auto & f : result["modes"]["paper"]["features"]) dims.push_back(f["dim"].get<int>());
    std::sort(dims.begin(), dims.end());
    CHECK(dims == std::vector<int>{7, 42});
    CHECK_FALSE(std::filesystem::exists(dir / "activations"));

    // --analyze needs a directory; a missing value is a usage error.
    CHECK(run_extract({"run", dir / "model", "--tokens", dir / "ids.json", "--analyze"}).exit_code == 2);
}

TEST_CASE("extract run --perplexity --analyze: the run JSON's perplexity reaches outliers.json and report.md unchanged") {
    tests::TempDir dir;
    for (const bool tied : {false, true}) {
        CAPTURE(tied);
        const std::string model = dir / (tied ? "tied" : "untied");
        std::vector<std::string> fx = {"fixture", "--family", "qwen3_moe", "--out", model, "--layers", "2", "--seed", "5"};
        if (tied) fx.push_back("--tie-embeddings");
        auto fixture = run_extract(fx);
        INFO(fixture.err);
        REQUIRE(fixture.exit_code == 0);
        {
            std::ofstream ids(dir / "ids.json");
            ids << "[";
            for (int i = 0; i < 90; ++i) ids << (i ? "," : "") << (i * 37 + 5) % 120;
            ids << "]";
        }
        const std::string out_dir = model + "-analysis";
        auto r = run_extract({"--json", "run", model, "--tokens", dir / "ids.json", "--seq-len", "30", "--num-sequences", "3",
                              "--batch-size", "2", "--dtype", "f32", "--device", "cpu", "--perplexity", "--perplexity-chunk", "7",
                              "--analyze", out_dir});
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
        const auto out = nlohmann::json::parse(r.out);
        REQUIRE(out.contains("perplexity"));
        CHECK(out["perplexity"]["overall"]["tokens"] == 87);
        const double ppl = out["perplexity"]["overall"]["perplexity"].get<double>();
        CHECK(ppl > 1.0);
        auto result = nlohmann::json::parse(tests::read_file(out_dir + "/outliers.json"));
        REQUIRE(result.contains("perplexity"));
        CHECK(result["perplexity"] == out["perplexity"]);
        CHECK(tests::read_file(out_dir + "/report.md").find("## Perplexity") != std::string::npos);
    }
}
