// bifrost pull TARGET REMOTE [LOCAL]: recursive, checksum-verified, resumable download.
#include <chrono>

#include "bifrost/cli/commands.h"

namespace bifrost::cli {

int run_pull(const GlobalOptions & global, const PullCmdOptions & o, const common::Output & out) {
    auto start = std::chrono::steady_clock::now();
    Client client = make_client(global, o.target);
    PullStats s = client.pull(o.remote_path, o.local_dir);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    out.object({{"files_total", s.files_total},
                {"files_fetched", s.files_fetched},
                {"files_resumed", s.files_resumed},
                {"bytes_fetched", s.bytes_fetched},
                {"links_refused", s.links_refused},
                {"duration_s", seconds}});
    return 0;
}

}  // namespace bifrost::cli
