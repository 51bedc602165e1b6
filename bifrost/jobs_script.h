// Internal: the remote job-state listing shared by jobs(), job() and poll_job() (jobs.cpp, logs.cpp),
// and job_shell_functions() by broker's ssh-hosts terminate, so both read a job's state one way.
#pragma once

#include <string>

#include "bifrost/bifrost.h"

namespace bifrost {

constexpr int kNoSuchJobStatus = 91;  // remote scripts exit with this when the job directory is missing

// POSIX-sh function definitions for job directories:
// `job_alive DIR` is true while DIR's wrapper is still running. Its identity is checked, not only
// its pid: the wrapper records the boot id and its own start time (field 22 of /proc/PID/stat) in
// DIR/ident, and a pid that now names another process (reused after a reboot or a container
// restart) is not the job. Records without DIR/ident (older bifrost, or a remote without /proc) fall
// back to `kill -0`.
// `job_exit_code DIR` prints the recorded exit code (nothing while none is): the name of
// DIR/exit.CODE, else (older records) the content of DIR/exit_code.
std::string job_shell_functions();
// The wrapper's lines that record DIR ($J) /ident; run before it writes its pid.
std::string job_ident_record();

// A POSIX-sh fragment that prints one tab-separated state line per job directory matched by `glob`
// (under ~/.bifrost/jobs; a plain job name matches that job only).
std::string job_list_script(const std::string & glob);
// Parses one such line; JobInfo::name is empty when the line is not one.
JobInfo parse_job_line(const std::string & line);
// The state line of job `name` in `text` (other lines ignored); name empty when absent.
JobInfo find_job_line(const std::string & text, const std::string & name);

}  // namespace bifrost
