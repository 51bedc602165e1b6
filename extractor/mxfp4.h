// MXFP4 weights (OCP microscaling, FP4 elements), as the released gpt-oss checkpoints store their
// expert matrices: for a logical weight [..., R, C] (C a multiple of 32), `X_blocks` is uint8
// [..., R, C/32, 16] and `X_scales` is uint8 [..., R, C/32].
//
//   - each byte holds two 4-bit e2m1 codes: the low nibble is the element at the even column, the
//     high nibble the one after it;
//   - an e2m1 code is sign (bit 3), 2 exponent bits and 1 mantissa bit; its magnitudes are
//     0, 0.5, 1, 1.5, 2, 3, 4, 6 (codes 0-7), codes 8-15 are the same values negated;
//   - each run of 32 elements (16 bytes) shares one e8m0 scale byte s: the block's values are
//     multiplied by 2^(s - 127). (The OCP format reserves s = 255 for NaN; transformers computes
//     2^128 = inf for it, and so do we, so both load the same numbers.)
//
// The packed form is what lives in memory (4.25 bits per weight); the expert path dequantizes one
// chunk of experts at a time into a reusable buffer (ops::moe_clamped_swiglu). Decoding uses ATen
// ops only, so it runs on the CPU and on CUDA alike.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>

namespace extractor::mxfp4 {

constexpr int64_t kBlock = 32;         // elements per scale
constexpr int64_t kBlockBytes = 16;    // bytes per block (two elements a byte)
constexpr int kScaleBias = 127;

// The value of e2m1 code c (0-15), for brute-force references in tests.
float e2m1_value(int code);

// Throws common::Error(usage) naming `what` (file: tensor) unless blocks is uint8 [..., G, 16] and
// scales uint8 [..., G] with the same leading dims, on the same device.
void check_packed(const at::Tensor & blocks, const at::Tensor & scales, const std::string & what);

// blocks [..., G, 16] u8, scales [..., G] u8 -> [..., G*32] in dtype (bf16, f16 or f32), on their
// device. Values are exact where dtype can hold them (e2m1 x a power of two needs 3 significant
// bits); bf16 and f32 round only in the subnormal range, f16 overflows to inf past 65504.
at::Tensor dequantize(const at::Tensor & blocks, const at::Tensor & scales, at::ScalarType dtype);

// Same, written into out ([..., G*32], contiguous, dtype bf16/f16/f32): the reusable-buffer form.
void dequantize_into(const at::Tensor & blocks, const at::Tensor & scales, at::Tensor & out);

// Round-to-nearest quantization of w [..., C] (C a multiple of 32, float) to (blocks, scales):
// per block, scale exponent floor(log2(max|x|)) - 2 (so the largest magnitude lands in [4, 8) and
// is clipped to 6), clamped to the e8m0 range; each element to the nearest e2m1 value. Used by the
// fixture writer and the tests; the parity script does the same in Python.
std::pair<at::Tensor, at::Tensor> quantize(const at::Tensor & w);

}  // namespace extractor::mxfp4
