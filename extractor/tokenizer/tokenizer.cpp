// tokenizer.json loader and the encode/decode pipeline (HF `tokenizer/mod.rs` order):
//   1. added tokens with normalized=false cut out of the raw text (leftmost-longest, flags applied);
//   2. the normalizer runs on each remaining piece, then added tokens with normalized=true are cut out;
//   3. the pre-tokenizer splits each piece; 4. BPE encodes each pre-token; 5. the post-processor.
// Every unsupported component type is refused at load with the JSON path that names it.
#include "extractor/tokenizer/tokenizer.h"

#include "common/error.h"
#include "common/regular_file.h"
#include "extractor/tokenizer/bpe.h"
#include "extractor/tokenizer/text.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

namespace extractor {

using json = nlohmann::json;

namespace {

// Thrown while loading; from_json_text turns it into a common::Error naming the file and field.
struct FieldError {
    std::string field;
    std::string why;
};

[[noreturn]] void fail(const std::string & field, const std::string & why) { throw FieldError{field, why}; }

const json & require(const json & obj, const std::string & key, const std::string & where) {
    if (!obj.is_object()) fail(where, "expected an object");
    auto it = obj.find(key);
    if (it == obj.end()) fail(where.empty() ? key : where + "." + key, "missing");
    return *it;
}

std::string get_string(const json & obj, const std::string & key, const std::string & where) {
    const json & v = require(obj, key, where);
    if (!v.is_string()) fail(where + "." + key, "expected a string");
    return v.get<std::string>();
}

bool get_bool(const json & obj, const std::string & key, const std::string & where, bool fallback) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail(where + "." + key, "expected true or false");
    return it->get<bool>();
}

std::optional<std::string> get_optional_string(const json & obj, const std::string & key, const std::string & where) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) fail(where + "." + key, "expected a string or null");
    return it->get<std::string>();
}

std::string type_of(const json & obj, const std::string & where) {
    if (!obj.is_object()) fail(where, "expected an object with a \"type\"");
    return get_string(obj, "type", where);
}

// How deeply a "Sequence" normalizer, pre-tokenizer, decoder or post-processor may nest. Real files
// nest one level; each level is one recursive call of a reader below, so an unbounded depth (a
// hostile file nested 20000 deep) would overflow the stack instead of failing with the field.
constexpr int kMaxSequenceNesting = 64;

void check_nesting(int depth, const std::string & where) {
    if (depth > kMaxSequenceNesting)
        fail(where, "Sequence nested more than " + std::to_string(kMaxSequenceNesting) + " levels deep");
}

// A piece of text during pre-tokenization; `at_start` marks the piece that begins at offset 0 of the
// input (Metaspace's prepend_scheme "first").
struct Piece {
    std::string text;
    bool at_start = false;
};

// ---------------------------------------------------------------------------------------------
// Normalizers (HF normalizers/)

class Normalizer {
public:
    virtual ~Normalizer() = default;
    virtual void apply(std::string & s) const = 0;
};

class UnicodeNormalizer final : public Normalizer {
public:
    explicit UnicodeNormalizer(text::NormalForm f) : form_(f) {}
    void apply(std::string & s) const override { s = text::normalize(s, form_); }

private:
    text::NormalForm form_;
};

class LowercaseNormalizer final : public Normalizer {
public:
    void apply(std::string & s) const override { s = text::lowercase(s); }
};

class PrependNormalizer final : public Normalizer {
public:
    explicit PrependNormalizer(std::string p) : prefix_(std::move(p)) {}
    void apply(std::string & s) const override {
        if (!s.empty()) s.insert(0, prefix_);
    }

private:
    std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
public:
    ReplaceNormalizer(const std::string & pattern, std::string content)
        : regex_(pattern), content_(std::move(content)) {}
    void apply(std::string & s) const override {
        std::vector<std::pair<std::size_t, std::size_t>> m;
        regex_.find_all(s, m);
        if (m.empty()) return;
        std::string out;
        std::size_t prev = 0;
        for (auto [a, b] : m) {
            out.append(s, prev, a - prev);
            out += content_;
            prev = b;
        }
        out.append(s, prev);
        s = std::move(out);
    }

private:
    text::Regex regex_;
    std::string content_;
};

