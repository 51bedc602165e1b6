// Tokenizer unit tests on hand-made tokenizer.json fixtures: both merge formats, merge order and
// tie-breaking, ignore_merges, byte_fallback/unk/fuse_unk, added tokens with every flag (the OLMoE
// whitespace-run trap included), NFC, invalid UTF-8, post-processors, decode, and malformed files.
// Expected ids are worked out by hand from HF's algorithm (docs/checkpoint-formats.md#tokenizer-json) and
// stated per case.
#include "common/error.h"
#include "extractor/tokenizer/text.h"
#include "extractor/tokenizer/tokenizer.h"
#include "tests/support/temp_dir.h"

#include <nlohmann/json.hpp>

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

using extractor::Tokenizer;
using json = nlohmann::json;
using Ids = std::vector<int32_t>;

namespace {

json added(int id, const std::string & content, bool special, bool normalized, bool lstrip = false,
           bool rstrip = false, bool single_word = false) {
    return {{"id", id},         {"content", content}, {"single_word", single_word}, {"lstrip", lstrip},
            {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}};
}

// A tiny byte-level BPE (GPT-2 style pipeline): "Ġ" is the byte-mapped space, "Ã©" the byte-mapped é.
// Its model has 18 tokens, so added tokens that are not in it get ids 18, 19, ... (HF assignment).
json byte_level_fixture(bool pair_merges) {
    json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}, {"\xC4\xA0", 5}, {"\xC4\xA0" "a", 6},
                  {"d", 7}, {"aa", 8}, {"H", 9}, {"i", 10}, {"Hi", 11}, {"\xC4\x8A", 12}, {"e", 13},
                  {"\xC3\x83\xC2\xA9", 14}, {"abd", 15}, {"\xC3\x83", 16}, {"\xC2\xA9", 17}};
    std::vector<std::pair<std::string, std::string>> merges = {
        {"a", "b"}, {"ab", "c"}, {"\xC4\xA0", "a"}, {"a", "a"}, {"H", "i"}, {"\xC3\x83", "\xC2\xA9"}};
    json m = json::array();
    for (auto & [l, r] : merges) {
        if (pair_merges) m.push_back({l, r});
        else m.push_back(l + " " + r);
    }
    return {{"version", "1.0"},
            {"added_tokens", json::array()},
            {"normalizer", nullptr},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
            {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
            {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
            {"model",
             {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
              {"vocab", vocab}, {"merges", m}}}};
}

Tokenizer load(const json & j) { return Tokenizer::from_json_text(j.dump(), "fixture.json"); }

std::string load_error(const std::string & text) {
    try {
        Tokenizer::from_json_text(text, "bad/tokenizer.json");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        return e.message();
    }
    FAIL("no error for a malformed tokenizer.json");
    return {};
}

}  // namespace

TEST_CASE("tokenizer: both merge formats give the same ids, lowest rank first") {
    const Tokenizer pairs = load(byte_level_fixture(true));
    const Tokenizer strings = load(byte_level_fixture(false));
    // "abc" -> a+b (rank 0) then ab+c (rank 1) = [abc]; " ab" -> Ġ a b: (a,b) rank 0 beats (Ġ,a) rank 2,
    // so [Ġ, ab] and not [Ġa, b].
    CHECK(pairs.encode("abc ab") == Ids{4, 5, 3});
    CHECK(strings.encode("abc ab") == Ids{4, 5, 3});
    // Equal ranks: the leftmost pair merges first: "aaa" -> [aa, a].
    CHECK(pairs.encode("aaa") == Ids{8, 0});
    CHECK(pairs.encode("") == Ids{});
}

TEST_CASE("tokenizer: ignore_merges emits a whole pre-token that is in the vocab") {
    json j = byte_level_fixture(true);
    CHECK(load(j).encode("abd") == Ids{3, 7});
    j["model"]["ignore_merges"] = true;
    CHECK(load(j).encode("abd") == Ids{15});
    CHECK(load(j).encode("abc") == Ids{4});
}

