// The local run directory: everything a run knows, on disk, as it happens, so that a crash loses
// nothing and `--resume RUN_DIR` can pick up where it stopped.
//
//   RUN_DIR/run.json        the resolved config and the run id (written once, at the start)
//   RUN_DIR/journal.jsonl   one JSON line per step event: start, done (duration_s), failed (kind,
//                           message), skipped; append-only, fsync'd (the record of what happened)
//   RUN_DIR/state.json      the resumable state (RunState below): instance, offers, remote
//                           layout, jobs with log offsets, end decision (replaced atomically
//                           after every change)
//   RUN_DIR/logs/           the job log streamed here, bootstrap output, watchdog log
//   RUN_DIR/results/        what was pulled from the instance
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/file_lock.h"

namespace deploy {

struct JournalEvent {
    std::string step;
    std::string event;  // start | done | failed | skipped | note
    double unix_s = 0;
    double duration_s = 0;       // done / failed
    std::string kind;            // failed: common::kind_name
    std::string message;         // failed / note / skipped
};

// state.json, typed. Each member is what one step learned; an optional is absent until that step
// has run (the flow asks has_value() where it used to ask whether the key exists). The on-disk keys
// are the ones the untyped flow wrote, so run directories from before this type still resume
// (tests/deploy/data/old-format); top-level keys this version does not know are kept as they are.
struct SshRecord {
    std::string host;
    int port = 22;
    std::string user;
};

struct InstanceRecord {
    std::string provider;
    std::string id;
    std::string name;
    double price_usd_per_hour = 0;
    std::string gpu_model;
    int gpu_count = 0;
    double vram_gb_per_gpu = 0;
    std::optional<double> created_unix;
    std::optional<bool> native_deadline;  // written when created here, absent when adopted
    bool adopted = false;                 // found by name after a crash between create and save
    std::optional<SshRecord> ssh;         // known once ready
    std::string ref() const { return provider + ":" + id; }  // "<provider>:<id>", as broker's CLI takes it
};

struct EstimateRecord {
    int64_t params = 0;
    int64_t params_active = 0;
    double weights_gb = 0, activations_gb = 0, total_gb = 0, per_gpu_gb = 0;
    double offload_gb = 0, ring_gb = 0;  // resources.offload_gb's share of the weights and the stream ring; 0 without offload
};

// One offer the offers step found: the fields deploy reads, and broker's whole listing row
// (broker::offer_to_json) kept for the record.
struct OfferRecord {
    std::string provider;
    std::string offer_id;
    std::string gpu_model;
    int gpu_count = 0;
    double price_usd_per_hour_total = 0;
    nlohmann::json row;
};

struct CreateIntent {
    std::string run_id;
    double unix_s = 0;
    // The providers a create was sent to and that did not refuse it for capacity: where an instance
    // of this run may exist that the run never recorded (an answer lost, a read-back that failed).
    // Finish looks there by name. Absent in run directories from before it: every provider of the run.
    std::optional<std::vector<std::string>> providers;
};

struct RemoteRecord {
    std::string home;       // the instance's $HOME
    std::string cache_dir;  // "" until push resolved it
};

struct WatchdogRecord {
    std::string action;  // request | command | none (older run directories: the provider's name)
    double deadline_unix = 0;
    double heartbeat_timeout_s = 0;
};

// A detached job this run started, and how far its log has been copied home.
struct JobRecord {
    uint64_t offset = 0;
    std::optional<std::string> state;  // set once the job ended: succeeded | failed | ...
    std::optional<int> exit_code;
};

// A batch scheduler's job this run submitted (providers with caps().batch_jobs: build, fetch,
// analysis), and how far its output file on the shared directory has been copied home.
struct BatchJobRecord {
    std::string id;           // the provider's instance id ("<cluster>/<job id>")
    std::string name;         // the instance name the scheduler shows
    std::string output_path;  // the job's output file on the site's shared directory
    uint64_t offset = 0;      // bytes of it copied into RUN_DIR/logs/<role>.log
    int restarts = 0;         // starts after the first (a requeue), from the job's own start lines
    std::optional<std::string> end_state;  // once ended: COMPLETED, FAILED, TIMEOUT, NODE_FAIL, ...
    std::optional<int> exit_code;          // from the exit file the job writes beside its output
    double submitted_unix = 0;
};

// A jump host on the way to a batch site's login node (broker::SshHop).
struct JumpRecord {
    std::string host;
    int port = 22;
    std::string user;
    std::string key;
};

// Where a batch run prepares its work (broker::BatchSite) and the jobs it submitted there.
struct BatchRecord {
    std::string provider;
    std::string offer_id;
    SshRecord login;
    std::string login_key;  // the key the site's definition names for its login node
    std::string work_dir;
    std::vector<JumpRecord> jump;  // first hop first; empty: the login node is reached directly
    bool fetch_on_login = true;
    std::map<std::string, BatchJobRecord> jobs;  // by role: build | fetch | analysis
    // The role of a job being submitted and not yet recorded in `jobs` (set before sbatch, cleared
    // once recorded): after a crash or a failed submit, finish looks for it by name.
    std::optional<std::string> submitting;
};

struct ResultsRecord {
    std::string dir;
    std::string outliers_json;
};

struct EndRecord {
    std::string action;                     // none | terminate | keep
    std::optional<std::string> reason;
    std::optional<double> keep_until_unix;  // keep
    std::optional<bool> watchdog_extended;  // keep
    std::optional<bool> proven_gone;        // terminate
    std::optional<std::string> last_status; // terminate
    std::optional<double> ended_unix;       // terminate
};

struct RunState {
    bool estimated = false;              // the estimate step ran (min_vram_gb may still be none)
    std::optional<double> min_vram_gb;   // none: a CPU run, or not estimated yet
    std::optional<EstimateRecord> estimate;
    std::optional<std::vector<OfferRecord>> offers;
    std::optional<CreateIntent> create_intent;
    std::optional<InstanceRecord> instance;
    std::optional<RemoteRecord> remote;
    std::optional<WatchdogRecord> watchdog;
    std::optional<bool> container_env;   // PID 1's environment is readable on the instance
    std::map<std::string, JobRecord> jobs;
    std::optional<std::string> bin_dir;
    std::optional<std::string> model_dir;
    std::optional<BatchRecord> batch;    // batch providers only: the site and the jobs submitted there
    std::optional<ResultsRecord> results;
    std::optional<EndRecord> end;
    nlohmann::json unknown = nlohmann::json::object();  // top-level keys this version does not read
};

// The one mapping between RunState and state.json. from_json refuses (usage, naming `source` and
// the key) a value of the wrong type or a count beyond any real run's, never guesses.
nlohmann::json to_json(const RunState & state);
nlohmann::json to_json(const EndRecord & end);  // state.json's "end" (also the summary's)
RunState run_state_from_json(const nlohmann::json & j, const std::string & source = "state.json");

class RunDir {
public:
    // Creates RUN_DIR (and logs/, results/); refuses (usage) an existing non-empty directory (its
    // lock file alone does not count: lock_run_dir comes first).
    static RunDir create(const std::string & path, const nlohmann::json & run_info);
    // Opens an existing run directory (not_found when it has no run.json). A run.json or state.json
    // that is not a regular file, over 16 MiB, not JSON, or holds a field of the wrong type is
    // refused (usage, naming the file and the key) and left as it is.
    static RunDir open(const std::string & path);