class StripNormalizer final : public Normalizer {
public:
    StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
    void apply(std::string & s) const override {
        std::size_t a = 0, b = s.size();
        if (left_) {
            while (a < b) {
                std::size_t j = a;
                if (!text::is_hf_whitespace(text::next_code_point(s, j))) break;
                a = j;
            }
        }
        if (right_) {
            while (b > a) {
                std::size_t k = b - 1;
                while (k > a && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
                std::size_t j = k;
                if (!text::is_hf_whitespace(text::next_code_point(s, j))) break;
                b = k;
            }
        }
        s = s.substr(a, b - a);
    }

private:
    bool left_, right_;
};

class SequenceNormalizer final : public Normalizer {
public:
    explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
    void apply(std::string & s) const override {
        for (const auto & p : parts_) p->apply(s);
    }

private:
    std::vector<std::unique_ptr<Normalizer>> parts_;
};

std::string pattern_of(const json & obj, const std::string & where) {
    const json & p = require(obj, "pattern", where);
    if (p.contains("Regex") && p["Regex"].is_string()) return p["Regex"].get<std::string>();
    if (p.contains("String") && p["String"].is_string()) return text::Regex::escape(p["String"].get<std::string>());
    fail(where + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
}

std::unique_ptr<text::Regex> compile(const std::string & pattern, const std::string & where) {
    try {
        return std::make_unique<text::Regex>(pattern);
    } catch (const std::invalid_argument & e) {
        fail(where, e.what());
    }
}

std::unique_ptr<Normalizer> make_normalizer(const json & j, const std::string & where, int depth = 0) {
    if (j.is_null()) return nullptr;
    check_nesting(depth, where);
    const std::string type = type_of(j, where);
    if (type == "NFC") return std::make_unique<UnicodeNormalizer>(text::NormalForm::NFC);
    if (type == "NFD") return std::make_unique<UnicodeNormalizer>(text::NormalForm::NFD);
    if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(text::NormalForm::NFKC);
    if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(text::NormalForm::NFKD);
    if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
    if (type == "Prepend") return std::make_unique<PrependNormalizer>(get_string(j, "prepend", where));
    if (type == "Replace") {
        const std::string pattern = pattern_of(j, where);
        compile(pattern, where + ".pattern");  // validate now, with the field name
        return std::make_unique<ReplaceNormalizer>(pattern, get_string(j, "content", where));
    }
    if (type == "Strip")
        return std::make_unique<StripNormalizer>(get_bool(j, "strip_left", where, true), get_bool(j, "strip_right", where, true));
    if (type == "Sequence") {
        const json & list = require(j, "normalizers", where);
        if (!list.is_array()) fail(where + ".normalizers", "expected a list");
        std::vector<std::unique_ptr<Normalizer>> parts;
        for (std::size_t k = 0; k < list.size(); ++k) {
            if (auto n = make_normalizer(list[k], where + ".normalizers[" + std::to_string(k) + "]", depth + 1)) parts.push_back(std::move(n));
        }
        return std::make_unique<SequenceNormalizer>(std::move(parts));
    }
    fail(where + ".type", "unsupported normalizer \"" + type +
                              "\" (supported: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, Sequence)");
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers (HF pre_tokenizers/); splitting follows HF `SplitDelimiterBehavior`.

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// Splits `piece` at `matches` (non-overlapping, ascending) the way HF `NormalizedString::split` does.
void split_piece(const Piece & piece, const std::vector<std::pair<std::size_t, std::size_t>> & matches,
                 SplitBehavior behavior, bool invert, std::vector<Piece> & out) {
    const std::string & s = piece.text;
    // (start, end, is_match) covering the whole string.
    std::vector<std::tuple<std::size_t, std::size_t, bool>> parts;
    std::size_t prev = 0;
    for (auto [a, b] : matches) {
        if (prev != a) parts.emplace_back(prev, a, invert);
        parts.emplace_back(a, b, !invert);
        prev = b;
    }
    if (prev != s.size()) parts.emplace_back(prev, s.size(), invert);

    std::vector<std::pair<std::size_t, std::size_t>> kept;
    switch (behavior) {
        case SplitBehavior::Removed:
            for (auto [a, b, m] : parts)
                if (!m) kept.emplace_back(a, b);
            break;
        case SplitBehavior::Isolated:
            for (auto [a, b, m] : parts) kept.emplace_back(a, b);
            break;
        case SplitBehavior::MergedWithPrevious: {
            bool previous_match = false;
            for (auto [a, b, m] : parts) {
                if (m && !previous_match && !kept.empty()) kept.back().second = b;
                else kept.emplace_back(a, b);
                previous_match = m;
            }
            break;
        }
        case SplitBehavior::MergedWithNext: {
            bool previous_match = false;
            for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
                auto [a, b, m] = *it;
                if (m && !previous_match && !kept.empty()) kept.back().first = a;
                else kept.emplace_back(a, b);
                previous_match = m;
            }
            std::reverse(kept.begin(), kept.end());
            break;
        }
        case SplitBehavior::Contiguous: {
            bool previous_match = false;
            for (auto [a, b, m] : parts) {
                if (m == previous_match && !kept.empty()) kept.back().second = b;
                else kept.emplace_back(a, b);
                previous_match = m;
            }
            break;
        }
    }
    for (auto [a, b] : kept) {
        if (a == b) continue;
        out.push_back(Piece{s.substr(a, b - a), piece.at_start && a == 0});
    }
}

SplitBehavior parse_behavior(const json & j, const std::string & where) {
    const std::string b = get_string(j, "behavior", where);
    if (b == "Removed") return SplitBehavior::Removed;
    if (b == "Isolated") return SplitBehavior::Isolated;
    if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
    if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
    if (b == "Contiguous") return SplitBehavior::Contiguous;
    fail(where + ".behavior", "unknown split behavior \"" + b + "\"");
}

class PreTokenizer {
public:
    virtual ~PreTokenizer() = default;
    // Rewrites `pieces` in place (each piece may become several).
    virtual void apply(std::vector<Piece> & pieces) const = 0;
    virtual bool is_byte_level() const { return false; }
};

// GPT-2 pattern, as in HF pre_tokenizers/byte_level.rs (docs/checkpoint-formats.md#pre-tokenizer-regexes).
constexpr const char * kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
public:
    ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
        if (use_regex) regex_ = std::make_unique<text::Regex>(kGpt2Pattern);
    }
    void apply(std::vector<Piece> & pieces) const override {
        std::vector<Piece> split;
        std::vector<std::pair<std::size_t, std::size_t>> m;
        for (Piece & p : pieces) {
            if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text = " " + p.text;
            if (regex_) {
                m.clear();
                regex_->find_all(p.text, m);
                split_piece(p, m, SplitBehavior::Isolated, false, split);
            } else if (!p.text.empty()) {
                split.push_back(std::move(p));
            }
        }
        const auto & map = text::byte_to_visible();
        for (Piece & p : split) {
            std::string mapped;
            mapped.reserve(p.text.size() * 2);
            for (char c : p.text) mapped += map[static_cast<unsigned char>(c)];
            p.text = std::move(mapped);
        }
        pieces = std::move(split);
    }
    bool is_byte_level() const override { return true; }

private:
    bool add_prefix_space_;
    std::unique_ptr<text::Regex> regex_;
};

class SplitPreTokenizer final : public PreTokenizer {
public:
    SplitPreTokenizer(std::unique_ptr<text::Regex> re, SplitBehavior b, bool invert)
        : regex_(std::move(re)), behavior_(b), invert_(invert) {}
    void apply(std::vector<Piece> & pieces) const override {
        std::vector<Piece> out;
        std::vector<std::pair<std::size_t, std::size_t>> m;
        for (const Piece & p : pieces) {
            m.clear();
            regex_->find_all(p.text, m);
            split_piece(p, m, behavior_, invert_, out);
        }
        pieces = std::move(out);
    }

private:
    std::unique_ptr<text::Regex> regex_;
    SplitBehavior behavior_;
    bool invert_;
};

