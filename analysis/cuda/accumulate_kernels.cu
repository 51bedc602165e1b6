// The outlier accumulator's fused capture pass (see accumulate_kernels.h). It replaces a dozen ATen
// passes over the capture (abs, masked_fill, amax, ge, sum, the histogram's bit tricks and histc,
// the position counter's add) with one read of x and a pass over [B,H]:
//
//   capture_kernel  grid (H / (32*VEC), T / (8*R), B), 8 warps per block. A block owns one row b, 8*R
//                   positions (R per warp, chosen so that the grid is about one wave of resident
//                   blocks) and 32*VEC dims; each lane owns VEC adjacent dims (one 16-byte load per
//                   position) and each warp every 8th position, so a lane keeps its dims' hit counts
//                   and maxima in registers. Histogram counts go to one shared sub-histogram per warp
//                   (magnitudes crowd into ~10 bins, and a warp only collides with itself). At the end
//                   the warps combine in shared memory and the block adds its columns into [B,H]
//                   scratch and its bins into the site histogram with global atomics. (Per-thread
//                   byte counters, conflict-free but 256 bytes a bin to zero and sum, measured slower
//                   on an H100: 43.6 against 35.7 µs per [4,2048,2048] bf16 capture.)
//   fold_kernel     one thread per (b,h): scratch -> row_sites/row_hits/row_max/row_layer_any and the
//                   site's hits/max_abs, and scratch back to zero for the next capture.
//
// Memory-bound: x is read once (B*T*H elements); position flags are written only where a value
// hits (rare); everything else is [B,H]- or [bins]-sized.
#include "analysis/cuda/accumulate_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