TEST_CASE("tokenizer: byte_fallback, unk and fuse_unk on a char-level BPE") {
    json vocab = {{"<unk>", 0}, {"<0xC3>", 1}, {"<0xA9>", 2}, {"a", 3}, {"b", 4}, {"ab", 5}};
    json j = {{"added_tokens", json::array({added(0, "<unk>", true, false)})},
              {"normalizer", nullptr},
              {"pre_tokenizer", nullptr},
              {"post_processor", nullptr},
              {"decoder", {{"type", "Sequence"}, {"decoders", json::array({{{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}}},
              {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
                         {"vocab", vocab}, {"merges", json::array({"a b"})}}}};
    const Tokenizer t = load(j);
    // é = C3 A9 has both byte tokens; x has none, so it falls to <unk>; two unknowns fuse into one.
    CHECK(t.encode("ab\xC3\xA9") == Ids{5, 1, 2});
    CHECK(t.encode("axyb") == Ids{3, 0, 4});
    CHECK(t.decode(t.encode("ab\xC3\xA9")) == "ab\xC3\xA9");
    j["model"]["fuse_unk"] = false;
    CHECK(load(j).encode("axyb") == Ids{3, 0, 0, 4});
    j["model"]["byte_fallback"] = false;
    CHECK(load(j).encode("\xC3\xA9") == Ids{0});
}

TEST_CASE("tokenizer: OLMoE whitespace-run added tokens are cut out before the regex split") {
    json j = byte_level_fixture(true);
    j["normalizer"] = {{"type", "NFC"}};
    j["added_tokens"] = json::array({added(18, "   ", false, true), added(19, "  ", false, true),
                                     added(20, "<|endoftext|>", true, false)});
    const Tokenizer t = load(j);
    // As OLMoE "Hi  Hello" -> [Hi, <2 spaces>, Hello]: the word after the run gets no leading space.
    CHECK(t.encode("Hi  abc") == Ids{11, 19, 4});
    CHECK(t.encode("Hi   abc") == Ids{11, 18, 4});
    CHECK(t.encode("  ") == Ids{19});
    CHECK(t.encode(" ") == Ids{5});
    CHECK(t.encode("Hi<|endoftext|>ab") == Ids{11, 20, 3});
    CHECK(t.is_special(20));
    CHECK_FALSE(t.is_special(19));
    CHECK(t.decode(Ids{11, 19, 4}) == "Hi  abc");
    CHECK(t.decode(Ids{11, 20, 3}, true) == "Hiab");
    CHECK(t.vocab_size() == 21);
}

TEST_CASE("tokenizer: lstrip, rstrip and single_word behave as HF's AddedVocabulary") {
    json j = byte_level_fixture(true);
    j["added_tokens"] = json::array({added(18, "<m>", true, false, true, true, true)});
    const Tokenizer t = load(j);
    // HF test_lstrip_unicode_space: "Hi <m> there\t<m>\t<m>\u2000" -> "Hi", " <m> ", "there",
    // "\t<m>\t", "<m>\u2000" (the second run's spaces were already taken by the previous match).
    const std::vector<int32_t> ids = t.encode("Hi <m> abc\t<m>\t<m>\xE2\x80\x80");
    CHECK(ids == Ids{11, 18, 4, 18, 18});
    // single_word: not matched inside a word ("a<m>b"), matched after punctuation-free boundaries.
    const std::vector<int32_t> inside = t.encode("a<m>b");
    CHECK(std::count(inside.begin(), inside.end(), 18) == 0);
    CHECK(t.encode("<m>") == Ids{18});
}

TEST_CASE("tokenizer: added token ids follow HF's assignment, not the file's id field") {
    json j = byte_level_fixture(true);
    // "ab" is already in the model vocab (id 3): HF gives the added token id 3; the next new token
    // then takes the model size (18), whatever the file says.
    j["added_tokens"] = json::array({added(99, "ab", false, true), added(77, "<x>", true, false)});
    const Tokenizer t = load(j);
    CHECK(t.token_id("<x>") == 18);
    CHECK(t.encode("<x>") == Ids{18});
    CHECK(t.token_id("ab") == 3);
}

TEST_CASE("tokenizer: NFC normalizer composes decomposed accents before BPE") {
    json j = byte_level_fixture(true);
    j["normalizer"] = {{"type", "NFC"}};
    const Tokenizer t = load(j);
    // "e" + U+0301 composes to é (C3 A9), whose byte-mapped form "Ã©" is token 14.
    if (!Tokenizer::unicode_normalization_available()) {
        MESSAGE("built without utf8proc (TOOLKIT_TOKENIZER_NO_NFC): NFC check skipped");
        return;
    }
    CHECK(t.encode("e\xCC\x81") == Ids{14});
    CHECK(t.encode("\xC3\xA9") == Ids{14});
    j["normalizer"] = nullptr;
    CHECK(load(j).encode("e\xCC\x81") != Ids{14});
}

TEST_CASE("tokenizer: invalid UTF-8 is replaced by U+FFFD per maximal subpart, never a crash") {
    json j = byte_level_fixture(true);
    const Tokenizer t = load(j);
    std::string repaired;
    CHECK_FALSE(extractor::text::repair_utf8("a\xFF" "b\xE2\x82" "c\xC3", repaired));
    CHECK(repaired == "a\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xEF\xBF\xBD");
    CHECK(t.encode("a\xFF" "b\xE2\x82" "c\xC3") == t.encode(repaired));
    CHECK_FALSE(t.encode("\xED\xA0\x80 \xF4\x90\x80\x80 \xC0\xAF").empty());
}

TEST_CASE("tokenizer: HF's whitespace set, not PCRE2's, drives the GPT-2 pattern") {
    // GPT-2 pattern on "x"+c+c+"y": a whitespace c gives x | c | c | y (4 pieces); any other char gives
    // x | cc | y (3). U+180E is where PCRE2's own \s differs from HF (docs/checkpoint-formats.md#whitespace).
    const extractor::text::Regex re(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
    const std::vector<char32_t> spaces = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0xA0, 0x1680, 0x2000, 0x2005, 0x200A,
                                          0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
    const std::vector<char32_t> not_spaces = {0x1C, 0x1D, 0x1E, 0x1F, 0x180E, 0x200B, 0xFEFF};
    auto pieces = [&](char32_t c) {
        std::string s = "x";
        extractor::text::append_utf8(s, c);
        extractor::text::append_utf8(s, c);
        s += "y";
        std::vector<std::pair<std::size_t, std::size_t>> m;
        re.find_all(s, m);
        return m.size();
    };
    for (char32_t c : spaces) {
        CAPTURE(static_cast<uint32_t>(c));
        CHECK(pieces(c) == 4);
        CHECK(extractor::text::is_hf_whitespace(c));
    }
    for (char32_t c : not_spaces) {
        CAPTURE(static_cast<uint32_t>(c));
        CHECK(pieces(c) == 3);
        CHECK_FALSE(extractor::text::is_hf_whitespace(c));
    }
}

TEST_CASE("tokenizer: TemplateProcessing adds BOS only with add_special_tokens") {
    json j = byte_level_fixture(true);
    j["added_tokens"] = json::array({added(18, "<s>", true, false), added(19, "</s>", true, false)});
    j["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {18}}, {"tokens", {"<s>"}}}}}}};
    const Tokenizer t = load(j);
    CHECK(t.encode("ab") == Ids{18, 3});
    CHECK(t.encode("ab", false) == Ids{3});
    CHECK(t.bos_id() == 18);
    CHECK(t.eos_id() == 19);
    CHECK(t.decode(Ids{18, 3}) == "<s>ab");
    CHECK(t.decode(Ids{18, 3}, true) == "ab");
}

TEST_CASE("tokenizer: tokenizer_config.json beside the file names BOS and EOS") {
    tests::TempDir dir;
    json j = byte_level_fixture(true);
    j["added_tokens"] = json::array({added(18, "<|endoftext|>", true, false), added(19, "<|im_end|>", true, false)});
    tests::write_file(dir / "tokenizer.json", j.dump());
    tests::write_file(dir / "tokenizer_config.json", R"({"bos_token": null, "eos_token": {"content": "<|im_end|>"}})");
    const Tokenizer t = Tokenizer::from_file(dir / "tokenizer.json");
    CHECK_FALSE(t.bos_id().has_value());
    CHECK(t.eos_id() == 19);
}

TEST_CASE("tokenizer: decode and token_text show what the model saw") {
    const Tokenizer t = load(byte_level_fixture(true));
    CHECK(t.decode(t.encode("abc ab\n")) == "abc ab\n");
    CHECK(t.token_text(6) == " a");
    CHECK(t.token_text(12) == "\\n");
    CHECK(t.token_text(14) == "\xC3\xA9");
    CHECK(t.token_text(1000) == "<unknown id 1000>");
    CHECK(t.id_to_token(5) == std::string("\xC4\xA0"));
    CHECK(t.token_id("abc") == 4);
    CHECK_FALSE(t.token_id("zzz").has_value());
}

TEST_CASE("tokenizer: malformed tokenizer.json names the file and the field") {
    json j = byte_level_fixture(false);
    j["model"]["merges"][1] = "ab c extra";
    std::string msg = load_error(j.dump());
    CHECK(msg.find("bad/tokenizer.json") != std::string::npos);
    CHECK(msg.find("model.merges[1]") != std::string::npos);

    j = byte_level_fixture(true);
    j["model"]["merges"].push_back({"zz", "q"});
    msg = load_error(j.dump());
    CHECK(msg.find("merge 6") != std::string::npos);
    CHECK(msg.find("not in model.vocab") != std::string::npos);

    j = byte_level_fixture(true);
    j["model"].erase("vocab");
    CHECK(load_error(j.dump()).find("model.vocab") != std::string::npos);

    j = byte_level_fixture(true);
    j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
    CHECK(load_error(j.dump()).find("pre_tokenizer.type") != std::string::npos);

    j = byte_level_fixture(true);
    j["model"]["type"] = "Unigram";
    CHECK(load_error(j.dump()).find("only BPE") != std::string::npos);

    j = byte_level_fixture(true);
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}, {"invert", false}};
    CHECK(load_error(j.dump()).find("pre_tokenizer.pattern") != std::string::npos);

    j = byte_level_fixture(true);
    j["added_tokens"] = json::array({{{"content", "<x>"}}});
    CHECK(load_error(j.dump()).find("added_tokens[0].id") != std::string::npos);

    CHECK(load_error("{\"model\": [1,2").find("not valid JSON") != std::string::npos);
    CHECK(load_error("[]").find("top level") != std::string::npos);
}

TEST_CASE("tokenizer: Strip, Prepend and Replace normalizers run in sequence") {
    json j = byte_level_fixture(true);
    j["pre_tokenizer"] = nullptr;
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", json::array({{{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}},
                                                    {{"type", "Replace"}, {"pattern", {{"String", "c"}}}, {"content", "b"}},
                                                    {{"type", "Prepend"}, {"prepend", "a"}}})}};
    // "\u3000 cab" -> strip left -> "cab" -> replace c by b -> "bab" -> prepend a -> "abab" -> [ab, ab].
    CHECK(load(j).encode("\xE3\x80\x80 cab") == Ids{3, 3});
    // Prepend leaves empty text alone.
    CHECK(load(j).encode("") == Ids{});
}

