// The extractor's fused CUDA kernels (see kernels.h). Each replaces a chain of ATen element-wise
// kernels (one read and one write of the whole tensor per step) with a single pass, and rounds to
// the activation dtype at exactly the steps where HF's PyTorch ops round: a bf16 tensor op computes
// in fp32 and rounds its result, so `rnd<T>(a * b)` below is one such op. Memory-bound throughout;
// loads and stores are 16 bytes wide where the row width allows it.
#include "extractor/cuda/kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace extractor::cuda_kernels {
namespace {

template <typename T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// The value a PyTorch op on T tensors produces for an fp32 result: round to nearest even in T.
template <typename T>
__device__ __forceinline__ float rnd(float v) { return to_f<T>(from_f<T>(v)); }

// A multiply and an add that the compiler may not contract into one FMA: PyTorch rounds the
// product of `a * b + c` on its own (two ops), and fp32 runs must see the same rounding.
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }

// N elements of T moved as one aligned load or store.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
    T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load(const T * p) { return *reinterpret_cast<const Pack<T, N> *>(p); }
template <typename T, int N>
__device__ __forceinline__ void store(T * p, const Pack<T, N> & v) { *reinterpret_cast<Pack<T, N> *>(p) = v; }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block, same order every run (deterministic). scratch: 32 floats of shared memory.
__device__ float block_sum(float v, float * scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : 0.f;
        v = warp_sum(v);
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    const float total = scratch[0];
    __syncthreads();  // scratch may be reused by the caller
    return total;
}

cudaError_t launched() { return cudaGetLastError(); }

// ATen's SiLU on an fp32 value (x / (1 + exp(-x)), as its CUDA kernel computes it).
__device__ __forceinline__ float silu_f(float v) { return v / add(1.f, expf(-v)); }

// ---- RMSNorm and its variants: one block per row ----

template <typename T, int VEC, NormVariant V>
__global__ void rms_norm_kernel(RmsNormArgs a) {
    __shared__ float scratch[32];
    const T * xr = static_cast<const T *>(a.x) + blockIdx.x * a.x_row_stride;
    T * yr = static_cast<T *>(a.y) + blockIdx.x * a.width;
    const int64_t step = static_cast<int64_t>(blockDim.x) * VEC;
    float ss = 0.f;
    for (int64_t i = threadIdx.x * VEC; i < a.width; i += step) {
        const auto v = load<T, VEC>(xr + i);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
            const float f = to_f(v.v[j]);
            ss = add(ss, mul(f, f));
        }
    }
    // HF: variance = x32.pow(2).mean(-1) (mean = sum * (1/width)); x32 * rsqrt(variance + eps),
    // then the gain (NormVariant says where each variant rounds).
    const float inv = rsqrtf(add(mul(block_sum(ss, scratch), 1.f / static_cast<float>(a.width)), a.eps));
    for (int64_t i = threadIdx.x * VEC; i < a.width; i += step) {
        const auto v = load<T, VEC>(xr + i);
        Pack<T, VEC> o;
        if constexpr (V == NormVariant::Fp32Gain) {
            const float * g = static_cast<const float *>(a.weight) + i;
#pragma unroll
            for (int j = 0; j < VEC; ++j) o.v[j] = from_f<T>(mul(g[j], mul(to_f(v.v[j]), inv)));
        } else {
            const auto wv = load<T, VEC>(static_cast<const T *>(a.weight) + i);
            Pack<T, VEC> zv;
            if constexpr (V == NormVariant::Gated) zv = load<T, VEC>(static_cast<const T *>(a.gate) + blockIdx.x * a.gate_row_stride + i);
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                const float normed = rnd<T>(mul(to_f(wv.v[j]), rnd<T>(mul(to_f(v.v[j]), inv))));
                if constexpr (V == NormVariant::Gated) o.v[j] = from_f<T>(mul(normed, silu_f(to_f(zv.v[j]))));
                else o.v[j] = from_f<T>(normed);
            }
        }
        store<T, VEC>(yr + i, o);
    }
}

