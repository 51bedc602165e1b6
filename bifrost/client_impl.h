// Internal: the state behind bifrost::Client, shared by the verb files (exec.cpp, push.cpp, ...).
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "bifrost/bifrost.h"
#include "common/backoff.h"
#include "common/error.h"
#include "common/log.h"
#include "common/program.h"

namespace bifrost {

struct Client::Impl {
    std::unique_ptr<Transport> transport;
    std::function<std::unique_ptr<Transport>()> reconnect;
    std::string home;
    double reconnect_window_s = 180;
    static constexpr common::Backoff kReconnectBackoff{0.5, 5.0};

    // Bumped whenever a remote read makes headway (its command started on a working connection, or
    // bytes arrived): an outage is over once this moves.
    uint64_t progress = 0;

    // Runs `attempt`; when the connection fails under it (a network error or a timed-out channel),
    // drops the transport, reconnects with backoff and runs it again. The window is per outage: it
    // starts at the first failure and starts again after a failure that followed progress, so a
    // follow that has run for hours still gets the whole window for its next drop (measured from
    // the first attempt, one drop after reconnect_window_s of following failed at once).
    // Only for work that is safe to repeat (reading state, logs by offset, touching a file).
    template <class F>
    auto idempotent(const std::string & what, F && attempt) -> decltype(attempt()) {
        std::chrono::steady_clock::time_point outage_start;
        uint64_t progress_at_failure = 0;
        bool in_outage = false;
        for (int retry = 1;; ++retry) {
            try {
                return attempt();
            } catch (const common::Error & e) {
                bool transient = e.kind() == common::ErrorKind::Network || e.kind() == common::ErrorKind::Timeout;
                if (!transient || !reconnect) throw;
                auto now = std::chrono::steady_clock::now();
                if (!in_outage || progress != progress_at_failure) {
                    in_outage = true;
                    outage_start = now;
                    retry = 1;  // a new outage backs off from the shortest delay again
                }
                progress_at_failure = progress;
                double waited = std::chrono::duration<double>(now - outage_start).count();
                if (waited > reconnect_window_s) throw;
                common::log::warn(what, ": ", e.message(), "; reconnecting");
                transport.reset();
                common::throw_if_interrupted();
                std::this_thread::sleep_for(std::chrono::duration<double>(kReconnectBackoff.delay_s(retry)));
            }
        }
    }

    Transport & t() {
        if (transport && !transport->usable() && reconnect) transport.reset();
        if (!transport) {
            if (!reconnect) throw common::Error(common::ErrorKind::Network, "connection lost and no way to reconnect");
            transport = reconnect();
        }
        return *transport;
    }
    // Runs one remote command; when it provably never started (CommandNotStarted, or no connection
    // could be made), reconnects with backoff and runs it again, for up to reconnect_window_s. Any
    // command may go through this, since nothing of it ran.
    int run(const RemoteCommand & command) {
        auto start = std::chrono::steady_clock::now();
        for (int retries = 0;; ++retries) {
            double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            bool may_retry = reconnect && (retries == 0 || waited <= reconnect_window_s);
            Transport * transport_now = nullptr;
            try {
                transport_now = &t();
            } catch (const common::Error & e) {
                if (!may_retry || (e.kind() != common::ErrorKind::Network && e.kind() != common::ErrorKind::Timeout)) throw;
                common::log::warn(e.message(), "; connecting again");
            }
            if (transport_now) {
                try {
                    return transport_now->run(command);
                } catch (const CommandNotStarted & e) {
                    if (!may_retry) throw;
                    common::log::warn(e.message(), "; the command did not start; running it on a new connection");
                    transport.reset();
                }
            }
            common::throw_if_interrupted();
            std::this_thread::sleep_for(std::chrono::duration<double>(kReconnectBackoff.delay_s(retries + 1)));
        }
    }
    // Runs a script through the prologue (stdin block), collecting stdout; stderr is collected too.
    struct Captured {
        int status = 0;
        std::string out;
        std::string err;
    };
    Captured run_script(const std::string & script, const std::string & extra_stdin = {});
    // Streams a job script's stdout (a log from byte `at`, counted into it) to on_data; returns its
    // stderr. Throws not_found for a missing job, remote_failed for another non-zero exit.
    std::string stream_log(const std::string & name, const std::string & script, uint64_t & at,
                           const StreamCallback & on_data, const std::string & what);
    // Like run_script but throws Error(remote_failed) with the captured stderr when status != 0.
    std::string run_script_ok(const std::string & script, const std::string & what);
};

}  // namespace bifrost

namespace bifrost {
// The env export block shared by exec and run_detached (container env first, then ours).
std::string env_block(Client::Impl & impl, const ExecOptions & options);
}  // namespace bifrost
