// The perplexity records and their JSON summary, without libtorch: `extract run --perplexity`
// (extractor/perplexity.h) builds the run JSON's "perplexity" object with it, and the analysis
// (analysis/statistics.h) builds outliers.json's from the records a statistics file carries, so the
// two can never disagree. Torch-free so the statistics-file fuzzer links it as it is.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace extractor {

// One window's loss: sums and counts, merged by adding (never by averaging means).
struct SequenceNll {
    int64_t sequence_index = 0;
    int64_t tokens = 0;                      // losses summed (T-1)
    double nll_sum = 0;
    std::vector<double> bucket_nll;          // per position bucket
    std::vector<int64_t> bucket_tokens;
    bool operator==(const SequenceNll &) const = default;
};

// Position buckets for "mean NLL by position": the loss of the token at position p (1..T-1,
// the predicted token's index in its window) falls in bucket floor(log2 p): 1, 2-3, 4-7, ...
inline int nll_position_bucket(int64_t position) {
    int b = 0;
    while (position > 1) {
        position >>= 1;
        ++b;
    }
    return b;
}

// [first, last] positions of bucket b.
inline std::pair<int64_t, int64_t> nll_bucket_range(int bucket) {
    const int64_t first = int64_t{1} << bucket;
    return {first, 2 * first - 1};
}

// The "perplexity" object from records sorted by sequence index: overall {sequences, tokens,
// nll_sum, mean_nll, perplexity}, per_sequence [{sequence, tokens, nll_sum, mean_nll, perplexity}],
// by_position [{first, last, tokens, nll_sum, mean_nll}], and the convention. Sums are taken in
// sequence order, so a merge of disjoint halves gives the same numbers as the whole.
inline nlohmann::json perplexity_summary(const std::vector<SequenceNll> & records) {
    double total = 0;
    int64_t tokens = 0;
    std::vector<double> bucket_nll;
    std::vector<int64_t> bucket_tokens;
    nlohmann::json per_sequence = nlohmann::json::array();
    auto mean = [](double sum, int64_t n) { return n > 0 ? nlohmann::json(sum / static_cast<double>(n)) : nlohmann::json(nullptr); };
    auto ppl = [](double sum, int64_t n) { return n > 0 ? nlohmann::json(std::exp(sum / static_cast<double>(n))) : nlohmann::json(nullptr); };
    int64_t max_position = 0;  // the last bucket ends at the longest window's last position
    for (const SequenceNll & r : records) {
        max_position = std::max(max_position, r.tokens);
        total += r.nll_sum;
        tokens += r.tokens;
        if (bucket_nll.size() < r.bucket_nll.size()) {
            bucket_nll.resize(r.bucket_nll.size(), 0.0);
            bucket_tokens.resize(r.bucket_nll.size(), 0);
        }
        for (size_t k = 0; k < r.bucket_nll.size() && k < r.bucket_tokens.size(); ++k) {
            bucket_nll[k] += r.bucket_nll[k];
            bucket_tokens[k] += r.bucket_tokens[k];
        }
        per_sequence.push_back({{"sequence", r.sequence_index},
                                {"tokens", r.tokens},
                                {"nll_sum", r.nll_sum},
                                {"mean_nll", mean(r.nll_sum, r.tokens)},
                                {"perplexity", ppl(r.nll_sum, r.tokens)}});
    }
    nlohmann::json by_position = nlohmann::json::array();
    for (size_t k = 0; k < bucket_nll.size(); ++k) {
        if (bucket_tokens[k] == 0) continue;
        const auto [first, last] = nll_bucket_range(static_cast<int>(k));
        by_position.push_back({{"first", first},
                               {"last", std::min(last, max_position)},
                               {"tokens", bucket_tokens[k]},
                               {"nll_sum", bucket_nll[k]},
                               {"mean_nll", mean(bucket_nll[k], bucket_tokens[k])}});
    }
    return {{"convention", "next-token loss over each window, none on its first token; perplexity = exp(nll_sum / tokens)"},
            {"overall",
             {{"sequences", records.size()},
              {"tokens", tokens},
              {"nll_sum", total},
              {"mean_nll", mean(total, tokens)},
              {"perplexity", ppl(total, tokens)}}},
            {"per_sequence", per_sequence},
            {"by_position", by_position}};
}

}  // namespace extractor
