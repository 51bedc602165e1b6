// Placement planning (placement.h). GPU memory comes from gpu_memory.h (no CUDA headers needed).
#include "extractor/placement.h"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/progress.h"
#include "common/units.h"
#include "extractor/gpu_memory.h"

namespace extractor {
namespace {

constexpr uint64_t kGiB = uint64_t(1) << 30;

// Spreads the streamed layers evenly through the layers their GPU runs, instead of leaving them
// all at the end. The copy stream can only run ahead into free ring buffers: with every streamed
// layer at the end it sits idle through the resident block but for the copies the ring holds,
// then copies back to back while the GPU waits (Qwen3-Next full shape on an H200: 0.74 of the copy
// bound at prefetch 1). Spread out, each copy overlaps the resident layers before its layer, so
// the batch takes about max(copy time, compute time). The same number of layers is streamed; the
// new choice is kept only if its resident layers and ring (buffers x the largest streamed layer)
// still fit what the GPU had for them. EXTRACTOR_OFFLOAD_SPREAD=0 keeps them at the end.
void spread_offloaded(Placement & p, const MemoryEstimate & est, int64_t left_on_gpu, int64_t buffers) {
    if (const char * v = std::getenv("EXTRACTOR_OFFLOAD_SPREAD"); v && std::string(v) == "0") return;
    const c10::Device gpu = p.compute.back();
    std::vector<size_t> runs_here;  // layers the streaming GPU runs, in order
    size_t streamed = 0;
    int64_t capacity = left_on_gpu;  // what the layers resident there plus the ring may use
    for (size_t l = 0; l < p.home.size(); ++l) {
        if (p.compute[l] != gpu) continue;
        runs_here.push_back(l);
        if (p.home[l].is_cpu()) ++streamed;
        else capacity += static_cast<int64_t>(est.layer_bytes[l]);
    }
    const size_t n = runs_here.size();
    if (streamed == 0 || streamed == n) return;
    // Streamed slot i at the end of the i-th of `streamed` equal stretches: the last layer stays streamed.
    std::vector<bool> pick(n, false);
    for (size_t i = 0; i < streamed; ++i) pick[(i + 1) * n / streamed - 1] = true;
    // More than half streamed picks the GPU's first layer: move that pick to the first resident
    // one, so layer 0 can still warm up while the weights load (extract.cpp skips a streamed one).
    if (pick[0])
        for (size_t j = 1; j < n; ++j)
            if (!pick[j]) {
                pick[0] = false;
                pick[j] = true;
                break;
            }
    int64_t resident = 0, largest = 0;
    for (size_t j = 0; j < n; ++j) {
        const auto b = static_cast<int64_t>(est.layer_bytes[runs_here[j]]);
        if (pick[j]) largest = std::max(largest, b);
        else resident += b;
    }
    if (resident + largest * buffers > capacity) return;  // uneven layer sizes: keep the tail plan
    for (size_t j = 0; j < n; ++j) p.home[runs_here[j]] = pick[j] ? c10::Device(c10::kCPU) : gpu;
}

}  // namespace

MemoryBudget parse_max_memory(const std::string & text) {
    MemoryBudget b;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (item.empty()) continue;
        auto eq = item.find('=');
        if (eq == std::string::npos)
            throw common::Error::usage("--max-memory: entry \"" + item + "\" is not DEVICE=SIZE (e.g. 0=76GiB,cpu=120GiB)");
        std::string dev = item.substr(0, eq);
        uint64_t bytes = common::parse_bytes(item.substr(eq + 1));
        if (dev == "cpu") {
            b.cpu_bytes = bytes;
            b.cpu_given = true;
            continue;
        }
        if (dev.rfind("cuda:", 0) == 0) dev = dev.substr(5);
        if (dev.empty() || dev.find_first_not_of("0123456789") != std::string::npos)
            throw common::Error::usage("--max-memory: device \"" + item.substr(0, eq) + "\" is not a GPU index or cpu");
        int idx = std::stoi(dev);
        for (const auto & g : b.gpus)
            if (g.first == idx) throw common::Error::usage("--max-memory: GPU " + dev + " listed twice");
        b.gpus.emplace_back(idx, bytes);
    }
    return b;
}

PlacementStrategy parse_placement_strategy(const std::string & text) {
    if (text == "sequential") return PlacementStrategy::Sequential;
    if (text == "balanced") return PlacementStrategy::Balanced;
    throw common::Error::usage("--placement: \"" + text + "\" is not sequential or balanced");
}

