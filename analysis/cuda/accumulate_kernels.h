// Launcher for the outlier accumulator's fused capture pass (accumulate_kernels.cu). Raw pointers
// and a stream only: no torch header reaches nvcc. The caller (accumulators.cpp) checks shapes,
// dtypes and devices and owns every buffer; the launcher trusts its arguments and returns the
// launch's cudaError_t. Shape letters as in accumulators.h: B rows, T positions, H hidden dims.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace analysis::cuda_kernels {

enum class DType { F32, F16, BF16 };

// Most histogram bins the kernel keeps in shared memory (one sub-histogram per warp).
inline constexpr int kMaxHistogramBins = 1024;
// Most sweep thresholds (analysis::kMaxSweepThresholds; this header stays torch- and analysis-free).
inline constexpr int kMaxSweepThresholds = 16;

struct CaptureArgs {
    const void * x = nullptr;    // [B,T,H] contiguous, x_dtype
    DType x_dtype = DType::BF16;
    bool round_bf16 = true;      // values are x rounded to bf16 (else x itself)
    const uint8_t * pad = nullptr;  // [B,T] 1 = padding (counts as |v| = 0), or null: no padding
    int64_t B = 0, T = 0, H = 0;
    float threshold = 0;         // already rounded to the values' dtype: hit = |v| >= threshold
    // Histogram (bins <= kMaxHistogramBins): bin = clamp(int16(bf16 bits of |v|) >> 5 - base, 0, bins-1)
    // in int16 arithmetic, as the ATen path computes it. histogram null: none.
    int16_t histogram_base = 0;
    int bins = 0;
    unsigned long long * histogram = nullptr;  // [bins] += counts (an int64 tensor)

    uint8_t * pos_any = nullptr;       // [B,T,H] set to 1 where |v| >= threshold (never cleared here)
    int32_t * scratch_hits = nullptr;  // [B,H] zero on entry, zero again on return
    uint32_t * scratch_max = nullptr;  // [B,H] zero on entry, zero again on return

    // Per-batch state, updated from this capture's per-(b,h) hit count n and max |v| m:
    int32_t * row_sites = nullptr;          // [B,H] += n > 0
    int64_t * row_hits = nullptr;           // [B,H] += n
    float * row_max = nullptr;              // [B,H] = max(row_max, m)
    uint8_t * row_layer_any = nullptr;      // [B,H] |= n > 0 (a bool tensor)
    // Per-site totals:
    unsigned long long * site_hits = nullptr;  // [H] += sum_b n (an int64 tensor)
    float * site_max_abs = nullptr;            // [H] = max(site_max_abs, max_b m)
    // [1] += the capture's non-finite |v| (NaN, +-inf) at real positions (an int64 tensor), or null.
    // Counted on the same |v| as everything else (after the bf16 rounding when round_bf16), so it
    // equals the ATen path's isfinite count.
    unsigned long long * site_nonfinite = nullptr;

    // Threshold sweep (sweep_k > 0): thresholds ascending, each already rounded like `threshold`.
    // A value's level is the number of them it reaches; per (b,h) this capture's max level L.
    // Per position the thresholds reached form a prefix, kept as a thermometer code (bit k set:
    // some site reaches threshold k), so the max over sites is an OR: (1 << level) - 1 is OR-ed in
    // where level > 0, in pos_level_bytes per element (1 for K <= 8, 2 for K <= 16), by 32-bit
    // atomics: the buffer's allocation must be a multiple of 4 bytes.
    int sweep_k = 0;
    float sweep_thresholds[kMaxSweepThresholds] = {};
    void * pos_level = nullptr;           // [B,T,H] thermometer codes, pos_level_bytes each
    int pos_level_bytes = 1;
    int32_t * scratch_level = nullptr;    // [B,H] zero on entry, zero again on return
    int32_t * row_sweep_sites = nullptr;  // [K,B,H] += 1 for k < L
    uint8_t * row_layer_level = nullptr;  // [B,H] = max(row_layer_level, L)
    int32_t * site_level = nullptr;       // [H] = max(site_level, max_b L)
};

// One read of x: per-(b,h) hit counts and maxima, the histogram and the position flags, then a
// pass over [B,H] that folds them into the per-batch and per-site state. Maxima compare the
// float's bits (all values are >= 0), so a NaN propagates as at::maximum does. Every result is an
// integer count or a maximum: the same whatever order blocks run in.
cudaError_t accumulate_capture(const CaptureArgs & args, cudaStream_t stream);

// The threshold sweep's per-(row, dim) position counts at the end of a batch: positions[k,b,h]
// (int32 [K,B,H], zero on entry: counts are added) = how many positions t have bit k set in
// pos_level[b,t,h] (CaptureArgs::pos_level's codes, pos_level_bytes each), K <= 16; one read of
// pos_level [B,T,H] instead of K compare-and-sum passes.
cudaError_t sweep_positions(const void * pos_level, int pos_level_bytes, int64_t B, int64_t T, int64_t H, int K,
                            int32_t * positions, cudaStream_t stream);

// Most experts a layer may have for the per-expert pass (its per-block tallies live in shared memory).
inline constexpr int kMaxExperts = 2048;

// Per-expert statistics of one MoE layer's routed down_proj outputs (`--expert-stats`).
struct ExpertArgs {
    const void * down = nullptr;  // [rows,H] contiguous, down_dtype: each routed pair's down_proj output
    DType down_dtype = DType::BF16;
    bool round_bf16 = true;       // a row's max |v| is rounded to bf16 (monotone: the max of rounded values)
    int64_t H = 0;
    int64_t S = 0;                // slots: n tokens x K
    int K = 0;
    int E = 0;                    // experts, <= kMaxExperts
    const float * slot_max = nullptr; // [S] each slot's max |v| already computed (the fused MoE combine
                                      // does): then down and slot_row are not read
    const void * slot_row = nullptr;  // [S] the row of `down` holding slot s = token*K + k
    bool slot_row_int64 = false;      // int64 (else int32)
    const int64_t * expert = nullptr; // [S] the expert of slot s (the router's top-k, row-major)
    const uint8_t * real = nullptr;   // [n] 1 = a real token (slot s is token s / K), or null: all real
    float threshold = 0;              // rounded as CaptureArgs::threshold: hit = max |v| >= threshold
    unsigned long long * tokens = nullptr;      // [E] += real slots routed to the expert (an int64 tensor)
    unsigned long long * hit_tokens = nullptr;  // [E] += real slots whose row reaches the threshold
    float * max_abs = nullptr;                  // [E] = max(max_abs, max |v| of its real slots' rows)
};

// One read of each real slot's row: its max |v| and hit, tallied per expert in shared memory and
// added into the [E] totals (counts and maxima only, so the result does not depend on block order;
// maxima compare float bits, so a NaN propagates as amax does). Slots whose expert is outside
// [0,E) are skipped (the caller checks the router's indices).
cudaError_t accumulate_experts(const ExpertArgs & args, cudaStream_t stream);

}  // namespace analysis::cuda_kernels
