// Detached jobs: each job lives in ~/.bifrost/jobs/NAME/ on the remote (run.sh, command, log, pid,
// ident, start_time, state.running -> exit.CODE, end_time, exit_code, killed). The wrapper runs in its own session (setsid), so it
// survives the SSH connection closing, and records the exit code itself. The environment reaches
// it through inheritance from the launching shell (which got it on stdin): it never touches disk.
// The process-group id equals the wrapper's pid, so `kill` can end the whole tree.
#include <sstream>

#include "bifrost/bifrost.h"
#include "bifrost/client_impl.h"
#include "bifrost/jobs_script.h"
#include "bifrost/shell.h"
#include "common/error.h"

namespace bifrost {

using common::Error;
using common::ErrorKind;

namespace {

constexpr int kJobRunning = 90;

std::string job_dir(const std::string & name) {
    if (!valid_job_name(name))
        throw Error::usage("job name '" + name + "': use letters, digits, '.', '_' or '-' (at most 64, starting alphanumeric)");
    return "\"$HOME\"/.bifrost/jobs/" + name;
}

}  // namespace

JobInfo parse_job_line(const std::string & line) {
    std::vector<std::string> f;
    size_t start = 0;
    for (int i = 0; i < 8; ++i) {
        size_t tab = line.find('\t', start);
        if (tab == std::string::npos) break;
        f.push_back(line.substr(start, tab - start));
        start = tab + 1;
    }
    JobInfo j;
    if (f.size() < 8) return j;
    j.command = line.substr(start);
    j.name = f[0];
    j.pid = std::atol(f[1].c_str());
    j.start_time_unix_s = std::atoll(f[2].c_str());
    j.end_time_unix_s = std::atoll(f[3].c_str());
    bool killed = f[5] == "1";
    bool alive = f[6] == "1";
    j.log_bytes = std::strtoull(f[7].c_str(), nullptr, 10);
    if (!f[4].empty()) {
        j.exit_code = std::atoi(f[4].c_str());
        j.state = killed ? "killed" : (*j.exit_code == 0 ? "succeeded" : "failed");
    } else if (alive) {
        j.state = "running";
    } else {
        j.state = "killed";  // gone without recording an exit code: SIGKILL, OOM killer, reboot
    }
    return j;
}

std::string job_shell_functions() {
    // The start time is field 22 of /proc/PID/stat; the command name (field 2) may hold spaces and
    // ")", so everything up to the last ") " goes first, and field 22 is then the 20th.
    return "job_start_time() { sed 's/.*) //' \"/proc/$1/stat\" 2>/dev/null | cut -d' ' -f20; }\n"
           "job_alive() {\n"
           "  ja_pid=$(cat \"$1/pid\" 2>/dev/null)\n"
           "  [ -n \"$ja_pid\" ] && kill -0 \"$ja_pid\" 2>/dev/null || return 1\n"
           "  [ -f \"$1/ident\" ] || return 0\n"
           "  read -r ja_boot ja_start < \"$1/ident\" || return 1\n"
           "  [ \"$ja_boot\" = \"$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)\" ] || return 1\n"
           "  [ \"$ja_start\" = \"$(job_start_time \"$ja_pid\")\" ]\n"
           "}\n"
           "job_exit_code() {\n"
           "  for jx in \"$1\"/exit.*; do [ -e \"$jx\" ] && { printf '%s' \"${jx##*/exit.}\"; return 0; }; done\n"
           "  cat \"$1/exit_code\" 2>/dev/null\n"
           "}\n";
}

std::string job_ident_record() {
    // Positional parameters, not variables: the wrapper's environment is the job's (see run_detached).
    return "set -- \"$1\" \"$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)\" \"$(sed 's/.*) //' \"/proc/$$/stat\" 2>/dev/null | cut -d' ' -f20)\"\n"
           "if [ -n \"$2\" ] && [ -n \"$3\" ]; then printf '%s %s\\n' \"$2\" \"$3\" > \"$1/ident\"; fi\n"
           "set -- \"$1\"\n";
}

std::string job_list_script(const std::string & glob) {
    return job_shell_functions() +
           "cd \"$HOME/.bifrost/jobs\" 2>/dev/null || exit 0\n"
           "for j in " + glob + "; do n=${j%/}; [ -f \"$n/pid\" ] || continue\n"
           "  ec=$(job_exit_code \"$n\"); pid=$(cat \"$n/pid\"); a=0\n"
           "  if [ -z \"$ec\" ] && job_alive \"$n\"; then a=1; fi\n"
           "  [ -z \"$ec\" ] && ec=$(job_exit_code \"$n\")\n"
           "  k=0; [ -f \"$n/killed\" ] && k=1\n"
           "  sz=$(wc -c < \"$n/log\" 2>/dev/null || echo 0)\n"
           "  printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t' \"$n\" \"$pid\" \"$(cat \"$n/start_time\" 2>/dev/null)\" "
           "\"$(cat \"$n/end_time\" 2>/dev/null)\" \"$ec\" \"$k\" \"$a\" $sz\n"
           "  head -c 400 \"$n/command\" 2>/dev/null | tr '\\n\\t' '  '; echo\n"
           "done\n";
}

JobInfo find_job_line(const std::string & text, const std::string & name) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        JobInfo j = parse_job_line(line);
        if (j.name == name) return j;
    }
    return {};
}