template <typename T, NormVariant V>
cudaError_t rms_norm_launch(const RmsNormArgs & a, cudaStream_t stream) {
    constexpr int kVec = 16 / sizeof(T);
    auto at16 = [](const void * p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    // The fp32 gain is read one float at a time: only x, a plain weight, the gate and y are packed.
    bool aligned = a.width % kVec == 0 && a.x_row_stride % kVec == 0 && at16(a.x) && at16(a.weight) && at16(a.y);
    if (V == NormVariant::Gated) aligned = aligned && a.gate_row_stride % kVec == 0 && at16(a.gate);
    const int64_t per_thread = aligned ? kVec : 1;
    int threads = static_cast<int>(std::min<int64_t>(1024, (a.width / per_thread + 31) / 32 * 32));
    if (threads < 32) threads = 32;
    if (aligned) rms_norm_kernel<T, kVec, V><<<a.rows, threads, 0, stream>>>(a);
    else rms_norm_kernel<T, 1, V><<<a.rows, threads, 0, stream>>>(a);
    return launched();
}

template <typename T>
cudaError_t rms_norm_t(const RmsNormArgs & a, cudaStream_t stream) {
    switch (a.variant) {
    case NormVariant::Plain: return rms_norm_launch<T, NormVariant::Plain>(a, stream);
    case NormVariant::Fp32Gain: return rms_norm_launch<T, NormVariant::Fp32Gain>(a, stream);
    case NormVariant::Gated: return rms_norm_launch<T, NormVariant::Gated>(a, stream);
    }
    return cudaErrorInvalidValue;
}

// ---- the short causal convolution + SiLU: one thread per VEC channels of one position ----

template <typename T, int VEC>
__global__ void causal_conv1d_silu_kernel(const T * __restrict__ x, const T * __restrict__ w, T * __restrict__ y,
                                          int64_t B, int64_t T_len, int64_t C, int Kc) {
    const int64_t packs = C / VEC, total = B * T_len * packs;
    for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t bt = k / packs, c = (k % packs) * VEC, t = bt % T_len;
        float acc[VEC];
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc[j] = 0.f;
        // Output t sees inputs t-Kc+1 .. t (the left padding is zeros), tap i on input t-Kc+1+i.
        for (int i = 0; i < Kc; ++i) {
            const int64_t back = Kc - 1 - i;
            if (t < back) continue;
            const auto xv = load<T, VEC>(x + (bt - back) * C + c);
#pragma unroll
            for (int j = 0; j < VEC; ++j) acc[j] = fmaf(to_f(w[(c + j) * Kc + i]), to_f(xv.v[j]), acc[j]);
        }
        Pack<T, VEC> o;
#pragma unroll
        for (int j = 0; j < VEC; ++j) o.v[j] = from_f<T>(silu_f(rnd<T>(acc[j])));  // conv output rounded, then SiLU
        store<T, VEC>(y + bt * C + c, o);
    }
}

// ---- DeltaNet q/k: repeat to the value heads and L2-normalise, one warp per key-head row ----

template <typename T>
__global__ void l2norm_repeat_kernel(const T * __restrict__ x, int64_t sb, int64_t st, int64_t sh, int64_t T_len,
                                     int64_t Nk, int64_t D, int rep, float eps, float * __restrict__ y, int64_t rows) {
    const int lane = threadIdx.x % 32;
    const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const int64_t h = row % Nk, bt = row / Nk, t = bt % T_len, b = bt / T_len;
    const T * xr = x + b * sb + t * st + h * sh;
    float ss = 0.f;
    for (int64_t i = lane; i < D; i += 32) {
        const float f = to_f(xr[i]);
        ss = add(ss, mul(f, f));
    }
    const float inv = rsqrtf(add(warp_sum(ss), eps));
    float * yr = y + (bt * Nk + h) * rep * D;  // output heads h*rep .. h*rep+rep-1 are adjacent
    for (int64_t i = lane; i < D; i += 32) {
        const float v = mul(to_f(xr[i]), inv);
        for (int r = 0; r < rep; ++r) yr[r * D + i] = v;
    }
}

// ---- q/k: norm, clamp, RoPE: one block per token row ----