TEST_CASE("tokenizer: a missing file is a not-found error naming the path") {
    try {
        Tokenizer::from_file("/nonexistent/dir/tokenizer.json");
        FAIL("expected an error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::NotFound);
        CHECK(e.message().find("/nonexistent/dir/tokenizer.json") != std::string::npos);
    }
}

TEST_CASE("tokenizer: Split behaviours and Metaspace follow HF") {
    // Digits pre-tokenizer (individual) + char-level BPE: "a12b" -> a | 1 | 2 | b.
    json vocab = {{"a", 0}, {"b", 1}, {"1", 2}, {"2", 3}, {"12", 4}, {"\xE2\x96\x81", 5}, {"\xE2\x96\x81" "a", 6}};
    json j = {{"normalizer", nullptr},
              {"pre_tokenizer", {{"type", "Digits"}, {"individual_digits", true}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"1 2", "\xE2\x96\x81 a"})}}}};
    CHECK(load(j).encode("a12b") == Ids{0, 2, 3, 1});
    j["pre_tokenizer"]["individual_digits"] = false;
    CHECK(load(j).encode("a12b") == Ids{0, 4, 1});
    // Split MergedWithPrevious on "1": "a1b1" -> "a1" | "b1".
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "1"}}}, {"behavior", "MergedWithPrevious"}, {"invert", false}};
    CHECK(load(j).encode("a1b1") == Ids{0, 2, 1, 2});
    // Metaspace (prepend always, split): "a a" -> "▁a" | "▁a".
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "always"}, {"split", true}};
    j["decoder"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "always"}, {"split", true}};
    const Tokenizer t = load(j);
    CHECK(t.encode("a a") == Ids{6, 6});
    CHECK(t.decode(Ids{6, 6}) == "a a");
}

