// NaN and inf activations are counted, reported and never make a site look clean: a site full of
// NaN used to report max |x| 0 and 0 hits (report_json's `m > mx`, criteria's std::max and the
// merge's std::max all dropped a NaN) with exit 0, its NaNs binned with the zeros.
#include "tests/analysis/analysis_test_util.h"

#include "analysis/report.h"
#include "analysis/stats_file.h"
#include "common/error.h"
#include "tests/support/temp_dir.h"

#include <cmath>
#include <limits>

#include <doctest/doctest.h>

namespace {

using json = nlohmann::json;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// One batch of B=2 rows x T=4 positions x H=4 dims, two layers. Layer 0 ln_attn: NaN everywhere
// (both signs); layer 0 ln_mlp: -inf and +inf at two real positions, a hit of 7 in dim 2, and NaN
// at row 1's last position, which is padding and must not count; layer 1: clean, 8 in dim 1.
tests::FakeBatch nonfinite_batch() {
    tests::FakeBatch fb;
    fb.sequence_indices = {0, 1};
    fb.token_ids = at::arange(8, at::kLong).view({2, 4});
    fb.attention_mask = at::ones({2, 4}, at::kLong);
    fb.attention_mask[1][3] = 0;
    at::Tensor all_nan = at::full({2, 4, 4}, kNaN);
    all_nan[0][0][0] = -kNaN;
    at::Tensor mlp = at::zeros({2, 4, 4});
    mlp[0][1][3] = -kInf;
    mlp[1][0][3] = kInf;
    mlp[0][2][2] = 7;
    mlp[1][3][0] = kNaN;  // padding
    at::Tensor clean = at::zeros({2, 4, 4});
    clean.select(2, 1).fill_(8);
    fb.layers = {{all_nan, mlp}, {clean, clean}};
    return fb;
}

analysis::Statistics nonfinite_stats() {
    analysis::AccumulatorOptions o;
    o.round_bf16 = false;
    analysis::OutlierAccumulator acc(o);
    tests::feed(acc, nonfinite_batch());
    return acc.statistics({{"model", "nan-fixture"}});
}

}  // namespace

TEST_CASE("non-finite values: counted per site (padding excluded), max |x| stays NaN, the histogram puts them last") {
    const auto s = nonfinite_stats();
    REQUIRE(s.sites.size() == 4);
    REQUIRE(s.site_nonfinite.size() == 4);
    CHECK(s.site_nonfinite[0] == 2 * 4 * 4 - 4);  // every real value of layer 0 ln_attn (row 1's last position is padding)
    CHECK(s.site_nonfinite[1] == 2);              // the two infinities; the padded NaN is not data
    CHECK(s.site_nonfinite[2] == 0);
    CHECK(s.site_nonfinite[3] == 0);
    CHECK(s.nonfinite_values() == 30);
    for (size_t h = 0; h < 4; ++h) CHECK(std::isnan(s.site_max_abs[h]));
    CHECK(std::isinf(s.site_max_abs[4 + 3]));
    CHECK(s.site_max_abs[4 + 2] == 7);
    CHECK(s.site_max_abs[4 + 0] == 0);  // the padded NaN did not reach the maximum
    // Histogram: a NaN (even a negative one) goes to the last bin, as the fused pass bins it, not
    // to bin 0 with the zeros.
    const auto bins = static_cast<size_t>(s.histogram_spec.bins);
    CHECK(s.site_histogram[0 * bins + bins - 1] == 28);
    CHECK(s.site_histogram[0 * bins + 0] == 0);
}

