// The extractor's own capture sinks. SafetensorsSink writes a run to disk (one safetensors file per
// batch; run_extraction adds metadata.json). AbsmaxSink keeps, on the device, the running max |x|
// per hidden dim and the count of |x| >= 6 for each (site, layer): a cheap summary for quick
// checks and the benchmark, not the analysis (that is analysis/).
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "extractor/capture.h"
#include "extractor/sinks/host_transfer.h"

namespace extractor {

using SiteLayer = std::pair<Site, int>;

class SafetensorsSink final : public CaptureSink {
public:
    // save_dtype: undefined-like kUndefined keeps the forward's dtype. save_routing: also write each
    // MoE layer's expert choice (routing_tensor_name), for the layers whose sites are wanted.
    SafetensorsSink(std::string out_dir, std::set<SiteLayer> wanted, at::ScalarType save_dtype, bool save_routing = false);
    bool wants(Site site, int layer) const override { return wanted_.count({site, layer}) != 0; }
    void begin_batch(const BatchInfo & batch) override;
    void on_capture(Site site, int layer, const at::Tensor & x) override;
    void end_batch() override;
    bool wants_experts(int layer) const override { return save_routing_ && layers_.count(layer) != 0; }
    void on_experts(int layer, const ExpertCapture & capture) override;

    const std::vector<std::string> & files() const { return files_; }           // relative to out_dir
    const std::map<std::string, std::vector<int64_t>> & shapes() const { return shapes_; }  // per tensor name (last batch)
    std::string saved_dtype() const;

    static std::string tensor_name(Site site, int layer);  // "layer_3_ln_attn"
    // "layer_3_experts": int32 [B,T,K], the K experts the router picked for each token, in the
    // router's top-k order (-1 where a token was not routed, which a complete forward never leaves).
    static std::string routing_tensor_name(int layer);

private:
    // A chunk of one layer's routing: its first token among the batch's B*T (row-major) and its
    // host copy, int32 [n,K].
    struct RoutingChunk {
        int64_t first_token;
        HostTransfer top_i;
    };

    std::string out_dir_;
    std::set<SiteLayer> wanted_;
    std::set<int> layers_;  // layers with a wanted site
    at::ScalarType save_dtype_;
    bool save_routing_;
    std::map<int, std::vector<RoutingChunk>> routing_;  // this batch's, by layer
    BatchInfo batch_;
    std::vector<std::pair<std::string, HostTransfer>> pending_;  // this batch's captures on their way to the host
    std::vector<std::string> files_;
    std::map<std::string, std::vector<int64_t>> shapes_;
    at::ScalarType seen_dtype_ = at::ScalarType::Undefined;
};

class AbsmaxSink final : public CaptureSink {
public:
    explicit AbsmaxSink(std::set<SiteLayer> wanted) : wanted_(std::move(wanted)) {}
    bool wants(Site site, int layer) const override { return wanted_.count({site, layer}) != 0; }
    void begin_batch(const BatchInfo &) override {}
    void on_capture(Site site, int layer, const at::Tensor & x) override;
    void end_batch() override {}
    // [{layer, site, max_abs, max_dim, count_ge_6, top_dims: [[dim, max_abs], ...]}] (copies to host).
    nlohmann::json summary(int top = 5) const;

private:
    std::set<SiteLayer> wanted_;
    std::map<SiteLayer, at::Tensor> max_abs_;   // fp32 [H] on the device
    std::map<SiteLayer, at::Tensor> count_ge6_; // int64 [] on the device
};

}  // namespace extractor