MemoryEstimate estimate_memory(const ModelConfig & cfg, const WeightPlan & plan, int bpe, int run_layers,
                               int64_t batch, int64_t seq_len, bool with_head) {
    MemoryEstimate e;
    e.embed_bytes = static_cast<uint64_t>(cfg.vocab * cfg.hidden) * bpe;
    // MXFP4 blocks count two weights a byte and their scales none (DestSpec::params).
    e.params_total = plan.params_total() + (cfg.tie_embeddings ? 0 : static_cast<uint64_t>(cfg.vocab * cfg.hidden)) +
                     static_cast<uint64_t>(cfg.hidden);  // + lm_head, final norm (not loaded: never needed)
    // Active parameters per token: all but (E - K) / E of every MoE layer's expert weights and
    // biases. The embedding row is a lookup, but conventionally counted.
    uint64_t inactive = 0;
    if (cfg.n_experts > 0)
        inactive = plan.params_experts() / static_cast<uint64_t>(cfg.n_experts) * static_cast<uint64_t>(cfg.n_experts - cfg.top_k);
    e.params_active = e.params_total - inactive;
    e.total_bytes = e.embed_bytes;
    for (int l = 0; l < run_layers; ++l) {
        e.layer_bytes.push_back(plan.bytes_layer(l, bpe, cfg.dequantize_experts));
        e.total_bytes += e.layer_bytes.back();
    }
    const uint64_t N = static_cast<uint64_t>(batch * seq_len);
    const uint64_t H = static_cast<uint64_t>(cfg.hidden);
    const uint64_t qkv = static_cast<uint64_t>((cfg.n_heads * 3) * cfg.head_dim);  // after repeat_kv
    uint64_t mlp = static_cast<uint64_t>(3 * cfg.intermediate);
    if (cfg.n_moe_layers() > 0)
        mlp = std::max<uint64_t>(mlp, static_cast<uint64_t>(cfg.top_k * (2 * cfg.hidden + 4 * cfg.expert_intermediate)));
    e.activation_bytes = N * (8 * H + 2 * qkv + mlp) * bpe + 256 * (uint64_t(1) << 20);
    // gpt_oss: the sink attention's score chunks (at most 2^27 elements, a few live copies in fp32)
    // and the MXFP4 dequantization buffer (ops::moe_clamped_swiglu's 512 MiB budget).
    if (cfg.attn_sinks) e.activation_bytes += (uint64_t(1) << 27) * 4 * 4;
    if (cfg.mxfp4_experts && !cfg.dequantize_experts) e.activation_bytes += 512 * (uint64_t(1) << 20);
    // qwen3_next's gated delta rule (ops_delta.cpp) works in fp32 on every token at once: q, k, v and
    // their chunked, beta-scaled and decayed copies (about six live [N, Nv, Dk + Dv] fp32 tensors),
    // plus three [N, Nv, 64] chunk matrices (decay, the triangular solve, its products).
    if (std::find(cfg.layer_is_linear.begin(), cfg.layer_is_linear.end(), true) != cfg.layer_is_linear.end()) {
        const auto & la = cfg.linear_attn;
        e.activation_bytes += N * static_cast<uint64_t>(la.n_v_heads) *
                              (6 * static_cast<uint64_t>(la.k_head_dim + la.v_head_dim) + 3 * 64) * 4;
    }
    if (with_head && !e.layer_bytes.empty()) {
        // lm_head (none when tied to the embedding) and the final norm's gain (fp32 at most).
        e.head_bytes = (cfg.tie_embeddings ? 0 : static_cast<uint64_t>(cfg.vocab * cfg.hidden) * bpe) + static_cast<uint64_t>(cfg.hidden) * 4;
        e.layer_bytes.back() += e.head_bytes;
        e.total_bytes += e.head_bytes;
        // A logits chunk (perplexity.h: ~2^26 logits) in the activation dtype, its fp32
        // log-softmax and one more fp32 temporary.
        const uint64_t chunk_tokens = std::max<uint64_t>(1, (uint64_t(1) << 26) / std::max<uint64_t>(1, static_cast<uint64_t>(cfg.vocab)));
        e.activation_bytes += chunk_tokens * static_cast<uint64_t>(cfg.vocab) * (bpe + 8);
    }
    return e;
}

