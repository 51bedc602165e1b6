// Applying the criteria. Fractions are computed as double n / total and compared with >=, exactly as
// the predecessor's Python did (so 8/32 = 0.25 passes 0.25, and 0.06 boundary cases match bit for bit).
#include "analysis/criteria.h"

#include "common/error.h"

#include <algorithm>
#include <map>

namespace analysis {

const std::vector<std::string> & mode_names() {
    static const std::vector<std::string> names = {"predecessor", "paper"};
    return names;
}

Criteria criteria_for_mode(const std::string & mode) {
    if (mode == "predecessor") return {"predecessor", 0.25, 0.06, LayerUnit::Site, Scope::PerSequence};
    if (mode == "paper") return {"paper", 0.25, 0.06, LayerUnit::Layer, Scope::Pooled};
    throw common::Error::usage("unknown mode '" + mode + "': valid modes are predecessor, paper");
}

std::string layer_unit_name(LayerUnit unit) { return unit == LayerUnit::Site ? "site" : "layer"; }
std::string scope_name(Scope scope) { return scope == Scope::PerSequence ? "per_sequence" : "pooled"; }

namespace {

double median_of(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;  // numpy.median's convention
}

void per_sequence_entries(const std::vector<SequenceStats> & sequences, const Criteria & c, std::vector<OutlierEntry> & out) {
    for (const auto & seq : sequences) {
        const int64_t layers_total = c.layer_unit == LayerUnit::Site ? seq.sites : seq.layers;
        if (layers_total <= 0 || seq.tokens <= 0) continue;
        for (const auto & d : seq.dims) {
            OutlierEntry e;
            e.dim = d.dim;
            e.sequence_index = seq.sequence_index;
            e.layers_hit = c.layer_unit == LayerUnit::Site ? d.sites_hit : d.layers_hit;
            e.layers_total = layers_total;
            e.positions_hit = d.positions_hit;
            e.positions_total = seq.tokens;
            e.layer_fraction = static_cast<double>(e.layers_hit) / static_cast<double>(e.layers_total);
            e.position_fraction = static_cast<double>(e.positions_hit) / static_cast<double>(e.positions_total);
            e.max_abs = d.max_abs;
            e.hits = d.hits;
            if (e.layer_fraction >= c.layer_fraction && e.position_fraction >= c.position_fraction) out.push_back(e);
        }
    }
}

// site_count(s, h): hits of dim h at site s (only > 0 matters for the fractions); dim_positions[h]:
// (sequence, position) pairs where h hits in any site.
template <typename SiteCount>
void pooled_entries(const Statistics & stats, const Criteria & c, const SiteCount & site_count,
                    const std::vector<int64_t> & dim_positions, std::vector<OutlierEntry> & out) {
    const auto H = static_cast<size_t>(stats.hidden);
    const auto S = stats.sites.size();
    const auto layers = stats.layers();
    std::map<int, size_t> layer_slot;
    for (size_t i = 0; i < layers.size(); ++i) layer_slot[layers[i]] = i;
    const int64_t layers_total = c.layer_unit == LayerUnit::Site ? static_cast<int64_t>(S) : static_cast<int64_t>(layers.size());
    if (layers_total == 0 || stats.tokens == 0) return;
    std::vector<char> layer_hit(layers.size());
    for (size_t h = 0; h < H; ++h) {
        int64_t sites_hit = 0, hits = 0;
        float max_abs = 0;
        std::fill(layer_hit.begin(), layer_hit.end(), 0);
        for (size_t s = 0; s < S; ++s) {
            const int64_t n = site_count(s, h);
            if (n == 0) continue;
            ++sites_hit;
            hits += n;
            layer_hit[layer_slot[stats.sites[s].layer]] = 1;
            max_abs = abs_max(max_abs, stats.site_max_abs[s * H + h]);  // a NaN stays (std::max dropped it)
        }
        if (hits == 0) continue;
        const int64_t positions = dim_positions[h];
        OutlierEntry e;
        e.dim = static_cast<int32_t>(h);
        e.layers_hit = c.layer_unit == LayerUnit::Site ? sites_hit : std::count(layer_hit.begin(), layer_hit.end(), 1);
        e.layers_total = layers_total;
        e.positions_hit = positions;
        e.positions_total = stats.tokens;
        e.layer_fraction = static_cast<double>(e.layers_hit) / static_cast<double>(e.layers_total);
        e.position_fraction = static_cast<double>(e.positions_hit) / static_cast<double>(e.positions_total);
        e.max_abs = max_abs;
        e.hits = hits;
        if (e.layer_fraction >= c.layer_fraction && e.position_fraction >= c.position_fraction) out.push_back(e);
    }
}

void check_applicable(const Statistics & stats, const Criteria & criteria) {
    for (double f : {criteria.layer_fraction, criteria.position_fraction})
        if (!(f >= 0 && f <= 1))
            throw common::Error::usage("criteria: fractions must lie in [0, 1], got " + std::to_string(f));
    if (stats.sequences == 0 || stats.sites.empty())
        throw common::Error::usage("criteria: the statistics hold no captured sequence (empty run)");
}

// The mode's summary numbers over its entries (ModeResult's metrics; dims_with_hits apart).
void summarize(ModeResult & r);

}  // namespace

std::vector<SweepPoint> apply_criteria_sweep(const Statistics & stats, const Criteria & criteria) {
    check_applicable(stats, criteria);
    std::vector<SweepPoint> points;
    const size_t K = stats.sweep_thresholds.size(), H = static_cast<size_t>(stats.hidden), W = 1 + 3 * K;
    for (size_t k = 0; k < K; ++k) {
        ModeResult r;
        r.criteria = criteria;
        if (criteria.scope == Scope::PerSequence) {
            // The sequences' records at threshold k (SequenceStats::sweep), with the run's denominators.
            std::vector<SequenceStats> at_k;
            for (const auto & seq : stats.per_sequence) {
                SequenceStats q{seq.sequence_index, seq.tokens, seq.sites, seq.layers, {}, {}};
                for (size_t i = 0; i + W <= seq.sweep.size(); i += W) {
                    const int32_t * v = seq.sweep.data() + i;
                    if (v[1 + 3 * k] > 0) q.dims.push_back({v[0], v[1 + 3 * k], v[2 + 3 * k], v[3 + 3 * k], 0, 0});
                }
                at_k.push_back(std::move(q));
            }
            per_sequence_entries(at_k, criteria, r.entries);
        } else {
            const std::vector<int64_t> positions(stats.sweep_dim_positions.begin() + static_cast<std::ptrdiff_t>(k * H),
                                                 stats.sweep_dim_positions.begin() + static_cast<std::ptrdiff_t>((k + 1) * H));
            pooled_entries(stats, criteria, [&](size_t s, size_t h) { return int64_t{stats.sweep_site_level[s * H + h] > k}; },
                           positions, r.entries);
        }
        summarize(r);
        SweepPoint p;
        p.threshold = stats.sweep_thresholds[k];
        p.num_outliers = r.num_outliers;
        p.unique_dims = static_cast<int64_t>(r.features.size());
        p.mean_layer_pct = r.mean_layer_pct;
        p.median_layer_pct = r.median_layer_pct;
        p.mean_position_pct = r.mean_position_pct;
        p.median_position_pct = r.median_position_pct;
        for (size_t h = 0; h < H; ++h)
            for (size_t s = 0; s < stats.sites.size(); ++s)
                if (stats.sweep_site_level[s * H + h] > k) {
                    ++p.dims_with_hits;
                    break;
                }
        points.push_back(p);
    }
    return points;
}

ModeResult apply_criteria(const Statistics & stats, const Criteria & criteria) {
    check_applicable(stats, criteria);
    ModeResult r;
    r.criteria = criteria;
    if (criteria.scope == Scope::PerSequence) {
        per_sequence_entries(stats.per_sequence, criteria, r.entries);
    } else {
        const auto H = static_cast<size_t>(stats.hidden);
        std::vector<int64_t> positions(H, 0);
        for (int64_t t = 0; t < stats.max_positions; ++t)
            for (size_t h = 0; h < H; ++h) positions[h] += stats.position_hits[static_cast<size_t>(t) * H + h];
        pooled_entries(stats, criteria, [&](size_t s, size_t h) { return stats.site_hits[s * H + h]; }, positions, r.entries);
    }
    summarize(r);
    const auto H = static_cast<size_t>(stats.hidden);
    for (size_t h = 0; h < H; ++h) {
        for (size_t s = 0; s < stats.sites.size(); ++s)
            if (stats.site_hits[s * H + h] > 0) {
                ++r.dims_with_hits;
                break;
            }
    }
    return r;
}

namespace {

void summarize(ModeResult & r) {
    // The predecessor sorted its list by max_magnitude descending (docs/outlier-method.md,
    // "Per-sequence analysis"); ties by sequence, dim.
    // NaN first (abs_greater): with `!=` and `>` a NaN was "equal" to every value, not a strict weak order.
    std::stable_sort(r.entries.begin(), r.entries.end(), [](const OutlierEntry & a, const OutlierEntry & b) {
        if (abs_greater(a.max_abs, b.max_abs) || abs_greater(b.max_abs, a.max_abs)) return abs_greater(a.max_abs, b.max_abs);
        if (a.sequence_index != b.sequence_index) return a.sequence_index < b.sequence_index;
        return a.dim < b.dim;
    });

    std::vector<double> layer_pct, position_pct;
    std::map<int32_t, FeatureSummary> by_dim;
    for (const auto & e : r.entries) {
        layer_pct.push_back(e.layer_fraction * 100);
        position_pct.push_back(e.position_fraction * 100);
        auto & f = by_dim[e.dim];
        f.dim = e.dim;
        f.max_abs = abs_max(f.max_abs, e.max_abs);
        f.occurrences += 1;
        f.mean_layer_fraction += e.layer_fraction;
        f.mean_position_fraction += e.position_fraction;
        f.hits += e.hits;
    }
    for (auto & [dim, f] : by_dim) {
        f.mean_layer_fraction /= static_cast<double>(f.occurrences);
        f.mean_position_fraction /= static_cast<double>(f.occurrences);
        r.features.push_back(f);
    }
    std::stable_sort(r.features.begin(), r.features.end(), [](const FeatureSummary & a, const FeatureSummary & b) {
        if (abs_greater(a.max_abs, b.max_abs) || abs_greater(b.max_abs, a.max_abs)) return abs_greater(a.max_abs, b.max_abs);
        return a.dim < b.dim;
    });
    r.num_outliers = static_cast<int64_t>(r.entries.size());
    if (!layer_pct.empty()) {
        double sl = 0, sp = 0;
        for (double v : layer_pct) sl += v;
        for (double v : position_pct) sp += v;
        r.mean_layer_pct = sl / static_cast<double>(layer_pct.size());
        r.mean_position_pct = sp / static_cast<double>(position_pct.size());
        r.median_layer_pct = median_of(layer_pct);
        r.median_position_pct = median_of(position_pct);
    }
}

}  // namespace

}  // namespace analysis
