// The extractor's fused CUDA kernels against the ATen paths they replace (extractor/ops.cpp with
// fused::set_mode(Mode::Off)), on random inputs of the shapes the families use. The kernels round
// where HF rounds, so outputs agree except where fp32 sums run in another order and a value lands
// on the other side of a rounding boundary: at most one unit in the last place, on few elements.
#include <ATen/ATen.h>

#include <cmath>
#include <optional>

#include "extractor/compat.h"
#include "extractor/cuda/fused_ops.h"
#include "extractor/mxfp4.h"
#include "extractor/ops.h"
#include "extractor/ops_delta.h"
#include "extractor/sinks/sinks.h"

#include <doctest/doctest.h>

namespace {

using extractor::ops::QkNorm;
namespace fused = extractor::fused;
namespace ops = extractor::ops;

bool have_gpu() { return at::hasCUDA() && fused::built(); }

// Runs f with every fused kernel, pending ones included, or with none (the ATen path), then
// restores the mode the run started with.
template <typename F>
at::Tensor with_fused(bool on, F && f) {
    struct Restore {
        fused::Mode before = fused::mode();
        ~Restore() { fused::set_mode(before); }
    } restore;
    fused::set_mode(on ? fused::Mode::All : fused::Mode::Off);
    return f();
}

struct Agreement {
    double max_rel = 0;    // max |a-b| / |b| over elements with |b| above 1e-3 of the largest
    double scaled = 0;     // max |a-b| / max |b|
    double differing = 0;  // fraction of elements not bitwise equal
};

Agreement agreement(const at::Tensor & a, const at::Tensor & b) {
    REQUIRE(a.sizes().equals(b.sizes()));
    REQUIRE((a.scalar_type() == b.scalar_type()));
    at::Tensor af = a.to(at::kDouble).cpu(), bf = b.to(at::kDouble).cpu();
    REQUIRE_FALSE(af.isnan().any().item<bool>());
    Agreement g;
    // Near-zero outputs (RoPE's a*cos - b*sin cancels) make element-wise relative error meaningless:
    // judge them against the tensor's scale instead.
    const double floor = 1e-3 * bf.abs().max().item<double>();
    g.max_rel = ((af - bf).abs() / bf.abs().clamp_min(floor)).max().item<double>();
    g.scaled = (af - bf).abs().max().item<double>() / bf.abs().max().item<double>();
    g.differing = af.ne(bf).to(at::kDouble).mean().item<double>();
    return g;
}

// One unit in the last place, relative, for the dtype.
double ulp(at::ScalarType t) { return t == at::kBFloat16 ? 1.0 / 128 : t == at::kHalf ? 1.0 / 1024 : 1.2e-7; }

// In 16-bit dtypes a differently ordered fp32 sum moves a result only when it sits on a rounding
// boundary (rare), and by one unit of that element. In fp32 every element of a row moves by an
// ulp, and RoPE's a*cos - b*sin turns that into a larger relative change of near-zero outputs, so
// fp32 is judged against the tensor's scale.
void check_agreement(const Agreement & g, at::ScalarType t, double ulps) {
    if (t == at::kFloat) {
        CHECK(g.scaled <= ulps * ulp(t));
    } else {
        CHECK(g.max_rel <= ulps * ulp(t));
        CHECK(g.differing < 0.01);
    }
}

// f on the ATen path and with every fused kernel agree (check_agreement); returns the ATen result.
template <typename F>
at::Tensor check_paths_agree(F && f, at::ScalarType t, double ulps) {
    at::Tensor ref = with_fused(false, f);
    check_agreement(agreement(with_fused(true, f), ref), t, ulps);
    return ref;
}

at::TensorOptions on_gpu(at::ScalarType t) { return at::TensorOptions().dtype(t).device(at::kCUDA); }

}  // namespace

TEST_CASE("fused rms_norm matches the ATen path in bf16, fp16 and fp32, aligned or not, strided rows") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    for (auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
        for (int64_t width : {2048, 2050, 64}) {
            at::manual_seed(1);
            at::Tensor wide = at::randn({3, 37, width + 16}, on_gpu(dtype)) * 3;
            at::Tensor x = wide.narrow(2, 8, width);  // rows strided by width + 16
            at::Tensor w = at::randn({width}, on_gpu(dtype));
            CAPTURE(dtype);
            CAPTURE(width);
            check_paths_agree([&] { return ops::rms_norm(x, w, 1e-6); }, dtype, 4);
            // Positions narrowed (what --perplexity does: each window without its last position):
            // rows not evenly strided across the batch, which made the fused path's view throw.
            at::Tensor seq = at::randn({3, 37, width}, on_gpu(dtype)) * 3;
            at::Tensor y = seq.narrow(1, 0, 36);
            check_paths_agree([&] { return ops::rms_norm(y, w, 1e-6); }, dtype, 4);
        }
    }
}

