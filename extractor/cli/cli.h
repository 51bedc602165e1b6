// The `extract` program's command line, callable from another main(): a program that links
// analysis can pass its sinks here so `extract run ... --analyze` streams captures to them in the
// same pass (the tensors stay on the GPU).
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "extractor/capture.h"

namespace extractor::cli {

// A fused analysis the embedding program plugs in: `extract run ... --analyze DIR` asks the factory
// for one before the forward pass, streams every capture to its sink (on the device, uncopied) and
// calls finish() with the run's metadata afterwards. The `extract` program provides the outlier
// analysis here (extractor/cli/main.cpp), so the extractor library itself never depends on analysis.
class FusedAnalysis {
public:
    virtual ~FusedAnalysis() = default;
    virtual CaptureSink & sink() = 0;
    // Writes the analysis outputs; returns a summary for extract's own output (paths, counts).
    virtual nlohmann::json finish(const nlohmann::json & run_metadata) = 0;
};
using FusedAnalysisFactory = std::function<std::unique_ptr<FusedAnalysis>(const std::string & out_dir)>;

// Without a factory, `run` has no --analyze flag.
int extract_main(int argc, char ** argv, const std::vector<CaptureSink *> & extra_sinks = {},
                 const FusedAnalysisFactory & analyze = {});

}  // namespace extractor::cli
