// The result JSON (schema toolkit.analysis.result, version 1; fields documented in analysis/README.md).
// Deterministic: every list has a stated order (layer, then site, then feature; outliers by max |x|).
#include "analysis/report.h"

#include "analysis/criteria.h"
#include "common/error.h"
#include "common/regular_file.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cmath>
#include <fstream>
#include <iterator>
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

// A token's readable text, or null for an id outside the vocabulary (the id is kept beside it).
json token_text_of(int64_t id, const TokenText & token_text) {
    try {
        return token_text(id);
    } catch (const std::exception &) {
        return nullptr;
    }
}

// The sweep's per-mode rows (outliers vs threshold) for every mode of the report.
json sweep_json(const Statistics & s, const std::vector<std::pair<std::string, Criteria>> & modes) {
    json out = {{"thresholds", s.sweep_thresholds}, {"modes", json::object()},
                {"note", "counted in the same pass as the main threshold; hits and max |x| are not kept per threshold"}};
    for (const auto & [name, c] : modes) {
        json rows = json::array();
        for (const auto & p : apply_criteria_sweep(s, c))
            rows.push_back({{"threshold", p.threshold}, {"num_outliers", p.num_outliers}, {"unique_dims", p.unique_dims},
                            {"mean_layer_pct", p.mean_layer_pct}, {"median_layer_pct", p.median_layer_pct},
                            {"mean_position_pct", p.mean_position_pct}, {"median_position_pct", p.median_position_pct},
                            {"dims_with_hits", p.dims_with_hits}});
        out["modes"][name] = rows;
    }
    return out;
}