TEST_CASE("fused q/k norm + clip + RoPE matches the ATen sequence for every norm mode") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    const int64_t B = 2, T = 33, Nh = 4, D = 128;
    ops::Rope rope;
    rope.inv_freq = 1.0 / at::pow(10000.0, at::arange(0, D, 2, at::kFloat) / static_cast<double>(D));
    for (auto dtype : {at::kBFloat16, at::kFloat}) {
        auto [cos, sin] = ops::rope_cos_sin(rope, T, dtype, at::Device(at::kCUDA));
        for (auto mode : {QkNorm::None, QkNorm::Whole, QkNorm::PerHead}) {
            for (std::optional<double> clip : {std::optional<double>{}, std::optional<double>{1.5}}) {
                at::manual_seed(2);
                at::Tensor x = at::randn({B, T, Nh * D}, on_gpu(dtype)) * 2;
                at::Tensor w = at::randn({mode == QkNorm::PerHead ? D : Nh * D}, on_gpu(dtype));
                auto reference = [&] {
                    at::Tensor q = x;
                    if (mode == QkNorm::Whole) q = ops::rms_norm(q, w, 1e-6);
                    q = q.view({B, T, Nh, D});
                    if (mode == QkNorm::PerHead) q = ops::rms_norm(q, w, 1e-6);
                    if (clip) q = q.clamp(-*clip, *clip);
                    return ops::apply_rope(q.transpose(1, 2), cos, sin);
                };
                at::Tensor ref = with_fused(false, reference);
                at::Tensor got = fused::qk_norm_rope(x, Nh, D, mode, w, 1e-6, clip, cos, sin);
                CAPTURE(dtype);
                CAPTURE(static_cast<int>(mode));
                CAPTURE(clip.has_value());
                REQUIRE(got.sizes().equals(ref.sizes()));
                const auto g = agreement(got.contiguous(), ref.contiguous());
                // Without a norm there is no sum, so nothing can round differently.
                if (mode == QkNorm::None) CHECK(g.differing == 0);
                check_agreement(g, dtype, 4);
            }
        }
    }
}

TEST_CASE("fused attention block matches the ATen one (OLMoE whole-projection norm with clip, Qwen3 GQA per-head)") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    const int64_t B = 2, T = 64, H = 512;
    for (auto mode : {QkNorm::Whole, QkNorm::PerHead}) {
        ops::AttnOptions opt;
        opt.n_heads = 8;
        opt.n_kv_heads = mode == QkNorm::Whole ? 8 : 2;
        opt.head_dim = 64;
        opt.qk_norm = mode;
        opt.qk_norm_eps = 1e-6;
        if (mode == QkNorm::Whole) opt.clip_qkv = 8.0;
        at::manual_seed(3);
        auto lin = [&](int64_t out, int64_t in) { return ops::Linear{at::randn({out, in}, on_gpu(at::kBFloat16)) * 0.05, {}}; };
        ops::AttnWeights w{lin(opt.n_heads * 64, H), lin(opt.n_kv_heads * 64, H), lin(opt.n_kv_heads * 64, H),
                           lin(H, opt.n_heads * 64), {}, {}};
        const int64_t qn = mode == QkNorm::Whole ? opt.n_heads * 64 : 64, kn = mode == QkNorm::Whole ? opt.n_kv_heads * 64 : 64;
        w.q_norm = at::randn({qn}, on_gpu(at::kBFloat16));
        w.k_norm = at::randn({kn}, on_gpu(at::kBFloat16));
        ops::Rope rope;
        rope.inv_freq = 1.0 / at::pow(10000.0, at::arange(0, 64, 2, at::kFloat) / 64.0);
        auto [cos, sin] = ops::rope_cos_sin(rope, T, at::kBFloat16, at::Device(at::kCUDA));
        at::Tensor a = at::randn({B, T, H}, on_gpu(at::kBFloat16));
        at::Tensor ref = with_fused(false, [&] { return ops::attention(a, w, opt, cos, sin); });
        at::Tensor got = with_fused(true, [&] { return ops::attention(a, w, opt, cos, sin); });
        const double rel = (got.to(at::kFloat) - ref.to(at::kFloat)).norm().item<double>() / ref.to(at::kFloat).norm().item<double>();
        CAPTURE(static_cast<int>(mode));
        CHECK(rel < 5e-3);
    }
}

