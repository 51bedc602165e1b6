// Turning statistics into what people read: the versioned result JSON (report_json.cpp), the
// markdown report (report_markdown.cpp), gnuplot plots (plots.cpp), the cross-model comparison
// (compare.cpp), and finalize_run(), which the fused `extract --analyze` path and `analyze RUN_DIR`
// both call at the end. The result JSON holds everything the report and plots need, so
// `analyze report RESULT.json` regenerates them on any machine (a GPU box may lack gnuplot).
#pragma once

#include "analysis/statistics.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace analysis {

inline constexpr const char * kResultSchema = "toolkit.analysis.result";
inline constexpr int kResultVersion = 1;
inline constexpr const char * kComparisonSchema = "toolkit.analysis.comparison";

// Token id -> readable text (the tokenizer's token_text). Empty function: ids only.
using TokenText = std::function<std::string(int64_t)>;

struct ReportOptions {
    std::vector<std::string> modes = {"predecessor", "paper"};
    std::optional<double> layer_fraction;     // overrides every mode's value (mode "<mode>+custom" when it differs)
    std::optional<double> position_fraction;
    int top_tokens = 10;        // token strings per outlier feature
    int profile_dims = 12;      // dims whose per-site profiles go into the JSON (for plots)
    int max_entries = 100000;   // cap on the per-entry list in the JSON (the count is always exact)
    double massive_min_abs = 100;     // massive activation: |x| >= this ...
    double massive_min_ratio = 1000;  // ... and >= this times the sequence's median |x|
    int top_experts = 20;             // experts listed by max |x| of their down_proj output (--expert-stats)
};

nlohmann::json build_result(const Statistics & stats, const ReportOptions & options, const TokenText & token_text);
// outliers.json is read whole; a real one is a few MB (feature profiles, per-layer tables).
inline constexpr uint64_t kMaxResultFileBytes = uint64_t{512} << 20;
// Reads and validates a result file (parse_result); not_found for a missing file.
nlohmann::json load_result(const std::string & path);
// Parses result JSON text and validates its whole shape (validate_result) before anything uses it;
// `file` names it in errors (the fuzz target's entry).
nlohmann::json parse_result(std::string_view text, const std::string & file);
// Throws common::Error (usage, exit 2) naming the file and the field path ("modes.paper.features[2].dim")
// for a wrong schema or version, a missing field the report needs, a field of the wrong type, or
// per-site arrays whose length differs from `layers`. A result that passes renders without throwing.
void validate_result(const nlohmann::json & result, const std::string & file);
// A number of a validated result that may be null (JSON holds no inf or NaN, so the writer stores a
// non-finite max |x| as null): the number, NaN for null, `absent` when the key is missing.
inline double result_number(const nlohmann::json & object, const char * key, double absent = 0) {
    const auto it = object.find(key);
    if (it == object.end()) return absent;
    return it->is_number() ? it->get<double>() : std::numeric_limits<double>::quiet_NaN();
}
// Writes text through a temporary file renamed into place.
void write_text_file(const std::string & path, const std::string & text);

std::string render_markdown(const nlohmann::json & result, const std::vector<std::string> & plot_files);

// PlotOutcome::skipped_reason when the caller asked for no plots (not worth a warning).
inline constexpr const char * kPlotsNotRequested = "not requested (--no-plots)";

struct PlotOutcome {
    bool produced = false;
    std::string skipped_reason;       // why no plots (no gnuplot, gnuplot failed)
    std::vector<std::string> files;   // PNG and SVG paths written
};
// What gnuplot is given: a script of our own text, numbers we format and our own file names only,
// and data files holding everything taken from a result (see plots.cpp). Built apart from running
// gnuplot so tests and the fuzz target can check the script.
struct PlotJob {
    std::string script;
    std::vector<std::pair<std::string, std::string>> data_files;  // bare file name -> contents
    std::vector<std::string> outputs;                             // bare names of the plots written
    std::string skipped_reason;                                   // nothing to plot, and why
};
// The plots of a validated result (validate_result) or of build_result's output.
PlotJob plot_job(const nlohmann::json & result);
// Runs gnuplot on the job in a private directory under dir and moves the plots into dir.
PlotOutcome render_plots(const PlotJob & job, const std::string & dir);
// Writes outliers_heatmap, magnitude_by_layer and magnitude_distribution (.png and .svg) into dir.
PlotOutcome write_plots(const nlohmann::json & result, const std::string & dir);
// True when `gnuplot` runs and has both the png and svg terminals.
bool gnuplot_available(std::string * why = nullptr);

// Cross-model comparison: one row per result (outlier count, mean layer %, mean position %, params).
struct CompareOptions {
    std::string mode = "predecessor";
    // label -> parameter count, overriding metadata; a label is a result's model name or its file.
    // A label that names no result is a usage error (listing the labels there are).
    std::vector<std::pair<std::string, double>> params;
    // What the counts are: "total" parameters or "active" parameters per token (MoE models). The
    // comparison records it ("params_kind"); its table and plots name their axis after it.
    std::string params_kind = "total";
};
inline constexpr const char * kParamsKinds[] = {"total", "active"};
nlohmann::json build_comparison(const std::vector<std::pair<std::string, nlohmann::json>> & results,
                                const CompareOptions & options);
std::string render_comparison_markdown(const nlohmann::json & comparison, const std::vector<std::string> & plot_files);
// Whether a comparison is against active parameters (its "params_kind"; absent or anything else: total).
bool comparison_is_active(const nlohmann::json & comparison);
PlotJob comparison_plot_job(const nlohmann::json & comparison);
PlotOutcome write_comparison_plots(const nlohmann::json & comparison, const std::string & dir);

// "" when no captured value was NaN or inf, else a one-line warning naming how many and where
// (finalize_run and `analyze report` log it; the report and outliers.json carry the counts).
std::string nonfinite_warning(const Statistics & stats);

// Token strings for reports: from the tokenizer.json at tokenizer_path, else from the one the run
// recorded (run_metadata tokenizer.path) while it still exists. An empty function (reports then
// show token ids) when there is neither, or when the build has no tokenizer (with a warning).
TokenText load_token_text(const std::string & tokenizer_path, const nlohmann::json & run_metadata = nlohmann::json::object());

struct FinalizeOptions {
    std::string out_dir;
    ReportOptions report;
    TokenText token_text;
    bool plots = true;
};
struct FinalizeOutcome {
    std::string statistics_path, result_path, report_path;
    PlotOutcome plots;
    nlohmann::json result;
};
// Writes <out_dir>/outliers.stats.cbor, outliers.json, report.md and plots/ (when gnuplot exists).
FinalizeOutcome finalize_run(const Statistics & stats, const FinalizeOptions & options);

}  // namespace analysis
