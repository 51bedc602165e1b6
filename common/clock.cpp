#include "common/clock.h"

#include <cstdio>
#include <ctime>
#include <thread>

namespace common {

void RealClock::sleep_for(Duration d) { std::this_thread::sleep_for(d); }

double RealClock::unix_now() const {
    using namespace std::chrono;
    return duration<double>(system_clock::now().time_since_epoch()).count();
}

TimePoint FakeClock::now() const {
    std::lock_guard lock(mutex_);
    return now_;
}

void FakeClock::sleep_for(Duration d) { advance(d); }

double FakeClock::unix_now() const {
    std::lock_guard lock(mutex_);
    return unix_base_ + to_seconds(now_.time_since_epoch() - std::chrono::hours(1000));
}

void FakeClock::advance(Duration d) {
    std::lock_guard lock(mutex_);
    now_ += d;
}

RealClock & real_clock() {
    static RealClock clock;
    return clock;
}

Duration Deadline::remaining() const {
    Duration left = end_ - clock_->now();
    return left > Duration::zero() ? left : Duration::zero();
}

bool Deadline::sleep(Duration interval) const {
    Duration left = remaining();
    if (left <= Duration::zero()) return false;
    clock_->sleep_for(interval < left ? interval : left);
    return true;
}

double to_seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

std::string format_utc_minute(double unix_s) {
    const std::time_t t = static_cast<std::time_t>(unix_s);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
    return buf;
}

std::string format_duration(double seconds) {
    char buf[48];
    if (seconds < 0) seconds = 0;
    if (seconds < 60) {
        std::snprintf(buf, sizeof buf, "%.1fs", seconds);
    } else if (seconds < 3600) {
        long s = static_cast<long>(seconds + 0.5);
        std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
    } else {
        long m = static_cast<long>(seconds / 60 + 0.5);
        std::snprintf(buf, sizeof buf, "%ldh%02ldm", m / 60, m % 60);
    }
    return buf;
}

}  // namespace common
