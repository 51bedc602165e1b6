// Download slots shared by the members of a sweep: at most N model downloads at once, across the
// member processes (issue #15: twelve members fetching from the Hub together hit its 429 wall).
// A slot is an flock(2) on one of N files in a folder the sweep owns; the kernel drops the lock when
// its holder exits, SIGKILL included, so a crashed member never keeps a slot.
//
//   deploy_and_analyze --sweep F --member M --download-slots <sweep dir>/download-slots:2   (the sweep passes it)
//   auto slot = DownloadSlot::acquire(spec, deadline);  // blocks; released when `slot` goes away
//
// deploy_and_analyze takes its slot in a step of its own before the create (before the fetch for a
// batch scheduler), so a run waiting behind others' downloads rents nothing meanwhile, and lets go
// of it when its fetch step ends (flow.cpp, the slot step).
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "common/clock.h"
#include "common/file_lock.h"

namespace deploy {

struct DownloadSlotSpec {
    std::string dir;  // empty: no cap
    int count = 0;    // 1..kMaxDownloadSlots
};
constexpr int kMaxDownloadSlots = 64;

// "DIR:N" (N the last ':'-separated field); throws common::Error(usage) naming the flag otherwise.
DownloadSlotSpec parse_download_slots(const std::string & text);
std::string format_download_slots(const DownloadSlotSpec & spec);

class DownloadSlot {
public:
    // Takes a free slot, waiting (polling every `poll_s` through deadline.sleep) while all are held.
    // A spec without a folder returns an empty slot at once. `on_wait` is called at every poll that
    // found all slots held (a run resumed with its instance rented keeps the watchdog's heartbeat
    // going there: a wait may be long); what it throws ends the wait. Throws common::Error: Timeout when the
    // deadline passes first, Interrupted on Ctrl-C, an io error naming the slot file when the folder
    // cannot be used.
    static DownloadSlot acquire(const DownloadSlotSpec & spec, const common::Deadline & deadline, double poll_s = 1,
                                const std::function<void()> & on_wait = {});

    bool held() const { return lock_.has_value(); }
    int index() const { return index_; }  // which slot (0-based); -1 when none is held

private:
    std::optional<common::FileLock> lock_;
    int index_ = -1;
};

}  // namespace deploy