TEST_CASE("fused MoE dispatch, activation and combine match the ATen path and are deterministic") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    const int64_t N = 1000, H = 256, I = 128, E = 16, K = 4;
    at::manual_seed(4);
    ops::MoeWeights w{at::randn({E, H}, on_gpu(at::kBFloat16)) * 0.1, at::randn({E, 2 * I, H}, on_gpu(at::kBFloat16)) * 0.05,
                      at::randn({E, H, I}, on_gpu(at::kBFloat16)) * 0.05};
    at::Tensor m = at::randn({1, N, H}, on_gpu(at::kBFloat16));
    for (bool renorm : {false, true}) {
        ops::MoeOptions opt{.top_k = K, .renormalise = renorm, .weights_in_activation_dtype = false};
        at::Tensor ref = with_fused(false, [&] { return ops::moe(m, w, opt); });
        at::Tensor got = with_fused(true, [&] { return ops::moe(m, w, opt); });
        at::Tensor again = with_fused(true, [&] { return ops::moe(m, w, opt); });
        CAPTURE(renorm);
        CHECK(again.equal(got));  // rows of one expert land in any order; the result may not change
        check_agreement(agreement(got, ref), at::kBFloat16, 2);
    }
    // The pieces on their own: dispatch groups every slot under its expert, offsets are exact.
    at::Tensor x = m.view({N, H});
    at::Tensor top_i = at::randint(0, E, {N, K}, on_gpu(at::kLong));
    auto d = fused::moe_dispatch(x, top_i, E);
    at::Tensor counts = at::bincount(top_i.view({-1}).cpu(), {}, E);
    CHECK(d.offs.cpu().to(at::kLong).equal(counts.cumsum(0)));
    at::Tensor pos = d.slot_pos.to(at::kLong);
    CHECK(std::get<0>(at::sort(pos.cpu())).equal(at::arange(N * K, at::kLong)));  // a permutation
    at::Tensor tokens = at::arange(N, on_gpu(at::kLong)).unsqueeze(1).expand({N, K}).reshape({-1});
    CHECK(d.xs.index_select(0, pos).equal(x.index_select(0, tokens)));          // each slot holds its token
    at::Tensor expert_of_row = at::searchsorted(counts.cumsum(0), at::arange(N * K, at::kLong), /*out_int32=*/false, /*right=*/true);
    CHECK(expert_of_row.index_select(0, pos.cpu()).equal(top_i.view({-1}).cpu()));  // ...under its expert
    // The combine with slot maxima (`--expert-stats`): the same output, and each slot's max |row|.
    for (auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
        CAPTURE(dtype);
        at::Tensor out = at::randn({N * K, H}, on_gpu(at::kFloat)).to(dtype);
        out[7][3] = -1000;  // a slot whose max comes from a negative value
        at::Tensor top_w = at::rand({N, K}, on_gpu(at::kFloat));
        at::Tensor slot_max;
        const at::Tensor plain = fused::moe_combine(out, d.slot_pos, top_w);
        const at::Tensor with_max = fused::moe_combine(out, d.slot_pos, top_w, &slot_max);
        CHECK(with_max.equal(plain));
        REQUIRE(slot_max.defined());
        REQUIRE((slot_max.scalar_type() == at::kFloat));
        const at::Tensor expect = out.index_select(0, pos).abs().amax(1).to(at::kFloat);
        CHECK(slot_max.equal(expect));
    }
}

TEST_CASE("fused SiLU-times-up matches HF's act_fn(gate) * up bit for bit") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    for (auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
        at::manual_seed(5);
        at::Tensor gu = at::randn({777, 2 * 96}, on_gpu(dtype)) * 4;
        at::Tensor ref = at::silu(gu.narrow(1, 0, 96)) * gu.narrow(1, 96, 96);
        at::Tensor got = fused::silu_mul(gu);
        CAPTURE(dtype);
        check_agreement(agreement(got, ref), dtype, 1);
    }
}

TEST_CASE("fused MXFP4 decode equals the ATen decode bit for bit: every byte, every scale, three dtypes") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    // 256 scales x 3 blocks: every scale byte (0 = 2^-127, 255 = inf) with blocks cycling through
    // all 256 byte values, an odd block count per row.
    at::Tensor blocks = (at::arange(256 * 3 * 16, at::kLong) * 7 % 256).to(at::kByte).view({256, 3, 16}).cuda();
    at::Tensor scales = at::arange(256, at::kLong).to(at::kByte).view({256, 1}).expand({256, 3}).contiguous().cuda();
    for (auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
        CAPTURE(dtype);
        at::Tensor fused_out = at::empty({256, 96}, on_gpu(dtype));
        at::Tensor aten_out = at::empty({256, 96}, on_gpu(dtype));
        REQUIRE(fused::mxfp4_aligned(blocks, fused_out));
        (void)with_fused(true, [&] {
            extractor::mxfp4::dequantize_into(blocks, scales, fused_out);
            return fused_out;
        });
        (void)with_fused(false, [&] {
            extractor::mxfp4::dequantize_into(blocks, scales, aten_out);
            return aten_out;
        });
        at::Tensor a = fused_out.to(at::kFloat).cpu(), b = aten_out.to(at::kFloat).cpu();
        const bool both_nan_or_equal = (a.eq(b) | (a.isnan() & b.isnan())).all().item<bool>();
        CHECK(both_nan_or_equal);
        CHECK(a.isinf().any().item<bool>());  // scale 255 and, in f16, large scales overflow
    }
}

