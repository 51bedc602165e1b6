// The outlier accumulator's fused capture pass (analysis/cuda/accumulate_kernels.h) against its ATen
// path (AccumulatorOptions::cuda_kernels = false): the same captures fed to both accumulators on the
// GPU must give statistics equal in every field, to the bit. Inputs plant the threshold's edges
// (exactly 6, 5.99 that bf16 rounds to 6, the rounding midpoint and the value just under it),
// huge, tiny, negative and infinite values among random normal data, padding, odd shapes and views.
#include <ATen/ATen.h>

#include "analysis/accumulators.h"
#include "tests/analysis/analysis_test_util.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>

namespace {

using analysis::AccumulatorOptions;
using analysis::OutlierAccumulator;
using analysis::Statistics;
using tests::FakeBatch;

// Values around the threshold and the histogram's ends, planted at scattered (b, t, h).
const std::vector<float> kEdges = {6.0f,       -6.0f,     5.99f,   -5.99f,  5.984375f, 5.9843745f, 5.96875f, 6.03125f,
                                   5.9960938f, 6.0039062f, 1000.f, -3.0e4f, 1.0e5f,    3.0e38f,    1.0e-30f, 1.0e-45f,
                                   0.0f,       -0.0f,     0.5f,    65504.f, 65520.f,   -7.5f,      12.f,     4096.f};

// [B,T,H] fp32 on the CPU: N(0, 1.5^2) (a few natural hits of 6 per million values), the edge
// values, and dim 7 at 7.5 on every 10th position of every row.
at::Tensor capture(int64_t B, int64_t T, int64_t H, uint64_t seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    at::Tensor x = at::randn({B, T, H}, gen, at::TensorOptions().dtype(at::kFloat)).mul_(1.5);
    for (size_t k = 0; k < kEdges.size(); ++k) {
        const auto i = static_cast<int64_t>(k) + static_cast<int64_t>(seed);
        x[i % B][(i * 37) % T][(i * 131 + 5) % H] = kEdges[k];
    }
    if (H > 7) x.select(2, 7).slice(1, 0, T, 10).fill_(7.5);
    return x;
}

FakeBatch batch(int64_t first_sequence, int64_t B, int64_t T, int64_t H, int L, uint64_t seed) {
    FakeBatch fb;
    for (int64_t b = 0; b < B; ++b) fb.sequence_indices.push_back(first_sequence + b);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    fb.token_ids = at::randint(0, 50, {B, T}, gen, at::TensorOptions().dtype(at::kLong));
    for (int l = 0; l < L; ++l)
        fb.layers.emplace_back(capture(B, T, H, seed * 100 + 2 * static_cast<uint64_t>(l)),
                               capture(B, T, H, seed * 100 + 2 * static_cast<uint64_t>(l) + 1));
    return fb;
}

// Rows 1 and 2 padded (left, right) and a huge value on a padded position of each padded capture.
void pad(FakeBatch & fb) {
    const int64_t B = fb.layers[0].first.size(0), T = fb.layers[0].first.size(1);
    REQUIRE(B >= 3);
    REQUIRE(T >= 6);
    fb.attention_mask = at::ones({B, T}, at::TensorOptions().dtype(at::kLong));
    fb.attention_mask[1].narrow(0, 0, T / 3).fill_(0);
    fb.attention_mask[2].narrow(0, T - 5, 5).fill_(0);
    for (auto & [attn, mlp] : fb.layers) {
        attn[1][0][3] = 50;
        mlp[2][T - 1][4] = -50;
    }
}

// How a capture lies in device memory: contiguous, rows of a wider tensor (strided view), or one
// element past a 16-byte boundary (contiguous but misaligned for vector loads).
enum class Layout { Contiguous, Strided, Offset };

at::Tensor place(const at::Tensor & cpu, at::ScalarType dtype, Layout layout) {
    const auto opts = at::TensorOptions().device(at::kCUDA).dtype(dtype);
    at::Tensor x = cpu.to(opts);
    switch (layout) {
    case Layout::Contiguous: return x;
    case Layout::Strided: {
        at::Tensor wide = at::zeros({x.size(0), x.size(1), x.size(2) + 8}, opts);
        wide.narrow(2, 0, x.size(2)).copy_(x);
        return wide.narrow(2, 0, x.size(2));
    }
    case Layout::Offset: {
        at::Tensor flat = at::zeros({x.numel() + 1}, opts);
        flat.narrow(0, 1, x.numel()).copy_(x.reshape({-1}));
        return flat.narrow(0, 1, x.numel()).view(x.sizes());
    }
    }
    return x;
}

FakeBatch on_gpu(const FakeBatch & cpu, at::ScalarType dtype, Layout layout) {
    FakeBatch fb = cpu;
    for (auto & [attn, mlp] : fb.layers) {
        attn = place(attn, dtype, layout);
        mlp = place(mlp, dtype, layout);
    }
    for (auto & r : fb.residual) r = r.to(at::TensorOptions().device(at::kCUDA).dtype(dtype));
    return fb;
}

// Equal, or both NaN (a NaN payload may differ between the kernel and ATen).
template <typename T>
bool same(const T & a, const T & b) {
    if constexpr (std::is_floating_point_v<T>)
        return a == b || (std::isnan(a) && std::isnan(b));
    else
        return a == b;
}

// Index of the first differing element, -1 when equal (a failure then says where).
template <typename V>
int64_t first_difference(const V & a, const V & b) {
    if (a.size() != b.size()) return static_cast<int64_t>(std::min(a.size(), b.size()));
    for (size_t i = 0; i < a.size(); ++i)
        if (!same(a[i], b[i])) return static_cast<int64_t>(i);
    return -1;
}

void check_identical(const Statistics & f, const Statistics & a) {
    CHECK(f.threshold == a.threshold);
    CHECK(f.round_bf16 == a.round_bf16);
    CHECK(f.hidden == a.hidden);
    CHECK(f.histogram_spec == a.histogram_spec);
    CHECK(first_difference(f.sites, a.sites) == -1);
    CHECK(first_difference(f.site_hits, a.site_hits) == -1);
    CHECK(first_difference(f.site_max_abs, a.site_max_abs) == -1);
    CHECK(first_difference(f.site_nonfinite, a.site_nonfinite) == -1);
    CHECK(first_difference(f.site_elements, a.site_elements) == -1);
    CHECK(first_difference(f.site_histogram, a.site_histogram) == -1);
    CHECK(first_difference(f.site_sequences, a.site_sequences) == -1);
    CHECK(f.max_positions == a.max_positions);
    CHECK(first_difference(f.position_hits, a.position_hits) == -1);
    CHECK(f.sequences == a.sequences);
    CHECK(f.tokens == a.tokens);
    CHECK(f.batches == a.batches);
    REQUIRE(f.per_sequence.size() == a.per_sequence.size());
    for (size_t i = 0; i < f.per_sequence.size(); ++i) {
        const auto & p = f.per_sequence[i];
        const auto & q = a.per_sequence[i];
        INFO("sequence record " << i);
        CHECK(p.sequence_index == q.sequence_index);
        CHECK(p.tokens == q.tokens);
        CHECK(p.sites == q.sites);
        CHECK(p.layers == q.layers);
        REQUIRE(p.dims.size() == q.dims.size());
        for (size_t k = 0; k < p.dims.size(); ++k) {
            INFO("dim record " << k << " (dim " << q.dims[k].dim << ")");
            CHECK(p.dims[k].dim == q.dims[k].dim);
            CHECK(p.dims[k].sites_hit == q.dims[k].sites_hit);
            CHECK(p.dims[k].layers_hit == q.dims[k].layers_hit);
            CHECK(p.dims[k].positions_hit == q.dims[k].positions_hit);
            CHECK(p.dims[k].hits == q.dims[k].hits);
            CHECK(same(p.dims[k].max_abs, q.dims[k].max_abs));
        }
    }
    CHECK((f.token_hits == a.token_hits));  // (( )): doctest compares without printing the maps
    CHECK((f.token_hits_batches == a.token_hits_batches));
    REQUIRE(f.massive.size() == a.massive.size());
    for (size_t i = 0; i < f.massive.size(); ++i) {
        CHECK(f.massive[i].layer == a.massive[i].layer);
        CHECK(first_difference(f.massive[i].medians, a.massive[i].medians) == -1);
        REQUIRE(f.massive[i].top.size() == a.massive[i].top.size());
        for (size_t k = 0; k < f.massive[i].top.size(); ++k) {
            CHECK(same(f.massive[i].top[k].abs_value, a.massive[i].top[k].abs_value));
            CHECK(f.massive[i].top[k].position == a.massive[i].top[k].position);
            CHECK(f.massive[i].top[k].dim == a.massive[i].top[k].dim);
        }
    }
    // Threshold sweep (issue 14): the levels, per-sequence records and positions, bit for bit.
    CHECK(f.sweep_thresholds == a.sweep_thresholds);
    CHECK(first_difference(f.sweep_site_level, a.sweep_site_level) == -1);
    CHECK(first_difference(f.sweep_dim_positions, a.sweep_dim_positions) == -1);
    for (size_t i = 0; i < f.per_sequence.size(); ++i) {
        INFO("sequence record " << i);
        CHECK(first_difference(f.per_sequence[i].sweep, a.per_sequence[i].sweep) == -1);
    }
}

// Feeds the batches (fp32 on the CPU) to a fused and an ATen accumulator as `dtype` captures on the
// GPU and requires identical statistics; returns the fused one's for further checks.
Statistics compare_paths(const std::vector<FakeBatch> & batches, at::ScalarType dtype, AccumulatorOptions options,
                         Layout layout = Layout::Contiguous) {
    options.cuda_kernels = true;
    OutlierAccumulator fused(options);
    options.cuda_kernels = false;
    OutlierAccumulator aten(options);
    int64_t captures = 0;
    for (const auto & cpu : batches) {
        const FakeBatch fb = on_gpu(cpu, dtype, layout);
        tests::feed(fused, fb);
        tests::feed(aten, fb);
        captures += 2 * static_cast<int64_t>(cpu.layers.size());
    }
    // Every layer-norm capture took the kernel (ANALYSIS_FUSED=0 in the environment fails this).
    CHECK(fused.fused_captures() == captures);
    CHECK(aten.fused_captures() == 0);
    const Statistics f = fused.statistics(), a = aten.statistics();
    check_identical(f, a);
    if (options.sweep_thresholds.empty()) {
        // The same captures with the threshold sweep on (the kernel's SWEEP variant): thresholds
        // around the planted edges, 5.99 and 6 both 6.0 in bf16.
        AccumulatorOptions swept = options;
        swept.sweep_thresholds = {3, 4, 5, 5.99, 6, 8, 10, 20};
        swept.cuda_kernels = true;
        OutlierAccumulator fused_sweep(swept);
        swept.cuda_kernels = false;
        OutlierAccumulator aten_sweep(swept);
        for (const auto & cpu : batches) {
            const FakeBatch fb = on_gpu(cpu, dtype, layout);
            tests::feed(fused_sweep, fb);
            tests::feed(aten_sweep, fb);
        }
        CHECK(fused_sweep.fused_captures() == captures);
        const Statistics fs = fused_sweep.statistics(), as = aten_sweep.statistics();
        check_identical(fs, as);
        CHECK(fs.site_hits == f.site_hits);  // the sweep leaves the main statistics as they were
        size_t records = 0;
        for (const auto & q : fs.per_sequence) records += q.sweep.size();
        CHECK(records > 0);
    }
    // Not a comparison of two empty results: values hit and the histogram counted.
    int64_t hits = 0, histogram = 0;
    for (auto n : f.site_hits) hits += n;
    for (auto n : f.site_histogram) histogram += n;
    CHECK(hits > 0);
    if (options.histogram) {  // every real element in one bin (padded zeros taken out again)
        int64_t elements = 0;
        for (auto n : f.site_elements) elements += n;
        CHECK(histogram == elements);
    }
    return f;
}

const char * name_of(at::ScalarType t) { return t == at::kBFloat16 ? "bf16" : t == at::kHalf ? "fp16" : "fp32"; }

}  // namespace