class DigitsPreTokenizer final : public PreTokenizer {
public:
    explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
    void apply(std::vector<Piece> & pieces) const override {
        std::vector<Piece> out;
        for (const Piece & p : pieces) {
            std::vector<std::pair<std::size_t, std::size_t>> m;
            for (std::size_t k = 0; k < p.text.size(); ++k)
                if (p.text[k] >= '0' && p.text[k] <= '9') m.emplace_back(k, k + 1);
            split_piece(p, m, individual_ ? SplitBehavior::Isolated : SplitBehavior::Contiguous, false, out);
        }
        pieces = std::move(out);
    }

private:
    bool individual_;
};

class MetaspacePreTokenizer final : public PreTokenizer {
public:
    enum class Prepend { Always, First, Never };
    MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split)
        : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}
    void apply(std::vector<Piece> & pieces) const override {
        std::vector<Piece> out;
        for (Piece & p : pieces) {
            std::string r;
            for (char c : p.text) {
                if (c == ' ') r += replacement_;
                else r += c;
            }
            p.text = std::move(r);
            const bool starts = p.text.compare(0, replacement_.size(), replacement_) == 0;
            if (!starts && (prepend_ == Prepend::Always || (prepend_ == Prepend::First && p.at_start)))
                p.text.insert(0, replacement_);
            if (!split_) {
                if (!p.text.empty()) out.push_back(std::move(p));
                continue;
            }
            std::vector<std::pair<std::size_t, std::size_t>> m;
            for (std::size_t k = p.text.find(replacement_); k != std::string::npos;
                 k = p.text.find(replacement_, k + replacement_.size()))
                m.emplace_back(k, k + replacement_.size());
            split_piece(p, m, SplitBehavior::MergedWithNext, false, out);
        }
        pieces = std::move(out);
    }

private:
    std::string replacement_;
    Prepend prepend_;
    bool split_;
};

class SequencePreTokenizer final : public PreTokenizer {
public:
    explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
    void apply(std::vector<Piece> & pieces) const override {
        for (const auto & p : parts_) p->apply(pieces);
    }
    bool is_byte_level() const override {
        return std::any_of(parts_.begin(), parts_.end(), [](const auto & p) { return p->is_byte_level(); });
    }

private:
    std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json & j, const std::string & where, int depth = 0) {
    if (j.is_null()) return nullptr;
    check_nesting(depth, where);
    const std::string type = type_of(j, where);
    if (type == "ByteLevel")
        return std::make_unique<ByteLevelPreTokenizer>(get_bool(j, "add_prefix_space", where, true),
                                                       get_bool(j, "use_regex", where, true));
    if (type == "Split") {
        auto re = compile(pattern_of(j, where), where + ".pattern");
        return std::make_unique<SplitPreTokenizer>(std::move(re), parse_behavior(j, where), get_bool(j, "invert", where, false));
    }
    if (type == "Digits") return std::make_unique<DigitsPreTokenizer>(get_bool(j, "individual_digits", where, false));
    if (type == "Metaspace") {
        std::string replacement = get_optional_string(j, "replacement", where).value_or("\xE2\x96\x81");
        auto prepend = MetaspacePreTokenizer::Prepend::Always;
        if (auto scheme = get_optional_string(j, "prepend_scheme", where)) {
            if (*scheme == "first") prepend = MetaspacePreTokenizer::Prepend::First;
            else if (*scheme == "never") prepend = MetaspacePreTokenizer::Prepend::Never;
            else if (*scheme != "always") fail(where + ".prepend_scheme", "expected always, first or never");
        } else if (!get_bool(j, "add_prefix_space", where, true)) {
            prepend = MetaspacePreTokenizer::Prepend::Never;  // legacy field
        }
        return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), prepend, get_bool(j, "split", where, true));
    }
    if (type == "Sequence") {
        const json & list = require(j, "pretokenizers", where);
        if (!list.is_array()) fail(where + ".pretokenizers", "expected a list");
        std::vector<std::unique_ptr<PreTokenizer>> parts;
        for (std::size_t k = 0; k < list.size(); ++k) {
            if (auto p = make_pre_tokenizer(list[k], where + ".pretokenizers[" + std::to_string(k) + "]", depth + 1)) parts.push_back(std::move(p));
        }
        return std::make_unique<SequencePreTokenizer>(std::move(parts));
    }
    fail(where + ".type", "unsupported pre_tokenizer \"" + type +
                              "\" (supported: ByteLevel, Split, Digits, Metaspace, Sequence)");
}

// ---------------------------------------------------------------------------------------------
// Decoders (HF decoders/). Each maps the token list to a new list; the result is their concatenation.

class Decoder {
public:
    virtual ~Decoder() = default;
    virtual void apply(std::vector<std::string> & tokens) const = 0;
};

// Repairs invalid UTF-8 the way Rust's from_utf8_lossy does.
std::string lossy(std::string bytes) {
    std::string repaired;
    if (text::repair_utf8(bytes, repaired)) return bytes;
    return repaired;
}

class ByteLevelDecoder final : public Decoder {
public:
    void apply(std::vector<std::string> & tokens) const override {
        std::string bytes;
        for (const std::string & t : tokens) {
            std::string tb;
            bool ok = true;
            std::size_t i = 0;
            while (i < t.size() && ok) {
                const int b = text::visible_to_byte(text::next_code_point(t, i));
                if (b < 0) ok = false;
                else tb.push_back(static_cast<char>(b));
            }
            bytes += ok ? tb : t;  // HF keeps a token's raw bytes when one char is outside the map
        }
        tokens.assign(1, lossy(std::move(bytes)));
    }
};

class ReplaceDecoder final : public Decoder {
public:
    ReplaceDecoder(const std::string & pattern, std::string content) : regex_(pattern), content_(std::move(content)) {}
    void apply(std::vector<std::string> & tokens) const override {
        std::vector<std::pair<std::size_t, std::size_t>> m;
        for (std::string & t : tokens) {
            m.clear();
            regex_.find_all(t, m);
            std::string out;
            std::size_t prev = 0;
            for (auto [a, b] : m) {
                out.append(t, prev, a - prev);
                out += content_;
                prev = b;
            }
            out.append(t, prev);
            t = std::move(out);
        }
    }

private:
    text::Regex regex_;
    std::string content_;
};

