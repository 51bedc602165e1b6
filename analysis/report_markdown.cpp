// The markdown report: what a person reads first. Rendered from the result JSON only, so it can be
// regenerated anywhere with `analyze report RESULT.json`.
#include "analysis/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

namespace analysis {

using json = nlohmann::json;

namespace {

std::string fixed(double v, int digits) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return buf;
}

// Token text made safe for a table cell: control characters shown as escapes, pipes escaped.
std::string cell_token(const json & t) {
    std::string out;
    if (t.contains("text") && t["text"].is_string()) {
        for (unsigned char c : t["text"].get<std::string>()) {
            if (c == '\n') out += "\\n";
            else if (c == '\t') out += "\\t";
            else if (c == '\r') out += "\\r";
            else if (c < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\x%02x", c);
                out += buf;
            } else if (c == '|') out += "\\|";
            else if (c == '`') out += "'";
            else out += static_cast<char>(c);
        }
        out = "`" + out + "`";
    } else {
        out = "#" + std::to_string(t.value("token_id", int64_t{0}));
    }
    return out + " ×" + std::to_string(t.value("positions", int64_t{0}));
}

// A massive entry's token: its text (cell_token's escaping) or its id, or "-" when the run had none.
std::string token_cell(const json & t) {
    if (!t.contains("token_id")) return "-";
    json plain = t;
    plain.erase("positions");
    std::string cell = cell_token(plain);
    return cell.substr(0, cell.rfind(" ×"));
}

std::string describe(const json & c) {
    std::ostringstream o;
    const bool per_seq = c.value("scope", "") == "per_sequence";
    const bool sites = c.value("layer_unit", "") == "site";
    o << "|x| ≥ " << fixed(c.value("threshold", 6.0), 2) << " in ≥ " << fixed(c.value("layer_fraction", 0.0) * 100, 1)
      << " % of " << (sites ? "layer-norm sites (2 per decoder layer)" : "decoder layers (a layer counts if any of its sites hits)")
      << " and ≥ " << fixed(c.value("position_fraction", 0.0) * 100, 1) << " % of "
      << (per_seq ? "the sequence's positions; each sequence analysed alone and the lists concatenated, so counts are (sequence, dim) pairs"
                  : "all (sequence, position) pairs of the run; counts are unique dims");
    return o.str();
}

// The run's table: model, size, sites, dtype, rounding, schema, and the partial-run warnings.
void write_run_table(std::ostringstream & o, const json & r) {
    const auto & run = r.at("run");
    const std::string model = run.value("model_name", std::string());
    o << "# Outlier features: " << (model.empty() ? std::string("(model not recorded)") : model) << "\n\n";
    o << "| run | |\n|---|---|\n";
    o << "| sequences × tokens | " << run.value("sequences", 0) << " sequences, " << run.value("tokens", 0) << " tokens |\n";
    o << "| sites | " << run.value("sites_captured", 0) << " layer-norm sites over " << run.value("layers_captured", 0) << " layers |\n";
    o << "| hidden size | " << run.value("hidden", 0) << " |\n";
    if (run.contains("dtype") && run["dtype"].is_string()) o << "| model dtype | " << run["dtype"].get<std::string>() << " |\n";
    o << "| values | " << (run.value("round_bf16", true) ? "rounded to bf16 before thresholding (as the predecessor)" : "thresholded at the model's dtype") << " |\n";
    o << "| schema | " << r.value("schema", "") << " v" << r.value("version", 0) << " |\n\n";
    if (run.value("partial", false))
        o << "**Partial statistics**: a checkpoint written during a run that did not finish; only the batches before it are counted.\n\n";
    if (run.contains("sites_with_nonfinite") && run["sites_with_nonfinite"].is_array() && !run["sites_with_nonfinite"].empty())
        o << "**Non-finite values**: " << run.value("nonfinite_values", int64_t{0}) << " captured value(s) were NaN or inf, in "
          << run["sites_with_nonfinite"].size()
          << " site(s) (`run.sites_with_nonfinite` in the JSON; per site in the table below). They never count as hits, so "
             "the outlier counts of those sites are not meaningful; their max |x| shows as nan.\n\n";
    if (run.contains("sites_with_partial_coverage") && !run["sites_with_partial_coverage"].empty())
        o << "**Coverage warning**: " << run["sites_with_partial_coverage"].size()
          << " site(s) saw fewer sequences than the run (see `run.sites_with_partial_coverage` in the JSON).\n\n";
}

// Both modes' summary numbers in one table, then each mode's criteria in words.
void write_summary(std::ostringstream & o, const json & r) {
    o << "## Summary\n\n| mode | outliers | unique dims | mean layer % | median layer % | mean position % | median position % | dims with any hit |\n"
      << "|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const auto & [name, m] : r.at("modes").items()) {
        const auto & s = m.at("summary");
        o << "| " << name << " | " << s.value("num_outliers", 0) << " | " << s.value("unique_dims", 0) << " | "
          << fixed(s.value("mean_layer_pct", 0.0), 1) << " | " << fixed(s.value("median_layer_pct", 0.0), 1) << " | "
          << fixed(s.value("mean_position_pct", 0.0), 1) << " | " << fixed(s.value("median_position_pct", 0.0), 1) << " | "
          << s.value("dims_with_hits", 0) << " |\n";
    }
    o << "\nCriteria:\n\n";
    for (const auto & [name, m] : r.at("modes").items()) o << "- **" << name << "**: " << describe(m.at("criteria")) << ".\n";
}

