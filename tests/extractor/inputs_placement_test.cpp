// Input windows and sampling, flag parsers, and placement plans (planned for fake GPU counts, so
// they run on CPU).
#include <ATen/ATen.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <thread>
#include <vector>

#include "common/error.h"
#include "extractor/extract.h"
#include "extractor/fixture_writer.h"
#include "extractor/inputs.h"
#include "extractor/placement.h"
#include "extractor/tokenizer/tokenizer.h"
#include "tests/extractor/test_util.h"
#include "tests/support/temp_dir.h"
#include "tests/support/error_of.h"

#include <nlohmann/json.hpp>

#include <doctest/doctest.h>

using namespace extractor;

namespace {
using tests::error_of;
constexpr uint64_t GiB = uint64_t(1) << 30;

// The placement tests' model: a 1 GiB embedding, n layers of 2 GiB, 1 GiB of activations.
MemoryEstimate layers_of_2GiB(size_t n) {
    MemoryEstimate e;
    e.embed_bytes = 1 * GiB;
    e.layer_bytes.assign(n, 2 * GiB);
    e.total_bytes = (1 + 2 * n) * GiB;
    e.activation_bytes = 1 * GiB;
    return e;
}
}  // namespace

TEST_CASE("inputs: windows with overlap, seeded sampling, and the three token-file formats") {
    std::vector<int64_t> s(10);
    for (int i = 0; i < 10; ++i) s[static_cast<size_t>(i)] = i;
    auto w = make_windows(s, 4, 1);  // starts 0, 3, 6
    REQUIRE(w.size() == 3);
    CHECK(w[1] == std::vector<int64_t>{3, 4, 5, 6});
    CHECK(seeded_permutation(50, 7) == seeded_permutation(50, 7));
    CHECK(seeded_permutation(50, 7) != seeded_permutation(50, 8));

    tests::TempDir dir;
    tests::write_file(dir / "flat.json", "[1,2,3,4,5,6,7,8,9]");
    tests::write_file(dir / "rows.json", "[[1,2,3,4],[5,6,7,8,9]]");
    tests::write_file(dir / "ids.txt", "1 2 3\n4,5,6 7 8 9\n");
    InputOptions o;
    o.seq_len = 4;
    o.tokens_file = dir / "flat.json";
    CHECK(prepare_inputs(o, dir.path(), 100).sequences.size() == 2);
    o.tokens_file = dir / "ids.txt";
    CHECK(prepare_inputs(o, dir.path(), 100).sequences[1] == std::vector<int64_t>{5, 6, 7, 8});
    o.tokens_file = dir / "rows.json";
    CHECK(prepare_inputs(o, dir.path(), 100).sequences[1] == std::vector<int64_t>{5, 6, 7, 8});
    o.tokens_file = dir / "flat.json";
    o.shuffle = true;
    o.seed = 3;
    o.num_sequences = 1;
    InputSet a = prepare_inputs(o, dir.path(), 100), b = prepare_inputs(o, dir.path(), 100);
    CHECK(a.sequences == b.sequences);
    CHECK(a.window_index == b.window_index);
}

TEST_CASE("inputs: ids outside the vocabulary, too few tokens and bad numbers are errors naming the file") {
    tests::TempDir dir;
    tests::write_file(dir / "ids.txt", "1 2 300 4");
    InputOptions o;
    o.seq_len = 4;
    o.tokens_file = dir / "ids.txt";
    CHECK(error_of([&] { prepare_inputs(o, dir.path(), 100); }).find("token id 300 (sequence 0, position 2) is outside") != std::string::npos);
    o.seq_len = 8;
    CHECK(error_of([&] { prepare_inputs(o, dir.path(), 1000); }).find("fewer than one window") != std::string::npos);
    tests::write_file(dir / "bad.txt", "1 2 x3");
    o.tokens_file = dir / "bad.txt";
    CHECK(error_of([&] { prepare_inputs(o, dir.path(), 1000); }).find("\"x3\" is not a token id") != std::string::npos);
    o.tokens_file.clear();
    CHECK(error_of([&] { prepare_inputs(o, dir.path(), 1000); }).find("give exactly one input") != std::string::npos);
}

