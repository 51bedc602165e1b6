// The capture contract between a model's forward pass and whoever listens (the safetensors sink
// that writes a run to disk, the in-process analysis accumulators, tests).
//
// A family's forward calls tap(site, layer, x) at fixed sites; it never knows who listens. Each
// sink is first asked the cheap wants(site, layer) (llama.cpp's "ask" phase), and only then given
// the tensor. Tensors stay where the forward computed them (usually the GPU) and keep the forward's
// dtype: a sink that copies them to the host does so on purpose, never by accident.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace extractor {

enum class Site {
    LnAttn,    // input_layernorm output: the input to self-attention            [B,T,H]
    LnMlp,     // post_attention_layernorm output: the input to the MLP/MoE block  [B,T,H]
    Residual,  // the residual stream after the layer (the decoder layer's output) [B,T,H]
};

// "ln_attn", "ln_mlp", "residual": used in file names, metadata and JSON.
std::string_view site_name(Site site);
// Inverse of site_name; throws common::Error(usage) for an unknown name.
Site parse_site(std::string_view name);

// What a batch is, so a sink can attribute positions to sequences and tokens.
struct BatchInfo {
    int64_t batch_index = 0;                // 0, 1, 2, ... in the order batches run
    std::vector<int64_t> sequence_indices;  // global index of each row of the batch  [B]
    at::Tensor token_ids;                   // int64 [B,T], on the CPU
    at::Tensor attention_mask;              // int64 [B,T] (1 = real token), on the CPU; undefined = all real
};

// The expert path of one MoE layer (`--expert-stats`): which experts each token was routed to and
// what each routed (token, expert) pair's down_proj produced. Given per chunk of tokens (the MoE
// block may route a long batch in chunks); tensors live on the layer's device, valid only during
// the call.
struct ExpertCapture {
    int64_t experts = 0;      // E
    int64_t first_token = 0;  // index of top_i's first row among the batch's B*T tokens (row-major)
    at::Tensor top_i;         // int64 [n,K]: the expert of each token's K slots (the router's top-k)
    at::Tensor down;          // [S,H], S = n*K: each pair's down_proj output (its bias included), before
                              // the routing weight multiplies it; activation dtype, rows in any order
    at::Tensor slot_row;      // int32 or int64 [S]: the row of `down` that holds slot s = token*K + k
    at::Tensor slot_max;      // optional fp32 [S]: max |down row| of slot s, where the MoE op computed
                              // it on its way (the fused combine); undefined: the sink reads the rows
};
using ExpertObserver = std::function<void(const ExpertCapture &)>;

class CaptureSink {
public:
    virtual ~CaptureSink() = default;
    virtual bool wants(Site site, int layer) const = 0;
    virtual void begin_batch(const BatchInfo & batch) = 0;
    // x: [B,T,H] on the forward's device and dtype; valid only during the call (copy to keep).
    virtual void on_capture(Site site, int layer, const at::Tensor & x) = 0;
    virtual void end_batch() = 0;
    // `extract run --perplexity`: after the batch's forward pass and before end_batch, the
    // next-token negative log-likelihood of every position but the first: nll[b,t] = -log p(token
    // t+1 | tokens 0..t), fp32 [B,T-1] on the device of the last layer. Valid only during the call.
    virtual void on_token_nll(const at::Tensor & nll) { (void)nll; }
    // The expert path (ExpertCapture) of MoE layer `layer`, for sinks that want it: asked once per
    // layer and batch; a family's MoE block then reports each chunk of tokens it routes.
    virtual bool wants_experts(int layer) const { (void)layer; return false; }
    virtual void on_experts(int layer, const ExpertCapture & capture) { (void)layer, (void)capture; }
    // Called once before the first batch (from a thread of its own, while the weights load) with a
    // tensor shaped and placed like this run's captures, holding arbitrary values: do the one-time
    // device work (lazy kernel loading, first allocations) now, so it does not land in the first
    // batch. Must leave what the sink reports unchanged.
    virtual void warm_up(const at::Tensor & example) { (void)example; }
};

// Fans one capture out to several sinks (e.g. write to disk and analyse in the same pass).
class Tap {
public:
    void add(CaptureSink * sink) { sinks_.push_back(sink); }
    bool wants(Site site, int layer) const;
    void begin_batch(const BatchInfo & batch);
    void operator()(Site site, int layer, const at::Tensor & x);
    void end_batch();
    void on_token_nll(const at::Tensor & nll);
    void warm_up(const at::Tensor & example);
    // What a family passes to its MoE op for layer `layer`: forwards ExpertCaptures to the sinks
    // that want them; empty (the op computes nothing extra) when none does.
    ExpertObserver experts(int layer);

private:
    std::vector<CaptureSink *> sinks_;
};

}  // namespace extractor
