// Perplexity in the forward pass (perplexity.h).
#include "extractor/perplexity.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "extractor/checkpoint/sharded.h"
#include "extractor/cuda/fused_ops.h"
#include "extractor/ops.h"
#include "extractor/shape_text.h"

namespace extractor {

namespace {

// A checkpoint tensor for the output head, checked (present, shape, dtype) before it is read.
at::Tensor checked_view(const Checkpoint & ck, const std::string & dir, const std::string & name, std::vector<int64_t> shape,
                        const std::string & why) {
    if (!ck.contains(name))
        throw common::Error(common::ErrorKind::Usage, dir + ": tensor " + name + ": missing from the checkpoint (" + why + ")")
            .with("file", dir)
            .with("tensor", name);
    const TensorInfo & info = ck.info(name);
    const std::string file = ck.file_of(name).path();
    if (info.shape != shape)
        throw common::Error(common::ErrorKind::Usage, file + ": tensor " + name + ": shape " + shape_text(info.shape) +
                                                          " but config.json implies " + shape_text(shape))
            .with("file", file)
            .with("tensor", name);
    if (info.dtype != "BF16" && info.dtype != "F16" && info.dtype != "F32")
        throw common::Error(common::ErrorKind::Usage,
                            file + ": tensor " + name + ": dtype " + info.dtype + " is not a supported weight dtype (BF16, F16, F32)")
            .with("file", file)
            .with("tensor", name);
    return ck.view(name);
}

}  // namespace

LmHead load_lm_head(const Model & m, bool random, uint64_t seed) {
    if (m.run_layers < 1) throw common::Error::internal("load_lm_head: no layers run");
    const c10::Device dev = m.weights.compute[static_cast<size_t>(m.run_layers - 1)];
    const at::ScalarType norm_dtype = m.dtype;  // as transformers v5 loads model.norm for bf16 and f32 runs
    const auto opts = at::TensorOptions().device(dev);
    LmHead head;
    head.tied = m.cfg.tie_embeddings;
    const int64_t V = m.cfg.vocab, H = m.cfg.hidden;
    if (random) {
        head.norm = at::ones({H}, opts.dtype(norm_dtype));
        if (!head.tied) {
            at::manual_seed(seed ^ 0x6c6d5f68656164ull);  // "lm_head": not the layers' stream
            head.weight = at::empty({V, H}, opts.dtype(m.dtype)).normal_(0.0, 0.02);
        }
    } else {
        Checkpoint ck = Checkpoint::open(m.dir);
        head.norm = checked_view(ck, m.dir, "model.norm.weight", {H}, "the final norm, needed by --perplexity")
                        .to(opts.dtype(norm_dtype));
        if (!head.tied)
            head.weight = checked_view(ck, m.dir, "lm_head.weight", {V, H},
                                       "needed by --perplexity; config.json has tie_word_embeddings false")
                              .to(opts.dtype(m.dtype));
    }
    if (head.tied) {
        if (!m.weights.embed.defined()) throw common::Error::internal("load_lm_head: the embedding is not loaded");
        head.weight = m.weights.embed.to(dev);  // same storage when the embedding already lives there
    }
    return head;
}

int64_t default_nll_chunk_tokens(int64_t vocab) {
    // Whole multiples of 128 rows where the vocabulary allows: the lm_head matmul's row tiles are
    // then full (1334 rows at OLMoE's vocabulary left the 11th tile of 128 less than half used).
    const int64_t rows = (int64_t{1} << 26) / std::max<int64_t>(1, vocab);
    return rows >= 128 ? rows / 128 * 128 : std::max<int64_t>(1, rows);
}

at::Tensor token_nll(const Model & m, const LmHead & head, const at::Tensor & h, const at::Tensor & ids, int64_t chunk_tokens) {
    if (chunk_tokens < 1) throw common::Error::usage("--perplexity-chunk must be 1 or more, got " + std::to_string(chunk_tokens));
    const int64_t B = h.size(0), T = h.size(1), H = h.size(2);
    if (T < 2) return at::empty({B, 0}, h.options().dtype(at::kFloat));
    // Positions 0..T-2 predict tokens 1..T-1; the norm is per position, so the last one is skipped.
    at::Tensor x = m.family->final_norm(m.cfg, h.narrow(1, 0, T - 1), head.norm).reshape({B * (T - 1), H});  // [N,H]
    // Staged through pinned memory: a pageable copy would make the host wait for the whole forward.
    at::Tensor target = to_device_async(ids.narrow(1, 1, T - 1).reshape({B * (T - 1)}).to(at::kLong), h.device());  // [N]
    const int64_t N = x.size(0);
    at::Tensor nll = at::empty({N}, h.options().dtype(at::kFloat));                                         // [N]
    ops::ProfileScope profile("token_nll");
    for (int64_t s = 0; s < N; s += chunk_tokens) {
        const int64_t n = std::min(chunk_tokens, N - s);
        at::Tensor logits = at::linear(x.narrow(0, s, n), head.weight);                                      // [n,V]
        if (fused::usable(logits)) {
            // One read of the activation-dtype logits (the fp32 copy and log_softmax output below
            // cost more memory traffic than the lm_head matmul itself at OLMoE's vocabulary).
            nll.narrow(0, s, n).copy_(fused::token_nll(logits, target.narrow(0, s, n)));
            continue;
        }
        at::Tensor logp = at::log_softmax(logits.to(at::kFloat), -1);                                         // [n,V]
        nll.narrow(0, s, n).copy_(logp.gather(1, target.narrow(0, s, n).unsqueeze(1)).squeeze(1).neg());
    }
    return nll.reshape({B, T - 1});
}


std::vector<SequenceNll> sequence_nll(const at::Tensor & nll, const std::vector<int64_t> & sequence_indices) {
    at::Tensor host = nll.to(at::kCPU, at::kDouble).contiguous();  // [B,T-1]
    if (host.dim() != 2) throw common::Error::internal("token NLL of shape " + shape_text(host.sizes()) + ", not [B,T-1]");
    const int64_t B = host.size(0), L = host.size(1);
    if (static_cast<size_t>(B) != sequence_indices.size())
        throw common::Error::internal("token NLL has " + std::to_string(B) + " rows for " + std::to_string(sequence_indices.size()) +
                                      " sequences");
    const int buckets = L > 0 ? nll_position_bucket(L) + 1 : 0;
    std::vector<SequenceNll> out;
    const double * p = host.data_ptr<double>();
    for (int64_t b = 0; b < B; ++b) {
        SequenceNll r;
        r.sequence_index = sequence_indices[static_cast<size_t>(b)];
        r.tokens = L;
        r.bucket_nll.assign(static_cast<size_t>(buckets), 0.0);
        r.bucket_tokens.assign(static_cast<size_t>(buckets), 0);
        for (int64_t t = 0; t < L; ++t) {
            const double v = p[b * L + t];
            const int k = nll_position_bucket(t + 1);  // the predicted token's position
            r.nll_sum += v;
            r.bucket_nll[static_cast<size_t>(k)] += v;
            r.bucket_tokens[static_cast<size_t>(k)] += 1;
        }
        out.push_back(std::move(r));
    }
    return out;
}

void PerplexitySink::finish_pending() const {
    if (!pending_.defined()) return;
    for (auto & r : sequence_nll(pending_.wait(), pending_rows_)) records_.push_back(std::move(r));
    pending_ = HostTransfer();
}

void PerplexitySink::on_token_nll(const at::Tensor & nll) {
    // Checked now, not when the records are made a batch later (the error then names this batch).
    if (nll.dim() != 2 || nll.size(0) != static_cast<int64_t>(rows_.size()))
        throw common::Error::internal("token NLL of shape " + shape_text(nll.sizes()) + " for " + std::to_string(rows_.size()) +
                                      " sequences, not [B,T-1]");
    finish_pending();
    pending_ = HostTransfer(nll.to(at::kDouble));
    pending_rows_ = rows_;
}

nlohmann::json PerplexitySink::summary() const {
    finish_pending();
    std::vector<SequenceNll> sorted = records_;
    std::sort(sorted.begin(), sorted.end(), [](const SequenceNll & a, const SequenceNll & b) { return a.sequence_index < b.sequence_index; });
    return perplexity_summary(sorted);
}

}  // namespace extractor
