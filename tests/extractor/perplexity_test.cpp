// `extract run --perplexity` on CPU (perplexity.h): the per-token NLL the run hands its sinks, and
// the per-sequence / overall / by-position sums in the run JSON, against a brute-force reference
// written here (the forward's last residual, a naive RMSNorm, the full [N,V] logits, log_softmax,
// gather, in fp64; within 1e-5 of the largest loss) on fp32 fixtures of a dense and a MoE family, tied and untied, with logits chunks that do
// not divide the token count; the refusal of a --layers list that stops early; fixtures carry the
// final norm and lm_head (none when tied).
#include <ATen/ATen.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"
#include "extractor/model.h"
#include "extractor/perplexity.h"
#include "tests/extractor/test_util.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {

struct NllSink : CaptureSink {
    std::vector<at::Tensor> nll;  // one [B,T-1] per batch, copied to the CPU
    bool wants(Site, int) const override { return false; }
    void begin_batch(const BatchInfo &) override {}
    void on_capture(Site, int, const at::Tensor &) override {}
    void end_batch() override {}
    void on_token_nll(const at::Tensor & x) override { nll.push_back(x.to(at::kCPU).clone()); }
};

FixtureOptions fixture(const std::string & family, const std::string & dir, bool tied) {
    FixtureOptions f;
    f.family = family;
    f.out_dir = dir;
    f.layers = 3;
    f.hidden = 64;
    f.experts = 4;
    f.top_k = 2;
    f.intermediate = family == "olmoe" ? 32 : 96;
    f.vocab = 120;
    f.tie_embeddings = tied;
    f.seed = 11;
    f.plants = {parse_plant("5@0-2")};
    return f;
}

// Brute force: the whole batch's logits at once, in fp64 from the forward's fp32 residual.
at::Tensor reference_nll(const std::string & dir, const at::Tensor & ids, bool tied) {
    LoadOptions lo;
    lo.dtype = at::kFloat;
    lo.device = "cpu";
    lo.show_progress = false;
    Model m = load_model(dir, lo);
    Tap silent;
    at::Tensor h = m.family->forward(m.cfg, m.weights, ids, static_cast<int>(m.cfg.n_layers), silent).to(at::kDouble);  // [B,T,H]
    SafetensorsFile f = SafetensorsFile::open(dir + "/model.safetensors");
    at::Tensor gain = f.load("model.norm.weight").to(at::kDouble);                                  // [H]
    at::Tensor W = f.load(tied ? "model.embed_tokens.weight" : "lm_head.weight").to(at::kDouble);   // [V,H]
    at::Tensor rms = (h * h).mean(-1, /*keepdim=*/true).add(m.cfg.rms_eps).rsqrt();
    at::Tensor x = h * rms * gain;                                                                 // [B,T,H]
    const int64_t T = ids.size(1);
    at::Tensor logits = at::matmul(x.narrow(1, 0, T - 1), W.t());                                  // [B,T-1,V]
    at::Tensor logp = at::log_softmax(logits, -1);
    return -logp.gather(2, ids.narrow(1, 1, T - 1).unsqueeze(2)).squeeze(2);                       // [B,T-1]
}

}  // namespace