TEST_CASE("fused capture pass equals the ATen path on bf16 captures: edge values, 3 layers, both sites, 2 batches") {
    if (!at::hasCUDA()) {
        MESSAGE("no CUDA device");
        return;
    }
    const std::vector<FakeBatch> batches = {batch(0, 4, 200, 2048, 3, 1), batch(4, 2, 333, 2048, 3, 2)};
    const Statistics s = compare_paths(batches, at::kBFloat16, {});
    // Dim 7 is 7.5 on every 10th position of every capture: each sequence records it.
    REQUIRE(s.per_sequence.size() == 6);
    for (const auto & seq : s.per_sequence) {
        const auto it = std::find_if(seq.dims.begin(), seq.dims.end(), [](const auto & d) { return d.dim == 7; });
        REQUIRE(it != seq.dims.end());
        CHECK(it->sites_hit == 6);
        CHECK(it->positions_hit >= (seq.tokens + 9) / 10);
        CHECK(it->max_abs >= 7.5f);
    }
}

TEST_CASE("fused capture pass equals the ATen path with NaN and infinities planted, and counts them per site") {
    if (!at::hasCUDA()) {
        MESSAGE("no CUDA device");
        return;
    }
    // One NaN, +inf and -inf in layer 0's attention-side capture of batch 0, and a NaN in layer 1's
    // MLP-side capture of batch 1: 4 non-finite values, on 2 of the 4 sites, in every dtype.
    std::vector<FakeBatch> batches = {batch(0, 3, 64, 256, 2, 5), batch(3, 2, 48, 256, 2, 6)};
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    batches[0].layers[0].first[0][3][11] = nan;
    batches[0].layers[0].first[1][5][12] = inf;
    batches[0].layers[0].first[2][7][13] = -inf;
    batches[1].layers[1].second[1][9][40] = nan;
    for (at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
        for (bool round : {true, false}) {
            INFO(name_of(dtype) << (round ? " rounded to bf16" : " as is"));
            AccumulatorOptions o;
            o.round_bf16 = round;
            const Statistics s = compare_paths(batches, dtype, o);
            int64_t nonfinite = 0, sites = 0;
            for (auto n : s.site_nonfinite) {
                nonfinite += n;
                sites += n > 0;
            }
            // fp16 also turns the planted 65520 and 3e38 edges into infinities.
            if (dtype != at::kHalf) CHECK(nonfinite == 4);
            if (dtype == at::kHalf) CHECK(nonfinite > 4);
            CHECK(sites >= 2);
        }
    }
}

