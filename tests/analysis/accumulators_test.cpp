// Accumulator + criteria on hand-computed tensors at every threshold edge, against the brute-force
// predecessor analysis on random tensors, and the merge/file properties (associativity, round trip).
#include "tests/analysis/analysis_test_util.h"

#include "analysis/stats_file.h"
#include "common/error.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using analysis::OutlierAccumulator;
using analysis::Statistics;
using tests::FakeBatch;

namespace {

at::Tensor zeros3(int64_t B, int64_t T, int64_t H) { return at::zeros({B, T, H}, at::TensorOptions().dtype(at::kFloat)); }

// L layers of zeros for one sequence; the caller plants values.
FakeBatch empty_batch(int64_t seq, int64_t T, int64_t H, int L, int64_t B = 1) {
    FakeBatch fb;
    for (int64_t b = 0; b < B; ++b) fb.sequence_indices.push_back(seq + b);
    fb.token_ids = at::arange(B * T, at::TensorOptions().dtype(at::kLong)).reshape({B, T});
    for (int l = 0; l < L; ++l) fb.layers.emplace_back(zeros3(B, T, H), zeros3(B, T, H));
    return fb;
}

Statistics run(const std::vector<FakeBatch> & batches, analysis::AccumulatorOptions options = {}) {
    OutlierAccumulator acc(options);
    for (const auto & b : batches) tests::feed(acc, b);
    return acc.statistics();
}

analysis::ModeResult mode(const Statistics & s, const std::string & name) {
    return analysis::apply_criteria(s, analysis::criteria_for_mode(name));
}

int64_t hits_of(const Statistics & s, int dim) {
    int64_t n = 0;
    for (size_t i = 0; i < s.sites.size(); ++i) n += s.site_hits[i * static_cast<size_t>(s.hidden) + static_cast<size_t>(dim)];
    return n;
}

}  // namespace

TEST_CASE("threshold: exactly 6.0 is a hit, 5.99 rounds to bf16 6.0 and hits, 5.98 does not") {
    auto fb = empty_batch(0, 4, 8, 1);
    fb.layers[0].first[0][0][1] = 6.0;
    fb.layers[0].first[0][1][2] = 5.99f;   // bf16 spacing in [4,8) is 1/32: rounds to 6.0
    fb.layers[0].first[0][2][3] = 5.98f;   // rounds to 5.96875
    fb.layers[0].first[0][3][4] = -6.0;    // magnitude counts, sign does not
    const auto s = run({fb});
    CHECK(hits_of(s, 1) == 1);
    CHECK(hits_of(s, 2) == 1);
    CHECK(hits_of(s, 3) == 0);
    CHECK(hits_of(s, 4) == 1);
    CHECK(s.site_max_abs[2] == doctest::Approx(6.0));

    analysis::AccumulatorOptions native;
    native.round_bf16 = false;
    const auto n = run({fb}, native);
    CHECK(hits_of(n, 1) == 1);
    CHECK(hits_of(n, 2) == 0);  // 5.99 stays below 6 without rounding
    CHECK(hits_of(n, 4) == 1);
}

TEST_CASE("layer fraction: exactly 25% of sites passes, one site fewer fails") {
    // 4 layers = 8 sites; T = 10 so one position is 10% of positions.
    auto fb = empty_batch(0, 10, 8, 4);
    fb.layers[0].first[0][0][1] = 7;  // dim 1: 2 of 8 sites -> 0.25
    fb.layers[1].second[0][0][1] = 7;
    fb.layers[2].first[0][0][2] = 7;  // dim 2: 1 of 8 sites -> 0.125
    const auto s = run({fb});
    const auto r = mode(s, "predecessor");
    REQUIRE(r.entries.size() == 1);
    CHECK(r.entries[0].dim == 1);
    CHECK(r.entries[0].layer_fraction == 0.25);
    CHECK(r.entries[0].layers_total == 8);
    CHECK(r.dims_with_hits == 2);
    // paper counts decoder layers: dim 1 hits layers 0 and 1 = 2 of 4; dim 2 one of 4 = 0.25 too.
    const auto p = mode(s, "paper");
    REQUIRE(p.entries.size() == 2);
    CHECK(p.entries[0].layers_total == 4);
}

