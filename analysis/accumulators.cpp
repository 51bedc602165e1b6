// Device-side accumulation for OutlierAccumulator (see accumulators.h). Per layer-norm capture x
// [B,T,H] on a CUDA device this is one fused kernel pass (cuda/accumulate_kernels.h) where it is
// built; otherwise, and as its reference, a handful of ATen passes on x's device (abs, compare, two
// reductions over T, the position flags, one histc for the histogram). Both update the same state
// tensors with the same integers and maxima, so statistics() is bit-identical either way. Per batch
// only [B,H]-sized planes move to the host (non-blocking, read one batch later); token tallies stay
// on the device until statistics().
#include "analysis/accumulators.h"

#include "analysis/stats_file.h"
#include "common/error.h"
#include "common/log.h"
#include "extractor/ops.h"
#include "extractor/perplexity.h"
#include "extractor/sinks/host_transfer.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#if ANALYSIS_HAS_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "analysis/cuda/accumulate_kernels.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <utility>

namespace analysis {

namespace {

int site_code(extractor::Site site) { return static_cast<int>(site); }

const char * ln_site_name(extractor::Site site) {
    switch (site) {
    case extractor::Site::LnAttn: return "ln_attn";
    case extractor::Site::LnMlp: return "ln_mlp";
    case extractor::Site::Residual: return "residual";
    }
    return "unknown";
}

std::string site_label(extractor::Site site, int layer) {
    return "layer_" + std::to_string(layer) + "_" + ln_site_name(site);
}

std::string shape_text(const at::Tensor & x) {
    std::string out = "[";
    for (int64_t i = 0; i < x.dim(); ++i) out += (i ? "," : "") + std::to_string(x.size(i));
    return out + "]";
}

// bf16 bit pattern >> 5 = (biased exponent << 2) | top two mantissa bits: 4 bins per octave at
// 1, 1.25, 1.5, 1.75 × 2^e. Index of the bin that holds 2^log2_min:
int64_t histogram_base(const HistogramSpec & spec) {
    return (127 + static_cast<int64_t>(spec.log2_min)) * 4;
}

#if ANALYSIS_HAS_CUDA_KERNELS
// torch compares a tensor with a scalar after converting the scalar to the tensor's dtype (a 5.99
// threshold is 6.0 against bf16 values); the kernel compares floats, so it gets the threshold as
// the values' dtype holds it.
float threshold_as(double threshold, at::ScalarType values) {
    switch (values) {
    case at::kBFloat16: return static_cast<float>(c10::BFloat16(static_cast<float>(threshold)));
    case at::kHalf: return static_cast<float>(c10::Half(static_cast<float>(threshold)));
    default: return static_cast<float>(threshold);
    }
}

cuda_kernels::DType kernel_dtype(at::ScalarType t) {
    switch (t) {
    case at::kFloat: return cuda_kernels::DType::F32;
    case at::kHalf: return cuda_kernels::DType::F16;
    case at::kBFloat16: return cuda_kernels::DType::BF16;
    default: throw common::Error::internal("analysis: fused capture: unsupported dtype " + std::string(c10::toString(t)));
    }
}
#endif

}  // namespace

struct SiteAccumulator {
    at::Tensor sweep_level;  // [H] int32: thresholds of the sweep reached by some |x| (empty: no sweep)
    at::Tensor hits;       // [H] int64
    at::Tensor max_abs;    // [H] float32
    at::Tensor histogram;  // [bins] int64
    at::Tensor nonfinite;  // [1] int64: |v| that are NaN or inf, real positions only
    int64_t elements = 0;
    int64_t padded_elements = 0;  // zeros written into padded positions (removed from bin 0)
    int64_t sequences = 0;
};

// A finished batch on its way to the host. end_batch queues the device reductions and non-blocking
// copies of their [B,H]-sized results (extractor::HostTransfer); the next end_batch, or
// statistics(), turns them into per-sequence records while the device runs on. A blocking read at
// every batch left the device idle while the host built the records (and at each of the half-dozen
// reads a batch used to make).
struct PendingBatch {
    std::vector<SequenceStats> records;  // [B]: index, tokens, sites, layers set; dims and sweep to come
    extractor::HostTransfer counts;      // [F,B,H] int32: sites, layers, positions; then (sweep) K x sites, layers, positions
    extractor::HostTransfer hits;        // [B,H] int64
    extractor::HostTransfer maxima;      // [B,H] float32
    int64_t sweep_k = 0;
    // Token tallies: the dims with the most hit positions (counts descending), and their hit flags.
    extractor::HostTransfer top_positions, top_dims;  // [k] int64
    at::Tensor top_hit;    // [B,T,k] bool on the device
    at::Tensor token_ids;  // [B,T] int64 CPU
    // --perplexity: the batch's losses, fp64 [B,T-1]
    extractor::HostTransfer nll;
};

struct OutlierAccumulator::State {
    std::vector<SiteInfo> sites;
    std::map<std::pair<int, int>, size_t> site_index;  // (layer, site code) -> index into sites
    std::vector<SiteAccumulator> acc;
    int64_t hidden = 0;
    at::Tensor position_hits;  // [T_max,H] int32 on the device

    int64_t sequences = 0;
    int64_t tokens = 0;
    int64_t batches = 0;
    std::vector<SequenceStats> per_sequence;
    bool perplexity = false;
    std::vector<SequencePerplexity> perplexity_sequences;
    std::map<int32_t, int64_t> token_hits_batches;
    // Token tallies, on the device: row token_row[dim] of token_table counts the hit positions of
    // that dim per token id. Columns grow to the largest token id seen, rows to the dims tallied.
    at::Tensor token_table;  // [rows, V] int64
    std::map<int32_t, int64_t> token_row;
    bool token_table_full_warned = false;
    static constexpr int64_t kTokenTableBytes = int64_t{256} << 20;  // cap on the counters' memory

    // Most counter rows the table may hold at this vocabulary (its memory capped at kTokenTableBytes:
    // at the largest vocabulary, kMaxTokenVocab, 8 rows are 256 MiB; real vocabularies, <= ~262k,
    // get 128 rows or more). The floor was 64 rows, which at a (hostile) id of 2^24 made 8.5 GB.
    static int64_t max_token_rows(int64_t vocab) {
        return std::max<int64_t>(8, kTokenTableBytes / (8 * std::max<int64_t>(vocab, 1)));
    }
    static_assert(8 * 8 * kMaxTokenVocab <= kTokenTableBytes, "the row floor must fit the cap at the largest vocabulary");

    // The counter row of dim (a new one if needed); -1 once the table is at its cap.
    int64_t token_row_of(int32_t dim, int64_t vocab) {
        if (auto it = token_row.find(dim); it != token_row.end()) return it->second;
        const int64_t max_rows = max_token_rows(vocab);
        if (static_cast<int64_t>(token_row.size()) >= max_rows) {
            if (!token_table_full_warned)
                common::log::warn("analysis: token tallies kept for the first ", max_rows,
                                  " dims only (the batches' top dims keep changing); later dims are counted without tokens");
            token_table_full_warned = true;
            return -1;
        }
        return token_row.emplace(dim, static_cast<int64_t>(token_row.size())).first->second;
    }

    void ensure_token_table(int64_t vocab, c10::Device device) {
        const auto rows = static_cast<int64_t>(token_row.size());
        if (token_table.defined() && token_table.size(0) >= rows && token_table.size(1) >= vocab) return;
        const int64_t old_rows = token_table.defined() ? token_table.size(0) : 0;
        const int64_t old_vocab = token_table.defined() ? token_table.size(1) : 0;
        // Capacity doubles (up to the cap) and the vocabulary is rounded up, so growth is rare. Growing
        // by 32 rows reallocated and copied the whole table whenever a batch brought new dims (the
        // suspected part of the tallies' 3.9 ms a batch at Mixtral's shape on an H100; not yet
        // re-timed).
        const int64_t cols = std::max(old_vocab, (vocab + 4095) / 4096 * 4096);
        // Never below the old capacity: a larger token id can lower the cap (wider rows) after the
        // table has grown past the new one.
        const int64_t capacity =
            std::max({rows, old_rows, std::min(std::max<int64_t>(64, 2 * old_rows), max_token_rows(cols))});
        at::Tensor grown = at::zeros({capacity, cols}, at::TensorOptions().dtype(at::kLong).device(device));
        if (token_table.defined()) grown.narrow(0, 0, old_rows).narrow(1, 0, old_vocab).copy_(token_table);
        token_table = grown;
    }