// Per-expert statistics: every layer's arrays (the heatmap) and the experts with the largest
// down_proj outputs ("super experts", arXiv 2507.23279), largest first.
json experts_json(const Statistics & s, int top_n) {
    json layers = json::array();
    struct Ranked {
        float max_abs;
        int layer;
        int64_t expert, tokens, hit_tokens;
    };
    std::vector<Ranked> ranked;
    for (const auto & l : s.experts) {
        layers.push_back({{"layer", l.layer}, {"tokens", l.tokens}, {"max_abs", l.max_abs}, {"hit_tokens", l.hit_tokens}});
        for (size_t e = 0; e < l.tokens.size(); ++e)
            if (l.tokens[e] > 0) ranked.push_back({l.max_abs[e], l.layer, static_cast<int64_t>(e), l.tokens[e], l.hit_tokens[e]});
    }
    // NaN first (it is the loudest finding), then by max |x|, ties by (layer, expert).
    std::stable_sort(ranked.begin(), ranked.end(), [](const Ranked & a, const Ranked & b) {
        if (std::isnan(a.max_abs) != std::isnan(b.max_abs)) return std::isnan(a.max_abs);
        if (a.max_abs != b.max_abs) return a.max_abs > b.max_abs;
        return a.layer != b.layer ? a.layer < b.layer : a.expert < b.expert;
    });
    json top = json::array();
    for (size_t i = 0; i < ranked.size() && static_cast<int>(i) < top_n; ++i) {
        const auto & r = ranked[i];
        top.push_back({{"layer", r.layer}, {"expert", r.expert}, {"max_abs", r.max_abs}, {"tokens", r.tokens},
                       {"hit_tokens", r.hit_tokens},
                       {"hit_rate", r.tokens ? static_cast<double>(r.hit_tokens) / static_cast<double>(r.tokens) : 0.0}});
    }
    return {{"threshold", s.threshold}, {"layers", layers}, {"top", top},
            {"note", "down_proj output of each routed (token, expert) pair, before the routing weight; real tokens only"}};
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
        if (token_text) t["text"] = token_text_of(v[i].first, token_text);
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

std::string nonfinite_warning(const Statistics & s) {
    int64_t total = 0, sites = 0;
    size_t first = s.site_nonfinite.size();
    for (size_t i = 0; i < s.site_nonfinite.size() && i < s.sites.size(); ++i)
        if (s.site_nonfinite[i] > 0) {
            total += s.site_nonfinite[i];
            sites += 1;
            if (first == s.site_nonfinite.size()) first = i;
        }
    if (total == 0) return {};
    return std::to_string(total) + " captured value(s) are NaN or inf, in " + std::to_string(sites) + " of " +
           std::to_string(s.sites.size()) + " site(s) (first: layer " + std::to_string(s.sites[first].layer) + " " +
           s.sites[first].site + ", " + std::to_string(s.site_nonfinite[first]) +
           "); they never count as hits, so outlier counts there are not meaningful (outliers.json run.sites_with_nonfinite)";
}

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
    // Non-finite values (NaN, inf) never hit, so without this a site full of NaN read as clean.
    json nonfinite_sites = json::array();
    int64_t nonfinite = 0;
    for (size_t i = 0; i < S && i < s.site_nonfinite.size(); ++i)
        if (s.site_nonfinite[i] > 0) {
            nonfinite += s.site_nonfinite[i];
            nonfinite_sites.push_back({{"layer", s.sites[i].layer}, {"site", s.sites[i].site}, {"values", s.site_nonfinite[i]}});
        }
    run["nonfinite_values"] = nonfinite;
    run["sites_with_nonfinite"] = nonfinite_sites;
    run["partial"] = s.metadata.is_object() && s.metadata.value("partial", false);
    result["run"] = run;

    result["modes"] = json::object();
    std::vector<std::pair<std::string, Criteria>> report_modes;  // name -> criteria, for the sweep
    std::vector<int32_t> profile_dims;
    for (const auto & name : o.modes) {
        const auto own = criteria_for_mode(name);
        auto c = own;
        if (o.layer_fraction) c.layer_fraction = *o.layer_fraction;
        if (o.position_fraction) c.position_fraction = *o.position_fraction;
        // Custom by value, not by flag: a caller that passes the mode's own fractions (deploy passes
        // what its config holds, the defaults included) ran the plain mode, and is labelled so.
        if (c.layer_fraction != own.layer_fraction || c.position_fraction != own.position_fraction) c.mode = name + "+custom";
        const auto r = apply_criteria(s, c);
        report_modes.emplace_back(name, c);
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
            dim_max[h] = abs_max(dim_max[h], m);
            if (abs_greater(m, mx)) {  // NaN-aware: `m > mx` skipped a NaN site's dims, reporting 0
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
                          {"max_abs_dim", argmax},
                          {"nonfinite", i < s.site_nonfinite.size() ? s.site_nonfinite[i] : 0}});
    }
    result["layers"] = layers;

    // Profiles for plots: the outlier dims (by max |x|), else the dims with the largest |x|.
    std::vector<int32_t> dims = profile_dims;
    if (dims.empty()) {
        std::vector<int32_t> all(H);
        for (size_t h = 0; h < H; ++h) all[h] = static_cast<int32_t>(h);
        std::stable_sort(all.begin(), all.end(), [&](int32_t a, int32_t b) { return abs_greater(dim_max[static_cast<size_t>(a)], dim_max[static_cast<size_t>(b)]); });
        dims = all;
    } else {
        std::stable_sort(dims.begin(), dims.end(), [&](int32_t a, int32_t b) { return abs_greater(dim_max[static_cast<size_t>(a)], dim_max[static_cast<size_t>(b)]); });
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
                json entry = {{"abs", e.abs_value}, {"sequence", e.sequence_index}, {"position", e.position}, {"dim", e.dim},
                              {"median_abs", e.sequence_median_abs}, {"ratio_to_median", ratio},
                              {"massive", e.abs_value >= o.massive_min_abs && ratio >= o.massive_min_ratio}};
                if (e.token_id >= 0) {
                    entry["token_id"] = e.token_id;
                    if (token_text) entry["text"] = token_text_of(e.token_id, token_text);
                }
                top.push_back(entry);
            }
            // Sun et al. 2024 (Fig. 1): the largest |x| against the median, per layer.
            const double ratio = median_of_medians > 0 ? t.abs_value / median_of_medians : 0.0;
            m.push_back({{"layer", l.layer}, {"top_abs", t.abs_value}, {"median_abs", median_of_medians},
                         {"top_ratio_to_median", ratio}, {"top", top}});
        }
        result["massive_activations"] = {{"criterion", {{"min_abs", o.massive_min_abs}, {"min_ratio_to_median", o.massive_min_ratio}}},
                                         {"layers", m}};
    }
    // Next-token loss (`extract run --perplexity`), when the run computed it.
    if (s.perplexity) result["perplexity"] = perplexity_json(s);
    if (!s.sweep_thresholds.empty()) result["threshold_sweep"] = sweep_json(s, report_modes);
    if (s.expert_stats) result["experts"] = experts_json(s, o.top_experts);
    return result;
}