template <typename T>
__global__ void qk_norm_rope_kernel(QkRopeArgs a) {
    extern __shared__ float inv_norm[];  // [1] (Whole) or [n_heads] (PerHead*)
    __shared__ float scratch[32];
    const auto * x = static_cast<const T *>(a.x) + blockIdx.x * a.x_row_stride;
    auto * out = static_cast<T *>(a.out) + blockIdx.x * static_cast<int64_t>(a.n_heads) * a.head_dim;
    const auto * nw = static_cast<const T *>(a.norm_weight);
    const auto * gain = static_cast<const float *>(a.norm_weight);  // PerHeadFp32Gain
    const int64_t t = blockIdx.x % a.seq_len;
    const auto * cos = static_cast<const T *>(a.cos) + t * a.rot_dim;
    const auto * sin = static_cast<const T *>(a.sin) + t * a.rot_dim;
    const int D = a.head_dim, hs = a.x_head_stride;
    const bool per_head = a.norm == HeadNorm::PerHead || a.norm == HeadNorm::PerHeadFp32Gain;

    if (a.norm == HeadNorm::Whole) {
        // x_head_stride == head_dim here (the wrapper checks): the row is one span.
        const int width = a.n_heads * D;
        float ss = 0.f;
        for (int i = threadIdx.x; i < width; i += blockDim.x) {
            const float f = to_f(x[i]);
            ss = add(ss, mul(f, f));
        }
        ss = block_sum(ss, scratch);
        if (threadIdx.x == 0) inv_norm[0] = rsqrtf(add(mul(ss, 1.f / static_cast<float>(width)), a.eps));
    } else if (per_head) {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
        for (int h = warp; h < a.n_heads; h += warps) {
            float ss = 0.f;
            for (int i = lane; i < D; i += 32) {
                const float f = to_f(x[h * hs + i]);
                ss = add(ss, mul(f, f));
            }
            ss = warp_sum(ss);
            if (lane == 0) inv_norm[h] = rsqrtf(add(mul(ss, 1.f / static_cast<float>(D)), a.eps));
        }
    }
    __syncthreads();

    // Element i of head h after the norm and the clamp, each rounded where HF rounds.
    auto prepared = [&](int h, int i) {
        float v = to_f(x[h * hs + i]);
        switch (a.norm) {
        case HeadNorm::Whole: v = rnd<T>(mul(to_f(nw[h * D + i]), rnd<T>(mul(v, inv_norm[0])))); break;
        case HeadNorm::PerHead: v = rnd<T>(mul(to_f(nw[i]), rnd<T>(mul(v, inv_norm[h])))); break;
        case HeadNorm::PerHeadFp32Gain: v = rnd<T>(mul(gain[i], mul(v, inv_norm[h]))); break;
        case HeadNorm::None: break;
        }
        if (a.clip >= 0.f) v = rnd<T>(fminf(fmaxf(v, -a.clip), a.clip));
        return v;
    };
    const int half = a.rot_dim / 2;
    for (int p = threadIdx.x; p < a.n_heads * half; p += blockDim.x) {
        const int h = p / half, j = p % half;
        const float va = prepared(h, j), vb = prepared(h, j + half);
        // HF: q * cos + rotate_half(q) * sin, rotate_half(q) = cat(-q2, q1); three rounded ops.
        const float oa = rnd<T>(add(rnd<T>(mul(va, to_f(cos[j]))), rnd<T>(mul(-vb, to_f(sin[j])))));
        const float ob = rnd<T>(add(rnd<T>(mul(vb, to_f(cos[j + half]))), rnd<T>(mul(va, to_f(sin[j + half])))));
        out[h * D + j] = from_f<T>(oa);
        out[h * D + j + half] = from_f<T>(ob);
    }
    // Partial rotary: the dims past rot_dim pass through (HF concatenates them back unchanged).
    const int pass = D - a.rot_dim;
    for (int p = threadIdx.x; p < a.n_heads * pass; p += blockDim.x) {
        const int h = p / pass, i = a.rot_dim + p % pass;
        out[h * D + i] = from_f<T>(prepared(h, i));
    }
}

template <typename T>
cudaError_t qk_norm_rope_t(const QkRopeArgs & a, cudaStream_t stream) {
    const bool per_head = a.norm == HeadNorm::PerHead || a.norm == HeadNorm::PerHeadFp32Gain;
    const size_t shared = sizeof(float) * static_cast<size_t>(per_head ? a.n_heads : 1);
    qk_norm_rope_kernel<T><<<a.rows, 256, shared, stream>>>(a);
    return launched();
}

// ---- MoE dispatch: count, scan, place ----

__global__ void moe_count_kernel(const int64_t * __restrict__ top_i, int64_t S, int E, int32_t * counts) {
    extern __shared__ int32_t local[];  // [E]
    for (int e = threadIdx.x; e < E; e += blockDim.x) local[e] = 0;
    __syncthreads();
    for (int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; s < S;
         s += static_cast<int64_t>(gridDim.x) * blockDim.x)
        atomicAdd(&local[top_i[s]], 1);
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        if (local[e]) atomicAdd(&counts[e], local[e]);
}

__global__ void moe_scan_kernel(const int32_t * counts, int E, int32_t * offs, int32_t * cursor) {
    if (threadIdx.x != 0) return;
    int32_t run = 0;
    for (int e = 0; e < E; ++e) {
        cursor[e] = run;
        run += counts[e];
        offs[e] = run;
    }
}

