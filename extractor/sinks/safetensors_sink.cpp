// Writes captures to activations/batch_NNNNN.safetensors under the run directory: one tensor per
// (site, layer) named layer_{l}_{site} [B,T,H], plus token_ids [B,T] and sequence_indices [B], and
// with --save-routing each MoE layer's expert choice, layer_{l}_experts [B,T,K] int32.
// Device tensors are copied into pinned host buffers without blocking (HostTransfer); end_batch
// waits for those copies, just before the file is written.
#include "extractor/sinks/sinks.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"

namespace extractor {

SafetensorsSink::SafetensorsSink(std::string out_dir, std::set<SiteLayer> wanted, at::ScalarType save_dtype, bool save_routing)
    : out_dir_(std::move(out_dir)), wanted_(std::move(wanted)), save_dtype_(save_dtype), save_routing_(save_routing) {
    for (const auto & [site, layer] : wanted_) layers_.insert(layer);
    std::filesystem::create_directories(std::filesystem::path(out_dir_) / "activations");
}

std::string SafetensorsSink::tensor_name(Site site, int layer) {
    return "layer_" + std::to_string(layer) + "_" + std::string(site_name(site));
}

std::string SafetensorsSink::routing_tensor_name(int layer) { return "layer_" + std::to_string(layer) + "_experts"; }

std::string SafetensorsSink::saved_dtype() const {
    return seen_dtype_ == at::ScalarType::Undefined ? "" : safetensors_dtype_name(seen_dtype_);
}

void SafetensorsSink::begin_batch(const BatchInfo & batch) {
    batch_ = batch;
    pending_.clear();
    routing_.clear();
}

void SafetensorsSink::on_capture(Site site, int layer, const at::Tensor & x) {
    at::Tensor src = save_dtype_ == at::ScalarType::Undefined ? x : x.to(save_dtype_);  // [B,T,H]
    seen_dtype_ = src.scalar_type();
    pending_.emplace_back(tensor_name(site, layer), HostTransfer(src));
}

void SafetensorsSink::on_experts(int layer, const ExpertCapture & capture) {
    if (capture.top_i.dim() != 2 || capture.first_token < 0)
        throw common::Error::internal("routing of layer " + std::to_string(layer) + ": expected top_i [n,K]");
    // [n,K]; expert ids fit int32 (kMaxExperts is far below)
    routing_[layer].push_back({capture.first_token, HostTransfer(capture.top_i.to(at::kInt))});
}

void SafetensorsSink::end_batch() {
    // Each copy is waited for (its own event), then written.
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    tensors.emplace_back("token_ids", batch_.token_ids.to(at::kLong).contiguous());
    tensors.emplace_back("sequence_indices", at::tensor(batch_.sequence_indices, at::kLong));
    for (auto & [name, copy] : pending_) {
        const at::Tensor & host = copy.wait();
        shapes_[name] = host.sizes().vec();
        tensors.emplace_back(name, host);
    }
    // Each routed layer's chunks placed at their tokens: [B*T,K], viewed [B,T,K].
    const int64_t B = batch_.token_ids.size(0), T = batch_.token_ids.size(1);
    for (auto & [layer, chunks] : routing_) {
        const int64_t K = chunks.front().top_i.wait().size(1);
        at::Tensor all = at::full({B * T, K}, -1, at::kInt);
        for (auto & c : chunks) {
            const at::Tensor & top_i = c.top_i.wait();
            const int64_t n = top_i.size(0);
            if (top_i.size(1) != K || c.first_token + n > B * T)
                throw common::Error::internal("routing of layer " + std::to_string(layer) + ": a chunk of " + std::to_string(n) +
                                              " tokens from token " + std::to_string(c.first_token) + " does not fit the batch's " +
                                              std::to_string(B * T));
            all.narrow(0, c.first_token, n).copy_(top_i);
        }
        const std::string name = routing_tensor_name(layer);
        tensors.emplace_back(name, all.view({B, T, K}));
        shapes_[name] = {B, T, K};
    }
    routing_.clear();
    char name[64];
    std::snprintf(name, sizeof name, "activations/batch_%05lld.safetensors", static_cast<long long>(batch_.batch_index));
    write_safetensors((std::filesystem::path(out_dir_) / name).string(), tensors,
                      {{"format", "pt"}, {"batch_index", std::to_string(batch_.batch_index)}});
    files_.push_back(name);
    pending_.clear();
}

}  // namespace extractor