TEST_CASE("position fraction: exactly 6% of positions passes, 4% fails, and sites pool positions") {
    // T = 50: 3 positions = 0.06, 2 positions = 0.04. Two sites, so any dim hit somewhere has >= 50% of sites.
    auto fb = empty_batch(0, 50, 4, 1);
    fb.layers[0].first[0][0][1] = 8;   // dim 1: positions 0, 1 in ln_attn, 2 in ln_mlp -> 3 distinct
    fb.layers[0].first[0][1][1] = 8;
    fb.layers[0].second[0][2][1] = 8;
    fb.layers[0].second[0][0][1] = 8;  // same position again: still 3 distinct, 4 hits
    fb.layers[0].first[0][5][2] = 9;   // dim 2: 2 positions
    fb.layers[0].first[0][6][2] = 9;
    const auto r = mode(run({fb}), "predecessor");
    REQUIRE(r.entries.size() == 1);
    CHECK(r.entries[0].dim == 1);
    CHECK(r.entries[0].position_fraction == 0.06);
    CHECK(r.entries[0].positions_hit == 3);
    CHECK(r.entries[0].hits == 4);
    CHECK(r.entries[0].layer_fraction == 1.0);
    CHECK(r.entries[0].max_abs == 8.0f);
}

TEST_CASE("predecessor concatenates per-sequence lists, paper counts a dim once over the dataset") {
    // Two sequences in one batch (rows analysed alone) and a third in a second batch.
    auto b0 = empty_batch(0, 10, 4, 2, /*B=*/2);
    auto b1 = empty_batch(2, 10, 4, 2);
    for (int l = 0; l < 2; ++l) {
        b0.layers[static_cast<size_t>(l)].first[0][3][1] = 10;  // dim 1 in sequence 0 ...
        b0.layers[static_cast<size_t>(l)].first[1][4][1] = 12;  // ... and in sequence 1
        b1.layers[static_cast<size_t>(l)].first[0][5][1] = 11;  // ... and in sequence 2
    }
    const auto s = run({b0, b1});
    const auto r = mode(s, "predecessor");
    CHECK(r.num_outliers == 3);
    REQUIRE(r.features.size() == 1);
    CHECK(r.features[0].occurrences == 3);
    CHECK(r.features[0].max_abs == 12.0f);
    CHECK(r.entries[0].sequence_index == 1);  // sorted by max |x| descending
    CHECK(r.mean_layer_pct == doctest::Approx(50.0));
    CHECK(r.mean_position_pct == doctest::Approx(10.0));

    const auto p = mode(s, "paper");
    REQUIRE(p.num_outliers == 1);
    CHECK(p.entries[0].positions_hit == 3);
    CHECK(p.entries[0].positions_total == 30);
    CHECK(p.entries[0].position_fraction == doctest::Approx(0.1));
    CHECK(p.entries[0].layer_fraction == 1.0);
    CHECK(s.position_hits[3 * 4 + 1] == 1);
    CHECK(s.sequences == 3);
    CHECK(s.tokens == 30);
}

TEST_CASE("padding positions are neither hits nor position denominators") {
    auto fb = empty_batch(0, 10, 4, 1, 2);
    fb.attention_mask = at::ones({2, 10}, at::TensorOptions().dtype(at::kLong));
    fb.attention_mask[1].narrow(0, 0, 5).fill_(0);  // row 1 left-padded to 5 real tokens
    fb.layers[0].first[1][0][2] = 50;               // a huge value on a padded position: ignored
    fb.layers[0].first[1][7][1] = 7;                // one real position of 5 -> 20%
    const auto s = run({fb});
    CHECK(hits_of(s, 2) == 0);
    CHECK(s.tokens == 15);
    const auto r = mode(s, "predecessor");
    REQUIRE(r.entries.size() == 1);
    CHECK(r.entries[0].positions_total == 5);
    CHECK(r.entries[0].position_fraction == doctest::Approx(0.2));
    CHECK(s.site_elements[0] == 15 * 4);
    int64_t histogram_total = 0;
    for (int i = 0; i < s.histogram_spec.bins; ++i) histogram_total += s.site_histogram[static_cast<size_t>(i)];
    CHECK(histogram_total == 15 * 4);  // padded zeros removed from the histogram
}