namespace analysis::cuda_kernels {
namespace {

constexpr int kWarps = 8;                               // per block, each on its own positions
constexpr int kUnroll = 4;                              // loads in flight per lane
constexpr int kThreads = kWarps * 32;

// N elements of T moved as one aligned load.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
    T v[N];
};

// |v| of one element: its float value and the bf16 bit pattern the histogram bins it by.
struct Magnitude {
    float value;
    uint16_t bf16_bits;
};

__device__ __forceinline__ uint16_t bf16_bits_of(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }

// |v| from v's bf16 bits: clearing the sign bit is abs (a NaN stays a NaN, now positive).
__device__ __forceinline__ Magnitude from_bf16_bits(uint16_t bits) {
    bits &= 0x7fffu;
    return {__uint_as_float(static_cast<uint32_t>(bits) << 16), bits};
}

// ROUND: v = x rounded to bf16 (round to nearest even, as torch's .to(bf16)); else v = x.
template <bool ROUND>
__device__ __forceinline__ Magnitude magnitude(__nv_bfloat16 x) {
    return from_bf16_bits(__bfloat16_as_ushort(x));
}
template <bool ROUND>
__device__ __forceinline__ Magnitude magnitude(float x) {
    if constexpr (ROUND) return from_bf16_bits(bf16_bits_of(x));
    const float a = __uint_as_float(__float_as_uint(x) & 0x7fffffffu);
    return {a, bf16_bits_of(a)};
}
template <bool ROUND>
__device__ __forceinline__ Magnitude magnitude(__half x) {
    if constexpr (ROUND) return from_bf16_bits(bf16_bits_of(__half2float(x)));
    const float a = __half2float(__ushort_as_half(static_cast<unsigned short>(__half_as_ushort(x) & 0x7fffu)));
    return {a, bf16_bits_of(a)};
}

// At most 80 registers, so 3 blocks fit per SM rather than the 2 that the unbounded 100 would allow:
// more loads in flight for a memory-bound pass (no spills on sm_90).
template <typename TIn, bool ROUND, int VEC, bool HIST, bool SWEEP>
__global__ void __launch_bounds__(kThreads, 3) capture_kernel(const CaptureArgs a, int rows_per_warp) {
    constexpr int kCols = 32 * VEC;
    // [kWarps][bins] sub-histograms (HIST only), then per column: hits, max bits, max sweep level
    // (SWEEP only). Column lane*VEC + j lives at j*32 + lane, so a warp's updates of one j touch
    // 32 distinct banks.
    extern __shared__ uint32_t shared[];
    const int hist_words = HIST ? kWarps * a.bins : 0;
    uint32_t * col_hits = shared + hist_words;
    uint32_t * col_max = col_hits + kCols;
    uint32_t * col_level = col_max + kCols;
    // The sweep's thresholds in shared memory: indexing the by-value argument with a run-time level
    // would make every thread copy the whole argument struct to local memory.
    __shared__ float sweep_thresholds[kMaxSweepThresholds];
    for (int i = threadIdx.x; i < hist_words + (SWEEP ? 3 : 2) * kCols; i += blockDim.x) shared[i] = 0;
    if constexpr (SWEEP)
        if (threadIdx.x < kMaxSweepThresholds) sweep_thresholds[threadIdx.x] = a.sweep_thresholds[threadIdx.x];
    __syncthreads();
    // In a register: the loop's stores through generic pointers could alias shared memory, so a
    // shared read in the loop would be repeated for every value.
    const float first_sweep_threshold = SWEEP ? sweep_thresholds[0] : 0.f;

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t T = a.T, H = a.H;
    const int64_t b = blockIdx.z;
    const int64_t h0 = static_cast<int64_t>(blockIdx.x) * kCols;
    const int64_t h = h0 + lane * VEC;              // this lane's first dim (H % VEC == 0)
    const int64_t first = static_cast<int64_t>(blockIdx.y) * kWarps * rows_per_warp + warp;  // this warp's first position
    const auto * __restrict__ x = static_cast<const TIn *>(a.x);
    uint32_t * my_hist = shared + (HIST ? warp * a.bins : 0);
    const int16_t base = a.histogram_base;
    const int last_bin = a.bins - 1;

    int32_t hits[VEC] = {};
    uint32_t max_bits[VEC] = {};  // floats >= 0 compare as their bits
    // SWEEP: this lane's max level per dim, one byte each (levels are <= 16), four to a register.
    uint32_t levels[(VEC + 3) / 4] = {};
    uint32_t nonfinite = 0;  // this lane's |v| that are NaN or inf (bits at or above inf's; rare)
    if (h < H && first < T) {
        const int n = static_cast<int>(min(static_cast<int64_t>(rows_per_warp), (T - first + kWarps - 1) / kWarps));
        for (int i0 = 0; i0 < n; i0 += kUnroll) {
            // Issue the group's loads before using any of them: kUnroll 16-byte loads in flight.
            Pack<TIn, VEC> v[kUnroll];
            bool padded[kUnroll];
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                const int64_t t = first + static_cast<int64_t>(i0 + u) * kWarps;
                padded[u] = i0 + u < n && a.pad != nullptr && a.pad[b * T + t] != 0;
                if (i0 + u < n && !padded[u])
                    v[u] = *reinterpret_cast<const Pack<TIn, VEC> *>(x + (b * T + t) * H + h);
            }
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                if (i0 + u >= n) break;
                const int64_t row = (b * T + first + static_cast<int64_t>(i0 + u) * kWarps) * H;
#pragma unroll
                for (int j = 0; j < VEC; ++j) {
                    // Padded positions count as |v| = 0, as the ATen path's masked_fill.
                    const Magnitude m = padded[u] ? Magnitude{0.f, 0} : magnitude<ROUND>(v[u].v[j]);
                    if (m.value >= a.threshold) {
                        ++hits[j];
                        a.pos_any[row + h + j] = 1;
                    }
                    max_bits[j] = max(max_bits[j], __float_as_uint(m.value));
                    nonfinite += __float_as_uint(m.value) >= 0x7f800000u;  // |v| >= 0: inf and every NaN
                    if constexpr (SWEEP) {
                        // Thresholds ascend, so the level is the count of the leading ones reached
                        // (a NaN reaches none, as it never hits). Most values reach none.
                        if (m.value >= first_sweep_threshold) {
                            uint32_t level = 1;
                            while (level < static_cast<uint32_t>(a.sweep_k) && m.value >= sweep_thresholds[level]) ++level;
                            // OR the thermometer code into the element's 32-bit word. An atomic whose
                            // result is unused is fire-and-forget; reading the old level to take a max
                            // was a dependent load that stalled the warp for its round trip.
                            const auto off = static_cast<uint64_t>(row + h + j) * static_cast<uint64_t>(a.pos_level_bytes);
                            atomicOr(reinterpret_cast<unsigned int *>(static_cast<char *>(a.pos_level) + (off & ~uint64_t{3})),
                                     ((1u << level) - 1u) << (8 * (off & 3)));
                            const int shift = 8 * (j % 4);  // j is unrolled: a constant
                            if (level > ((levels[j / 4] >> shift) & 0xffu))
                                levels[j / 4] = (levels[j / 4] & ~(0xffu << shift)) | (level << shift);
                        }
                    }
                    if constexpr (HIST) {
                        // int16 arithmetic as the ATen path's int16 tensor ops: (bits >> 5) - base, clamped.
                        const auto shifted = static_cast<int16_t>(static_cast<int16_t>(m.bf16_bits) >> 5);
                        const int bin = min(max(static_cast<int>(static_cast<int16_t>(shifted - base)), 0), last_bin);
                        atomicAdd(&my_hist[bin], 1u);
                    }
                }
            }
        }
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
            if (hits[j] != 0) atomicAdd(&col_hits[j * 32 + lane], static_cast<uint32_t>(hits[j]));
            if (max_bits[j] != 0) atomicMax(&col_max[j * 32 + lane], max_bits[j]);
            if constexpr (SWEEP) {
                const uint32_t level = (levels[j / 4] >> (8 * (j % 4))) & 0xffu;
                if (level != 0) atomicMax(&col_level[j * 32 + lane], level);
            }
        }
        if (nonfinite != 0 && a.site_nonfinite != nullptr) atomicAdd(a.site_nonfinite, static_cast<unsigned long long>(nonfinite));
    }
    __syncthreads();

    for (int c = threadIdx.x; c < kCols && h0 + c < H; c += blockDim.x) {
        const int slot = (c % VEC) * 32 + c / VEC;
        const int64_t i = b * H + h0 + c;
        if (col_hits[slot] != 0) atomicAdd(&a.scratch_hits[i], static_cast<int32_t>(col_hits[slot]));
        if (col_max[slot] != 0) atomicMax(&a.scratch_max[i], col_max[slot]);
        if constexpr (SWEEP)
            if (col_level[slot] != 0) atomicMax(&a.scratch_level[i], static_cast<int32_t>(col_level[slot]));
    }
    if constexpr (HIST) {
        for (int bin = threadIdx.x; bin < a.bins; bin += blockDim.x) {
            unsigned long long count = 0;
            for (int w = 0; w < kWarps; ++w) count += shared[w * a.bins + bin];
            if (count != 0) atomicAdd(&a.histogram[bin], count);
        }
    }
}

