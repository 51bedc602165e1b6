// bifrost exec TARGET -- CMD...: stdout and stderr streamed live and kept apart; the remote exit
// status becomes ours; our own failures exit 255.
#include <unistd.h>

#include "bifrost/cli/commands.h"
#include "common/error.h"

namespace bifrost::cli {

namespace {
void write_all(int fd, std::string_view d) {
    while (!d.empty()) {
        ssize_t n = ::write(fd, d.data(), d.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  // stdout closed (e.g. piped into head): keep draining the remote side
        }
        d.remove_prefix(static_cast<size_t>(n));
    }
}
}  // namespace

int run_exec(const GlobalOptions & global, const ExecCmdOptions & o) {
    try {
        ExecOptions options = make_exec_options(o.env, o.env_files, o.cwd, o.import_container_env);
        Command command = make_command(o.command, o.shell);
        // Local stdin is forwarded only when it is not a terminal, so an interactive shell never
        // leaves the remote command waiting for input nobody types.
        if (!o.no_stdin && !::isatty(STDIN_FILENO)) options.stdin_fd = STDIN_FILENO;
        Client client = make_client(global, o.target);
        return client.exec(command, options, [](std::string_view d) { write_all(STDOUT_FILENO, d); },
                           [](std::string_view d) { write_all(STDERR_FILENO, d); });
    } catch (const common::Error & e) {
        return report_attached_error(e, global.json);
    }
}

}  // namespace bifrost::cli
