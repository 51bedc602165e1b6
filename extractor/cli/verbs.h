// The `extract` verbs, one file each (run.cpp, inspect.cpp, fixture.cpp), wired by cli.cpp, the
// only CLI11 translation unit. Each takes its options struct and an Output (table or --json).
#pragma once

#include "extractor/cli/cli.h"

#include <vector>

#include "common/output.h"
#include "extractor/capture.h"
#include "extractor/extract.h"
#include "extractor/fixture_writer.h"

namespace extractor::cli {

struct RunVerbOptions {
    ExtractOptions extract;
};
// extra_sinks: sinks registered by the embedding program (e.g. analysis for --analyze).
// fused: the --analyze plug-in, finished after the forward pass (nullptr: none).
int run_run(const RunVerbOptions & opt, const common::Output & out, const std::vector<CaptureSink *> & extra_sinks,
            FusedAnalysis * fused = nullptr);

struct InspectOptions {
    std::string model_dir;
    bool config_only = false;  // do not open the weights (by default their headers are checked)
};
int run_inspect(const InspectOptions & opt, const common::Output & out);

struct FixtureVerbOptions {
    FixtureOptions fixture;
};
int run_fixture(const FixtureVerbOptions & opt, const common::Output & out);

}  // namespace extractor::cli