    // Tallies the tokens at the hit positions of the dims with the most hit positions in a batch.
    // Counted where the hits are: one scatter-add of the [B,T,k] hit flags into per-dim rows of
    // token counters (counting on the host took 22 of 43 ms per batch on an H100: a map update per
    // hit); statistics() turns the rows into the sparse per-token tallies. The dims are picked on
    // the device at end_batch (PendingBatch::top_*); which counter row each dim gets is the host's
    // choice, made when the batch is finished (tally_pending).
    void tally_pending(PendingBatch & p);
    std::map<int, MassiveLayer> massive;

    // The batch in flight.
    bool in_batch = false;
    int64_t B = 0, T = 0;
    std::vector<int64_t> sequence_indices;  // [B]
    std::vector<int64_t> row_tokens;        // [B] real positions per row
    int64_t padded_positions = 0;
    at::Tensor token_ids;   // [B,T] int64 CPU (may be undefined)
    at::Tensor mask_cpu;    // [B,T] bool CPU, true = real (undefined: all real)
    at::Tensor pad_device;  // [B,T,1] bool, true = padding (undefined: no padding)
    // [B,T,H] uint8 0/1: some site hits (row, position, dim). Only "any site" is ever asked, so
    // this is a flag set by a store of 1 where a value hits (a count would wrap at 256 sites, and
    // the kernel would have to read-modify-write all of it per capture instead of storing rarely).
    at::Tensor pos_any;
    at::Tensor row_sites;   // [B,H] int32: sites with a hit in the row
    at::Tensor row_hits;    // [B,H] int64
    at::Tensor row_max;     // [B,H] float32 (max |x| over the row's values; a max among hits when >= thr)
    std::map<int, at::Tensor> row_layer_any;  // layer -> [B,H] bool
    int32_t batch_sites = 0;

    // Threshold sweep (options.sweep_thresholds, K of them). A value's level is the number of
    // thresholds it reaches; since they ascend, "reaches threshold k" is "level > k". pos_level
    // keeps, per (row, position, dim), which thresholds some site reaches as a thermometer code
    // (bit k set: threshold k reached; the max level over sites is the OR of the codes, which the
    // fused pass can write without reading); a row's per-capture max level says which thresholds
    // the site hits.
    at::Tensor pos_level;        // [B,T,H] uint8 (K <= 8) or int16 codes
    at::Tensor row_sweep_sites;  // [K,B,H] int32: sites reaching threshold k in the row
    std::map<int, at::Tensor> row_layer_level;  // layer -> [B,H] uint8 max level over its sites
    at::Tensor scratch_level;    // [B,H] int32 (fused pass; zero between captures)
    at::Tensor sweep_dim_positions;  // [K,H] int64 over the run

    // Per-expert statistics (`--expert-stats`), per MoE layer, on the layer's device.
    struct ExpertAccumulator {
        at::Tensor tokens, max_abs, hit_tokens;  // [E] int64, float32, int64
    };
    std::map<int, ExpertAccumulator> experts;
    at::Tensor real_tokens;  // [B*T] bool on the experts' device: not padding (this batch)

    // The fused pass: switched on (options, ANALYSIS_FUSED), its [B,H] int32 scratch for one
    // capture's per-row hit counts and max bits (zero between captures: the kernel leaves it so),
    // and how many captures it took.
    bool fused = false;
    at::Tensor scratch_hits, scratch_max;
    int64_t fused_captures = 0;
    int64_t fused_expert_captures = 0;

    // on_capture's phases (the per-capture hot path: tensors by reference, nothing copied or synced
    // beyond what the single function did), defined next to it.
    void check_capture(const std::string & label, const at::Tensor & x);
    void begin_captures(const AccumulatorOptions & options, const at::Tensor & x);
    void capture_massive(const AccumulatorOptions & options, int layer, const at::Tensor & x);
    SiteAccumulator & count_site(const AccumulatorOptions & options, extractor::Site site, int layer, const at::Tensor & x);
    void capture_aten(const AccumulatorOptions & options, SiteAccumulator & acc, int layer, const at::Tensor & x);
    void capture_aten_sweep(const AccumulatorOptions & options, SiteAccumulator & acc, int layer, const at::Tensor & x,
                            const at::Tensor & a);

    // end_batch's device part: the sweep's [K,B,H] sites, layers and positions per (row, dim), appended to fields.
    void sweep_fields(std::vector<at::Tensor> & fields);
    // The batch in flight to the host (end_batch queued it); finish_pending() waits for its copies
    // and adds its records, tallies and losses to the totals.
    std::optional<PendingBatch> pending;
    at::Tensor nll_in_flight;  // on_token_nll's losses of the open batch, fp64 on the device
    void finish_pending();