TEST_CASE("fused capture pass equals the ATen path on fp32 captures, rounded to bf16 or not, at thresholds 6 and 5.99") {
    if (!at::hasCUDA()) {
        MESSAGE("no CUDA device");
        return;
    }
    const std::vector<FakeBatch> batches = {batch(0, 4, 256, 2048, 2, 3), batch(4, 3, 100, 2048, 2, 4)};
    for (bool round : {true, false}) {
        for (double threshold : {6.0, 5.99}) {
            INFO("round_bf16 " << round << ", threshold " << threshold);
            AccumulatorOptions options;
            options.round_bf16 = round;
            options.threshold = threshold;
            compare_paths(batches, at::kFloat, options);
        }
    }
}

TEST_CASE("fused capture pass equals the ATen path on fp16 captures, rounded to bf16 or not") {
    if (!at::hasCUDA()) {
        MESSAGE("no CUDA device");
        return;
    }
    const std::vector<FakeBatch> batches = {batch(0, 2, 300, 2048, 2, 5)};
    for (bool round : {true, false}) {
        INFO("round_bf16 " << round);
        AccumulatorOptions options;
        options.round_bf16 = round;
        compare_paths(batches, at::kHalf, options);
    }
}

TEST_CASE("fused capture pass equals the ATen path with left- and right-padded rows") {
    if (!at::hasCUDA()) {
        MESSAGE("no CUDA device");
        return;
    }
    std::vector<FakeBatch> batches = {batch(0, 4, 150, 2048, 2, 6), batch(4, 3, 64, 2048, 2, 7)};
    for (auto & fb : batches) pad(fb);
    for (auto dtype : {at::kBFloat16, at::kFloat}) {
        INFO(name_of(dtype));
        const Statistics s = compare_paths(batches, dtype, {});
        CHECK(s.tokens == 4 * 150 - 150 / 3 - 5 + 3 * 64 - 64 / 3 - 5);
    }
}

