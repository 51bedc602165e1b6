// Shared helpers for the analysis tests: feed hand-made [B,T,H] tensors through the accumulator as
// the extractor would, and a brute-force port of the predecessor's per-batch analysis
// (docs/outlier-method.md, "Per-sequence analysis") to compare against. Include torch headers
// before doctest (glog CHECK; docs/build-notes.md, "glog and doctest's CHECK").
#pragma once

#include <ATen/ATen.h>

#include "analysis/accumulators.h"
#include "analysis/criteria.h"

#include <map>
#include <set>
#include <string>
#include <vector>

namespace tests {

// One batch: token ids [B,T] and, per layer, the (ln_attn, ln_mlp) captures.
struct FakeBatch {
    std::vector<int64_t> sequence_indices;
    at::Tensor token_ids;
    at::Tensor attention_mask;  // optional
    std::vector<std::pair<at::Tensor, at::Tensor>> layers;
    std::vector<at::Tensor> residual;  // optional, per layer
    std::vector<extractor::ExpertCapture> experts;  // optional, per layer (one routed chunk each)
};

inline void feed(extractor::CaptureSink & acc, const FakeBatch & fb) {
    extractor::BatchInfo info;
    info.sequence_indices = fb.sequence_indices;
    info.token_ids = fb.token_ids;
    info.attention_mask = fb.attention_mask;
    acc.begin_batch(info);
    for (size_t l = 0; l < fb.layers.size(); ++l) {
        const int layer = static_cast<int>(l);
        if (acc.wants(extractor::Site::LnAttn, layer)) acc.on_capture(extractor::Site::LnAttn, layer, fb.layers[l].first);
        if (acc.wants(extractor::Site::LnMlp, layer)) acc.on_capture(extractor::Site::LnMlp, layer, fb.layers[l].second);
        if (l < fb.experts.size() && acc.wants_experts(layer)) acc.on_experts(layer, fb.experts[l]);
        if (l < fb.residual.size() && acc.wants(extractor::Site::Residual, layer))
            acc.on_capture(extractor::Site::Residual, layer, fb.residual[l]);
    }
    acc.end_batch();
}

// Random activations with a few planted outlier dims: N(0,1) everywhere, dim d set to `value` at
// a fraction of positions in a fraction of layers.
struct Plant {
    int dim;
    double value;
    double layer_fraction;     // of layers (both sites)
    double position_fraction;  // of positions
};

inline FakeBatch make_batch(int64_t first_sequence, int64_t B, int64_t T, int64_t H, int L,
                            const std::vector<Plant> & plants, uint64_t seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    FakeBatch fb;
    for (int64_t b = 0; b < B; ++b) fb.sequence_indices.push_back(first_sequence + b);
    fb.token_ids = at::randint(0, 50, {B, T}, gen, at::TensorOptions().dtype(at::kLong));
    for (int l = 0; l < L; ++l) {
        auto a = at::randn({B, T, H}, gen, at::TensorOptions().dtype(at::kFloat));
        auto m = at::randn({B, T, H}, gen, at::TensorOptions().dtype(at::kFloat));
        for (const auto & p : plants) {
            if (l >= static_cast<int>(p.layer_fraction * L + 0.5)) continue;
            const auto n = static_cast<int64_t>(p.position_fraction * static_cast<double>(T) + 0.5);
            a.select(2, p.dim).narrow(1, 0, n).fill_(p.value);
            m.select(2, p.dim).narrow(1, T - n, n).fill_(-p.value);
        }
        fb.layers.emplace_back(a, m);
    }
    return fb;
}

// The predecessor's analysis of one sequence (batch_size 1), step by step as docs/outlier-method.md
// ("Per-sequence analysis") states it, on full tensors.
struct ReferenceEntry {
    int dim;
    double layer_percentage, seq_percentage;
    double max_magnitude;
    int64_t total_occurrences;
};

inline std::vector<ReferenceEntry> reference_analysis(const std::vector<at::Tensor> & sites /* each [1,T,H] */,
                                                      double thr = 6.0, double lf = 0.25, double pf = 0.06) {
    std::map<int, std::set<int>> site_sets;
    std::map<int, std::set<int64_t>> positions;
    std::map<int, double> maxima;
    std::map<int, int64_t> counts;
    const int64_t T = sites.at(0).size(1);
    for (size_t s = 0; s < sites.size(); ++s) {
        auto v = sites[s].to(at::kBFloat16).to(at::kFloat).contiguous();
        auto idx = v.abs().ge(thr).nonzero();  // (b, t, h) row-major, like torch.where
        auto acc = idx.accessor<int64_t, 2>();
        for (int64_t i = 0; i < idx.size(0); ++i) {
            const int h = static_cast<int>(acc[i][2]);
            const double value = std::abs(v[acc[i][0]][acc[i][1]][acc[i][2]].item<float>());
            site_sets[h].insert(static_cast<int>(s));
            positions[h].insert(acc[i][1]);
            maxima[h] = std::max(maxima[h], value);
            counts[h] += 1;
        }
    }
    std::vector<ReferenceEntry> out;
    for (const auto & [h, ss] : site_sets) {
        const double lp = static_cast<double>(ss.size()) / static_cast<double>(sites.size());
        const double sp = static_cast<double>(positions[h].size()) / static_cast<double>(T);
        if (lp >= lf && sp >= pf) out.push_back({h, lp, sp, maxima[h], counts[h]});
    }
    return out;
}

}  // namespace tests