__global__ void fold_kernel(const CaptureArgs a) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= a.B * a.H) return;
    const int64_t h = i % a.H;
    const int32_t n = a.scratch_hits[i];
    const uint32_t m = a.scratch_max[i];
    a.scratch_hits[i] = 0;
    a.scratch_max[i] = 0;
    if (n > 0) {
        a.row_sites[i] += 1;
        a.row_hits[i] += n;
        a.row_layer_any[i] = 1;
        atomicAdd(&a.site_hits[h], static_cast<unsigned long long>(n));
    }
    auto * row_max = reinterpret_cast<uint32_t *>(a.row_max);
    if (m > row_max[i]) row_max[i] = m;
    if (m != 0) atomicMax(reinterpret_cast<unsigned int *>(a.site_max_abs) + h, m);
    if (a.sweep_k > 0) {
        const int32_t level = a.scratch_level[i];
        a.scratch_level[i] = 0;
        if (level > 0) {
            for (int k = 0; k < level; ++k) a.row_sweep_sites[k * a.B * a.H + i] += 1;
            if (level > a.row_layer_level[i]) a.row_layer_level[i] = static_cast<uint8_t>(level);
            atomicMax(&a.site_level[h], level);
        }
    }
}

// Blocks of `kernel` resident on the current device at once (SMs x blocks per SM), cached for the
// last kernel and shared size asked (a capture's launches repeat the same one).
int resident_blocks(const void * kernel, size_t shared) {
    thread_local struct {
        const void * kernel = nullptr;
        size_t shared = 0;
        int device = -1, blocks = 0;
    } cache;
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return 0;
    if (cache.kernel == kernel && cache.shared == shared && cache.device == device) return cache.blocks;
    int sms = 0, per_sm = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, shared) != cudaSuccess) {
        (void)cudaGetLastError();  // a failed query is not the launch's error: fall back to a fixed split
        return 0;
    }
    cache = {kernel, shared, device, sms * per_sm};
    return cache.blocks;
}