    // on_experts' two paths, defined next to it.
    void experts_aten(const AccumulatorOptions & options, ExpertAccumulator & e, const extractor::ExpertCapture & c) const;
#if ANALYSIS_HAS_CUDA_KERNELS
    bool experts_fused(const AccumulatorOptions & options, ExpertAccumulator & e, const extractor::ExpertCapture & c,
                       const std::string & label);
    bool fused_fits(const AccumulatorOptions & options, const SiteAccumulator & acc, const at::Tensor & x) const;
    void capture_fused(const AccumulatorOptions & options, SiteAccumulator & acc, int layer, const at::Tensor & x,
                       const std::string & label);
#endif
};

#if ANALYSIS_HAS_CUDA_KERNELS
bool OutlierAccumulator::State::fused_fits(const AccumulatorOptions & options, const SiteAccumulator & acc,
                                           const at::Tensor & x) const {
    const auto t = x.scalar_type();
    return fused && x.is_cuda() && (t == at::kBFloat16 || t == at::kHalf || t == at::kFloat) && x.numel() > 0 &&
           x.device() == pos_any.device() && x.device() == acc.hits.device() &&
           (!options.histogram || options.histogram_spec.bins <= cuda_kernels::kMaxHistogramBins);
}

void OutlierAccumulator::State::capture_fused(const AccumulatorOptions & options, SiteAccumulator & acc, int layer,
                                              const at::Tensor & x, const std::string & label) {
    const at::Tensor xc = x.contiguous();  // [B,T,H]
    if (!scratch_hits.defined()) {
        scratch_hits = at::zeros({B, hidden}, x.options().dtype(at::kInt));
        scratch_max = at::zeros({B, hidden}, x.options().dtype(at::kInt));
    }
    auto any = row_layer_any.find(layer);
    if (any == row_layer_any.end())
        any = row_layer_any.emplace(layer, at::zeros({B, hidden}, x.options().dtype(at::kBool))).first;

    cuda_kernels::CaptureArgs args;
    args.x = xc.data_ptr();
    args.x_dtype = kernel_dtype(x.scalar_type());
    args.round_bf16 = options.round_bf16;
    args.pad = pad_device.defined() ? static_cast<const uint8_t *>(pad_device.data_ptr()) : nullptr;  // [B,T,1] bool
    args.B = B;
    args.T = T;
    args.H = hidden;
    args.threshold = threshold_as(options.threshold, options.round_bf16 ? at::kBFloat16 : x.scalar_type());
    if (options.histogram) {
        // Wraps to int16 exactly as the ATen path's int16 sub_ converts its scalar.
        args.histogram_base = static_cast<int16_t>(histogram_base(options.histogram_spec));
        args.bins = options.histogram_spec.bins;
        args.histogram = reinterpret_cast<unsigned long long *>(acc.histogram.data_ptr<int64_t>());
    }
    args.pos_any = pos_any.data_ptr<uint8_t>();
    args.scratch_hits = scratch_hits.data_ptr<int32_t>();
    args.scratch_max = reinterpret_cast<uint32_t *>(scratch_max.data_ptr<int32_t>());
    args.row_sites = row_sites.data_ptr<int32_t>();
    args.row_hits = row_hits.data_ptr<int64_t>();
    args.row_max = row_max.data_ptr<float>();
    args.row_layer_any = reinterpret_cast<uint8_t *>(any->second.data_ptr<bool>());
    args.site_hits = reinterpret_cast<unsigned long long *>(acc.hits.data_ptr<int64_t>());
    args.site_max_abs = acc.max_abs.data_ptr<float>();
    args.site_nonfinite = reinterpret_cast<unsigned long long *>(acc.nonfinite.data_ptr<int64_t>());
    if (!options.sweep_thresholds.empty()) {
        args.sweep_k = static_cast<int>(options.sweep_thresholds.size());
        for (int k = 0; k < args.sweep_k; ++k)
            args.sweep_thresholds[k] = threshold_as(options.sweep_thresholds[static_cast<size_t>(k)],
                                                    options.round_bf16 ? at::kBFloat16 : x.scalar_type());
        if (!scratch_level.defined()) scratch_level = at::zeros({B, hidden}, x.options().dtype(at::kInt));
        auto level = row_layer_level.find(layer);
        if (level == row_layer_level.end())
            level = row_layer_level.emplace(layer, at::zeros({B, hidden}, x.options().dtype(at::kByte))).first;
        args.pos_level = pos_level.data_ptr();
        args.pos_level_bytes = static_cast<int>(pos_level.element_size());
        args.scratch_level = scratch_level.data_ptr<int32_t>();
        args.row_sweep_sites = row_sweep_sites.data_ptr<int32_t>();
        args.row_layer_level = level->second.data_ptr<uint8_t>();
        args.site_level = acc.sweep_level.data_ptr<int32_t>();
    }

    const c10::cuda::CUDAGuard guard(x.device());
    const cudaError_t e =
        cuda_kernels::accumulate_capture(args, c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
    if (e != cudaSuccess)
        throw common::Error::internal("analysis: " + label + ": fused capture kernel: " + cudaGetErrorString(e))
            .with("tensor", label);
    fused_captures += 1;
}
#endif

void OutlierAccumulator::State::sweep_fields(std::vector<at::Tensor> & fields) {
    const int64_t K = row_sweep_sites.size(0);
    at::Tensor positions = at::zeros_like(row_sweep_sites);  // [K,B,H] int32
    bool counted = false;
#if ANALYSIS_HAS_CUDA_KERNELS
    if (fused && pos_level.is_cuda() && pos_level.is_contiguous() && K <= cuda_kernels::kMaxSweepThresholds) {
        const c10::cuda::CUDAGuard guard(pos_level.device());
        const cudaError_t e = cuda_kernels::sweep_positions(pos_level.data_ptr(), static_cast<int>(pos_level.element_size()), B, T,
                                                            hidden, static_cast<int>(K), positions.data_ptr<int32_t>(),
                                                            c10::cuda::getCurrentCUDAStream(pos_level.device().index()).stream());
        if (e != cudaSuccess) throw common::Error::internal(std::string("analysis: sweep position kernel: ") + cudaGetErrorString(e));
        counted = true;
    }
#endif
    if (!counted)
        for (int64_t k = 0; k < K; ++k) positions.select(0, k).copy_(at::bitwise_right_shift(pos_level, k).bitwise_and(1).sum(1));
    sweep_dim_positions.add_(positions.sum(1));
    at::Tensor layers;  // [K,B,H] int32: layers whose max level in the row exceeds k
    if (!row_layer_level.empty()) {
        std::vector<at::Tensor> per_layer;
        for (const auto & [layer, t] : row_layer_level) per_layer.push_back(t);
        at::Tensor stacked = at::stack(per_layer);  // [L,B,H] uint8
        at::Tensor ks = at::arange(K, stacked.options()).view({K, 1, 1, 1});
        layers = stacked.unsqueeze(0).gt(ks).sum(1, /*keepdim=*/false, at::kInt);
    } else {
        layers = at::zeros_like(row_sweep_sites);
    }
    fields.push_back(row_sweep_sites);
    fields.push_back(layers);
    fields.push_back(positions);
}

void OutlierAccumulator::State::tally_pending(PendingBatch & p) {
    if (!p.top_dims.defined()) return;
    const at::Tensor & positions = p.top_positions.wait();
    const at::Tensor & top = p.top_dims.wait();
    // begin_batch held the ids to [0, kMaxTokenVocab), so this neither overflows nor sizes the table past its cap.
    const int64_t vocab = p.token_ids.max().item<int64_t>() + 1;
    if (vocab <= 0 || vocab > kMaxTokenVocab)
        throw common::Error::internal("analysis: token tallies: a token id outside [0, " + std::to_string(kMaxTokenVocab) + ")");
    std::vector<int64_t> rows, picks;
    for (int64_t k = 0; k < top.numel() && positions.data_ptr<int64_t>()[k] > 0; ++k) {
        const auto dim = static_cast<int32_t>(top.data_ptr<int64_t>()[k]);
        const int64_t row = token_row_of(dim, vocab);
        if (row < 0) continue;
        token_hits_batches[dim] += 1;
        rows.push_back(row);
        picks.push_back(k);
    }
    if (rows.empty()) return;
    const auto dev = p.top_hit.device();
    {
        extractor::ops::ProfileScope profile("analysis.tally_table");
        ensure_token_table(vocab, dev);
    }
    extractor::ops::ProfileScope profile("analysis.tally_scatter");
    const int64_t V = token_table.size(1);
    const auto n = static_cast<int64_t>(rows.size());
    at::Tensor hit = p.top_hit.index_select(2, extractor::to_device_async(at::from_blob(picks.data(), {n}, at::kLong), dev));  // [B,T,n]
    at::Tensor row = extractor::to_device_async(at::from_blob(rows.data(), {n}, at::kLong), dev);                            // [n]
    at::Tensor idx = row.view({1, 1, -1}) * V + extractor::to_device_async(p.token_ids, dev).unsqueeze(2);                   // [B,T,n]
    token_table.view({-1}).scatter_add_(0, idx.reshape({-1}), hit.reshape({-1}).to(at::kLong));
}

void OutlierAccumulator::State::finish_pending() {
    if (!pending) return;
    // statistics() may run after the forward's InferenceMode has ended, and the token table it
    // updates was made inside it (an inference tensor: updated in place only in that mode).
    const c10::InferenceMode inference;
    PendingBatch p = std::move(*pending);
    pending.reset();
    if (p.counts.defined()) {
        extractor::ops::ProfileScope profile("analysis.records");
        const at::Tensor & counts = p.counts.wait();  // [F,B,H] int32
        const at::Tensor & hits = p.hits.wait();      // [B,H] int64
        const at::Tensor & maxima = p.maxima.wait();  // [B,H] float32
        const int64_t Bp = hits.size(0), H = hits.size(1), K = p.sweep_k, plane = Bp * H;
        const int32_t * c = counts.data_ptr<int32_t>();
        const int64_t * n = hits.data_ptr<int64_t>();
        const float * mx = maxima.data_ptr<float>();
        for (int64_t b = 0; b < Bp; ++b) {
            auto & r = p.records[static_cast<size_t>(b)];
            for (int64_t h = 0; h < H; ++h) {
                const int64_t i = b * H + h;
                if (n[i] > 0)
                    r.dims.push_back({static_cast<int32_t>(h), c[i], c[plane + i], c[2 * plane + i], n[i], mx[i]});
                // The sweep: every dim reaching the lowest threshold, with per threshold its sites,
                // layers and positions (fields 3.. are K planes of each).
                if (K > 0 && c[3 * plane + i] > 0) {
                    r.sweep.push_back(static_cast<int32_t>(h));
                    for (int64_t k = 0; k < K; ++k)
                        for (int64_t f = 0; f < 3; ++f) r.sweep.push_back(c[(3 + f * K + k) * plane + i]);
                }
            }
        }
    }
    {
        extractor::ops::ProfileScope profile("analysis.tally");
        tally_pending(p);
    }
    if (p.nll.defined()) {
        std::vector<int64_t> indices;
        for (const auto & r : p.records) indices.push_back(r.sequence_index);
        perplexity = true;
        for (auto & r : extractor::sequence_nll(p.nll.wait(), indices)) perplexity_sequences.push_back(std::move(r));
    }
    if (p.counts.defined())
        for (auto & r : p.records) per_sequence.push_back(std::move(r));
}

OutlierAccumulator::OutlierAccumulator(AccumulatorOptions options)
    : options_(std::move(options)), state_(std::make_unique<State>()) {
    if (!(options_.threshold > 0))
        throw common::Error::usage("analysis: threshold must be positive, got " + std::to_string(options_.threshold));
    if (options_.histogram_spec.bins_per_octave != 4 || options_.histogram_spec.bins <= 0)
        throw common::Error::usage("analysis: histogram needs 4 bins per octave and a positive bin count");
    const auto & sweep = options_.sweep_thresholds;
    if (sweep.size() > static_cast<size_t>(kMaxSweepThresholds))
        throw common::Error::usage("analysis: at most " + std::to_string(kMaxSweepThresholds) + " sweep thresholds, got " +
                                   std::to_string(sweep.size()));
    for (size_t k = 0; k < sweep.size(); ++k)
        if (!(sweep[k] > 0) || !std::isfinite(sweep[k]) || (k > 0 && !(sweep[k] > sweep[k - 1])))
            throw common::Error::usage("analysis: sweep thresholds must be positive, finite and ascending (item " +
                                       std::to_string(k + 1) + " is " + std::to_string(sweep[k]) + ")");
    const char * env = std::getenv("ANALYSIS_FUSED");
    state_->fused = options_.cuda_kernels && !(env && std::string(env) == "0");
}

std::vector<double> parse_thresholds(const std::string & text) {
    std::vector<double> out;
    size_t start = 0;
    while (start <= text.size()) {
        const size_t comma = std::min(text.find(',', start), text.size());
        const std::string item = text.substr(start, comma - start);
        double v = 0;
        size_t used = 0;
        try {
            v = std::stod(item, &used);
        } catch (const std::exception &) {
            used = 0;
        }
        if (item.empty() || used != item.size() || !(v > 0) || !std::isfinite(v))
            throw common::Error::usage("--thresholds: \"" + item.substr(0, 40) + "\" is not a positive number (give e.g. 3,4,5,6,8,10,20)");
        out.push_back(v);
        start = comma + 1;
    }
    std::sort(out.begin(), out.end());
    if (std::adjacent_find(out.begin(), out.end()) != out.end())
        throw common::Error::usage("--thresholds: a threshold is given twice");
    if (out.size() > static_cast<size_t>(kMaxSweepThresholds))
        throw common::Error::usage("--thresholds: at most " + std::to_string(kMaxSweepThresholds) + " thresholds, got " +
                                   std::to_string(out.size()));
    return out;
}

OutlierAccumulator::~OutlierAccumulator() = default;

namespace {

// The batch's token ids, before anything is sized or indexed by them: integers [B,T] in
// [0, kMaxTokenVocab). A negative id crashed the tallies' scatter (a libtorch error, exit 1), a huge
// one sized them by gigabytes, 2^62 overflowed the vocabulary.
void check_batch_info(const extractor::BatchInfo & batch) {
    const at::Tensor & mask = batch.attention_mask;
    if (mask.defined()) {  // a [1] or [T] mask broadcast in libtorch and failed there, with its backtrace
        const bool rows_ok = batch.sequence_indices.empty() || mask.size(0) == static_cast<int64_t>(batch.sequence_indices.size());
        if (mask.dim() != 2 || !rows_ok || (batch.token_ids.defined() && mask.sizes() != batch.token_ids.sizes()))
            throw common::Error::usage("analysis: attention_mask: expected [B,T] like token_ids, got " + shape_text(mask))
                .with("tensor", "attention_mask");
    }
    const at::Tensor & ids = batch.token_ids;
    if (!ids.defined()) return;
    if (ids.dim() != 2)
        throw common::Error::usage("analysis: token_ids: expected [B,T], got " + shape_text(ids)).with("tensor", "token_ids");
    if (at::isFloatingType(ids.scalar_type()) || at::isComplexType(ids.scalar_type()) || ids.scalar_type() == at::kBool)
        throw common::Error::usage(std::string("analysis: token_ids: expected integers, got ") + c10::toString(ids.scalar_type()))
            .with("tensor", "token_ids");
    if (!batch.sequence_indices.empty() && ids.size(0) != static_cast<int64_t>(batch.sequence_indices.size()))
        throw common::Error::usage("analysis: token_ids: " + std::to_string(ids.size(0)) + " rows for " +
                                   std::to_string(batch.sequence_indices.size()) + " sequence indices")
            .with("tensor", "token_ids");
    if (ids.numel() == 0) return;
    const at::Tensor wide = ids.to(at::kLong);
    const int64_t lo = wide.min().item<int64_t>(), hi = wide.max().item<int64_t>();
    if (lo < 0 || hi >= kMaxTokenVocab)
        throw common::Error::usage("analysis: token_ids: id " + std::to_string(lo < 0 ? lo : hi) + " is outside [0, " +
                                   std::to_string(kMaxTokenVocab) + ")")
            .with("tensor", "token_ids");
}

}  // namespace

bool OutlierAccumulator::wants(extractor::Site site, int) const {
    return site != extractor::Site::Residual || options_.massive_top_k > 0;
}

void OutlierAccumulator::begin_batch(const extractor::BatchInfo & batch) {
    auto & s = *state_;
    if (s.in_batch) throw common::Error::internal("analysis: begin_batch while a batch is open");
    check_batch_info(batch);
    s.in_batch = true;
    s.sequence_indices = batch.sequence_indices;
    s.token_ids = batch.token_ids.defined() ? batch.token_ids.to(at::kLong).contiguous() : at::Tensor();
    s.mask_cpu = batch.attention_mask.defined() ? batch.attention_mask.ne(0).contiguous() : at::Tensor();
    s.B = static_cast<int64_t>(batch.sequence_indices.size());
    s.T = s.token_ids.defined() ? s.token_ids.size(1) : (s.mask_cpu.defined() ? s.mask_cpu.size(1) : -1);
    s.pad_device = at::Tensor();
    s.pos_any = at::Tensor();
    s.scratch_hits = at::Tensor();
    s.scratch_max = at::Tensor();
    s.row_layer_any.clear();
    s.batch_sites = 0;
    s.pos_level = at::Tensor();
    s.row_sweep_sites = at::Tensor();
    s.row_layer_level.clear();
    s.scratch_level = at::Tensor();
    s.real_tokens = at::Tensor();
}

// on_capture, phase 1: refuses a capture whose shape does not fit the batch (the first fixes B, T and H).
void OutlierAccumulator::State::check_capture(const std::string & label, const at::Tensor & x) {
    if (x.dim() != 3)
        throw common::Error::usage("analysis: " + label + ": expected a [B,T,H] tensor, got " + shape_text(x))
            .with("tensor", label);
    // Integers were thresholded as values (every dim an outlier); an empty capture failed in amax.
    if (!at::isFloatingType(x.scalar_type()))
        throw common::Error::usage("analysis: " + label + ": a capture must be floating point, got " + std::string(c10::toString(x.scalar_type())))
            .with("tensor", label);
    if (x.numel() == 0)
        throw common::Error::usage("analysis: " + label + ": empty capture " + shape_text(x)).with("tensor", label);
    if (B == 0) {  // a BatchInfo without rows: number them after the ones seen so far
        B = x.size(0);
        for (int64_t b = 0; b < B; ++b) sequence_indices.push_back(sequences + b);
    }
    if (T < 0) T = x.size(1);
    if (x.size(0) != B || x.size(1) != T)
        throw common::Error::usage("analysis: " + label + ": shape " + shape_text(x) + " does not match the batch [" +
                                   std::to_string(B) + "," + std::to_string(T) + ",H]")
            .with("tensor", label);
    if (hidden == 0) hidden = x.size(2);
    if (x.size(2) != hidden)
        throw common::Error::usage("analysis: " + label + ": hidden size " + std::to_string(x.size(2)) +
                                   " differs from the earlier sites' " + std::to_string(hidden))
            .with("tensor", label);
}

// on_capture, phase 2: the first capture of the batch allocates the per-batch state on its device.
void OutlierAccumulator::State::begin_captures(const AccumulatorOptions & options, const at::Tensor & x) {
    const int64_t H = hidden;
    const auto device = x.device();
    row_tokens.assign(static_cast<size_t>(B), T);
    padded_positions = 0;
    if (mask_cpu.defined()) {
        auto lens = mask_cpu.sum(1).to(at::kLong).contiguous();
        for (int64_t b = 0; b < B; ++b) row_tokens[static_cast<size_t>(b)] = lens.data_ptr<int64_t>()[b];
        for (auto n : row_tokens) padded_positions += T - n;
        if (padded_positions > 0) pad_device = mask_cpu.logical_not().unsqueeze(2).to(device);
    }
    pos_any = at::zeros({B, T, H}, x.options().dtype(at::kByte));
    row_sites = at::zeros({B, H}, x.options().dtype(at::kInt));
    row_hits = at::zeros({B, H}, x.options().dtype(at::kLong));
    row_max = at::zeros({B, H}, x.options().dtype(at::kFloat));
    if (!options.sweep_thresholds.empty()) {
        const auto K = static_cast<int64_t>(options.sweep_thresholds.size());
        // Thermometer codes (State::pos_level): a byte each up to 8 thresholds, else two; the
        // allocation rounded up to whole 32-bit words for the fused pass's atomics.
        const bool wide = K > 8;
        const int64_t n = B * T * H, per_word = wide ? 2 : 4;
        pos_level = at::zeros({(n + per_word - 1) / per_word * per_word}, x.options().dtype(wide ? at::kShort : at::kByte))
                        .narrow(0, 0, n)
                        .view({B, T, H});
        row_sweep_sites = at::zeros({K, B, H}, x.options().dtype(at::kInt));
        if (!sweep_dim_positions.defined()) sweep_dim_positions = at::zeros({K, H}, x.options().dtype(at::kLong));
    }
}

// on_capture, residual sites (`--massive`): the only captures that feed massive activations.
void OutlierAccumulator::State::capture_massive(const AccumulatorOptions & options, int layer, const at::Tensor & x) {
    const int64_t H = hidden;
    const auto device = x.device();
    // Massive activations: per row, the median |x| and the top-k |x| over real positions.
    auto a = x.abs().to(at::kFloat);  // [B,T,H]
    auto & ml = massive[layer];
    ml.layer = layer;
    for (int64_t b = 0; b < B; ++b) {
        auto row = a.select(0, b);  // [T,H]
        at::Tensor positions;       // real positions of this row, as indices into T
        if (mask_cpu.defined() && row_tokens[static_cast<size_t>(b)] < T) {
            positions = mask_cpu.select(0, b).nonzero().view({-1});
            row = row.index_select(0, positions.to(device));
        }
        if (row.numel() == 0) continue;
        auto flat = row.reshape({-1});
        const float median = flat.median().item<float>();
        const int64_t k = std::min<int64_t>(options.massive_top_k, flat.numel());
        auto top = flat.topk(k);
        auto values = std::get<0>(top).cpu().contiguous();
        auto index = std::get<1>(top).cpu().contiguous();
        const int64_t seq = sequence_indices[static_cast<size_t>(b)];
        for (int64_t i = 0; i < k; ++i) {
            const int64_t flat_i = index.data_ptr<int64_t>()[i];
            int64_t t = flat_i / H;
            if (positions.defined()) t = positions.data_ptr<int64_t>()[t];
            const int64_t token = token_ids.defined() ? token_ids.data_ptr<int64_t>()[b * T + t] : -1;
            ml.top.push_back({values.data_ptr<float>()[i], seq, t, static_cast<int32_t>(flat_i % H), median, token});
        }
        ml.medians.emplace_back(seq, median);
    }
    std::sort(ml.top.begin(), ml.top.end(), [](const MassiveEntry & p, const MassiveEntry & q) {
        if (p.abs_value != q.abs_value) return p.abs_value > q.abs_value;
        if (p.sequence_index != q.sequence_index) return p.sequence_index < q.sequence_index;
        if (p.position != q.position) return p.position < q.position;
        return p.dim < q.dim;
    });
    if (static_cast<int>(ml.top.size()) > options.massive_top_k) ml.top.resize(static_cast<size_t>(options.massive_top_k));
}

// on_capture, layer-norm sites: the site's accumulator (made at its first capture) with this capture's elements and rows counted.
SiteAccumulator & OutlierAccumulator::State::count_site(const AccumulatorOptions & options, extractor::Site site, int layer,
                                                       const at::Tensor & x) {
    const int64_t H = hidden;
    const auto key = std::make_pair(layer, site_code(site));
    auto found = site_index.find(key);
    if (found == site_index.end()) {
        found = site_index.emplace(key, sites.size()).first;
        sites.push_back({layer, ln_site_name(site)});
        SiteAccumulator fresh;
        fresh.hits = at::zeros({H}, x.options().dtype(at::kLong));
        fresh.max_abs = at::zeros({H}, x.options().dtype(at::kFloat));
        fresh.histogram = at::zeros({options.histogram_spec.bins}, x.options().dtype(at::kLong));
        fresh.nonfinite = at::zeros({1}, x.options().dtype(at::kLong));
        if (!options.sweep_thresholds.empty()) fresh.sweep_level = at::zeros({H}, x.options().dtype(at::kInt));
        this->acc.push_back(std::move(fresh));
    }
    auto & site_acc = this->acc[found->second];
    int64_t real = 0;
    for (auto n : row_tokens) real += n;
    site_acc.elements += real * H;
    site_acc.padded_elements += padded_positions * H;
    site_acc.sequences += B;
    batch_sites += 1;
    return site_acc;
}

// on_capture, layer-norm sites: the ATen reference pass (CPU, other dtypes, or the fused kernel off or not built).
void OutlierAccumulator::State::capture_aten(const AccumulatorOptions & options, SiteAccumulator & acc, int layer, const at::Tensor & x) {
    // The predecessor cast every capture to bf16 before thresholding, even in fp32 runs
    // (docs/outlier-method.md#rounding).
    at::Tensor v = x;
    if (options.round_bf16 && v.scalar_type() != at::kBFloat16) v = v.to(at::kBFloat16);
    at::Tensor a = v.abs();                                 // [B,T,H], values' dtype
    if (pad_device.defined()) a.masked_fill_(pad_device, 0);
    at::Tensor row_max = at::amax(a, {1}).to(at::kFloat);   // [B,H]
    at::Tensor hit = a.ge(options.threshold);              // [B,T,H] bool (the scalar takes a's dtype, as in torch)
    at::Tensor row_hits = hit.sum(1);                       // [B,H] int64
    at::Tensor row_any = row_hits.gt(0);                    // [B,H] bool

    acc.hits.add_(row_hits.sum(0));
    acc.max_abs = at::maximum(acc.max_abs, at::amax(row_max, {0}));
    // Non-finite values never hit and amax/maximum only propagate them into max |x|: counted here
    // (padding is 0 by now), as the fused pass counts them (CaptureArgs::site_nonfinite).
    acc.nonfinite.add_(at::isfinite(a).logical_not().sum());
    if (options.histogram) {
        // Binned by the bf16 bit pattern (exact integer counts, no log pass): see HistogramSpec.
        // The sign bit is cleared as the fused pass clears it: abs() may leave a NaN negative,
        // whose bits then binned it into bin 0 among the zeros instead of the last bin.
        at::Tensor bits = (a.scalar_type() == at::kBFloat16 ? a : a.to(at::kBFloat16)).view(at::kShort).bitwise_and(0x7fff);
        at::Tensor bin = at::bitwise_right_shift(bits, 5).sub_(histogram_base(options.histogram_spec))
                             .clamp_(0, options.histogram_spec.bins - 1);
        // histc rather than bincount: CUDA bincount reads the input's min/max back to the host (a
        // sync per capture); histc with a fixed range does not. Doubles keep the counts exact.
        const auto bins = options.histogram_spec.bins;
        acc.histogram.add_(at::histc(bin.to(at::kDouble), bins, 0, bins).to(at::kLong));
    }

    row_sites.add_(row_any);
    this->row_hits.add_(row_hits);  // the batch's [B,H] members += this capture's locals of the same name
    this->row_max = at::maximum(this->row_max, row_max);
    auto any = row_layer_any.find(layer);
    if (any == row_layer_any.end()) row_layer_any.emplace(layer, row_any);
    else any->second.logical_or_(row_any);
    pos_any.masked_fill_(hit, 1);

    if (!options.sweep_thresholds.empty()) capture_aten_sweep(options, acc, layer, x, a);
}

// capture_aten's threshold sweep: each value's level (sweep thresholds it reaches), folded into the sweep state.
void OutlierAccumulator::State::capture_aten_sweep(const AccumulatorOptions & options, SiteAccumulator & acc, int layer, const at::Tensor & x,
                                                   const at::Tensor & a) {
    // Level of each value: how many sweep thresholds it reaches (compared in a's dtype, as the
    // primary threshold above; padding is 0 and reaches none).
    const auto & sweep = options.sweep_thresholds;
    const auto K = static_cast<int64_t>(sweep.size());
    at::Tensor level = at::zeros(a.sizes(), a.options().dtype(at::kByte));  // [B,T,H]
    at::Tensor code = at::zeros(a.sizes(), a.options().dtype(at::kInt));    // [B,T,H] thermometer: bit k = reaches k
    for (size_t k = 0; k < sweep.size(); ++k) {
        at::Tensor reached = a.ge(sweep[k]);
        level.add_(reached);
        code.add_(reached.to(at::kInt).mul_(int64_t{1} << k));
    }
    pos_level.bitwise_or_(code.to(pos_level.scalar_type()));  // bit 15 wraps into int16's sign bit: the same bits
    at::Tensor row_level = at::amax(level, {1});  // [B,H] uint8
    at::Tensor ks = at::arange(K, x.options().dtype(at::kByte)).view({K, 1, 1});
    row_sweep_sites.add_(row_level.unsqueeze(0).gt(ks).to(at::kInt));
    auto lv = row_layer_level.find(layer);
    if (lv == row_layer_level.end()) row_layer_level.emplace(layer, row_level);
    else lv->second = at::maximum(lv->second, row_level);
    acc.sweep_level = at::maximum(acc.sweep_level, at::amax(row_level, {0}).to(at::kInt));
}

void OutlierAccumulator::on_capture(extractor::Site site, int layer, const at::Tensor & x_in) {
    auto & s = *state_;
    if (!s.in_batch) throw common::Error::internal("analysis: capture outside begin_batch/end_batch");
    const std::string label = site_label(site, layer);
    s.check_capture(label, x_in);
    if (s.row_tokens.size() != static_cast<size_t>(s.B) || !s.pos_any.defined()) s.begin_captures(options_, x_in);
    // With the layers split over GPUs (extract's multi-GPU placement), later layers capture on
    // later GPUs, while the batch's state lives where its first capture was: copy those over (one
    // [B,T,H] device-to-device copy per capture) instead of failing on mixed devices.
    const at::Tensor x = x_in.device() == s.pos_any.device() ? x_in : x_in.to(s.pos_any.device());

    if (site == extractor::Site::Residual) {
        if (options_.massive_top_k <= 0) return;
        s.capture_massive(options_, layer, x);
        return;
    }

    auto & acc = s.count_site(options_, site, layer, x);

#if ANALYSIS_HAS_CUDA_KERNELS
    if (s.fused_fits(options_, acc, x)) {
        s.capture_fused(options_, acc, layer, x, label);
        return;
    }
#endif

    s.capture_aten(options_, acc, layer, x);
}

void OutlierAccumulator::warm_up(const at::Tensor & example) {
    if (example.dim() != 3 || example.numel() == 0) return;
    OutlierAccumulator scratch(options_);
    extractor::BatchInfo batch;
    for (int64_t b = 0; b < example.size(0); ++b) batch.sequence_indices.push_back(b);
    batch.token_ids = at::zeros({example.size(0), example.size(1)}, at::kLong);  // token tallies run too
    // Two batches: hits in every dim, then in two dims only. ATen picks its kernels by size (an
    // index_select of <= 16 indices runs another kernel than one of more), and loading the one not
    // yet used cost 54 ms in the first real batch on an H100.
    at::Tensor few = example.clone();
    if (few.size(2) > 2) few.narrow(2, 2, few.size(2) - 2).zero_();
    for (const at::Tensor & x : {example, few}) {
        scratch.begin_batch(batch);
        scratch.on_capture(extractor::Site::LnAttn, 0, x);
        scratch.on_capture(extractor::Site::LnMlp, 0, x);
        scratch.end_batch();
    }
    // A batch's records and tallies are made when the next one ends: this folds the second batch
    // in, so its tally's small index_select runs here too.
    (void)scratch.statistics();
}

void OutlierAccumulator::end_batch() {
    auto & s = *state_;
    if (!s.in_batch) throw common::Error::internal("analysis: end_batch without begin_batch");
    s.in_batch = false;
    s.batches += 1;
    {
        extractor::ops::ProfileScope profile("analysis.finish_pending");
        s.finish_pending();  // the batch before: its copies ran while this batch's forward was queued
    }
    extractor::ops::ProfileScope profile_device("analysis.end_batch_device");
    PendingBatch p;
    p.records.resize(s.sequence_indices.size());
    for (size_t b = 0; b < s.sequence_indices.size(); ++b) p.records[b].sequence_index = s.sequence_indices[b];
    if (s.nll_in_flight.defined()) {
        p.nll = extractor::HostTransfer(s.nll_in_flight);
        s.nll_in_flight = at::Tensor();
    }
    const int64_t B = s.B;
    if (!s.pos_any.defined()) {  // no layer-norm capture in this batch: nothing was measured
        if (p.nll.defined()) s.pending = std::move(p);
        s.B = 0;
        return;
    }
    const int64_t T = s.T, H = s.hidden;
    const auto opts = s.pos_any.options();
    if (T * std::max(s.batch_sites, 1) > std::numeric_limits<int32_t>::max())
        throw common::Error::internal("analysis: " + std::to_string(T) + " positions x " + std::to_string(s.batch_sites) +
                                      " sites overflow the per-row int32 counters");

    at::Tensor pos_hit = s.pos_any.view(at::kBool);  // [B,T,H] bool: any site hits (the flags are 0/1)
    // Counts summed straight into int32 (one kernel each, no int64 temporaries); a few kernels
    // less per batch matter at the end of every batch.
    at::Tensor row_positions = pos_hit.sum(1, /*keepdim=*/false, at::kInt);    // [B,H]
    at::Tensor batch_positions = pos_hit.sum(0, /*keepdim=*/false, at::kInt);  // [T,H]
    if (!s.position_hits.defined()) s.position_hits = at::zeros({0, H}, opts.dtype(at::kInt));
    if (s.position_hits.size(0) < T)
        s.position_hits = at::cat({s.position_hits, at::zeros({T - s.position_hits.size(0), H}, opts.dtype(at::kInt))});
    s.position_hits.narrow(0, 0, T).add_(batch_positions);

    std::vector<at::Tensor> layer_any;
    for (auto & [layer, t] : s.row_layer_any) layer_any.push_back(t);
    at::Tensor row_layers = at::stack(layer_any).sum(0, /*keepdim=*/false, at::kInt);  // [B,H]

    // Dense [B,H] planes leave the device (a few hundred KB a batch, without blocking); the host
    // keeps the (row, dim) pairs with a hit, in row-major order (rows, then dims ascending). Every
    // plane is int32 already.
    std::vector<at::Tensor> fields = {s.row_sites.unsqueeze(0), row_layers.unsqueeze(0), row_positions.unsqueeze(0)};
    if (!options_.sweep_thresholds.empty()) {
        s.sweep_fields(fields);
        p.sweep_k = s.row_sweep_sites.size(0);
    }
    p.counts = extractor::HostTransfer(at::cat(fields));
    p.hits = extractor::HostTransfer(s.row_hits);
    p.maxima = extractor::HostTransfer(s.row_max);

    for (int64_t b = 0; b < B; ++b) {
        auto & r = p.records[static_cast<size_t>(b)];
        r.tokens = s.row_tokens[static_cast<size_t>(b)];
        r.sites = s.batch_sites;
        r.layers = static_cast<int32_t>(s.row_layer_any.size());
        s.tokens += r.tokens;
    }
    s.sequences += B;

    // Token tallies for the dims with the most hit positions in this batch: picked here, on the device.
    if (s.token_ids.defined() && options_.token_dims_per_batch > 0) {
        auto top = row_positions.sum(0).topk(std::min<int64_t>(options_.token_dims_per_batch, H));  // [k] positions per dim
        p.top_positions = extractor::HostTransfer(std::get<0>(top));
        p.top_dims = extractor::HostTransfer(std::get<1>(top));
        p.top_hit = pos_hit.index_select(2, std::get<1>(top));  // [B,T,k]
        p.token_ids = s.token_ids;
    }
    s.pending = std::move(p);

    s.pos_any = at::Tensor();
    s.scratch_hits = at::Tensor();
    s.scratch_max = at::Tensor();
    s.row_layer_any.clear();
    s.pad_device = at::Tensor();
    s.pos_level = at::Tensor();
    s.row_sweep_sites = at::Tensor();
    s.row_layer_level.clear();
    s.scratch_level = at::Tensor();
    s.real_tokens = at::Tensor();
    s.B = 0;
    s.T = -1;
}

bool OutlierAccumulator::wants_experts(int) const { return options_.expert_stats; }

void OutlierAccumulator::on_experts(int layer, const extractor::ExpertCapture & c) {
    auto & s = *state_;
    if (!s.in_batch) throw common::Error::internal("analysis: expert capture outside begin_batch/end_batch");
    const std::string label = "layer_" + std::to_string(layer) + "_experts";
    const int64_t S = c.slot_row.numel();
    if (c.down.dim() != 2 || c.top_i.dim() != 2 || c.down.size(0) != S || c.top_i.numel() != S || c.experts <= 0)
        throw common::Error::internal("analysis: " + label + ": expert capture of inconsistent shapes (down " + shape_text(c.down) +
                                      ", top_i " + shape_text(c.top_i) + ", slot_row " + shape_text(c.slot_row) + ")");
    const auto device = c.down.device();
    auto found = s.experts.find(layer);
    if (found == s.experts.end()) {
        OutlierAccumulator::State::ExpertAccumulator e;
        e.tokens = at::zeros({c.experts}, c.down.options().dtype(at::kLong));
        e.max_abs = at::zeros({c.experts}, c.down.options().dtype(at::kFloat));
        e.hit_tokens = at::zeros({c.experts}, c.down.options().dtype(at::kLong));
        found = s.experts.emplace(layer, std::move(e)).first;
    }
    auto & e = found->second;
    if (e.tokens.size(0) != c.experts || e.tokens.device() != device)
        throw common::Error::internal("analysis: " + label + ": the expert count or device changed between batches");
    // Padding is not data: only real tokens count (the mask of this batch's B*T tokens).
    const int64_t n = c.top_i.size(0);
    if (s.mask_cpu.defined()) {
        if (!s.real_tokens.defined() || s.real_tokens.device() != device) s.real_tokens = s.mask_cpu.reshape({-1}).to(device);
        if (c.first_token + n > s.real_tokens.numel())
            throw common::Error::internal("analysis: " + label + ": tokens beyond the batch");
    }
#if ANALYSIS_HAS_CUDA_KERNELS
    if (s.experts_fused(options_, e, c, label)) return;
#endif
    s.experts_aten(options_, e, c);
}

#if ANALYSIS_HAS_CUDA_KERNELS
// on_experts on the GPU: one kernel pass (accumulate_kernels.h accumulate_experts). False where it does
// not apply (switched off, on the CPU, an unsupported dtype, more experts than it tallies).
bool OutlierAccumulator::State::experts_fused(const AccumulatorOptions & options, ExpertAccumulator & e,
                                              const extractor::ExpertCapture & c, const std::string & label) {
    const auto device = c.down.device();
    const int64_t S = c.slot_row.numel(), n = c.top_i.size(0), K = c.top_i.size(1);
    if (!(fused && c.down.is_cuda() && c.experts <= cuda_kernels::kMaxExperts && c.down.numel() > 0 &&
          (c.down.scalar_type() == at::kBFloat16 || c.down.scalar_type() == at::kHalf || c.down.scalar_type() == at::kFloat)))
        return false;
    // One kernel: the slot maxima the fused combine handed over (or one read of each routed row),
    // tallied per expert in shared memory; experts_aten reads [S,H] again and settles S contended
    // atomics per statistic.
    const at::Tensor down = c.down.contiguous();
    const at::Tensor slot_row = c.slot_row.scalar_type() == at::kInt ? c.slot_row.contiguous() : c.slot_row.to(at::kLong).contiguous();
    const at::Tensor expert = c.top_i.reshape({-1}).to(at::kLong).contiguous();  // [S]
    cuda_kernels::ExpertArgs args;
    args.down = down.data_ptr();
    args.down_dtype = kernel_dtype(down.scalar_type());
    args.round_bf16 = options.round_bf16;
    args.H = down.size(1);
    args.S = S;
    args.K = static_cast<int>(K);
    args.E = static_cast<int>(c.experts);
    at::Tensor slot_max;  // [S] fp32, computed by the fused MoE combine
    if (c.slot_max.defined() && c.slot_max.device() == device && c.slot_max.numel() == S) {
        slot_max = c.slot_max.to(at::kFloat).contiguous();
        args.slot_max = slot_max.data_ptr<float>();
    }
    args.slot_row = slot_row.data_ptr();
    args.slot_row_int64 = slot_row.scalar_type() == at::kLong;
    args.expert = expert.data_ptr<int64_t>();
    at::Tensor real;  // [n] uint8
    if (mask_cpu.defined()) {
        real = real_tokens.narrow(0, c.first_token, n).to(at::kByte).contiguous();
        args.real = real.data_ptr<uint8_t>();
    }
    args.threshold = threshold_as(options.threshold, options.round_bf16 ? at::kBFloat16 : down.scalar_type());
    args.tokens = reinterpret_cast<unsigned long long *>(e.tokens.data_ptr<int64_t>());
    args.hit_tokens = reinterpret_cast<unsigned long long *>(e.hit_tokens.data_ptr<int64_t>());
    args.max_abs = e.max_abs.data_ptr<float>();
    const c10::cuda::CUDAGuard guard(device);
    const cudaError_t err = cuda_kernels::accumulate_experts(args, c10::cuda::getCurrentCUDAStream(device.index()).stream());
    if (err != cudaSuccess)
        throw common::Error::internal("analysis: " + label + ": fused expert kernel: " + cudaGetErrorString(err))
            .with("tensor", label);
    fused_expert_captures += 1;
    return true;
}
#endif

// on_experts' ATen path (the CPU, and the GPU with the fused pass off).
void OutlierAccumulator::State::experts_aten(const AccumulatorOptions & options, ExpertAccumulator & e,
                                             const extractor::ExpertCapture & c) const {
    const int64_t S = c.slot_row.numel(), n = c.top_i.size(0), K = c.top_i.size(1);
    // max |x| per row in one pass (the inf-norm); bf16 rounding is monotone, so rounding the max
    // equals the max of the rounded values (the layer-norm sites' rule, docs/outlier-method.md#rounding).
    at::Tensor slot_max;  // [S] slot order, in down's dtype (every max |x| is one of its values)
    if (c.slot_max.defined() && c.slot_max.numel() == S) {
        slot_max = c.slot_max.to(c.down.scalar_type());
    } else {
        at::Tensor row_max = at::linalg_vector_norm(c.down, std::numeric_limits<double>::infinity(), at::IntArrayRef{1});  // [S]
        slot_max = row_max.index_select(0, c.slot_row.to(at::kLong));
    }
    if (options.round_bf16 && slot_max.scalar_type() != at::kBFloat16) slot_max = slot_max.to(at::kBFloat16);
    at::Tensor slot_hit = slot_max.ge(options.threshold);                        // [S]
    at::Tensor expert = c.top_i.reshape({-1}).to(at::kLong);                      // [S]
    at::Tensor real;
    if (mask_cpu.defined()) {
        real = real_tokens.narrow(0, c.first_token, n).unsqueeze(1).expand({n, K}).reshape({-1});  // [S]
        slot_hit = slot_hit.logical_and(real);
    }
    e.tokens.index_add_(0, expert, real.defined() ? real.to(at::kLong) : at::ones({S}, expert.options()));
    e.hit_tokens.index_add_(0, expert, slot_hit.to(at::kLong));
    at::Tensor m = slot_max.to(at::kFloat);
    if (real.defined()) m = m.masked_fill(real.logical_not(), 0);
    e.max_abs.scatter_reduce_(0, expert, m, "amax", /*include_self=*/true);
}

void OutlierAccumulator::on_token_nll(const at::Tensor & nll) {
    auto & s = *state_;
    if (!s.in_batch) throw common::Error::internal("analysis: token losses outside begin_batch/end_batch");
    if (nll.dim() != 2 || nll.size(0) != static_cast<int64_t>(s.sequence_indices.size()))
        throw common::Error::internal("analysis: token NLL of " + shape_text(nll) + " for " + std::to_string(s.sequence_indices.size()) +
                                      " sequences");
    // Per row: the NLL sum and the sums per position bucket, as extract's own perplexity sink keeps
    // them; made on the host from an fp64 copy when the batch is finished.
    s.nll_in_flight = nll.to(at::kDouble);
}

Statistics OutlierAccumulator::statistics(const nlohmann::json & metadata) const {
    if (state_->in_batch) throw common::Error::internal("analysis: statistics() called inside a batch");
    // Logically const: the last batch's records are folded in first (they are the same either way).
    state_->finish_pending();
    const auto & s = *state_;
    Statistics out;
    out.threshold = options_.threshold;
    out.round_bf16 = options_.round_bf16;
    out.hidden = s.hidden;
    out.histogram_spec = options_.histogram_spec;
    out.massive_top_k = options_.massive_top_k;
    out.token_dims_per_batch = options_.token_dims_per_batch;
    out.sites = s.sites;
    const auto S = s.sites.size();
    const auto H = static_cast<size_t>(s.hidden);
    const auto bins = static_cast<size_t>(options_.histogram_spec.bins);
    out.site_hits.resize(S * H);
    out.site_max_abs.resize(S * H);
    out.site_histogram.resize(S * bins);
    for (size_t i = 0; i < S; ++i) {
        const auto & acc = s.acc[i];
        auto hits = acc.hits.cpu().contiguous();
        auto maxima = acc.max_abs.cpu().contiguous();
        auto hist = acc.histogram.cpu().contiguous();
        std::copy_n(hits.data_ptr<int64_t>(), H, out.site_hits.begin() + static_cast<std::ptrdiff_t>(i * H));
        std::copy_n(maxima.data_ptr<float>(), H, out.site_max_abs.begin() + static_cast<std::ptrdiff_t>(i * H));
        std::copy_n(hist.data_ptr<int64_t>(), bins, out.site_histogram.begin() + static_cast<std::ptrdiff_t>(i * bins));
        if (!options_.histogram) std::fill_n(out.site_histogram.begin() + static_cast<std::ptrdiff_t>(i * bins), bins, 0);
        else out.site_histogram[i * bins] -= acc.padded_elements;  // padded zeros are not data
        out.site_elements.push_back(acc.elements);
        out.site_nonfinite.push_back(acc.nonfinite.item<int64_t>());
        out.site_sequences.push_back(acc.sequences);
    }
    if (s.position_hits.defined()) {
        auto ph = s.position_hits.cpu().contiguous();
        out.max_positions = ph.size(0);
        out.position_hits.assign(ph.data_ptr<int32_t>(), ph.data_ptr<int32_t>() + ph.numel());
    }
    out.sequences = s.sequences;
    out.tokens = s.tokens;
    out.batches = s.batches;
    out.per_sequence = s.per_sequence;
    std::sort(out.per_sequence.begin(), out.per_sequence.end(),
              [](const SequenceStats & x, const SequenceStats & y) { return x.sequence_index < y.sequence_index; });
    if (s.token_table.defined()) {
        at::Tensor table = s.token_table.cpu().contiguous();  // [rows, V]
        const int64_t V = table.size(1);
        const int64_t * counts = table.data_ptr<int64_t>();
        for (const auto & [dim, row] : s.token_row) {
            auto & tally = out.token_hits[dim];
            for (int64_t t = 0; t < V; ++t)
                if (const int64_t n = counts[row * V + t]; n > 0) tally[t] = n;
        }
    }
    out.token_hits_batches = s.token_hits_batches;
    for (const auto & [layer, ml] : s.massive) {
        MassiveLayer copy = ml;
        std::sort(copy.medians.begin(), copy.medians.end());
        out.massive.push_back(std::move(copy));
    }
    if (!options_.sweep_thresholds.empty()) {
        const auto K = options_.sweep_thresholds.size();
        out.sweep_thresholds = options_.sweep_thresholds;
        out.sweep_site_level.assign(S * H, 0);
        for (size_t i = 0; i < S; ++i) {
            auto level = s.acc[i].sweep_level.cpu().contiguous();
            for (size_t h = 0; h < H; ++h) out.sweep_site_level[i * H + h] = static_cast<uint8_t>(level.data_ptr<int32_t>()[h]);
        }
        out.sweep_dim_positions.assign(K * H, 0);
        if (s.sweep_dim_positions.defined()) {
            auto positions = s.sweep_dim_positions.cpu().contiguous();
            std::copy_n(positions.data_ptr<int64_t>(), K * H, out.sweep_dim_positions.begin());
        }
    }
    out.expert_stats = options_.expert_stats;
    for (const auto & [layer, e] : s.experts) {
        ExpertLayer l;
        l.layer = layer;
        auto tokens = e.tokens.cpu().contiguous(), maxima = e.max_abs.cpu().contiguous(), hits = e.hit_tokens.cpu().contiguous();
        l.tokens.assign(tokens.data_ptr<int64_t>(), tokens.data_ptr<int64_t>() + tokens.numel());
        l.max_abs.assign(maxima.data_ptr<float>(), maxima.data_ptr<float>() + maxima.numel());
        l.hit_tokens.assign(hits.data_ptr<int64_t>(), hits.data_ptr<int64_t>() + hits.numel());
        out.experts.push_back(std::move(l));
    }
    out.perplexity = s.perplexity;
    out.perplexity_sequences = s.perplexity_sequences;
    std::sort(out.perplexity_sequences.begin(), out.perplexity_sequences.end(),
              [](const SequencePerplexity & x, const SequencePerplexity & y) { return x.sequence_index < y.sequence_index; });
    out.metadata = metadata.is_object() ? metadata : nlohmann::json::object();
    return out;
}

int64_t OutlierAccumulator::fused_captures() const { return state_->fused_captures; }
int64_t OutlierAccumulator::fused_expert_captures() const { return state_->fused_expert_captures; }

CheckpointSink::CheckpointSink(OutlierAccumulator & inner, std::string path, int64_t every_batches, nlohmann::json metadata)
    : inner_(inner), path_(std::move(path)), every_batches_(every_batches), metadata_(std::move(metadata)) {
    if (every_batches_ <= 0) throw common::Error::usage("analysis: checkpoint interval must be at least one batch");
}

void CheckpointSink::end_batch() {
    inner_.end_batch();
    if (++batches_ % every_batches_ != 0) return;
    auto meta = metadata_.is_object() ? metadata_ : nlohmann::json::object();
    meta["partial"] = true;
    save_statistics(inner_.statistics(meta), path_);
    ++written_;
}

}  // namespace analysis
