// Text helpers for the tokenizer (internal): UTF-8 repair and iteration, Unicode normalisation
// (utf8proc), the GPT-2 byte<->char map, and a PCRE2 regex that matches like HF's Oniguruma on the
// pre-tokenizer patterns (`\s` replaced by HF's exact whitespace set, docs/checkpoint-formats.md#whitespace).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace extractor::text {

// Replaces every ill-formed UTF-8 subsequence by U+FFFD using the "maximal subpart" rule (what
// Python's bytes.decode("utf-8", "replace") and Rust's String::from_utf8_lossy do). Returns true
// and leaves `out` untouched when the input is already valid (the common case, no copy).
bool repair_utf8(std::string_view in, std::string & out);

// Decodes one code point of valid UTF-8 at s[i]; advances i.
char32_t next_code_point(std::string_view s, std::size_t & i);
void append_utf8(std::string & out, char32_t cp);

// HF's `\s` (Rust regex / Oniguruma White_Space): U+0009-000D, 0020, 0085, 00A0, 1680, 2000-200A,
// 2028, 2029, 202F, 205F, 3000.
bool is_hf_whitespace(char32_t cp);

enum class NormalForm { NFC, NFD, NFKC, NFKD };
// Normalises valid UTF-8. ASCII-only text is returned as is without calling the library.
std::string normalize(std::string_view s, NormalForm form);
// Unicode lowercase per code point (utf8proc_tolower); ASCII only without utf8proc.
std::string lowercase(std::string_view s);
bool normalization_available();

// GPT-2 bytes_to_unicode: each byte as the UTF-8 of its visible char (space -> "Ġ").
const std::array<std::string, 256> & byte_to_visible();
// Inverse: code point -> byte, or -1 when the char is not one of the 256 visible chars.
int visible_to_byte(char32_t cp);

// A compiled PCRE2 pattern (UTF | UCP, JIT when available). `hf_compatible` rewrites `\s`/`\S`
// outside and `\s` inside character classes to HF's whitespace set. Throws std::invalid_argument
// with PCRE2's message (the caller wraps it into a common::Error naming the file and field).
class Regex {
public:
    explicit Regex(const std::string & pattern, bool hf_compatible = true);
    ~Regex();
    Regex(const Regex &) = delete;
    Regex & operator=(const Regex &) = delete;

    // Non-overlapping matches, left to right, as byte ranges [start, end). Empty matches are skipped
    // (the search moves on by one character), as Oniguruma's find_iter does. `s` must be valid UTF-8.
    void find_all(std::string_view s, std::vector<std::pair<std::size_t, std::size_t>> & out) const;
    bool matches_at_start(std::string_view s) const;  // anchored at 0

    static std::string escape(std::string_view literal);  // for Split {"String": ...}
    static std::string rewrite_whitespace(const std::string & pattern);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace extractor::text