TEST_CASE("perplexity: token NLL and its sums equal a brute-force full-logits reference, dense and MoE, tied and untied, any chunk") {
    tests::TempDir dir;
    tests::write_ids(dir / "ids.json", 200, 120);
    for (const std::string family : {"llama", "olmoe"}) {
        for (const bool tied : {false, true}) {
            CAPTURE(family);
            CAPTURE(tied);
            const std::string model = dir / (family + (tied ? "-tied" : "-untied"));
            write_fixture(fixture(family, model, tied));
            {
                SafetensorsFile f = SafetensorsFile::open(model + "/model.safetensors");
                CHECK(f.contains("model.norm.weight"));
                CHECK(f.contains("lm_head.weight") == !tied);
            }
            // 5 sequences of 10 tokens in batches of 2: 9 losses a row, 18 a full batch.
            ExtractOptions e;
            e.model_dir = model;
            e.input.tokens_file = dir / "ids.json";
            e.input.seq_len = 10;
            e.input.batch_size = 2;
            e.input.num_sequences = 5;
            e.load.dtype = at::kFloat;
            e.load.device = "cpu";
            e.load.show_progress = false;
            e.perplexity = true;
            // The ids the run used, to feed the reference: rows in order, batches concatenated.
            std::vector<int64_t> flat;
            for (int i = 0; i < 50; ++i) flat.push_back((i * 7 + 3) % 120);
            at::Tensor ids = at::tensor(flat, at::kLong).reshape({5, 10});
            at::Tensor ref = reference_nll(model, ids, tied);  // [5,9] fp64
            for (const int64_t chunk : {int64_t{0}, int64_t{1}, int64_t{4}, int64_t{7}, int64_t{1000}}) {
                CAPTURE(chunk);
                e.perplexity_chunk_tokens = chunk;
                NllSink sink;
                ExtractResult r = run_extraction(e, {&sink});
                REQUIRE(sink.nll.size() == 3);
                at::Tensor got = at::cat(sink.nll, 0);
                REQUIRE((got.sizes() == at::IntArrayRef{5, 9}));
                CHECK((got.scalar_type() == at::kFloat));
                // Relative to the largest loss: the tied fixtures' embedding (N(0,1)) gives logits of
                // ~10 and losses of ~30, where fp32 rounding alone is 1e-5 absolute.
                const double scale = ref.abs().max().item<double>();
                CHECK((got.to(at::kDouble) - ref).abs().max().item<double>() <= 1e-5 * scale);
                const auto & p = r.metadata.at("perplexity");
                double total = 0;
                for (int64_t s = 0; s < 5; ++s) {
                    const auto & q = p["per_sequence"][static_cast<size_t>(s)];
                    const double want = ref[s].sum().item<double>();
                    total += want;
                    CHECK(q["sequence"] == s);
                    CHECK(q["tokens"] == 9);
                    CHECK(std::abs(q["nll_sum"].get<double>() - want) <= 1e-5 * scale * 9);
                    CHECK(std::abs(q["mean_nll"].get<double>() - want / 9) <= 1e-5 * scale);
                }
                CHECK(p["overall"]["tokens"] == 45);
                CHECK(p["overall"]["sequences"] == 5);
                CHECK(std::abs(p["overall"]["mean_nll"].get<double>() - total / 45) <= 1e-5 * scale);
                CHECK(p["overall"]["perplexity"].get<double>() == doctest::Approx(std::exp(p["overall"]["mean_nll"].get<double>())).epsilon(1e-12));
                // Buckets of the predicted token's position: 1, 2-3, 4-7, 8-9 (T = 10).
                const auto & b = p["by_position"];
                REQUIRE(b.size() == 4);
                const int64_t firsts[] = {1, 2, 4, 8}, lasts[] = {1, 3, 7, 9};
                for (size_t k = 0; k < 4; ++k) {
                    CHECK(b[k]["first"] == firsts[k]);
                    CHECK(b[k]["last"] == lasts[k]);
                    const int64_t n = lasts[k] - firsts[k] + 1;
                    CHECK(b[k]["tokens"] == 5 * n);
                    const double want = ref.narrow(1, firsts[k] - 1, n).sum().item<double>();
                    CHECK(std::abs(b[k]["nll_sum"].get<double>() - want) <= 1e-5 * scale * static_cast<double>(5 * n));
                }
            }
        }
    }
}

TEST_CASE("perplexity: refused with a --layers list that stops before the last layer, accepted when it ends there") {
    tests::TempDir dir;
    tests::write_ids(dir / "ids.json", 40, 120);
    write_fixture(fixture("llama", dir / "m", false));
    ExtractOptions e;
    e.model_dir = dir / "m";
    e.input.tokens_file = dir / "ids.json";
    e.input.seq_len = 8;
    e.input.num_sequences = 2;
    e.load.dtype = at::kFloat;
    e.load.device = "cpu";
    e.load.show_progress = false;
    e.perplexity = true;
    e.layers = {0, 1};
    try {
        run_extraction(e);
        FAIL("no error");
    } catch (const common::Error & err) {
        CHECK(err.kind() == common::ErrorKind::Usage);
        CHECK(std::string(err.what()).find("--perplexity needs every layer") != std::string::npos);
    }
    e.layers = {0, 2};
    ExtractResult r = run_extraction(e);
    CHECK(r.metadata["perplexity"]["overall"]["tokens"] == 14);
    e.perplexity_chunk_tokens = -1;
    CHECK_THROWS_AS(run_extraction(e), common::Error);
}