TEST_CASE("fused token NLL equals log_softmax of the fp32 logits at the target: three dtypes, odd vocabularies, edge targets") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    for (int64_t V : {50304, 151936, 1001, 7}) {
        for (auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
            CAPTURE(V);
            CAPTURE(dtype);
            at::manual_seed(9);
            const int64_t n = 37;
            // Logits of an lm_head's scale, one row with a dominant entry, one with -inf entries.
            at::Tensor logits = (at::randn({n, V}, on_gpu(at::kFloat)) * 3).to(dtype);
            logits[1][V / 2] = 40;
            logits[2].narrow(0, 0, V / 2).fill_(-INFINITY);
            at::Tensor target = at::randint(V / 2, V, {n}, on_gpu(at::kLong));
            target[0] = 0;
            target[3] = V - 1;
            target[1] = V / 2;
            const at::Tensor ref = at::log_softmax(logits.to(at::kFloat), -1).gather(1, target.unsqueeze(1)).squeeze(1).neg();
            const at::Tensor got = fused::token_nll(logits, target);
            REQUIRE((got.scalar_type() == at::kFloat));
            // Same fp32 values, summed in another order: a few fp32 ulps of the row's log-sum-exp.
            const double err = (got.to(at::kDouble) - ref.to(at::kDouble)).abs().max().item<double>();
            const double scale = ref.abs().max().item<double>() + 1.0;
            CHECK(err <= 1e-5 * scale);
            // A target outside the vocabulary gives NaN, never a read beyond the row.
            at::Tensor bad = target.clone();
            bad[4] = V;
            bad[5] = -1;
            const at::Tensor got_bad = fused::token_nll(logits, bad).cpu();
            CHECK(std::isnan(got_bad[4].item<float>()));
            CHECK(std::isnan(got_bad[5].item<float>()));
            CHECK(got_bad[6].item<float>() == got.cpu()[6].item<float>());
        }
    }
}

TEST_CASE("AbsmaxSink's fused summary equals its ATen ops: three dtypes, aligned and odd widths, edge values, two captures a site") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    using extractor::Site;
    for (int64_t H : {4096, 4100, 12, 7}) {
        for (auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
            CAPTURE(H);
            CAPTURE(dtype);
            at::manual_seed(11);
            std::vector<at::Tensor> captures;
            for (int c = 0; c < 3; ++c) {
                at::Tensor x = (at::randn({2, 37, H}, on_gpu(at::kFloat)) * 2.5).to(dtype);
                // Exactly the threshold, just under it, its negative, a large value, zeros.
                x[0][0][0] = 6;
                x[0][1][H - 1] = -6;
                x[1][2][H / 2] = dtype == at::kFloat ? 5.9999995f : 5.96875f;
                x[1][3][1 % H] = 300;
                x[1][4].zero_();
                captures.push_back(c == 2 ? x.narrow(2, 0, H - 1) : x);  // the last one strided (a view)
            }
            extractor::AbsmaxSink fused_sink({{Site::LnAttn, 0}, {Site::LnMlp, 0}, {Site::LnAttn, 1}});
            extractor::AbsmaxSink aten_sink({{Site::LnAttn, 0}, {Site::LnMlp, 0}, {Site::LnAttn, 1}});
            for (bool on : {true, false}) {
                auto & sink = on ? fused_sink : aten_sink;
                with_fused(on, [&] {
                    sink.on_capture(Site::LnAttn, 0, captures[0]);
                    sink.on_capture(Site::LnAttn, 0, captures[1]);  // accumulates into the same site
                    sink.on_capture(Site::LnMlp, 0, captures[1]);
                    sink.on_capture(Site::LnAttn, 1, captures[2]);
                    return at::Tensor();
                });
            }
            const int top = static_cast<int>(H);
            CHECK(fused_sink.summary(top) == aten_sink.summary(top));
            CHECK(fused_sink.summary(top).dump().find("count_ge_6") != std::string::npos);
        }
    }
}

