// bifrost logs TARGET NAME [-f] [--offset N]: the job log from a byte offset; -f follows until the
// job ends, survives dropped connections (see bifrost/logs.cpp), then says how the job ended.
#include <unistd.h>

#include "bifrost/cli/commands.h"
#include "common/error.h"
#include "common/log.h"

namespace bifrost::cli {

int run_logs(const GlobalOptions & global, const LogsCmdOptions & o) {
    Client client = make_client(global, o.target);
    if (o.follow) {
        follow_to_stdout(client, global, o.target, o.name, o.offset);
        // How the job ended, on stderr (stdout is the log), and in the exit status: 0 when it
        // succeeded, 8 (a remote step failed) when it failed or was killed, so a script that
        // follows a job can tell; always exiting 0 hid failures.
        const JobInfo done = client.job(o.name);
        if (done.state == "succeeded") {
            common::log::info("job ", o.name, " succeeded");
            return 0;
        }
        if (done.state == "failed") {
            common::log::warn("job ", o.name, " failed (exit ", *done.exit_code, ")");
            return common::exit_code(common::ErrorKind::RemoteFailed);
        }
        if (done.state == "killed") {
            common::log::warn("job ", o.name, " was killed", done.exit_code ? " (exit " + std::to_string(*done.exit_code) + ")" : std::string(),
                              done.exit_code ? "" : " (no exit code: SIGKILL, the OOM killer or a reboot)");
            return common::exit_code(common::ErrorKind::RemoteFailed);
        }
        common::log::warn("job ", o.name, " is still running");
        return 0;
    }
    client.logs(o.name, o.offset, false, [](std::string_view d) {
        while (!d.empty()) {
            ssize_t n = ::write(STDOUT_FILENO, d.data(), d.size());
            if (n <= 0) return;
            d.remove_prefix(static_cast<size_t>(n));
        }
    });
    return 0;
}

}  // namespace bifrost::cli
