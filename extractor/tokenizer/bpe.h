// The BPE model of a tokenizer.json (internal): vocab, ranked merges, and the merge loop of HF
// `models/bpe/word.rs` (min-heap on (rank, position), stale entries skipped), with a word cache.
// Follows docs/checkpoint-formats.md#bpe.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace extractor {

struct BpeOptions {
    std::optional<std::string> unk_token;
    std::string continuing_subword_prefix;
    std::string end_of_word_suffix;
    bool fuse_unk = false;
    bool byte_fallback = false;
    bool ignore_merges = false;
};

// Transparent hashing so string_view lookups do not allocate.
struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using VocabMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
public:
    // `merges` are pairs of vocab ids in rank order; a pair listed twice keeps its last rank, as HF's
    // HashMap insert does. Throws std::invalid_argument with a message naming the bad entry, also for
    // an id outside [0, max_id_bound(entries)) (the id -> token table is sized by the largest id).
    static int64_t max_id_bound(std::size_t entries);
    BpeModel(VocabMap vocab, const std::vector<std::pair<std::string, std::string>> & merges, BpeOptions options);

    // Appends the ids of one pre-token (already byte-mapped for byte-level tokenizers).
    void encode_word(std::string_view word, std::vector<int32_t> & out) const;

    std::optional<int32_t> token_id(std::string_view token) const;
    const std::string * id_to_token(int32_t id) const;
    int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }
    const VocabMap & vocab() const { return vocab_; }

private:
    struct MergeValue {
        uint32_t rank;
        int32_t new_id;
    };
    static uint64_t pair_key(int32_t a, int32_t b) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    }
    void merge_uncached(std::string_view word, std::vector<int32_t> & out) const;

    VocabMap vocab_;
    std::vector<std::string> id_to_token_;
    std::vector<bool> id_present_;
    std::unordered_map<uint64_t, MergeValue> merges_;
    BpeOptions options_;
    std::optional<int32_t> unk_id_;
    int32_t byte_fallback_ids_[256];
    bool byte_fallback_complete_ = false;

    // Word cache: pre-token -> ids. Cleared when full so memory stays bounded on long runs (HF stops
    // inserting instead); either way the ids are the same, only speed differs.
    mutable std::mutex cache_mutex_;
    mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
    static constexpr std::size_t kCacheMaxEntries = 200000;
    static constexpr std::size_t kCacheMaxWordBytes = 256;
};

}  // namespace extractor