// Positions per warp such that the grid is about one full wave of resident blocks. A fixed 16 made
// a [4,2048,2048] capture 512 blocks for the 396 an H100 holds at once: 1.3 waves, the second on a
// third of the machine.
int rows_per_warp_for(int resident, int64_t column_blocks, int64_t T) {
    if (resident <= 0) return 16;
    const int64_t row_blocks = std::max<int64_t>(1, resident / std::max<int64_t>(column_blocks, 1));
    const int64_t rows_per_block = (T + row_blocks - 1) / row_blocks;
    return static_cast<int>(std::max<int64_t>(kUnroll, (rows_per_block + kWarps - 1) / kWarps));
}

template <typename TIn, bool ROUND, int VEC, bool HIST, bool SWEEP>
cudaError_t launch_capture_variant(const CaptureArgs & a, size_t shared, cudaStream_t stream) {
    constexpr int kCols = 32 * VEC;
    const auto kernel = capture_kernel<TIn, ROUND, VEC, HIST, SWEEP>;
    const int64_t column_blocks = (a.H + kCols - 1) / kCols * a.B;
    const int rows_per_warp = rows_per_warp_for(resident_blocks(reinterpret_cast<const void *>(kernel), shared), column_blocks, a.T);
    const int64_t rows_per_block = int64_t{kWarps} * rows_per_warp;
    const dim3 grid(static_cast<unsigned>((a.H + kCols - 1) / kCols), static_cast<unsigned>((a.T + rows_per_block - 1) / rows_per_block),
                    static_cast<unsigned>(a.B));
    kernel<<<grid, kThreads, shared, stream>>>(a, rows_per_warp);
    return cudaGetLastError();
}

template <typename TIn, bool ROUND, int VEC>
cudaError_t launch_capture(const CaptureArgs & a, cudaStream_t stream) {
    constexpr int kCols = 32 * VEC;
    const bool hist = a.histogram != nullptr, sweep = a.sweep_k > 0;
    const size_t shared = sizeof(uint32_t) * ((hist ? kWarps * a.bins : 0) + (sweep ? 3 : 2) * kCols);
    if (hist && sweep) return launch_capture_variant<TIn, ROUND, VEC, true, true>(a, shared, stream);
    if (hist) return launch_capture_variant<TIn, ROUND, VEC, true, false>(a, shared, stream);
    if (sweep) return launch_capture_variant<TIn, ROUND, VEC, false, true>(a, shared, stream);
    return launch_capture_variant<TIn, ROUND, VEC, false, false>(a, shared, stream);
}

// 16-byte loads where every row starts 16-byte aligned, one element per load otherwise (odd H).
template <typename TIn, bool ROUND>
cudaError_t launch_capture_aligned(const CaptureArgs & a, cudaStream_t stream) {
    constexpr int kVec = 16 / sizeof(TIn);
    const bool aligned = a.H % kVec == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0;
    return aligned ? launch_capture<TIn, ROUND, kVec>(a, stream) : launch_capture<TIn, ROUND, 1>(a, stream);
}


// ---- Threshold sweep at the end of a batch: positions reaching each level ----

// positions[k,b,h] += #t with bit k of pos_level[b,t,h] for k < K: a thread per (b,h) and slice of
// kSweepRows positions (neighbouring threads read neighbouring elements), its counts added with one
// atomic per level reached. Slicing T matters: one thread walking all T positions left B*H threads
// (32 blocks for 4 x 2048 dims) each waiting on 2048 loads in turn, about 1 ms a batch on an H100.
// Most codes are 0 and skip the counting.
constexpr int kSweepRows = 64;
template <typename Code>
__global__ void sweep_positions_kernel(const Code * __restrict__ pos_level, int64_t B, int64_t T, int64_t H, int K,
                                       int32_t * __restrict__ positions) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // b*H + h
    if (i >= B * H) return;
    const int64_t b = i / H, h = i % H;
    const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kSweepRows, t1 = min(T, t0 + kSweepRows);
    int32_t count[kMaxSweepThresholds] = {};
    const Code * p = pos_level + b * T * H + h;
