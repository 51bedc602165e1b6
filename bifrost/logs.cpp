// logs: stream a job's log from a byte offset with tail(1). With follow, `tail -f --pid` ends when
// the job does; if the connection drops, we reconnect (with backoff, for up to reconnect_window_s)
// and continue from the exact byte count delivered so far, so nothing is lost or repeated.
#include <chrono>
#include <thread>

#include "bifrost/bifrost.h"
#include "bifrost/client_impl.h"
#include "bifrost/shell.h"
#include "common/error.h"
#include "common/log.h"
#include "common/program.h"

namespace bifrost {

using common::Error;
using common::ErrorKind;

namespace {
constexpr int kNoSuchJob = 91;
constexpr double kReconnectWindowS = 180;
}  // namespace

uint64_t Client::logs(const std::string & name, uint64_t offset, bool follow, const StreamCallback & on_data) {
    if (!valid_job_name(name)) throw Error::usage("job name '" + name + "' is not valid");
    uint64_t at = offset;
    for (;;) {
        std::string script = "J=\"$HOME\"/.bifrost/jobs/" + name + "\n"
                             "[ -f \"$J/pid\" ] || exit " + std::to_string(kNoSuchJob) + "\n"
                             "o=" + std::to_string(at + 1) + "\n";
        if (follow)
            script += "pid=$(cat \"$J/pid\")\n"
                      "if [ -f \"$J/exit_code\" ] || ! kill -0 \"$pid\" 2>/dev/null; then exec tail -c +$o \"$J/log\"; fi\n"
                      "exec tail -c +$o -s 0.2 -f --pid=\"$pid\" \"$J/log\"\n";
        else
            script += "exec tail -c +$o \"$J/log\"\n";
        Prologue p = make_prologue(script);
        RemoteCommand rc;
        rc.command = p.command;
        rc.stdin_data = p.stdin_block;
        std::string err;
        rc.on_stdout = [&](std::string_view d) {
            at += d.size();
            if (on_data) on_data(d);
        };
        rc.on_stderr = [&](std::string_view d) { err.append(d); };
        try {
            int status = impl_->t().run(rc);
            if (status == kNoSuchJob)
                throw Error::not_found("job " + name, "no such job on " + impl_->t().label() + "; see `bifrost jobs`");
            if (status != 0)
                throw Error(ErrorKind::RemoteFailed, impl_->t().label() + ": reading the log of " + name + " failed: " + err);
            return at;
        } catch (const Error & e) {
            if (!follow || e.kind() != ErrorKind::Network) throw;
            common::log::warn("logs: ", e.message(), "; reconnecting (at byte ", at, ")");
            impl_->transport.reset();
            auto start = std::chrono::steady_clock::now();
            double backoff_s = 0.5;
            while (!impl_->transport) {
                common::throw_if_interrupted();
                try {
                    impl_->transport = impl_->reconnect();
                } catch (const Error & again) {
                    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                    if (again.kind() != ErrorKind::Network || waited > kReconnectWindowS) throw;
                    std::this_thread::sleep_for(std::chrono::duration<double>(backoff_s));
                    backoff_s = std::min(backoff_s * 2, 5.0);
                }
            }
        }
    }
}

}  // namespace bifrost