namespace {

// A tokenizer.json whose `field` is a "Sequence" of `list_key` nested `depth` levels around `leaf`,
// built as text (nlohmann's dump() would itself recurse once per level).
std::string nested_sequence(const std::string & field, const std::string & list_key, const std::string & leaf, int depth) {
    json j = byte_level_fixture(true);
    j[field] = nullptr;
    std::string text = j.dump();
    const std::string null_field = "\"" + field + "\":null";
    const std::size_t at = text.find(null_field);
    REQUIRE(at != std::string::npos);
    std::string nested;
    for (int k = 0; k < depth; ++k) nested += "{\"type\":\"Sequence\",\"" + list_key + "\":[";
    nested += leaf;
    for (int k = 0; k < depth; ++k) nested += "]}";
    return text.replace(at, null_field.size(), "\"" + field + "\":" + nested);
}

}  // namespace

TEST_CASE("tokenizer: a Sequence nested 20000 deep is refused naming the field, not a stack overflow") {
    struct Kind {
        const char * field;
        const char * list_key;
        const char * leaf;
    };
    for (const Kind & k : {Kind{"normalizer", "normalizers", "{\"type\":\"Lowercase\"}"},
                           Kind{"pre_tokenizer", "pretokenizers", "{\"type\":\"Digits\"}"},
                           Kind{"decoder", "decoders", "{\"type\":\"Fuse\"}"},
                           Kind{"post_processor", "processors", "{\"type\":\"ByteLevel\"}"}}) {
        CAPTURE(k.field);
        const std::string msg = load_error(nested_sequence(k.field, k.list_key, k.leaf, 20000));
        CHECK(msg.find("bad/tokenizer.json") != std::string::npos);
        CHECK(msg.find(std::string("field `") + k.field + "." + k.list_key + "[0]") != std::string::npos);
        CHECK(msg.find("nested more than 64 levels") != std::string::npos);
        // Nesting up to the limit still loads (64 Sequences around the leaf: depths 0..64).
        CHECK_NOTHROW(Tokenizer::from_json_text(nested_sequence(k.field, k.list_key, k.leaf, 64), "ok.json"));
        CHECK_THROWS_AS(Tokenizer::from_json_text(nested_sequence(k.field, k.list_key, k.leaf, 65), "bad.json"), common::Error);
    }
}

