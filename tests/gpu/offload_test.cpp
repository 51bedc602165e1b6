// Offloaded layers streamed by the prefetching streamer (extractor/offload.h) give the captures the
// resident run gives, at every prefetch depth, across several batches (the ring wraps within a
// pass and across passes), and the streamer's figures add up.
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <ftw.h>
#include <unistd.h>

#include "extractor/capture.h"
#include "extractor/extract.h"
#include "extractor/fixture_writer.h"

#include <doctest/doctest.h>

namespace {

using extractor::Site;

struct KeepAll : extractor::CaptureSink {
    std::map<std::pair<Site, int>, at::Tensor> got;  // every batch, concatenated on the CPU
    bool wants(Site, int) const override { return true; }
    void begin_batch(const extractor::BatchInfo &) override {}
    void on_capture(Site s, int l, const at::Tensor & x) override {
        at::Tensor c = x.to(at::kCPU).clone();
        auto it = got.find({s, l});
        got[{s, l}] = it == got.end() ? c : at::cat({it->second, c}, 0);
    }
    void end_batch() override {}
};

struct Fixture {
    std::filesystem::path dir;
    std::string ids;
    Fixture() {
        dir = std::filesystem::temp_directory_path() / ("offload-test-" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir);
        extractor::FixtureOptions f;
        f.family = "llama";
        f.out_dir = (dir / "model").string();
        f.layers = 8;
        f.hidden = 512;
        f.heads = 8;
        f.kv_heads = 4;
        f.head_dim = 64;
        f.intermediate = 1536;
        f.vocab = 256;
        f.dtype = at::kFloat;
        (void)extractor::write_fixture(f);
        ids = (dir / "ids.json").string();
        std::ofstream out(ids);
        out << "[";
        for (int i = 0; i < 6 * 64; ++i) out << (i ? "," : "") << (i * 37 + 11) % 256;
        out << "]";
    }
    // Not std::filesystem::remove_all: linked against pip's libtorch.so, which exports its own
    // copy of that symbol, the call jumped to address 0 (H100 image, torch 2.11).
    ~Fixture() {
        ::nftw(dir.c_str(), [](const char * path, const struct stat *, int, struct FTW *) { return ::remove(path); }, 16,
               FTW_DEPTH | FTW_PHYS);
    }
};

extractor::ExtractOptions options(const Fixture & fx, const std::string & max_memory, int prefetch) {
    extractor::ExtractOptions o;
    o.model_dir = (fx.dir / "model").string();
    o.load.device = "cuda";
    o.load.dtype = at::kFloat;
    o.load.show_progress = false;
    o.load.max_memory = max_memory;
    o.load.offload_prefetch = prefetch;
    o.input.tokens_file = fx.ids;
    o.input.seq_len = 64;
    o.input.num_sequences = 6;
    o.input.batch_size = 2;  // 3 batches
    o.sites = {Site::LnAttn, Site::LnMlp, Site::Residual};
    return o;
}

}  // namespace

TEST_CASE("offloaded layers streamed at prefetch depth 0, 1 and 2 give the resident run's captures") {
    if (!at::hasCUDA()) {
        MESSAGE("no CUDA device");
        return;
    }
    Fixture fx;
    // Budget: the activations, the embedding and about 6 of the 8 layers, so that 2 to 5 layers
    // are offloaded depending on how many ring buffers the depth needs (placement gives resident
    // layers back to make room for them).
    extractor::ExtractOptions plan = options(fx, "", 1);
    plan.plan_only = true;
    const nlohmann::json est = extractor::run_extraction(plan).metadata;
    const double weights = est["weights_bytes"].get<double>(), act = est["activation_bytes"].get<double>();
    const double budget_mib = (act + weights * 6.5 / 8.0) / (1 << 20);
    const std::string max_memory = "0=" + std::to_string(static_cast<int64_t>(budget_mib)) + "MiB,cpu=4GiB";
    MESSAGE("weights ", weights / (1 << 20), " MiB, budget ", max_memory);

    KeepAll resident;
    const extractor::ExtractResult r0 = extractor::run_extraction(options(fx, "", 1), {&resident});
    CHECK(r0.offload.is_null());
    std::map<int, KeepAll> streamed;
    for (int depth : {0, 1, 2}) {
        const extractor::ExtractResult r = extractor::run_extraction(options(fx, max_memory, depth), {&streamed[depth]});
        INFO("depth ", depth, ": ", r.offload.dump(), " placement ", r.metadata["placement"].dump());
        REQUIRE(r.offload.is_object());
        const int64_t copies = r.offload["layers_streamed"].get<int64_t>();
        CHECK(copies % 3 == 0);           // the same layers in each of the 3 batches
        CHECK(copies / 3 >= 2);
        CHECK(copies / 3 <= 7);
        CHECK(r.offload["prefetch_depth"].get<int>() == depth);
        CHECK(r.offload["bytes_streamed"].get<double>() > 0);
        const double hidden = r.offload["hidden_fraction"].get<double>();
        CHECK(hidden >= 0.0);
        CHECK(hidden <= 1.0);
        CHECK(r.offload["copy_s"].get<double>() >= r.offload["exposed_wait_s"].get<double>());
        REQUIRE(streamed[depth].got.size() == resident.got.size());
        for (const auto & [key, ref] : resident.got) {
            const at::Tensor & ours = streamed[depth].got.at(key);
            INFO("site ", extractor::site_name(key.first), " layer ", key.second);
            REQUIRE(ours.sizes().equals(ref.sizes()));
            // The same kernels on the same values; only the weights' addresses differ.
            const double scale = std::max(ref.abs().max().item<double>(), 1e-30);
            CHECK((ours - ref).abs().max().item<double>() / scale <= 1e-6);
            if (depth > 0) CHECK(at::equal(ours, streamed[0].got.at(key)));  // same ring layout
        }
    }
}
