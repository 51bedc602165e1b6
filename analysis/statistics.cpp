// Merging statistics: addition for counts, max for maxima, concatenation for per-sequence records.
// Every field is a sum, a maximum or a set union, so (a ⊕ b) ⊕ c == a ⊕ (b ⊕ c).
#include "analysis/statistics.h"

#include "common/error.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace analysis {

double HistogramSpec::lower_edge(int bin) const {
    // Bins follow the bf16 bit pattern: per octave 2^e x {1, 1.25, 1.5, 1.75}.
    const int octave = bin / bins_per_octave, quarter = bin % bins_per_octave;
    return std::exp2(log2_min + octave) * (1.0 + quarter / static_cast<double>(bins_per_octave));
}

std::vector<int> Statistics::layers() const {
    std::set<int> seen;
    for (const auto & s : sites) seen.insert(s.layer);
    return {seen.begin(), seen.end()};
}

std::string model_label(const nlohmann::json & metadata) {
    if (!metadata.is_object()) return "";
    if (metadata.contains("model_name") && metadata["model_name"].is_string()) return metadata["model_name"].get<std::string>();
    if (!metadata.contains("model")) return "";
    const auto & m = metadata["model"];
    if (m.is_string()) return m.get<std::string>();
    if (m.is_object()) {
        std::string dir = m.value("dir", std::string());
        while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
        const auto slash = dir.find_last_of('/');
        if (!dir.empty()) return slash == std::string::npos ? dir : dir.substr(slash + 1);
        return m.value("model_type", std::string());
    }
    return "";
}

namespace {

// What identifies the model for merging: the checkpoint fingerprint when recorded, else the name.
std::string model_identity(const nlohmann::json & metadata) {
    if (metadata.is_object() && metadata.contains("checkpoint_fingerprint_sha256") && metadata["checkpoint_fingerprint_sha256"].is_string())
        return metadata["checkpoint_fingerprint_sha256"].get<std::string>();
    return model_label(metadata);
}

[[noreturn]] void refuse(const std::string & a_name, const std::string & b_name, const std::string & why) {
    throw common::Error::usage("cannot merge " + b_name + " into " + a_name + ": " + why +
                               "; merge only statistics collected with the same settings from the same model")
        .with("file", b_name);
}

std::string site_list_text(const std::vector<SiteInfo> & sites) {
    std::string out;
    for (const auto & s : sites) {
        if (!out.empty()) out += ",";
        out += "layer_" + std::to_string(s.layer) + "_" + s.site;
        if (out.size() > 120) return out + ",...";
    }
    return out;
}

void merge_massive(std::vector<MassiveLayer> & a, const std::vector<MassiveLayer> & b, int top_k) {
    std::map<int, MassiveLayer> by_layer;
    for (auto & l : a) by_layer[l.layer] = std::move(l);
    for (const auto & l : b) {
        auto & dst = by_layer[l.layer];
        dst.layer = l.layer;
        dst.top.insert(dst.top.end(), l.top.begin(), l.top.end());
        dst.medians.insert(dst.medians.end(), l.medians.begin(), l.medians.end());
    }
    a.clear();
    for (auto & [layer, l] : by_layer) {
        // Ties broken by (sequence, position, dim) so the kept set does not depend on merge order.
        std::sort(l.top.begin(), l.top.end(), [](const MassiveEntry & x, const MassiveEntry & y) {
            if (x.abs_value != y.abs_value) return x.abs_value > y.abs_value;
            if (x.sequence_index != y.sequence_index) return x.sequence_index < y.sequence_index;
            if (x.position != y.position) return x.position < y.position;
            return x.dim < y.dim;
        });
        if (static_cast<int>(l.top.size()) > top_k) l.top.resize(static_cast<size_t>(top_k));
        std::sort(l.medians.begin(), l.medians.end());
        a.push_back(std::move(l));
    }
}

// Per-expert records by layer: counts add, maxima take the max (layers of equal expert counts, checked before).
void merge_experts(std::vector<ExpertLayer> & a, const std::vector<ExpertLayer> & b) {
    std::map<int, ExpertLayer> by_layer;
    for (auto & l : a) by_layer[l.layer] = std::move(l);
    for (const auto & l : b) {
        auto [it, fresh] = by_layer.try_emplace(l.layer, l);
        if (fresh) continue;
        auto & dst = it->second;
        for (size_t e = 0; e < l.tokens.size(); ++e) {
            dst.tokens[e] += l.tokens[e];
            dst.hit_tokens[e] += l.hit_tokens[e];
            // NaN propagates as in the accumulator (a NaN output is reported, not hidden).
            if (std::isnan(l.max_abs[e]) || l.max_abs[e] > dst.max_abs[e]) dst.max_abs[e] = l.max_abs[e];
        }
    }
    a.clear();
    for (auto & [layer, l] : by_layer) a.push_back(std::move(l));
}

template <typename T>
bool add_all(const std::vector<T> & v, int64_t & total) {
    for (const T x : v)
        if (x < 0 || __builtin_add_overflow(total, static_cast<int64_t>(x), &total)) return false;
    return true;
}

bool add_one(int64_t x, int64_t & total) { return x >= 0 && !__builtin_add_overflow(total, x, &total); }

}  // namespace