TEST_CASE("flags: --max-memory, --layers and --plant parse, and reject malformed values") {
    MemoryBudget b = parse_max_memory("0=76GiB,cuda:1=76GiB,cpu=120GiB");
    REQUIRE(b.gpus.size() == 2);
    CHECK(b.gpus[1].first == 1);
    CHECK(b.gpus[0].second == 76 * GiB);
    CHECK(b.cpu_bytes == 120 * GiB);
    CHECK(error_of([] { parse_max_memory("0:76GiB"); }).find("not DEVICE=SIZE") != std::string::npos);
    CHECK(error_of([] { parse_max_memory("gpu=1GiB"); }).find("not a GPU index") != std::string::npos);
    CHECK(parse_layer_list("0-2,7,2") == std::vector<int>{0, 1, 2, 7});
    CHECK(error_of([] { parse_layer_list("3-1"); }).find("\"3-1\"") != std::string::npos);
    PlantSpec p = parse_plant("7,42@0-3x30");
    CHECK(p.dims == std::vector<int64_t>{7, 42});
    CHECK(p.layer_last == 3);
    CHECK(p.gain == 30.0);
    CHECK(error_of([] { parse_plant("7,42"); }).find("no @") != std::string::npos);
}

TEST_CASE("placement: sequential fills GPUs in order, balanced spreads, overflow goes to pinned CPU or is refused") {
    const MemoryEstimate e = layers_of_2GiB(8);  // 17 GiB of weights
    Placement seq = plan_placement(e, "cuda", parse_max_memory("0=12GiB,1=12GiB"), PlacementStrategy::Sequential, 2);
    // GPU 0: 12 - 1 (activations) - 1 (embedding) = 10 GiB -> 5 layers; GPU 1 the other 3.
    CHECK(seq.home[4] == c10::Device("cuda:0"));
    CHECK(seq.home[5] == c10::Device("cuda:1"));
    Placement bal = plan_placement(e, "cuda", parse_max_memory("0=12GiB,1=12GiB"), PlacementStrategy::Balanced, 2);
    int on0 = 0;
    for (const auto & d : bal.home) on0 += d == c10::Device("cuda:0");
    CHECK(on0 == 4);
    Placement off = plan_placement(e, "cuda", parse_max_memory("0=12GiB,cpu=64GiB"), PlacementStrategy::Sequential, 1);
    CHECK(off.home[7].is_cpu());
    CHECK(off.compute[7] == c10::Device("cuda:0"));
    CHECK(off.describe().back().find("pinned, streamed to cuda:0") != std::string::npos);
    std::string refused = error_of([&] { plan_placement(e, "cuda", parse_max_memory("0=12GiB"), PlacementStrategy::Sequential, 1); });
    CHECK(refused.find("would have to be offloaded") != std::string::npos);
    CHECK(error_of([&] { plan_placement(e, "cuda", parse_max_memory("0=12GiB,cpu=2GiB"), PlacementStrategy::Sequential, 1); })
              .find("pinned CPU memory") != std::string::npos);
    CHECK(error_of([&] { plan_placement(e, "cuda", {}, PlacementStrategy::Sequential, 0); }).find("no CUDA device") != std::string::npos);
    Placement cpu = plan_placement(e, "auto", {}, PlacementStrategy::Sequential, 0);
    CHECK(cpu.embed_device.is_cpu());
}