std::vector<std::string> Placement::describe() const {
    // One line per (home, compute) pair, in order of first use, listing its layer ranges: spread
    // streamed layers (spread_offloaded) would otherwise take a line per layer.
    std::vector<std::string> lines{"embedding on " + embed_device.str()};
    std::vector<std::pair<c10::Device, c10::Device>> kinds;
    std::vector<std::string> ranges;
    size_t i = 0;
    while (i < home.size()) {
        size_t j = i;
        while (j + 1 < home.size() && home[j + 1] == home[i] && compute[j + 1] == compute[i]) ++j;
        const std::pair<c10::Device, c10::Device> kind{home[i], compute[i]};
        size_t k = 0;
        while (k < kinds.size() && kinds[k] != kind) ++k;
        if (k == kinds.size()) {
            kinds.push_back(kind);
            ranges.emplace_back();
        }
        ranges[k] += (ranges[k].empty() ? "" : ",") + std::to_string(i) + (j > i ? "-" + std::to_string(j) : "");
        i = j + 1;
    }
    for (size_t k = 0; k < kinds.size(); ++k) {
        std::string line = "layers " + ranges[k] + " on " + kinds[k].first.str();
        if (kinds[k].first != kinds[k].second) line += " (pinned, streamed to " + kinds[k].second.str() + " when they run)";
        lines.push_back(line);
    }
    return lines;
}

