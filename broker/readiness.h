// The staged wait between "the provider accepted the create" and "bifrost can use this machine":
// provider says running (with an SSH endpoint) → TCP connect → SSH banner → key authentication →
// `true` runs → optional GPU check (count and VRAM match the offer). Every stage shares one deadline
// from the injected Clock; terminal provider states fail at once. Written once for all providers.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "broker/instance.h"
#include "broker/provider.h"
#include "common/clock.h"

namespace broker {

enum class ReadyStage { Provider, Tcp, Banner, Auth, Exec, Gpu, Ready };
std::string_view stage_name(ReadyStage stage);

struct ReadyOptions {
    common::Duration budget = std::chrono::minutes(15);
    common::Duration poll_interval = std::chrono::seconds(5);
    common::Duration ssh_timeout = std::chrono::seconds(10);  // one connection attempt
    std::string private_key_path;
    std::optional<int> expect_gpu_count;       // set to run the GPU check
    double expect_vram_gb_per_gpu = 0;         // 0: count only
    common::Clock * clock = &common::real_clock();
    std::function<void(ReadyStage, const std::string & detail)> on_stage;  // progress display
};

// Returns the instance as last seen (with its SSH endpoint) once every stage passed. Throws
// Error(Timeout) naming the stage that did not pass, Error(RemoteFailed) when the provider reports
// a terminal state or the GPU check fails, Error(NotFound) when the instance vanished.
Instance wait_ready(Provider & provider, std::string_view id, const ReadyOptions & options);

// One SSH command with key authentication, through bifrost's client (bifrost/connection.h): one
// connection attempt; `timeout` bounds the connection, each channel round trip and the command.
// No ~/.ssh/config and no known_hosts file is read or written (fresh instances have new host keys;
// providers reuse addresses). Throws Error(Usage) for an unreadable key, (Auth) for a refused one,
// (Network) for an unreachable host, (Timeout) when the command is still running at `timeout`.
// endpoint.jump (jump hosts) is passed on: each hop is authenticated with its own key_path, else
// private_key_path, and errors about a hop name it ("jump 1 user@host:port: ...").
struct SshRunResult {
    int exit_code = -1;
    std::string out;
    std::string err;
};
SshRunResult ssh_run(const SshEndpoint & endpoint, const std::string & private_key_path, const std::string & command,
                     common::Duration timeout);

// Parses `nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits` (MiB per line) and
// checks count and VRAM (10 % tolerance: drivers reserve some memory). Empty string: OK.
std::string check_gpu_report(const std::string & nvidia_smi_out, int expect_count, double expect_vram_gb);

}  // namespace broker
