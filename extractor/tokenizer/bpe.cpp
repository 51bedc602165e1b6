// BPE merge loop. Same result as HF `Word::merge_all`: repeatedly apply the lowest-ranked adjacent
// pair, leftmost first on ties, skipping heap entries made stale by an earlier merge.
#include "extractor/tokenizer/bpe.h"

#include "extractor/tokenizer/text.h"

#include <algorithm>
#include <cstdio>
#include <queue>
#include <stdexcept>

namespace extractor {

BpeModel::BpeModel(VocabMap vocab, const std::vector<std::pair<std::string, std::string>> & merges,
                   BpeOptions options)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
    const int64_t bound = max_id_bound(vocab_.size());
    int64_t max_id = -1;  // int64: max_id + 1 overflowed int32 at id 2^31-1
    for (const auto & [token, id] : vocab_) {
        if (id < 0) throw std::invalid_argument("vocab entry \"" + token + "\" has a negative id");
        if (id >= bound)
            throw std::invalid_argument("vocab entry \"" + token + "\" has id " + std::to_string(id) + ", not below " +
                                        std::to_string(bound) + " (the bound for " + std::to_string(vocab_.size()) + " entries)");
        max_id = std::max<int64_t>(max_id, id);
    }
    id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
    id_present_.assign(static_cast<std::size_t>(max_id + 1), false);
    for (const auto & [token, id] : vocab_) {
        id_to_token_[static_cast<std::size_t>(id)] = token;
        id_present_[static_cast<std::size_t>(id)] = true;
    }

    merges_.reserve(merges.size() * 2);
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
        const auto & [a, b] = merges[rank];
        const auto ia = vocab_.find(a), ib = vocab_.find(b), inew = vocab_.find(a + b);
        const char * missing = ia == vocab_.end() ? "left part" : ib == vocab_.end() ? "right part"
                               : inew == vocab_.end()                             ? "merged token"
                                                                                  : nullptr;
        if (missing) {
            throw std::invalid_argument("merge " + std::to_string(rank) + " (\"" + a + "\", \"" + b + "\"): " +
                                        missing + " is not in model.vocab");
        }
        merges_[pair_key(ia->second, ib->second)] = MergeValue{static_cast<uint32_t>(rank), inew->second};
    }

    if (options_.unk_token) {
        // HF only fails when an unknown char is actually met; we resolve it once here and fail the same
        // way (at encode) if it is missing.
        if (auto it = vocab_.find(*options_.unk_token); it != vocab_.end()) unk_id_ = it->second;
    }
    byte_fallback_complete_ = true;
    for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        auto it = vocab_.find(std::string_view(name));
        byte_fallback_ids_[b] = it == vocab_.end() ? -1 : it->second;
    }
}

int64_t BpeModel::max_id_bound(std::size_t entries) {
    // Tokenizer::kMaxTokenId (2^22), and at most twice the entries plus 65536: real vocabularies are
    // dense (ids 0..n-1), and a sparse one would be sized by its largest id.
    return std::min<int64_t>(int64_t{1} << 22, 2 * static_cast<int64_t>(std::min<std::size_t>(entries, std::size_t{1} << 40)) + 65536);
}

std::optional<int32_t> BpeModel::token_id(std::string_view token) const {
    auto it = vocab_.find(token);
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
}

const std::string * BpeModel::id_to_token(int32_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size() || !id_present_[static_cast<std::size_t>(id)])
        return nullptr;
    return &id_to_token_[static_cast<std::size_t>(id)];
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t> & out) const {
    if (word.empty()) return;
    if (options_.ignore_merges) {
        if (auto it = vocab_.find(word); it != vocab_.end()) {
            out.push_back(it->second);
            return;
        }
    }
    const bool cacheable = word.size() < kCacheMaxWordBytes;
    if (cacheable) {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        if (auto it = cache_.find(word); it != cache_.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    const std::size_t first = out.size();
    merge_uncached(word, out);
    if (cacheable) {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        if (cache_.size() >= kCacheMaxEntries) cache_.clear();
        cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(first), out.end()));
    }
}

