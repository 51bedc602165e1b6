// Replays a saved run through a sink. Tensors are loaded one at a time (to `device`), so memory
// stays at one [B,T,H] site plus the sink's own state, whatever the run's size.
#include "analysis/run_reader.h"

#include "analysis/accumulators.h"

#include "common/error.h"
#include "common/regular_file.h"
#include "extractor/checkpoint/hf_config.h"
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

static_assert(kMaxTokenVocab == extractor::hf_limits::kVocab, "a run's token ids are bounded as config.json's vocab_size is");

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

// What metadata.json says that each batch file must agree with.
struct RunExpectations {
    int64_t vocab = kMaxTokenVocab;  // token ids lie in [0, vocab)
    std::string vocab_source;        // "metadata.json model.vocab_size", or empty for the hard bound
};

// An integer field within [lo, hi], else a usage error naming metadata.json and the field.
int64_t metadata_int(const nlohmann::json & v, const std::string & field, int64_t lo, int64_t hi, const std::string & path) {
    if (!v.is_number_integer()) bad_metadata(path, field, "is not an integer");
    const bool in_range = v.is_number_unsigned()
                              ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) && static_cast<int64_t>(v.get<uint64_t>()) >= lo
                              : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
    if (!in_range)
        bad_metadata(path, field, "is " + v.dump() + ", outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v.get<int64_t>();
}

// The fields of metadata.json that the replay and the reports read, checked before any batch is.
RunExpectations check_run_metadata(const nlohmann::json & meta, const std::string & path) {
    if (!meta.is_object()) throw common::Error::file(path, "not a JSON object");
    RunExpectations x;
    if (auto t = meta.find("tokenizer"); t != meta.end() && !t->is_null()) {
        if (!t->is_object()) bad_metadata(path, "tokenizer", "is not an object");
        if (auto p = t->find("path"); p != t->end() && !p->is_string()) bad_metadata(path, "tokenizer.path", "is not a string");
    }
    if (auto m = meta.find("model"); m != meta.end() && m->is_object()) {
        if (auto v = m->find("vocab_size"); v != m->end()) {
            x.vocab = metadata_int(*v, "model.vocab_size", 1, kMaxTokenVocab, path);
            x.vocab_source = "metadata.json model.vocab_size";
        }
    }
    return x;
}

bool is_integer_dtype(at::ScalarType t) { return at::isIntegralType(t, /*includeBool=*/false); }

// token_ids [B,T] and sequence_indices [B] of one batch file, as the accumulator reads them:
// integers, and token ids within the run's vocabulary (they size the token tallies).
void read_batch_ids(const extractor::SafetensorsFile & f, const std::string & path, const RunExpectations & x,
                    extractor::BatchInfo & info) {
    const at::Tensor ids = f.load("token_ids");
    const at::Tensor seq = f.load("sequence_indices");
    for (const auto & [name, t] : {std::pair<const char *, const at::Tensor &>{"token_ids", ids}, {"sequence_indices", seq}})
        if (!is_integer_dtype(t.scalar_type()))
            throw common::Error::file(path, std::string("tensor '") + name + "': expected integers, got " +
                                                extractor::safetensors_dtype_name(t.scalar_type()))
                .with("tensor", name);
    if (ids.dim() != 2) throw common::Error::file(path, "tensor 'token_ids': expected [B,T]").with("tensor", "token_ids");
    if (seq.dim() != 1 || ids.size(0) != seq.numel())
        throw common::Error::file(path, "token_ids and sequence_indices disagree on the batch size").with("tensor", "sequence_indices");
    info.token_ids = ids.to(at::kLong).contiguous();
    if (info.token_ids.numel() > 0) {
        const int64_t lo = info.token_ids.min().item<int64_t>(), hi = info.token_ids.max().item<int64_t>();
        if (lo < 0 || hi >= x.vocab)
            throw common::Error::file(path, "tensor 'token_ids': id " + std::to_string(lo < 0 ? lo : hi) + " is outside [0, " +
                                                std::to_string(x.vocab) + ")" +
                                                (x.vocab_source.empty() ? std::string(" (no vocab_size in metadata.json; the hard bound)")
                                                                        : " (" + x.vocab_source + ")"))
                .with("tensor", "token_ids");
    }
    const at::Tensor s = seq.to(at::kLong).contiguous();
    info.sequence_indices.assign(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel());
}

// e, with the batch file named in its message and context (once), and the tensor when given.
common::Error in_file(const common::Error & e, const std::string & file, const std::string & tensor = {}) {
    common::Error out(e.kind(), e.message().find(file) == std::string::npos ? file + ": " + e.message() : e.message(), e.context());
    auto has = [&](const std::string & key) {
        return std::any_of(e.context().begin(), e.context().end(), [&](const auto & kv) { return kv.first == key; });
    };
    if (!has("file")) out.with("file", file);
    if (!tensor.empty() && !has("tensor")) out.with("tensor", tensor);
    return out;
}

// One batch file through the sink: its ids, then its captures in forward order.
void replay_batch(const std::string & file, int64_t batch_index, const RunExpectations & expect, c10::Device device,
                  extractor::CaptureSink & sink) {
    static const std::regex name_re("layer_([0-9]+)_(ln_attn|ln_mlp|residual)");
    const auto f = extractor::SafetensorsFile::open(file);
    for (const char * needed : {"token_ids", "sequence_indices"})
        if (!f.contains(needed))
            throw common::Error::file(file, std::string("no '") + needed + "' tensor; not a batch file written by extract");
    extractor::BatchInfo info;
    info.batch_index = batch_index;
    read_batch_ids(f, file, expect, info);
    if (f.contains("attention_mask")) info.attention_mask = f.load("attention_mask").to(at::kLong);

    std::vector<std::tuple<int, int, std::string, extractor::Site>> captures;  // forward order
    for (const auto & name : f.names()) {
        if (name == "token_ids" || name == "sequence_indices" || name == "attention_mask") continue;
        std::smatch m;
        if (!std::regex_match(name, m, name_re))
            throw common::Error::file(file, "unexpected tensor '" + name + "' (expected layer_{l}_{ln_attn|ln_mlp|residual})");
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
        } catch (const common::Error & e) {
            throw in_file(e, file, name);
        }
    }
    sink.end_batch();
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
    const RunExpectations expect = check_run_metadata(meta, meta_path.string());

    std::vector<fs::path> files;
    const fs::path act = dir / "activations";
    if (fs::is_directory(act))
        for (const auto & e : fs::directory_iterator(act))
            if (e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty())
        throw common::Error::file(act.string(), "empty run: no batch_*.safetensors files; was the run interrupted before its first batch?");

    int64_t batch_index = 0;
    for (const auto & path : files) {
        const std::string file = path.string();
        try {
            replay_batch(file, batch_index++, expect, device, sink);
        } catch (const common::Error & e) {
            throw in_file(e, file);
        } catch (const c10::Error & e) {
            // A check above missed something libtorch then refused: still the file's fault, named.
            throw common::Error::file(file, std::string("cannot be analysed: ") + e.what_without_backtrace()).with("file", file);
        }
    }
    return meta;
}

}  // namespace analysis
