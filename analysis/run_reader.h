// Reading a saved extract run (RUN_DIR/metadata.json + RUN_DIR/activations/batch_NNNNN.safetensors,
// the layout extractor/sinks/safetensors_sink.cpp writes) back through a CaptureSink, batch by
// batch, in forward order. `analyze RUN_DIR` feeds the same OutlierAccumulator the fused
// `extract --analyze` path uses, so both give identical statistics.
#pragma once

#include "extractor/capture.h"

#include <nlohmann/json.hpp>

#include <string>

namespace analysis {

// Returns the run's metadata.json. Throws common::Error: not_found naming metadata.json, or a
// batch file that metadata.json `files` lists but that is missing; usage naming metadata.json and
// the field for a field of the wrong type or range, or naming the batch file (and tensor) for an
// empty run, a file `files` does not list, missing or non-integer token ids or sequence indices,
// ids outside the vocabulary, a sequence index repeated or outside the run, a bad attention mask,
// a capture that is not floating point, not [B,T,H] with B, T, H >= 1, not listed by
// layers_extracted x sites, repeated or missing, or a tensor name that is not layer_{l}_{site}
// (analysis/README.md, "Exit codes").
nlohmann::json replay_run(const std::string & run_dir, extractor::CaptureSink & sink, const std::string & device = "cpu");

}  // namespace analysis
