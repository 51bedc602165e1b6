// `extract run --perplexity`: the model's next-token loss computed in the same forward pass that
// feeds the capture sinks. The final norm (model.norm) and the output projection (lm_head, or the
// embedding when tie_word_embeddings) are loaded next to the last layer; each batch's last residual
// stream goes through them a chunk of tokens at a time, so a [tokens, vocab] logits matrix is never
// whole on the device. The log-softmax is taken in fp32 over logits computed in the run dtype (as
// transformers' ForCausalLMLoss upcasts the logits before its cross entropy).
//
// Convention (the predecessor's): next-token loss over each window, none on its first token; a
// window of T tokens contributes T-1 losses. Overall perplexity = exp(sum of NLL / tokens scored),
// the mean HF's model(ids, labels=ids).loss takes over a batch of equal-length windows.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "extractor/capture.h"
#include "extractor/model.h"
#include "extractor/perplexity_summary.h"
#include "extractor/sinks/host_transfer.h"

namespace extractor {

struct LmHead {
    at::Tensor norm;    // [H] final norm gain, run dtype
    at::Tensor weight;  // [V,H] output projection, run dtype
    bool tied = false;  // weight is the embedding (tie_word_embeddings)
};

// Loads model.norm.weight and lm_head.weight (or reuses the loaded embedding when the config ties
// them) onto the device of the model's last run layer. random: gain 1 and N(0, 0.02) lm_head
// (seeded by `seed`), as random_model does for the layers. Throws common::Error(usage) naming the
// file and tensor when one is missing or has the wrong shape or dtype.
LmHead load_lm_head(const Model & m, bool random, uint64_t seed);

// Tokens per logits chunk when none is given: about 2^26 logits per chunk (256 MiB in fp32), in
// whole multiples of 128 rows where the vocabulary allows.
int64_t default_nll_chunk_tokens(int64_t vocab);

// h: [B,T,H] the residual stream after the last layer (Family::forward's result); ids: int64
// [B,T] on any device. Returns fp32 [B,T-1] on h's device: nll[b,t] = -log softmax(logits of
// position t)[ids[b,t+1]]. chunk_tokens > 0 logits rows are formed at a time.
at::Tensor token_nll(const Model & m, const LmHead & head, const at::Tensor & h, const at::Tensor & ids,
                     int64_t chunk_tokens);

// From a batch's fp32 [B,T-1] NLL (any device): one record per row.
std::vector<SequenceNll> sequence_nll(const at::Tensor & nll, const std::vector<int64_t> & sequence_indices);

// The extractor's own perplexity listener: keeps one SequenceNll per window. A batch's losses reach
// the host without blocking (HostTransfer) and become records when the next batch's arrive or at
// summary(), so the device never waits on this sink mid-run.
class PerplexitySink final : public CaptureSink {
public:
    bool wants(Site, int) const override { return false; }
    void begin_batch(const BatchInfo & batch) override { rows_ = batch.sequence_indices; }
    void on_capture(Site, int, const at::Tensor &) override {}
    void end_batch() override {}
    void on_token_nll(const at::Tensor & nll) override;
    nlohmann::json summary() const;

private:
    // Folds the batch in flight into records_ (logically const: summary() calls it too).
    void finish_pending() const;

    std::vector<int64_t> rows_;
    mutable std::vector<SequenceNll> records_;
    mutable HostTransfer pending_;               // the last batch's losses, fp64 [B,T-1]
    mutable std::vector<int64_t> pending_rows_;  // its sequence indices
};

}  // namespace extractor