TEST_CASE("sink attention through flash + sigmoid(lse - sink) equals the eager softmax with the sink column") {
    if (!at::hasCUDA() || !extractor::compat::flash_supports(at::kBFloat16, /*cuda=*/true)) {
        MESSAGE("no CUDA device or no flash kernel in this libtorch");
        return;
    }
    // gpt_oss's head size. A small case (GQA 8 -> 2, T not a multiple of the kernel's tiles; full,
    // sliding 37 < T, and 1000 >= T: the same as full) and gpt-oss-20b's heads at 2 x 2048 tokens
    // (64 -> 8, full and sliding 128); q/k/v laid out [B,T,N,D] (projection output viewed as heads)
    // and [B,N,T,D] contiguous; sinks large enough to take most of some rows.
    struct Shape {
        int64_t B, Nq, Nkv, T;
        std::vector<std::optional<int64_t>> windows;
    };
    for (const Shape & sh : {Shape{2, 8, 2, 300, {std::nullopt, 37, 1000}}, Shape{2, 64, 8, 2048, {std::nullopt, 128}}}) {
        const int64_t B = sh.B, Nq = sh.Nq, Nkv = sh.Nkv, T = sh.T, D = 64;
        for (bool heads_outer : {false, true}) {
            for (const auto & window : sh.windows) {
                CAPTURE(T);
                CAPTURE(heads_outer);
                CAPTURE(window.value_or(-1));
                at::manual_seed(11);
                auto make = [&](int64_t n) {  // [B,n,T,D] in the chosen memory layout
                    return heads_outer ? at::randn({B, n, T, D}, on_gpu(at::kFloat)) : at::randn({B, T, n, D}, on_gpu(at::kFloat)).transpose(1, 2);
                };
                at::Tensor q = make(Nq), k = make(Nkv), v = make(Nkv);
                at::Tensor sinks = at::randn({Nq}, on_gpu(at::kFloat)) * 3;
                const at::Tensor mask = ops::causal_mask(T, window, q.device());
                auto eager = [&](at::ScalarType t) {
                    return ops::attend_with_sinks(q.to(t), ops::repeat_kv(k.to(t), Nq / Nkv), ops::repeat_kv(v.to(t), Nq / Nkv),
                                                  sinks, mask).to(at::kFloat);
                };
                const at::Tensor exact = eager(at::kFloat);
                const at::Tensor bf16_eager = eager(at::kBFloat16);
                at::Tensor flash =
                    ops::attend_with_sinks_flash(q.to(at::kBFloat16), k.to(at::kBFloat16), v.to(at::kBFloat16), sinks, window);
                REQUIRE(flash.defined());
                REQUIRE(flash.sizes().equals(exact.sizes()));
                flash = flash.to(at::kFloat);
                // Against fp32 math, the flash form is at least as close as the bf16 eager form (which
                // rounds scores and probabilities to bf16), up to rounding noise: over the tensor, and
                // row by row (a row's error against the row's own scale, so a misplaced row shows).
                const double scale = exact.abs().max().item<double>();
                const at::Tensor row_scale = exact.abs().amax(-1).clamp_min(1e-6);
                auto row_err = [&](const at::Tensor & x) { return ((x - exact).abs().amax(-1) / row_scale).max().item<double>(); };
                const double flash_max = (flash - exact).abs().max().item<double>() / scale;
                const double eager_max = (bf16_eager - exact).abs().max().item<double>() / scale;
                const double flash_mean = (flash - exact).abs().mean().item<double>();
                const double eager_mean = (bf16_eager - exact).abs().mean().item<double>();
                const double flash_row = row_err(flash), eager_row = row_err(bf16_eager);
                MESSAGE("T " << T << " heads_outer " << heads_outer << " window " << window.value_or(-1) << ": flash max "
                             << flash_max << " mean " << flash_mean << " worst row " << flash_row << "; bf16 eager max "
                             << eager_max << " mean " << eager_mean << " worst row " << eager_row);
                CHECK(flash_max < 1e-2);
                CHECK(flash_mean <= 1.5 * eager_mean);
                CHECK(flash_row <= 1.5 * eager_row + 1e-3);
                if (T > 1000) continue;
                // The fp32 input is refused (nothing to gain over the eager form), and so is the CPU.
                CHECK_FALSE(ops::attend_with_sinks_flash(q, k, v, sinks, window).defined());
                CHECK_FALSE(ops::attend_with_sinks_flash(q.cpu().to(at::kBFloat16), k.cpu().to(at::kBFloat16),
                                                         v.cpu().to(at::kBFloat16), sinks.cpu(), window)
                                .defined());
            }
        }
    }
}

