// Cost of the outlier accumulator per capture and per batch on a GPU, against the cheapest pass
// that reads the same capture (`x.abs().amax()`, one ATen reduction: the memory-bound peer), in the
// same process. Issue 14's overhead bench (bench/analyze_overhead.py) times whole forwards; this
// splits the analysis side into its per-capture kernels and its end-of-batch work, per option, so a
// change to the fused pass can be judged alone.
//
//   analysis_capture_bench [B T H captures_per_batch batches]   (default 4 2048 2048 32 4, bf16)
//
// Values are N(0,1) x scale, for scale 1 (|x| >= 3 on 0.27 % of values, the sweep's lowest threshold)
// and 2 (13 %: many position-level writes). Prints one line per configuration: microseconds per
// capture, per end_batch, and the capture's read rate. Numbers, not a pass/fail.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "analysis/accumulators.h"
#include "extractor/compat.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Timing {
    double capture_us = 0, end_batch_us = 0;
};

// `batches` batches of `captures` captures of x (layers 0..captures/2-1, both sites); the first
// two batches are a warm-up (a batch's host copies are read back at the next end_batch, so two sets
// of pinned buffers are first allocated then). Device-synchronised around each phase.
Timing time_accumulator(const analysis::AccumulatorOptions & options, const at::Tensor & x, int captures, int batches) {
    analysis::OutlierAccumulator acc(options);
    Timing t;
    for (int b = 0; b < batches + 2; ++b) {
        extractor::BatchInfo batch;
        for (int64_t r = 0; r < x.size(0); ++r) batch.sequence_indices.push_back(b * x.size(0) + r);
        batch.token_ids = at::zeros({x.size(0), x.size(1)}, at::kLong);
        acc.begin_batch(batch);
        extractor::compat::device_synchronize();
        auto t0 = Clock::now();
        for (int c = 0; c < captures; ++c)
            acc.on_capture(c % 2 ? extractor::Site::LnMlp : extractor::Site::LnAttn, c / 2, x);
        extractor::compat::device_synchronize();
        const double cap = seconds_since(t0);
        t0 = Clock::now();
        acc.end_batch();
        extractor::compat::device_synchronize();
        const double end = seconds_since(t0);
        if (b < 2) continue;  // warm-up
        t.capture_us += 1e6 * cap / (static_cast<double>(captures) * batches);
        t.end_batch_us += 1e6 * end / batches;
    }
    return t;
}

}  // namespace

int main(int argc, char ** argv) {
    if (!at::hasCUDA()) {
        std::fprintf(stderr, "analysis_capture_bench: no CUDA device\n");
        return 1;
    }
    auto arg = [&](int i, int64_t def) { return argc > i ? std::atoll(argv[i]) : def; };
    const int64_t B = arg(1, 4), T = arg(2, 2048), H = arg(3, 2048);
    const int captures = static_cast<int>(arg(4, 32)), batches = static_cast<int>(arg(5, 4));
    const auto cuda = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
    const double bytes = static_cast<double>(B * T * H) * 2;
    std::printf("capture [%lld,%lld,%lld] bf16 (%.1f MB), %d captures a batch, %d batches\n", static_cast<long long>(B),
                static_cast<long long>(T), static_cast<long long>(H), bytes / 1e6, captures, batches);
    for (double scale : {1.0, 2.0}) {
        at::manual_seed(5);
        const at::Tensor x = at::randn({B, T, H}, cuda) * scale;
        // The peer: one read of x.
        for (int i = 0; i < 3; ++i) (void)x.abs().amax();
        extractor::compat::device_synchronize();
        auto t0 = Clock::now();
        for (int i = 0; i < 20; ++i) (void)x.abs().amax();
        extractor::compat::device_synchronize();
        const double peer_us = 1e6 * seconds_since(t0) / 20;
        std::printf("\nvalues N(0,1) x %.0f; peer x.abs().amax(): %.1f us (%.0f GB/s)\n", scale, peer_us, bytes / peer_us / 1e3);
        std::printf("%-44s %12s %14s %10s %10s\n", "configuration", "us/capture", "us/end_batch", "GB/s", "x peer");
        struct Config {
            const char * name;
            bool histogram, fused;
            std::vector<double> sweep;
            int bins;
        };
        const std::vector<double> sweep = {3, 4, 5, 6, 8, 10, 20};
        for (const Config & c : {Config{"no histogram", false, true, {}, 80}, Config{"histogram (80 bins)", true, true, {}, 80},
                                 Config{"histogram (400 bins)", true, true, {}, 400},
                                 Config{"histogram + 7-threshold sweep", true, true, sweep, 80},
                                 Config{"ATen path, histogram + sweep", true, false, sweep, 80}}) {
            analysis::AccumulatorOptions o;
            o.histogram = c.histogram;
            o.histogram_spec.bins = c.bins;
            if (c.bins > 80) o.histogram_spec.log2_min = -60;
            o.sweep_thresholds = c.sweep;
            o.cuda_kernels = c.fused;
            const Timing t = time_accumulator(o, x, captures, batches);
            std::printf("%-44s %12.1f %14.1f %10.0f %10.2f\n", c.name, t.capture_us, t.end_batch_us, bytes / t.capture_us / 1e3,
                        t.capture_us / peer_us);
        }
    }
    return 0;
}