namespace {

[[noreturn]] void bad_result(const std::string & file, const std::string & field, const std::string & why) {
    throw common::Error::file(file, "not a valid analysis result: field '" + field + "' " + why +
                                        "; regenerate it with `analyze report STATS.cbor`")
        .with("field", field);
}

// Type checks for one JSON object of a result, naming each field by its path ("modes.paper.features[2].dim").
// Fields the renderers reach with at() are required; the rest are optional but, when present, must
// have the type the renderers read them as (json::value() throws on a mismatch).
class Shape {
public:
    Shape(const json & j, std::string where, const std::string & file) : j_(j), where_(std::move(where)), file_(file) {
        if (!j_.is_object()) bad_result(file_, where_.empty() ? "(document)" : where_, "is not an object");
    }
    std::string name(const std::string & key) const { return where_.empty() ? key : where_ + "." + key; }
    const json * get(const std::string & key, bool required) const {
        const auto it = j_.find(key);
        if (it != j_.end()) return &*it;
        if (required) bad_result(file_, name(key), "is missing");
        return nullptr;
    }
    void integer(const std::string & key, bool required = false) const {
        if (const auto * v = get(key, required); v && !v->is_number_integer()) bad_result(file_, name(key), "is not an integer");
    }
    // Finite numbers; `nullable` for measured maxima and ratios, which JSON cannot hold when they
    // are inf or NaN (an fp16 overflow), so the writer stores null and the readers take it as NaN.
    void number(const std::string & key, bool required = false, bool nullable = false) const {
        if (const auto * v = get(key, required)) check_number(*v, name(key), nullable, file_);
    }
    void boolean(const std::string & key, bool required = false) const {
        if (const auto * v = get(key, required); v && !v->is_boolean()) bad_result(file_, name(key), "is not a boolean");
    }
    void string(const std::string & key, bool required = false) const {
        if (const auto * v = get(key, required); v && !v->is_string()) bad_result(file_, name(key), "is not a string");
    }
    const json * array(const std::string & key, bool required = false) const {
        const auto * v = get(key, required);
        if (v && !v->is_array()) bad_result(file_, name(key), "is not an array");
        return v;
    }
    const json * object(const std::string & key, bool required = false) const {
        const auto * v = get(key, required);
        if (v && !v->is_object()) bad_result(file_, name(key), "is not an object");
        return v;
    }
    static void check_number(const json & v, const std::string & field, bool nullable, const std::string & file) {
        if (nullable && v.is_null()) return;
        if (!v.is_number()) bad_result(file, field, nullable ? "is neither a number nor null" : "is not a number");
        if (!std::isfinite(v.get<double>())) bad_result(file, field, "is not finite");
    }

private:
    const json & j_;
    std::string where_;
    const std::string & file_;
};

std::string index(const std::string & field, size_t i) { return field + "[" + std::to_string(i) + "]"; }

void check_mode(const json & m, const std::string & where, const std::string & file) {
    const Shape mode(m, where, file);
    const Shape criteria(*mode.object("criteria", true), mode.name("criteria"), file);
    criteria.string("mode");
    for (const char * key : {"threshold", "layer_fraction", "position_fraction"}) criteria.number(key);
    criteria.string("layer_unit");
    criteria.string("scope");
    const Shape summary(*mode.object("summary", true), mode.name("summary"), file);
    for (const char * key : {"num_outliers", "unique_dims"}) summary.integer(key, true);
    for (const char * key : {"mean_layer_pct", "mean_position_pct"}) summary.number(key, true);
    for (const char * key : {"median_layer_pct", "median_position_pct"}) summary.number(key);
    summary.integer("dims_with_hits");
    const auto & features = *mode.array("features", true);
    for (size_t i = 0; i < features.size(); ++i) {
        const Shape f(features[i], index(mode.name("features"), i), file);
        for (const char * key : {"dim", "occurrences", "hits", "token_batches_tallied"}) f.integer(key);
        f.number("max_abs", false, true);
        for (const char * key : {"mean_layer_pct", "mean_position_pct"}) f.number(key);
        const auto & tokens = *f.array("top_tokens", true);
        for (size_t k = 0; k < tokens.size(); ++k) {
            const Shape t(tokens[k], index(f.name("top_tokens"), k), file);
            t.integer("token_id");
            t.integer("positions");
            if (const auto * text = t.get("text", false); text && !text->is_string() && !text->is_null())
                bad_result(file, t.name("text"), "is neither a string nor null");
        }
    }
    if (const auto * entries = mode.array("entries"))
        for (size_t i = 0; i < entries->size(); ++i) {
            const Shape e((*entries)[i], index(mode.name("entries"), i), file);
            for (const char * key : {"dim", "sequence", "hits", "layers_hit", "layers_total", "positions_hit", "positions_total"}) e.integer(key);
            for (const char * key : {"layer_pct", "position_pct"}) e.number(key);
            e.number("max_abs", false, true);
        }
    mode.boolean("entries_truncated");
}

}  // namespace

