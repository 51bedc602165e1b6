// `--perplexity` in the analysis (statistics.h SequencePerplexity): the accumulator's records from the
// run's token losses, outliers.json's "perplexity" object and report.md's section, the statistics
// file round trip (version 2; version 1 files still read, later versions refused by name), hostile
// records refused, and a merge of two halves equal to the whole, sums and counts bit for bit.
#include "tests/analysis/analysis_test_util.h"

#include "analysis/report.h"
#include "analysis/stats_file.h"
#include "common/error.h"
#include "tests/support/temp_dir.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include <doctest/doctest.h>

namespace {

// A batch of planted captures plus its token losses [B,T-1], as extract hands them over.
void feed_with_nll(extractor::CaptureSink & acc, const tests::FakeBatch & fb, const at::Tensor & nll) {
    extractor::BatchInfo info;
    info.sequence_indices = fb.sequence_indices;
    info.token_ids = fb.token_ids;
    acc.begin_batch(info);
    for (size_t l = 0; l < fb.layers.size(); ++l) {
        acc.on_capture(extractor::Site::LnAttn, static_cast<int>(l), fb.layers[l].first);
        acc.on_capture(extractor::Site::LnMlp, static_cast<int>(l), fb.layers[l].second);
    }
    acc.on_token_nll(nll);
    acc.end_batch();
}

constexpr int64_t kB = 2, kT = 13, kH = 16;

at::Tensor losses(uint64_t seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    return at::rand({kB, kT - 1}, gen, at::TensorOptions().dtype(at::kFloat)) * 8;  // [B,T-1]
}

const std::vector<tests::Plant> kPlants = {{5, 12, 1.0, 0.5}};

}  // namespace

TEST_CASE("perplexity statistics: records, JSON and report from the token losses") {
    analysis::OutlierAccumulator acc;
    const at::Tensor n0 = losses(1), n1 = losses(2);
    feed_with_nll(acc, tests::make_batch(0, kB, kT, kH, 2, kPlants, 7), n0);
    feed_with_nll(acc, tests::make_batch(2, kB, kT, kH, 2, kPlants, 8), n1);
    const auto s = acc.statistics({{"model", "tiny"}});
    REQUIRE(s.perplexity);
    REQUIRE(s.perplexity_sequences.size() == 4);
    const at::Tensor all = at::cat({n0, n1}, 0).to(at::kDouble);  // [4,12]
    for (int64_t q = 0; q < 4; ++q) {
        const auto & r = s.perplexity_sequences[static_cast<size_t>(q)];
        CHECK(r.sequence_index == q);
        CHECK(r.tokens == kT - 1);
        CHECK(r.nll_sum == doctest::Approx(all[q].sum().item<double>()).epsilon(1e-12));
        // Buckets of the predicted position 1..12: 1, 2-3, 4-7, 8-12.
        REQUIRE((r.bucket_tokens == std::vector<int64_t>{1, 2, 4, 5}));
        CHECK(r.bucket_nll[3] == doctest::Approx(all[q].narrow(0, 7, 5).sum().item<double>()).epsilon(1e-12));
    }
    const auto j = analysis::perplexity_json(s);
    const double total = all.sum().item<double>();
    CHECK(j["overall"]["tokens"] == 48);
    CHECK(j["overall"]["sequences"] == 4);
    CHECK(j["overall"]["mean_nll"].get<double>() == doctest::Approx(total / 48).epsilon(1e-12));
    CHECK(j["overall"]["perplexity"].get<double>() == doctest::Approx(std::exp(total / 48)).epsilon(1e-12));
    REQUIRE(j["by_position"].size() == 4);
    CHECK(j["by_position"][3]["first"] == 8);
    CHECK(j["by_position"][3]["last"] == 12);
    CHECK(j["by_position"][3]["tokens"] == 20);
    CHECK(j["per_sequence"][2]["sequence"] == 2);

    const auto result = analysis::build_result(s, {}, {});
    REQUIRE(result.contains("perplexity"));
    CHECK(result["perplexity"] == j);
    CHECK_NOTHROW(analysis::validate_result(result, "outliers.json"));
    auto broken = result;
    broken["perplexity"]["overall"]["tokens"] = "many";
    CHECK_THROWS_AS(analysis::validate_result(broken, "outliers.json"), common::Error);
    const std::string md = analysis::render_markdown(result, {});
    CHECK(md.find("## Perplexity") != std::string::npos);
    CHECK(md.find("| 8-12 | 20 |") != std::string::npos);

    // The per-sequence plot: one point a sequence, the run size in its title.
    const auto job = analysis::plot_job(result);
    CHECK(std::find(job.outputs.begin(), job.outputs.end(), "perplexity_by_sequence.png") != job.outputs.end());
    CHECK(job.script.find("4 sequences, 48 tokens scored") != std::string::npos);

    // A run without --perplexity has no record and no JSON key.
    analysis::OutlierAccumulator plain;
    tests::feed(plain, tests::make_batch(0, kB, kT, kH, 2, kPlants, 7));
    const auto p = plain.statistics();
    CHECK_FALSE(p.perplexity);
    CHECK_FALSE(analysis::build_result(p, {}, {}).contains("perplexity"));
}