// Each mode's outlier features (at most 40 rows) with the tokens where they fire most.
void write_features(std::ostringstream & o, const json & r) {
    for (const auto & [name, m] : r.at("modes").items()) {
        const auto & features = m.at("features");
        o << "\n## Outlier features (" << name << ")\n\n";
        if (features.empty()) {
            o << "None met the criteria.\n";
            continue;
        }
        o << "| dim | max abs | " << (m.at("criteria").value("scope", "") == "per_sequence" ? "sequences" : "occurrences")
          << " | mean layer % | mean position % | hits | tokens where it fires most |\n|---:|---:|---:|---:|---:|---:|---|\n";
        int shown = 0;
        for (const auto & f : features) {
            if (++shown > 40) {
                o << "\n(" << features.size() - 40 << " more in the JSON.)\n";
                break;
            }
            std::string tokens;
            for (const auto & t : f.at("top_tokens")) tokens += (tokens.empty() ? "" : ", ") + cell_token(t);
            o << "| " << f.value("dim", 0) << " | " << fixed(result_number(f, "max_abs"), 2) << " | " << f.value("occurrences", 0)
              << " | " << fixed(f.value("mean_layer_pct", 0.0), 1) << " | " << fixed(f.value("mean_position_pct", 0.0), 1)
              << " | " << f.value("hits", 0) << " | " << (tokens.empty() ? "-" : tokens) << " |\n";
        }
    }
}

// Hits, hit rate and the largest value per layer-norm site.
void write_layers(std::ostringstream & o, const json & r) {
    o << "\n## Per layer\n\n| layer | site | hits | hit rate (ppm) | dims with hits | max abs | at dim | NaN/inf values |\n"
         "|---:|---|---:|---:|---:|---:|---:|---:|\n";
    for (const auto & l : r.at("layers"))
        o << "| " << l.value("layer", 0) << " | " << l.value("site", "") << " | " << l.value("hits", 0) << " | "
          << fixed(l.value("hit_rate", 0.0) * 1e6, 1) << " | " << l.value("dims_with_hits", 0) << " | "
          << fixed(result_number(l, "max_abs"), 2) << " | " << l.value("max_abs_dim", 0) << " | " << l.value("nonfinite", int64_t{0})
          << " |\n";
}

