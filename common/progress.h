// A progress display for long work (loading weights, pushing files, waiting for readiness).
// On a terminal it is a live bar at the bottom of stderr; otherwise it logs a line at most every
// `log_interval` (and at the end), so CI logs and `bifrost logs` stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "common/clock.h"

namespace common {

enum class ProgressUnit { Count, Bytes };

class Progress {
public:
    Progress(std::string label, uint64_t total, ProgressUnit unit = ProgressUnit::Count,
             Clock & clock = real_clock());
    ~Progress();  // clears the bar; does not print "done" (call finish() for that)
    Progress(const Progress &) = delete;
    Progress & operator=(const Progress &) = delete;

    void advance(uint64_t delta);
    void set(uint64_t done);
    void set_detail(std::string detail);  // e.g. the current file or stage
    void finish();                        // prints the final line once

    // The rendered status text (also what tests look at).
    std::string render() const;

    std::chrono::milliseconds log_interval{std::chrono::seconds(10)};

private:
    void draw_locked(bool force);
    std::string render_locked() const;

    mutable std::mutex mutex_;
    std::string label_;
    std::string detail_;
    uint64_t total_;
    uint64_t done_ = 0;
    ProgressUnit unit_;
    Clock * clock_;
    TimePoint start_;
    TimePoint last_draw_{};
    bool finished_ = false;
};

// "1.5 GiB", "312 KiB", "17 B"
std::string format_bytes(double bytes);

}  // namespace common