TEST_CASE("fused fp32-gain and gated RMSNorms match their ATen paths in bf16, fp16 and fp32, aligned or not") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    for (auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
        for (int64_t width : {2048, 2050, 128}) {
            at::manual_seed(4);
            at::Tensor wide = at::randn({2, 37, width + 16}, on_gpu(dtype)) * 3;
            at::Tensor x = wide.narrow(2, 8, width);  // rows strided by width + 16
            at::Tensor w = at::randn({width}, on_gpu(dtype)) * 0.3;
            CAPTURE(dtype);
            CAPTURE(width);
            // GPT-OSS's norm (gain w) and Qwen3-Next's zero-centred one (gain 1 + w, formed in fp32).
            check_paths_agree([&] { return ops::rms_norm_fp32_gain(x, w, 1e-6); }, dtype, 4);
            check_paths_agree([&] { return ops::rms_norm_zero_centred(x, w, 1e-6); }, dtype, 4);
            // Qwen3NextRMSNormGated: the gate's SiLU in fp32, one rounding of the product.
            at::Tensor z = at::randn({2, 37, width}, on_gpu(dtype)) * 2;
            at::Tensor ref = check_paths_agree([&] { return ops::rms_norm_gated(x, z, w, 1e-6); }, dtype, 4);
            // The kernels themselves (the ops above would pass vacuously if their dispatch guards
            // sent both calls to ATen), the gate as a strided view too.
            check_agreement(agreement(fused::rms_norm_gated(x, z, w, 1e-6), ref), dtype, 4);
            at::Tensor z_wide = at::randn({2, 37, width + 8}, on_gpu(dtype)) * 2;
            at::Tensor z_view = z_wide.narrow(2, 8, width);
            ref = with_fused(false, [&] { return ops::rms_norm_gated(x, z_view, w, 1e-6); });
            check_agreement(agreement(fused::rms_norm_gated(x, z_view, w, 1e-6), ref), dtype, 4);
            ref = with_fused(false, [&] { return ops::rms_norm_fp32_gain(x, w, 1e-6); });
            check_agreement(agreement(fused::rms_norm_fp32_gain(x, w, 1e-6), ref), dtype, 4);
        }
    }
}

TEST_CASE("fused causal conv1d + SiLU matches cuDNN's depthwise conv then SiLU: bf16, fp16, fp32, odd channels, short sequences") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    // fp32 against cuDNN without TF32, so both sides multiply in full fp32; restored however the
    // case ends, so a failed check leaves the cases after it as they were.
    struct NoTf32 {
        bool before = at::globalContext().allowTF32CuDNN();
        NoTf32() { at::globalContext().setAllowTF32CuDNN(false); }
        ~NoTf32() { at::globalContext().setAllowTF32CuDNN(before); }
    } no_tf32;
    for (auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
        for (int64_t C : {1024, 100}) {
            for (int64_t T : {37, 2, 1}) {
                at::manual_seed(5);
                at::Tensor x = at::randn({2, T, C}, on_gpu(dtype));
                at::Tensor w = at::randn({C, 1, 4}, on_gpu(dtype)) * 0.5;
                // The ATen path: conv1d with Kc-1 zeros on both sides, the first T outputs, SiLU.
                at::Tensor ref = at::silu(at::conv1d(x.transpose(1, 2), w, {}, 1, 3, 1, C).narrow(2, 0, T)).transpose(1, 2);
                at::Tensor got = fused::causal_conv1d_silu(x, w);
                CAPTURE(dtype);
                CAPTURE(C);
                CAPTURE(T);
                REQUIRE(got.sizes().equals(ref.sizes()));
                // fp16: a one-ulp difference of the conv output (another tap order) can grow to a
                // few ulps through SiLU's steep part.
                // fp32: cuDNN's tap order against ours, judged at the tensor's scale.
                const double ulps = dtype == at::kHalf ? 8 : dtype == at::kFloat ? 4 : 2;
                check_agreement(agreement(got, ref.contiguous()), dtype, ulps);
                // The op takes the fused kernel for 16-bit inputs only: same values through ops.
                if (dtype != at::kFloat)
                    check_agreement(agreement(with_fused(true, [&] { return ops::causal_conv1d_silu(x, w); }), ref.contiguous()),
                                    dtype, ulps);
            }
        }
    }
}

