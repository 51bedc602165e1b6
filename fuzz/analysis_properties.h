// The properties the analysis fuzz targets check (fuzz/stats_file_fuzz.cpp, fuzz/result_json_fuzz.cpp),
// shared with tests/analysis/hostile_input_test.cpp, which replays the committed regression inputs
// (tests/fuzz_regressions/stats_file/, tests/fuzz_regressions/result_json/) through the same checks
// in the ordinary test run. Each returns normally when the property holds and calls std::abort()
// (a crash libFuzzer and doctest both report) when it does not. Plain C++: no torch, no gnuplot run.
#pragma once

#include "analysis/report.h"
#include "analysis/stats_file.h"
#include "common/error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace analysis_fuzz {

using json = nlohmann::json;

// Every string of a result replaced by "x" and every histogram kind by "kN": what the plot script
// may not depend on. Site kinds stay (the y labels say "attn" or "mlp" by comparing them).
inline json without_strings(const json & j, bool keep = false) {
    if (j.is_string()) return keep ? j : json("x");
    if (j.is_array()) {
        json out = json::array();
        for (const auto & v : j) out.push_back(without_strings(v));
        return out;
    }
    if (!j.is_object()) return j;
    json out = json::object();
    for (const auto & [k, v] : j.items()) out[k] = without_strings(v, k == "site");
    return out;
}

inline json renamed_kinds(json r) {
    if (!r.contains("histogram") || !r["histogram"].contains("counts") || !r["histogram"]["counts"].is_object()) return r;
    json counts = json::object();
    int n = 0;
    for (const auto & [kind, c] : r["histogram"]["counts"].items()) counts["k" + std::to_string(n++)] = c;
    r["histogram"]["counts"] = counts;
    return r;
}

// A validated result renders (markdown, plot scripts, comparison) without throwing, and no string
// in it changes a gnuplot script: strings reach gnuplot through data files only.
inline void check_validated_result(const json & r) {
    try {
        (void)analysis::render_markdown(r, {});
        const auto job = analysis::plot_job(r);
        auto blank = without_strings(r);
        blank["schema"] = r["schema"];
        if (analysis::plot_job(renamed_kinds(blank)).script != job.script) std::abort();

        std::string mode = "predecessor";
        if (!r.at("modes").empty()) mode = r.at("modes").begin().key();
        analysis::CompareOptions options;
        options.mode = mode;
        const auto comparison = analysis::build_comparison({{"a.json", r}}, options);
        (void)analysis::render_comparison_markdown(comparison, {});
        (void)comparison.dump(1, ' ', false, json::error_handler_t::replace);
        auto with_params = comparison;
        for (auto & row : with_params["rows"]) row["params"] = 1e9;
        const auto cjob = analysis::comparison_plot_job(with_params);
        for (auto & row : with_params["rows"]) row["label"] = "x";
        if (analysis::comparison_plot_job(with_params).script != cjob.script) std::abort();
    } catch (const common::Error &) {
        std::abort();  // nothing after validation may refuse the document
    } catch (const std::exception &) {
        std::abort();
    }
}

// Result JSON text: parse_result returns a validated document or throws common::Error (usage).
inline void check_result_text(std::string_view text) {
    json r;
    try {
        r = analysis::parse_result(text, "fuzz.json");
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::Usage) std::abort();
        return;
    }
    check_validated_result(r);
}

// Statistics bytes: parse_statistics returns statistics whose arrays match their stated sizes and
// whose indices are in range, or throws common::Error (usage). What `analyze report` does next
// (criteria, result JSON, markdown, plots) throws nothing but common::Error (an empty run is a
// usage error), the result it builds passes validate_result and renders, and a merge with itself
// is refused or succeeds.
inline void check_statistics_bytes(const std::uint8_t * data, std::size_t size) {
    analysis::Statistics s;
    try {
        s = analysis::parse_statistics(data, size, "fuzz.stats.cbor");
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::Usage) std::abort();
        return;
    }
    const auto S = s.sites.size(), H = static_cast<size_t>(s.hidden), T = static_cast<size_t>(s.max_positions);
    if (s.site_hits.size() != S * H || s.site_max_abs.size() != S * H || s.site_elements.size() != S ||
        s.site_sequences.size() != S || s.site_histogram.size() != S * static_cast<size_t>(s.histogram_spec.bins) ||
        s.position_hits.size() != T * H)
        std::abort();
    for (const auto & q : s.per_sequence)
        for (const auto & d : q.dims)
            if (d.dim < 0 || static_cast<size_t>(d.dim) >= H) std::abort();
    json r;
    try {
        r = analysis::build_result(s, analysis::ReportOptions{}, {});  // an empty run is a usage error
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::Usage) std::abort();
        return;
    } catch (const std::exception &) {
        std::abort();
    }
    try {
        r["run"]["statistics_file"] = "fuzz.stats.cbor";
        const auto text = r.dump(1, ' ', false, json::error_handler_t::replace);
        // What `analyze report X.stats.cbor` renders; the rest of check_validated_result is the
        // result target's (kept out of this one's hot path).
        const auto back = analysis::parse_result(text, "fuzz.json");
        (void)analysis::render_markdown(back, {});
        (void)analysis::plot_job(back);
    } catch (const std::exception &) {
        std::abort();  // what build_result writes must read back (common::Error included)
    }
    try {
        auto twice = s;
        analysis::merge_into(twice, s, "a", "b");  // refused (shared sequences) or merged
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::Usage) std::abort();
    } catch (const std::exception &) {
        std::abort();
    }
}

}  // namespace analysis_fuzz
