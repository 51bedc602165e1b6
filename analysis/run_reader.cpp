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
#include <charconv>
#include <filesystem>
#include <optional>
#include <set>
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

// What metadata.json says that each batch file must agree with. Every field is optional (older
// runs lack some); a field that is there is checked, and then the batch files must agree with it.
struct RunExpectations {
    int64_t vocab = kMaxTokenVocab;  // token ids lie in [0, vocab)
    std::string vocab_source;        // "metadata.json model.vocab_size", or empty for the hard bound
    std::optional<int64_t> hidden;            // model.hidden_size: H of every capture
    std::optional<int64_t> sequences;         // rows over all batch files; sequence indices in [0, sequences)
    std::optional<int64_t> seq_len;           // T of every batch
    std::optional<std::set<int>> layers;      // layers_extracted
    std::optional<std::set<std::string>> sites;  // sites
    std::optional<std::vector<std::string>> files;  // files, relative to the run directory, in batch order
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

// A batch file named by metadata.json `files`: "activations/NAME.safetensors", NAME a plain file
// name (nothing that leaves the folder).
bool is_batch_file_name(const std::string & f) {
    const std::string prefix = "activations/", suffix = ".safetensors";
    if (f.size() <= prefix.size() + suffix.size() || f.compare(0, prefix.size(), prefix) != 0 ||
        f.compare(f.size() - suffix.size(), suffix.size(), suffix) != 0)
        return false;
    const std::string name = f.substr(prefix.size());
    return name.find('/') == std::string::npos && name.find('\0') == std::string::npos && name[0] != '.';
}

constexpr int64_t kMaxRunFiles = int64_t{1} << 24;
constexpr int64_t kMaxRunSequences = int64_t{1} << 40;

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
        if (auto v = m->find("hidden_size"); v != m->end()) x.hidden = metadata_int(*v, "model.hidden_size", 1, extractor::hf_limits::kHidden, path);
    }
    if (auto v = meta.find("sequences"); v != meta.end()) x.sequences = metadata_int(*v, "sequences", 0, kMaxRunSequences, path);
    if (auto v = meta.find("seq_len"); v != meta.end()) x.seq_len = metadata_int(*v, "seq_len", 1, extractor::hf_limits::kPositions, path);
    if (auto v = meta.find("layers_extracted"); v != meta.end()) {
        if (!v->is_array()) bad_metadata(path, "layers_extracted", "is not an array");
        x.layers.emplace();
        for (size_t i = 0; i < v->size(); ++i) {
            const std::string field = "layers_extracted[" + std::to_string(i) + "]";
            if (!x.layers->insert(static_cast<int>(metadata_int((*v)[i], field, 0, extractor::hf_limits::kLayers - 1, path))).second)
                bad_metadata(path, field, "repeats a layer");
        }
    }
    if (auto v = meta.find("sites"); v != meta.end()) {
        if (!v->is_array()) bad_metadata(path, "sites", "is not an array");
        x.sites.emplace();
        for (size_t i = 0; i < v->size(); ++i) {
            const std::string field = "sites[" + std::to_string(i) + "]";
            const auto & e = (*v)[i];
            if (!e.is_string() || site_order(e.get<std::string>()) < 0) bad_metadata(path, field, "is not \"ln_attn\", \"ln_mlp\" or \"residual\"");
            if (!x.sites->insert(e.get<std::string>()).second) bad_metadata(path, field, "repeats a site");
        }
    }
    if (auto v = meta.find("files"); v != meta.end()) {
        if (!v->is_array()) bad_metadata(path, "files", "is not an array");
        if (static_cast<int64_t>(v->size()) > kMaxRunFiles) bad_metadata(path, "files", "lists more than " + std::to_string(kMaxRunFiles) + " files");
        x.files.emplace();
        std::set<std::string> seen;
        for (size_t i = 0; i < v->size(); ++i) {
            const std::string field = "files[" + std::to_string(i) + "]";
            const auto & e = (*v)[i];
            if (!e.is_string() || !is_batch_file_name(e.get<std::string>()))
                bad_metadata(path, field, "is not \"activations/NAME.safetensors\"");
            if (!seen.insert(e.get<std::string>()).second) bad_metadata(path, field, "repeats a file");
            x.files->push_back(e.get<std::string>());
        }
    }
    return x;
}

bool is_integer_dtype(at::ScalarType t) { return at::isIntegralType(t, /*includeBool=*/false); }