TEST_CASE("fused q/k pass with partial rotary, strided heads and the zero-centred per-head norm matches the ATen sequence") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    const int64_t B = 2, T = 33, Nh = 4, D = 128;
    for (int64_t R : {D / 2, D / 4}) {  // GLM-4.5's half, Qwen3-Next's quarter
        ops::Rope rope;
        rope.inv_freq = 1.0 / at::pow(10000.0, at::arange(0, R, 2, at::kFloat) / static_cast<double>(R));
        for (auto dtype : {at::kBFloat16, at::kFloat}) {
            auto [cos, sin] = ops::rope_cos_sin(rope, T, dtype, at::Device(at::kCUDA));
            REQUIRE(cos.size(-1) == R);
            at::manual_seed(6);
            // Heads 2D apart, as in Qwen3-Next's [query | gate] projection; the gate half is noise.
            at::Tensor qg = at::randn({B, T, Nh * 2 * D}, on_gpu(dtype)) * 2;
            at::Tensor w = at::randn({D}, on_gpu(dtype)) * 0.3;
            CAPTURE(R);
            CAPTURE(dtype);
            for (int zero_centred = 0; zero_centred < 2; ++zero_centred) {
                for (auto mode : {QkNorm::None, QkNorm::PerHead}) {
                    if (zero_centred && mode != QkNorm::PerHead) continue;
                    auto reference = [&] {
                        at::Tensor q = qg.view({B, T, Nh, 2 * D}).narrow(-1, 0, D);
                        if (mode == QkNorm::PerHead) q = zero_centred ? ops::rms_norm_zero_centred(q, w, 1e-6) : ops::rms_norm(q, w, 1e-6);
                        return ops::apply_rope(q.transpose(1, 2), cos, sin);
                    };
                    at::Tensor ref = with_fused(false, reference);
                    at::Tensor got = fused::qk_norm_rope(qg, Nh, D, mode, w, 1e-6, std::nullopt, cos, sin, 2 * D, zero_centred != 0);
                    CAPTURE(zero_centred);
                    CAPTURE(static_cast<int>(mode));
                    REQUIRE(got.sizes().equals(ref.sizes()));
                    const auto g = agreement(got.contiguous(), ref.contiguous());
                    if (mode == QkNorm::None) CHECK(g.differing == 0);
                    check_agreement(g, dtype, 4);
                }
            }
            // Packed heads with partial rotary: GLM-4.5-Air's attention block, fused against ATen.
            at::Tensor x = at::randn({B, T, Nh * D}, on_gpu(dtype));
            at::Tensor ref = with_fused(false, [&] { return ops::apply_rope(x.view({B, T, Nh, D}).transpose(1, 2), cos, sin); });
            at::Tensor got = fused::qk_norm_rope(x, Nh, D, QkNorm::None, {}, 1e-6, std::nullopt, cos, sin);
            CHECK(agreement(got.contiguous(), ref.contiguous()).differing == 0);
        }
    }
}

TEST_CASE("grouped-query SDPA without repeated k/v equals SDPA on repeated k/v") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    at::manual_seed(7);
    const int64_t B = 2, Nq = 12, Nkv = 2, T = 96, D = 128;
    at::Tensor q = at::randn({B, Nq, T, D}, on_gpu(at::kBFloat16));
    at::Tensor k = at::randn({B, Nkv, T, D}, on_gpu(at::kBFloat16));
    at::Tensor v = at::randn({B, Nkv, T, D}, on_gpu(at::kBFloat16));
    at::Tensor got = extractor::compat::sdpa_gqa(q, k, v, {});
    if (!got.defined()) {
        MESSAGE("this libtorch has no enable_gqa (or EXTRACTOR_SDPA_GQA=0)");
        return;
    }
    at::Tensor ref = extractor::compat::sdpa(q, ops::repeat_kv(k, Nq / Nkv), ops::repeat_kv(v, Nq / Nkv), {});
    const double rel = (got.to(at::kFloat) - ref.to(at::kFloat)).abs().max().item<double>() / ref.to(at::kFloat).abs().max().item<double>();
    CHECK(rel < 1e-2);
    // Sliding-window mask, the other call form.
    at::Tensor mask = ops::causal_mask(T, 16, q.device());
    got = extractor::compat::sdpa_gqa(q, k, v, mask);
    ref = extractor::compat::sdpa(q, ops::repeat_kv(k, Nq / Nkv), ops::repeat_kv(v, Nq / Nkv), mask);
    CHECK((got.to(at::kFloat) - ref.to(at::kFloat)).abs().max().item<double>() / ref.to(at::kFloat).abs().max().item<double>() < 1e-2);
}

TEST_CASE("fused DeltaNet q/k repeat + L2 norm equals repeat_interleave then l2_normalize of the fp32 copy") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    for (auto dtype : {at::kBFloat16, at::kFloat}) {
        for (int64_t rep : {1, 2, 3}) {
            at::manual_seed(8);
            // Key heads as a view into a wider [B,T,C] row, as gated_delta_net narrows the conv output.
            const int64_t B = 2, T = 19, Nk = 4, D = 128;
            at::Tensor mixed = at::randn({B, T, 3 * Nk * D + 64}, on_gpu(dtype));
            at::Tensor x = mixed.narrow(-1, Nk * D, Nk * D).view({B, T, Nk, D});
            at::Tensor ref = ops::l2_normalize(x.repeat_interleave(rep, 2).to(at::kFloat));
            at::Tensor got = fused::l2norm_repeat(x, rep, 1e-6);
            CAPTURE(dtype);
            CAPTURE(rep);
            REQUIRE(got.sizes().equals(ref.sizes()));
            CHECK(agreement(got, ref).scaled <= 4 * ulp(at::kFloat));
            // Heads further apart than D (a head stride the kernel must use, not assume).
            at::Tensor padded = at::randn({B, T, Nk, D + 8}, on_gpu(dtype)).narrow(-1, 4, D);
            ref = ops::l2_normalize(padded.repeat_interleave(rep, 2).to(at::kFloat));
            CHECK(agreement(fused::l2norm_repeat(padded, rep, 1e-6), ref).scaled <= 4 * ulp(at::kFloat));
        }
    }
}

