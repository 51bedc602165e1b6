// libFuzzer target for the tokenizer: the tokenizer.json loader and encode/decode.
// Property: for any bytes, (1) loading them as a tokenizer.json either succeeds or throws
// common::Error (never another exception, a crash, a hang or a sanitizer report); a file that loads
// must encode and decode a fixed probe text; (2) encoding any bytes (invalid UTF-8 included) with a
// fixed real-shaped tokenizer never fails, yields only ids below vocab_size(), and decode/token_text
// accept those ids; (3) a file that loads never yields an id outside [0, Tokenizer::kMaxTokenId). Allowed errors: common::Error from loading (and from encoding only when the
// file's unk_token is missing from its vocab, which HF also reports as an error).
// Crash inputs go to tests/fuzz_regressions/tokenizer/ and are replayed by tokenizer_test.
#include "common/error.h"
#include "extractor/tokenizer/tokenizer.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

// A small byte-level tokenizer with every feature the pipeline has: NFC, added tokens with flags,
// the Qwen split regex, ByteLevel, both merge formats, a template post-processor, decoders.
const char * kFixture = R"({
  "added_tokens": [
    {"id": 12, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 13, "content": "  ", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false},
    {"id": 14, "content": "<m>", "single_word": true, "lstrip": true, "rstrip": true, "normalized": false, "special": true}],
  "normalizer": {"type": "NFC"},
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]},
  "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [12], "tokens": ["<s>"]}}},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "ignore_merges": false, "byte_fallback": false,
    "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3, "\u0120a": 4, "c": 5, "abc": 6, "\u010a": 7, "1": 8, "\u00c3": 9, "\u00a9": 10, "\u00c3\u00a9": 11},
    "merges": [["a", "b"], "ab c", ["\u0120", "a"], "\u00c3 \u00a9"]}
})";

const extractor::Tokenizer & fixture() {
    static const extractor::Tokenizer t = extractor::Tokenizer::from_json_text(kFixture, "fuzz-fixture");
    return t;
}

// `check_ids`: ids must lie in the vocabulary. Not asked of fuzzed files: a TemplateProcessing entry
// may name any id (HF emits it as written), so only the consistent fixture promises this. Every
// file that loads promises ids in [0, Tokenizer::kMaxTokenId) and a vocab_size within it.
void exercise(const extractor::Tokenizer & t, std::string_view text, bool check_ids) {
    if (t.vocab_size() < 0 || t.vocab_size() > extractor::Tokenizer::kMaxTokenId) std::abort();
    for (bool special : {true, false}) {
        const std::vector<int32_t> ids = t.encode(text, special);
        for (int32_t id : ids) {
            if (id < 0 || id >= extractor::Tokenizer::kMaxTokenId) std::abort();
            if (check_ids && (id < 0 || id >= t.vocab_size())) std::abort();
            (void)t.token_text(id);
        }
        (void)t.decode(ids, special);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    exercise(fixture(), input, true);
    try {
        const extractor::Tokenizer t = extractor::Tokenizer::from_json_text(input, "fuzz-input");
        try {
            exercise(t, "Hello  world <s> 12 \xC3\xA9 e\xCC\x81 \xFF<m> x", false);
        } catch (const common::Error &) {
            // Only the unk-token-not-in-vocab case may throw here (HF errors the same way).
        }
    } catch (const common::Error &) {
    }
    return 0;
}