JobInfo Client::run_detached(const JobSpec & spec) {
    const std::string j = job_dir(spec.name);
    std::string cwd_line;
    if (!spec.options.cwd.empty())
        cwd_line = "cd -- " + remote_path_expr(spec.options.cwd) +
                   " || { echo 'bifrost: --cwd: cannot change directory' >&2; exit 255; }\n";
    // The wrapper: records pid and times, runs the command with stdio on the log, records the exit
    // code. `trap :` keeps the wrapper alive through the group-wide TERM of `bifrost kill` so it can
    // still record the code; the command itself gets default signal handling. It does not change
    // directory itself: it inherits the launcher's, which has already applied --cwd (a relative
    // --cwd applied twice would name another directory, or none, and the job would never run).
    // The job directory is its first argument, as the launcher expanded it: recomputed here from
    // $HOME, an --env HOME=... pointed it elsewhere and the job never started. It sets no variable
    // before the command runs, since its environment is the job's (--env J=... stays the user's).
    std::string wrapper = job_ident_record() +
                          "echo $$ > \"$1/pid.tmp\" && mv \"$1/pid.tmp\" \"$1/pid\"\n"
                          "date +%s > \"$1/start_time\"\n"
                          "trap : TERM INT HUP\n"
                          ": > \"$1/state.running\"\n"
                          "( " + command_text(spec.command) + " ) < /dev/null >> \"$1/log\" 2>&1\n"
                          "code=$?\n"
                          // The code is recorded first, in a name: renaming the empty file made at
                          // the start needs no free block, so a job that failed on a full disk
                          // still shows its code (writing it into a file hit ENOSPC and the job
                          // showed as killed). exit_code is still written for older readers.
                          "mv -f \"$1/state.running\" \"$1/exit.$code\" 2>/dev/null || : > \"$1/exit.$code\"\n"
                          "date +%s > \"$1/end_time\"\n"
                          "echo \"$code\" > \"$1/exit_code.tmp\" && mv \"$1/exit_code.tmp\" \"$1/exit_code\"\n";
    std::string script = job_shell_functions() + "J=" + j + "\n"
                         "if [ -f \"$J/pid\" ] && [ -z \"$(job_exit_code \"$J\")\" ] && job_alive \"$J\"; then\n"
                         "  echo 'job " + spec.name + " is still running' >&2; exit " + std::to_string(kJobRunning) + "\n"
                         "fi\n"
                         "rm -rf \"$J\" && mkdir -p \"$J\" || exit 97\n"
                         "printf '%s\\n' " + sh_quote(spec.command.display()) + " > \"$J/command\"\n"
                         "printf '%s' " + sh_quote(wrapper) + " > \"$J/run.sh\"\n"
                         ": > \"$J/log\"\n"
                         // From the exports on, only positional parameters: an --env J=... or i=...
                         // must neither redirect this script nor be changed for the job.
                         "set -- \"$J\"\n" +
                         env_block(*impl_, spec.options) + cwd_line +
                         // The wrapper's own complaints (a failed write of its pid or times) go to
                         // the job's log, where `bifrost logs` shows them, not to /dev/null.
                         // Not started with `&` where avoidable: a non-interactive shell starts
                         // background commands with SIGINT and SIGQUIT ignored, and the job then
                         // inherited that (Ctrl-C handlers, `kill -INT` for a clean stop, never
                         // fired). `setsid -f` (util-linux >= 2.31) forks by itself; else
                         // `env --default-signal` (coreutils >= 8.31) restores them; else, on
                         // older remotes, the job keeps them ignored.
                         "if setsid -f true < /dev/null > /dev/null 2>&1; then setsid -f sh \"$1/run.sh\" \"$1\" < /dev/null >> \"$1/log\" 2>&1\n"
                         "elif command -v setsid > /dev/null 2>&1 && env --default-signal=INT,QUIT true > /dev/null 2>&1; then\n"
                         "  env --default-signal=INT,QUIT setsid sh \"$1/run.sh\" \"$1\" < /dev/null >> \"$1/log\" 2>&1 &\n"
                         "elif command -v setsid > /dev/null 2>&1; then setsid sh \"$1/run.sh\" \"$1\" < /dev/null >> \"$1/log\" 2>&1 &\n"
                         "else set -m; sh \"$1/run.sh\" \"$1\" < /dev/null >> \"$1/log\" 2>&1 & fi\n"
                         "set -- \"$1\" 0\n"
                         "while [ ! -s \"$1/pid\" ] && [ \"$2\" -lt 200 ]; do sleep 0.05; set -- \"$1\" $(($2 + 1)); done\n"
                         "[ -s \"$1/pid\" ] || { echo 'job did not start (no pid after 10 s)' >&2; exit 97; }\n"
                         "exit 0\n";
    auto c = impl_->run_script(script);
    const std::string label = impl_->t().label();
    if (c.status == kJobRunning)
        throw Error::usage("job " + spec.name + " on " + label + " is still running; run `bifrost kill " + label + " " +
                           spec.name + "` first or choose another --name");
    if (c.status == 255 && c.err.find("cannot change directory") != std::string::npos)
        throw Error::not_found("remote directory " + spec.options.cwd, "cannot change into it on " + label);
    if (c.status != 0)
        throw Error(ErrorKind::RemoteFailed, label + ": starting job " + spec.name + " failed (exit " +
                                                 std::to_string(c.status) + "): " + c.err);
    return job(spec.name);
}

