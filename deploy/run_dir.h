// The local run directory: everything a run knows, on disk, as it happens, so that a crash loses
// nothing and `--resume RUN_DIR` can pick up where it stopped.
//
//   RUN_DIR/run.json        the resolved config and the run id (written once, at the start)
//   RUN_DIR/journal.jsonl   one JSON line per step event: start, done (duration_s), failed (kind,
//                           message), skipped; append-only, fsync'd (the record of what happened)
//   RUN_DIR/state.json      the resumable state: instance, remote paths, job name, log offset,
//                           end decision (replaced atomically after every change)
//   RUN_DIR/logs/           the job log streamed here, bootstrap output, watchdog log
//   RUN_DIR/results/        what was pulled from the instance
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"

namespace deploy {

struct JournalEvent {
    std::string step;
    std::string event;  // start | done | failed | skipped | note
    double unix_s = 0;
    double duration_s = 0;       // done / failed
    std::string kind;            // failed: common::kind_name
    std::string message;         // failed / note / skipped
};

class RunDir {
public:
    // Creates RUN_DIR (and logs/, results/); refuses (usage) an existing non-empty directory.
    static RunDir create(const std::string & path, const nlohmann::json & run_info);
    // Opens an existing run directory (not_found when it has no run.json).
    static RunDir open(const std::string & path);

    const std::string & path() const { return path_; }
    std::string logs_dir() const { return path_ + "/logs"; }
    std::string results_dir() const { return path_ + "/results"; }
    const nlohmann::json & run_info() const { return run_info_; }

    void append(const JournalEvent & event);
    std::vector<JournalEvent> journal() const;  // tolerates a torn last line (a crash mid-write)
    // Steps whose last event is "done".
    bool step_done(const std::string & step) const;

    // The mutable state: state()[key]; save() writes it atomically (tmp + rename).
    nlohmann::json & state() { return state_; }
    const nlohmann::json & state() const { return state_; }
    void save_state();

private:
    RunDir(std::string path, nlohmann::json run_info, nlohmann::json state);
    std::string path_;
    nlohmann::json run_info_;
    nlohmann::json state_;
};

// "20261122-041946-a1b2c3": sortable, unique enough, and a valid part of an instance name after
// dropping the dashes.
std::string new_run_id(double unix_now);

}  // namespace deploy