TEST_CASE("fused capture pass equals the ATen path on odd shapes: H 2056, 2050, 12 and 1, T 1 and 3, strided and misaligned views") {
    if (!at::hasCUDA()) {
        MESSAGE("no CUDA device");
        return;
    }
    struct Shape {
        int64_t B, T, H;
    };
    for (const Shape shape : {Shape{2, 130, 2056}, Shape{3, 70, 2050}, Shape{2, 1, 2048}, Shape{5, 3, 12},
                              Shape{4, 40, 1}}) {
        const std::vector<FakeBatch> batches = {batch(0, shape.B, shape.T, shape.H, 2, 8),
                                                batch(shape.B, shape.B, shape.T + 1, shape.H, 2, 9)};
        for (auto dtype : {at::kBFloat16, at::kFloat, at::kHalf}) {
            for (auto layout : {Layout::Contiguous, Layout::Strided, Layout::Offset}) {
                INFO("B " << shape.B << " T " << shape.T << " H " << shape.H << " " << name_of(dtype) << " layout "
                          << static_cast<int>(layout));
                compare_paths(batches, dtype, {}, layout);
            }
        }
    }
}

TEST_CASE("fused capture pass equals the ATen path with the histogram off, other histogram ranges, and residual captures") {
    if (!at::hasCUDA()) {
        MESSAGE("no CUDA device");
        return;
    }
    std::vector<FakeBatch> batches = {batch(0, 2, 200, 2048, 2, 10), batch(2, 2, 100, 2048, 2, 11)};
    SUBCASE("histogram off") {
        AccumulatorOptions options;
        options.histogram = false;
        compare_paths(batches, at::kBFloat16, options);
    }
    SUBCASE("histogram from 2^-20 over 128 bins, threshold 3") {
        AccumulatorOptions options;
        options.histogram_spec.log2_min = -20;
        options.histogram_spec.bins = 128;
        options.threshold = 3;
        compare_paths(batches, at::kFloat, options);
    }
    SUBCASE("histogram from 2^-60 over 400 bins") {
        AccumulatorOptions options;
        options.histogram_spec.log2_min = -60;
        options.histogram_spec.bins = 400;
        compare_paths(batches, at::kBFloat16, options);
    }
    SUBCASE("massive activations on the residual stream stay on the ATen path") {
        for (auto & fb : batches)
            for (int l = 0; l < 2; ++l) fb.residual.push_back(capture(2, fb.layers[0].first.size(1), 2048, 50 + l));
        AccumulatorOptions options;
        options.massive_top_k = 8;
        const Statistics s = compare_paths(batches, at::kFloat, options);
        CHECK(s.massive.size() == 2);
    }
}