// One warp per slot: lane 0 claims the slot's row in its expert's group, the warp copies the token.
__global__ void moe_place_kernel(const char * __restrict__ x, int64_t x_row_stride_bytes, int64_t row_bytes,
                                 const int64_t * __restrict__ top_i, int64_t S, int K, int32_t * cursor,
                                 int32_t * __restrict__ slot_pos, char * __restrict__ xs) {
    const int64_t slot = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (slot >= S) return;  // whole warps only: slot is the same for every lane of a warp
    int32_t row = 0;
    if (lane == 0) row = atomicAdd(&cursor[top_i[slot]], 1);
    row = __shfl_sync(0xffffffffu, row, 0);
    if (lane == 0) slot_pos[slot] = row;
    const auto * src = reinterpret_cast<const uint4 *>(x + (slot / K) * x_row_stride_bytes);
    auto * dst = reinterpret_cast<uint4 *>(xs + row * row_bytes);
    for (int64_t i = lane; i < row_bytes / 16; i += 32) dst[i] = src[i];
}

// ---- expert activation ----

template <typename T, int VEC>
__global__ void silu_mul_kernel(const T * __restrict__ gu, T * __restrict__ act, int64_t S, int64_t I) {
    const int64_t packs_per_row = I / VEC;
    const int64_t total = S * packs_per_row;
    for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t s = k / packs_per_row, c = (k % packs_per_row) * VEC;
        const auto g = load<T, VEC>(gu + s * 2 * I + c);
        const auto u = load<T, VEC>(gu + s * 2 * I + I + c);
        Pack<T, VEC> o;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
            const float gf = to_f(g.v[j]);
            o.v[j] = from_f<T>(mul(rnd<T>(gf / add(1.f, expf(-gf))), to_f(u.v[j])));
        }
        store<T, VEC>(act + s * I + c, o);
    }
}

// ---- combine: one block per token ----

// y[n] = sum_k w[n,k] * out[slot_pos[n,k]]. MAX: also slot_max[n*K+k] = max |out row of slot n*K+k|
// (`--expert-stats`): the rows are read here anyway, so the statistic costs no second pass over
// [S,H]. Maxima compare the bits of |v| as floats (a NaN propagates). With MAX, K <= kSlotMaxK and
// the slot loop is unrolled to that bound so the per-slot maxima stay in registers; every thread
// reaches the reduction.
template <typename T, int VEC, bool MAX>
__global__ void moe_combine_kernel(const T * __restrict__ out, const int32_t * __restrict__ slot_pos,
                                   const float * __restrict__ w, int K, int64_t H, T * __restrict__ y,
                                   float * __restrict__ slot_max) {
    __shared__ uint32_t block_max[MAX ? kSlotMaxK : 1];
    if constexpr (MAX) {
        if (threadIdx.x < kSlotMaxK) block_max[threadIdx.x] = 0;
        __syncthreads();
    }
    const int64_t n = blockIdx.x;
    uint32_t mk[MAX ? kSlotMaxK : 1] = {};
    for (int64_t c = threadIdx.x * VEC; c < H; c += static_cast<int64_t>(blockDim.x) * VEC) {
        float acc[VEC];
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc[j] = 0.f;
        auto add_slot = [&](int k) {
            const int64_t row = slot_pos[n * K + k];
            const float wk = w[n * K + k];
            const auto v = load<T, VEC>(out + row * H + c);
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                const float x = to_f(v.v[j]);
                acc[j] = add(acc[j], mul(x, wk));
                if constexpr (MAX) mk[k] = max(mk[k], __float_as_uint(fabsf(x)));
            }
        };
        if constexpr (MAX) {
#pragma unroll
            for (int k = 0; k < kSlotMaxK; ++k) {
                if (k >= K) break;
                add_slot(k);
            }
        } else {
            for (int k = 0; k < K; ++k) add_slot(k);
        }
        Pack<T, VEC> o;
#pragma unroll
        for (int j = 0; j < VEC; ++j) o.v[j] = from_f<T>(acc[j]);
        store<T, VEC>(y + n * H + c, o);
    }
    if constexpr (MAX) {
#pragma unroll
        for (int k = 0; k < kSlotMaxK; ++k) {
            if (k >= K) break;
            uint32_t m = mk[k];
            for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
            if (threadIdx.x % 32 == 0 && m != 0) atomicMax(&block_max[k], m);
        }
        __syncthreads();
        if (threadIdx.x < K) slot_max[n * K + threadIdx.x] = __uint_as_float(block_max[threadIdx.x]);
    }
}

