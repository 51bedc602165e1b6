// The outlier-feature criteria and their named modes, applied to Statistics at the end of a run.
// `predecessor` reproduces the Python pipeline's counting exactly (docs/outlier-method.md,
// "Predecessor mode"): each sequence analysed alone, 2L layer-norm sites as the layer denominator,
// positions pooled over sites, the per-sequence lists concatenated, so a dim systematic in 16
// sequences counts 16 times.
// `paper` is LLM.int8()'s definition over the whole dataset: unique dims, decoder layers as the layer
// unit, the fraction of all (sequence, position) pairs. analysis/README.md documents both precisely.
#pragma once

#include "analysis/statistics.h"

#include <string>
#include <vector>

namespace analysis {

enum class LayerUnit { Site, Layer };       // a site (2 per layer) or a decoder layer (any of its sites)
enum class Scope { PerSequence, Pooled };   // each sequence alone then concatenated, or the dataset at once

struct Criteria {
    std::string mode;                 // "predecessor", "paper", or "<mode>+custom" once a fraction differs from the mode's
    double layer_fraction = 0.25;     // >= (inclusive)
    double position_fraction = 0.06;  // >= (inclusive)
    LayerUnit layer_unit = LayerUnit::Site;
    Scope scope = Scope::PerSequence;
};

// "predecessor" | "paper"; anything else is a usage error listing the valid names.
Criteria criteria_for_mode(const std::string & mode);
const std::vector<std::string> & mode_names();
std::string layer_unit_name(LayerUnit unit);
std::string scope_name(Scope scope);

// One entry of the outlier list: a (sequence, dim) pair in per-sequence scope, a dim when pooled.
struct OutlierEntry {
    int32_t dim = 0;
    int64_t sequence_index = -1;  // -1 when pooled
    int64_t layers_hit = 0;       // numerator of layer_fraction (sites or layers, per the unit)
    int64_t layers_total = 0;
    int64_t positions_hit = 0;    // numerator of position_fraction
    int64_t positions_total = 0;
    double layer_fraction = 0;
    double position_fraction = 0;
    float max_abs = 0;            // max |x| among the hits
    int64_t hits = 0;             // total (site, position) hits: the predecessor's total_occurrences
};

// Per dim over all entries (the predecessor's top_features).
struct FeatureSummary {
    int32_t dim = 0;
    float max_abs = 0;
    int64_t occurrences = 0;  // entries (sequences when per-sequence; 1 when pooled)
    double mean_layer_fraction = 0;
    double mean_position_fraction = 0;
    int64_t hits = 0;
};

struct ModeResult {
    Criteria criteria;
    std::vector<OutlierEntry> entries;    // sorted by max_abs desc, then sequence, then dim
    std::vector<FeatureSummary> features; // sorted by max_abs desc, then dim
    // Predecessor metrics (docs/outlier-method.md#reported-metrics), over entries: count, mean/median
    // of percentages (0..100).
    int64_t num_outliers = 0;
    double mean_layer_pct = 0, median_layer_pct = 0, mean_position_pct = 0, median_position_pct = 0;
    int64_t dims_with_hits = 0;  // dims with any |x| >= thr anywhere (the predecessor's total_outlier_features, pooled)
};

// Throws common::Error(usage) for fractions outside [0,1] or statistics without any sequence.
ModeResult apply_criteria(const Statistics & stats, const Criteria & criteria);

// One threshold of the sweep (Statistics::sweep_thresholds): the mode's numbers as apply_criteria
// gives them for a run collected with --threshold T (hits and max |x| are not kept per threshold;
// the means are summed in (sequence, dim) order rather than by max |x|, so they agree to rounding).
struct SweepPoint {
    double threshold = 0;
    int64_t num_outliers = 0;
    int64_t unique_dims = 0;
    double mean_layer_pct = 0, median_layer_pct = 0, mean_position_pct = 0, median_position_pct = 0;
    int64_t dims_with_hits = 0;
};
// Every sweep threshold in ascending order (empty when no sweep was collected); errors as apply_criteria.
std::vector<SweepPoint> apply_criteria_sweep(const Statistics & stats, const Criteria & criteria);

}  // namespace analysis
