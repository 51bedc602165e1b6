// The loader's worker pool and stall watchdog (load_pool.h).
#include "extractor/load_pool.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

#include "common/error.h"

namespace extractor {

namespace {

// Everything the workers touch lives here, held by shared_ptr: after a stall the caller returns an
// error while the workers may still run.
struct PoolState {
    std::mutex mu;
    std::condition_variable cv;
    std::atomic<size_t> next{0};
    std::atomic<int64_t> last_beat_ns{0};
    int running = 0;
    std::exception_ptr error;
    std::string current;
    bool done = false;
    common::Clock * clock = nullptr;
    LoadItemNameFn name;
    LoadItemFn item;
    size_t n = 0;

    int64_t now_ns() const {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(clock->now().time_since_epoch()).count();
    }
};

void work(const std::shared_ptr<PoolState> & st) {
    const std::function<void()> beat = [raw = st.get()] { raw->last_beat_ns = raw->now_ns(); };
    try {
        for (size_t i = st->next++; i < st->n; i = st->next++) {
            std::string where = st->name(i);
            {
                std::lock_guard<std::mutex> lk(st->mu);
                st->current = std::move(where);
            }
            st->item(i, beat);
            beat();
        }
    } catch (...) {
        std::lock_guard<std::mutex> lk(st->mu);
        if (!st->error) st->error = std::current_exception();
    }
    std::lock_guard<std::mutex> lk(st->mu);
    if (--st->running == 0) st->done = true;
    st->cv.notify_all();
}

}  // namespace

void run_load_pool(size_t n, const LoadPoolOptions & opt, LoadItemNameFn name, LoadItemFn item) {
    auto st = std::make_shared<PoolState>();
    st->clock = opt.clock;
    st->name = std::move(name);
    st->item = std::move(item);
    st->n = n;
    st->last_beat_ns = st->now_ns();
    const int n_threads = std::max(1, std::min<int>(opt.threads, static_cast<int>(std::min<size_t>(n, 1u << 20))));
    st->running = n_threads;
    std::vector<std::thread> threads;
    for (int i = 0; i < n_threads; ++i) threads.emplace_back([st] { work(st); });
    {
        std::unique_lock<std::mutex> lk(st->mu);
        while (!st->done) {
            st->cv.wait_for(lk, opt.poll);
            if (st->done) break;
            double idle_s = static_cast<double>(st->now_ns() - st->last_beat_ns) / 1e9;
            if (idle_s > opt.stall_timeout_s) {
                std::string where = st->current;
                lk.unlock();
                for (auto & t : threads) t.detach();
                throw common::Error(common::ErrorKind::Timeout,
                                    "loading stalled: no progress for " + std::to_string(static_cast<int>(idle_s)) +
                                        " s while reading " + where +
                                        "; the disk or network filesystem may be stuck (raise --load-stall-timeout if it is just slow)");
            }
        }
    }
    for (auto & t : threads) t.join();
    if (st->error) std::rethrow_exception(st->error);
}

bool join_within(std::thread & t, const std::atomic<bool> & done, std::chrono::duration<double> limit) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(limit);
    while (!done && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (!done) {
        t.detach();
        return false;
    }
    t.join();
    return true;
}

}  // namespace extractor
