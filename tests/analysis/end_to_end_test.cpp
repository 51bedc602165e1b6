// End to end on CPU: a tiny checkpoint from the extractor's fixture writer with planted outlier dims
// (layer-norm gains of 50), run through the real forward pass with the streaming accumulator and
// the safetensors sink in the same pass. The analysis finds exactly the planted dims in both modes,
// and replaying the saved run (`analyze RUN_DIR`) gives the same statistics as streaming.
#include <ATen/ATen.h>

#include "analysis/accumulators.h"
#include "analysis/criteria.h"
#include "analysis/run_reader.h"
#include "common/error.h"
#include "extractor/extract.h"
#include "extractor/fixture_writer.h"
#include "tests/support/temp_dir.h"

#include <filesystem>
#include <fstream>
#include <set>

#include <doctest/doctest.h>

namespace {

std::set<int32_t> dims_of(const analysis::ModeResult & r) {
    std::set<int32_t> out;
    for (const auto & f : r.features) out.insert(f.dim);
    return out;
}

}  // namespace

TEST_CASE("planted fixture: both modes find exactly the planted dims, and streaming equals the saved run") {
    tests::TempDir dir;
    for (const std::string family : {"llama", "olmoe"}) {
        CAPTURE(family);
        extractor::FixtureOptions fx;
        fx.family = family;
        fx.out_dir = dir / ("model-" + family);
        fx.layers = 4;
        fx.hidden = 64;
        fx.seed = 3;
        fx.plants = {extractor::parse_plant("7,42@0-2"), extractor::parse_plant("13@0-3x30")};
        extractor::write_fixture(fx);

        // 3 sequences of 24 tokens from a small id stream, batches of 2 (the last batch has 1 row).
        std::ofstream(dir / "ids.json") << "[" << [] {
            std::string s;
            for (int i = 0; i < 72; ++i) s += (i ? "," : "") + std::to_string((i * 37 + 5) % 120);
            return s;
        }() << "]";
        extractor::ExtractOptions e;
        e.model_dir = fx.out_dir;
        e.input.tokens_file = dir / "ids.json";
        e.input.seq_len = 24;
        e.input.batch_size = 2;
        e.input.num_sequences = 3;
        e.load.dtype = at::kFloat;
        e.load.device = "cpu";
        e.out_dir = dir / ("run-" + family);
        e.save_dtype = "f32";
        analysis::OutlierAccumulator streaming;
        extractor::run_extraction(e, {&streaming});
        const auto live = streaming.statistics();

        const std::set<int32_t> planted = {7, 13, 42};
        for (const auto & mode : analysis::mode_names()) {
            CAPTURE(mode);
            const auto r = analysis::apply_criteria(live, analysis::criteria_for_mode(mode));
            CHECK((dims_of(r) == planted));
        }
        const auto pred = analysis::apply_criteria(live, analysis::criteria_for_mode("predecessor"));
        CHECK(pred.num_outliers == 9);  // 3 dims x 3 sequences

        analysis::OutlierAccumulator replayed;
        const auto meta = analysis::replay_run(e.out_dir, replayed);
        CHECK(meta.contains("layers_extracted"));
        const auto saved = replayed.statistics();
        CHECK(saved.site_hits == live.site_hits);
        CHECK(saved.site_max_abs == live.site_max_abs);
        CHECK(saved.position_hits == live.position_hits);
        CHECK(saved.sequences == 3);
        REQUIRE(saved.per_sequence.size() == live.per_sequence.size());
        for (size_t i = 0; i < saved.per_sequence.size(); ++i) {
            CHECK(saved.per_sequence[i].sequence_index == live.per_sequence[i].sequence_index);
            CHECK(saved.per_sequence[i].dims.size() == live.per_sequence[i].dims.size());
        }
        CHECK((saved.token_hits == live.token_hits));
    }
}

TEST_CASE("replay: missing run files and empty runs are errors naming the file") {
    tests::TempDir dir;
    analysis::OutlierAccumulator acc;
    try {
        analysis::replay_run(dir / "nope", acc);
        FAIL("no error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::NotFound);
        CHECK(std::string(e.what()).find("nope") != std::string::npos);
    }
    std::filesystem::create_directories(dir / "run/activations");
    try {
        analysis::replay_run(dir / "run", acc);
        FAIL("no error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::NotFound);
        CHECK(std::string(e.what()).find("metadata.json") != std::string::npos);
    }
    tests::write_file(dir / "run/metadata.json", "{}");
    try {
        analysis::replay_run(dir / "run", acc);
        FAIL("no error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(std::string(e.what()).find("empty run") != std::string::npos);
    }
    tests::write_file(dir / "run/activations/batch_00000.safetensors", "garbage");
    CHECK_THROWS_AS(analysis::replay_run(dir / "run", acc), common::Error);
}