    const std::string & path() const { return path_; }
    std::string logs_dir() const { return path_ + "/logs"; }
    std::string results_dir() const { return path_ + "/results"; }
    const nlohmann::json & run_info() const { return run_info_; }
    // run.json's ids and workspace, checked when the directory is opened ("" when absent).
    const std::string & run_id() const { return run_id_; }
    const std::string & instance_run_id() const { return instance_run_id_; }
    const std::string & workspace() const { return workspace_; }

    void append(const JournalEvent & event);
    // Tolerates a torn line (a crash or a full disk mid-append: that event did not complete); a
    // line that is JSON with a field of the wrong type, or a journal over 64 MiB, is refused
    // (usage, naming file:line and the key): the record of what ran is not guessed around.
    std::vector<JournalEvent> journal() const;
    // Steps whose last event is "done".
    bool step_done(const std::string & step) const;

    // The mutable state; save_state() writes it atomically (tmp + rename).
    RunState & state() { return state_; }
    const RunState & state() const { return state_; }
    void save_state();

private:
    RunDir(std::string path, nlohmann::json run_info, RunState state);
    std::string path_;
    nlohmann::json run_info_;
    RunState state_;
    std::string run_id_, instance_run_id_, workspace_;
};

// The claim of the process that drives a run (a new run or a --resume): an flock(2) on RUN_DIR/lock,
// held for that process's life (common::FileLock: the kernel drops it when the holder dies, SIGKILL
// included, so a crashed driver never blocks a resume). Two drivers of one run would each rent an
// instance, truncate the same job log and overwrite each other's state. Creates `path` if needed;
// throws Error(usage) naming the directory when another process holds it.
common::FileLock lock_run_dir(const std::string & path);
// Whether another process drives the run in `path` right now (false when `path` does not exist).
bool run_dir_driven_elsewhere(const std::string & path);

// "20261122-041946-a1b2c3": sortable, unique enough, and a valid part of an instance name after
// dropping the dashes.
std::string new_run_id(double unix_now);

}  // namespace deploy
