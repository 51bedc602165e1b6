// `analyze RUN_DIR` on hostile run directories: every batch file and metadata.json field that the
// replay reads is checked before it can size an allocation, crash libtorch or be silently skipped,
// and every error names the file (and the field or tensor). Runs are built here with the
// extractor's own safetensors writer, in the layout extractor/sinks/safetensors_sink.cpp writes.
#include <ATen/ATen.h>

#include "analysis/accumulators.h"
#include "analysis/report.h"
#include "analysis/run_reader.h"
#include "common/error.h"
#include "common/subprocess.h"
#include "extractor/checkpoint/safetensors.h"
#include "tests/support/temp_dir.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <doctest/doctest.h>

namespace {

using json = nlohmann::json;
using Tensors = std::vector<std::pair<std::string, at::Tensor>>;

// A saved run of `batches` batches of B rows x T positions x H dims, layers 0..L-1, both layer-norm
// sites, token ids below 50 (vocab 64), sequences numbered 0, 1, ... in order. Tests edit the
// tensors or the metadata before write().
struct RunDir {
    tests::TempDir dir;
    json meta;
    std::vector<Tensors> batches;

    RunDir(int n_batches = 2, int64_t B = 2, int64_t T = 4, int64_t H = 8, int L = 2) {
        auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
        json files = json::array();
        for (int k = 0; k < n_batches; ++k) {
            Tensors t;
            t.emplace_back("token_ids", at::randint(0, 50, {B, T}, gen, at::TensorOptions().dtype(at::kLong)));
            t.emplace_back("sequence_indices", at::arange(k * B, (k + 1) * B, at::kLong));
            for (int l = 0; l < L; ++l)
                for (const char * site : {"ln_attn", "ln_mlp"})
                    t.emplace_back("layer_" + std::to_string(l) + "_" + site, at::randn({B, T, H}, gen, at::TensorOptions().dtype(at::kFloat)));
            batches.push_back(std::move(t));
            files.push_back(file_name(k));
        }
        json layers = json::array();
        for (int l = 0; l < L; ++l) layers.push_back(l);
        meta = {{"program", "extract"},
                {"model", {{"model_type", "llama"}, {"hidden_size", H}, {"num_hidden_layers", L}, {"vocab_size", 64}}},
                {"tokenizer", {{"path", ""}, {"sha256", ""}}},
                {"dtype", "f32"},
                {"saved_dtype", "F32"},
                {"layers_extracted", layers},
                {"sites", {"ln_attn", "ln_mlp"}},
                {"sequences", n_batches * B},
                {"tokens", n_batches * B * T},
                {"seq_len", T},
                {"batch_size", B},
                {"files", files}};
    }

    static std::string file_name(int k) {
        char name[64];
        std::snprintf(name, sizeof name, "activations/batch_%05d.safetensors", k);
        return name;
    }
    std::string path(int k) const { return dir / file_name(k); }
    std::string root() const { return dir.path(); }

    at::Tensor & tensor(int k, const std::string & name) {
        for (auto & [n, t] : batches[static_cast<size_t>(k)])
            if (n == name) return t;
        FAIL("no tensor " << name);
        throw;
    }
    void erase(int k, const std::string & name) {
        auto & b = batches[static_cast<size_t>(k)];
        b.erase(std::remove_if(b.begin(), b.end(), [&](const auto & p) { return p.first == name; }), b.end());
    }

    void write() const {
        std::filesystem::create_directories(dir / "activations");
        for (size_t k = 0; k < batches.size(); ++k) extractor::write_safetensors(path(static_cast<int>(k)), batches[k], {{"format", "pt"}});
        tests::write_file(dir / "metadata.json", meta.dump(2));
    }
};

// The error replay_run throws (Internal "no error" when it returns).
common::Error replay_error(const RunDir & run) {
    analysis::OutlierAccumulator acc;
    try {
        analysis::replay_run(run.root(), acc);
    } catch (const common::Error & e) {
        return e;
    }
    return common::Error::internal("no error");
}

common::ProcessResult analyze_run(const RunDir & run) {
    common::RunOptions o;
    o.timeout = std::chrono::milliseconds(120000);
    return common::run_process({ANALYZE_BIN, "run", run.root(), "-o", run.dir / "out"}, o);
}

// replay_run refuses the run with a usage error whose message holds every one of `needles`, and
// `analyze run` exits 2 saying the same (never "unexpected error", a crash or exit 0).
void check_refused(const RunDir & run, const std::vector<std::string> & needles) {
    const common::Error e = replay_error(run);
    CAPTURE(e.message());
    CHECK(e.kind() == common::ErrorKind::Usage);
    for (const auto & n : needles) CHECK_MESSAGE(e.message().find(n) != std::string::npos, "missing: " << n);
    const auto p = analyze_run(run);
    CAPTURE(p.err);
    CHECK(p.exit_code == 2);
    for (const auto & n : needles) CHECK_MESSAGE(p.err.find(n) != std::string::npos, "missing: " << n);
    CHECK(p.err.find("unexpected error") == std::string::npos);
}

}  // namespace

