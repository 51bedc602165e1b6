// The loader's worker pool and its stall watchdog, without torch: load_model (model.cpp) gives it
// one item per tensor and a function that copies one. Workers take the next item in order until
// none is left; each reports progress with beat(); the calling thread watches, and when no beat
// has come for the stall timeout it gives up with common::Error(timeout) naming what was being
// read, instead of hanging on a stuck disk or network filesystem.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <thread>

#include "common/clock.h"

namespace extractor {

struct LoadPoolOptions {
    int threads = 8;                  // at most one per item, at least one
    double stall_timeout_s = 300;     // no beat for this long -> Error(timeout)
    // Time for the idle measurement; it must outlive the workers, which a stall leaves running
    // (real_clock() does).
    common::Clock * clock = &common::real_clock();
    // How often the watchdog looks (a stall is seen at most this late).
    std::chrono::milliseconds poll{1000};
};

// Copies item i, calling beat() whenever it has moved some data. Runs on a worker thread; after a
// stall those threads are detached and may outlive the call, so anything it uses must be owned by
// it (captured by value or shared_ptr), never borrowed from the caller's frame.
using LoadItemFn = std::function<void(size_t i, const std::function<void()> & beat)>;
// Names item i for the stall message ("<file>: <tensor>"); called on the worker before item i runs.
using LoadItemNameFn = std::function<std::string(size_t i)>;

// Runs items 0..n-1 on the pool and returns when all are done. A worker that throws stops taking
// items (the others go on); once every worker has finished, the first exception is rethrown as it
// was. A stall throws Error(timeout) "loading stalled: no progress for <s> s while reading <name>".
void run_load_pool(size_t n, const LoadPoolOptions & opt, LoadItemNameFn name, LoadItemFn item);

// Joins t once it has set done, waiting at most `limit`: a thread still busy then (a transfer or
// kernel stuck on a hung device) is detached rather than waited on, and false is returned.
bool join_within(std::thread & t, const std::atomic<bool> & done, std::chrono::duration<double> limit);

}  // namespace extractor