Placement plan_placement(const MemoryEstimate & est, const std::string & device, const MemoryBudget & budget,
                         PlacementStrategy strategy, int cuda_device_count, int stream_buffers,
                         const std::function<uint64_t(int)> & free_bytes_of) {
    Placement p;
    const size_t L = est.layer_bytes.size();
    std::string dev = device;
    const bool every_gpu = dev == "auto";
    if (dev == "auto") dev = (cuda_device_count > 0 || !budget.gpus.empty()) ? "cuda" : "cpu";
    if (dev == "cpu") {
        if (!budget.gpus.empty()) throw common::Error::usage("--max-memory names GPUs but --device is cpu");
        p.embed_device = c10::Device(c10::kCPU);
        p.home.assign(L, c10::Device(c10::kCPU));
        p.compute = p.home;
        return p;
    }
    if (cuda_device_count <= 0)
        throw common::Error(common::ErrorKind::Capacity, "--device " + device + ": no CUDA device is visible (this libtorch " +
                                                             "may be CPU-only); use --device cpu");
    std::vector<std::pair<int, uint64_t>> gpus = budget.gpus;
    bool budget_given = !gpus.empty();
    if (gpus.empty()) {
        // No per-GPU budgets: each GPU offers its free memory. `auto` takes every visible GPU, as a
        // multi-GPU machine rented for a model that one GPU cannot hold expects (deploy_and_analyze
        // runs `--device auto`); `cuda` is GPU 0 and `cuda:N` GPU N alone. Sequential placement
        // fills the first GPU before the next, so a model that fits one GPU stays on GPU 0.
        std::vector<int> indices;
        if (every_gpu) {
            for (int i = 0; i < cuda_device_count; ++i) indices.push_back(i);
        } else if (dev.rfind("cuda:", 0) == 0) {
            indices.push_back(std::stoi(dev.substr(5)));
        } else if (dev == "cuda") {
            indices.push_back(0);
        } else {
            throw common::Error::usage("--device \"" + device + "\" is not cpu, cuda, cuda:N or auto");
        }
        for (const int idx : indices) {
            const uint64_t free_b = free_bytes_of ? free_bytes_of(idx) : gpu_memory(idx).free_bytes;
            // Unknown free memory (no CUDA runtime symbols): trust the user and plan for the weights.
            gpus.emplace_back(idx, free_b > 0 ? free_b : est.total_bytes + est.activation_bytes + kGiB);
        }
    }
    for (const auto & g : gpus)
        if (g.first >= cuda_device_count)
            throw common::Error::usage("--max-memory names GPU " + std::to_string(g.first) + " but only " +
                                       std::to_string(cuda_device_count) + " are visible");
    // Every GPU keeps room for one batch's activations; the first also holds the embedding.
    std::vector<int64_t> left;
    for (const auto & g : gpus) left.push_back(static_cast<int64_t>(g.second) - static_cast<int64_t>(est.activation_bytes));
    left[0] -= static_cast<int64_t>(est.embed_bytes);
    p.embed_device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(gpus[0].first));
    if (left[0] < 0)
        throw common::Error(common::ErrorKind::Capacity,
                            "GPU " + std::to_string(gpus[0].first) + " budget " + common::format_bytes(static_cast<double>(gpus[0].second)) +
                                " cannot hold the embedding (" + common::format_bytes(static_cast<double>(est.embed_bytes)) +
                                ") plus one batch of activations (" + common::format_bytes(static_cast<double>(est.activation_bytes)) + ")");
    uint64_t layers_total = 0;
    for (auto b : est.layer_bytes) layers_total += b;
    std::vector<int64_t> target(gpus.size(), INT64_MAX);
    if (strategy == PlacementStrategy::Balanced) {
        uint64_t share = (layers_total + gpus.size() - 1) / gpus.size();
        for (auto & t : target) t = static_cast<int64_t>(share + (L ? est.layer_bytes[0] : 0) / 2);
    }
    std::vector<int64_t> used(gpus.size(), 0);
    size_t g = 0;
    uint64_t offloaded_bytes = 0, max_offloaded = 0;
    for (size_t l = 0; l < L; ++l) {
        const int64_t need = static_cast<int64_t>(est.layer_bytes[l]);
        while (g < gpus.size() && (need > left[g] || used[g] + need > target[g])) ++g;
        if (g < gpus.size()) {
            left[g] -= need;
            used[g] += need;
            c10::Device d(c10::kCUDA, static_cast<c10::DeviceIndex>(gpus[g].first));
            p.home.push_back(d);
            p.compute.push_back(d);
            continue;
        }
        offloaded_bytes += static_cast<uint64_t>(need);
        max_offloaded = std::max<uint64_t>(max_offloaded, static_cast<uint64_t>(need));
        p.home.push_back(c10::Device(c10::kCPU));
        p.compute.push_back(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(gpus.back().first)));
    }
    if (offloaded_bytes > 0) {
        const std::string need_text = common::format_bytes(static_cast<double>(est.total_bytes + est.activation_bytes));
        if (!budget.cpu_given)
            throw common::Error(common::ErrorKind::Capacity,
                                "the model needs " + need_text + " (weights, all experts counted, plus activations) but the GPU " +
                                    std::string(budget_given ? "budgets" : "memory") + " hold less; " +
                                    common::format_bytes(static_cast<double>(offloaded_bytes)) +
                                    " would have to be offloaded; use more GPUs (--device auto takes every visible one; --max-memory 0=SIZE,1=SIZE names them) or allow offload with cpu=SIZE");
        if (offloaded_bytes > budget.cpu_bytes)
            throw common::Error(common::ErrorKind::Capacity,
                                "layers that do not fit on the GPUs need " + common::format_bytes(static_cast<double>(offloaded_bytes)) +
                                    " of pinned CPU memory but --max-memory allows cpu=" +
                                    common::format_bytes(static_cast<double>(budget.cpu_bytes)));
        // The GPU that runs offloaded layers holds stream_buffers of them at a time (the streamer's
        // ring: the layer running and the ones being copied ahead).
        const int64_t buffers = std::max(1, stream_buffers);
        int64_t ring = static_cast<int64_t>(max_offloaded) * buffers;
        if (left.back() < ring) {
            // Give back the last resident layers of that GPU until the ring fits (a layer given
            // back is streamed too, so it can widen the ring's buffers).
            for (size_t l = L; l-- > 0 && left.back() < ring;) {
                if (p.home[l] == p.compute[l] && p.home[l] == p.compute.back()) {
                    left.back() += static_cast<int64_t>(est.layer_bytes[l]);
                    p.home[l] = c10::Device(c10::kCPU);
                    offloaded_bytes += est.layer_bytes[l];
                    max_offloaded = std::max<uint64_t>(max_offloaded, est.layer_bytes[l]);
                    ring = static_cast<int64_t>(max_offloaded) * buffers;
                }
            }
            if (left.back() < ring)
                throw common::Error(common::ErrorKind::Capacity,
                                    "no GPU has room to stream offloaded layers: " + std::to_string(buffers) + " buffers of " +
                                        common::format_bytes(static_cast<double>(max_offloaded)) + " (--offload-prefetch " +
                                        std::to_string(buffers - 1) + ")");
            if (offloaded_bytes > budget.cpu_bytes)
                throw common::Error(common::ErrorKind::Capacity,
                                    "with room kept for " + std::to_string(buffers) + " streamed layers, offloaded layers need " +
                                        common::format_bytes(static_cast<double>(offloaded_bytes)) +
                                        " of pinned CPU memory but --max-memory allows cpu=" +
                                        common::format_bytes(static_cast<double>(budget.cpu_bytes)));
        }
        spread_offloaded(p, est, left.back(), buffers);
    }
    return p;
}

}  // namespace extractor