template <typename T, int VEC>
void launch_moe_combine(const void * out, const int32_t * slot_pos, const float * weights, int64_t N, int K, int64_t H,
                        void * y, float * slot_max, int threads, cudaStream_t stream) {
    const auto * o = static_cast<const T *>(out);
    auto * yt = static_cast<T *>(y);
    if (slot_max != nullptr)
        moe_combine_kernel<T, VEC, true><<<N, threads, 0, stream>>>(o, slot_pos, weights, K, H, yt, slot_max);
    else
        moe_combine_kernel<T, VEC, false><<<N, threads, 0, stream>>>(o, slot_pos, weights, K, H, yt, nullptr);
}

// ---- MXFP4 decode: one thread per block of 32 values ----

// The e2m1 code's value: bit 3 the sign, bits 2-1 the exponent, bit 0 the mantissa; exponent 0 is
// subnormal (0 or 0.5), otherwise (1 + m/2) x 2^(e-1). Codes 0-7: 0, 0.5, 1, 1.5, 2, 3, 4, 6.
__device__ __forceinline__ float e2m1(unsigned code) {
    const unsigned m = code & 7u, e = m >> 1;
    const float mag = e == 0 ? 0.5f * static_cast<float>(m & 1u)
                             : __int_as_float(static_cast<int>((e + 126u) << 23)) * (1.0f + 0.5f * static_cast<float>(m & 1u));
    return (code & 8u) ? -mag : mag;
}

template <typename T, int VEC>
__global__ void mxfp4_dequantize_kernel(const uint8_t * __restrict__ blocks, const uint8_t * __restrict__ scales,
                                        T * __restrict__ out, int64_t n_blocks) {
    for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < n_blocks;
         b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const uint4 raw = reinterpret_cast<const uint4 *>(blocks)[b];  // bytes 0-3 in raw.x, low byte first
        const unsigned s = scales[b];
        // The scale byte is fp32's exponent field: s << 23 is 2^(s-127) exactly (255: inf).
        const float scale = s == 0 ? __int_as_float(0x00400000) : __int_as_float(static_cast<int>(s << 23));
        const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
        T * dst = out + b * 32;
#pragma unroll
        for (int p = 0; p < 32 / VEC; ++p) {
            Pack<T, VEC> o;
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                const int idx = p * VEC + j, byte = idx >> 1;
                const unsigned bits = (words[byte >> 2] >> ((byte & 3) * 8)) & 0xFFu;
                o.v[j] = from_f<T>(mul(e2m1((idx & 1) ? bits >> 4 : bits & 0xFu), scale));
            }
            store<T, VEC>(dst + p * VEC, o);
        }
    }
}

// ---- Token NLL: one block per row of logits ----
//
// nll[r] = logsumexp(x[r,:]) - x[r, target[r]] with every value read as fp32 (exact from bf16/fp16):
// log_softmax of the fp32-upcast logits at the target, as HF's loss computes it, but in one read of
// the activation-dtype logits instead of an fp32 copy, a log_softmax output and a gather.
// Each thread keeps a running (max, sum of exp(v - max)); the pairs merge across the block.
struct MaxSum {
    float m, s;
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
    if (a.m < b.m) {
        const MaxSum t = a;
        a = b;
        b = t;
    }
    if (b.m == -INFINITY) return a;  // also a.m == -inf: both empty
    return {a.m, a.s + b.s * expf(b.m - a.m)};
}

template <typename T, int VEC>
__global__ void token_nll_kernel(const T * __restrict__ logits, int64_t V, const int64_t * __restrict__ target,
                                 float * __restrict__ nll) {
    __shared__ MaxSum scratch[32];
    const int64_t r = blockIdx.x;
    const T * x = logits + r * V;
    MaxSum acc{-INFINITY, 0.f};
    for (int64_t i = static_cast<int64_t>(threadIdx.x) * VEC; i < V; i += static_cast<int64_t>(blockDim.x) * VEC) {
        const Pack<T, VEC> p = load<T, VEC>(x + i);
        float v[VEC];
        float m = -INFINITY;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
            v[j] = to_f<T>(p.v[j]);
            m = fmaxf(m, v[j]);
        }
        if (m == -INFINITY) continue;  // all -inf (fmaxf drops NaN; a NaN still reaches the sum)
        float s = 0.f;
#pragma unroll
        for (int j = 0; j < VEC; ++j) s += expf(v[j] - m);
        acc = merge(acc, {m, s});
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
    for (int o = 16; o > 0; o >>= 1)
        acc = merge(acc, {__shfl_xor_sync(0xffffffffu, acc.m, o), __shfl_xor_sync(0xffffffffu, acc.s, o)});
    if (lane == 0) scratch[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        MaxSum total = scratch[0];
        for (int w = 1; w < warps; ++w) total = merge(total, scratch[w]);
        const int64_t t = target[r];
        // A target outside the vocabulary has no probability: NaN, never a read out of the row.
        nll[r] = t >= 0 && t < V ? total.m + logf(total.s) - to_f<T>(x[t]) : NAN;
    }
}

