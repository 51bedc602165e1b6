// bifrost jobs TARGET [--json]: running / succeeded / failed(code) / killed.
#include "bifrost/cli/commands.h"

namespace bifrost::cli {

int run_jobs(const GlobalOptions & global, const JobsCmdOptions & o, const common::Output & out) {
    Client client = make_client(global, o.target);
    nlohmann::json rows = nlohmann::json::array();
    for (const auto & j : client.jobs()) rows.push_back(job_row(j));
    out.rows({{"name", "NAME"}, {"status", "STATUS"}, {"pid", "PID"}, {"start_time_unix_s", "STARTED"},
              {"log_bytes", "LOG BYTES"}, {"command", "COMMAND"}},
             rows);
    return 0;
}

}  // namespace bifrost::cli
