// Replays a saved run through a sink. Tensors are loaded one at a time (to `device`), so memory
// stays at one [B,T,H] site plus the sink's own state, whatever the run's size.
#include "analysis/run_reader.h"

#include "common/error.h"
#include "common/regular_file.h"
#include "extractor/checkpoint/safetensors.h"
#include "extractor/model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <tuple>

namespace analysis {

namespace fs = std::filesystem;

namespace {

int site_order(const std::string & site) {
    if (site == "ln_attn") return 0;
    if (site == "ln_mlp") return 1;
    if (site == "residual") return 2;
    return -1;
}

// "cpu", "cuda" or "cuda:N", checked by syntax first (a typo is a usage error, exit 2), then
// against this machine (no such GPU is a capacity error, exit 4), before any file is read.
c10::Device analysis_device(const std::string & name) {
    if (!extractor::is_device_name(name)) throw common::Error::usage("--device \"" + name + "\" is not cpu, cuda or cuda:N");
    if (name == "cpu") return c10::Device(c10::kCPU);
    const int64_t index = name == "cuda" ? 0 : std::stoll(name.substr(5));
    const int64_t count = extractor::cuda_device_count();
    if (index >= count)
        throw common::Error(common::ErrorKind::Capacity, "--device " + name + ": this machine has " +
                                                             std::to_string(count) + " CUDA device(s)");
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

[[noreturn]] void bad_metadata(const std::string & path, const std::string & field, const std::string & why) {
    throw common::Error::file(path, "field `" + field + "` " + why).with("field", field);
}

// The fields of metadata.json that the replay and the reports read, checked before any batch is.
void check_run_metadata(const nlohmann::json & meta, const std::string & path) {
    if (!meta.is_object()) throw common::Error::file(path, "not a JSON object");
    if (auto t = meta.find("tokenizer"); t != meta.end() && !t->is_null()) {
        if (!t->is_object()) bad_metadata(path, "tokenizer", "is not an object");
        if (auto p = t->find("path"); p != t->end() && !p->is_string()) bad_metadata(path, "tokenizer.path", "is not a string");
    }
}

}  // namespace

nlohmann::json replay_run(const std::string & run_dir, extractor::CaptureSink & sink, const std::string & device_name) {
    const c10::Device device = analysis_device(device_name);
    const fs::path dir(run_dir);
    if (!fs::is_directory(dir)) throw common::Error::not_found(run_dir, "no such run directory").with("file", run_dir);
    const fs::path meta_path = dir / "metadata.json";
    if (!fs::exists(fs::symlink_status(meta_path)))
        throw common::Error::not_found(meta_path.string(), "not an extract run directory (metadata.json is missing)")
            .with("file", meta_path.string());
    // Bounded and refused unless a regular file (a FIFO under that name blocked the reader).
    const std::string meta_text = common::read_regular_file(meta_path.string(), 64u << 20, "run metadata");
    nlohmann::json meta;
    try {
        meta = nlohmann::json::parse(meta_text, nullptr, true, false);
    } catch (const nlohmann::json::exception & e) {
        throw common::Error::file(meta_path.string(), std::string("not JSON: ") + e.what());
    }
    check_run_metadata(meta, meta_path.string());

    std::vector<fs::path> files;
    const fs::path act = dir / "activations";
    if (fs::is_directory(act))
        for (const auto & e : fs::directory_iterator(act))
            if (e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty())
        throw common::Error::file(act.string(), "empty run: no batch_*.safetensors files; was the run interrupted before its first batch?");

    const std::regex name_re("layer_([0-9]+)_(ln_attn|ln_mlp|residual)");
    int64_t batch_index = 0;
    for (const auto & path : files) {
        const auto f = extractor::SafetensorsFile::open(path.string());
        for (const char * needed : {"token_ids", "sequence_indices"})
            if (!f.contains(needed))
                throw common::Error::file(path.string(), std::string("no '") + needed + "' tensor; not a batch file written by extract");
        extractor::BatchInfo info;
        info.batch_index = batch_index++;
        info.token_ids = f.load("token_ids").to(at::kLong);
        auto seq = f.load("sequence_indices").to(at::kLong).contiguous();
        info.sequence_indices.assign(seq.data_ptr<int64_t>(), seq.data_ptr<int64_t>() + seq.numel());
        if (f.contains("attention_mask")) info.attention_mask = f.load("attention_mask").to(at::kLong);
        if (info.token_ids.dim() != 2 || info.token_ids.size(0) != seq.numel())
            throw common::Error::file(path.string(), "token_ids and sequence_indices disagree on the batch size");

        std::vector<std::tuple<int, int, std::string, extractor::Site>> captures;  // forward order
        for (const auto & name : f.names()) {
            if (name == "token_ids" || name == "sequence_indices" || name == "attention_mask") continue;
            std::smatch m;
            if (!std::regex_match(name, m, name_re))
                throw common::Error::file(path.string(), "unexpected tensor '" + name + "' (expected layer_{l}_{ln_attn|ln_mlp|residual})");
            const int layer = std::stoi(m[1].str());
            const auto site = m[2].str();
            const auto kind = site == "ln_attn" ? extractor::Site::LnAttn : site == "ln_mlp" ? extractor::Site::LnMlp : extractor::Site::Residual;
            captures.emplace_back(layer, site_order(site), name, kind);
        }
        std::sort(captures.begin(), captures.end());
        sink.begin_batch(info);
        for (const auto & [layer, order, name, kind] : captures) {
            if (!sink.wants(kind, layer)) continue;
            try {
                sink.on_capture(kind, layer, f.load(name, device));
            } catch (common::Error & e) {
                throw common::Error(e.kind(), path.string() + ": " + e.message(), e.context()).with("file", path.string());
            }
        }
        sink.end_batch();
    }
    return meta;
}

}  // namespace analysis