namespace {

// The error from_file(path) throws. If it has not returned after 20 s it is blocked in open() on a
// FIFO: the FIFO's write end is opened and closed until it is released, and the check fails.
common::Error from_file_error(const std::string & path, const std::string & fifo) {
    auto done = std::async(std::launch::async, [path] {
        try {
            Tokenizer::from_file(path);
        } catch (const common::Error & e) {
            return e;
        }
        return common::Error::internal("no error");
    });
    if (done.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
        FAIL_CHECK("Tokenizer::from_file blocked on the FIFO " << fifo);
        // Each open of the read end (the old code opened it twice) waits for a writer.
        while (done.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
            const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
            if (fd >= 0) ::close(fd);
        }
    }
    return done.get();
}

}  // namespace

TEST_CASE("tokenizer: a FIFO as tokenizer.json or tokenizer_config.json is refused by name, never read") {
    tests::TempDir dir;
    const std::string fifo = dir / "fifo/tokenizer.json";
    std::filesystem::create_directories(dir / "fifo");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    common::Error e = from_file_error(fifo, fifo);
    CHECK(e.kind() == common::ErrorKind::Usage);
    CHECK(e.message().find(fifo) != std::string::npos);
    CHECK(e.message().find("not a regular file") != std::string::npos);

    // A good tokenizer.json beside a FIFO named tokenizer_config.json: the probe opened it and blocked.
    std::filesystem::create_directories(dir / "cfg");
    tests::write_file(dir / "cfg/tokenizer.json", byte_level_fixture(true).dump());
    const std::string cfg_fifo = dir / "cfg/tokenizer_config.json";
    REQUIRE(::mkfifo(cfg_fifo.c_str(), 0600) == 0);
    e = from_file_error(dir / "cfg/tokenizer.json", cfg_fifo);
    CHECK(e.kind() == common::ErrorKind::Usage);
    CHECK(e.message().find(cfg_fifo) != std::string::npos);

    // A directory under the config's name is refused too; no config at all is fine.
    std::filesystem::remove(cfg_fifo);
    std::filesystem::create_directories(cfg_fifo);
    CHECK_THROWS_AS(Tokenizer::from_file(dir / "cfg/tokenizer.json"), common::Error);
    std::filesystem::remove(cfg_fifo);
    CHECK_NOTHROW(Tokenizer::from_file(dir / "cfg/tokenizer.json"));
}

