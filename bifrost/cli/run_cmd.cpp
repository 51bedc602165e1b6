// bifrost run --name NAME [--detach] TARGET -- CMD: starts a job that survives disconnects
// (~/.bifrost/jobs/NAME on the remote). Attached (no --detach), it then follows the log and
// returns the job's exit code — Ctrl-C or a dropped connection leaves the job running.
#include <unistd.h>

#include "bifrost/cli/commands.h"
#include "common/error.h"
#include "common/log.h"

namespace bifrost::cli {

int run_run(const GlobalOptions & global, const RunCmdOptions & o, const common::Output & out) {
    JobSpec spec;
    spec.name = o.name;
    try {
        spec.command = make_command(o.command, o.shell);
        spec.options = make_exec_options(o.env, o.env_files, o.cwd, o.import_container_env);
        Client client = make_client(global, o.target);
        JobInfo job = client.run_detached(spec);
        if (o.detach) {
            out.object(job_row(job));
            return 0;
        }
        common::log::info("job ", job.name, " started (pid ", job.pid, "); Ctrl-C detaches, it keeps running");
        try {
            // The same reconnect window per outage as logs -f (--wait alone defaults to 0).
            follow_to_stdout(client, global, o.target, job.name, 0);
        } catch (const common::Error & e) {
            if (e.kind() != common::ErrorKind::Interrupted) throw;
            common::log::warn("detached: job ", job.name, " keeps running; follow it with: bifrost logs -f ", o.target, " ",
                              job.name);
            return 130;
        }
        JobInfo done = client.job(job.name);
        if (done.state == "running") return 255;
        if (done.exit_code) return *done.exit_code;
        return 137;  // killed without an exit code (SIGKILL)
    } catch (const common::Error & e) {
        if (o.detach) throw;
        return report_attached_error(e, global.json);
    }
}

}  // namespace bifrost::cli