TEST_CASE("perplexity statistics: file round trip, merge of two halves equals the whole bit for bit") {
    tests::TempDir dir;
    const at::Tensor n0 = losses(1), n1 = losses(2);
    const auto b0 = tests::make_batch(0, kB, kT, kH, 2, kPlants, 7);
    const auto b1 = tests::make_batch(2, kB, kT, kH, 2, kPlants, 8);
    analysis::OutlierAccumulator whole_acc, first_acc, second_acc;
    feed_with_nll(whole_acc, b0, n0);
    feed_with_nll(whole_acc, b1, n1);
    feed_with_nll(first_acc, b0, n0);
    feed_with_nll(second_acc, b1, n1);
    const auto whole = whole_acc.statistics({{"model", "tiny"}});
    analysis::save_statistics(first_acc.statistics({{"model", "tiny"}}), dir / "a.stats.cbor");
    analysis::save_statistics(second_acc.statistics({{"model", "tiny"}}), dir / "b.stats.cbor");
    auto merged = analysis::load_statistics(dir / "a.stats.cbor");
    analysis::merge_into(merged, analysis::load_statistics(dir / "b.stats.cbor"), "a", "b");
    CHECK((merged.perplexity_sequences == whole.perplexity_sequences));
    CHECK(analysis::perplexity_json(merged).dump() == analysis::perplexity_json(whole).dump());
    // And through a file once more (the merged output of `analyze merge`).
    analysis::save_statistics(merged, dir / "m.stats.cbor");
    CHECK((analysis::load_statistics(dir / "m.stats.cbor").perplexity_sequences == whole.perplexity_sequences));

    // The same sequences twice, or one side without perplexity: refused.
    auto again = analysis::load_statistics(dir / "a.stats.cbor");
    CHECK_THROWS_AS(analysis::merge_into(again, analysis::load_statistics(dir / "a.stats.cbor"), "a", "a2"), common::Error);
    analysis::OutlierAccumulator plain;
    tests::feed(plain, tests::make_batch(4, kB, kT, kH, 2, kPlants, 9));
    auto with = analysis::load_statistics(dir / "a.stats.cbor");
    try {
        analysis::merge_into(with, plain.statistics({{"model", "tiny"}}), "a", "plain");
        FAIL("no error");
    } catch (const common::Error & e) {
        CHECK(std::string(e.what()).find("perplexity") != std::string::npos);
    }
}

TEST_CASE("perplexity statistics: version 1 and 2 files read, later versions and hostile records refused") {
    tests::TempDir dir;
    analysis::OutlierAccumulator acc;
    feed_with_nll(acc, tests::make_batch(0, kB, kT, kH, 2, kPlants, 7), losses(1));
    analysis::save_statistics(acc.statistics(), dir / "s.stats.cbor");
    const std::string raw = tests::read_file(dir / "s.stats.cbor");
    const auto doc = nlohmann::json::from_cbor(raw);
    CHECK(doc["version"] == analysis::kStatisticsVersion);
    auto parse = [](const nlohmann::json & j) {
        const auto bytes = nlohmann::json::to_cbor(j);
        return analysis::parse_statistics(bytes.data(), bytes.size(), "s.stats.cbor");
    };
    {
        auto v1 = doc;
        v1["version"] = 1;
        v1.erase("perplexity");
        const auto s = parse(v1);
        CHECK_FALSE(s.perplexity);
        CHECK(s.sequences == 2);
    }
    {
        auto v2 = doc;  // version 2: perplexity, no sweep or expert records
        v2["version"] = 2;
        CHECK(parse(v2).perplexity);
    }
    {
        auto later = doc;
        later["version"] = analysis::kStatisticsVersion + 1;
        try {
            parse(later);
            FAIL("no error");
        } catch (const common::Error & e) {
            CHECK(std::string(e.what()).find("versions 1 to " + std::to_string(analysis::kStatisticsVersion)) != std::string::npos);
        }
    }
    auto refused = [&](nlohmann::json j, const std::string & field) {
        CAPTURE(field);
        try {
            parse(j);
            FAIL("no error");
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Usage);
            CHECK(std::string(e.what()).find(field) != std::string::npos);
        }
    };
    auto & rec = doc["perplexity"]["sequences"][0];
    {
        auto j = doc;
        j["perplexity"]["sequences"][0]["nll_sum"] = -1.0;
        refused(j, "nll_sum");
    }
    {
        auto j = doc;
        j["perplexity"]["sequences"][0]["buckets"] = 65;
        refused(j, "buckets");
    }
    {
        auto j = doc;
        j["perplexity"]["sequences"][0]["tokens"] = rec["tokens"].get<int64_t>() + 1;  // buckets no longer add up
        refused(j, "bucket_tokens");
    }
    {
        auto j = doc;
        j["perplexity"]["sequences"][0]["buckets"] = 3;  // byte strings hold 4
        refused(j, "bucket_nll");
    }
    {
        auto j = doc;
        j["perplexity"]["sequences"][0]["tokens"] = int64_t{1} << 40;
        refused(j, "tokens");
    }
}
