// The verbs of the `bifrost` program. Each verb's logic lives in its own file with an options
// struct; cli.cpp (the only CLI11 translation unit) parses flags into these structs.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "bifrost/bifrost.h"
#include <nlohmann/json.hpp>

#include "common/output.h"

namespace bifrost::cli {

struct GlobalOptions {
    std::string key_path;
    std::string known_hosts_path;
    double connect_timeout_s = 10;
    double wait_s = 0;          // keep retrying an unreachable host this long (machines still booting)
    int persist_s = 120;        // control master idle lifetime; 0: no connection reuse
    double follow_window_s = 180;  // logs -f and attached run: reconnect through one outage this long (at least wait_s)
    std::string compress = "auto";
    bool json = false;
};

// Connects to target (through the control master unless persist_s is 0).
Client make_client(const GlobalOptions & global, const std::string & target);
ExecOptions make_exec_options(const std::vector<std::string> & env, const std::vector<std::string> & env_files,
                              const std::string & cwd, bool import_container_env);
Command make_command(const std::vector<std::string> & words, bool shell);
// Streams job `name`'s log to stdout from `offset` until the job ends (logs -f, attached run),
// reconnecting through each outage for max(follow_window_s, wait_s). When it gives up it prints the
// command that resumes at the exact byte reached, then rethrows. Returns the offset reached.
uint64_t follow_to_stdout(Client & client, const GlobalOptions & global, const std::string & target,
                          const std::string & name, uint64_t offset);
// Prints an error for the attached verbs (exec, run): the kind on stderr, exit code 255 like ssh.
int report_attached_error(const common::Error & error, bool json);

// Resolves broker instance ids given as targets (broker_targets.cpp; links the broker library).
void install_broker_resolver();

struct ExecCmdOptions {
    std::string target;
    std::vector<std::string> command;
    std::vector<std::string> env;
    std::vector<std::string> env_files;
    std::string cwd;
    bool import_container_env = false;
    bool shell = false;
    bool no_stdin = false;
};
int run_exec(const GlobalOptions & global, const ExecCmdOptions & options);

struct PushCmdOptions {
    std::string target;
    std::string local_dir = ".";
    std::string remote_dir;
    bool include_git = false;
    std::vector<std::string> excludes;
};
int run_push(const GlobalOptions & global, const PushCmdOptions & options, const common::Output & out);

struct PullCmdOptions {
    std::string target;
    std::string remote_path;
    std::string local_dir;
};
int run_pull(const GlobalOptions & global, const PullCmdOptions & options, const common::Output & out);

struct RunCmdOptions {
    std::string target;
    std::string name;
    bool detach = false;
    std::vector<std::string> command;
    std::vector<std::string> env;
    std::vector<std::string> env_files;
    std::string cwd;
    bool import_container_env = false;
    bool shell = false;
};
int run_run(const GlobalOptions & global, const RunCmdOptions & options, const common::Output & out);

struct JobsCmdOptions {
    std::string target;
};
int run_jobs(const GlobalOptions & global, const JobsCmdOptions & options, const common::Output & out);

struct LogsCmdOptions {
    std::string target;
    std::string name;
    bool follow = false;
    uint64_t offset = 0;
};
int run_logs(const GlobalOptions & global, const LogsCmdOptions & options);

struct KillCmdOptions {
    std::string target;
    std::string name;
    double grace_s = 5;
};
int run_kill(const GlobalOptions & global, const KillCmdOptions & options, const common::Output & out);

nlohmann::json job_row(const JobInfo & job);

}  // namespace bifrost::cli
