// The `bifrost` program: the only CLI11 translation unit. It declares every verb, its flags, help
// and examples, and dispatches to the verb files (one per verb, see commands.h).
#include <CLI/CLI.hpp>
#include <iostream>

#include "bifrost/cli/commands.h"
#include "common/cli_parse.h"
#include "common/error.h"
#include "common/log.h"
#include "common/output.h"
#include "common/program.h"

namespace {

using namespace bifrost::cli;

const char * kTargetHelp = "user@host:port, host, or a broker instance id such as runpod:abc123";

void add_env_flags(CLI::App * sub, std::vector<std::string> & env, std::vector<std::string> & env_files, std::string & cwd,
                   bool & import_env, bool & shell) {
    // One value per occurrence: CLI11 lets a vector option take extra words and then swallow the
    // `--` that ends them, so `--env X=1 -- sh -c ...` read `-c` as one of bifrost's own flags.
    sub->add_option("--env,-e", env, "KEY=VALUE for the remote command (repeatable; sent on stdin, never on the remote command line)")
        ->allow_extra_args(false);
    sub->add_option("--env-file", env_files, "file of KEY=VALUE lines (repeatable; --env wins over it)")->allow_extra_args(false);
    sub->add_option("--cwd", cwd, "remote working directory (~/x is relative to the remote home)");
    sub->add_flag("--import-container-env", import_env,
                  "export the container's first-process environment (/proc/1/environ) first; cloud containers hide it from SSH");
    sub->add_flag("--sh", shell, "run the words as one remote shell command line (pipes, globs); default: argv, nothing interpreted");
}

}  // namespace

