// The property hf_config_fuzz checks of every config that parse_hf_config accepts, shared with the
// replay of the committed regression inputs (tests/extractor/config_test.cpp): every count lies
// within hf_limits, kv heads divide the heads, mlp_only_layers indices lie inside the layer range,
// lists are bounded and the rotary factor is in (0, 1].
#pragma once

#include <cstdint>

#include "extractor/checkpoint/hf_config.h"

namespace fuzz_checks {

inline bool hf_config_within_limits(const extractor::HfConfig & c) {
    namespace lim = extractor::hf_limits;
    auto within = [](int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; };
    bool ok = within(c.vocab_size, 1, lim::kVocab) && within(c.hidden_size, 1, lim::kHidden) &&
              within(c.num_hidden_layers, 1, lim::kLayers) && within(c.num_attention_heads, 1, lim::kHeads) &&
              within(c.num_key_value_heads, 1, c.num_attention_heads) &&
              c.num_attention_heads % c.num_key_value_heads == 0 &&
              (!c.head_dim || within(*c.head_dim, 1, lim::kHeadDim)) &&
              within(c.intermediate_size, 0, lim::kIntermediate) && within(c.moe_intermediate_size, 0, lim::kIntermediate) &&
              within(c.num_experts, 0, lim::kExperts) && within(c.num_experts_per_tok, 0, lim::kExperts) &&
              c.num_experts * c.num_hidden_layers <= lim::kExpertMatrices &&
              within(c.max_position_embeddings, 0, lim::kPositions) &&
              within(c.decoder_sparse_step, 1, c.num_hidden_layers) &&
              c.mlp_only_layers.size() <= static_cast<size_t>(c.num_hidden_layers) &&
              c.layer_types.size() <= static_cast<size_t>(lim::kLayers) &&
              (!c.sliding_window || within(*c.sliding_window, 0, lim::kPositions)) &&
              (!c.max_window_layers || within(*c.max_window_layers, 0, lim::kLayers)) &&
              (!c.rope.original_max_position_embeddings || within(*c.rope.original_max_position_embeddings, 1, lim::kPositions)) &&
              c.rope.partial_rotary_factor > 0 && c.rope.partial_rotary_factor <= 1;
    for (int64_t l : c.mlp_only_layers) ok = ok && within(l, 0, c.num_hidden_layers - 1);
    return ok;
}

}  // namespace fuzz_checks