TEST_CASE("run reader: the unedited fixture run replays, so each refusal below is the edit's doing") {
    RunDir run;
    run.write();
    analysis::OutlierAccumulator acc;
    const json meta = analysis::replay_run(run.root(), acc);
    CHECK(meta["sequences"] == 4);
    CHECK(acc.statistics(meta).sequences == 4);
    const auto p = analyze_run(run);
    CAPTURE(p.err);
    CHECK(p.exit_code == 0);
}

TEST_CASE("run reader: metadata tokenizer.path that is not a string is refused naming metadata.json and the field") {
    RunDir run;
    run.meta["tokenizer"]["path"] = 5;
    run.write();
    check_refused(run, {run.dir / "metadata.json", "tokenizer.path"});
    // The reports' own reader refuses it too, as a usage error rather than a JSON type_error.
    try {
        analysis::load_token_text("", json{{"tokenizer", {{"path", 5}}}});
        FAIL("no error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find("tokenizer.path") != std::string::npos);
    }
}

TEST_CASE("run reader: token ids outside the run's vocabulary, or not integers, are refused naming the file") {
    // Each sized the token tallies by the largest id (16777216: 8.5 GB), overflowed (2^62) or
    // crashed libtorch's scatter (-5); a float id was silently truncated.
    for (const int64_t id : {int64_t{64}, int64_t{16777216}, int64_t{1} << 62, int64_t{-5}}) {
        CAPTURE(id);
        RunDir run;
        run.tensor(1, "token_ids")[1][2] = id;
        run.write();
        check_refused(run, {run.path(1), "token_ids", std::to_string(id), "model.vocab_size"});
    }
    {  // Without vocab_size (older runs) the bound is kMaxTokenVocab.
        RunDir run;
        run.meta["model"].erase("vocab_size");
        run.tensor(0, "token_ids")[0][0] = analysis::kMaxTokenVocab;
        run.write();
        check_refused(run, {run.path(0), "token_ids", std::to_string(analysis::kMaxTokenVocab)});
    }
    {
        RunDir run;
        run.tensor(0, "token_ids") = run.tensor(0, "token_ids").to(at::kFloat);
        run.write();
        check_refused(run, {run.path(0), "token_ids", "expected integers"});
    }
    for (const json & bad : {json("64"), json(0), json(int64_t{1} << 40), json(-1), json(64.0)}) {
        CAPTURE(bad.dump());
        RunDir run;
        run.meta["model"]["vocab_size"] = bad;
        run.write();
        check_refused(run, {run.dir / "metadata.json", "model.vocab_size"});
    }
}

TEST_CASE("accumulator: begin_batch refuses negative token ids, ids from kMaxTokenVocab up, float ids and mismatched rows") {
    const at::Tensor x = at::zeros({1, 2, 4});
    for (const int64_t id : {int64_t{-1}, analysis::kMaxTokenVocab, int64_t{1} << 62}) {
        analysis::OutlierAccumulator acc;
        extractor::BatchInfo info;
        info.sequence_indices = {0};
        info.token_ids = at::tensor({int64_t{3}, id}, at::kLong).view({1, 2});
        CHECK_THROWS_AS(acc.begin_batch(info), common::Error);
        // The refused batch left nothing open: a good one goes through.
        info.token_ids = at::tensor({int64_t{3}, analysis::kMaxTokenVocab - 1}, at::kLong).view({1, 2});
        if (id == int64_t{-1}) {
            info.token_ids = at::tensor({int64_t{3}, int64_t{4}}, at::kLong).view({1, 2});
            acc.begin_batch(info);
            acc.on_capture(extractor::Site::LnAttn, 0, x);
            acc.end_batch();
            CHECK(acc.statistics().sequences == 1);
        }
    }
    analysis::OutlierAccumulator acc;
    extractor::BatchInfo info;
    info.sequence_indices = {0};
    info.token_ids = at::zeros({1, 2}, at::kFloat);
    CHECK_THROWS_AS(acc.begin_batch(info), common::Error);
    info.sequence_indices = {0, 1};
    info.token_ids = at::zeros({1, 2}, at::kLong);
    CHECK_THROWS_AS(acc.begin_batch(info), common::Error);
}

TEST_CASE("run reader: a site of NaN is analysed with a loud warning and its count in outliers.json, not as a clean site") {
    RunDir run;
    run.tensor(0, "layer_1_ln_mlp").fill_(std::numeric_limits<float>::quiet_NaN());
    run.tensor(1, "layer_0_ln_attn")[0][0][3] = std::numeric_limits<float>::infinity();
    run.write();
    const auto p = analyze_run(run);
    CAPTURE(p.err);
    CHECK(p.exit_code == 0);
    CHECK(p.err.find("WARNING") != std::string::npos);
    CHECK(p.err.find("65 captured value(s) are NaN or inf, in 2 of 4 site(s)") != std::string::npos);
    const json r = json::parse(tests::read_file(run.dir / "out/outliers.json"));
    CHECK(r["run"]["nonfinite_values"] == 65);
    for (const auto & l : r["layers"])
        if (l["layer"] == 1 && l["site"] == "ln_mlp") {
            CHECK(l["nonfinite"] == 64);
            CHECK(l["max_abs"].is_null());  // NaN: was 0, as if the site were clean
        }
    CHECK(tests::read_file(run.dir / "out/report.md").find("**Non-finite values**: 65") != std::string::npos);
}

TEST_CASE("run reader: batch files are reconciled with metadata.json and each other") {
    {  // A deleted batch file listed in `files` was skipped without a word.
        RunDir run;
        run.write();
        std::filesystem::remove(run.path(1));
        const common::Error e = replay_error(run);
        CHECK(e.kind() == common::ErrorKind::NotFound);
        CHECK(e.message().find(run.path(1)) != std::string::npos);
        CHECK(e.message().find("listed in") != std::string::npos);
        const auto p = analyze_run(run);
        CHECK(p.exit_code == 9);
        CHECK(p.err.find(run.path(1)) != std::string::npos);
    }
    {  // A batch file that `files` does not list (another run's).
        RunDir run;
        run.meta["files"].erase(1);
        run.meta["sequences"] = 2;
        run.write();
        check_refused(run, {run.path(1), "does not list"});
    }
    {  // `sequences` disagrees with the rows the files hold.
        RunDir run;
        run.meta["sequences"] = 5;
        run.write();
        check_refused(run, {run.dir / "metadata.json", "`sequences` is 5", "hold 4"});
    }
    {  // The same sequence index twice (in two files) would count that sequence twice.
        RunDir run;
        run.tensor(1, "sequence_indices") = at::tensor({int64_t{1}, int64_t{3}}, at::kLong);
        run.write();
        check_refused(run, {run.path(1), "sequence_indices", "sequence 1 appears twice"});
    }
    {  // A sequence index beyond metadata's sequences, or negative.
        RunDir run;
        run.tensor(1, "sequence_indices") = at::tensor({int64_t{2}, int64_t{-3}}, at::kLong);
        run.write();
        check_refused(run, {run.path(1), "sequence_indices", "-3 is outside [0, 4)"});
    }
    {  // An integer capture was analysed as values: every dim an "outlier".
        RunDir run;
        run.tensor(0, "layer_1_ln_attn") = at::full({2, 4, 8}, 7, at::kInt);
        run.write();
        check_refused(run, {run.path(0), "layer_1_ln_attn", "floating point", "I32"});
    }
    {  // A layer that metadata does not list (2000000000 was accepted).
        RunDir run;
        run.batches[0].emplace_back("layer_2000000000_ln_attn", at::zeros({2, 4, 8}));
        run.write();
        check_refused(run, {run.path(0), "layer_2000000000_ln_attn", "layer number"});
        run.batches[0].pop_back();
        run.batches[0].emplace_back("layer_7_ln_attn", at::zeros({2, 4, 8}));
        run.write();
        check_refused(run, {run.path(0), "layer_7_ln_attn", "not in metadata.json layers_extracted"});
    }
    {  // The same (layer, site) twice: layer_01_ln_attn is layer 1's ln_attn again (extract never writes 01).
        RunDir run;
        run.batches[0].emplace_back("layer_01_ln_attn", at::zeros({2, 4, 8}));
        run.write();
        check_refused(run, {run.path(0), "layer_01_ln_attn"});
        run.meta.erase("layers_extracted");
        run.write();
        check_refused(run, {run.path(0), "layer_01_ln_attn"});
    }
    {  // A capture that metadata lists missing from one batch file.
        RunDir run;
        run.erase(1, "layer_0_ln_mlp");
        run.write();
        check_refused(run, {run.path(1), "layer_0_ln_mlp", "layers_extracted x sites"});
    }
    {  // A hidden size other than metadata's.
        RunDir run;
        run.tensor(1, "layer_0_ln_mlp") = at::zeros({2, 4, 6});
        run.write();
        check_refused(run, {run.path(1), "layer_0_ln_mlp", "[2,4,6]", "model.hidden_size"});
    }
    for (const auto & [field, value] : std::vector<std::pair<std::string, json>>{
             {"files", json{"../../etc/passwd.safetensors"}}, {"files", json{"activations/batch_00000.safetensors", "activations/batch_00000.safetensors"}},
             {"layers_extracted", json{0, 0}}, {"layers_extracted", json{-1}}, {"sites", json{"ln_out"}}, {"sequences", json(-4)},
             {"seq_len", json("4")}}) {
        CAPTURE(field);
        RunDir run;
        run.meta[field] = value;
        run.write();
        check_refused(run, {run.dir / "metadata.json", field});
    }
    {  // --save-routing's layer_{l}_experts tensors are routing, not captures: replayed past, not refused.
        RunDir run;
        for (auto & b : run.batches) b.emplace_back("layer_1_experts", at::zeros({2, 4, 2}, at::kInt));
        run.write();
        const auto p = analyze_run(run);
        CAPTURE(p.err);
        CHECK(p.exit_code == 0);
    }
}

TEST_CASE("run reader: bad batch tensors are refused naming the file, not as unexpected errors or libtorch backtraces") {
    {  // std::stoi threw out_of_range: "unexpected error", exit 1, no file.
        RunDir run;
        run.batches[0].emplace_back("layer_99999999999_ln_attn", at::zeros({2, 4, 8}));
        run.write();
        check_refused(run, {run.path(0), "layer_99999999999_ln_attn", "layer number not in 0..1023"});
        run.batches[0].back().first = "layer_999999999999999999999999999_ln_attn";  // past int64 too
        run.write();
        check_refused(run, {run.path(0), "layer_999999999999999999999999999_ln_attn", "layer number not in 0..1023"});
    }
    {  // A mask of the wrong shape broadcast inside libtorch and failed with its backtrace.
        RunDir run;
        run.batches[0].emplace_back("attention_mask", at::ones({4}, at::kLong));
        run.write();
        check_refused(run, {run.path(0), "attention_mask", "expected token_ids' [2,4]"});
    }
    {  // Mask values other than 0/1 were taken as "real".
        RunDir run;
        at::Tensor mask = at::ones({2, 4}, at::kLong);
        mask[1][2] = 7;
        run.batches[0].emplace_back("attention_mask", mask);
        run.write();
        check_refused(run, {run.path(0), "attention_mask", "0 (padding) or 1"});
        run.batches[0].back().second = at::ones({2, 4}, at::kFloat);
        run.write();
        check_refused(run, {run.path(0), "attention_mask", "expected integers"});
    }
    {  // A good 0/1 mask still works.
        RunDir run;
        at::Tensor mask = at::ones({2, 4}, at::kBool);
        mask[1][3] = false;
        run.batches[0].emplace_back("attention_mask", mask);
        run.write();
        analysis::OutlierAccumulator acc;
        analysis::replay_run(run.root(), acc);
        CHECK(acc.statistics().tokens == 15);
    }
    // B = 0 and T = 0 failed in amax; H = 0 "succeeded" with exit 0 and nothing measured.
    for (const auto & [B, T, H] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{0, 4, 8}, {2, 0, 8}, {2, 4, 0}}) {
        CAPTURE(B);
        CAPTURE(T);
        CAPTURE(H);
        RunDir run(1, B, T, H);
        run.meta.erase("model");
        run.meta.erase("seq_len");
        run.meta["sequences"] = B;
        run.write();
        check_refused(run, {run.path(0), H == 0 ? "layer_0_ln_attn" : "token_ids", H == 0 ? "H>0" : "empty batch"});
    }
    {  // Not a capture name at all.
        RunDir run;
        run.batches[1].emplace_back("lm_head", at::zeros({2}));
        run.write();
        check_refused(run, {run.path(1), "unexpected tensor 'lm_head'"});
    }
}

TEST_CASE("accumulator: refuses integer and empty captures and a mask shaped unlike the token ids") {
    extractor::BatchInfo info;
    info.sequence_indices = {0, 1};
    info.token_ids = at::zeros({2, 4}, at::kLong);
    {
        analysis::OutlierAccumulator acc;
        acc.begin_batch(info);
        CHECK_THROWS_WITH_AS(acc.on_capture(extractor::Site::LnAttn, 0, at::full({2, 4, 8}, 7, at::kInt)), doctest::Contains("floating point"),
                             common::Error);
        CHECK_THROWS_WITH_AS(acc.on_capture(extractor::Site::LnAttn, 0, at::zeros({2, 4, 0})), doctest::Contains("empty capture"), common::Error);
    }
    analysis::OutlierAccumulator acc;
    info.attention_mask = at::ones({4}, at::kLong);
    CHECK_THROWS_WITH_AS(acc.begin_batch(info), doctest::Contains("attention_mask"), common::Error);
    info.attention_mask = at::ones({2, 3}, at::kLong);
    CHECK_THROWS_WITH_AS(acc.begin_batch(info), doctest::Contains("attention_mask"), common::Error);
}