int main(int argc, char ** argv) {
    common::install_interrupt_handlers();
    install_broker_resolver();
    GlobalOptions global;
    int verbose = 0;
    bool quiet = false;

    CLI::App app{"bifrost: push code to a GPU machine over SSH, run and watch jobs that survive disconnects, pull results"};
    app.set_version_flag("--version", "bifrost 0.1.0");
    app.require_subcommand(1);
    app.fallthrough();  // global flags (--json, --key, -v) are accepted after the verb too
    app.footer("Examples:\n"
               "  bifrost push root@203.0.113.7:22 . --to '~/project'\n"
               "  bifrost run --name train root@203.0.113.7:22 --cwd '~/project' -- python train.py\n"
               "  bifrost logs -f root@203.0.113.7:22 train\n"
               "Exit codes: 0 ok, 2 usage, 3 auth or host key changed, 6 network, 7 timeout, 8 remote step failed, 9 not found;\n"
               "exec and run return the remote command's status, and 255 for their own failures.");
    app.add_option("--key,-i", global.key_path, "private key file (default: ssh-agent, then ~/.ssh/id_*)");
    app.add_option("--known-hosts", global.known_hosts_path,
                   "bifrost's host-key pin file (default $BIFROST_KNOWN_HOSTS or $XDG_STATE_HOME/bifrost/known_hosts)");
    app.add_option("--connect-timeout", global.connect_timeout_s, "seconds per connection attempt")->capture_default_str();
    app.add_option("--wait", global.wait_s, "keep retrying an unreachable host (still booting) for this many seconds")->capture_default_str();
    app.add_option("--persist", global.persist_s,
                   "seconds an idle shared connection (control master) stays up; 0 disables connection reuse")
        ->envname("BIFROST_CONTROL_PERSIST")
        ->capture_default_str();
    app.add_option("--follow-window", global.follow_window_s,
                   "logs -f and attached run: seconds to keep reconnecting through one outage (at least --wait)")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--compress", global.compress, "SSH compression: auto (off for loopback), yes, no")
        ->check(CLI::IsMember({"auto", "yes", "no"}))
        ->capture_default_str();
    app.add_flag("--json", global.json, "JSON output (listings, results and errors)");
    app.add_flag("-v,--verbose", verbose, "more log output on stderr (-vv for debug)");
    app.add_flag("-q,--quiet", quiet, "only warnings and errors on stderr");

    ExecCmdOptions exec_o;
    auto * exec = app.add_subcommand("exec", "run a command; stdout/stderr streamed and kept apart; its exit status is ours");
    exec->add_option("target", exec_o.target, kTargetHelp)->required();
    exec->add_option("command", exec_o.command, "the remote command and its arguments, after --")->required();
    add_env_flags(exec, exec_o.env, exec_o.env_files, exec_o.cwd, exec_o.import_container_env, exec_o.shell);
    exec->add_flag("-n,--no-stdin", exec_o.no_stdin, "do not forward local stdin (it is forwarded when not a terminal)");
    exec->footer("Examples:\n"
                 "  bifrost exec root@203.0.113.7:22 -- nvidia-smi\n"
                 "  bifrost exec box --env HF_TOKEN=$HF_TOKEN --cwd '~/project' -- python eval.py --limit 10\n"
                 "  bifrost exec box --sh -- 'ls ~/runs | tail -n 3'\n"
                 "Exit status: the remote command's; 255 when bifrost itself fails (kind printed on stderr).");

    PushCmdOptions push_o;
    auto * push = app.add_subcommand("push", "mirror a local directory to the remote: incremental, atomic, ignore rules honoured");
    push->add_option("target", push_o.target, kTargetHelp)->required();
    push->add_option("dir", push_o.local_dir, "local directory (default: .)");
    push->add_option("--to", push_o.remote_dir, "remote directory (default: ~/workspace/<name of DIR>)");
    push->add_flag("--include-git", push_o.include_git, "also push .git (excluded by default)");
    push->add_option("--exclude", push_o.excludes, "extra gitignore-style pattern (repeatable); .gitignore and .bifrostignore are read too")
        ->allow_extra_args(false);
    push->footer("Examples:\n"
                 "  bifrost push root@203.0.113.7:22 . --to '~/project'\n"
                 "  bifrost --json push box ./src --exclude '*.ckpt'\n"
                 "Only new and changed files travel; files deleted locally are deleted remotely (only files bifrost pushed).");

    PullCmdOptions pull_o;
    auto * pull = app.add_subcommand("pull", "download a remote file or directory, verified by SHA-256, resumable");
    pull->add_option("target", pull_o.target, kTargetHelp)->required();
    pull->add_option("remote", pull_o.remote_path, "remote file or directory (~/x is relative to the remote home)")->required();
    pull->add_option("local", pull_o.local_dir, "local directory to mirror into (default: ./<name of REMOTE>)");
    pull->footer("Examples:\n"
                 "  bifrost pull root@203.0.113.7:22 '~/project/results' ./results\n"
                 "  bifrost --json pull box '~/runs/run-42/report.json' .\n"
                 "An interrupted pull resumes where it stopped; names that would escape LOCAL are refused.");

    RunCmdOptions run_o;
    auto * run = app.add_subcommand("run", "start a job that survives disconnects; attached unless --detach");
    run->add_option("target", run_o.target, kTargetHelp)->required();
    run->add_option("command", run_o.command, "the remote command and its arguments, after --")->required();
    run->add_option("--name", run_o.name, "job name (letters, digits, . _ -); its files live in ~/.bifrost/jobs/NAME")->required();
    run->add_flag("--detach,-d", run_o.detach, "start it and return at once (prints the job)");
    add_env_flags(run, run_o.env, run_o.env_files, run_o.cwd, run_o.import_container_env, run_o.shell);
    run->footer("Examples:\n"
                "  bifrost run --detach --name train root@203.0.113.7:22 --cwd '~/project' -- python train.py\n"
                "  bifrost run --name eval box --env-file .env -- python eval.py   # follows the log, returns its exit code\n"
                "Ctrl-C while attached detaches: the job keeps running (see bifrost jobs / logs / kill).");

    JobsCmdOptions jobs_o;
    auto * jobs = app.add_subcommand("jobs", "list jobs: running, succeeded, failed(code), killed");
    jobs->add_option("target", jobs_o.target, kTargetHelp)->required();
    jobs->footer("Examples:\n"
                 "  bifrost jobs root@203.0.113.7:22\n"
                 "  bifrost --json jobs box   # keys: name, state, status, exit_code, pid, start_time_unix_s, end_time_unix_s, log_bytes, command");

    LogsCmdOptions logs_o;
    auto * logs = app.add_subcommand("logs", "print a job's log; -f follows it until the job ends, across reconnects");
    logs->add_option("target", logs_o.target, kTargetHelp)->required();
    logs->add_option("name", logs_o.name, "job name, as listed by bifrost jobs")->required();
    logs->add_flag("-f,--follow", logs_o.follow, "keep streaming until the job ends");
    logs->add_option("--offset", logs_o.offset, "start at this byte of the log (resume a earlier read)");
    logs->footer("Examples:\n"
                 "  bifrost logs -f root@203.0.113.7:22 train\n"
                 "  bifrost logs box train --offset 1048576\n"
                 "With -f: the job's final state on stderr; exit 0 when it succeeded, 8 when it failed or was killed.");

    KillCmdOptions kill_o;
    auto * kill = app.add_subcommand("kill", "end a job's whole process group (TERM, then KILL after --grace)");
    kill->add_option("target", kill_o.target, kTargetHelp)->required();
    kill->add_option("name", kill_o.name, "job name, as listed by bifrost jobs")->required();
    kill->add_option("--grace", kill_o.grace_s, "seconds between TERM and KILL")->capture_default_str();
    kill->footer("Examples:\n"
                 "  bifrost kill root@203.0.113.7:22 train\n"
                 "  bifrost --json kill box train --grace 30");

    return common::run_program("bifrost", &global.json, [&]() -> int {
        if (auto done = common::parse_command_line(app, argc, argv, "bifrost")) return *done;
        common::log::set_verbosity(verbose, quiet);
        const common::Output out(global.json ? common::OutputFormat::Json : common::OutputFormat::Table);
        if (exec->parsed()) return run_exec(global, exec_o);
        if (push->parsed()) return run_push(global, push_o, out);
        if (pull->parsed()) return run_pull(global, pull_o, out);
        if (run->parsed()) return run_run(global, run_o, out);
        if (jobs->parsed()) return run_jobs(global, jobs_o, out);
        if (logs->parsed()) return run_logs(global, logs_o);
        if (kill->parsed()) return run_kill(global, kill_o, out);
        throw common::Error::internal("no verb selected");
    });
}
