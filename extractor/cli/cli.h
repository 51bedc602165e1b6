// The `extract` program's command line, callable from another main(): a program that links
// analysis can pass its sinks here so `extract run ... --analyze` streams captures to them in the
// same pass (the tensors stay on the GPU).
#pragma once

#include <vector>

#include "extractor/capture.h"

namespace extractor::cli {

int extract_main(int argc, char ** argv, const std::vector<CaptureSink *> & extra_sinks = {});

}  // namespace extractor::cli