void validate_result(const json & r, const std::string & file) {
    if (!r.is_object() || !r.contains("schema") || !r["schema"].is_string() || r["schema"].get<std::string>() != kResultSchema)
        throw common::Error::file(file, std::string("not an analysis result (schema is not ") + kResultSchema + ")");
    if (!r.contains("version") || !r["version"].is_number_integer() || r["version"].get<int64_t>() != kResultVersion)
        throw common::Error::file(file, "result version " + r.value("version", json(0)).dump() + " (this build reads " +
                                            std::to_string(kResultVersion) + "); regenerate it from the statistics file");
    const Shape root(r, "", file);

    const Shape run(*root.object("run", true), "run", file);
    for (const char * key : {"model_name", "statistics_file"}) run.string(key);
    for (const char * key : {"sequences", "tokens", "batches", "hidden", "sites_captured", "layers_captured"}) run.integer(key);
    run.number("threshold");
    for (const char * key : {"round_bf16", "partial"}) run.boolean(key);
    run.array("sites_with_partial_coverage");
    run.integer("nonfinite_values");  // optional: results before it lack both
    if (const auto * nf = run.array("sites_with_nonfinite"))
        for (size_t i = 0; i < nf->size(); ++i) {
            const Shape e((*nf)[i], index(run.name("sites_with_nonfinite"), i), file);
            for (const char * key : {"layer", "values"}) e.integer(key, true);
            e.string("site", true);
        }

    const auto & modes = *root.object("modes", true);
    for (const auto & [name, m] : modes.items()) check_mode(m, "modes." + name, file);

    const auto & layers = *root.array("layers", true);
    for (size_t i = 0; i < layers.size(); ++i) {
        const Shape l(layers[i], index("layers", i), file);
        for (const char * key : {"layer", "hits", "elements", "dims_with_hits", "max_abs_dim", "nonfinite"}) l.integer(key);
        l.string("site");
        l.number("hit_rate");
        l.number("max_abs", false, true);
    }

    // The plots index every profile's arrays by site: one value per entry of `layers`.
    const auto & profiles = *root.array("feature_profiles", true);
    for (size_t k = 0; k < profiles.size(); ++k) {
        const Shape p(profiles[k], index("feature_profiles", k), file);
        p.integer("dim");
        p.boolean("outlier");
        for (const char * key : {"max_abs_by_site", "hit_rate_by_site"}) {
            const auto & a = *p.array(key, true);
            if (a.size() != layers.size())
                bad_result(file, p.name(key), "has " + std::to_string(a.size()) + " values for " + std::to_string(layers.size()) + " layers");
            for (size_t i = 0; i < a.size(); ++i) Shape::check_number(a[i], index(p.name(key), i), true, file);
        }
    }

    const Shape hist(*root.object("histogram", true), "histogram", file);
    const auto & edges = *hist.array("lower_edges", true);
    for (size_t b = 0; b < edges.size(); ++b) {
        Shape::check_number(edges[b], index(hist.name("lower_edges"), b), false, file);
        if (!(edges[b].get<double>() > 0)) bad_result(file, index(hist.name("lower_edges"), b), "is not positive");
    }
    const auto & counts = *hist.object("counts", true);
    for (const auto & [kind, c] : counts.items()) {
        const std::string field = hist.name("counts") + "." + kind;
        if (!c.is_array()) bad_result(file, field, "is not an array");
        for (size_t b = 0; b < c.size(); ++b)
            if (!c[b].is_number_integer()) bad_result(file, index(field, b), "is not an integer");
    }
    hist.string("note");

    if (const auto * massive = root.object("massive_activations")) {
        const Shape ma(*massive, "massive_activations", file);
        const Shape criterion(*ma.object("criterion", true), ma.name("criterion"), file);
        criterion.number("min_abs");
        criterion.number("min_ratio_to_median");
        const auto & ml = *ma.array("layers", true);
        for (size_t i = 0; i < ml.size(); ++i) {
            const Shape l(ml[i], index(ma.name("layers"), i), file);
            l.integer("layer");
            l.number("top_abs", false, true);
            l.number("median_abs", false, true);
            l.number("top_ratio_to_median", false, true);
            const auto & t = *l.array("top", true);
            if (t.empty()) bad_result(file, l.name("top"), "is empty");
            for (size_t k = 0; k < t.size(); ++k) {
                const Shape e(t[k], index(l.name("top"), k), file);
                for (const char * key : {"sequence", "position", "dim"}) e.integer(key);
                for (const char * key : {"abs", "median_abs", "ratio_to_median"}) e.number(key, false, true);
                e.boolean("massive");
                e.integer("token_id");
                if (const auto * text = e.get("text", false); text && !text->is_string() && !text->is_null())
                    bad_result(file, e.name("text"), "is neither a string nor null");
            }
        }
    }

    if (const auto * sweep = root.object("threshold_sweep")) {
        const Shape sw(*sweep, "threshold_sweep", file);
        const auto & thresholds = *sw.array("thresholds", true);
        for (size_t k = 0; k < thresholds.size(); ++k) Shape::check_number(thresholds[k], index(sw.name("thresholds"), k), false, file);
        for (const auto & [name, rows] : sw.object("modes", true)->items()) {
            const std::string field = sw.name("modes") + "." + name;
            if (!rows.is_array()) bad_result(file, field, "is not an array");
            for (size_t k = 0; k < rows.size(); ++k) {
                const Shape r(rows[k], index(field, k), file);
                r.number("threshold", true);
                for (const char * key : {"num_outliers", "unique_dims", "dims_with_hits"}) r.integer(key, true);
                for (const char * key : {"mean_layer_pct", "median_layer_pct", "mean_position_pct", "median_position_pct"}) r.number(key);
            }
        }
    }

    if (const auto * experts = root.object("experts")) {
        const Shape ex(*experts, "experts", file);
        ex.number("threshold");
        const auto & layers = *ex.array("layers", true);
        for (size_t i = 0; i < layers.size(); ++i) {
            const Shape l(layers[i], index(ex.name("layers"), i), file);
            l.integer("layer", true);
            const auto & tokens = *l.array("tokens", true);
            for (const char * key : {"tokens", "max_abs", "hit_tokens"}) {
                const auto & a = *l.array(key, true);
                if (a.size() != tokens.size())
                    bad_result(file, l.name(key), "has " + std::to_string(a.size()) + " values for " + std::to_string(tokens.size()) + " experts");
                for (size_t e = 0; e < a.size(); ++e) {
                    if (std::string(key) == "max_abs") Shape::check_number(a[e], index(l.name(key), e), true, file);
                    else if (!a[e].is_number_integer()) bad_result(file, index(l.name(key), e), "is not an integer");
                }
            }
        }
        const auto & top = *ex.array("top", true);
        for (size_t i = 0; i < top.size(); ++i) {
            const Shape t(top[i], index(ex.name("top"), i), file);
            for (const char * key : {"layer", "expert", "tokens", "hit_tokens"}) t.integer(key, true);
            t.number("max_abs", true, true);
            t.number("hit_rate", true);
        }
    }

    if (const auto * ppl = root.object("perplexity")) {
        const Shape p(*ppl, "perplexity", file);
        p.string("convention");
        const Shape overall(*p.object("overall", true), p.name("overall"), file);
        for (const char * key : {"sequences", "tokens"}) overall.integer(key, true);
        for (const char * key : {"nll_sum", "mean_nll", "perplexity"}) overall.number(key, false, true);
        const auto & seqs = *p.array("per_sequence", true);
        for (size_t i = 0; i < seqs.size(); ++i) {
            const Shape q(seqs[i], index(p.name("per_sequence"), i), file);
            for (const char * key : {"sequence", "tokens"}) q.integer(key, true);
            for (const char * key : {"nll_sum", "mean_nll", "perplexity"}) q.number(key, false, true);
        }
        const auto & by_position = *p.array("by_position", true);
        for (size_t i = 0; i < by_position.size(); ++i) {
            const Shape b(by_position[i], index(p.name("by_position"), i), file);
            for (const char * key : {"first", "last", "tokens"}) b.integer(key, true);
            for (const char * key : {"nll_sum", "mean_nll"}) b.number(key, false, true);
        }
    }
}

json parse_result(std::string_view text, const std::string & file) {
    // nlohmann's parser is iterative, but what later walks the document need not be: refuse
    // nesting beyond what a result has (run metadata included) while parsing.
    constexpr int kMaxDepth = 64;
    const json::parser_callback_t depth_limit = [&](int depth, json::parse_event_t event, json &) {
        if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) && depth >= kMaxDepth)
            throw common::Error::file(file, "not a valid analysis result: nested deeper than " + std::to_string(kMaxDepth) + " levels");
        return true;
    };
    json j;
    try {
        j = json::parse(text.begin(), text.end(), depth_limit);
    } catch (const json::exception & e) {
        throw common::Error::file(file, std::string("not JSON: ") + e.what());
    }
    validate_result(j, file);
    return j;
}

json load_result(const std::string & path) {
    // Bounded, and a FIFO or directory is refused by name (it used to block, or fail as internal).
    return parse_result(common::read_regular_file(path, kMaxResultFileBytes, "result file"), path);
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
