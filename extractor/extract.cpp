// run_extraction (extract.h).
#include "extractor/extract.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <c10/core/InferenceMode.h>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
#include "common/program.h"
#include "common/progress.h"
#include "extractor/compat.h"
#include "extractor/cuda/device_memory.h"
#include "extractor/cuda/fused_ops.h"
#include "extractor/gpu_memory.h"
#include "extractor/hash.h"
#include "extractor/offload.h"
#include "extractor/ops.h"
#include "extractor/perplexity.h"
#include "extractor/sinks/sinks.h"

namespace extractor {

namespace {

uint64_t gpu_used_bytes(int index) { return gpu_memory(index).used_bytes(); }

// Lets the sinks do their one-time device work (CaptureSink::warm_up) on a capture-shaped tensor
// [rows,T,H] with some |x| >= 6, on the first compute device; on the CPU there is none to do.
void warm_up_sinks(Tap & tap, const Model & m, int64_t rows, int64_t T) {
    if (m.placement.compute.empty() || !m.placement.compute[0].is_cuda()) return;
    const auto opts = at::TensorOptions().dtype(m.dtype).device(m.placement.compute[0]);
    tap.warm_up(at::randn({rows, T, m.cfg.hidden}, opts) * 3);  // [B,T,H]
}

}  // namespace

const char * extractor_version() { return "0.1.0"; }

std::vector<int> parse_layer_list(const std::string & text) {
    std::set<int> out;
    std::stringstream ss(text);
    std::string part;
    while (std::getline(ss, part, ',')) {
        if (part.empty()) continue;
        try {
            size_t dash = part.find('-');
            size_t used = 0;
            if (dash == std::string::npos) {
                int v = std::stoi(part, &used);
                if (used != part.size() || v < 0) throw std::invalid_argument("x");
                out.insert(v);
            } else {
                int a = std::stoi(part.substr(0, dash), &used);
                if (used != dash) throw std::invalid_argument("x");
                std::string rest = part.substr(dash + 1);
                int b = std::stoi(rest, &used);
                if (used != rest.size() || a < 0 || b < a) throw std::invalid_argument("x");
                for (int v = a; v <= b; ++v) out.insert(v);
            }
        } catch (const std::exception &) {
            throw common::Error::usage("--layers: \"" + part + "\" is not a layer index or range like 0-3");
        }
    }
    if (out.empty()) throw common::Error::usage("--layers: no layers given");
    return {out.begin(), out.end()};
}

namespace {

// The layers to capture (--layers, or all), each checked against the config; --perplexity needs
// the last layer run.
std::vector<int> checked_layers(const ExtractOptions & opt, const HfConfig & hf, const ModelConfig & cfg) {
    std::vector<int> layers = opt.layers;
    if (layers.empty())
        for (int l = 0; l < cfg.n_layers; ++l) layers.push_back(l);
    for (int l : layers)
        if (l >= cfg.n_layers)
            throw common::Error::usage("--layers: layer " + std::to_string(l) + " but " + hf.model_type + " has " +
                                       std::to_string(cfg.n_layers) + " layers (0-" + std::to_string(cfg.n_layers - 1) + ")");
    const int run_layers = *std::max_element(layers.begin(), layers.end()) + 1;
    // The loss needs the last layer's output: a --layers list that stops early is refused rather
    // than silently run to the end (which would cost the layers the user left out).
    if (opt.perplexity && run_layers < cfg.n_layers)
        throw common::Error::usage("--perplexity needs every layer run, but --layers stops at layer " + std::to_string(run_layers - 1) +
                                   " of 0-" + std::to_string(cfg.n_layers - 1) + " (add layer " + std::to_string(cfg.n_layers - 1) +
                                   " to --layers, or leave --layers out)");
    if (opt.perplexity_chunk_tokens < 0)
        throw common::Error::usage("--perplexity-chunk must be 0 (automatic) or more, got " + std::to_string(opt.perplexity_chunk_tokens));
    return layers;
}

// The run's own sinks (saved tensors, absmax, perplexity) on the tap, then the caller's.
struct RunSinks {
    Tap tap;
    std::unique_ptr<SafetensorsSink> st_sink;
    std::unique_ptr<AbsmaxSink> absmax;
    std::unique_ptr<PerplexitySink> perplexity;
};

void add_sinks(RunSinks & sinks, const ExtractOptions & opt, const std::vector<int> & layers,
               const std::vector<CaptureSink *> & extra_sinks) {
    std::set<SiteLayer> wanted;
    for (int l : layers)
        for (Site s : opt.sites) wanted.insert({s, l});
    if (!opt.out_dir.empty()) {
        sinks.st_sink = std::make_unique<SafetensorsSink>(
            opt.out_dir, wanted, opt.save_dtype.empty() ? at::ScalarType::Undefined : parse_dtype(opt.save_dtype), opt.save_routing);
        sinks.tap.add(sinks.st_sink.get());
    }
    if (opt.absmax) {
        sinks.absmax = std::make_unique<AbsmaxSink>(wanted);
        sinks.tap.add(sinks.absmax.get());
    }
    if (opt.perplexity) {
        sinks.perplexity = std::make_unique<PerplexitySink>();
        sinks.tap.add(sinks.perplexity.get());
    }
    for (CaptureSink * s : extra_sinks) sinks.tap.add(s);
}

// LoadOptions::while_loading for the run: layer 0 once at the first batch's shape on the GPU, and
// the sinks' one-time work on a capture-shaped tensor, so handle creation, lazy kernel loading and
// cuDNN's attention plan (~0.4 s on an H100, which would otherwise land in the first batch) overlap
// the weights' copy instead of following it.
std::function<void(const Model &)> warm_up_while_loading(Tap & tap, int64_t first_rows, int64_t T) {
    return [&tap, first_rows, T](const Model & m) {
        if (first_rows <= 0 || m.run_layers <= 0 || !m.weights.compute[0].is_cuda() || m.weights.offloaded(0)) return;
        c10::InferenceMode inference;
        Tap silent;
        at::Tensor ids = at::zeros({first_rows, T}, at::kLong);                   // [B,T]
        (void)m.family->forward(m.cfg, m.weights, ids, /*run_layers=*/1, silent).sum().item<double>();
        warm_up_sinks(tap, m, first_rows, T);
    };
}

// Sequences first..first+rows-1 as a [rows,T] CPU batch of token ids.
at::Tensor batch_ids(const InputSet & inputs, int64_t first, int64_t rows, int64_t T) {
    at::Tensor ids = at::empty({rows, T}, at::kLong);                             // [B,T] CPU
    for (int64_t r = 0; r < rows; ++r)
        std::memcpy(ids[r].data_ptr<int64_t>(), inputs.sequences[static_cast<size_t>(first + r)].data(),
                    static_cast<size_t>(T) * sizeof(int64_t));
    return ids;
}

// What the forward loop needs besides the model.
struct ForwardRun {
    const ExtractOptions & opt;
    const InputSet & inputs;
    Tap & tap;
    const LmHead & head;
    int64_t nll_chunk = 0;
    int run_layers = 0;
};

// Every batch through the model, after --warmup untimed ones; each batch's captures go to the tap
// (and its losses with --perplexity). Fills res's forward time, device-memory peaks, offload
// figures and counts.
void forward_batches(const ForwardRun & run, Model & model, ExtractResult & res) {
    const ExtractOptions & opt = run.opt;
    const Family & family = *model.family;
    Tap & tap = run.tap;
    std::vector<int> gpus;
    for (const auto & d : model.placement.compute)
        if (d.is_cuda() && std::find(gpus.begin(), gpus.end(), d.index()) == gpus.end()) gpus.push_back(d.index());

    const int64_t n_seq = static_cast<int64_t>(run.inputs.sequences.size());
    const int64_t B = opt.input.batch_size, T = opt.input.seq_len;
    const int64_t n_batches = (n_seq + B - 1) / B;
    common::Progress progress("forward", static_cast<uint64_t>(n_seq * T));
    c10::InferenceMode inference;
    if (opt.warmup_batches > 0 && n_seq > 0) {
        // Kernel selection, cuBLAS handles and allocator growth happen here, not in the timing.
        Tap silent;
        at::Tensor ids = batch_ids(run.inputs, 0, std::min(B, n_seq), T);
        for (int i = 0; i < opt.warmup_batches; ++i)
            (void)family.forward(model.cfg, model.weights, ids, run.run_layers, silent).sum().item<double>();
        warm_up_sinks(tap, model, ids.size(0), T);
        if (model.weights.streamer) model.weights.streamer->reset_stats();
        ops::profile_reset();  // the profile reports the timed batches only
    }
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < n_batches; ++b) {
        common::throw_if_interrupted();
        const int64_t first = b * B, rows = std::min(B, n_seq - first);
        at::Tensor ids = batch_ids(run.inputs, first, rows, T);                   // [B,T] CPU
        BatchInfo info;
        info.batch_index = b;
        for (int64_t r = 0; r < rows; ++r) info.sequence_indices.push_back(first + r);
        info.token_ids = ids;
        tap.begin_batch(info);
        at::Tensor h = family.forward(model.cfg, model.weights, ids, run.run_layers, tap);  // [B,T,H]
        if (opt.perplexity) tap.on_token_nll(token_nll(model, run.head, h, ids, run.nll_chunk));  // [B,T-1]
        tap.end_batch();
        (void)h.sum().item<double>();  // the batch is done on the device (timing honesty)
        for (int g : gpus) res.gpu_used_bytes_peak = std::max(res.gpu_used_bytes_peak, gpu_used_bytes(g));
        progress.advance(static_cast<uint64_t>(rows * T));
        if (b == 0 && n_batches > 1) {
            double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            common::log::info("first batch took ", s, " s; ETA ~", s * static_cast<double>(n_batches - 1), " s for the rest");
        }
    }
    progress.finish();
    for (int g : gpus) res.allocator_reserved_bytes_peak += device_memory::allocator_peak_reserved_bytes(g).value_or(0);
    if (ops::profiling()) common::log::info("profile (device-synchronised per op): ", ops::profile_report());
    res.forward_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (model.weights.streamer) {
        const OffloadStats os = model.weights.streamer->stats();
        res.offload = to_json(os);
        common::log::info("offload: ", os.layers_streamed, " layer copies, ", common::format_bytes(static_cast<double>(os.bytes_streamed)),
                          " in ", os.copy_s, " s of copy time (", os.copy_gb_per_s(), " GB/s); ",
                          static_cast<int>(os.hidden_fraction() * 100 + 0.5), "% of it hidden behind compute");
    }
    res.sequences = n_seq;
    res.tokens = n_seq * T;
    res.batches = n_batches;
}

// Which implementation runs (attention backend, expert matmuls, fused-kernel tier): logged before
// the run and kept in its metadata, so two runs whose numbers differ in the last bits can be told apart.
std::string ops_paths(const Model & model) {
    return ops::describe_paths(model.dtype, !model.placement.compute.empty() && model.placement.compute[0].is_cuda());
}

// metadata.json (and the run JSON's metadata): what ran, on what, from which inputs; with saved
// tensors, also the files, shapes and naming, written into the output directory.
nlohmann::json run_metadata(const ExtractOptions & opt, const HfConfig & hf, const Model & model, const InputSet & inputs,
                            const std::vector<int> & layers, const RunSinks & sinks, const ExtractResult & res) {
    const ModelConfig & cfg = model.cfg;
    nlohmann::json site_names = nlohmann::json::array();
    for (Site s : opt.sites) site_names.push_back(std::string(site_name(s)));
    nlohmann::json meta = {
        {"program", "extract"},
        {"program_version", extractor_version()},
        {"torch_version", compat::torch_version()},
        {"model", {{"dir", std::filesystem::absolute(opt.model_dir).string()},
                   {"model_type", hf.model_type},
                   {"architectures", hf.architectures},
                   {"num_hidden_layers", cfg.n_layers},
                   {"hidden_size", cfg.hidden},
                   {"num_experts", cfg.n_experts},
                   {"vocab_size", cfg.vocab}}},
        {"random_weights", opt.random_weights},
        {"experts_storage", !model.cfg.mxfp4_experts ? "plain" : model.cfg.dequantize_experts ? "mxfp4 dequantized at load" : "mxfp4 packed"},
        {"checkpoint_fingerprint_sha256", checkpoint_fingerprint(opt.model_dir)},
        {"tokenizer", {{"path", inputs.tokenizer_path}, {"sha256", inputs.tokenizer_sha256}}},
        {"dtype", dtype_name(model.dtype)},
        {"layers_extracted", layers},
        {"sites", site_names},
        {"tokens", res.tokens},
        {"sequences", res.sequences},
        {"seq_len", opt.input.seq_len},
        {"batch_size", opt.input.batch_size},
        {"input", {{"source", inputs.source},
                   {"stream_tokens", inputs.stream_tokens},
                   {"overlap", opt.input.overlap},
                   {"shuffle", opt.input.shuffle},
                   {"seed", opt.input.seed},
                   {"window_index", inputs.window_index}}},
        {"placement", model.placement.describe()},
        {"ops", ops_paths(model)},
    };
    if (!res.offload.is_null()) meta["offload"] = res.offload;
    if (sinks.perplexity) meta["perplexity"] = sinks.perplexity->summary();
    if (sinks.st_sink) {
        meta["saved_dtype"] = sinks.st_sink->saved_dtype();
        meta["files"] = sinks.st_sink->files();
        nlohmann::json shapes = nlohmann::json::object();
        for (const auto & [name, shape] : sinks.st_sink->shapes()) shapes[name] = shape;
        meta["shapes"] = shapes;
        meta["tensor_naming"] = "layer_{layer}_{site} [B,T,H] per batch file; token_ids [B,T]; sequence_indices [B]";
        std::ofstream out(std::filesystem::path(opt.out_dir) / "metadata.json");
        out << meta.dump(2) << "\n";
        if (!out) throw common::Error::io(opt.out_dir + "/metadata.json", "write", errno);
    }
    return meta;
}

}  // namespace

