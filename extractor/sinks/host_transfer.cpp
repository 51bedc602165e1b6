// HostTransfer and to_device_async (host_transfer.h).
#include "extractor/sinks/host_transfer.h"

#include <ATen/ATen.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <chrono>
#include <thread>

namespace extractor {

HostTransfer::HostTransfer(const at::Tensor & src) {
    if (!src.defined()) return;
    if (src.device().is_cpu()) {
        host_ = src.contiguous().clone();
        return;
    }
    host_ = at::empty(src.sizes(), src.options().device(at::kCPU).pinned_memory(true));
    host_.copy_(src, /*non_blocking=*/true);
    const c10::impl::VirtualGuardImpl guard(src.device().type());
    done_.emplace(src.device().type());
    done_->record(guard.getStream(src.device()));
}

const at::Tensor & HostTransfer::wait() {
    if (done_) {
        // Polled (libtorch 1.13's c10::Event has no synchronize()). By the time a sink reads a
        // batch, the device has usually finished its copy long ago; otherwise a short wait.
        while (!done_->query()) std::this_thread::sleep_for(std::chrono::microseconds(20));
        done_.reset();
    }
    return host_;
}

at::Tensor to_device_async(const at::Tensor & src, c10::Device device) {
    if (device.is_cpu()) return src.to(device);
    return src.contiguous().pin_memory().to(device, /*non_blocking=*/true);
}

}  // namespace extractor