class ByteFallbackDecoder final : public Decoder {
public:
    void apply(std::vector<std::string> & tokens) const override {
        std::vector<std::string> out;
        std::string pending;
        std::size_t pending_count = 0;
        auto flush = [&] {
            if (pending_count == 0) return;
            std::string repaired;
            if (text::repair_utf8(pending, repaired)) out.push_back(pending);
            else
                for (std::size_t k = 0; k < pending_count; ++k) out.push_back("\xEF\xBF\xBD");
            pending.clear();
            pending_count = 0;
        };
        for (std::string & t : tokens) {
            if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
                std::isxdigit(static_cast<unsigned char>(t[4]))) {
                pending.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
                ++pending_count;
                continue;
            }
            flush();
            out.push_back(std::move(t));
        }
        flush();
        tokens = std::move(out);
    }
};

class FuseDecoder final : public Decoder {
public:
    void apply(std::vector<std::string> & tokens) const override {
        std::string all;
        for (const auto & t : tokens) all += t;
        tokens.assign(1, std::move(all));
    }
};

class StripDecoder final : public Decoder {
public:
    StripDecoder(std::string content, std::size_t start, std::size_t stop) : content_(std::move(content)), start_(start), stop_(stop) {}
    void apply(std::vector<std::string> & tokens) const override {
        for (std::string & t : tokens) {
            std::size_t a = 0, b = t.size();
            for (std::size_t k = 0; k < start_ && t.compare(a, content_.size(), content_) == 0 && a < b; ++k) a += content_.size();
            for (std::size_t k = 0; k < stop_ && b >= a + content_.size() && t.compare(b - content_.size(), content_.size(), content_) == 0; ++k)
                b -= content_.size();
            t = t.substr(a, b - a);
        }
    }

private:
    std::string content_;
    std::size_t start_, stop_;
};

class MetaspaceDecoder final : public Decoder {
public:
    MetaspaceDecoder(std::string replacement, bool strip_first) : replacement_(std::move(replacement)), strip_first_(strip_first) {}
    void apply(std::vector<std::string> & tokens) const override {
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            std::string out;
            const std::string & t = tokens[i];
            for (std::size_t k = 0; k < t.size();) {
                if (t.compare(k, replacement_.size(), replacement_) == 0) {
                    if (!(i == 0 && strip_first_)) out += ' ';
                    k += replacement_.size();
                } else {
                    out += t[k++];
                }
            }
            tokens[i] = std::move(out);
        }
    }

private:
    std::string replacement_;
    bool strip_first_;
};

class SequenceDecoder final : public Decoder {
public:
    explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
    void apply(std::vector<std::string> & tokens) const override {
        for (const auto & p : parts_) p->apply(tokens);
    }

private:
    std::vector<std::unique_ptr<Decoder>> parts_;
};

std::unique_ptr<Decoder> make_decoder(const json & j, const std::string & where, int depth = 0) {
    if (j.is_null()) return nullptr;
    check_nesting(depth, where);
    const std::string type = type_of(j, where);
    if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
    if (type == "Replace") {
        const std::string pattern = pattern_of(j, where);
        compile(pattern, where + ".pattern");
        return std::make_unique<ReplaceDecoder>(pattern, get_string(j, "content", where));
    }
    if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
    if (type == "Fuse") return std::make_unique<FuseDecoder>();
    if (type == "Strip") {
        const json & start = require(j, "start", where);
        const json & stop = require(j, "stop", where);
        if (!start.is_number_unsigned() || !stop.is_number_unsigned()) fail(where, "start/stop must be non-negative integers");
        return std::make_unique<StripDecoder>(get_string(j, "content", where), start.get<std::size_t>(), stop.get<std::size_t>());
    }
    if (type == "Metaspace") {
        std::string replacement = get_optional_string(j, "replacement", where).value_or("\xE2\x96\x81");
        bool strip_first = true;
        if (auto scheme = get_optional_string(j, "prepend_scheme", where)) strip_first = *scheme != "never";
        else strip_first = get_bool(j, "add_prefix_space", where, true);
        return std::make_unique<MetaspaceDecoder>(std::move(replacement), strip_first);
    }
    if (type == "Sequence") {
        const json & list = require(j, "decoders", where);
        if (!list.is_array()) fail(where + ".decoders", "expected a list");
        std::vector<std::unique_ptr<Decoder>> parts;
        for (std::size_t k = 0; k < list.size(); ++k) {
            if (auto d = make_decoder(list[k], where + ".decoders[" + std::to_string(k) + "]", depth + 1)) parts.push_back(std::move(d));
        }
        return std::make_unique<SequenceDecoder>(std::move(parts));
    }
    fail(where + ".type", "unsupported decoder \"" + type +
                              "\" (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)");
}