namespace {

// One MoE layer's routed outputs as the fused MoE hands them over: n tokens x K slots, rows of
// `down` in a shuffled order (slot_row), planted edge values in some rows, NaN-free.
extractor::ExpertCapture expert_capture(int64_t n, int64_t K, int64_t E, int64_t H, at::ScalarType dtype, bool slot_row_int64,
                                        uint64_t seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    const int64_t S = n * K;
    at::Tensor down = at::randn({S, H}, gen, at::TensorOptions().dtype(at::kFloat)).mul_(2.0);
    for (size_t k = 0; k < kEdges.size() && static_cast<int64_t>(k) < S; ++k)
        down[(static_cast<int64_t>(k) * 53) % S][(static_cast<int64_t>(k) * 131 + 3) % H] = kEdges[k];
    // Experts without replacement per token (as a top-k), skewed so some experts get none.
    at::Tensor scores = at::rand({n, E}, gen, at::TensorOptions().dtype(at::kFloat));
    scores.narrow(1, 0, std::min<int64_t>(E, 3)).mul_(0.01);  // experts 0-2: rarely chosen
    at::Tensor top_i = std::get<1>(scores.topk(K, -1));        // [n,K] int64
    at::Tensor slot_row = at::randperm(S, gen, at::TensorOptions().dtype(at::kLong));
    const auto cuda = at::TensorOptions().device(at::kCUDA);
    extractor::ExpertCapture c;
    c.experts = E;
    c.first_token = 0;
    c.top_i = top_i.to(cuda);
    c.down = down.to(cuda.dtype(dtype));
    c.slot_row = slot_row_int64 ? slot_row.to(cuda) : slot_row.to(cuda.dtype(at::kInt));
    return c;
}

}  // namespace