TEST_CASE("a position hit in 256 sites is still one hit position (the per-position flag does not wrap)") {
    // 128 layers = 256 sites, all hitting dim 3 at position 1: a uint8 count of sites would wrap to 0.
    auto fb = empty_batch(0, 4, 8, 128);
    for (auto & [attn, mlp] : fb.layers) {
        attn[0][1][3] = 7;
        mlp[0][1][3] = -7;
    }
    const auto s = run({fb});
    CHECK(hits_of(s, 3) == 256);
    REQUIRE(s.per_sequence.size() == 1);
    REQUIRE(s.per_sequence[0].dims.size() == 1);
    const auto & d = s.per_sequence[0].dims[0];
    CHECK(d.sites_hit == 256);
    CHECK(d.layers_hit == 128);
    CHECK(d.positions_hit == 1);
    CHECK(s.position_hits[1 * 8 + 3] == 1);
    CHECK(s.token_hits.at(3).at(1) == 1);  // token id 1 sits at position 1
}

TEST_CASE("streaming per-sequence result equals the brute-force predecessor analysis of the same tensors") {
    const int64_t T = 64, H = 32;
    const int L = 4;
    const std::vector<tests::Plant> plants = {{3, 9.5, 1.0, 0.5}, {7, 6.0, 0.25, 0.0625}, {11, 20, 0.5, 0.03},
                                              {13, 5.99, 0.5, 0.2}, {17, 7, 0.2, 0.9}};
    std::vector<FakeBatch> batches = {tests::make_batch(0, 2, T, H, L, plants, 1),
                                      tests::make_batch(2, 3, T, H, L, plants, 2)};
    // Spread some random noise above the threshold so non-planted dims also hit now and then.
    for (auto & b : batches)
        for (auto & [a, m] : b.layers) {
            a.mul_(2.2);
            m.mul_(2.2);
        }
    const auto s = run(batches);
    const auto r = mode(s, "predecessor");

    std::vector<std::tuple<int64_t, int, double, double, double, int64_t>> expected, got;
    for (const auto & b : batches)
        for (size_t row = 0; row < b.sequence_indices.size(); ++row) {
            std::vector<at::Tensor> sites;
            for (const auto & [a, m] : b.layers) {
                sites.push_back(a.narrow(0, static_cast<int64_t>(row), 1));
                sites.push_back(m.narrow(0, static_cast<int64_t>(row), 1));
            }
            for (const auto & e : tests::reference_analysis(sites))
                expected.emplace_back(b.sequence_indices[row], e.dim, e.layer_percentage, e.seq_percentage,
                                      e.max_magnitude, e.total_occurrences);
        }
    for (const auto & e : r.entries)
        got.emplace_back(e.sequence_index, e.dim, e.layer_fraction, e.position_fraction, e.max_abs, e.hits);
    std::sort(expected.begin(), expected.end());
    std::sort(got.begin(), got.end());
    CHECK(expected.size() >= 15);  // the planted dims 3, 7, 13 in all 5 sequences, plus noise dims
    CHECK((got == expected));
}