ExtractResult run_extraction(const ExtractOptions & opt, const std::vector<CaptureSink *> & extra_sinks) {
    ExtractResult res;
    // Flag values first: a typo fails before config, inputs or weights are read.
    check_load_options(opt.load);
    if (!opt.plan_only) check_input_options(opt.input);
    if (opt.warmup_batches < 0) throw common::Error::usage("--warmup must be 0 or more, got " + std::to_string(opt.warmup_batches));
    (void)fused::mode();  // EXTRACTOR_FUSED too, even where no kernel would read it (a CPU run)
    HfConfig hf = read_hf_config(opt.model_dir);
    const Family & family = find_family(hf.model_type);
    ModelConfig cfg = family.parse_config(hf);
    const std::vector<int> layers = checked_layers(opt, hf, cfg);
    const int run_layers = *std::max_element(layers.begin(), layers.end()) + 1;

    LoadOptions load = opt.load;
    load.run_layers = run_layers;
    load.batch = opt.input.batch_size;
    load.seq_len = opt.input.seq_len;
    load.lm_head = opt.perplexity;
    if (opt.plan_only) {
        Model m = plan_model(opt.model_dir, load);
        res.metadata = {{"plan", m.placement.describe()},
                        {"weights_bytes", m.estimate.total_bytes},
                        {"activation_bytes", m.estimate.activation_bytes}};
        return res;
    }
    // Device memory in use before this run allocates anything (other processes, our context):
    // peak - baseline is what the run itself holds.
    const int first_gpu_guess = 0;
    res.gpu_used_bytes_baseline = gpu_used_bytes(first_gpu_guess);
    // Inputs first: a bad input file fails before minutes of loading.
    InputSet inputs = prepare_inputs(opt.input, opt.model_dir, cfg.vocab);
    RunSinks sinks;
    add_sinks(sinks, opt, layers, extra_sinks);

    const int64_t first_rows = std::min<int64_t>(opt.input.batch_size, static_cast<int64_t>(inputs.sequences.size()));
    load.while_loading = warm_up_while_loading(sinks.tap, first_rows, opt.input.seq_len);
    Model model = opt.random_weights ? random_model(opt.model_dir, load, opt.weight_seed) : load_model(opt.model_dir, load);
    common::log::info("ops: ", ops_paths(model));
    res.load_s = model.load_s;
    res.weights_bytes = model.estimate.total_bytes;
    LmHead head;
    const int64_t nll_chunk = opt.perplexity_chunk_tokens > 0 ? opt.perplexity_chunk_tokens : default_nll_chunk_tokens(model.cfg.vocab);
    if (opt.perplexity) {
        head = load_lm_head(model, opt.random_weights, opt.weight_seed);
        const uint64_t head_bytes = (head.tied ? 0 : head.weight.nbytes()) + head.norm.nbytes();
        res.weights_bytes += head_bytes;
        common::log::info("perplexity: final norm", head.tied ? " (lm_head tied to the embedding)" : " and lm_head", " on ",
                          head.weight.device().str(), ", ", common::format_bytes(static_cast<double>(head_bytes)),
                          " more; logits in chunks of ", nll_chunk, " tokens");
    }
    common::log::info("loaded in ", res.load_s, " s");

    // Offloaded layers stream in ahead of the layer that runs (offload.h); nullptr when none are.
    model.weights.streamer = make_offload_streamer(model.weights, run_layers, opt.load.offload_prefetch);

    forward_batches(ForwardRun{opt, inputs, sinks.tap, head, nll_chunk, run_layers}, model, res);
    if (sinks.absmax) res.absmax = sinks.absmax->summary();
    res.metadata = run_metadata(opt, hf, model, inputs, layers, sinks, res);
    return res;
}

}  // namespace extractor
