// Download slots (see download_slots.h): flock(2) on <dir>/slot-<i>, tried in turn without blocking.
#include "deploy/download_slots.h"

#include <filesystem>
#include <utility>

#include "common/error.h"
#include "common/program.h"

namespace fs = std::filesystem;

namespace deploy {

DownloadSlotSpec parse_download_slots(const std::string & text) {
    auto colon = text.rfind(':');
    auto bad = [&]() {
        return common::Error::usage("--download-slots '" + text + "': expected DIR:N with N in 1.." + std::to_string(kMaxDownloadSlots));
    };
    if (colon == std::string::npos || colon == 0 || colon + 1 >= text.size() || text.size() - colon > 4) throw bad();
    int n = 0;
    for (char ch : text.substr(colon + 1)) {
        if (ch < '0' || ch > '9') throw bad();
        n = n * 10 + (ch - '0');
    }
    if (n < 1 || n > kMaxDownloadSlots) throw bad();
    return {text.substr(0, colon), n};
}

std::string format_download_slots(const DownloadSlotSpec & spec) { return spec.dir + ":" + std::to_string(spec.count); }

DownloadSlot DownloadSlot::acquire(const DownloadSlotSpec & spec, const common::Deadline & deadline, double poll_s,
                                   const std::function<void()> & on_wait) {
    DownloadSlot slot;
    if (spec.dir.empty()) return slot;
    if (spec.count < 1 || spec.count > kMaxDownloadSlots)
        throw common::Error(common::ErrorKind::Internal, "download slots: count " + std::to_string(spec.count) + " out of range");
    std::error_code ec;
    fs::create_directories(spec.dir, ec);
    for (;;) {
        common::throw_if_interrupted();
        for (int i = 0; i < spec.count; ++i) {
            if (auto lock = common::FileLock::try_lock(spec.dir + "/slot-" + std::to_string(i))) {
                slot.lock_ = std::move(lock);
                slot.index_ = i;
                return slot;
            }
        }
        if (on_wait) on_wait();
        if (!deadline.sleep(std::chrono::duration_cast<common::Duration>(std::chrono::duration<double>(poll_s))))
            throw common::Error(common::ErrorKind::Timeout, "no download slot came free (" + std::to_string(spec.count) + " at once across the sweep, in " +
                                                                spec.dir + ") within " + common::format_duration(common::to_seconds(deadline.budget())));
    }
}

}  // namespace deploy