int64_t Statistics::nonfinite_values() const {
    int64_t total = 0;
    for (const int64_t n : site_nonfinite) total += n;
    return total;
}

bool count_totals(const Statistics & s, CountTotals & t, std::string & field) {
    t = CountTotals{};
    auto fail = [&](const char * name) {
        field = name;
        return false;
    };
    if (!add_all(s.site_hits, t.site_hits)) return fail("site_hits");
    if (!add_all(s.site_elements, t.site_elements)) return fail("site_elements");
    if (!add_all(s.site_sequences, t.site_sequences)) return fail("site_sequences");
    if (!add_all(s.site_histogram, t.site_histogram)) return fail("site_histogram");
    if (!add_all(s.site_nonfinite, t.site_nonfinite)) return fail("site_nonfinite");
    if (!add_all(s.position_hits, t.position_hits)) return fail("position_hits");
    for (const auto & q : s.per_sequence)
        for (const auto & d : q.dims)
            if (!add_one(d.hits, t.sequence_hits)) return fail("per_sequence.hits");
    for (const auto & [dim, tokens] : s.token_hits)
        for (const auto & [token, n] : tokens)
            if (!add_one(n, t.token_hits)) return fail("token_hits.pairs");
    for (const auto & [dim, n] : s.token_hits_batches)
        if (!add_one(n, t.token_hits_batches)) return fail("token_hits.batches");
    if (!add_all(s.sweep_dim_positions, t.sweep_positions)) return fail("sweep.dim_positions");
    for (const auto & l : s.experts) {
        if (!add_all(l.tokens, t.expert_tokens)) return fail("experts.tokens");
        if (!add_all(l.hit_tokens, t.expert_hit_tokens)) return fail("experts.hit_tokens");
    }
    if (!add_one(s.sequences, t.sequences)) return fail("sequences");
    if (!add_one(s.tokens, t.tokens)) return fail("tokens");
    if (!add_one(s.batches, t.batches)) return fail("batches");
    return true;
}

nlohmann::json perplexity_json(const Statistics & stats) {
    if (!stats.perplexity) return nullptr;
    return extractor::perplexity_summary(stats.perplexity_sequences);
}