TEST_CASE("tokenizer: a tokenizer.json or tokenizer_config.json over the size bound is refused naming the file and the limit") {
    tests::TempDir dir;
    const std::string big = dir / "tokenizer.json";
    tests::write_file(big, "{}");
    std::filesystem::resize_file(big, Tokenizer::kMaxFileBytes + 1);  // sparse: no disk used
    common::Error e = from_file_error(big, big);
    CHECK(e.kind() == common::ErrorKind::Usage);
    CHECK(e.message().find(big) != std::string::npos);
    CHECK(e.message().find(std::to_string(Tokenizer::kMaxFileBytes)) != std::string::npos);

    tests::write_file(big, byte_level_fixture(true).dump());
    const std::string cfg = dir / "tokenizer_config.json";
    tests::write_file(cfg, "{}");
    std::filesystem::resize_file(cfg, Tokenizer::kMaxConfigFileBytes + 1);
    e = from_file_error(big, cfg);
    CHECK(e.kind() == common::ErrorKind::Usage);
    CHECK(e.message().find(cfg) != std::string::npos);
}

TEST_CASE("tokenizer: a huge or sparse vocab id and out-of-range post-processor ids are refused naming the field") {
    // "z": 2147483647 overflowed int32 (max id + 1) and asked for a 2^31-entry id table (bad_alloc);
    // 300000000 sized it at 300M entries for a 19-entry file.
    for (const int64_t id : {int64_t{2147483647}, int64_t{300000000}, int64_t{4194304}, int64_t{65536 + 2 * 19}, int64_t{1} << 40}) {
        CAPTURE(id);
        json j = byte_level_fixture(true);
        j["model"]["vocab"]["z"] = id;  // 19 entries
        const std::string msg = load_error(j.dump());
        CHECK(msg.find("model.vocab[\"z\"]") != std::string::npos);
        CHECK(msg.find("too large") != std::string::npos);
    }
    {  // Just below the bound of a 19-entry vocabulary still loads.
        json j = byte_level_fixture(true);
        j["model"]["vocab"]["z"] = 65536 + 2 * 19 - 1;
        const Tokenizer t = load(j);
        CHECK(t.token_id("z") == 65536 + 2 * 19 - 1);
        CHECK(t.vocab_size() == 65536 + 2 * 19);
    }
    auto template_with = [](const json & id) {
        json j = byte_level_fixture(true);
        j["post_processor"] = {
            {"type", "TemplateProcessing"},
            {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
            {"pair", json::array()},
            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", json::array({id})}, {"tokens", {"<s>"}}}}}}};
        return j;
    };
    // -7 was kept as an id; 4294967297 became 1 (get<int32_t> truncates); 1e30 is not an integer.
    for (const json & id : {json(-7), json(uint64_t{4294967297}), json(1e30), json(int64_t{1} << 22)}) {
        CAPTURE(id.dump());
        const std::string msg = load_error(template_with(id).dump());
        CHECK(msg.find("post_processor.special_tokens.<s>.ids[0]") != std::string::npos);
    }
    CHECK(load(template_with(json(5))).encode("ab") == Ids{5, 3});
    json j = byte_level_fixture(true);
    j["post_processor"] = {{"type", "RobertaProcessing"}, {"cls", {"<s>", -3}}, {"sep", {"</s>", 5}}};
    CHECK(load_error(j.dump()).find("post_processor.cls[1]") != std::string::npos);
    j["post_processor"] = {{"type", "RobertaProcessing"}, {"cls", {"<s>", 4}}, {"sep", {"</s>", uint64_t{1} << 33}}};
    CHECK(load_error(j.dump()).find("post_processor.sep[1]") != std::string::npos);
    j["post_processor"] = {{"type", "RobertaProcessing"}, {"cls", {"<s>", 4}}, {"sep", {"</s>", 5}}};
    CHECK(load(j).encode("ab") == Ids{4, 3, 5});
}
