// Model planning and loading (model.h).
#include "extractor/model.h"

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <thread>

#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "extractor/checkpoint/sharded.h"
#include "extractor/host_memory.h"
#include "extractor/load_pool.h"
#include "extractor/mxfp4.h"
#include "extractor/shape_text.h"
#include "extractor/offload.h"

namespace extractor {

namespace {

at::Tensor & dest_tensor(Weights & w, int layer, Slot slot) {
    if (slot == Slot::Embed) return w.embed;
    return *w.layers[static_cast<size_t>(layer)].slot(slot);
}

// Allocates every destination on its home device (pinned when it is streamed to a GPU later).
void allocate(Model & m) {
    Weights & w = m.weights;
    w.layers.assign(static_cast<size_t>(m.cfg.n_layers), LayerWeights{});
    w.embed_device = m.placement.embed_device;
    w.home = m.placement.home;
    w.compute = m.placement.compute;
    for (const DestSpec & d : m.plan.dests) {
        if (d.layer >= m.run_layers) continue;
        c10::Device dev = d.layer < 0 ? w.embed_device : w.home[static_cast<size_t>(d.layer)];
        bool pinned = d.layer >= 0 && dev.is_cpu() && w.compute[static_cast<size_t>(d.layer)].is_cuda();
        const at::ScalarType dtype = d.storage == Storage::RunDtype ? m.dtype
                                     : d.storage == Storage::F32    ? at::kFloat
                                                                    : at::kByte;  // MXFP4 blocks / scales
        // Offloaded layers: exactly-sized pinned memory (offload.h), not the power-of-two blocks of
        // PyTorch's pinned allocator.
        dest_tensor(w, d.layer, d.slot) = pinned ? pinned_empty(d.shape, dtype) : at::empty(d.shape, at::TensorOptions().dtype(dtype).device(dev));
    }
}

at::Tensor dest_slice(Weights & w, const WeightSpec & s) {
    at::Tensor d = dest_tensor(w, s.layer, s.slot);
    if (s.expert >= 0) d = d[s.expert].narrow(0, s.row_offset, s.shape[0]);
    return d;
}

void print_plan(const Model & m) {
    const auto & e = m.estimate;
    common::log::info("model ", m.cfg.model_type, ": ", m.cfg.n_layers, " layers, hidden ", m.cfg.hidden,
                      m.cfg.n_moe_layers() ? ", " + std::to_string(m.cfg.n_experts) + " experts top-" + std::to_string(m.cfg.top_k) : "",
                      "; running ", m.run_layers, " layers in ", dtype_name(m.dtype));
    common::log::info("memory estimate: weights ", common::format_bytes(static_cast<double>(e.total_bytes)),
                      " (all experts counted; lm_head and final norm not counted: loaded only with --perplexity), activations ~",
                      common::format_bytes(static_cast<double>(e.activation_bytes)), " per device");
    for (const auto & line : m.placement.describe()) common::log::info("placement: ", line);
}

// The plan's sources for layers 0..layers-1, each checked against the checkpoint's headers
// (present, shape, dtype) before a byte of tensor data is read or a destination allocated. First,
// config.json's layer count against what the checkpoint holds: a config claiming more layers than
// there are is named as such, not as a missing tensor somewhere.
std::vector<const WeightSpec *> checked_sources(const Model & m, const Checkpoint & ck, int layers) {
    const int64_t last = m.cfg.n_layers - 1;
    if (!ck.has_prefix("model.layers." + std::to_string(last) + "."))
        throw common::Error(common::ErrorKind::Usage,
                            m.hf.path + ": key num_hidden_layers: " + std::to_string(m.cfg.n_layers) + " but the checkpoint in " +
                                m.dir + " has no tensors for layer " + std::to_string(last) + " (model.layers." +
                                std::to_string(last) + ".*)")
            .with("file", m.hf.path)
            .with("key", "num_hidden_layers");
    std::vector<const WeightSpec *> todo;
    for (const WeightSpec & s : m.plan.sources) {
        if (s.layer >= layers) continue;
        if (!ck.contains(s.name))
            throw common::Error(common::ErrorKind::Usage,
                                m.dir + ": tensor " + s.name + ": missing from the checkpoint (needed by " +
                                    std::string(m.family->name()) + " with this config.json)")
                .with("file", m.dir)
                .with("tensor", s.name);
        const TensorInfo & info = ck.info(s.name);
        const std::string file = ck.file_of(s.name).path();
        if (info.shape != s.shape)
            throw common::Error(common::ErrorKind::Usage, file + ": tensor " + s.name + ": shape " + shape_text(info.shape) +
                                                              " but config.json implies " + shape_text(s.shape) + " (dtype " + info.dtype + ")")
                .with("file", file)
                .with("tensor", s.name);
        if (!s.stored_dtype.empty() && info.dtype != s.stored_dtype)
            throw common::Error(common::ErrorKind::Usage, file + ": tensor " + s.name + ": dtype " + info.dtype + " but " +
                                                              s.stored_dtype + " is required (MXFP4 blocks and scales are bytes)")
                .with("file", file)
                .with("tensor", s.name);
        if (s.stored_dtype.empty() && info.dtype != "BF16" && info.dtype != "F16" && info.dtype != "F32")
            throw common::Error(common::ErrorKind::Usage, file + ": tensor " + s.name + ": dtype " + info.dtype +
                                                              " is not a supported weight dtype (BF16, F16, F32)")
                .with("file", file)
                .with("tensor", s.name);
        todo.push_back(&s);
    }
    return todo;
}

// `extract run --dequantize`: every layer's MXFP4 experts become plain [E,2I,H] / [E,H,I] tensors
// in the run dtype where they live (pinned again for an offloaded layer), one tensor at a time.
void dequantize_experts(Model & m) {
    for (int l = 0; l < m.run_layers; ++l) {
        ops::MoeWeights & moe = m.weights.layers[static_cast<size_t>(l)].moe;
        if (!moe.gate_up_scales.defined()) continue;
        const std::string where = m.dir + ": layer " + std::to_string(l) + " experts";
        auto one = [&](at::Tensor & blocks, at::Tensor & scales) {
            const bool pinned = blocks.is_cpu() && blocks.is_pinned();
            at::Tensor plain = mxfp4::dequantize(blocks, scales, m.dtype);
            if (pinned) {
                blocks = pinned_empty(plain.sizes(), plain.scalar_type());
                blocks.copy_(plain);
            } else {
                blocks = plain;
            }
            scales = at::Tensor();
        };
        mxfp4::check_packed(moe.gate_up, moe.gate_up_scales, where);
        mxfp4::check_packed(moe.down, moe.down_scales, where);
        one(moe.gate_up, moe.gate_up_scales);
        one(moe.down, moe.down_scales);
    }
}

}  // namespace

at::ScalarType parse_dtype(const std::string & t) {
    if (t == "bf16" || t == "bfloat16") return at::kBFloat16;
    if (t == "f16" || t == "fp16" || t == "float16") return at::kHalf;
    if (t == "f32" || t == "fp32" || t == "float32") return at::kFloat;
    throw common::Error::usage("dtype \"" + t + "\" is not bf16, f16 or f32");
}

std::string dtype_name(at::ScalarType t) {
    switch (t) {
    case at::kBFloat16: return "bf16";
    case at::kHalf: return "f16";
    case at::kFloat: return "f32";
    default: return c10::toString(t);
    }
}

int cuda_device_count() {
    if (!at::detail::getCUDAHooks().hasCUDA()) return 0;
    return static_cast<int>(at::detail::getCUDAHooks().getNumGPUs());
}

bool is_device_name(const std::string & d) {
    const bool cuda_index = d.size() > 5 && d.size() <= 9 && d.rfind("cuda:", 0) == 0 &&
                            d.find_first_not_of("0123456789", 5) == std::string::npos;
    return d == "cpu" || d == "cuda" || cuda_index;
}

void check_load_options(const LoadOptions & opt) {
    const std::string & d = opt.device;
    // Checked by syntax here, before "no CUDA device" (capacity, exit 4) can be said of a typo.
    if (d != "auto" && !is_device_name(d))
        throw common::Error::usage("--device \"" + d + "\" is not cpu, cuda, cuda:N or auto");
    // A negative or NaN timeout made every load "stall" at once (exit 7).
    if (!(opt.stall_timeout_s > 0) || !std::isfinite(opt.stall_timeout_s))
        throw common::Error::usage("--load-stall-timeout must be a positive number of seconds, got " +
                                   std::to_string(opt.stall_timeout_s));
    if (opt.threads < 1 || opt.threads > kMaxLoadThreads)
        throw common::Error::usage("--load-threads must be 1 to " + std::to_string(kMaxLoadThreads) + ", got " +
                                   std::to_string(opt.threads));
}

namespace {

// Bytes of one checkpoint tensor as stored: MXFP4 bytes as they are, the rest in config.json's
// dtype (bf16 unless it says float32; the exact dtype is in headers not read at planning time).
uint64_t stored_bytes(const ModelConfig & cfg, const WeightSpec & s) {
    uint64_t n = 1;
    for (int64_t d : s.shape) n *= static_cast<uint64_t>(std::max<int64_t>(d, 0));
    const uint64_t element = !s.stored_dtype.empty() ? 1 : cfg.checkpoint_dtype == "float32" ? 4 : 2;
    return n * element;
}

uint64_t power_of_two_at_least(uint64_t n) {
    uint64_t p = 1;
    while (p < n && p <= (UINT64_MAX >> 1)) p <<= 1;
    return p;
}

}  // namespace

std::optional<HostNeed> host_memory_need(const Model & m, const LoadOptions & opt) {
    const Placement & p = m.placement;
    const MemoryEstimate & e = m.estimate;
    HostNeed need;
    need.model = m.dir + " (" + m.cfg.model_type + ")";
    const std::string weights_text = "weights in " + dtype_name(m.dtype) + ", all experts counted" +
                                     (e.head_bytes > 0 ? ", with the final norm and lm_head" : "");
    if (p.embed_device.is_cpu()) {
        // plan_placement puts everything on the CPU, or the embedding on a GPU: this is a CPU run.
        need.what = "a CPU run";
        need.bytes = e.total_bytes + e.activation_bytes;
        need.breakdown = weights_text + ": " + common::format_bytes(static_cast<double>(e.total_bytes)) +
                         "; working set for a batch of " + std::to_string(opt.batch) + " x " + std::to_string(opt.seq_len) +
                         " tokens: " + common::format_bytes(static_cast<double>(e.activation_bytes));
        need.advice = std::string("free memory, lower --batch-size or --seq-len, capture fewer --layers (layers after the last one "
                                  "listed are not loaded)") +
                      (m.dtype == at::kFloat ? ", use --dtype bf16 (half the weights)" : "") + ", run on a GPU";
        return need;
    }
    uint64_t pinned = 0;
    int streamed = 0;
    for (size_t l = 0; l < p.home.size() && l < e.layer_bytes.size(); ++l)
        if (p.home[l].is_cpu()) {
            pinned += e.layer_bytes[l];
            ++streamed;
        }
    // A GPU-resident run only stages tensors through the host, a few at a time.
    if (streamed == 0) return std::nullopt;
    // The loader copies each tensor through a pinned staging buffer from PyTorch's caching host
    // allocator (power-of-two blocks); at most --load-threads of them are in flight at once.
    std::vector<uint64_t> sizes;
    for (const WeightSpec & s : m.plan.sources)
        if (s.layer < m.run_layers) sizes.push_back(power_of_two_at_least(stored_bytes(m.cfg, s)));
    const size_t in_flight = std::min(sizes.size(), static_cast<size_t>(std::max(opt.threads, 1)));
    std::partial_sort(sizes.begin(), sizes.begin() + static_cast<std::ptrdiff_t>(in_flight), sizes.end(), std::greater<>());
    uint64_t staging = 0;
    for (size_t i = 0; i < in_flight; ++i) staging += sizes[i];
    need.what = "the " + std::to_string(streamed) + " offloaded layer" + (streamed == 1 ? "" : "s") + " (pinned host memory)";
    need.bytes = pinned + staging;
    need.breakdown = weights_text + " of the offloaded layers: " + common::format_bytes(static_cast<double>(pinned)) +
                     "; the loader's pinned staging buffers (" + std::to_string(in_flight) +
                     " tensors at a time, --load-threads): up to " + common::format_bytes(static_cast<double>(staging));
    need.advice = "free host memory, give the model more GPU memory (--device auto takes every visible GPU) so fewer layers "
                  "are offloaded, lower --load-threads";
    return need;
}

Model plan_model(const std::string & dir, const LoadOptions & opt) {
    check_load_options(opt);
    Model m;
    m.dir = dir;
    m.hf = read_hf_config(dir);
    m.family = &find_family(m.hf.model_type);
    m.cfg = m.family->parse_config(m.hf);
    m.cfg.dequantize_experts = opt.dequantize && m.cfg.mxfp4_experts;
    m.dtype = opt.dtype;
    m.run_layers = opt.run_layers < 0 ? static_cast<int>(m.cfg.n_layers) : opt.run_layers;
    if (m.run_layers > m.cfg.n_layers)
        throw common::Error::usage("layer " + std::to_string(m.run_layers - 1) + " requested but the model has " +
                                   std::to_string(m.cfg.n_layers) + " layers (0-" + std::to_string(m.cfg.n_layers - 1) + ")");
    // The fused v5 expert layout is detected from the index/header, cheaply, when files exist;
    // so are the tensors the family names as not part of the forward pass (qwen3_next's mtp.*).
    const std::vector<std::string> ignored = m.family->ignored_weight_prefixes();
    if ((m.cfg.n_moe_layers() > 0 || !ignored.empty()) && Checkpoint::present(dir)) {
        const Checkpoint ck = Checkpoint::open(dir);
        if (m.cfg.n_moe_layers() > 0) m.fused_experts = stores_fused_experts(m.cfg, ck);
        for (const std::string & prefix : ignored) {
            size_t n = 0;
            for (const std::string & name : ck.names()) n += name.rfind(prefix, 0) == 0 ? 1 : 0;
            if (n > 0) common::log::info(m.cfg.model_type, ": ignoring ", n, " tensors under ", prefix, "* (not part of the forward pass)");
        }
    }
    m.plan = m.family->plan_weights(m.cfg, m.fused_experts);
    m.estimate = estimate_memory(m.cfg, m.plan, static_cast<int>(c10::elementSize(m.dtype)), m.run_layers, opt.batch,
                                 opt.seq_len, opt.lm_head);
    m.placement = plan_placement(m.estimate, opt.device, parse_max_memory(opt.max_memory), opt.strategy,
                                 cuda_device_count(), opt.offload_prefetch + 1);
    // Before a byte is allocated: a CPU run larger than the machine was otherwise loaded until the
    // OOM killer ended it minutes in, without a word, and a pinned allocation failing (or killed
    // in a container) mid-load is worse.
    if (opt.host_memory_check)
        if (const auto need = host_memory_need(m, opt)) require_host_memory(*need, probe_host_memory(HostMemoryPaths::from_environment()));
    return m;
}

namespace {

// The tensors to read for layers 0..run_layers-1, checked, in file order so the page cache and
// readahead work for us.
std::vector<const WeightSpec *> sources_in_file_order(const Model & m, const Checkpoint & ck) {
    // Validate every tensor first: a wrong checkpoint fails in milliseconds, not after 60 GB.
    std::vector<const WeightSpec *> todo = checked_sources(m, ck, m.run_layers);
    std::sort(todo.begin(), todo.end(), [&](const WeightSpec * a, const WeightSpec * b) {
        const auto & fa = ck.file_of(a->name).path();
        const auto & fb = ck.file_of(b->name).path();
        return fa != fb ? fa < fb : ck.info(a->name).file_offset < ck.info(b->name).file_offset;
    });
    return todo;
}

// LoadOptions::while_loading on a thread of its own. The hook runs on its own copy of the model
// (tensor handles share storage), so a load that fails with a stall can leave it behind without
// pulling anything from under it. On the error paths (the success path calls join()), the hook
// may use the caller's objects, so it gets time to finish before the loader's frame unwinds; a
// hook stuck on a hung GPU is left behind rather than hanging the error.
class OverlapHook {
public:
    OverlapHook(const LoadOptions & opt, const Model & m) {
        if (!opt.while_loading) return;
        thread_ = std::thread([hook = opt.while_loading, copy = std::make_shared<const Model>(m), done = done_] {
            try {
                hook(*copy);
            } catch (const std::exception & e) {
                common::log::debug("warm-up while loading failed (ignored): ", e.what());
            }
            *done = true;
        });
    }
    OverlapHook(const OverlapHook &) = delete;
    OverlapHook & operator=(const OverlapHook &) = delete;
    ~OverlapHook() {
        if (thread_.joinable()) join_within(thread_, *done_, std::chrono::seconds(30));
    }
    void join() {
        if (thread_.joinable()) thread_.join();
    }

private:
    std::shared_ptr<std::atomic<bool>> done_ = std::make_shared<std::atomic<bool>>(false);
    std::thread thread_;
};

// What one pool worker needs to copy tensors, owned by the workers (shared_ptr): after a stall the
// loader returns an error while they may still run.
struct CopyJob {
    Checkpoint ck;
    Weights weights;                          // handles sharing the model's storage
    WeightPlan plan;                          // keeps the WeightSpec pointers in todo valid
    std::vector<const WeightSpec *> todo;     // into plan.sources
    std::shared_ptr<common::Progress> progress;
    // Fault injection for the watchdog's test: the reader of this tensor stops (for 3x the stall
    // timeout) as a read from a hung network filesystem would.
    std::string stall_tensor;
    double stall_s = 0;
};

std::shared_ptr<CopyJob> make_copy_job(const Model & m, const Checkpoint & ck, const std::vector<const WeightSpec *> & todo,
                                       uint64_t total_bytes, double stall_s) {
    auto job = std::make_shared<CopyJob>(CopyJob{ck, m.weights, m.plan, {}, nullptr, "", stall_s});
    // Re-point todo at the job's copy of the plan.
    for (const WeightSpec * s : todo) job->todo.push_back(&job->plan.sources[static_cast<size_t>(s - m.plan.sources.data())]);
    job->progress = std::make_shared<common::Progress>("loading " + std::string(m.family->name()), total_bytes,
                                                       common::ProgressUnit::Bytes);
    const char * stall_env = std::getenv("EXTRACTOR_FAULT_STALL_TENSOR");
    job->stall_tensor = stall_env ? stall_env : "";
    return job;
}

// Copies one tensor from its memory-mapped file to its home: directly on the CPU, through a pinned
// staging buffer a chunk at a time for a GPU (page faults happen in the memcpy, so each chunk is a
// beat for the watchdog).
void copy_tensor(CopyJob & job, const WeightSpec & s, const std::function<void()> & beat) {
    constexpr size_t kChunk = 64u << 20;
    if (!job.stall_tensor.empty() && s.name == job.stall_tensor)
        std::this_thread::sleep_for(std::chrono::duration<double>(3 * job.stall_s));
    at::Tensor src = job.ck.view(s.name);                        // CPU, mmap
    at::Tensor dst = dest_slice(job.weights, s);                 // reads the handles only
    if (dst.is_cpu()) {
        dst.copy_(src);
        job.progress->advance(src.nbytes());
        return;
    }
    at::Tensor staging = at::empty(src.sizes(), src.options().pinned_memory(true));
    const auto * from = static_cast<const uint8_t *>(src.data_ptr());
    auto * to = static_cast<uint8_t *>(staging.data_ptr());
    for (size_t off = 0; off < src.nbytes(); off += kChunk) {
        size_t n = std::min(kChunk, src.nbytes() - off);
        std::memcpy(to + off, from + off, n);
        job.progress->advance(n);
        beat();
    }
    if (staging.scalar_type() == dst.scalar_type()) dst.copy_(staging, /*non_blocking=*/true);
    else dst.copy_(staging.to(dst.device(), /*non_blocking=*/true));  // convert on the GPU
}

// Waits for the queued host-to-device copies (same stream, so one sync per device suffices), still
// under the watchdog's spirit: a hung transfer shows up as a hang here, so it is done on a thread
// with the same deadline.
void wait_for_transfers(const Placement & placement, double stall_timeout_s) {
    std::vector<c10::Device> devs{placement.embed_device};
    for (const auto & d : placement.home)
        if (std::find(devs.begin(), devs.end(), d) == devs.end()) devs.push_back(d);
    auto synced = std::make_shared<std::atomic<bool>>(false);
    std::thread sync([devs, synced] {
        for (const auto & d : devs)
            if (d.is_cuda()) (void)at::zeros({1}, at::TensorOptions().device(d)).sum().item<float>();
        *synced = true;
    });
    if (!join_within(sync, *synced, std::chrono::duration<double>(stall_timeout_s)))
        throw common::Error(common::ErrorKind::Timeout, "host-to-GPU transfer of the weights did not finish within " +
                                                            std::to_string(static_cast<int>(stall_timeout_s)) + " s");
}

}  // namespace

Model load_model(const std::string & dir, const LoadOptions & opt) {
    auto t0 = std::chrono::steady_clock::now();
    Model m = plan_model(dir, opt);
    print_plan(m);
    Checkpoint ck = Checkpoint::open(dir);
    const std::vector<const WeightSpec *> todo = sources_in_file_order(m, ck);
    uint64_t total_bytes = 0;
    for (const WeightSpec * s : todo) total_bytes += ck.info(s->name).size_bytes();
    allocate(m);

    OverlapHook overlap(opt, m);
    auto job = make_copy_job(m, ck, todo, total_bytes, opt.stall_timeout_s);
    LoadPoolOptions pool;
    pool.threads = opt.threads;
    pool.stall_timeout_s = opt.stall_timeout_s;
    run_load_pool(
        job->todo.size(), pool,
        [job](size_t i) { return job->ck.file_of(job->todo[i]->name).path() + ": " + job->todo[i]->name; },
        [job](size_t i, const std::function<void()> & beat) { copy_tensor(*job, *job->todo[i], beat); });
    wait_for_transfers(m.placement, opt.stall_timeout_s);
    overlap.join();
    job->progress->finish();
    m.weights = job->weights;
    if (m.cfg.dequantize_experts) dequantize_experts(m);
    m.load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return m;
}

bool stores_fused_experts(const ModelConfig & cfg, const Checkpoint & ck) {
    for (int64_t l = 0; l < cfg.n_layers; ++l)
        if (cfg.layer_is_moe[static_cast<size_t>(l)])
            return ck.contains("model.layers." + std::to_string(l) + ".mlp.experts.gate_up_proj");
    return false;
}

WeightsCheck check_weights(const Model & m, const Checkpoint & ck) {
    WeightsCheck out;
    out.files = ck.files();
    for (const WeightSpec * s : checked_sources(m, ck, static_cast<int>(m.cfg.n_layers))) {
        ++out.tensors;
        out.bytes += ck.info(s->name).size_bytes();
    }
    return out;
}

Model random_model(const std::string & dir, const LoadOptions & opt, uint64_t seed) {
    auto t0 = std::chrono::steady_clock::now();
    Model m = plan_model(dir, opt);
    print_plan(m);
    allocate(m);
    at::manual_seed(seed);
    for (const DestSpec & d : m.plan.dests) {
        if (d.layer >= m.run_layers) continue;
        at::Tensor & home = dest_tensor(m.weights, d.layer, d.slot);
        // An offloaded layer's weights are drawn on its GPU and copied to pinned memory: the CPU
        // generator would take minutes for the tens of GB a full-shape offload run holds.
        const bool via_gpu = d.layer >= 0 && m.weights.offloaded(d.layer);
        at::Tensor t = via_gpu ? at::empty(home.sizes(), home.options().device(m.weights.compute[static_cast<size_t>(d.layer)]).pinned_memory(false))
                               : home;
        bool is_norm = d.slot == Slot::InputNorm || d.slot == Slot::PostNorm || d.slot == Slot::QNorm || d.slot == Slot::KNorm;
        if (is_norm) t.fill_(1.0);
        else if (d.storage == Storage::Mxfp4Blocks) t.random_(0, 256);  // every e2m1 code equally likely
        else if (d.storage == Storage::Mxfp4Scales) t.random_(119, 122);  // x 2^-8..2^-6: weights of ~0.02
        else t.normal_(0.0, 0.02);
        if (via_gpu) home.copy_(t);
    }
    if (m.cfg.dequantize_experts) dequantize_experts(m);
    for (const auto & d : m.placement.home)
        if (d.is_cuda()) (void)at::zeros({1}, at::TensorOptions().device(d)).sum().item<float>();
    m.load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return m;
}

}  // namespace extractor
