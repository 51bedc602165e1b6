// Host-side outlier statistics: everything the accumulators gather in one pass, in a form that is
// torch-free, saved to disk (stats_file.cpp) and merged associatively (sums, counts, maxima,
// concatenated per-sequence records; never means). The criteria (criteria.h) are applied to this at
// the end, so one pass serves every mode. The device-side counterpart is accumulators.h.
#pragma once

#include <nlohmann/json.hpp>

#include "extractor/perplexity_summary.h"

#include <cmath>
#include <cstdint>
#include <array>
#include <map>
#include <string>
#include <vector>

namespace analysis {

// 2: adds the optional "perplexity" records (`extract run --perplexity`); 3: the optional threshold
// "sweep" and per-expert "experts" records; 4: "site_nonfinite" (earlier files read as none seen,
// which is what their site_max_abs can still contradict). Versions 1 to 3 files still read.
inline constexpr int kStatisticsVersion = 4;

// max |x| as the statistics keep it: NaN (some value was NaN) above +inf above every finite value,
// as the accumulator's at::maximum and the fused pass's float-bit maxima order them. std::max and
// `m > mx` dropped a NaN, so a site of NaNs read as max |x| 0.
inline bool abs_greater(float a, float b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && !std::isnan(b);
    return a > b;
}
inline float abs_max(float a, float b) { return abs_greater(b, a) ? b : a; }

// The threshold sweep (`--thresholds`): at most this many thresholds, counted in the same pass.
inline constexpr int kMaxSweepThresholds = 16;
// LLM.int8()'s 6 with values below and above it: the default of `--thresholds`.
inline constexpr std::array<double, 7> kDefaultSweepThresholds{3, 4, 5, 6, 8, 10, 20};

// One captured layer-norm site, in forward order (layer, then ln_attn before ln_mlp).
struct SiteInfo {
    int layer = 0;
    std::string site;  // "ln_attn" | "ln_mlp"
    bool operator==(const SiteInfo &) const = default;
};

// One hidden dim's counts inside one sequence (only dims with at least one hit are kept).
struct SequenceDimStat {
    int32_t dim = 0;
    int32_t sites_hit = 0;      // distinct sites with |x| >= thr somewhere in this sequence
    int32_t layers_hit = 0;     // distinct decoder layers with a hit in any of their sites
    int32_t positions_hit = 0;  // distinct positions with a hit in any site
    int64_t hits = 0;           // (site, position) elements with |x| >= thr
    float max_abs = 0;          // max |x| among the hits
};

// What the predecessor computed per batch (batch_size 1 = per sequence), before its criteria.
struct SequenceStats {
    int64_t sequence_index = 0;  // global index from BatchInfo
    int64_t tokens = 0;          // real (unpadded) positions: the position denominator
    int32_t sites = 0;           // layer-norm sites captured for it: the site denominator
    int32_t layers = 0;          // distinct decoder layers among those sites
    std::vector<SequenceDimStat> dims;  // sorted by dim
    // Threshold sweep (Statistics::sweep_thresholds, K of them): for every dim that reaches the
    // lowest threshold somewhere in this sequence, 1 + 3K int32: dim, then per threshold k the
    // sites, decoder layers and positions (pooled over sites) with |x| >= threshold k. Sorted by dim.
    std::vector<int32_t> sweep;
};

// Massive activations (Sun et al. 2024) on the residual stream: the largest |x| per layer.
struct MassiveEntry {
    float abs_value = 0;
    int64_t sequence_index = 0;
    int64_t position = 0;
    int32_t dim = 0;
    float sequence_median_abs = 0;  // median |x| of that sequence's hidden state at this layer
    int64_t token_id = -1;          // the token at (sequence, position); -1 when the run had no ids
};
struct MassiveLayer {
    int layer = 0;
    std::vector<MassiveEntry> top;  // sorted by abs_value descending, at most massive_top_k
    std::vector<std::pair<int64_t, float>> medians;  // (sequence_index, median |x|), sorted
};

// `--perplexity` (extractor/perplexity.h): one window's next-token loss as sums, never means. Position
// bucket b holds the losses of the tokens at positions 2^b .. 2^(b+1)-1 of the window (the
// first token has none).
inline constexpr int kMaxPerplexityBuckets = 64;
using SequencePerplexity = extractor::SequenceNll;

// Magnitude histogram binned by the bf16 bit pattern (exponent + top two mantissa bits): per octave
// 2^e the bins start at 2^e x {1, 1.25, 1.5, 1.75}, from 2^log2_min upwards. The first bin also takes
// everything smaller (zeros included), the last everything larger (and NaN). Values are binned after
// bf16 rounding.
struct HistogramSpec {
    double log2_min = -8;
    int bins_per_octave = 4;
    int bins = 80;  // up to 2^12
    bool operator==(const HistogramSpec &) const = default;
    double lower_edge(int bin) const;
};

// Per-expert statistics of one MoE layer (`--expert-stats`), on each routed (token, expert) pair's
// down_proj output (before the routing weight). Sums and maxima, so merges add them.
struct ExpertLayer {
    int layer = 0;
    std::vector<int64_t> tokens;      // [E] real tokens routed to the expert
    std::vector<float> max_abs;       // [E] max |x| of its down_proj outputs
    std::vector<int64_t> hit_tokens;  // [E] routed tokens whose output reaches the threshold (any dim)
    bool operator==(const ExpertLayer &) const = default;
};

struct Statistics {
    // How the values were counted (fixed at accumulation time; merge requires equality).
    double threshold = 6.0;
    bool round_bf16 = true;  // values rounded to bf16 before thresholding (docs/outlier-method.md#rounding)
    int64_t hidden = 0;
    HistogramSpec histogram_spec;
    int massive_top_k = 0;   // 0: massive activations not collected
    int token_dims_per_batch = 0;