namespace {

void check_same(const Statistics & a, const Statistics & b) {
    CHECK((a.sites == b.sites));
    CHECK(a.site_hits == b.site_hits);
    CHECK(a.site_max_abs == b.site_max_abs);
    CHECK(a.site_elements == b.site_elements);
    CHECK(a.site_histogram == b.site_histogram);
    CHECK(a.position_hits == b.position_hits);
    CHECK(a.sequences == b.sequences);
    CHECK(a.tokens == b.tokens);
    CHECK((a.token_hits == b.token_hits));
    REQUIRE(a.per_sequence.size() == b.per_sequence.size());
    for (size_t i = 0; i < a.per_sequence.size(); ++i) {
        CHECK(a.per_sequence[i].sequence_index == b.per_sequence[i].sequence_index);
        REQUIRE(a.per_sequence[i].dims.size() == b.per_sequence[i].dims.size());
        for (size_t k = 0; k < a.per_sequence[i].dims.size(); ++k) {
            const auto & x = a.per_sequence[i].dims[k];
            const auto & y = b.per_sequence[i].dims[k];
            CHECK(std::tie(x.dim, x.sites_hit, x.layers_hit, x.positions_hit, x.hits, x.max_abs) ==
                  std::tie(y.dim, y.sites_hit, y.layers_hit, y.positions_hit, y.hits, y.max_abs));
        }
    }
    REQUIRE(a.massive.size() == b.massive.size());
    for (size_t i = 0; i < a.massive.size(); ++i) {
        CHECK(a.massive[i].top.size() == b.massive[i].top.size());
        CHECK((a.massive[i].medians == b.massive[i].medians));
    }
}

}  // namespace

TEST_CASE("merge is associative and equals one run over all batches (different sequence lengths too)") {
    const std::vector<tests::Plant> plants = {{2, 8, 0.5, 0.3}};
    auto b0 = tests::make_batch(0, 2, 16, 8, 2, plants, 11);
    auto b1 = tests::make_batch(2, 1, 24, 8, 2, plants, 12);
    auto b2 = tests::make_batch(3, 2, 8, 8, 2, plants, 13);
    for (auto * b : {&b0, &b1, &b2})
        for (int l = 0; l < 2; ++l) b->residual.push_back(at::randn({b->token_ids.size(0), b->token_ids.size(1), 8}).mul_(3));
    analysis::AccumulatorOptions o;
    o.massive_top_k = 4;
    const auto all = run({b0, b1, b2}, o);
    const auto a = run({b0}, o), b = run({b1}, o), c = run({b2}, o);
    Statistics left = a;
    analysis::merge_into(left, b, "a", "b");
    analysis::merge_into(left, c, "ab", "c");
    Statistics bc = b;
    analysis::merge_into(bc, c, "b", "c");
    Statistics right = a;
    analysis::merge_into(right, bc, "a", "bc");
    check_same(left, right);
    check_same(left, all);
    CHECK(mode(left, "paper").num_outliers == mode(all, "paper").num_outliers);
}

TEST_CASE("merge refuses overlapping sequences and differently counted statistics, naming the file") {
    auto b0 = empty_batch(0, 4, 4, 1);
    const auto a = run({b0});
    try {
        Statistics x = a;
        analysis::merge_into(x, a, "A.stats.cbor", "B.stats.cbor");
        FAIL("merge accepted a sequence twice");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(std::string(e.what()).find("B.stats.cbor") != std::string::npos);
        CHECK(std::string(e.what()).find("sequence 0") != std::string::npos);
    }
    analysis::AccumulatorOptions other;
    other.threshold = 4;
    const auto c = run({empty_batch(1, 4, 4, 1)}, other);
    Statistics x = a;
    CHECK_THROWS_AS(analysis::merge_into(x, c, "A", "C"), common::Error);
    const auto d = run({empty_batch(1, 4, 4, 2)});  // more sites
    CHECK_THROWS_AS(analysis::merge_into(x, d, "A", "D"), common::Error);
}

