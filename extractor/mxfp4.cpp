// MXFP4 decode and encode (mxfp4.h). Shape letters: ops.h; G = blocks per row. On CUDA the decode
// is one fused kernel (cuda/kernels.cu); the ATen path here is what it is checked against
// (tests/gpu) and what runs on the CPU or with EXTRACTOR_FUSED=0.
#include "extractor/mxfp4.h"

#include <ATen/ATen.h>

#include <array>

#include "common/error.h"
#include "extractor/cuda/fused_ops.h"
#include "extractor/ops.h"
#include "extractor/shape_text.h"

namespace extractor::mxfp4 {

namespace {

constexpr std::array<float, 8> kMagnitudes = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

// [256,2] fp32: for byte b, the values of its low and its high nibble, in that (column) order.
at::Tensor pair_table() {
    static const at::Tensor table = [] {
        at::Tensor t = at::empty({256, 2}, at::kFloat);
        float * p = t.data_ptr<float>();
        for (int b = 0; b < 256; ++b) {
            p[2 * b] = e2m1_value(b & 0x0F);
            p[2 * b + 1] = e2m1_value(b >> 4);
        }
        return t;
    }();
    return table;
}

// 2^(s - 127) for every scale byte, as fp32 [...]: the byte is the fp32 exponent field, so the
// bit pattern s << 23 is that power of two exactly (255 gives inf); s = 0 is the subnormal 2^-127.
at::Tensor scale_values(const at::Tensor & scales) {
    at::Tensor bits = scales.to(at::kInt).bitwise_left_shift(23);                       // [...] int32
    at::Tensor pow2 = bits.view(at::kFloat);                                             // [...] fp32
    return at::where(scales == 0, at::full({}, 0x1p-127f, pow2.options()), pow2);
}

}  // namespace

float e2m1_value(int code) {
    const float mag = kMagnitudes[static_cast<size_t>(code & 7)];
    return (code & 8) ? -mag : mag;
}

void check_packed(const at::Tensor & blocks, const at::Tensor & scales, const std::string & what) {
    auto bad = [&](const std::string & why) {
        return common::Error::usage(what + ": MXFP4 blocks " + shape_text(blocks.sizes()) + " / scales " +
                                    shape_text(scales.sizes()) + ": " + why);
    };
    if (!blocks.defined() || !scales.defined()) throw bad("blocks or scales missing");
    if (blocks.scalar_type() != at::kByte) throw bad("blocks must be uint8, got " + std::string(c10::toString(blocks.scalar_type())));
    if (scales.scalar_type() != at::kByte) throw bad("scales must be uint8, got " + std::string(c10::toString(scales.scalar_type())));
    if (blocks.dim() < 2 || blocks.size(-1) != kBlockBytes) throw bad("blocks' last dimension must be 16 bytes (32 values)");
    if (scales.dim() != blocks.dim() - 1 || scales.sizes() != blocks.sizes().slice(0, blocks.dim() - 1))
        throw bad("scales must have the blocks' shape without its last dimension");
    if (blocks.device() != scales.device()) throw bad("blocks and scales are on different devices");
}

void dequantize_into(const at::Tensor & blocks, const at::Tensor & scales, at::Tensor & out) {
    ops::ProfileScope profile("mxfp4_dequantize");
    check_packed(blocks, scales, "dequantize");
    const at::ScalarType dtype = out.scalar_type();
    if (dtype != at::kBFloat16 && dtype != at::kHalf && dtype != at::kFloat)
        throw common::Error::internal("MXFP4 dequantize into " + std::string(c10::toString(dtype)));
    std::vector<int64_t> want(blocks.sizes().begin(), blocks.sizes().end() - 2);
    want.push_back(blocks.size(-2) * kBlock);
    if (out.sizes() != at::IntArrayRef(want) || !out.is_contiguous() || out.device() != blocks.device())
        throw common::Error::internal("MXFP4 dequantize: output " + shape_text(out.sizes()) + " does not fit blocks " +
                                      shape_text(blocks.sizes()));
    if (fused::usable(out) && blocks.is_contiguous() && scales.is_contiguous() && fused::mxfp4_aligned(blocks, out)) {
        fused::mxfp4_dequantize(blocks, scales, out);  // one pass; the ATen path below is its reference
        return;
    }
    // bf16 has fp32's exponent range, so the product of a bf16 pair value and a bf16 power of two
    // is the exact fp32 product rounded once, as transformers gets it; f16 is computed in fp32 and
    // rounded once (its range is narrower than the scales').
    const at::ScalarType compute = dtype == at::kBFloat16 ? at::kBFloat16 : at::kFloat;
    at::Tensor table = pair_table().to(blocks.device()).to(compute);                       // [256,2]
    at::Tensor idx = blocks.reshape({-1}).to(at::kInt);                                     // [n] n = all bytes
    std::vector<int64_t> grouped(scales.sizes().begin(), scales.sizes().end());
    grouped.push_back(kBlock);
    at::Tensor values = table.index_select(0, idx).view(grouped);                           // [...,G,32]
    at::Tensor scale = scale_values(scales).to(compute).unsqueeze(-1);                      // [...,G,1]
    at::Tensor out_grouped = out.view(grouped);                                             // [...,G,32]
    if (compute == dtype) at::mul_out(out_grouped, values, scale);
    else out_grouped.copy_(values * scale);
}

at::Tensor dequantize(const at::Tensor & blocks, const at::Tensor & scales, at::ScalarType dtype) {
    check_packed(blocks, scales, "dequantize");
    std::vector<int64_t> shape(blocks.sizes().begin(), blocks.sizes().end() - 2);
    shape.push_back(blocks.size(-2) * kBlock);
    at::Tensor out = at::empty(shape, blocks.options().dtype(dtype));
    dequantize_into(blocks, scales, out);
    return out;
}

std::pair<at::Tensor, at::Tensor> quantize(const at::Tensor & w) {
    if (w.dim() < 1 || w.size(-1) % kBlock != 0)
        throw common::Error::usage("MXFP4 quantize: last dimension " + std::to_string(w.dim() ? w.size(-1) : 0) +
                                   " is not a multiple of 32");
    std::vector<int64_t> grouped(w.sizes().begin(), w.sizes().end() - 1);
    const int64_t G = w.size(-1) / kBlock;
    grouped.push_back(G);
    grouped.push_back(kBlock);
    at::Tensor x = w.to(at::kFloat).reshape(grouped);                                       // [...,G,32]
    at::Tensor amax = x.abs().amax(-1);                                                     // [...,G]
    at::Tensor e = (at::floor(at::log2(amax)) - 2).nan_to_num(-127, -127, 127).clamp(-127, 127);  // [...,G]
    e = at::where(amax == 0, at::full({}, -127.0f, e.options()), e);
    at::Tensor scaled = x * at::exp2(-e).unsqueeze(-1);                                     // [...,G,32]
    at::Tensor mags = at::tensor(std::vector<float>(kMagnitudes.begin(), kMagnitudes.end()));  // [8]
    at::Tensor dist = (scaled.abs().clamp_max(6.0).unsqueeze(-1) - mags).abs();            // [...,G,32,8]
    at::Tensor code = std::get<1>(dist.min(-1)).to(at::kInt);                               // [...,G,32] first nearest
    code = code + at::where(scaled < 0, 8, 0).to(at::kInt);
    at::Tensor lo = code.slice(-1, 0, kBlock, 2), hi = code.slice(-1, 1, kBlock, 2);        // [...,G,16]
    at::Tensor blocks = (lo + hi * 16).to(at::kByte).contiguous();                          // [...,G,16]
    at::Tensor scales = (e + kScaleBias).to(at::kByte).contiguous();                        // [...,G]
    return {blocks, scales};
}

}  // namespace extractor::mxfp4
