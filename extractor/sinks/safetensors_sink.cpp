// Writes captures to activations/batch_NNNNN.safetensors under the run directory: one tensor per
// (site, layer) named layer_{l}_{site} [B,T,H], plus token_ids [B,T] and sequence_indices [B].
// Device tensors are copied into pinned host buffers without blocking; the one sync per batch
// happens in end_batch, just before the file is written.
#include "extractor/sinks/sinks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "extractor/checkpoint/safetensors.h"

namespace extractor {

SafetensorsSink::SafetensorsSink(std::string out_dir, std::set<SiteLayer> wanted, at::ScalarType save_dtype)
    : out_dir_(std::move(out_dir)), wanted_(std::move(wanted)), save_dtype_(save_dtype) {
    std::filesystem::create_directories(std::filesystem::path(out_dir_) / "activations");
}

std::string SafetensorsSink::tensor_name(Site site, int layer) {
    return "layer_" + std::to_string(layer) + "_" + std::string(site_name(site));
}

std::string SafetensorsSink::saved_dtype() const {
    return seen_dtype_ == at::ScalarType::Undefined ? "" : safetensors_dtype_name(seen_dtype_);
}

void SafetensorsSink::begin_batch(const BatchInfo & batch) {
    batch_ = batch;
    pending_.clear();
}

void SafetensorsSink::on_capture(Site site, int layer, const at::Tensor & x) {
    at::Tensor src = save_dtype_ == at::ScalarType::Undefined ? x : x.to(save_dtype_);  // [B,T,H]
    at::Tensor host = at::empty(src.sizes(), src.options().device(at::kCPU).pinned_memory(src.is_cuda()));
    host.copy_(src, /*non_blocking=*/src.is_cuda());
    if (src.is_cuda() && std::find(devices_.begin(), devices_.end(), src.device()) == devices_.end())
        devices_.push_back(src.device());
    seen_dtype_ = host.scalar_type();
    pending_.emplace_back(tensor_name(site, layer), host);
}

void SafetensorsSink::end_batch() {
    // A pinned non-blocking copy is complete once its stream has drained: a small blocking read
    // on each source device's current stream waits for every copy queued before it.
    for (const auto & d : devices_) (void)at::zeros({1}, at::TensorOptions().device(d)).sum().item<float>();
    devices_.clear();
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    tensors.emplace_back("token_ids", batch_.token_ids.to(at::kLong).contiguous());
    tensors.emplace_back("sequence_indices", at::tensor(batch_.sequence_indices, at::kLong));
    for (auto & p : pending_) {
        shapes_[p.first] = p.second.sizes().vec();
        tensors.push_back(p);
    }
    char name[64];
    std::snprintf(name, sizeof name, "activations/batch_%05lld.safetensors", static_cast<long long>(batch_.batch_index));
    write_safetensors((std::filesystem::path(out_dir_) / name).string(), tensors,
                      {{"format", "pt"}, {"batch_index", std::to_string(batch_.batch_index)}});
    files_.push_back(name);
    pending_.clear();
}

}  // namespace extractor
