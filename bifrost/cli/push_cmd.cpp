// bifrost push TARGET [DIR] [--to REMOTE_DIR]: incremental, atomic mirror (see bifrost/push.cpp).
#include <chrono>

#include "bifrost/cli/commands.h"
#include "common/log.h"

namespace bifrost::cli {

int run_push(const GlobalOptions & global, const PushCmdOptions & o, const common::Output & out) {
    auto start = std::chrono::steady_clock::now();
    Client client = make_client(global, o.target);
    PushOptions options;
    options.remote_dir = o.remote_dir;
    options.include_git = o.include_git;
    options.excludes = o.excludes;
    PushStats s = client.push(o.local_dir, options);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    out.object({{"remote_dir", s.remote_dir},
                {"files_total", s.files_total},
                {"files_sent", s.files_sent},
                {"files_deleted", s.files_deleted},
                {"bytes_total", s.bytes_total},
                {"bytes_sent", s.bytes_sent},
                {"completed_interrupted_push", s.completed_interrupted_push},
                {"duration_s", seconds}});
    return 0;
}

}  // namespace bifrost::cli