struct AddedToken {
    int32_t id = 0;
    std::string content;
    bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// Leftmost-longest matcher over the added tokens of one kind (HF uses Aho-Corasick
// MatchKind::LeftmostLongest; a byte trie with a first-byte filter gives the same matches).
class AddedTokenMatcher {
public:
    void add(const std::string & content, std::size_t token_index) {
        if (content.empty()) return;
        std::size_t node = 0;
        for (char c : content) {
            const auto b = static_cast<unsigned char>(c);
            auto it = nodes_[node].next.find(b);
            if (it == nodes_[node].next.end()) {
                nodes_.push_back(Node{});
                it = nodes_[node].next.emplace(b, nodes_.size() - 1).first;
            }
            node = it->second;
        }
        if (!nodes_[node].token) nodes_[node].token = token_index;  // first wins for duplicates
        first_byte_[static_cast<unsigned char>(content[0])] = true;
        empty_ = false;
    }
    bool empty() const { return empty_; }
    // Leftmost-longest match at or after `from`: (start, end, token index).
    std::optional<std::tuple<std::size_t, std::size_t, std::size_t>> find(std::string_view s, std::size_t from) const {
        for (std::size_t start = from; start < s.size(); ++start) {
            if (!first_byte_[static_cast<unsigned char>(s[start])]) continue;
            std::size_t node = 0;
            std::optional<std::pair<std::size_t, std::size_t>> best;
            for (std::size_t k = start; k < s.size(); ++k) {
                auto it = nodes_[node].next.find(static_cast<unsigned char>(s[k]));
                if (it == nodes_[node].next.end()) break;
                node = it->second;
                if (nodes_[node].token) best = {k + 1, *nodes_[node].token};
            }
            if (best) return std::make_tuple(start, best->first, best->second);
        }
        return std::nullopt;
    }

private:
    struct Node {
        std::unordered_map<unsigned char, std::size_t> next;
        std::optional<std::size_t> token;
    };
    std::vector<Node> nodes_{Node{}};
    bool first_byte_[256] = {};
    bool empty_ = true;
};

// Byte index where the last UTF-8 char before `pos` starts (pos > 0).
std::size_t start_last_char(std::string_view s, std::size_t pos) {
    std::size_t k = pos - 1;
    while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
    return k;
}

// One post-processor step: a list of ids before the sequence and after it (single sequences only).
struct PostProcessor {
    std::vector<int32_t> prefix, suffix;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

class TokenizerImpl {
public:
    std::string source;
    std::vector<AddedToken> added;                 // in file order
    std::unordered_map<int32_t, std::size_t> added_by_id;
    VocabMap added_by_content;
    AddedTokenMatcher raw_matcher, normalized_matcher;
    std::unique_ptr<Normalizer> normalizer;
    std::unique_ptr<PreTokenizer> pre_tokenizer;
    std::unique_ptr<BpeModel> model;
    std::unique_ptr<Decoder> decoder;
    PostProcessor post;
    std::optional<int32_t> bos, eos;
    // One char of Rust regex `\w` (Alphabetic, M, Nd, Pc, Join_Control), for single_word checks.
    std::unique_ptr<text::Regex> word_char;
    int32_t vocab_size = 0;

