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

}  // namespace

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

    std::set<int64_t> seen;
    for (const auto & s : a.per_sequence) seen.insert(s.sequence_index);
    for (const auto & s : b.per_sequence)
        if (seen.count(s.sequence_index))
            refuse(a_name, b_name, "sequence " + std::to_string(s.sequence_index) +
                                       " is in both (a rerun of the same sequences would count them twice)");

    const size_t H = static_cast<size_t>(a.hidden);
    for (size_t i = 0; i < a.site_hits.size(); ++i) a.site_hits[i] += b.site_hits[i];
    for (size_t i = 0; i < a.site_max_abs.size(); ++i) a.site_max_abs[i] = std::max(a.site_max_abs[i], b.site_max_abs[i]);
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