#pragma unroll 8
    for (int64_t t = t0; t < t1; ++t) {
        const uint32_t code = p[t * H];
        if (code == 0) continue;
#pragma unroll
        for (int k = 0; k < kMaxSweepThresholds; ++k) count[k] += (code >> k) & 1u;
    }
#pragma unroll
    for (int k = 0; k < kMaxSweepThresholds; ++k)
        if (k < K && count[k] != 0) atomicAdd(&positions[k * B * H + i], count[k]);
}

// ---- Per-expert statistics: one warp per routed slot ----

// The bits of |v| as a float (>= 0 compares as bits); the unused bf16 pattern is dead code.
template <typename TIn>
__device__ __forceinline__ uint32_t abs_bits(TIn v) {
    return __float_as_uint(magnitude<false>(v).value);
}

// Per-block tallies in shared memory ([3][E]: tokens, hits, max bits), zeroed, then added into the
// [E] totals with one global atomic per touched expert.
__device__ __forceinline__ void tally_zero(uint32_t * tally, int E) {
    for (int i = threadIdx.x; i < 3 * E; i += blockDim.x) tally[i] = 0;
    __syncthreads();
}

// One real slot of expert e whose row max |v| has the float bits m.
template <bool ROUND>
__device__ __forceinline__ void tally_slot(uint32_t * tally, const ExpertArgs & a, int64_t e, uint32_t m) {
    float value = __uint_as_float(m);
    if constexpr (ROUND) value = from_bf16_bits(bf16_bits_of(value)).value;
    atomicAdd(&tally[e], 1u);
    if (value >= a.threshold) atomicAdd(&tally[a.E + e], 1u);
    atomicMax(&tally[2 * a.E + e], __float_as_uint(value));
}

__device__ __forceinline__ void tally_flush(const uint32_t * tally, const ExpertArgs & a) {
    __syncthreads();
    for (int e = threadIdx.x; e < a.E; e += blockDim.x) {
        if (tally[e] == 0) continue;
        atomicAdd(&a.tokens[e], static_cast<unsigned long long>(tally[e]));
        if (tally[a.E + e] != 0) atomicAdd(&a.hit_tokens[e], static_cast<unsigned long long>(tally[a.E + e]));
        atomicMax(reinterpret_cast<unsigned int *>(a.max_abs) + e, tally[2 * a.E + e]);
    }
}

// Whether slot s counts (a real token routed to an expert in range), and its expert.
__device__ __forceinline__ bool slot_counts(const ExpertArgs & a, int64_t s, int64_t & e) {
    e = a.expert[s];
    return e >= 0 && e < a.E && (a.real == nullptr || a.real[s / a.K] != 0);
}

// The maxima already computed (ExpertArgs::slot_max): one thread per slot.
template <bool ROUND>
__global__ void __launch_bounds__(kWarps * 32) expert_slots_kernel(const ExpertArgs a) {
    extern __shared__ uint32_t tally[];
    tally_zero(tally, a.E);
    for (int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; s < a.S;
         s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t e;
        if (slot_counts(a, s, e)) tally_slot<ROUND>(tally, a, e, __float_as_uint(a.slot_max[s]));
    }
    tally_flush(tally, a);
}