// Massive activations (`--massive`): the top entry per layer, then the tokens where massive values sit.
void write_massive(std::ostringstream & o, const json & r) {
    const auto & ma = r["massive_activations"];
    o << "\n## Massive activations (residual stream)\n\nCriterion: |x| ≥ " << fixed(ma["criterion"].value("min_abs", 0.0), 0)
      << " and ≥ " << fixed(ma["criterion"].value("min_ratio_to_median", 0.0), 0) << " × the sequence's median |x| at that layer.\n\n"
      << "| layer | top abs | dim | position | token | sequence | median abs | ratio | top / layer median | massive |\n"
      << "|---:|---:|---:|---:|---|---:|---:|---:|---:|---|\n";
    for (const auto & l : ma.at("layers")) {
        const auto & t = l.at("top").at(0);
        o << "| " << l.value("layer", 0) << " | " << fixed(result_number(t, "abs"), 2) << " | " << t.value("dim", 0) << " | "
          << t.value("position", 0) << " | " << token_cell(t) << " | " << t.value("sequence", 0) << " | "
          << fixed(result_number(t, "median_abs"), 4) << " | " << fixed(result_number(t, "ratio_to_median"), 0) << " | "
          << fixed(result_number(l, "top_ratio_to_median"), 0) << " | " << (t.value("massive", false) ? "yes" : "no") << " |\n";
    }
    // Sun et al. 2024: massive values sit on few tokens (the first token, delimiters). Every
    // massive entry of the kept top-K, by token.
    std::map<std::string, std::pair<int64_t, double>> by_token;  // cell -> (entries, largest |x|)
    for (const auto & l : ma.at("layers"))
        for (const auto & t : l.at("top"))
            if (t.value("massive", false)) {
                auto & [n, mx] = by_token[token_cell(t) + " at position " + std::to_string(t.value("position", int64_t{0}))];
                n += 1;
                mx = std::max(mx, result_number(t, "abs"));
            }
    if (!by_token.empty()) {
        o << "\nWhere the massive values sit (token at position, entries over layers and kept top-K, largest |x|):\n\n"
          << "| token | entries | max abs |\n|---|---:|---:|\n";
        std::vector<std::pair<std::string, std::pair<int64_t, double>>> rows(by_token.begin(), by_token.end());
        std::stable_sort(rows.begin(), rows.end(), [](const auto & a, const auto & b) { return a.second.first > b.second.first; });
        for (size_t i = 0; i < rows.size() && i < 20; ++i)
            o << "| " << rows[i].first << " | " << rows[i].second.first << " | " << fixed(rows[i].second.second, 2) << " |\n";
    }
}

// The threshold sweep (`--thresholds`): outliers of each mode at every threshold.
void write_threshold_sweep(std::ostringstream & o, const json & r) {
    const auto & sw = r["threshold_sweep"];
    o << "\n## Threshold sweep\n\nOutliers per mode at each threshold (" << sw.value("note", std::string()) << ").\n\n| threshold |";
    std::string rule = "|---:|";
    for (const auto & [name, rows] : sw.at("modes").items()) {
        o << " " << name << " outliers | " << name << " unique dims |";
        rule += "---:|---:|";
    }
    o << " dims with any hit |\n" << rule << "---:|\n";
    const auto & thresholds = sw.at("thresholds");
    for (size_t k = 0; k < thresholds.size(); ++k) {
        o << "| " << fixed(thresholds[k].get<double>(), 2) << " |";
        int64_t dims_hit = 0;
        for (const auto & [name, rows] : sw.at("modes").items()) {
            if (k >= rows.size()) {
                o << " - | - |";
                continue;
            }
            o << " " << rows[k].value("num_outliers", 0) << " | " << rows[k].value("unique_dims", 0) << " |";
            dims_hit = rows[k].value("dims_with_hits", int64_t{0});
        }
        o << " " << dims_hit << " |\n";
    }
}

