// The `analyze` verbs: one options struct and one run function per verb, each in its own file;
// cli.cpp (the only CLI11 file) fills the structs. Results go to stdout through common::Output.
#pragma once

#include "analysis/accumulators.h"
#include "analysis/criteria.h"
#include "analysis/report.h"
#include "common/output.h"

#include <optional>
#include <string>
#include <vector>

namespace analysis::cli {

// Options shared by every verb that applies criteria.
struct CriteriaOptions {
    std::string mode = "both";  // predecessor | paper | both
    std::optional<double> layer_fraction, position_fraction;
    ReportOptions report_options() const;
};

struct RunOptions {  // analyze RUN_DIR
    std::string run_dir;
    std::string out_dir;     // default RUN_DIR/analysis
    std::string device = "cpu";
    std::string tokenizer;   // tokenizer.json; default: the run's model dir, when it has one
    AccumulatorOptions accumulate;
    CriteriaOptions criteria;
    bool plots = true;
};
int run_analyze_run(const RunOptions & options, const common::Output & out);

struct MergeOptions {  // analyze merge A B ... -o C
    std::vector<std::string> inputs;
    std::string output;
};
int run_merge(const MergeOptions & options, const common::Output & out);

struct ReportVerbOptions {  // analyze report RESULT.json | STATS.cbor
    std::string input;
    std::string out_dir;  // default: the input's folder
    std::string tokenizer;
    CriteriaOptions criteria;
    bool plots = true;
};
int run_report(const ReportVerbOptions & options, const common::Output & out);

struct CompareVerbOptions {  // analyze compare RESULT...
    std::vector<std::string> inputs;
    std::string out_dir;  // optional: comparison.json, comparison.md, plots
    std::string mode = "predecessor";
    std::vector<std::string> params;  // LABEL=COUNT (1.3e9, 7B, 1.3B, 300M accepted)
    std::string params_kind = "total";  // total | active: what the counts are (axis and table name)
    bool plots = true;
};
int run_compare(const CompareVerbOptions & options, const common::Output & out);

struct FusedOptions {  // analyze extract [flags] -- run MODEL_DIR [extract flags]
    std::string out_dir;
    std::string tokenizer;
    AccumulatorOptions accumulate;
    CriteriaOptions criteria;
    bool plots = true;
    bool baseline = false;  // forward pass with a sink that takes nothing (benchmark baseline)
    int64_t checkpoint_every = 0;  // > 0: save OUT/outliers.partial.stats.cbor every N batches
    std::string model_name;        // how reports name the model (default: its directory's name)
    std::vector<std::string> extract_args;
};
int run_fused(const FusedOptions & options, const common::Output & out);

// Shared helpers for the verbs.
void print_summary(const FinalizeOutcome & outcome, const common::Output & out);

}  // namespace analysis::cli