void BpeModel::merge_uncached(std::string_view word, std::vector<int32_t> & out) const {
    // Symbols as a doubly linked list over a vector (HF `Symbol {c, prev, next, len}`).
    struct Symbol {
        int32_t id;
        int32_t prev;
        int32_t next;
        bool removed;
    };
    std::vector<Symbol> symbols;
    symbols.reserve(word.size());
    auto push = [&](int32_t id) {
        const auto n = static_cast<int32_t>(symbols.size());
        symbols.push_back(Symbol{id, n - 1, n + 1, false});
    };

    // 1. One symbol per char (with continuing_subword_prefix / end_of_word_suffix), else byte
    //    fallback <0xNN> tokens, else unk (fused when fuse_unk).
    int32_t pending_unk = -1;  // an unk id not yet pushed (fuse_unk grows it)
    std::string symbol_text;
    std::size_t i = 0;
    while (i < word.size()) {
        const std::size_t start = i;
        text::next_code_point(word, i);
        const std::string_view ch = word.substr(start, i - start);
        const bool is_first = start == 0, is_last = i >= word.size();
        std::string_view key = ch;
        if ((!is_first && !options_.continuing_subword_prefix.empty()) ||
            (is_last && !options_.end_of_word_suffix.empty())) {
            symbol_text.clear();
            if (!is_first) symbol_text += options_.continuing_subword_prefix;
            symbol_text += ch;
            if (is_last) symbol_text += options_.end_of_word_suffix;
            key = symbol_text;
        }
        if (auto it = vocab_.find(key); it != vocab_.end()) {
            if (pending_unk >= 0) {
                push(pending_unk);
                pending_unk = -1;
            }
            push(it->second);
            continue;
        }
        if (options_.byte_fallback) {
            bool all = true;
            for (char c : ch) all = all && byte_fallback_ids_[static_cast<unsigned char>(c)] >= 0;
            if (all) {
                for (char c : ch) push(byte_fallback_ids_[static_cast<unsigned char>(c)]);
                continue;
            }
        }
        if (options_.unk_token) {
            if (!unk_id_) {
                throw std::runtime_error("unk_token \"" + *options_.unk_token + "\" is not in the vocabulary");
            }
            if (pending_unk >= 0 && !options_.fuse_unk) push(pending_unk);
            pending_unk = *unk_id_;
        }
        // No unk token: HF drops the char silently.
    }
    if (pending_unk >= 0) push(pending_unk);
    if (symbols.empty()) return;
    symbols.back().next = -1;

    // 2. Merge loop. Heap entries: (rank, pos, new_id); lowest rank first, then leftmost pos.
    struct Entry {
        uint32_t rank;
        int32_t pos;
        int32_t new_id;
        bool operator>(const Entry & o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::vector<Entry> storage;
    storage.reserve(symbols.size() * 2);
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap(std::greater<Entry>{}, std::move(storage));
    auto lookup = [&](int32_t a, int32_t b) -> const MergeValue * {
        auto it = merges_.find(pair_key(a, b));
        return it == merges_.end() ? nullptr : &it->second;
    };
    for (std::size_t k = 0; k + 1 < symbols.size(); ++k) {
        if (const MergeValue * m = lookup(symbols[k].id, symbols[k + 1].id))
            heap.push(Entry{m->rank, static_cast<int32_t>(k), m->new_id});
    }
    while (!heap.empty()) {
        const Entry top = heap.top();
        heap.pop();
        Symbol & cur = symbols[static_cast<std::size_t>(top.pos)];
        if (cur.removed || cur.next < 0) continue;
        const auto next_pos = static_cast<std::size_t>(cur.next);
        const MergeValue * m = lookup(cur.id, symbols[next_pos].id);
        if (!m || m->new_id != top.new_id) continue;  // stale entry
        cur.id = top.new_id;
        symbols[next_pos].removed = true;
        cur.next = symbols[next_pos].next;
        if (cur.next >= 0) symbols[static_cast<std::size_t>(cur.next)].prev = top.pos;
        if (cur.prev >= 0) {
            if (const MergeValue * mp = lookup(symbols[static_cast<std::size_t>(cur.prev)].id, cur.id))
                heap.push(Entry{mp->rank, cur.prev, mp->new_id});
        }
        if (cur.next >= 0) {
            if (const MergeValue * mn = lookup(cur.id, symbols[static_cast<std::size_t>(cur.next)].id))
                heap.push(Entry{mn->rank, top.pos, mn->new_id});
        }
    }
    for (const Symbol & s : symbols)
        if (!s.removed) out.push_back(s.id);
}

}  // namespace extractor