    void encode_segment(std::string_view segment, bool at_start, std::vector<int32_t> & out) const;
    void encode_normalized(std::string text, bool at_start, std::vector<int32_t> & out) const;
    void split_added(std::string_view s, const AddedTokenMatcher & matcher,
                     std::vector<std::tuple<std::size_t, std::size_t, std::optional<int32_t>>> & parts) const;
    std::optional<std::string> token_string(int32_t id) const {
        if (auto it = added_by_id.find(id); it != added_by_id.end()) return added[it->second].content;
        if (const std::string * t = model->id_to_token(id)) return *t;
        return std::nullopt;
    }
};

// HF `AddedVocabulary::find_matches`: cut the matches out, honouring single_word, lstrip, rstrip.
void TokenizerImpl::split_added(std::string_view s, const AddedTokenMatcher & matcher,
                                std::vector<std::tuple<std::size_t, std::size_t, std::optional<int32_t>>> & parts) const {
    parts.clear();
    std::size_t start_offset = 0, search = 0;
    while (!matcher.empty()) {
        auto m = matcher.find(s, search);
        if (!m) break;
        auto [start, stop, index] = *m;
        search = stop;
        const AddedToken & tok = added[index];
        if (tok.single_word) {
            const bool start_space = start == 0 || !word_char->matches_at_start(s.substr(start_last_char(s, start)));
            const bool stop_space = stop == s.size() || !word_char->matches_at_start(s.substr(stop));
            if (!start_space || !stop_space) continue;
        }
        if (tok.lstrip) {
            std::size_t newstart = start;
            while (newstart > 0) {
                std::size_t k = start_last_char(s, newstart), j = k;
                if (!text::is_hf_whitespace(text::next_code_point(s, j))) break;
                newstart = k;
            }
            start = std::max(newstart, start_offset);
        }
        if (tok.rstrip) {
            while (stop < s.size()) {
                std::size_t j = stop;
                if (!text::is_hf_whitespace(text::next_code_point(s, j))) break;
                stop = j;
            }
            search = stop;
        }
        if (start_offset < start) parts.emplace_back(start_offset, start, std::nullopt);
        parts.emplace_back(start, stop, tok.id);
        start_offset = stop;
    }
    if (start_offset != s.size() || parts.empty()) parts.emplace_back(start_offset, s.size(), std::nullopt);
}

}  // namespace extractor

namespace extractor {

namespace {

// Added tokens get their ids the way HF's deserializer assigns them (tokenizer/serialization.rs, then
// AddedVocabulary::add_tokens), not from the file's "id": a content already known (added earlier or in
// the model vocab) keeps that id, a new one takes max(added ids) + 1 once past the model's size, else
// the model's size. For files HF itself wrote the two agree; for hand-edited files HF only warns.
void read_added_tokens(const json & root, TokenizerImpl & t) {
    auto it = root.find("added_tokens");
    if (it == root.end() || it->is_null()) return;
    if (!it->is_array()) fail("added_tokens", "expected a list");
    const auto model_size = static_cast<int64_t>(t.model->vocab().size());
    std::optional<int64_t> max_added;
    for (std::size_t k = 0; k < it->size(); ++k) {
        const json & a = (*it)[k];
        const std::string where = "added_tokens[" + std::to_string(k) + "]";
        const json & id = require(a, "id", where);
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
            fail(where + ".id", "expected a non-negative 32-bit integer");
        AddedToken tok;
        tok.content = get_string(a, "content", where);
        tok.special = get_bool(a, "special", where, false);
        tok.single_word = get_bool(a, "single_word", where, false);
        tok.lstrip = get_bool(a, "lstrip", where, false);
        tok.rstrip = get_bool(a, "rstrip", where, false);
        tok.normalized = get_bool(a, "normalized", where, !tok.special);
        std::string repaired;
        if (!text::repair_utf8(tok.content, repaired)) fail(where + ".content", "not valid UTF-8");
        if (tok.content.empty()) continue;
        const bool duplicate = std::any_of(t.added.begin(), t.added.end(), [&](const AddedToken & o) {
            return o.content == tok.content && o.special == tok.special && o.single_word == tok.single_word &&
                   o.lstrip == tok.lstrip && o.rstrip == tok.rstrip && o.normalized == tok.normalized;
        });
        if (duplicate) continue;
        int64_t assigned;
        if (auto known = t.added_by_content.find(tok.content); known != t.added_by_content.end()) assigned = known->second;
        else if (auto in_model = t.model->token_id(tok.content)) assigned = *in_model;
        else if (max_added && (*max_added >= model_size || model_size == 0)) assigned = *max_added + 1;
        else assigned = model_size;
        if (assigned >= Tokenizer::kMaxTokenId)
            fail(where, "its id would be " + std::to_string(assigned) + ", not below " + std::to_string(Tokenizer::kMaxTokenId));
        tok.id = static_cast<int32_t>(assigned);
        max_added = std::max(max_added.value_or(assigned), assigned);
        t.added_by_id[tok.id] = t.added.size();
        t.added_by_content[tok.content] = tok.id;
        t.added.push_back(std::move(tok));
    }
}

std::unique_ptr<BpeModel> read_model(const json & root) {
    const json & m = require(root, "model", "");
    if (!m.is_object()) fail("model", "expected an object");
    if (auto ty = m.find("type"); ty != m.end()) {
        if (!ty->is_string()) fail("model.type", "expected a string");
        if (ty->get<std::string>() != "BPE")
            fail("model.type", "unsupported model \"" + ty->get<std::string>() + "\" (only BPE is supported)");
    } else if (!m.contains("merges")) {
        fail("model.type", "missing, and the model has no merges (only BPE is supported)");
    }
    if (auto d = m.find("dropout"); d != m.end() && !d->is_null()) {
        if (!d->is_number() || d->get<double>() != 0.0) fail("model.dropout", "BPE dropout is not supported (must be null)");
    }
    const json & v = require(m, "vocab", "model");
    if (!v.is_object()) fail("model.vocab", "expected an object {token: id}");
    VocabMap vocab;
    vocab.reserve(v.size());
    const int64_t id_bound = BpeModel::max_id_bound(v.size());
    for (auto it = v.begin(); it != v.end(); ++it) {
        const std::string field = "model.vocab[\"" + it.key() + "\"]";
        if (!it.value().is_number_integer() || (it.value().is_number_unsigned() && it.value().get<uint64_t>() > INT64_MAX) ||
            it.value().get<int64_t>() < 0)
            fail(field, "expected a non-negative integer id");
        // Before anything is sized by it: "z": 2147483647 overflowed int32 (max id + 1) and then
        // asked for a 2^31-entry table.
        if (it.value().get<int64_t>() >= id_bound)
            fail(field, "id " + std::to_string(it.value().get<int64_t>()) + " is too large: ids must be below " +
                            std::to_string(id_bound) + " (at most " + std::to_string(Tokenizer::kMaxTokenId) +
                            ", and twice the " + std::to_string(v.size()) + " entries plus 65536)");
        vocab.emplace(it.key(), static_cast<int32_t>(it.value().get<int64_t>()));
    }
    const json & ml = require(m, "merges", "model");
    if (!ml.is_array()) fail("model.merges", "expected a list");
    std::vector<std::pair<std::string, std::string>> merges;
    merges.reserve(ml.size());
    for (std::size_t k = 0; k < ml.size(); ++k) {
        const json & e = ml[k];
        const std::string where = "model.merges[" + std::to_string(k) + "]";
        if (e.is_string()) {
            const std::string & s = e.get_ref<const std::string &>();
            if (s.rfind("#version", 0) == 0) continue;
            const std::size_t sp = s.find(' ');
            if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                fail(where, "expected \"left right\" with exactly one space, got \"" + s + "\"");
            merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
            merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
        } else {
            fail(where, "expected \"left right\" or [\"left\", \"right\"]");
        }
    }
    BpeOptions o;
    o.unk_token = get_optional_string(m, "unk_token", "model");
    o.continuing_subword_prefix = get_optional_string(m, "continuing_subword_prefix", "model").value_or("");
    o.end_of_word_suffix = get_optional_string(m, "end_of_word_suffix", "model").value_or("");
    o.fuse_unk = get_bool(m, "fuse_unk", "model", false);
    o.byte_fallback = get_bool(m, "byte_fallback", "model", false);
    o.ignore_merges = get_bool(m, "ignore_merges", "model", false);
    try {
        return std::make_unique<BpeModel>(std::move(vocab), merges, std::move(o));
    } catch (const std::invalid_argument & e) {
        fail("model", e.what());
    }
}

// A token id a post-processor adds: an integer in [0, kMaxTokenId). get<int32_t>() truncated
// 4294967297 to 1 and kept -7 as an id.
int32_t post_processor_id(const json & id, const std::string & where) {
    if (!id.is_number_integer()) fail(where, "expected an integer token id");
    if (id.is_number_unsigned() ? id.get<uint64_t>() >= static_cast<uint64_t>(Tokenizer::kMaxTokenId)
                                : (id.get<int64_t>() < 0 || id.get<int64_t>() >= Tokenizer::kMaxTokenId))
        fail(where, "token id " + id.dump() + " is outside [0, " + std::to_string(Tokenizer::kMaxTokenId) + ")");
    return static_cast<int32_t>(id.get<int64_t>());
}

PostProcessor read_post_processor(const json & j, const std::string & where, const TokenizerImpl & t, int depth = 0) {
    PostProcessor p;
    if (j.is_null()) return p;
    check_nesting(depth, where);
    const std::string type = type_of(j, where);
    if (type == "ByteLevel") return p;  // offsets only
    if (type == "TemplateProcessing") {
        const json & single = require(j, "single", where);
        if (!single.is_array()) fail(where + ".single", "expected a list");
        const json & specials = require(j, "special_tokens", where);
        bool seen_sequence = false;
        for (std::size_t k = 0; k < single.size(); ++k) {
            const std::string w = where + ".single[" + std::to_string(k) + "]";
            const json & item = single[k];
            if (item.contains("Sequence")) {
                seen_sequence = true;
                continue;
            }
            if (!item.contains("SpecialToken")) fail(w, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
            const std::string name = get_string(item["SpecialToken"], "id", w + ".SpecialToken");
            const json & spec = require(specials, name, where + ".special_tokens");
            const json & ids = require(spec, "ids", where + ".special_tokens." + name);
            if (!ids.is_array()) fail(where + ".special_tokens." + name + ".ids", "expected a list of ids");
            for (std::size_t n = 0; n < ids.size(); ++n)
                (seen_sequence ? p.suffix : p.prefix)
                    .push_back(post_processor_id(ids[n], where + ".special_tokens." + name + ".ids[" + std::to_string(n) + "]"));
        }
        return p;
    }
    if (type == "RobertaProcessing" || type == "BertProcessing") {
        auto read_pair = [&](const char * key) {
            const json & v = require(j, key, where);
            if (!v.is_array() || v.size() != 2) fail(where + "." + key, "expected [\"token\", id]");
            return post_processor_id(v[1], where + "." + key + "[1]");
        };
        p.prefix.push_back(read_pair("cls"));
        p.suffix.push_back(read_pair("sep"));
        return p;
    }
    if (type == "Sequence") {
        const json & list = require(j, "processors", where);
        if (!list.is_array()) fail(where + ".processors", "expected a list");
        for (std::size_t k = 0; k < list.size(); ++k) {
            PostProcessor q = read_post_processor(list[k], where + ".processors[" + std::to_string(k) + "]", t, depth + 1);
            p.prefix.insert(p.prefix.begin(), q.prefix.begin(), q.prefix.end());
            p.suffix.insert(p.suffix.end(), q.suffix.begin(), q.suffix.end());
        }
        return p;
    }
    fail(where + ".type", "unsupported post_processor \"" + type +
                              "\" (supported: ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing, Sequence)");
}

// bos_token / eos_token of a tokenizer_config.json: a string, {"content": ...}, or null.
std::optional<std::optional<std::string>> config_token(const json & cfg, const char * key) {
    auto it = cfg.find(key);
    if (it == cfg.end()) return std::nullopt;  // not stated
    if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
        return std::optional<std::string>((*it)["content"].get<std::string>());
    return std::optional<std::string>();  // stated as null
}

std::unique_ptr<TokenizerImpl> build(const json & root, const std::string & source, const json * config) {
    auto t = std::make_unique<TokenizerImpl>();
    t->source = source;
    if (!root.is_object()) fail("", "the top level is not a JSON object");
    t->model = read_model(root);
    read_added_tokens(root, *t);
    auto field = [&](const char * key) -> const json & {
        static const json null_value;
        auto it = root.find(key);
        return it == root.end() ? null_value : *it;
    };
    t->normalizer = make_normalizer(field("normalizer"), "normalizer");
    try {
        t->pre_tokenizer = make_pre_tokenizer(field("pre_tokenizer"), "pre_tokenizer");
    } catch (const std::invalid_argument & e) {
        fail("pre_tokenizer", e.what());
    }
    t->decoder = make_decoder(field("decoder"), "decoder");
    t->post = read_post_processor(field("post_processor"), "post_processor", *t);
    t->word_char = std::make_unique<text::Regex>(R"([\p{L}\p{M}\p{Nd}\p{Nl}\p{Pc}\x{200C}\x{200D}])", false);

    for (std::size_t k = 0; k < t->added.size(); ++k) {
        const AddedToken & a = t->added[k];
        if (!a.normalized) {
            t->raw_matcher.add(a.content, k);
        } else {
            std::string content = a.content;
            if (t->normalizer) t->normalizer->apply(content);  // HF matches the normalised form
            t->normalized_matcher.add(content, k);
        }
    }

    int32_t max_id = t->model->max_id();
    for (const AddedToken & a : t->added) max_id = std::max(max_id, a.id);
    t->vocab_size = max_id + 1;

    auto lookup = [&](const std::string & name) -> std::optional<int32_t> {
        if (auto it = t->added_by_content.find(name); it != t->added_by_content.end()) return it->second;
        return t->model->token_id(name);
    };
    std::optional<std::optional<std::string>> cfg_bos, cfg_eos;
    if (config) {
        cfg_bos = config_token(*config, "bos_token");
        cfg_eos = config_token(*config, "eos_token");
    }
    if (cfg_bos) t->bos = *cfg_bos ? lookup(**cfg_bos) : std::nullopt;
    else if (!t->post.prefix.empty()) t->bos = t->post.prefix.front();
    if (cfg_eos) {
        t->eos = *cfg_eos ? lookup(**cfg_eos) : std::nullopt;
    } else {
        for (const char * name : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"}) {
            if ((t->eos = lookup(name))) break;
        }
    }
    return t;
}

}  // namespace

void TokenizerImpl::encode_normalized(std::string text, bool at_start, std::vector<int32_t> & out) const {
    if (text.empty()) return;
    std::vector<Piece> pieces;
    pieces.push_back(Piece{std::move(text), at_start});
    if (pre_tokenizer) pre_tokenizer->apply(pieces);
    for (const Piece & p : pieces) model->encode_word(p.text, out);
}

void TokenizerImpl::encode_segment(std::string_view segment, bool at_start, std::vector<int32_t> & out) const {
    std::string normalized(segment);
    if (normalizer) normalizer->apply(normalized);
    if (normalized_matcher.empty()) {
        encode_normalized(std::move(normalized), at_start, out);
        return;
    }
    std::vector<std::tuple<std::size_t, std::size_t, std::optional<int32_t>>> parts;
    split_added(normalized, normalized_matcher, parts);
    for (const auto & [a, b, id] : parts) {
        if (id) out.push_back(*id);
        else encode_normalized(normalized.substr(a, b - a), at_start && a == 0, out);
    }
}

Tokenizer::Tokenizer(std::unique_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer &&) noexcept = default;
Tokenizer & Tokenizer::operator=(Tokenizer &&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json_text(std::string_view json_text, const std::string & source_name) {
    json root;
    try {
        root = json::parse(json_text);
    } catch (const json::exception & e) {
        throw common::Error::file(source_name, std::string("cannot load tokenizer: not valid JSON: ") + e.what());
    }
    try {
        return Tokenizer(build(root, source_name, nullptr));
    } catch (const FieldError & e) {
        throw common::Error::file(source_name, "cannot load tokenizer: field `" + e.field + "`: " + e.why)
            .with("field", e.field);
    } catch (const json::exception & e) {
        throw common::Error::file(source_name, std::string("cannot load tokenizer: ") + e.what());
    }
}

Tokenizer Tokenizer::from_file(const std::string & path) {
    // Not std::ifstream: a FIFO under the name blocked it forever, and nothing bounded the size.
    const std::string text = common::read_regular_file(path, kMaxFileBytes, "tokenizer.json");
    json root, config;
    bool have_config = false;
    try {
        root = json::parse(text);
    } catch (const json::exception & e) {
        throw common::Error::file(path, std::string("cannot load tokenizer: not valid JSON: ") + e.what());
    }
    const std::size_t slash = path.find_last_of('/');
    const std::string config_path = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) + "tokenizer_config.json";
    // Only looked at (stat, which never opens the file) to see whether it is there: probing by
    // opening it blocked on a FIFO. Anything but a regular file under the name is then refused.
    std::error_code ec;
    const auto config_status = std::filesystem::status(config_path, ec);
    if (config_status.type() != std::filesystem::file_type::not_found) {
        const std::string config_text = common::read_regular_file(config_path, kMaxConfigFileBytes, "tokenizer_config.json");
        try {
            config = json::parse(config_text);
            have_config = config.is_object();
        } catch (const json::exception & e) {
            throw common::Error::file(config_path, std::string("cannot read bos/eos tokens: not valid JSON: ") + e.what());
        }
    }
    try {
        return Tokenizer(build(root, path, have_config ? &config : nullptr));
    } catch (const FieldError & e) {
        throw common::Error::file(path, "cannot load tokenizer: field `" + e.field + "`: " + e.why).with("field", e.field);
    } catch (const json::exception & e) {
        throw common::Error::file(path, std::string("cannot load tokenizer: ") + e.what());
    }
}

std::vector<int32_t> Tokenizer::encode(std::string_view input, bool add_special_tokens) const {
    const TokenizerImpl & t = *impl_;
    std::string repaired;
    const std::string_view text = text::repair_utf8(input, repaired) ? input : std::string_view(repaired);
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 8);
    if (add_special_tokens) out.insert(out.end(), t.post.prefix.begin(), t.post.prefix.end());
    try {
        std::vector<std::tuple<std::size_t, std::size_t, std::optional<int32_t>>> parts;
        t.split_added(text, t.raw_matcher, parts);
        for (const auto & [a, b, id] : parts) {
            if (id) out.push_back(*id);
            else t.encode_segment(text.substr(a, b - a), a == 0, out);
        }
    } catch (const std::runtime_error & e) {
        throw common::Error::file(t.source, std::string("cannot encode text: ") + e.what());
    }
    if (add_special_tokens) out.insert(out.end(), t.post.suffix.begin(), t.post.suffix.end());
    return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
    const TokenizerImpl & t = *impl_;
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
        if (skip_special_tokens && is_special(id)) continue;
        if (auto s = t.token_string(id)) tokens.push_back(std::move(*s));
    }
    if (!t.decoder) {
        std::string out;
        for (std::size_t k = 0; k < tokens.size(); ++k) out += (k ? " " : "") + tokens[k];
        return out;
    }
    t.decoder->apply(tokens);
    std::string out;
    for (const auto & s : tokens) out += s;
    return out;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const { return impl_->token_string(id); }

std::string Tokenizer::token_text(int32_t id) const {
    const TokenizerImpl & t = *impl_;
    const auto raw = t.token_string(id);
    if (!raw) return "<unknown id " + std::to_string(id) + ">";
    std::string bytes;
    const bool added = t.added_by_id.count(id) != 0;
    bool mapped = false;
    if (!added && t.pre_tokenizer && t.pre_tokenizer->is_byte_level()) {
        mapped = true;
        std::size_t i = 0;
        while (i < raw->size() && mapped) {
            const int b = text::visible_to_byte(text::next_code_point(*raw, i));
            if (b < 0) mapped = false;
            else bytes.push_back(static_cast<char>(b));
        }
    }
    if (!mapped) {
        bytes = *raw;
        if (!added && bytes.size() == 6 && bytes.compare(0, 3, "<0x") == 0 && bytes[5] == '>')
            bytes = std::string(1, static_cast<char>(std::stoi(bytes.substr(3, 2), nullptr, 16)));
        else if (!added) {
            std::string spaced;  // Metaspace "▁" shown as the space it stands for
            for (std::size_t k = 0; k < bytes.size();) {
                if (bytes.compare(k, 3, "\xE2\x96\x81") == 0) {
                    spaced += ' ';
                    k += 3;
                } else {
                    spaced += bytes[k++];
                }
            }
            bytes = std::move(spaced);
        }
    }
    // Printable form: valid UTF-8 kept, other bytes and control chars escaped.
    std::string out;
    std::size_t i = 0;
    while (i < bytes.size()) {
        std::string one;
        const std::size_t start = i;
        std::string probe;
        // Find the length of a valid char at i by repairing a window of up to 4 bytes.
        std::size_t len = 1;
        for (std::size_t n = std::min<std::size_t>(4, bytes.size() - i); n >= 1; --n) {
            std::string_view w(bytes.data() + i, n);
            std::string r;
            if (text::repair_utf8(w, r)) {
                std::size_t j = 0;
                text::next_code_point(w, j);
                len = j;
                break;
            }
            if (n == 1) len = 0;
        }
        if (len == 0) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02X", static_cast<unsigned char>(bytes[i]));
            out += buf;
            ++i;
            continue;
        }
        const auto c = static_cast<unsigned char>(bytes[start]);
        if (len == 1 && (c < 0x20 || c == 0x7F)) {
            if (c == '\n') out += "\\n";
            else if (c == '\t') out += "\\t";
            else if (c == '\r') out += "\\r";
            else {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\x%02X", c);
                out += buf;
            }
        } else {
            out.append(bytes, start, len);
        }
        i = start + len;
    }
    return out;
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
    if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end()) return it->second;
    return impl_->model->token_id(token);
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }

bool Tokenizer::is_special(int32_t id) const {
    auto it = impl_->added_by_id.find(id);
    return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

bool Tokenizer::unicode_normalization_available() { return text::normalization_available(); }

}  // namespace extractor
