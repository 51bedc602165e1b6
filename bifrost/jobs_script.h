// Internal: the remote job-state listing shared by jobs(), job() and poll_job() (jobs.cpp, logs.cpp).
#pragma once

#include <string>

#include "bifrost/bifrost.h"

namespace bifrost {

constexpr int kNoSuchJobStatus = 91;  // remote scripts exit with this when the job directory is missing

// A POSIX-sh fragment that prints one tab-separated state line per job directory matched by `glob`
// (under ~/.bifrost/jobs; a plain job name matches that job only).
std::string job_list_script(const std::string & glob);
// Parses one such line; JobInfo::name is empty when the line is not one.
JobInfo parse_job_line(const std::string & line);
// The state line of job `name` in `text` (other lines ignored); name empty when absent.
JobInfo find_job_line(const std::string & text, const std::string & name);

}  // namespace bifrost