template <typename T, int VEC>
cudaError_t token_nll_t(const void * logits, int64_t rows, int64_t V, const int64_t * target, float * nll,
                        cudaStream_t stream) {
    const int threads = static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, (V / VEC + 31) / 32 * 32)));
    token_nll_kernel<T, VEC><<<static_cast<unsigned>(rows), threads, 0, stream>>>(static_cast<const T *>(logits), V,
                                                                                   target, nll);
    return launched();
}

// ---- AbsmaxSink's per-capture summary ----

// A block owns 32*VEC columns and rows_per_block rows; each lane VEC adjacent columns (one 16-byte
// load a row), each warp every 8th row, maxima and the count in registers. The warps combine in
// shared memory; one atomic per column and one for the count per block.
constexpr int kAbsmaxWarps = 8;
template <typename T, int VEC>
__global__ void __launch_bounds__(kAbsmaxWarps * 32) absmax_count_kernel(const T * __restrict__ x, int64_t rows, int64_t H,
                                                                       int64_t rows_per_block, float threshold,
                                                                       uint32_t * __restrict__ max_bits,
                                                                       unsigned long long * __restrict__ count) {
    __shared__ uint32_t col_max[kAbsmaxWarps][32 * VEC];
    __shared__ uint32_t warp_count[kAbsmaxWarps];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t h0 = static_cast<int64_t>(blockIdx.x) * 32 * VEC, h = h0 + lane * VEC;
    const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_block, r1 = min(rows, r0 + rows_per_block);
    uint32_t m[VEC] = {};
    uint32_t n = 0;
    if (h < H) {
#pragma unroll 4
        for (int64_t r = r0 + warp; r < r1; r += kAbsmaxWarps) {
            const Pack<T, VEC> p = load<T, VEC>(x + r * H + h);
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                const float a = fabsf(to_f<T>(p.v[j]));
                m[j] = max(m[j], __float_as_uint(a));
                n += a >= threshold ? 1u : 0u;
            }
        }
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) col_max[warp][lane * VEC + j] = m[j];
    for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
    if (lane == 0) warp_count[warp] = n;
    __syncthreads();
    for (int c = threadIdx.x; c < 32 * VEC && h0 + c < H; c += blockDim.x) {
        uint32_t mm = 0;
#pragma unroll
        for (int w = 0; w < kAbsmaxWarps; ++w) mm = max(mm, col_max[w][c]);
        if (mm != 0) atomicMax(&max_bits[h0 + c], mm);
    }
    if (threadIdx.x == 0) {
        unsigned long long total = 0;
        for (int w = 0; w < kAbsmaxWarps; ++w) total += warp_count[w];
        if (total != 0) atomicAdd(count, total);
    }
}

template <typename T, int VEC>
cudaError_t absmax_count_t(const void * x, int64_t rows, int64_t H, float threshold, uint32_t * max_bits,
                           unsigned long long * count, cudaStream_t stream) {
    // About 8 blocks per SM in all: enough rows per block that its final atomics are a small part,
    // enough blocks that the last wave is short.
    static const int sms = [] {
        int device = 0, n = 0;
        if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
            (void)cudaGetLastError();
            return 132;
        }
        return n;
    }();
    const int64_t column_blocks = (H + 32 * VEC - 1) / (32 * VEC);
    const int64_t row_blocks = std::max<int64_t>(1, std::min<int64_t>(65535, int64_t{8} * sms / column_blocks));
    int64_t rows_per_block = (rows + row_blocks - 1) / row_blocks;
    rows_per_block = (rows_per_block + kAbsmaxWarps - 1) / kAbsmaxWarps * kAbsmaxWarps;
    const dim3 grid(static_cast<unsigned>(column_blocks), static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block));
    absmax_count_kernel<T, VEC><<<grid, kAbsmaxWarps * 32, 0, stream>>>(static_cast<const T *>(x), rows, H, rows_per_block,
                                                                        threshold, max_bits, count);
    return launched();
}

int grid_for(int64_t work, int threads) {
    const int64_t blocks = (work + threads - 1) / threads;
    return static_cast<int>(std::min<int64_t>(blocks, 65535 * 8));
}