// The experts with the largest down_proj outputs (`--expert-stats`).
void write_experts(std::ostringstream & o, const json & r) {
    const auto & ex = r["experts"];
    o << "\n## Experts\n\nPer MoE layer and expert: tokens routed, max |x| of the expert's down_proj output and the tokens "
      << "whose output reaches |x| ≥ " << fixed(ex.value("threshold", 6.0), 2) << " (" << ex.value("note", std::string())
      << "). The experts with the largest outputs (super experts, arXiv 2507.23279):\n\n"
      << "| layer | expert | max abs | tokens routed | tokens ≥ threshold | rate |\n|---:|---:|---:|---:|---:|---:|\n";
    for (const auto & t : ex.at("top"))
        o << "| " << t.value("layer", 0) << " | " << t.value("expert", 0) << " | " << fixed(result_number(t, "max_abs"), 2) << " | "
          << t.value("tokens", 0) << " | " << t.value("hit_tokens", 0) << " | " << fixed(result_number(t, "hit_rate") * 100, 2) << " % |\n";
    if (ex.at("top").empty()) o << "(no tokens were routed)\n";
}

// Perplexity (`--perplexity`): overall, by position bucket, and per sequence or its spread.
void write_perplexity(std::ostringstream & o, const json & r) {
    const auto & p = r["perplexity"];
    const auto & all = p.at("overall");
    o << "\n## Perplexity\n\n" << p.value("convention", std::string()) << ".\n\n"
      << "Overall: perplexity **" << fixed(result_number(all, "perplexity"), 4) << "**, mean NLL "
      << fixed(result_number(all, "mean_nll"), 6) << " nats over " << all.value("tokens", 0) << " tokens of "
      << all.value("sequences", 0) << " sequences.\n\n"
      << "| positions | tokens | mean NLL |\n|---|---:|---:|\n";
    for (const auto & b : p.at("by_position"))
        o << "| " << b.value("first", 0) << "-" << b.value("last", 0) << " | " << b.value("tokens", 0) << " | "
          << fixed(result_number(b, "mean_nll"), 6) << " |\n";
    // Every sequence for a short run; the spread (min, median, max) for a long one.
    const auto & seqs = p.at("per_sequence");
    if (seqs.size() <= 20 || !seqs.is_array()) {
        o << "\n| sequence | tokens | perplexity |\n|---:|---:|---:|\n";
        for (const auto & q : seqs)
            o << "| " << q.value("sequence", 0) << " | " << q.value("tokens", 0) << " | " << fixed(result_number(q, "perplexity"), 4) << " |\n";
    } else {
        std::vector<double> v;
        for (const auto & q : seqs)
            if (const double x = result_number(q, "perplexity"); !std::isnan(x)) v.push_back(x);  // NaN: a diverged window
        std::sort(v.begin(), v.end());
        if (!v.empty())
            o << "\nPer-sequence perplexity over " << v.size() << " sequences: min " << fixed(v.front(), 4) << ", median "
              << fixed(v[v.size() / 2], 4) << ", max " << fixed(v.back(), 4) << " (every sequence in outliers.json).\n";
    }
}

// Links to the png plots, or why there are none.
void write_plot_links(std::ostringstream & o, const std::vector<std::string> & plot_files) {
    o << "\n## Plots\n\n";
    if (plot_files.empty()) o << "Plots were not produced (see the log); run `analyze report RESULT.json` where gnuplot is installed.\n";
    for (const auto & p : plot_files)
        if (p.size() > 4 && p.substr(p.size() - 4) == ".png") {
            const auto slash = p.find_last_of('/');
            const auto base = slash == std::string::npos ? p : p.substr(slash + 1);
            o << "![" << base << "](plots/" << base << ")\n\n";
        }
}

}  // namespace

std::string render_markdown(const json & r, const std::vector<std::string> & plot_files) {
    std::ostringstream o;
    write_run_table(o, r);
    write_summary(o, r);
    write_features(o, r);
    write_layers(o, r);
    if (r.contains("massive_activations")) write_massive(o, r);
    if (r.contains("threshold_sweep") && r["threshold_sweep"].is_object()) write_threshold_sweep(o, r);
    if (r.contains("experts") && r["experts"].is_object()) write_experts(o, r);
    if (r.contains("perplexity") && r["perplexity"].is_object()) write_perplexity(o, r);
    write_plot_links(o, plot_files);
    return o.str();
}

}  // namespace analysis