std::vector<JobInfo> Client::jobs() {
    std::string out = impl_->idempotent("listing jobs", [&] { return impl_->run_script_ok(job_list_script("*/"), "listing jobs"); });
    std::vector<JobInfo> result;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
        JobInfo j = parse_job_line(line);
        if (!j.name.empty()) result.push_back(j);
    }
    return result;
}

JobInfo Client::job(const std::string & name) {
    job_dir(name);
    std::string out = impl_->idempotent("reading job " + name, [&] { return impl_->run_script_ok(job_list_script(name), "reading job " + name); });
    JobInfo found = find_job_line(out, name);
    if (!found.name.empty()) return found;
    throw Error::not_found("job " + name, "no such job on " + impl_->t().label() + "; see `bifrost jobs`");
}

JobInfo Client::kill(const std::string & name, double grace_s) {
    const std::string j = job_dir(name);
    int ticks = static_cast<int>(grace_s * 10);
    // Only a wrapper that is still this job's own process is signalled (its process group is the
    // job's): a pid reused by an unrelated process after a reboot or container restart is left
    // alone, and a job that is gone needs nothing.
    std::string script = job_shell_functions() + "J=" + j + "\n"
                         "[ -f \"$J/pid\" ] || exit " + std::to_string(kNoSuchJobStatus) + "\n"
                         "[ -n \"$(job_exit_code \"$J\")\" ] && exit 0\n"
                         "job_alive \"$J\" || exit 0\n"
                         "pid=$(cat \"$J/pid\")\n"
                         ": > \"$J/killed\"\n"
                         "kill -TERM -\"$pid\" 2>/dev/null\n"
                         "i=0; while kill -0 -\"$pid\" 2>/dev/null && [ $i -lt " + std::to_string(ticks) + " ]; do sleep 0.1; i=$((i+1)); done\n"
                         "kill -KILL -\"$pid\" 2>/dev/null\n"
                         "exit 0\n";
    auto c = impl_->run_script(script);
    if (c.status == kNoSuchJobStatus)
        throw Error::not_found("job " + name, "no such job on " + impl_->t().label() + "; see `bifrost jobs`");
    if (c.status != 0)
        throw Error(ErrorKind::RemoteFailed, impl_->t().label() + ": kill " + name + " failed: " + c.err);
    return job(name);
}

}  // namespace bifrost
