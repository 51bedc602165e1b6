// A device tensor on its way to host memory, for sinks that read a batch's numbers while the device
// already runs the next batch. The copy goes into pinned memory without blocking, and an event is
// recorded on the source device's current stream right after it: wait() blocks until that copy is
// done, not until everything queued later (the next batch's forward) has run. A blocking .cpu()
// instead drains the device at every batch and leaves it idle while the host works on the numbers.
// CPU tensors are copied at once.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Event.h>

#include <optional>

namespace extractor {

class HostTransfer {
public:
    HostTransfer() = default;
    explicit HostTransfer(const at::Tensor & src);
    bool defined() const { return host_.defined(); }
    // The host copy, complete (blocks until the copy has run on the device).
    const at::Tensor & wait();

private:
    at::Tensor host_;
    std::optional<c10::Event> done_;  // recorded after the copy; absent for a CPU source or once waited
};

// src (CPU) on `device` without a blocking copy: staged through pinned memory for a GPU, so the
// device's stream keeps its queue (a pageable host-to-device copy synchronises it).
at::Tensor to_device_async(const at::Tensor & src, c10::Device device);

}  // namespace extractor