TEST_CASE("non-finite values: outliers.json and report.md say so, and max |x| is never 0 where NaN was seen") {
    const auto s = nonfinite_stats();
    const json r = analysis::build_result(s, analysis::ReportOptions{}, {});
    CHECK(r["run"]["nonfinite_values"] == 30);
    REQUIRE(r["run"]["sites_with_nonfinite"].size() == 2);
    CHECK(r["run"]["sites_with_nonfinite"][0] == json{{"layer", 0}, {"site", "ln_attn"}, {"values", 28}});
    CHECK(r["run"]["sites_with_nonfinite"][1] == json{{"layer", 0}, {"site", "ln_mlp"}, {"values", 2}});
    const json & l0 = r["layers"][0];
    CHECK(l0["nonfinite"] == 28);
    CHECK(l0["max_abs"].is_number_float());
    CHECK(std::isnan(l0["max_abs"].get<double>()));  // written as null in the file
    CHECK(l0["hits"] == 0);
    CHECK(std::isinf(r["layers"][1]["max_abs"].get<double>()));
    CHECK(r["layers"][1]["max_abs_dim"] == 3);
    CHECK(r["layers"][2]["nonfinite"] == 0);
    // The file round trip keeps the counts and the NaN (as null) and validates.
    const json back = analysis::parse_result(r.dump(), "outliers.json");
    CHECK(back["run"]["nonfinite_values"] == 30);
    CHECK(back["layers"][0]["max_abs"].is_null());
    const std::string md = analysis::render_markdown(back, {});
    CHECK(md.find("**Non-finite values**: 30") != std::string::npos);
    CHECK(md.find("NaN/inf values") != std::string::npos);
    CHECK(analysis::nonfinite_warning(s).find("30 captured value(s) are NaN or inf, in 2 of 4 site(s)") != std::string::npos);
    CHECK(analysis::nonfinite_warning(analysis::Statistics{}).empty());
    // A hand-edited result with a non-integer count is refused naming the field.
    json bad = back;
    bad["run"]["sites_with_nonfinite"][0]["values"] = "many";
    CHECK_THROWS_WITH_AS(analysis::parse_result(bad.dump(), "outliers.json"), doctest::Contains("run.sites_with_nonfinite[0].values"),
                         common::Error);
}

TEST_CASE("non-finite values: criteria, sorting and merges keep a NaN max |x| whatever the order") {
    CHECK(analysis::abs_greater(kNaN, kInf));
    CHECK_FALSE(analysis::abs_greater(kInf, kNaN));
    CHECK_FALSE(analysis::abs_greater(kNaN, kNaN));
    CHECK(std::isnan(analysis::abs_max(0.f, kNaN)));
    CHECK(std::isnan(analysis::abs_max(kNaN, 0.f)));
    CHECK(analysis::abs_max(3.f, 2.f) == 3.f);

    // Paper mode: dim 2 hits (7) at layer 0 ln_mlp; plant a NaN at that site and dim too.
    auto s = nonfinite_stats();
    s.site_max_abs[4 + 2] = kNaN;
    analysis::Criteria c = analysis::criteria_for_mode("paper");
    c.layer_fraction = 0;
    c.position_fraction = 0;
    const auto r = analysis::apply_criteria(s, c);
    bool found = false;
    for (const auto & f : r.features)
        if (f.dim == 2) {
            found = true;
            CHECK(std::isnan(f.max_abs));  // std::max(7, NaN) gave 7
        }
    CHECK(found);
    REQUIRE(!r.features.empty());
    CHECK(std::isnan(r.features.front().max_abs));  // NaN sorts first

    // Merge: the NaN survives in either order and the counts add.
    auto a = nonfinite_stats(), b = nonfinite_stats();
    for (auto & q : b.per_sequence) q.sequence_index += 2;
    a.site_max_abs[8] = 1;
    b.site_max_abs[8] = kNaN;
    auto ab = a;
    analysis::merge_into(ab, b, "a", "b");
    auto ba = b;
    analysis::merge_into(ba, a, "b", "a");
    CHECK(std::isnan(ab.site_max_abs[8]));
    CHECK(std::isnan(ba.site_max_abs[8]));
    CHECK(ab.site_nonfinite == std::vector<int64_t>{56, 4, 0, 0});
}

TEST_CASE("non-finite values: the statistics file keeps the counts (version 4), reads older files as none, refuses bad ones") {
    tests::TempDir dir;
    const auto s = nonfinite_stats();
    analysis::save_statistics(s, dir / "s.stats.cbor");
    const auto back = analysis::load_statistics(dir / "s.stats.cbor");
    CHECK(back.site_nonfinite == s.site_nonfinite);
    CHECK(std::isnan(back.site_max_abs[0]));
    const json doc = json::from_cbor(tests::read_file(dir / "s.stats.cbor"));
    CHECK(doc["version"] == analysis::kStatisticsVersion);
    CHECK(analysis::kStatisticsVersion == 4);
    auto parse = [](const json & j) {
        const auto bytes = json::to_cbor(j);
        return analysis::parse_statistics(bytes.data(), bytes.size(), "s.stats.cbor");
    };
    json v3 = doc;
    v3["version"] = 3;
    v3.erase("site_nonfinite");
    CHECK(parse(v3).site_nonfinite == std::vector<int64_t>(4, 0));
    for (const json & bad : {json{1, 2}, json{-1, 0, 0, 0}, json{1000, 0, 0, 0}, json{"x", 0, 0, 0}}) {
        CAPTURE(bad.dump());
        json j = doc;
        j["site_nonfinite"] = bad;
        CHECK_THROWS_WITH_AS(parse(j), doctest::Contains("site_nonfinite"), common::Error);
    }
}