    std::vector<SiteInfo> sites;             // S layer-norm sites
    std::vector<int64_t> site_hits;          // [S*H] elements with |x| >= thr, per site and dim
    std::vector<float> site_max_abs;         // [S*H] max |x| over all values
    std::vector<int64_t> site_elements;      // [S]   real elements seen (tokens * H)
    std::vector<int64_t> site_histogram;     // [S*bins]
    std::vector<int64_t> site_sequences;     // [S]   sequences that reached this site
    // [S] values that were NaN or +-inf (real positions; after the bf16 rounding when round_bf16,
    // so a finite fp32 beyond bf16's range counts, as it reads as inf). They never hit; a site
    // with any has a non-finite site_max_abs in the dims that held them.
    std::vector<int64_t> site_nonfinite;

    int64_t max_positions = 0;               // T_max: rows of position_hits
    std::vector<int32_t> position_hits;      // [T_max*H] sequences whose position t hits dim h (any site)

    int64_t sequences = 0;
    int64_t tokens = 0;
    std::vector<SequenceStats> per_sequence;  // sorted by sequence_index

    // dim -> token id -> positions where the dim hit (any site) at that token. Collected for the
    // `token_dims_per_batch` dims with the most hit positions in each batch.
    std::map<int32_t, std::map<int64_t, int64_t>> token_hits;
    std::map<int32_t, int64_t> token_hits_batches;  // dim -> batches in which it was tallied
    int64_t batches = 0;

    std::vector<MassiveLayer> massive;  // sorted by layer

    // Threshold sweep: ascending, distinct; empty when not collected. Counted in the same pass
    // (analysis/README.md "Threshold sweep"); the per-sequence numbers are SequenceStats::sweep.
    std::vector<double> sweep_thresholds;
    std::vector<uint8_t> sweep_site_level;     // [S*H] thresholds reached by some |x| of (site, dim)
    std::vector<int64_t> sweep_dim_positions;  // [K*H] (sequence, position) pairs where the dim reaches threshold k (any site)

    bool expert_stats = false;          // per-expert statistics collected
    std::vector<ExpertLayer> experts;   // sorted by layer

    bool perplexity = false;                         // the run computed next-token losses
    std::vector<SequencePerplexity> perplexity_sequences;  // sorted by sequence_index

    nlohmann::json metadata = nlohmann::json::object();  // run metadata (model, dtype, ...)

    int64_t num_sites() const { return static_cast<int64_t>(sites.size()); }
    // Non-finite values over every site (site_nonfinite summed; 0 when it is absent).
    int64_t nonfinite_values() const;
    // Distinct decoder layers among the sites, ascending.
    std::vector<int> layers() const;
};

// A short model name from run metadata: "model" as a string, or the extractor's model object
// (its dir's last component, else model_type); "" when absent.
std::string model_label(const nlohmann::json & metadata);

// Sums of every count the reports and merges add up. A file is untrusted, so before anything sums
// its counts they are checked to be non-negative with totals that fit int64 (then every partial
// sum fits too, and merging two such statistics needs only their totals checked).
struct CountTotals {
    int64_t site_hits = 0, site_elements = 0, site_sequences = 0, site_histogram = 0, position_hits = 0;
    int64_t sequence_hits = 0, token_hits = 0, token_hits_batches = 0, sequences = 0, tokens = 0, batches = 0;
    int64_t sweep_positions = 0, expert_tokens = 0, expert_hit_tokens = 0, site_nonfinite = 0;
};
// False, with `field` naming the array ("per_sequence.hits"), when a count is negative or a total
// does not fit int64.
bool count_totals(const Statistics & stats, CountTotals & totals, std::string & field);

// The "perplexity" object of outliers.json (and of extract's run JSON): overall {sequences, tokens,
// nll_sum, mean_nll, perplexity}, per_sequence [...], by_position [{first, last, tokens, nll_sum,
// mean_nll}]. Summed in sequence order from the records, so merged halves give the numbers of the
// whole bit for bit. null when the run did not compute perplexity.
nlohmann::json perplexity_json(const Statistics & stats);

// Combines b into a (a := a ⊕ b). Associative and, up to metadata, commutative: sums, maxima,
// sequence records concatenated and sorted. Throws common::Error (usage) naming `a_name`/`b_name`
// when they were counted differently (threshold, rounding, hidden size, sites, model) or share a
// sequence index (a rerun would count that sequence twice), or when a merged count would not fit
// its type. Leaves a unchanged when it throws.
void merge_into(Statistics & a, const Statistics & b, const std::string & a_name, const std::string & b_name);

}  // namespace analysis
