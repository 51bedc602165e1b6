// Helpers the verbs share: criteria flags -> ReportOptions and the run summary printed on stdout.
#include "analysis/cli/verbs.h"

#include "common/error.h"
#include "common/log.h"

#include <nlohmann/json.hpp>


namespace analysis::cli {

ReportOptions CriteriaOptions::report_options() const {
    ReportOptions r;
    if (mode == "both") r.modes = {"predecessor", "paper"};
    else {
        (void)criteria_for_mode(mode);  // validates the name
        r.modes = {mode};
    }
    r.layer_fraction = layer_fraction;
    r.position_fraction = position_fraction;
    return r;
}

void print_summary(const FinalizeOutcome & o, const common::Output & out) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto & [name, m] : o.result.at("modes").items()) {
        const auto & s = m.at("summary");
        rows.push_back({{"mode", name},
                        {"num_outliers", s.at("num_outliers")},
                        {"unique_dims", s.at("unique_dims")},
                        {"mean_layer_pct", s.at("mean_layer_pct")},
                        {"mean_position_pct", s.at("mean_position_pct")},
                        {"result", o.result_path},
                        {"report", o.report_path},
                        {"statistics", o.statistics_path},
                        {"plots", o.plots.produced ? nlohmann::json(o.plots.files) : nlohmann::json(nullptr)}});
    }
    out.rows({{"mode", "MODE"}, {"num_outliers", "OUTLIERS"}, {"unique_dims", "DIMS"}, {"mean_layer_pct", "LAYER %"},
              {"mean_position_pct", "POSITION %"}, {"report", "REPORT"}},
             rows);
    if (!o.plots.produced && o.plots.skipped_reason != kPlotsNotRequested) common::log::warn("plots skipped: ", o.plots.skipped_reason, "; run `analyze report ", o.result_path, "` where gnuplot is installed");
}

}  // namespace analysis::cli