TEST_CASE("fused per-expert pass equals the ATen path: bf16/fp16/fp32, rounded or not, padding, int32/int64 rows, odd H") {
    if (!at::hasCUDA()) {
        MESSAGE("no CUDA device");
        return;
    }
    struct Shape {
        int64_t B, T, K, E, H;
    };
    for (const Shape sh : {Shape{2, 96, 8, 64, 2048}, Shape{3, 50, 10, 512, 256}, Shape{2, 33, 2, 8, 2050}, Shape{1, 7, 4, 16, 12}}) {
        for (auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
            for (bool round : {true, false}) {
                for (bool padded : {false, true}) {
                    INFO("B " << sh.B << " T " << sh.T << " K " << sh.K << " E " << sh.E << " H " << sh.H << " " << name_of(dtype)
                              << " round " << round << " padded " << padded);
                    AccumulatorOptions options;
                    options.round_bf16 = round;
                    options.expert_stats = true;
                    options.threshold = 5.99;
                    options.cuda_kernels = true;
                    OutlierAccumulator fused(options);
                    OutlierAccumulator fused_given_max(options);  // slot maxima handed over, as the fused combine does
                    options.cuda_kernels = false;
                    OutlierAccumulator aten(options);
                    OutlierAccumulator aten_given_max(options);
                    for (uint64_t batch_seed : {21u, 22u}) {
                        FakeBatch fb = batch(static_cast<int64_t>(batch_seed) * 10, sh.B, sh.T, std::min<int64_t>(sh.H, 64), 2, batch_seed);
                        if (padded) {
                            fb.attention_mask = at::ones({sh.B, sh.T}, at::TensorOptions().dtype(at::kLong));
                            fb.attention_mask[0].narrow(0, 0, sh.T / 3).fill_(0);
                        }
                        for (int l = 0; l < 2; ++l)
                            fb.experts.push_back(expert_capture(sh.B * sh.T, sh.K, sh.E, sh.H, dtype, l == 1, batch_seed * 7 + l));
                        const FakeBatch gpu = on_gpu(fb, at::kBFloat16, Layout::Contiguous);
                        tests::feed(fused, gpu);
                        tests::feed(aten, gpu);
                        FakeBatch given = gpu;
                        for (auto & c : given.experts)
                            c.slot_max = c.down.index_select(0, c.slot_row.to(at::kLong)).abs().amax(1).to(at::kFloat);
                        tests::feed(fused_given_max, given);
                        tests::feed(aten_given_max, given);
                    }
                    CHECK(fused.fused_expert_captures() == 4);  // both layers of both batches took the kernel
                    CHECK(aten.fused_expert_captures() == 0);
                    CHECK(fused_given_max.fused_expert_captures() == 4);
                    const Statistics f = fused.statistics(), a = aten.statistics();
                    REQUIRE(f.experts.size() == 2);
                    REQUIRE(a.experts.size() == 2);
                    CHECK((fused_given_max.statistics().experts == f.experts));
                    CHECK((aten_given_max.statistics().experts == a.experts));
                    for (size_t l = 0; l < 2; ++l) {
                        INFO("layer " << l);
                        CHECK(first_difference(f.experts[l].tokens, a.experts[l].tokens) == -1);
                        CHECK(first_difference(f.experts[l].hit_tokens, a.experts[l].hit_tokens) == -1);
                        CHECK(first_difference(f.experts[l].max_abs, a.experts[l].max_abs) == -1);
                        int64_t routed = 0, hit = 0;
                        for (auto t : f.experts[l].tokens) routed += t;
                        for (auto t : f.experts[l].hit_tokens) hit += t;
                        const int64_t real = padded ? 2 * (sh.B * sh.T - sh.T / 3) : 2 * sh.B * sh.T;
                        CHECK(routed == real * sh.K);  // two batches, every real token's K slots
                        CHECK(hit > 0);                 // the edges and N(0, 2^2) tails reach 6
                    }
                }
            }
        }
    }
}