void merge_into(Statistics & a, const Statistics & b, const std::string & a_name, const std::string & b_name) {
    if (a.threshold != b.threshold)
        refuse(a_name, b_name, "threshold " + std::to_string(a.threshold) + " vs " + std::to_string(b.threshold));
    if (a.round_bf16 != b.round_bf16) refuse(a_name, b_name, "bf16 rounding differs");
    if (a.hidden != b.hidden)
        refuse(a_name, b_name, "hidden size " + std::to_string(a.hidden) + " vs " + std::to_string(b.hidden));
    if (!(a.histogram_spec == b.histogram_spec)) refuse(a_name, b_name, "histogram bins differ");
    if (a.massive_top_k != b.massive_top_k) refuse(a_name, b_name, "massive-activation top-k differs");
    if (a.sites != b.sites)
        refuse(a_name, b_name, "captured sites differ (" + site_list_text(a.sites) + " vs " + site_list_text(b.sites) + ")");
    const auto model_a = model_identity(a.metadata);
    const auto model_b = model_identity(b.metadata);
    if (!model_a.empty() && !model_b.empty() && model_a != model_b)
        refuse(a_name, b_name, "model " + model_label(a.metadata) + " (" + model_a + ") vs " + model_label(b.metadata) + " (" + model_b + ")");

    if (a.sweep_thresholds != b.sweep_thresholds)
        refuse(a_name, b_name, "threshold sweeps differ (" + std::to_string(a.sweep_thresholds.size()) + " vs " +
                                   std::to_string(b.sweep_thresholds.size()) + " thresholds, or other values)");
    if (a.expert_stats != b.expert_stats)
        refuse(a_name, b_name, std::string("per-expert statistics were collected for ") + (a.expert_stats ? a_name : b_name) +
                                   " only (run both with --expert-stats or neither)");
    {
        std::map<int, size_t> experts_of;
        for (const auto & l : a.experts) experts_of[l.layer] = l.tokens.size();
        for (const auto & l : b.experts)
            if (experts_of.count(l.layer) && experts_of[l.layer] != l.tokens.size())
                refuse(a_name, b_name, "layer " + std::to_string(l.layer) + " has " + std::to_string(experts_of[l.layer]) + " vs " +
                                           std::to_string(l.tokens.size()) + " experts");
    }
    if (a.perplexity != b.perplexity)
        refuse(a_name, b_name, std::string("perplexity was computed for ") + (a.perplexity ? a_name : b_name) + " only (run both with --perplexity or neither)");
    {
        std::set<int64_t> seen_ppl;
        for (const auto & s : a.perplexity_sequences) seen_ppl.insert(s.sequence_index);
        for (const auto & s : b.perplexity_sequences)
            if (seen_ppl.count(s.sequence_index))
                refuse(a_name, b_name, "sequence " + std::to_string(s.sequence_index) +
                                           " has a perplexity record in both (a rerun of the same sequences would count them twice)");
    }
    std::set<int64_t> seen;
    for (const auto & s : a.per_sequence) seen.insert(s.sequence_index);
    for (const auto & s : b.per_sequence)
        if (seen.count(s.sequence_index))
            refuse(a_name, b_name, "sequence " + std::to_string(s.sequence_index) +
                                       " is in both (a rerun of the same sequences would count them twice)");

    // Every count is non-negative with totals that fit (count_totals); the merged totals must fit
    // too, and so must each merged position count (int32). Checked before anything changes.
    CountTotals ta, tb;
    std::string field;
    if (!count_totals(a, ta, field)) refuse(a_name, b_name, a_name + " has negative " + field + " or counts whose total passes 2^63-1");
    if (!count_totals(b, tb, field)) refuse(a_name, b_name, b_name + " has negative " + field + " or counts whose total passes 2^63-1");
    const std::pair<const char *, std::pair<int64_t, int64_t>> sums[] = {
        {"site_hits", {ta.site_hits, tb.site_hits}}, {"site_elements", {ta.site_elements, tb.site_elements}},
        {"site_sequences", {ta.site_sequences, tb.site_sequences}}, {"site_histogram", {ta.site_histogram, tb.site_histogram}},
        {"position_hits", {ta.position_hits, tb.position_hits}}, {"per_sequence.hits", {ta.sequence_hits, tb.sequence_hits}},
        {"token_hits.pairs", {ta.token_hits, tb.token_hits}}, {"token_hits.batches", {ta.token_hits_batches, tb.token_hits_batches}},
        {"sequences", {ta.sequences, tb.sequences}}, {"tokens", {ta.tokens, tb.tokens}}, {"batches", {ta.batches, tb.batches}},
        {"sweep.dim_positions", {ta.sweep_positions, tb.sweep_positions}}, {"experts.tokens", {ta.expert_tokens, tb.expert_tokens}},
        {"experts.hit_tokens", {ta.expert_hit_tokens, tb.expert_hit_tokens}},
        {"site_nonfinite", {ta.site_nonfinite, tb.site_nonfinite}}};
    for (const auto & [name, pair] : sums) {
        int64_t total = 0;
        if (__builtin_add_overflow(pair.first, pair.second, &total))
            refuse(a_name, b_name, std::string("the merged ") + name + " would pass 2^63-1");
    }
    for (size_t i = 0; i < b.position_hits.size() && i < a.position_hits.size(); ++i) {
        int32_t sum = 0;
        if (__builtin_add_overflow(a.position_hits[i], b.position_hits[i], &sum))
            refuse(a_name, b_name, "a merged position count would pass 2^31-1");
    }

    const size_t H = static_cast<size_t>(a.hidden);
    for (size_t i = 0; i < a.site_hits.size(); ++i) a.site_hits[i] += b.site_hits[i];
    for (size_t i = 0; i < a.site_max_abs.size(); ++i) a.site_max_abs[i] = abs_max(a.site_max_abs[i], b.site_max_abs[i]);
    // Absent (a file before version 4) is none seen; the sums stay per site.
    if (a.site_nonfinite.size() != a.sites.size()) a.site_nonfinite.assign(a.sites.size(), 0);
    for (size_t i = 0; i < b.site_nonfinite.size() && i < a.site_nonfinite.size(); ++i) a.site_nonfinite[i] += b.site_nonfinite[i];
    for (size_t i = 0; i < a.site_elements.size(); ++i) a.site_elements[i] += b.site_elements[i];
    for (size_t i = 0; i < a.site_sequences.size(); ++i) a.site_sequences[i] += b.site_sequences[i];
    for (size_t i = 0; i < a.site_histogram.size(); ++i) a.site_histogram[i] += b.site_histogram[i];

    // Position maps of different lengths: the shorter one has no hits beyond its length.
    if (b.max_positions > a.max_positions) {
        a.position_hits.resize(static_cast<size_t>(b.max_positions) * H, 0);
        a.max_positions = b.max_positions;
    }
    for (size_t i = 0; i < b.position_hits.size(); ++i) a.position_hits[i] += b.position_hits[i];

    a.sequences += b.sequences;
    a.tokens += b.tokens;
    a.batches += b.batches;
    a.per_sequence.insert(a.per_sequence.end(), b.per_sequence.begin(), b.per_sequence.end());
    std::sort(a.per_sequence.begin(), a.per_sequence.end(),
              [](const SequenceStats & x, const SequenceStats & y) { return x.sequence_index < y.sequence_index; });

    for (const auto & [dim, tokens] : b.token_hits)
        for (const auto & [token, n] : tokens) a.token_hits[dim][token] += n;
    for (const auto & [dim, n] : b.token_hits_batches) a.token_hits_batches[dim] += n;
    a.token_dims_per_batch = std::max(a.token_dims_per_batch, b.token_dims_per_batch);

    merge_massive(a.massive, b.massive, a.massive_top_k);

    for (size_t i = 0; i < a.sweep_site_level.size() && i < b.sweep_site_level.size(); ++i)
        a.sweep_site_level[i] = std::max(a.sweep_site_level[i], b.sweep_site_level[i]);
    for (size_t i = 0; i < a.sweep_dim_positions.size() && i < b.sweep_dim_positions.size(); ++i)
        a.sweep_dim_positions[i] += b.sweep_dim_positions[i];
    merge_experts(a.experts, b.experts);

    a.perplexity_sequences.insert(a.perplexity_sequences.end(), b.perplexity_sequences.begin(), b.perplexity_sequences.end());
    std::sort(a.perplexity_sequences.begin(), a.perplexity_sequences.end(),
              [](const SequencePerplexity & x, const SequencePerplexity & y) { return x.sequence_index < y.sequence_index; });

    // Metadata: the first file's, plus the union of the sources it came from.
    if (a.metadata.is_object() && a.metadata.empty()) {
        a.metadata = b.metadata;
        return;
    }
    auto sources = a.metadata.value("sources", nlohmann::json::array());
    for (const auto & s : b.metadata.value("sources", nlohmann::json::array())) sources.push_back(s);
    if (!sources.empty()) a.metadata["sources"] = sources;
}

}  // namespace analysis