template <typename TIn, bool ROUND, int VEC>
__global__ void __launch_bounds__(kWarps * 32) expert_kernel(const ExpertArgs a) {
    extern __shared__ uint32_t tally[];
    tally_zero(tally, a.E);
    const int lane = threadIdx.x % 32;
    const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
    const auto * __restrict__ down = static_cast<const TIn *>(a.down);
    for (int64_t s = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; s < a.S; s += warps) {
        int64_t e;
        if (!slot_counts(a, s, e)) continue;  // padding is not data (warp-uniform: one slot per warp)
        const int64_t row = a.slot_row_int64 ? static_cast<const int64_t *>(a.slot_row)[s]
                                             : static_cast<const int32_t *>(a.slot_row)[s];
        const TIn * x = down + row * a.H;
        uint32_t m = 0;
        for (int64_t h = static_cast<int64_t>(lane) * VEC; h < a.H; h += 32 * VEC) {
            const Pack<TIn, VEC> v = *reinterpret_cast<const Pack<TIn, VEC> *>(x + h);
#pragma unroll
            for (int j = 0; j < VEC; ++j) m = max(m, abs_bits<TIn>(v.v[j]));
        }
        for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
        if (lane == 0) tally_slot<ROUND>(tally, a, e, m);
    }
    tally_flush(tally, a);
}

template <typename TIn, bool ROUND>
cudaError_t launch_experts(const ExpertArgs & a, cudaStream_t stream) {
    constexpr int kVec = 16 / sizeof(TIn);
    const size_t shared = sizeof(uint32_t) * 3 * static_cast<size_t>(a.E);
    if (a.slot_max != nullptr) {
        const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((a.S + kWarps * 32 - 1) / (kWarps * 32), 256));
        expert_slots_kernel<ROUND><<<blocks, kWarps * 32, shared, stream>>>(a);
        return cudaGetLastError();
    }
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((a.S + kWarps - 1) / kWarps, 512));
    if (a.H % kVec == 0 && reinterpret_cast<uintptr_t>(a.down) % 16 == 0)
        expert_kernel<TIn, ROUND, kVec><<<blocks, kWarps * 32, shared, stream>>>(a);
    else
        expert_kernel<TIn, ROUND, 1><<<blocks, kWarps * 32, shared, stream>>>(a);
    return cudaGetLastError();
}

}  // namespace

cudaError_t sweep_positions(const void * pos_level, int pos_level_bytes, int64_t B, int64_t T, int64_t H, int K,
                            int32_t * positions, cudaStream_t stream) {
    if (B * H == 0) return cudaSuccess;
    if (K <= 0 || K > kMaxSweepThresholds || K > 8 * pos_level_bytes || (pos_level_bytes != 1 && pos_level_bytes != 2))
        return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>((B * H + kThreads - 1) / kThreads), static_cast<unsigned>((T + kSweepRows - 1) / kSweepRows));
    if (pos_level_bytes == 1)
        sweep_positions_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const uint8_t *>(pos_level), B, T, H, K, positions);
    else
        sweep_positions_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const uint16_t *>(pos_level), B, T, H, K, positions);
    return cudaGetLastError();
}

cudaError_t accumulate_experts(const ExpertArgs & a, cudaStream_t stream) {
    if (a.S == 0) return cudaSuccess;
    if (a.E <= 0 || a.E > kMaxExperts || a.K <= 0) return cudaErrorInvalidValue;
    switch (a.down_dtype) {
    case DType::BF16: return launch_experts<__nv_bfloat16, false>(a, stream);
    case DType::F16: return a.round_bf16 ? launch_experts<__half, true>(a, stream) : launch_experts<__half, false>(a, stream);
    case DType::F32: return a.round_bf16 ? launch_experts<float, true>(a, stream) : launch_experts<float, false>(a, stream);
    }
    return cudaErrorInvalidValue;
}

cudaError_t accumulate_capture(const CaptureArgs & a, cudaStream_t stream) {
    cudaError_t e = cudaSuccess;
    switch (a.x_dtype) {
    case DType::BF16: e = launch_capture_aligned<__nv_bfloat16, false>(a, stream); break;
    case DType::F16:
        e = a.round_bf16 ? launch_capture_aligned<__half, true>(a, stream) : launch_capture_aligned<__half, false>(a, stream);
        break;
    case DType::F32:
        e = a.round_bf16 ? launch_capture_aligned<float, true>(a, stream) : launch_capture_aligned<float, false>(a, stream);
        break;
    }
    if (e != cudaSuccess) return e;
    fold_kernel<<<static_cast<unsigned>((a.B * a.H + kThreads - 1) / kThreads), kThreads, 0, stream>>>(a);
    return cudaGetLastError();
}

}  // namespace analysis::cuda_kernels