TEST_CASE("perplexity: an untied checkpoint without lm_head.weight is refused naming the tensor") {
    tests::TempDir dir;
    tests::write_ids(dir / "ids.json", 40, 120);
    FixtureOptions f = fixture("llama", dir / "m", true);
    write_fixture(f);
    // Say untied in config.json while the file has no lm_head.weight.
    auto cfg = nlohmann::json::parse(tests::read_file(dir / "m/config.json"));
    cfg["tie_word_embeddings"] = false;
    tests::write_file(dir / "m/config.json", cfg.dump());
    ExtractOptions e;
    e.model_dir = dir / "m";
    e.input.tokens_file = dir / "ids.json";
    e.input.seq_len = 8;
    e.input.num_sequences = 1;
    e.load.dtype = at::kFloat;
    e.load.device = "cpu";
    e.load.show_progress = false;
    e.perplexity = true;
    try {
        run_extraction(e);
        FAIL("no error");
    } catch (const common::Error & err) {
        CHECK(err.kind() == common::ErrorKind::Usage);
        CHECK(std::string(err.what()).find("lm_head.weight") != std::string::npos);
    }
    // Without --perplexity the same checkpoint runs (the head is never needed then).
    e.perplexity = false;
    CHECK_NOTHROW(run_extraction(e));
}

TEST_CASE("perplexity: position buckets") {
    CHECK(nll_position_bucket(1) == 0);
    CHECK(nll_position_bucket(2) == 1);
    CHECK(nll_position_bucket(3) == 1);
    CHECK(nll_position_bucket(4) == 2);
    CHECK(nll_position_bucket(2047) == 10);
    CHECK(nll_position_bucket(2048) == 11);
    CHECK((nll_bucket_range(3) == std::pair<int64_t, int64_t>{8, 15}));
}

TEST_CASE("perplexity: the memory estimate counts the final norm and an untied lm_head beside the last layer") {
    tests::TempDir dir;
    for (bool tied : {false, true}) {
        CAPTURE(tied);
        const std::string d = dir / (tied ? "tied" : "untied");
        write_fixture(fixture("llama", d, tied));
        LoadOptions lo;
        lo.dtype = at::kFloat;
        lo.device = "cpu";
        lo.show_progress = false;
        const Model bare = load_model(d, lo);
        lo.lm_head = true;
        const Model head = load_model(d, lo);
        const uint64_t want = (tied ? 0 : uint64_t{120} * 64 * 4) + 64 * 4;  // V x H fp32, the norm's gain
        CHECK(head.estimate.head_bytes == want);
        CHECK(head.estimate.total_bytes == bare.estimate.total_bytes + want);
        CHECK(head.estimate.layer_bytes.back() == bare.estimate.layer_bytes.back() + want);
        CHECK(head.estimate.layer_bytes.front() == bare.estimate.layer_bytes.front());
        CHECK(head.estimate.activation_bytes > bare.estimate.activation_bytes);  // a logits chunk
    }
}

TEST_CASE("HostTransfer copies a CPU tensor at once, and PerplexitySink folds each batch in at the next one or at summary()") {
    at::Tensor src = at::arange(6, at::kDouble).reshape({2, 3});
    HostTransfer t(src);
    src.fill_(-1);  // the copy was taken when the transfer began
    REQUIRE(t.defined());
    CHECK(t.wait().equal(at::arange(6, at::kDouble).reshape({2, 3})));
    CHECK_FALSE(HostTransfer().defined());
    CHECK(to_device_async(at::ones({3}), at::Device(at::kCPU)).equal(at::ones({3})));

    // Two batches of losses: the first becomes records when the second arrives, the second at
    // summary(); the summary equals the one made from both batches directly.
    PerplexitySink sink;
    const at::Tensor a = at::full({2, 3}, 0.5, at::kFloat), b = at::full({1, 3}, 2.0, at::kFloat);
    BatchInfo first;
    first.sequence_indices = {0, 1};
    sink.begin_batch(first);
    sink.on_token_nll(a);
    sink.end_batch();
    BatchInfo second;
    second.sequence_indices = {2};
    sink.begin_batch(second);
    sink.on_token_nll(b);
    sink.end_batch();
    std::vector<SequenceNll> direct = sequence_nll(a, {0, 1});
    for (auto & r : sequence_nll(b, {2})) direct.push_back(r);
    CHECK(sink.summary() == perplexity_summary(direct));
    CHECK(sink.summary() == perplexity_summary(direct));  // asking twice changes nothing
    // Losses whose rows do not match the batch are refused when they arrive.
    BatchInfo third;
    third.sequence_indices = {3, 4};
    sink.begin_batch(third);
    CHECK_THROWS_AS(sink.on_token_nll(at::zeros({3, 3})), common::Error);
    CHECK_THROWS_AS(sink.on_token_nll(at::zeros({2})), common::Error);
}