TEST_CASE("statistics file round-trips exactly and bad files get errors naming them") {
    tests::TempDir dir;
    const std::vector<tests::Plant> plants = {{1, 9, 1.0, 0.5}};
    auto fb = tests::make_batch(0, 2, 12, 6, 2, plants, 5);
    for (int l = 0; l < 2; ++l) fb.residual.push_back(at::randn({2, 12, 6}));
    analysis::AccumulatorOptions o;
    o.massive_top_k = 3;
    OutlierAccumulator acc(o);
    tests::feed(acc, fb);
    const auto s = acc.statistics({{"model", "tiny"}});
    analysis::save_statistics(s, dir / "s.stats.cbor");
    const auto back = analysis::load_statistics(dir / "s.stats.cbor");
    check_same(s, back);
    CHECK(back.metadata.at("model") == "tiny");
    CHECK(back.massive.at(0).top.at(0).abs_value == s.massive.at(0).top.at(0).abs_value);

    try {
        analysis::load_statistics(dir / "missing.stats.cbor");
        FAIL("no error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::NotFound);
        CHECK(std::string(e.what()).find("missing.stats.cbor") != std::string::npos);
    }
    tests::write_file(dir / "junk.stats.cbor", "this is not cbor");
    try {
        analysis::load_statistics(dir / "junk.stats.cbor");
        FAIL("no error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(std::string(e.what()).find("junk.stats.cbor") != std::string::npos);
    }
}

TEST_CASE("bad captures: wrong rank, mismatched shapes and empty runs are usage errors") {
    OutlierAccumulator acc;
    extractor::BatchInfo info;
    info.sequence_indices = {0};
    info.token_ids = at::zeros({1, 4}, at::TensorOptions().dtype(at::kLong));
    acc.begin_batch(info);
    CHECK_THROWS_AS(acc.on_capture(extractor::Site::LnAttn, 0, at::zeros({4, 8})), common::Error);
    CHECK_THROWS_AS(acc.on_capture(extractor::Site::LnAttn, 0, zeros3(1, 5, 8)), common::Error);
    acc.on_capture(extractor::Site::LnAttn, 0, zeros3(1, 4, 8));
    CHECK_THROWS_AS(acc.on_capture(extractor::Site::LnMlp, 0, zeros3(1, 4, 9)), common::Error);
    acc.end_batch();
    Statistics empty;
    CHECK_THROWS_AS(analysis::apply_criteria(empty, analysis::criteria_for_mode("paper")), common::Error);
    CHECK_THROWS_AS(analysis::criteria_for_mode("int8"), common::Error);
}

TEST_CASE("massive activations: the residual spike is the layer's top entry with its sequence median") {
    auto fb = empty_batch(0, 8, 16, 2);
    fb.residual = {at::full({1, 8, 16}, 0.5), at::full({1, 8, 16}, 0.5)};
    fb.residual[1][0][0][5] = 900;  // token 0, dim 5, layer 1
    analysis::AccumulatorOptions o;
    o.massive_top_k = 2;
    const auto s = run({fb}, o);
    REQUIRE(s.massive.size() == 2);
    const auto & top = s.massive[1].top.at(0);
    CHECK(top.abs_value == 900.0f);
    CHECK(top.position == 0);
    CHECK(top.dim == 5);
    CHECK(top.sequence_median_abs == 0.5f);
}

TEST_CASE("token tallies count hit positions by token id for the most-hit dims") {
    auto fb = empty_batch(0, 6, 4, 1);
    fb.token_ids = at::tensor({7, 8, 7, 9, 7, 8}, at::TensorOptions().dtype(at::kLong)).reshape({1, 6});
    for (int t : {0, 2, 4, 1}) fb.layers[0].first[0][t][3] = 7;
    const auto s = run({fb});
    REQUIRE(s.token_hits.count(3));
    CHECK(s.token_hits.at(3).at(7) == 3);
    CHECK(s.token_hits.at(3).at(8) == 1);
    CHECK(s.token_hits.at(3).count(9) == 0);
}

TEST_CASE("token tallies stay exact while the table grows: new top dims in every batch, statistics read mid-run") {
    // 20 batches, each with hits in 10 dims no earlier batch hit: 200 counter rows in all, so the
    // table grows several times (its capacity doubles). statistics() after batch 10 folds the batch
    // in flight in; the run then goes on. Every tally must equal a count made here.
    analysis::OutlierAccumulator acc;
    std::map<int32_t, std::map<int64_t, int64_t>> expected;
    for (int i = 0; i < 20; ++i) {
        auto fb = empty_batch(i, 8, 256, 1);
        std::vector<int64_t> ids;
        for (int t = 0; t < 8; ++t) ids.push_back((i * 8 + t) % 50);
        fb.token_ids = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).reshape({1, 8});
        for (int j = 0; j < 10; ++j) {
            const int dim = i * 10 + j;
            for (int t = 0; t < 8; ++t)
                if ((t + j) % 3 == 0) {
                    fb.layers[0].first[0][t][dim] = 9;
                    expected[dim][ids[static_cast<size_t>(t)]] += 1;
                }
        }
        tests::feed(acc, fb);
        if (i == 9) {
            const Statistics mid = acc.statistics();
            CHECK(mid.sequences == 10);
            CHECK(mid.token_hits.size() == 100);
        }
    }
    const Statistics s = acc.statistics();
    CHECK(s.sequences == 20);
    REQUIRE(s.token_hits.size() == expected.size());
    for (const auto & [dim, tally] : expected) {
        CAPTURE(dim);
        REQUIRE(s.token_hits.count(dim));
        CHECK((s.token_hits.at(dim) == tally));
        CHECK(s.token_hits_batches.at(dim) == 1);
    }
}

TEST_CASE("token table: a larger token id late in the run (a lower row cap) never shrinks it below the rows in use") {
    // Qwen's vocabulary: ids below 151552 first, so rows are 151552 wide and capped at 221; 14 batches
    // of 10 new dims take the capacity past 128; then <|endoftext|> (151643) widens the rows, which
    // lowers the cap to 215, below the capacity already reached.
    analysis::OutlierAccumulator acc;
    std::map<int32_t, std::map<int64_t, int64_t>> expected;
    for (int i = 0; i < 15; ++i) {
        auto fb = empty_batch(i, 4, 160, 1);
        const std::vector<int64_t> ids = {151000 + i, 151551, i == 14 ? 151643 : 7, 8};
        fb.token_ids = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).reshape({1, 4});
        for (int j = 0; j < 10; ++j) {
            const int dim = i * 10 + j;
            fb.layers[0].first[0][j % 4][dim] = 9;
            expected[dim][ids[static_cast<size_t>(j % 4)]] += 1;
        }
        tests::feed(acc, fb);
    }
    const Statistics s = acc.statistics();
    REQUIRE(s.token_hits.size() == expected.size());
    for (const auto & [dim, tally] : expected) {
        CAPTURE(dim);
        CHECK((s.token_hits.at(dim) == tally));
    }
}

TEST_CASE("checkpoint sink saves partial statistics every N batches, readable as ordinary statistics") {
    tests::TempDir dir;
    OutlierAccumulator acc;
    analysis::CheckpointSink sink(acc, dir / "p.stats.cbor", 2, {{"model", "tiny"}});
    const std::vector<tests::Plant> plants = {{1, 9, 1.0, 0.5}};
    tests::feed(sink, tests::make_batch(0, 1, 8, 4, 1, plants, 1));
    CHECK(sink.checkpoints_written() == 0);
    tests::feed(sink, tests::make_batch(1, 1, 8, 4, 1, plants, 2));
    REQUIRE(sink.checkpoints_written() == 1);
    tests::feed(sink, tests::make_batch(2, 1, 8, 4, 1, plants, 3));
    const auto partial = analysis::load_statistics(dir / "p.stats.cbor");
    CHECK(partial.sequences == 2);  // the third batch came after the checkpoint
    CHECK(partial.metadata.value("partial", false));
    CHECK(acc.statistics().sequences == 3);
    CHECK_THROWS_AS(analysis::CheckpointSink(acc, dir / "x", 0), common::Error);
}