// f(T{}) for the element type T of dtype (float, __half, __nv_bfloat16): one dtype switch for the
// launchers below.
template <typename F>
cudaError_t with_dtype(DType dtype, F && f) {
    switch (dtype) {
    case DType::F32: return f(float{});
    case DType::F16: return f(__half{});
    case DType::BF16: return f(__nv_bfloat16{});
    }
    return cudaErrorInvalidValue;
}

template <typename T, int VEC>
cudaError_t causal_conv1d_silu_t(const void * x, const void * w, void * y, int64_t B, int64_t T_len, int64_t C, int Kc,
                                 cudaStream_t stream) {
    constexpr int threads = 256;
    causal_conv1d_silu_kernel<T, VEC><<<grid_for(B * T_len * (C / VEC), threads), threads, 0, stream>>>(
        static_cast<const T *>(x), static_cast<const T *>(w), static_cast<T *>(y), B, T_len, C, Kc);
    return launched();
}

}  // namespace

cudaError_t rms_norm_variant(DType dtype, const RmsNormArgs & args, cudaStream_t stream) {
    if (args.rows == 0) return cudaSuccess;
    return with_dtype(dtype, [&](auto t) { return rms_norm_t<decltype(t)>(args, stream); });
}

cudaError_t l2norm_repeat(DType dtype, const void * x, int64_t stride_b, int64_t stride_t, int64_t stride_h, int64_t B,
                          int64_t T, int64_t Nk, int64_t D, int rep, float eps, float * y, cudaStream_t stream) {
    const int64_t rows = B * T * Nk;
    if (rows == 0 || D == 0) return cudaSuccess;
    constexpr int threads = 256, rows_per_block = threads / 32;
    const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
    return with_dtype(dtype, [&](auto t) {
        using E = decltype(t);
        l2norm_repeat_kernel<E><<<blocks, threads, 0, stream>>>(static_cast<const E *>(x), stride_b, stride_t, stride_h, T, Nk, D,
                                                                rep, eps, y, rows);
        return launched();
    });
}

cudaError_t causal_conv1d_silu(DType dtype, const void * x, const void * w, void * y, int64_t B, int64_t T, int64_t C,
                               int Kc, cudaStream_t stream) {
    if (B * T * C == 0) return cudaSuccess;
    const bool at16 = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
    return with_dtype(dtype, [&](auto t) {
        using E = decltype(t);
        constexpr int kVec = 16 / sizeof(E);  // 16-byte loads where the channels and pointers allow
        return at16 && C % kVec == 0 ? causal_conv1d_silu_t<E, kVec>(x, w, y, B, T, C, Kc, stream)
                                     : causal_conv1d_silu_t<E, 1>(x, w, y, B, T, C, Kc, stream);
    });
}

cudaError_t qk_norm_rope(DType dtype, const QkRopeArgs & args, cudaStream_t stream) {
    if (args.rows == 0) return cudaSuccess;
    return with_dtype(dtype, [&](auto t) { return qk_norm_rope_t<decltype(t)>(args, stream); });
}

cudaError_t moe_permute(const void * x, int64_t x_row_stride_bytes, int64_t row_bytes, const int64_t * top_i,
                        int64_t S, int K, int E, int32_t * counts, int32_t * offs, int32_t * cursor, int32_t * slot_pos,
                        void * xs, cudaStream_t stream) {
    if (S == 0) return cudaSuccess;
    moe_count_kernel<<<std::min<int64_t>(132, (S + 1023) / 1024), 1024, sizeof(int32_t) * E, stream>>>(top_i, S, E, counts);
    if (cudaError_t e = launched(); e != cudaSuccess) return e;
    moe_scan_kernel<<<1, 32, 0, stream>>>(counts, E, offs, cursor);
    if (cudaError_t e = launched(); e != cudaSuccess) return e;
    const int64_t threads = 256, slots_per_block = threads / 32;
    moe_place_kernel<<<(S + slots_per_block - 1) / slots_per_block, threads, 0, stream>>>(
        static_cast<const char *>(x), x_row_stride_bytes, row_bytes, top_i, S, K, cursor, slot_pos,
        static_cast<char *>(xs));
    return launched();
}

cudaError_t silu_mul(DType dtype, const void * gate_up, void * act, int64_t S, int64_t I, cudaStream_t stream) {
    if (S == 0) return cudaSuccess;
    constexpr int threads = 256;
    switch (dtype) {
    case DType::F32:
        silu_mul_kernel<float, 4><<<grid_for(S * I / 4, threads), threads, 0, stream>>>(
            static_cast<const float *>(gate_up), static_cast<float *>(act), S, I);
        break;
    case DType::F16:
        silu_mul_kernel<__half, 8><<<grid_for(S * I / 8, threads), threads, 0, stream>>>(
            static_cast<const __half *>(gate_up), static_cast<__half *>(act), S, I);
        break;
    case DType::BF16:
        silu_mul_kernel<__nv_bfloat16, 8><<<grid_for(S * I / 8, threads), threads, 0, stream>>>(
            static_cast<const __nv_bfloat16 *>(gate_up), static_cast<__nv_bfloat16 *>(act), S, I);
        break;
    }
    return launched();
}

