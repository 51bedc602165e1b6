// A faithful byte-level BPE tokenizer that reads a Hugging Face tokenizer.json and reproduces
// `tokenizers.Tokenizer.from_file(path).encode(text).ids` (tokenizers 0.23): added tokens with their
// lstrip/rstrip/single_word/normalized flags, the NFC/Prepend/Replace/... normalizers, the Split /
// ByteLevel / Metaspace / Digits pre-tokenizers with the exact regexes (PCRE2, HF's `\s` set), BPE with
// both merge formats, ignore_merges, byte_fallback and unk, and the TemplateProcessing / ByteLevel
// post-processors. Not covered: truncation, padding, offsets, dropout, pairs of sequences, and the
// non-BPE models (Unigram, WordPiece, WordLevel) — loading such a file is a clear error.
// Follows docs/checkpoint-formats.md#tokenizer-json and HF tokenizers `tokenizers/src/` (see README.md
// beside this file).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace extractor {

class TokenizerImpl;

class Tokenizer {
public:
    // Size bounds of the files from_file reads (real tokenizer.json files are up to ~30 MB, real
    // tokenizer_config.json files well under 1 MB); a larger file is refused naming it and the limit.
    static constexpr uint64_t kMaxFileBytes = uint64_t{64} << 20;
    // Token ids a tokenizer.json may use (model.vocab, added tokens, post-processor ids) lie in
    // [0, kMaxTokenId): extractor::hf_limits::kVocab, the largest vocab_size a config.json may
    // state (real vocabularies are <= ~262k). The model's ids must also stay below twice its entry
    // count plus 65536, since its id -> token table is sized by the largest id.
    static constexpr int64_t kMaxTokenId = int64_t{1} << 22;
    static constexpr uint64_t kMaxConfigFileBytes = uint64_t{16} << 20;

    // Reads `path` (a tokenizer.json). If a tokenizer_config.json sits in the same folder, its
    // bos_token / eos_token name the BOS/EOS ids; otherwise they are inferred (see bos_id()).
    // Both are read through common::read_regular_file: a FIFO, device or directory under either
    // name is refused (Usage, naming it) before anything could block on it.
    // Throws common::Error naming the file and the JSON field on any malformed or unsupported input.
    static Tokenizer from_file(const std::string & path);
    // Same, from the text of a tokenizer.json; `source_name` is used in error messages.
    static Tokenizer from_json_text(std::string_view json_text, const std::string & source_name = "tokenizer.json");

    Tokenizer(Tokenizer &&) noexcept;
    Tokenizer & operator=(Tokenizer &&) noexcept;
    ~Tokenizer();

    // Ids as HF `encode(text, add_special_tokens=...)`. Bytes that are not valid UTF-8 are replaced by
    // U+FFFD first (maximal-subpart rule, as Python's `bytes.decode("utf-8", "replace")` does), so any
    // input is accepted. Thread-safe (the word cache is shared under a mutex).
    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
    // Text as HF `decode(ids, skip_special_tokens=...)`; unknown ids are skipped, as HF does.
    std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;
    // One token as printable text for reports: its decoded bytes, with bytes that do not form valid
    // UTF-8 shown as \xNN and control characters escaped (\n, \t, \x01, ...). "<unknown id N>" if
    // the id is not in the vocabulary.
    std::string token_text(int32_t id) const;
    // The raw vocabulary string of a token (byte-level form, e.g. "Ġthe"), or nullopt.
    std::optional<std::string> id_to_token(int32_t id) const;

    // Largest id + 1 over the model vocabulary and the added tokens (the embedding rows needed).
    int32_t vocab_size() const;
    std::optional<int32_t> token_id(std::string_view token) const;
    // BOS: tokenizer_config.json's bos_token if present; else the special token the post-processor
    // puts first (TemplateProcessing); else nullopt. EOS: tokenizer_config.json's eos_token if
    // present; else the first of "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>" that exists.
    std::optional<int32_t> bos_id() const;
    std::optional<int32_t> eos_id() const;
    // True for added tokens marked "special" (what decode(skip_special_tokens=true) drops).
    bool is_special(int32_t id) const;

    // False when built with TOOLKIT_TOKENIZER_NO_NFC (no utf8proc): NFC/NFD/NFKC/NFKD normalizers
    // then pass text through unchanged, which is exact only for text already in that form.
    static bool unicode_normalization_available();

private:
    explicit Tokenizer(std::unique_ptr<TokenizerImpl> impl);
    std::unique_ptr<TokenizerImpl> impl_;
};

}  // namespace extractor