TEST_CASE("Qwen3-Next's linear and gated attention and GLM's partial-rotary attention: fused path equals the ATen path") {
    if (!have_gpu()) {
        MESSAGE("no CUDA device or kernels not built");
        return;
    }
    const auto bf = at::kBFloat16;
    const int64_t B = 2, T = 70, H = 256;  // T not a whole number of 64-token chunks
    at::manual_seed(9);
    auto rn = [&](std::vector<int64_t> shape, double scale) { return at::randn(shape, on_gpu(bf)) * scale; };
    at::Tensor a = rn({B, T, H}, 1.0);
    auto rel = [](const at::Tensor & x, const at::Tensor & y) {
        return (x.to(at::kFloat) - y.to(at::kFloat)).norm().item<double>() / y.to(at::kFloat).norm().item<double>();
    };
    SUBCASE("gated DeltaNet: conv + SiLU, q/k repeat + L2 norm, chunk-major rule, gated norm") {
        ops::DeltaNetOptions opt;
        opt.n_k_heads = 2;
        opt.n_v_heads = 4;
        opt.k_head_dim = 32;
        opt.v_head_dim = 48;
        const int64_t Nk = 2, Nv = 4, Dk = 32, Dv = 48, C = 2 * Nk * Dk + Nv * Dv;
        ops::DeltaNetWeights w{rn({2 * Nk * Dk + 2 * Nv * Dv, H}, 0.06), rn({2 * Nv, H}, 0.06), rn({C, 1, 4}, 0.4),
                               rn({Nv}, 0.5), at::rand({Nv}, on_gpu(bf)), rn({Dv}, 0.3) + 1.0, rn({H, Nv * Dv}, 0.05)};
        at::Tensor ref = with_fused(false, [&] { return ops::gated_delta_net(a, w, opt); });
        at::Tensor got = with_fused(true, [&] { return ops::gated_delta_net(a, w, opt); });
        CHECK(rel(got, ref) < 1e-2);
    }
    SUBCASE("gated attention: zero-centred q/k norm on the [query | gate] projection, quarter rotary, GQA") {
        ops::AttnOptions opt;
        opt.n_heads = 4;
        opt.n_kv_heads = 1;
        opt.head_dim = 64;
        opt.qk_norm = QkNorm::PerHead;
        ops::AttnWeights w{{rn({4 * 2 * 64, H}, 0.05), {}}, {rn({64, H}, 0.05), {}}, {rn({64, H}, 0.05), {}},
                           {rn({H, 4 * 64}, 0.05), {}}, rn({64}, 0.3), rn({64}, 0.3), {}};
        ops::Rope rope;
        rope.inv_freq = 1.0 / at::pow(10000.0, at::arange(0, 16, 2, at::kFloat) / 16.0);
        auto [cos, sin] = ops::rope_cos_sin(rope, T, bf, at::Device(at::kCUDA));
        at::Tensor ref = with_fused(false, [&] { return ops::gated_attention(a, w, opt, cos, sin); });
        at::Tensor got = with_fused(true, [&] { return ops::gated_attention(a, w, opt, cos, sin); });
        CHECK(rel(got, ref) < 1e-2);
    }
    SUBCASE("GLM-style attention: q/k/v biases, half rotary, 6 query heads a kv head") {
        ops::AttnOptions opt;
        opt.n_heads = 12;
        opt.n_kv_heads = 2;
        opt.head_dim = 64;
        ops::AttnWeights w{{rn({12 * 64, H}, 0.05), rn({12 * 64}, 0.1)}, {rn({2 * 64, H}, 0.05), rn({2 * 64}, 0.1)},
                           {rn({2 * 64, H}, 0.05), rn({2 * 64}, 0.1)}, {rn({H, 12 * 64}, 0.05), {}}, {}, {}, {}};
        ops::Rope rope;
        rope.inv_freq = 1.0 / at::pow(10000.0, at::arange(0, 32, 2, at::kFloat) / 32.0);
        auto [cos, sin] = ops::rope_cos_sin(rope, T, bf, at::Device(at::kCUDA));
        at::Tensor ref = with_fused(false, [&] { return ops::attention(a, w, opt, cos, sin); });
        at::Tensor got = with_fused(true, [&] { return ops::attention(a, w, opt, cos, sin); });
        CHECK(rel(got, ref) < 1e-2);
    }
}