std::string shape_text(const std::vector<int64_t> & shape) {
    std::string out = "[";
    for (size_t i = 0; i < shape.size(); ++i) out += (i ? "," : "") + std::to_string(shape[i]);
    return out + "]";
}

// token_ids [B,T], sequence_indices [B] and attention_mask [B,T] (optional) of one batch file, as
// the accumulator reads them: integers, B and T at least 1, token ids within the run's vocabulary
// (they size the token tallies), sequence indices new to the run and within it, a mask of 0/1.
void read_batch_ids(const extractor::SafetensorsFile & f, const std::string & path, const RunExpectations & x,
                    std::set<int64_t> & seen_sequences, extractor::BatchInfo & info) {
    for (const char * name : {"token_ids", "sequence_indices", "attention_mask"}) {
        if (!f.contains(name)) continue;
        const auto & ti = f.info(name);
        const bool mask = std::string(name) == "attention_mask";
        if (!is_integer_dtype(ti.scalar_type) && !(mask && ti.scalar_type == at::kBool))
            throw common::Error::file(path, std::string("tensor '") + name + "': expected integers, got " + ti.dtype).with("tensor", name);
    }
    const auto & ids_shape = f.info("token_ids").shape;
    if (ids_shape.size() != 2) throw common::Error::file(path, "tensor 'token_ids': expected [B,T], got " + shape_text(ids_shape)).with("tensor", "token_ids");
    const int64_t B = ids_shape[0], T = ids_shape[1];
    // B = 0 or T = 0 failed in amax (a libtorch error) or, with H = 0 too, "succeeded" with nothing.
    if (B < 1 || T < 1) throw common::Error::file(path, "tensor 'token_ids': empty batch " + shape_text(ids_shape)).with("tensor", "token_ids");
    if (x.seq_len && T != *x.seq_len)
        throw common::Error::file(path, "tensor 'token_ids': " + std::to_string(T) + " positions, but metadata.json seq_len is " +
                                            std::to_string(*x.seq_len))
            .with("tensor", "token_ids");
    const auto & seq_shape = f.info("sequence_indices").shape;
    if (seq_shape.size() != 1 || seq_shape[0] != B)
        throw common::Error::file(path, "tensor 'sequence_indices': " + shape_text(seq_shape) + " for token_ids " + shape_text(ids_shape) +
                                            " (expected [B])")
            .with("tensor", "sequence_indices");

    info.token_ids = f.load("token_ids").to(at::kLong).contiguous();
    const int64_t lo = info.token_ids.min().item<int64_t>(), hi = info.token_ids.max().item<int64_t>();
    if (lo < 0 || hi >= x.vocab)
        throw common::Error::file(path, "tensor 'token_ids': id " + std::to_string(lo < 0 ? lo : hi) + " is outside [0, " +
                                            std::to_string(x.vocab) + ")" +
                                            (x.vocab_source.empty() ? std::string(" (no vocab_size in metadata.json; the hard bound)")
                                                                    : " (" + x.vocab_source + ")"))
            .with("tensor", "token_ids");

    const at::Tensor s = f.load("sequence_indices").to(at::kLong).contiguous();
    info.sequence_indices.assign(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel());
    for (const int64_t q : info.sequence_indices) {
        if (q < 0 || (x.sequences && q >= *x.sequences))
            throw common::Error::file(path, "tensor 'sequence_indices': " + std::to_string(q) + " is outside [0, " +
                                                (x.sequences ? std::to_string(*x.sequences) + ") (metadata.json sequences)" : std::string("2^63)")))
                .with("tensor", "sequence_indices");
        // A repeated index would count that sequence twice (and merges refuse exactly that).
        if (!seen_sequences.insert(q).second)
            throw common::Error::file(path, "tensor 'sequence_indices': sequence " + std::to_string(q) + " appears twice in the run")
                .with("tensor", "sequence_indices");
    }

    if (f.contains("attention_mask")) {
        const auto & mask_shape = f.info("attention_mask").shape;
        if (mask_shape != ids_shape)  // a [1] or [T] mask broadcast inside libtorch and failed with its backtrace
            throw common::Error::file(path, "tensor 'attention_mask': " + shape_text(mask_shape) + ", expected token_ids' " + shape_text(ids_shape))
                .with("tensor", "attention_mask");
        at::Tensor mask = f.load("attention_mask").to(at::kLong);
        if (mask.lt(0).any().item<bool>() || mask.gt(1).any().item<bool>())
            throw common::Error::file(path, "tensor 'attention_mask': values must be 0 (padding) or 1 (a token)").with("tensor", "attention_mask");
        info.attention_mask = mask;
    }
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

struct Capture {
    int layer;
    int order;  // ln_attn, ln_mlp, residual
    std::string name;
    std::string site;
    extractor::Site kind;
    bool operator<(const Capture & o) const { return std::tie(layer, order) < std::tie(o.layer, o.order); }
};

// "layer_{l}_{site}" as the extractor writes it (l decimal without leading zeros, below
// hf_limits::kLayers): the capture, or nullopt for a routing tensor "layer_{l}_experts"
// (--save-routing; not a capture). Anything else is refused naming it.
std::optional<Capture> parse_capture_name(const std::string & name, const std::string & file) {
    auto refuse = [&](const std::string & why) -> common::Error {
        return common::Error::file(file, "unexpected tensor '" + name + "': " + why + " (expected layer_{l}_{ln_attn|ln_mlp|residual})")
            .with("tensor", name);
    };
    const std::string prefix = "layer_";
    if (name.compare(0, prefix.size(), prefix) != 0) throw refuse("not a capture");
    const char * begin = name.data() + prefix.size();
    const char * end = name.data() + name.size();
    int64_t layer = -1;
    // from_chars, bounded: std::stoi threw out_of_range on layer_99999999999 ("unexpected error").
    const auto [next, ec] = std::from_chars(begin, end, layer);
    const bool digits = next != begin && next != end && *next == '_';
    if (!digits || (ec != std::errc() && ec != std::errc::result_out_of_range) || (ec == std::errc() && layer < 0))
        throw refuse("no layer number");
    if (ec == std::errc::result_out_of_range || (next - begin > 1 && *begin == '0') || layer >= extractor::hf_limits::kLayers)
        throw refuse("layer number not in 0.." + std::to_string(extractor::hf_limits::kLayers - 1) + " as extract writes it");
    const std::string site(next + 1, end);
    if (site == "experts") return std::nullopt;
    const int order = site_order(site);
    if (order < 0) throw refuse("unknown site '" + site + "'");
    const auto kind = order == 0 ? extractor::Site::LnAttn : order == 1 ? extractor::Site::LnMlp : extractor::Site::Residual;
    return Capture{static_cast<int>(layer), order, name, site, kind};
}

// One batch file through the sink: its ids, then its captures in forward order, each checked
// against the run's metadata (layers, sites, hidden size) before it is loaded.
void replay_batch(const std::string & file, int64_t batch_index, const RunExpectations & expect, c10::Device device,
                  std::set<int64_t> & seen_sequences, extractor::CaptureSink & sink) {
    const auto f = extractor::SafetensorsFile::open(file);
    for (const char * needed : {"token_ids", "sequence_indices"})
        if (!f.contains(needed))
            throw common::Error::file(file, std::string("no '") + needed + "' tensor; not a batch file written by extract");
    extractor::BatchInfo info;
    info.batch_index = batch_index;
    read_batch_ids(f, file, expect, seen_sequences, info);
    const int64_t B = info.token_ids.size(0), T = info.token_ids.size(1);

    std::vector<Capture> captures;  // forward order
    std::set<std::pair<int, int>> seen;
    std::optional<int64_t> hidden = expect.hidden;
    for (const auto & name : f.names()) {
        if (name == "token_ids" || name == "sequence_indices" || name == "attention_mask") continue;
        const auto c = parse_capture_name(name, file);
        if (!c) continue;
        if (expect.layers && !expect.layers->count(c->layer))
            throw common::Error::file(file, "tensor '" + name + "': layer " + std::to_string(c->layer) +
                                                " is not in metadata.json layers_extracted")
                .with("tensor", name);
        const std::string & site = c->site;
        if (expect.sites && !expect.sites->count(site))
            throw common::Error::file(file, "tensor '" + name + "': site " + site + " is not in metadata.json sites").with("tensor", name);
        if (!seen.insert({c->layer, c->order}).second)
            throw common::Error::file(file, "tensor '" + name + "': layer " + std::to_string(c->layer) + " " + site + " appears twice")
                .with("tensor", name);
        const auto & ti = f.info(name);
        // An integer capture was analysed as values (every dim an "outlier" at |x| >= 6).
        if (!at::isFloatingType(ti.scalar_type))
            throw common::Error::file(file, "tensor '" + name + "': a capture must be floating point, got " + ti.dtype).with("tensor", name);
        if (ti.shape.size() != 3 || ti.shape[0] != B || ti.shape[1] != T || ti.shape[2] < 1 || (hidden && ti.shape[2] != *hidden))
            throw common::Error::file(file, "tensor '" + name + "': shape " + shape_text(ti.shape) + ", expected [" + std::to_string(B) + "," +
                                                std::to_string(T) + "," + (hidden ? std::to_string(*hidden) : std::string("H>0")) + "]" +
                                                (expect.hidden ? " (metadata.json model.hidden_size)" : ""))
                .with("tensor", name);
        hidden = ti.shape[2];
        captures.push_back(*c);
    }
    // Every listed layer x site is in every batch file: a missing capture would make that site's
    // fractions count fewer sequences without a word.
    if (expect.layers && expect.sites)
        for (const int layer : *expect.layers)
            for (const auto & site : *expect.sites)
                if (!seen.count({layer, site_order(site)}))
                    throw common::Error::file(file, "no tensor 'layer_" + std::to_string(layer) + "_" + site +
                                                        "', which metadata.json layers_extracted x sites lists");
    if (captures.empty()) throw common::Error::file(file, "no layer_{l}_{site} captures");
    std::sort(captures.begin(), captures.end());
    sink.begin_batch(info);
    for (const auto & c : captures) {
        if (!sink.wants(c.kind, c.layer)) continue;
        try {
            sink.on_capture(c.kind, c.layer, f.load(c.name, device));
        } catch (const common::Error & e) {
            throw in_file(e, file, c.name);
        }
    }
    sink.end_batch();
}

// The batch files to replay, in batch order: metadata.json's `files` when it lists them (each must
// be there, and nothing else may sit beside them), else every activations/*.safetensors by name.
std::vector<fs::path> batch_files(const fs::path & dir, const RunExpectations & expect, const std::string & meta_path) {
    const fs::path act = dir / "activations";
    std::vector<fs::path> found;
    std::error_code ec;
    if (fs::is_directory(act, ec))
        for (const auto & e : fs::directory_iterator(act))
            if (e.path().extension() == ".safetensors") found.push_back(e.path());
    std::sort(found.begin(), found.end());
    if (!expect.files) {
        if (found.empty())
            throw common::Error::file(act.string(), "empty run: no batch_*.safetensors files; was the run interrupted before its first batch?");
        return found;
    }
    if (expect.files->empty()) throw common::Error::file(meta_path, "empty run: field `files` lists no batch files");
    std::vector<fs::path> listed;
    std::set<fs::path> listed_set;
    for (const auto & f : *expect.files) {
        const fs::path p = dir / f;
        // A deleted batch file was skipped without a word, its sequences missing from every count.
        if (!fs::exists(fs::symlink_status(p, ec)))
            throw common::Error::not_found(p.string(), "listed in " + meta_path + " `files` but missing").with("file", p.string());
        listed.push_back(p);
        listed_set.insert(p);
    }
    for (const auto & p : found)
        if (!listed_set.count(p))
            throw common::Error::file(p.string(), "a batch file that " + meta_path + " `files` does not list (from another run?)")
                .with("file", p.string());
    return listed;
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
    const std::vector<fs::path> files = batch_files(dir, expect, meta_path.string());

    int64_t batch_index = 0;
    std::set<int64_t> seen_sequences;
    for (const auto & path : files) {
        const std::string file = path.string();
        try {
            replay_batch(file, batch_index++, expect, device, seen_sequences, sink);
        } catch (const common::Error & e) {
            throw in_file(e, file);
        } catch (const c10::Error & e) {
            // A check above missed something libtorch then refused: still the file's fault, named.
            throw common::Error::file(file, std::string("cannot be analysed: ") + e.what_without_backtrace()).with("file", file);
        }
    }
    if (expect.sequences && static_cast<int64_t>(seen_sequences.size()) != *expect.sequences)
        throw common::Error::file(meta_path.string(), "field `sequences` is " + std::to_string(*expect.sequences) + ", but the batch files hold " +
                                                          std::to_string(seen_sequences.size()))
            .with("field", "sequences");
    return meta;
}

}  // namespace analysis