TEST_CASE("placement: --device auto without per-GPU budgets takes every visible GPU at its free memory") {
    const MemoryEstimate e = layers_of_2GiB(8);  // 17 GiB of weights
    const auto twelve_free = [](int) { return uint64_t(12) * GiB; };
    // Two 12 GiB GPUs: GPU 0 holds 5 layers (12 - 1 activations - 1 embedding), GPU 1 the other 3.
    // A multi-GPU machine rented for a model one GPU cannot hold (deploy runs --device auto).
    Placement both = plan_placement(e, "auto", {}, PlacementStrategy::Sequential, 2, 1, twelve_free);
    CHECK(both.home[4] == c10::Device("cuda:0"));
    CHECK(both.home[5] == c10::Device("cuda:1"));
    CHECK(both.home[7] == c10::Device("cuda:1"));
    // A model that fits GPU 0 stays there.
    const MemoryEstimate small = layers_of_2GiB(3);
    Placement one = plan_placement(small, "auto", {}, PlacementStrategy::Sequential, 2, 1, twelve_free);
    for (const auto & d : one.home) CHECK(d == c10::Device("cuda:0"));
    // `cuda` is GPU 0 alone: the same model is refused, and the message names the way out.
    std::string refused = error_of([&] { plan_placement(e, "cuda", {}, PlacementStrategy::Sequential, 2, 1, twelve_free); });
    CHECK(refused.find("--device auto") != std::string::npos);
    // `cuda:1` is GPU 1 alone.
    Placement g1 = plan_placement(small, "cuda:1", {}, PlacementStrategy::Sequential, 2, 1, twelve_free);
    CHECK(g1.embed_device == c10::Device("cuda:1"));
    // Every GPU plus offload: cpu= alone keeps the GPUs at their free memory and streams the rest
    // to the last GPU (deploy's resources.offload_gb passes exactly this).
    const MemoryEstimate big = layers_of_2GiB(14);  // 29 GiB: 5 + 5 layers fit (GPU 1 keeps room for the ring)
    Placement off = plan_placement(big, "auto", parse_max_memory("cpu=64GiB"), PlacementStrategy::Sequential, 2, 2, twelve_free);
    int on0 = 0, on1 = 0, streamed = 0;
    for (size_t l = 0; l < off.home.size(); ++l) {
        on0 += off.home[l] == c10::Device("cuda:0");
        on1 += off.home[l] == c10::Device("cuda:1");
        if (off.home[l].is_cpu()) {
            ++streamed;
            CHECK(off.compute[l] == c10::Device("cuda:1"));
        }
    }
    CHECK(on0 == 5);
    CHECK(on0 + on1 + streamed == 14);
    CHECK(streamed >= 4);
    // Without cpu= the same model is refused on two GPUs.
    CHECK(error_of([&] { plan_placement(big, "auto", {}, PlacementStrategy::Sequential, 2, 2, twelve_free); })
              .find("would have to be offloaded") != std::string::npos);
}

TEST_CASE("placement: streamed layers are spread through the GPU's layers unless the bytes no longer fit") {
    const MemoryEstimate e = layers_of_2GiB(8);  // 17 GiB of weights
    auto streamed = [](const Placement & p) {
        std::vector<int> out;
        for (size_t l = 0; l < p.home.size(); ++l)
            if (p.home[l].is_cpu()) out.push_back(static_cast<int>(l));
        return out;
    };
    // 10 GiB for layers and one 2 GiB ring buffer: 4 resident, 4 streamed, every other one.
    Placement even = plan_placement(e, "cuda", parse_max_memory("0=12GiB,cpu=64GiB"), PlacementStrategy::Sequential, 1);
    CHECK(streamed(even) == std::vector<int>{1, 3, 5, 7});
    CHECK(even.describe() == std::vector<std::string>{"embedding on cuda:0", "layers 0,2,4,6 on cuda:0",
                                                      "layers 1,3,5,7 on cpu (pinned, streamed to cuda:0 when they run)"});
    for (size_t l = 0; l < 8; ++l) CHECK(even.compute[l] == c10::Device("cuda:0"));
    Placement two = plan_placement(e, "cuda", parse_max_memory("0=12GiB,cpu=64GiB"), PlacementStrategy::Sequential, 1, 2);
    // Two ring buffers (--offload-prefetch 1): 3 resident, 5 streamed; layer 0 stays resident.
    CHECK(streamed(two) == std::vector<int>{1, 2, 3, 5, 7});
    // Alternating 2 and 0.5 GiB layers: spreading would stream only the small ones and keep 8 GiB
    // resident where 7.5 GiB is all there is, so the tail plan stays.
    MemoryEstimate odd = e;
    for (size_t l = 0; l < 8; ++l) odd.layer_bytes[l] = l % 2 == 0 ? 2 * GiB : GiB / 2;
    odd.total_bytes = 11 * GiB;
    Placement tail = plan_placement(odd, "cuda", parse_max_memory("0=9.5GiB,cpu=64GiB"), PlacementStrategy::Sequential, 1);
    CHECK(streamed(tail) == std::vector<int>{4, 5, 6, 7});
    // EXTRACTOR_OFFLOAD_SPREAD=0 keeps the streamed layers at the end.
    setenv("EXTRACTOR_OFFLOAD_SPREAD", "0", 1);
    Placement kept = plan_placement(e, "cuda", parse_max_memory("0=12GiB,cpu=64GiB"), PlacementStrategy::Sequential, 1);
    unsetenv("EXTRACTOR_OFFLOAD_SPREAD");
    CHECK(streamed(kept) == std::vector<int>{4, 5, 6, 7});
}