cudaError_t moe_combine(DType dtype, const void * out, const int32_t * slot_pos, const float * weights, int64_t N,
                        int K, int64_t H, void * y, float * slot_max, cudaStream_t stream) {
    if (N == 0) return cudaSuccess;
    if (slot_max != nullptr && K > kSlotMaxK) return cudaErrorInvalidValue;
    const int threads = static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, (H / 8 + 31) / 32 * 32)));
    switch (dtype) {
    case DType::F32: launch_moe_combine<float, 4>(out, slot_pos, weights, N, K, H, y, slot_max, threads, stream); break;
    case DType::F16: launch_moe_combine<__half, 8>(out, slot_pos, weights, N, K, H, y, slot_max, threads, stream); break;
    case DType::BF16: launch_moe_combine<__nv_bfloat16, 8>(out, slot_pos, weights, N, K, H, y, slot_max, threads, stream); break;
    }
    return launched();
}

cudaError_t mxfp4_dequantize(DType dtype, const uint8_t * blocks, const uint8_t * scales, int64_t n_blocks, void * out,
                             cudaStream_t stream) {
    if (n_blocks == 0) return cudaSuccess;
    constexpr int threads = 256;
    switch (dtype) {
    case DType::F32:
        mxfp4_dequantize_kernel<float, 4><<<grid_for(n_blocks, threads), threads, 0, stream>>>(
            blocks, scales, static_cast<float *>(out), n_blocks);
        break;
    case DType::F16:
        mxfp4_dequantize_kernel<__half, 8><<<grid_for(n_blocks, threads), threads, 0, stream>>>(
            blocks, scales, static_cast<__half *>(out), n_blocks);
        break;
    case DType::BF16:
        mxfp4_dequantize_kernel<__nv_bfloat16, 8><<<grid_for(n_blocks, threads), threads, 0, stream>>>(
            blocks, scales, static_cast<__nv_bfloat16 *>(out), n_blocks);
        break;
    }
    return launched();
}

cudaError_t token_nll(DType dtype, const void * logits, int64_t rows, int64_t V, const int64_t * target, float * nll,
                      cudaStream_t stream) {
    if (rows == 0) return cudaSuccess;
    // 16-byte loads where every row starts 16-byte aligned (V a multiple of the pack), else one by one.
    switch (dtype) {
    case DType::F32:
        return V % 4 == 0 ? token_nll_t<float, 4>(logits, rows, V, target, nll, stream)
                          : token_nll_t<float, 1>(logits, rows, V, target, nll, stream);
    case DType::F16:
        return V % 8 == 0 ? token_nll_t<__half, 8>(logits, rows, V, target, nll, stream)
                          : token_nll_t<__half, 1>(logits, rows, V, target, nll, stream);
    case DType::BF16:
        return V % 8 == 0 ? token_nll_t<__nv_bfloat16, 8>(logits, rows, V, target, nll, stream)
                          : token_nll_t<__nv_bfloat16, 1>(logits, rows, V, target, nll, stream);
    }
    return cudaErrorInvalidValue;
}

cudaError_t absmax_count(DType dtype, const void * x, int64_t rows, int64_t H, float threshold, uint32_t * max_bits,
                         unsigned long long * count, cudaStream_t stream) {
    if (rows == 0 || H == 0) return cudaSuccess;
    const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0;
    switch (dtype) {
    case DType::F32:
        return aligned && H % 4 == 0 ? absmax_count_t<float, 4>(x, rows, H, threshold, max_bits, count, stream)
                                     : absmax_count_t<float, 1>(x, rows, H, threshold, max_bits, count, stream);
    case DType::F16:
        return aligned && H % 8 == 0 ? absmax_count_t<__half, 8>(x, rows, H, threshold, max_bits, count, stream)
                                     : absmax_count_t<__half, 1>(x, rows, H, threshold, max_bits, count, stream);
    case DType::BF16:
        return aligned && H % 8 == 0 ? absmax_count_t<__nv_bfloat16, 8>(x, rows, H, threshold, max_bits, count, stream)
                                     : absmax_count_t<__nv_bfloat16, 1>(x, rows, H, threshold, max_bits, count, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace extractor::cuda_kernels
