// Time for every deadline and poll. Code that waits takes a Clock&, so unit tests pass a FakeClock
// that advances instantly instead of sleeping. Never write a wait loop without a Deadline.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

namespace common {

using Duration = std::chrono::steady_clock::duration;
using TimePoint = std::chrono::steady_clock::time_point;

class Clock {
public:
    virtual ~Clock() = default;
    virtual TimePoint now() const = 0;
    virtual void sleep_for(Duration d) = 0;
    // Wall-clock seconds since the epoch, for records that outlive the process (ledger, deadlines).
    virtual double unix_now() const = 0;
};

class RealClock final : public Clock {
public:
    TimePoint now() const override { return std::chrono::steady_clock::now(); }
    void sleep_for(Duration d) override;
    double unix_now() const override;
};

// Starts at an arbitrary point; sleep_for advances time immediately.
class FakeClock final : public Clock {
public:
    TimePoint now() const override;
    void sleep_for(Duration d) override;
    double unix_now() const override;
    void advance(Duration d);

private:
    mutable std::mutex mutex_;
    TimePoint now_{std::chrono::hours(1000)};
    double unix_base_ = 1.8e9;
};

RealClock & real_clock();

// A point in time after which a wait gives up. Polls sleep min(interval, remaining) so that a wait
// never overshoots its deadline.
class Deadline {
public:
    Deadline(Clock & clock, Duration budget) : clock_(&clock), end_(clock.now() + budget), budget_(budget) {}
    bool expired() const { return clock_->now() >= end_; }
    Duration remaining() const;
    Duration budget() const { return budget_; }
    // Sleeps for min(interval, remaining); returns false (without sleeping) once expired.
    bool sleep(Duration interval) const;

private:
    Clock * clock_;
    TimePoint end_;
    Duration budget_;
};

double to_seconds(Duration d);
// "1h02m", "3m05s", "12.3s"
std::string format_duration(double seconds);
// A Unix time as "2026-12-07 11:03 UTC" (for deadlines in messages).
std::string format_utc_minute(double unix_s);

}  // namespace common
