// bifrost kill TARGET NAME: TERM to the job's whole process group, KILL after --grace seconds.
#include "bifrost/cli/commands.h"

namespace bifrost::cli {

int run_kill(const GlobalOptions & global, const KillCmdOptions & o, const common::Output & out) {
    Client client = make_client(global, o.target);
    out.object(job_row(client.kill(o.name, o.grace_s)));
    return 0;
}

}  // namespace bifrost::cli
