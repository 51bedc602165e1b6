// The loader's worker pool and stall watchdog (extractor/load_pool.h), without a checkpoint: time
// is a FakeClock that the items advance, so a stall of minutes takes milliseconds.
#include "extractor/load_pool.h"

#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/error.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {

LoadPoolOptions fake_time_options(common::FakeClock & clock, int threads) {
    LoadPoolOptions o;
    o.threads = threads;
    o.stall_timeout_s = 5;
    o.clock = &clock;
    o.poll = std::chrono::milliseconds(1);
    return o;
}

std::string item_name(size_t i) { return "item-" + std::to_string(i); }

}  // namespace

TEST_CASE("load pool: every item runs exactly once and the call returns when all are done") {
    for (int threads : {1, 4, 64}) {
        CAPTURE(threads);
        common::FakeClock clock;
        std::mutex mu;
        std::multiset<size_t> seen;
        const size_t n = 37;
        // One worker: slow items with beats in between are not a stall (3 s steps, 5 s timeout).
        // Several workers share the clock, so their steps would add up: time stands still there.
        const auto step = threads == 1 ? std::chrono::seconds(3) : std::chrono::seconds(0);
        run_load_pool(n, fake_time_options(clock, threads), item_name, [&](size_t i, const std::function<void()> & beat) {
            clock.advance(step);
            beat();
            clock.advance(step);
            beat();
            std::lock_guard<std::mutex> lk(mu);
            seen.insert(i);
        });
        REQUIRE(seen.size() == n);
        for (size_t i = 0; i < n; ++i) CHECK(seen.count(i) == 1);
    }
    common::FakeClock clock;
    bool ran = false;
    run_load_pool(0, fake_time_options(clock, 8), item_name, [&](size_t, const std::function<void()> &) { ran = true; });
    CHECK_FALSE(ran);
}

TEST_CASE("load pool: a worker's error is rethrown as it was, after the other workers finish") {
    common::FakeClock clock;
    std::mutex mu;
    std::set<size_t> seen;
    CHECK_THROWS_WITH_AS(run_load_pool(20, fake_time_options(clock, 3), item_name,
                                       [&](size_t i, const std::function<void()> &) {
                                           if (i == 5) throw std::runtime_error("disk on fire");
                                           std::lock_guard<std::mutex> lk(mu);
                                           seen.insert(i);
                                       }),
                         "disk on fire", std::runtime_error);
    // The failing worker stops; the other two take every item left, so only item 5 is missing.
    CHECK(seen.size() == 19);
    CHECK(seen.count(5) == 0);

    // A common::Error keeps its kind (a usage error in a tensor stays a usage error).
    try {
        run_load_pool(4, fake_time_options(clock, 2), item_name, [](size_t i, const std::function<void()> &) {
            if (i == 3) throw common::Error::usage("model.safetensors: tensor x: bad");
        });
        FAIL("no error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message() == "model.safetensors: tensor x: bad");
    }
}

TEST_CASE("load pool: a stall is reported as a timeout naming the item, without waiting for the stuck worker") {
    // The worker holds what it uses (clock, futures) by shared_ptr: it outlives the call.
    auto clock = std::make_shared<common::FakeClock>();
    auto release = std::make_shared<std::promise<void>>();
    auto finished = std::make_shared<std::promise<void>>();
    std::shared_future<void> released = release->get_future().share();
    std::future<void> worker_done = finished->get_future();
    const LoadPoolOptions opt = fake_time_options(*clock, 1);
    try {
        run_load_pool(4, opt, item_name, [clock, released, finished](size_t i, const std::function<void()> & beat) {
            beat();
            if (i != 2) return;
            clock->advance(std::chrono::seconds(10));  // a read that hangs: no beat
            (void)released.wait_for(std::chrono::seconds(30));
            finished->set_value();
        });
        FAIL("no stall reported");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Timeout);
        CHECK(e.message().find("loading stalled: no progress for 10 s while reading item-2") == 0);
        CHECK(e.message().find("--load-stall-timeout") != std::string::npos);
    }
    // The stuck worker is still inside item 2; let it go and see it finish on its own.
    CHECK(worker_done.wait_for(std::chrono::seconds(0)) == std::future_status::timeout);
    release->set_value();
    CHECK(worker_done.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
}

TEST_CASE("load pool: join_within joins a finished thread and detaches one still busy") {
    std::atomic<bool> done{false};
    std::thread quick([&] { done = true; });
    CHECK(join_within(quick, done, std::chrono::seconds(30)));
    CHECK_FALSE(quick.joinable());

    auto stuck_done = std::make_shared<std::atomic<bool>>(false);
    auto release = std::make_shared<std::promise<void>>();
    std::shared_future<void> released = release->get_future().share();
    std::thread stuck([stuck_done, released] {
        (void)released.wait_for(std::chrono::seconds(30));
        *stuck_done = true;
    });
    CHECK_FALSE(join_within(stuck, *stuck_done, std::chrono::milliseconds(20)));
    CHECK_FALSE(stuck.joinable());
    release->set_value();
}
