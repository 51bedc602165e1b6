// What the offload streamer reports (offload.h), in the run JSON's "offload" object. The streamer
// itself is CUDA code (cuda/offload_stream.cpp); builds without CUDA have none (cuda/without_cuda.cpp).
#include "extractor/offload.h"

#include <nlohmann/json.hpp>

namespace extractor {

nlohmann::json to_json(const OffloadStats & s) {
    return {{"prefetch_depth", s.depth},
            {"layers_streamed", s.layers_streamed},
            {"bytes_streamed", s.bytes_streamed},
            {"copy_s", s.copy_s},
            {"exposed_wait_s", s.exposed_s},
            {"hidden_fraction", s.hidden_fraction()},
            {"copy_gb_per_s", s.copy_gb_per_s()}};
}

}  // namespace extractor
