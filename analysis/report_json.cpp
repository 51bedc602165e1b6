// The result JSON (schema toolkit.analysis.result, version 1; fields documented in analysis/README.md).
// Deterministic: every list has a stated order (layer, then site, then feature; outliers by max |x|).
#include "analysis/report.h"

#include "analysis/criteria.h"
#include "common/error.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

namespace analysis {

using json = nlohmann::json;

namespace {

json criteria_json(const Criteria & c, double threshold) {
    return {{"mode", c.mode},
            {"threshold", threshold},
            {"layer_fraction", c.layer_fraction},
            {"position_fraction", c.position_fraction},
            {"layer_unit", layer_unit_name(c.layer_unit)},
            {"scope", scope_name(c.scope)}};
}

json top_tokens(const Statistics & s, int32_t dim, int n, const TokenText & token_text) {
    json out = json::array();
    auto it = s.token_hits.find(dim);
    if (it == s.token_hits.end()) return out;
    std::vector<std::pair<int64_t, int64_t>> v(it->second.begin(), it->second.end());
    std::sort(v.begin(), v.end(), [](const auto & a, const auto & b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    for (size_t i = 0; i < v.size() && static_cast<int>(i) < n; ++i) {
        json t = {{"token_id", v[i].first}, {"positions", v[i].second}};
        if (token_text) {
            try {
                t["text"] = token_text(v[i].first);
            } catch (const std::exception &) {
                t["text"] = nullptr;  // an id outside the vocabulary: keep the id
            }
        }
        out.push_back(t);
    }
    return out;
}

json mode_json(const Statistics & s, const ModeResult & r, const ReportOptions & o, const TokenText & token_text) {
    json features = json::array();
    std::set<int32_t> unique;
    for (const auto & f : r.features) {
        unique.insert(f.dim);
        const auto batches = s.token_hits_batches.count(f.dim) ? s.token_hits_batches.at(f.dim) : 0;
        features.push_back({{"dim", f.dim},
                            {"max_abs", f.max_abs},
                            {"occurrences", f.occurrences},
                            {"mean_layer_pct", f.mean_layer_fraction * 100},
                            {"mean_position_pct", f.mean_position_fraction * 100},
                            {"hits", f.hits},
                            {"top_tokens", top_tokens(s, f.dim, o.top_tokens, token_text)},
                            {"token_batches_tallied", batches}});
    }
    json entries = json::array();
    for (size_t i = 0; i < r.entries.size() && static_cast<int>(i) < o.max_entries; ++i) {
        const auto & e = r.entries[i];
        json j = {{"dim", e.dim},
                  {"layer_pct", e.layer_fraction * 100},
                  {"position_pct", e.position_fraction * 100},
                  {"max_abs", e.max_abs},
                  {"hits", e.hits},
                  {"layers_hit", e.layers_hit},
                  {"layers_total", e.layers_total},
                  {"positions_hit", e.positions_hit},
                  {"positions_total", e.positions_total}};
        if (e.sequence_index >= 0) j["sequence"] = e.sequence_index;
        entries.push_back(j);
    }
    return {{"criteria", criteria_json(r.criteria, s.threshold)},
            {"summary",
             {{"num_outliers", r.num_outliers},
              {"unique_dims", unique.size()},
              {"mean_layer_pct", r.mean_layer_pct},
              {"median_layer_pct", r.median_layer_pct},
              {"mean_position_pct", r.mean_position_pct},
              {"median_position_pct", r.median_position_pct},
              {"dims_with_hits", r.dims_with_hits}}},
            {"features", features},
            {"entries", entries},
            {"entries_truncated", static_cast<int64_t>(r.entries.size()) > o.max_entries}};
}

}  // namespace

json build_result(const Statistics & s, const ReportOptions & o, const TokenText & token_text) {
    const auto H = static_cast<size_t>(s.hidden);
    const auto S = s.sites.size();
    json result;
    result["schema"] = kResultSchema;
    result["version"] = kResultVersion;
    json run = s.metadata.is_object() ? s.metadata : json::object();
    run["model_name"] = model_label(s.metadata);
    run["sequences"] = s.sequences;
    run["tokens"] = s.tokens;
    run["batches"] = s.batches;
    run["hidden"] = s.hidden;
    run["sites_captured"] = S;
    run["layers_captured"] = s.layers().size();
    run["threshold"] = s.threshold;
    run["round_bf16"] = s.round_bf16;
    // Coverage, said out loud: sites that saw fewer sequences than the run (a layer list that changed
    // between merged runs, or a capture that failed part way) make their fractions incomparable.
    json partial_sites = json::array();
    for (size_t i = 0; i < S; ++i)
        if (s.site_sequences[i] != s.sequences)
            partial_sites.push_back({{"layer", s.sites[i].layer}, {"site", s.sites[i].site}, {"sequences", s.site_sequences[i]}});
    run["sites_with_partial_coverage"] = partial_sites;
    run["partial"] = s.metadata.is_object() && s.metadata.value("partial", false);
    result["run"] = run;

    result["modes"] = json::object();
    std::vector<int32_t> profile_dims;
    for (const auto & name : o.modes) {
        auto c = criteria_for_mode(name);
        if (o.layer_fraction) c.layer_fraction = *o.layer_fraction;
        if (o.position_fraction) c.position_fraction = *o.position_fraction;
        if (o.layer_fraction || o.position_fraction) c.mode = name + "+custom";
        const auto r = apply_criteria(s, c);
        for (const auto & f : r.features)
            if (std::find(profile_dims.begin(), profile_dims.end(), f.dim) == profile_dims.end()) profile_dims.push_back(f.dim);
        result["modes"][name] = mode_json(s, r, o, token_text);
    }

    // Per-site table: layer, site, hits, max |x| and the dim that holds it.
    json layers = json::array();
    std::vector<float> dim_max(H, 0);
    for (size_t i = 0; i < S; ++i) {
        int64_t hits = 0, dims_hit = 0;
        float mx = 0;
        int64_t argmax = 0;
        for (size_t h = 0; h < H; ++h) {
            const auto n = s.site_hits[i * H + h];
            hits += n;
            dims_hit += n > 0;
            const auto m = s.site_max_abs[i * H + h];
            dim_max[h] = std::max(dim_max[h], m);
            if (m > mx) {
                mx = m;
                argmax = static_cast<int64_t>(h);
            }
        }
        const auto elements = s.site_elements[i];
        layers.push_back({{"layer", s.sites[i].layer},
                          {"site", s.sites[i].site},
                          {"hits", hits},
                          {"elements", elements},
                          {"hit_rate", elements ? static_cast<double>(hits) / static_cast<double>(elements) : 0.0},
                          {"dims_with_hits", dims_hit},
                          {"max_abs", mx},
                          {"max_abs_dim", argmax}});
    }
    result["layers"] = layers;

    // Profiles for plots: the outlier dims (by max |x|), else the dims with the largest |x|.
    std::vector<int32_t> dims = profile_dims;
    if (dims.empty()) {
        std::vector<int32_t> all(H);
        for (size_t h = 0; h < H; ++h) all[h] = static_cast<int32_t>(h);
        std::stable_sort(all.begin(), all.end(), [&](int32_t a, int32_t b) { return dim_max[static_cast<size_t>(a)] > dim_max[static_cast<size_t>(b)]; });
        dims = all;
    } else {
        std::stable_sort(dims.begin(), dims.end(), [&](int32_t a, int32_t b) { return dim_max[static_cast<size_t>(a)] > dim_max[static_cast<size_t>(b)]; });
    }
    if (static_cast<int>(dims.size()) > o.profile_dims) dims.resize(static_cast<size_t>(o.profile_dims));
    json profiles = json::array();
    for (auto d : dims) {
        json max_by_site = json::array(), rate_by_site = json::array();
        for (size_t i = 0; i < S; ++i) {
            const auto dh = i * H + static_cast<size_t>(d);
            max_by_site.push_back(s.site_max_abs[dh]);
            const double positions = H ? static_cast<double>(s.site_elements[i]) / static_cast<double>(H) : 0;
            rate_by_site.push_back(positions > 0 ? static_cast<double>(s.site_hits[dh]) / positions : 0.0);
        }
        profiles.push_back({{"dim", d}, {"outlier", !profile_dims.empty()}, {"max_abs_by_site", max_by_site},
                            {"hit_rate_by_site", rate_by_site}});
    }
    result["feature_profiles"] = profiles;

    // Magnitude distribution, pooled per site kind.
    json hist;
    json edges = json::array();
    for (int b = 0; b < s.histogram_spec.bins; ++b) edges.push_back(s.histogram_spec.lower_edge(b));
    hist["lower_edges"] = edges;
    std::map<std::string, std::vector<int64_t>> by_kind;
    for (size_t i = 0; i < S; ++i) {
        auto & v = by_kind[s.sites[i].site];
        v.resize(static_cast<size_t>(s.histogram_spec.bins), 0);
        for (int b = 0; b < s.histogram_spec.bins; ++b)
            v[static_cast<size_t>(b)] += s.site_histogram[i * static_cast<size_t>(s.histogram_spec.bins) + static_cast<size_t>(b)];
    }
    hist["counts"] = by_kind;
    hist["note"] = "bins start at 2^e x {1, 1.25, 1.5, 1.75} (bf16-rounded |x|); first bin includes smaller values, last bin larger";
    result["histogram"] = hist;

    // Massive activations (residual stream), when collected.
    if (s.massive_top_k > 0) {
        json m = json::array();
        for (const auto & l : s.massive) {
            if (l.top.empty()) continue;
            const auto & t = l.top.front();
            std::vector<float> medians;
            for (const auto & [seq, med] : l.medians) medians.push_back(med);
            std::sort(medians.begin(), medians.end());
            const float median_of_medians = medians.empty() ? 0.f : medians[medians.size() / 2];
            json top = json::array();
            for (const auto & e : l.top) {
                const double ratio = e.sequence_median_abs > 0 ? e.abs_value / e.sequence_median_abs : 0.0;
                top.push_back({{"abs", e.abs_value}, {"sequence", e.sequence_index}, {"position", e.position}, {"dim", e.dim},
                               {"median_abs", e.sequence_median_abs}, {"ratio_to_median", ratio},
                               {"massive", e.abs_value >= o.massive_min_abs && ratio >= o.massive_min_ratio}});
            }
            m.push_back({{"layer", l.layer}, {"top_abs", t.abs_value}, {"median_abs", median_of_medians}, {"top", top}});
        }
        result["massive_activations"] = {{"criterion", {{"min_abs", o.massive_min_abs}, {"min_ratio_to_median", o.massive_min_ratio}}},
                                         {"layers", m}};
    }
    return result;
}

json load_result(const std::string & path) {
    std::ifstream in(path);
    if (!in) {
        if (errno == ENOENT) throw common::Error::not_found(path, "no such result file").with("file", path);
        throw common::Error::io(path, "cannot open result file", errno);
    }
    json j;
    try {
        j = json::parse(in);
    } catch (const json::exception & e) {
        throw common::Error::file(path, std::string("not JSON: ") + e.what());
    }
    if (!j.is_object() || j.value("schema", std::string()) != kResultSchema)
        throw common::Error::file(path, std::string("not an analysis result (schema is not ") + kResultSchema + ")");
    if (j.value("version", 0) != kResultVersion)
        throw common::Error::file(path, "result version " + j.value("version", json(0)).dump() + " (this build reads " +
                                            std::to_string(kResultVersion) + "); regenerate it from the statistics file");
    return j;
}

void write_text_file(const std::string & path, const std::string & text) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        if (!out) throw common::Error::io(tmp, "cannot create file", errno);
        out << text;
        out.flush();
        if (!out) throw common::Error::io(tmp, "cannot write file", errno);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw common::Error::io(path, "cannot rename into place", errno);
}

}  // namespace analysis
