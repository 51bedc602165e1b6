// What runs on the instance, as text built by pure functions (so it is unit-tested without a
// machine): the remote folder layout, the job script that runs extract and analyze, the watchdog
// config, and the synthetic token file of the rehearsal. Every value that reaches a shell is quoted
// with common::sh_quote; secrets never appear here (they travel in bifrost's stdin env block).
#pragma once

#include <cstdint>
#include <string>

#include "broker/provider.h"
#include "common/shell_quote.h"
#include "deploy/run_config.h"

namespace deploy {

struct RemoteLayout {
    std::string base;            // <home>/toolkit
    std::string src_dir;         // <base>/src: the pushed source tree (bootstrap builds from it)
    std::string run_dir;         // <base>/runs/<run_id>
    std::string input_dir;       // <run_dir>/input: job.sh, tokens, data, a local checkpoint
    std::string results_dir;     // <run_dir>/results: what is pulled home
    std::string cache_dir;       // builds and models, shared by runs (and by tests, on loopback)
    std::string heartbeat_file;  // <run_dir>/heartbeat
    std::string watchdog_conf;   // <run_dir>/watchdog.conf
};

// `home` is the remote $HOME (absolute); `cache_dir` empty means <home>/.cache/toolkit.
RemoteLayout remote_layout(const std::string & home, const std::string & run_id, const std::string & cache_dir);

// The job: (fixture) write the checkpoint → extract run → analyze run → copy metadata into results.
// `model_dir` is where the checkpoint is on the instance (ignored for a fixture: it is written to
// <run_dir>/model). Input files are named as the payload writes them (input/<basename>).
std::string job_script(const RunConfig & config, const RemoteLayout & layout, const std::string & bin_dir,
                       const std::string & model_dir);

// The bifrost job name of the run's remote step `role` (bootstrap, fetch, analysis):
// "<role>-<run_id>". A host's job names (~/.bifrost/jobs/NAME) are one namespace for every run on
// it: a leased machine or the user's own, a batch site's login node that a sweep's members share, a
// host one run is resumed on while another uses it. With the run id in the name, no run starts,
// follows, replaces or stops another run's job (with fixed names a second run could not start its
// job while the first's ran, and a finish stop ended every running job on the host). `legacy`: the
// run's state.json records the job under the bare role, as runs did before the names carried the
// id; such a run keeps that name, so a --resume follows the job it started. Throws Usage when the
// name would be longer than bifrost's 64 characters (a run id that no run writes).
std::string remote_job_name(const std::string & role, const std::string & run_id, bool legacy);
// Whether `name` (a job listed on the host) carries this run's id: one of its own jobs by
// construction, recorded in state.json or not (a crash between the start and the state write).
bool remote_job_of_run(const std::string & name, const std::string & run_id);
// The step role of one of the run's job names: the bare role of a legacy name, else the name
// without its "-<run_id>" (the local log is RUN_DIR/logs/<role>.log either way).
std::string remote_job_role(const std::string & name, const std::string & run_id);

// The name of a data file inside input/ ("tokens.json" for synthetic tokens).
std::string input_file_name(const DataConfig & data);

// What the on-instance watchdog (deploy/remote/watchdog.sh) does when heartbeats stop or the
// deadline passes, chosen from the provider's declared broker::SelfEnd, never from its name.
struct WatchdogSettings {
    std::string action;              // request | command | none
    std::string instance_id;         // the provider's id, for the watchdog's log
    double deadline_unix = 0;
    double heartbeat_timeout_s = 600;
    std::string terminate_command;   // action == command: a shell command line, every word quoted
    broker::SelfEndRequest request;  // action == request: broker's terminate request, as data
    bool disarmed = false;
    int tick_s = 10;
};
// The watchdog's KEY=VALUE config (every value sh_quote'd). The request travels as data: the shell
// writes the body to a file and sends it as is. Throws Error(internal) for a request no header or
// URL can carry (a CR/LF in a header, a method that is not a word, a key variable that is not a name).
std::string watchdog_config(const WatchdogSettings & settings, const RemoteLayout & layout);

// Seeded random token ids in [0, vocab), enough for num_sequences windows, as JSON [[...], ...].
std::string synthetic_tokens_json(int64_t vocab, int64_t sequences, int64_t seq_len, uint64_t seed);

}  // namespace deploy
