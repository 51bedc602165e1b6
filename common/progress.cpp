#include "common/progress.h"

#include <cstdio>

#include "common/log.h"

namespace common {

std::string format_bytes(double bytes) {
    const char * units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
    return buf;
}

Progress::Progress(std::string label, uint64_t total, ProgressUnit unit, Clock & clock)
    : label_(std::move(label)), total_(total), unit_(unit), clock_(&clock), start_(clock.now()) {}

Progress::~Progress() {
    if (!finished_) log::set_status_line("");
}

void Progress::advance(uint64_t delta) {
    std::lock_guard lock(mutex_);
    done_ += delta;
    draw_locked(false);
}

void Progress::set(uint64_t done) {
    std::lock_guard lock(mutex_);
    done_ = done;
    draw_locked(false);
}

void Progress::set_detail(std::string detail) {
    std::lock_guard lock(mutex_);
    detail_ = std::move(detail);
    draw_locked(false);
}

void Progress::finish() {
    std::lock_guard lock(mutex_);
    if (finished_) return;
    finished_ = true;
    log::set_status_line("");
    log::info(render_locked());
}

std::string Progress::render() const {
    std::lock_guard lock(mutex_);
    return render_locked();
}

std::string Progress::render_locked() const {
    auto amount = [&](uint64_t v) {
        return unit_ == ProgressUnit::Bytes ? format_bytes(static_cast<double>(v)) : std::to_string(v);
    };
    double elapsed = to_seconds(clock_->now() - start_);
    std::string s = label_ + " ";
    if (total_ > 0) {
        double frac = static_cast<double>(done_) / static_cast<double>(total_);
        if (frac > 1) frac = 1;
        constexpr int kWidth = 24;
        int filled = static_cast<int>(frac * kWidth);
        s += "[" + std::string(filled, '#') + std::string(kWidth - filled, '.') + "] ";
        char pct[16];
        std::snprintf(pct, sizeof pct, "%3.0f%% ", frac * 100);
        s += pct;
        s += amount(done_) + "/" + amount(total_);
        if (done_ > 0 && done_ < total_ && elapsed > 0.5) {
            double eta = elapsed / frac - elapsed;
            s += " eta " + format_duration(eta);
        }
    } else {
        s += amount(done_);
    }
    if (unit_ == ProgressUnit::Bytes && elapsed > 0.5)
        s += " (" + format_bytes(static_cast<double>(done_) / elapsed) + "/s)";
    s += " " + format_duration(elapsed);
    if (!detail_.empty()) s += " " + detail_;
    return s;
}

void Progress::draw_locked(bool force) {
    if (finished_) return;
    TimePoint now = clock_->now();
    if (log::stderr_is_tty()) {
        // Redraw at most ~10 times a second; a bar is cheap but a terminal is not.
        if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
        last_draw_ = now;
        log::set_status_line(render_locked());
    } else {
        if (!force && now - last_draw_ < log_interval) return;
        if (last_draw_ == TimePoint{}) {  // first update: start the interval, print nothing yet
            last_draw_ = now;
            return;
        }
        last_draw_ = now;
        log::info(render_locked());
    }
}

}  // namespace common