TEST_CASE("inputs: text and JSONL are tokenized once with the checkpoint's tokenizer.json, documents concatenated") {
    tests::TempDir dir;
    nlohmann::json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}, {"\xC4\xA0", 5}, {"\xC4\xA0" "a", 6}};
    nlohmann::json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    nlohmann::json tok = {{"version", "1.0"}, {"added_tokens", nlohmann::json::array()}, {"normalizer", nullptr},
                          {"pre_tokenizer", bl}, {"post_processor", bl}, {"decoder", bl},
                          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                                     {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                                     {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                                     {"vocab", vocab}, {"merges", {"a b", "ab c", "\xC4\xA0 a"}}}}};
    tests::write_file(dir / "tokenizer.json", tok.dump());
    tests::write_file(dir / "doc.txt", "abc ab abc ab abc");
    tests::write_file(dir / "docs.jsonl", "{\"text\": \"abc ab\"}\n\n{\"text\": \" abc ab abc\", \"id\": 2}\n");
    Tokenizer t = Tokenizer::from_file(dir / "tokenizer.json");
    InputOptions o;
    o.seq_len = 3;
    o.text_file = dir / "doc.txt";
    InputSet a = prepare_inputs(o, dir.path(), 7);
    auto ids = t.encode("abc ab abc ab abc");
    REQUIRE(a.stream_tokens == static_cast<int64_t>(ids.size()));
    CHECK(a.sequences[0] == std::vector<int64_t>(ids.begin(), ids.begin() + 3));
    CHECK(a.tokenizer_sha256.size() == 64);
    o.text_file.clear();
    o.jsonl_file = dir / "docs.jsonl";
    InputSet b = prepare_inputs(o, dir.path(), 7);
    auto i1 = t.encode("abc ab"), i2 = t.encode(" abc ab abc");
    CHECK(b.stream_tokens == static_cast<int64_t>(i1.size() + i2.size()));
    o.text_field = "body";
    CHECK(error_of([&] { prepare_inputs(o, dir.path(), 7); }).find("docs.jsonl:1: no string field \"body\"") != std::string::npos);
}

TEST_CASE("inputs: a tokenizer.json or input that is a FIFO or directory is refused by name (the input may be a pipe)") {
    tests::TempDir dir;
    tests::write_file(dir / "doc.txt", "hello world");
    extractor::InputOptions o;
    o.text_file = dir / "doc.txt";
    o.seq_len = 2;
    auto error_of = [&] {
        try {
            (void)extractor::prepare_inputs(o, dir.path(), 100);
        } catch (const common::Error & e) {
            return e.message();
        }
        return std::string("<no error>");
    };
    // Before: the tokenizer's own read waited for a writer forever.
    const std::string fifo = dir / "tokenizer.json";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    std::string msg;
    CHECK(tests::finishes_without_blocking_on(fifo, [&] { msg = error_of(); }));
    CHECK(msg == fifo + ": is a FIFO (named pipe), not a regular file (expected a tokenizer.json)");
    o.tokenizer = dir.path();
    CHECK(error_of() == dir.path() + ": is a directory, not a regular file (expected a tokenizer.json)");
    // An input given as a pipe is read (here: the token-id path, written by a thread).
    extractor::InputOptions t;
    t.tokens_file = dir / "ids.pipe";
    t.seq_len = 4;
    REQUIRE(::mkfifo(t.tokens_file.c_str(), 0600) == 0);
    std::thread writer([&] {
        std::ofstream w(t.tokens_file);
        w << "1 2 3 4 5 6 7 8";
    });
    extractor::InputSet in = extractor::prepare_inputs(t, dir.path(), 100);
    writer.join();
    CHECK(in.sequences.size() == 2);
}
