// The streaming outlier accumulator: a CaptureSink that turns each captured [B,T,H] layer-norm
// output into a few per-(site, dim) and per-(row, dim) reductions on the capture's own device, so
// full activations never reach the host. Only [B,H]-sized planes (per row and dim) cross to the
// host, once per batch, without blocking; the per-sequence records are made from them there. Both criteria modes (criteria.h) are computed from this one
// pass: the per-sequence records give the predecessor's per-batch semantics exactly, the pooled
// site/position counts give the dataset-level (paper) criterion. Follows docs/outlier-method.md#streaming
// and llama.cpp's imatrix collector (sums, counts and maxima only).
#pragma once

#include "analysis/statistics.h"
#include "extractor/capture.h"

#include <map>
#include <memory>

namespace analysis {

struct AccumulatorOptions {
    double threshold = 6.0;       // |x| >= threshold is a hit (inclusive, as LLM.int8() and the predecessor)
    bool round_bf16 = true;       // bf16-round before thresholding (docs/outlier-method.md#rounding)
    bool histogram = true;        // per-site log2 magnitude histogram (for the distribution plot)
    int massive_top_k = 0;        // > 0: also capture the residual stream and keep its top-k |x| per layer
    int token_dims_per_batch = 32;  // dims per batch whose hit positions are tallied by token id
    HistogramSpec histogram_spec;
    // Layer-norm captures on a CUDA device (bf16, fp16, fp32) take one fused kernel pass
    // (cuda/accumulate_kernels.h) instead of a dozen ATen ones, with bit-identical statistics.
    // false, or ANALYSIS_FUSED=0 in the environment, keeps the ATen path (to compare the two).
    bool cuda_kernels = true;
    // Threshold sweep (`--thresholds`): ascending, distinct, positive, at most kMaxSweepThresholds.
    // The hit statistics of every one are counted in the same pass (Statistics::sweep_thresholds);
    // empty: off.
    std::vector<double> sweep_thresholds;
    // Per-expert statistics of MoE layers (`--expert-stats`): the sink asks for the expert path's
    // down_proj outputs (extractor::ExpertCapture) and keeps per layer and expert the tokens
    // routed, the max |x| and the tokens whose output reaches `threshold`.
    bool expert_stats = false;
};

// Token ids a batch may carry lie in [0, kMaxTokenVocab) (extractor::hf_limits::kVocab, the largest
// vocabulary a config.json may state): the token tallies are sized by the largest id seen, so an
// unbounded id (a hostile batch file) sized them by gigabytes. begin_batch refuses others.
inline constexpr int64_t kMaxTokenVocab = int64_t{1} << 22;

// Parses "3,4,5,6,8,10,20" (the `--thresholds` value) into an ascending list; usage error naming
// the bad item for anything not a positive finite number, duplicates or more than kMaxSweepThresholds.
std::vector<double> parse_thresholds(const std::string & text);

class OutlierAccumulator : public extractor::CaptureSink {
public:
    explicit OutlierAccumulator(AccumulatorOptions options = {});
    ~OutlierAccumulator() override;

    bool wants(extractor::Site site, int layer) const override;
    void begin_batch(const extractor::BatchInfo & batch) override;
    void on_capture(extractor::Site site, int layer, const at::Tensor & x) override;
    void end_batch() override;
    // `--perplexity`: the batch's next-token losses [B,T-1] become one SequencePerplexity per row
    // (sums per position bucket, in fp64 on the host; B*(T-1) floats leave the device).
    void on_token_nll(const at::Tensor & nll) override;
    bool wants_experts(int layer) const override;
    void on_experts(int layer, const extractor::ExpertCapture & capture) override;
    // Runs one throwaway batch (both layer-norm sites, end_batch included) through an accumulator
    // with these options: loads every kernel the real batches use.
    void warm_up(const at::Tensor & example) override;

    // Copies the device-side totals to the host. Valid between batches; may be called repeatedly
    // (e.g. to checkpoint a long run). `metadata` is stored as the run's metadata.
    Statistics statistics(const nlohmann::json & metadata = nlohmann::json::object()) const;

    // Captures accumulated by the fused CUDA pass so far (0 where it is not built, is switched off,
    // or the captures were on the CPU).
    int64_t fused_captures() const;
    // Expert captures (`--expert-stats`) the fused per-expert pass took, likewise.
    int64_t fused_expert_captures() const;

private:
    struct State;
    AccumulatorOptions options_;
    std::unique_ptr<State> state_;
};

// Forwards every capture to an accumulator and saves its statistics (through a temporary file) every
// `every_batches` batches, so a long run that dies keeps what it measured: the partial file is an
// ordinary statistics file (`analyze report`, `analyze merge` read it).
class CheckpointSink : public extractor::CaptureSink {
public:
    CheckpointSink(OutlierAccumulator & inner, std::string path, int64_t every_batches, nlohmann::json metadata = {});
    bool wants(extractor::Site site, int layer) const override { return inner_.wants(site, layer); }
    void begin_batch(const extractor::BatchInfo & batch) override { inner_.begin_batch(batch); }
    void on_capture(extractor::Site site, int layer, const at::Tensor & x) override { inner_.on_capture(site, layer, x); }
    void end_batch() override;
    void on_token_nll(const at::Tensor & nll) override { inner_.on_token_nll(nll); }
    bool wants_experts(int layer) const override { return inner_.wants_experts(layer); }
    void on_experts(int layer, const extractor::ExpertCapture & capture) override { inner_.on_experts(layer, capture); }
    void warm_up(const at::Tensor & example) override { inner_.warm_up(example); }
    int64_t checkpoints_written() const { return written_; }

private:
    OutlierAccumulator & inner_;
    std::string path_;
    int64_t every_batches_;
    nlohmann::json metadata_;
    int64_t batches_ = 0, written_ = 0;
};

}  // namespace analysis
