// bifrost logs TARGET NAME [-f] [--offset N]: the job log from a byte offset; -f follows until the
// job ends and survives dropped connections (see bifrost/logs.cpp).
#include <unistd.h>

#include "bifrost/cli/commands.h"

namespace bifrost::cli {

int run_logs(const GlobalOptions & global, const LogsCmdOptions & o) {
    Client client = make_client(global, o.target);
    if (o.follow) {
        follow_to_stdout(client, global, o.target, o.name, o.offset);
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
