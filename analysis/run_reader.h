// Reading a saved extract run (RUN_DIR/metadata.json + RUN_DIR/activations/batch_NNNNN.safetensors,
// the layout extractor/sinks/safetensors_sink.cpp writes) back through a CaptureSink, batch by
// batch, in forward order. `analyze RUN_DIR` feeds the same OutlierAccumulator the fused
// `extract --analyze` path uses, so both give identical statistics.
#pragma once

#include "extractor/capture.h"

#include <nlohmann/json.hpp>

#include <string>

namespace analysis {

// Returns the run's metadata.json. Throws common::Error: not_found naming metadata.json or the
// activations folder, usage naming the batch file for an empty run, missing token ids, tensors
// whose shapes disagree, or a tensor name that is not layer_{l}_{site}.
nlohmann::json replay_run(const std::string & run_dir, extractor::CaptureSink & sink, const std::string & device = "cpu");

}  // namespace analysis
