// logs: stream a job's log from a byte offset with tail(1). With follow, `tail -f --pid` ends when
// the job does. poll_job: one round trip for a follower that polls (heartbeat, state, new bytes).
// Both are idempotent given the byte count delivered so far, so a dropped connection is
// re-established (Client::Impl::idempotent) and the read continues from the exact byte: nothing is
// lost or repeated.
#include "bifrost/bifrost.h"
#include "bifrost/client_impl.h"
#include "bifrost/jobs_script.h"
#include "bifrost/shell.h"
#include "common/error.h"

namespace bifrost {

using common::Error;
using common::ErrorKind;

namespace {

std::string job_dir_var(const std::string & name) {
    if (!valid_job_name(name)) throw Error::usage("job name '" + name + "' is not valid");
    return "J=\"$HOME\"/.bifrost/jobs/" + name + "\n"
           "[ -f \"$J/pid\" ] || exit " + std::to_string(kNoSuchJobStatus) + "\n";
}

}  // namespace

// Runs a job script whose stdout is the log from `at` (counted into `at` as it arrives) and whose
// stderr is collected (bounded) and returned. `what` names the read in errors.
std::string Client::Impl::stream_log(const std::string & name, const std::string & script, uint64_t & at,
                                     const StreamCallback & on_data, const std::string & what) {
    // The marker tells a started command from a connection that fails before it runs: a follow of
    // a silent job delivers no byte, yet its reconnect has ended the outage (idempotent()).
    static constexpr std::string_view kStarted = "bifrost: stream started\n";
    Prologue p = make_prologue("printf '%s\\n' 'bifrost: stream started' >&2\n" + script);
    RemoteCommand rc;
    rc.command = p.command;
    rc.stdin_data = p.stdin_block;
    std::string err;
    bool started = false;
    rc.on_stdout = [&](std::string_view d) {
        at += d.size();
        ++progress;
        if (on_data) on_data(d);
    };
    rc.on_stderr = [&](std::string_view d) {
        if (err.size() < (1u << 20)) err.append(d);
        if (!started && err.size() >= kStarted.size() && std::string_view(err).substr(0, kStarted.size()) == kStarted) {
            started = true;
            ++progress;
            err.erase(0, kStarted.size());
        }
    };
    int status = run(rc);
    if (status == kNoSuchJobStatus)
        throw Error::not_found("job " + name, "no such job on " + t().label() + "; see `bifrost jobs`");
    if (status != 0)
        throw Error(ErrorKind::RemoteFailed, t().label() + ": " + what + " failed (exit " + std::to_string(status) + "): " + err);
    return err;
}

uint64_t Client::logs(const std::string & name, uint64_t offset, bool follow, const StreamCallback & on_data) {
    const std::string head = job_dir_var(name);
    uint64_t at = offset;
    return impl_->idempotent("logs " + name, [&] {
        std::string script = head + "o=" + std::to_string(at + 1) + "\n";
        // tail -f ends with the job: it watches a helper that lives while the job's wrapper is
        // still the job's own process (job_alive checks its identity, so a reused pid does not keep
        // a follow of a dead job open for ever) and while this shell does (a dropped follower's
        // helper does not linger). tail is not exec'd: this shell must reap the helper, since tail
        // sees a zombie as alive.
        if (follow)
            script += job_shell_functions() +
                      "if [ -n \"$(job_exit_code \"$J\")\" ] || ! job_alive \"$J\"; then exec tail -c +$o \"$J/log\"; fi\n"
                      "me=$$\n"
                      "( while [ -z \"$(job_exit_code \"$J\")\" ] && job_alive \"$J\" && kill -0 \"$me\" 2>/dev/null; do sleep 0.5; done ) &\n"
                      "tail -c +$o -s 0.2 -f --pid=$! \"$J/log\"\n";
        else
            script += "exec tail -c +$o \"$J/log\"\n";
        impl_->stream_log(name, script, at, on_data, "reading the log of " + name);
        return at;
    });
}

JobPoll Client::poll_job(const std::string & name, uint64_t offset, const StreamCallback & on_data,
                         const std::string & touch_path) {
    const std::string head = job_dir_var(name);
    JobPoll poll;
    poll.offset = offset;
    return impl_->idempotent("polling job " + name, [&] {
        // The state goes to stderr and is read BEFORE the log, so a state that says the job ended
        // comes with every byte the job wrote; the log bytes go to stdout untouched.
        std::string script = head;
        if (!touch_path.empty())
            script += "touch -- " + remote_path_expr(touch_path) + " || echo 'bifrost: cannot touch the heartbeat file' >&2\n";
        script += "{ " + job_list_script(name) + "} >&2\n"
                  "exec tail -c +" + std::to_string(poll.offset + 1) + " \"$J/log\"\n";
        std::string err = impl_->stream_log(name, script, poll.offset, on_data, "polling job " + name);
        poll.info = find_job_line(err, name);
        if (poll.info.name.empty())
            throw Error(ErrorKind::RemoteFailed, impl_->t().label() + ": polling job " + name + ": no state line in: " + err);
        poll.heartbeat_failed = err.find("cannot touch the heartbeat file") != std::string::npos;
        return poll;
    });
}

JobPoll Client::follow_job(const std::string & name, uint64_t offset, const StreamCallback & on_data,
                           const FollowOptions & options) {
    bool warned = false;
    for (;;) {
        common::throw_if_interrupted();
        JobPoll poll = poll_job(name, offset, on_data, options.heartbeat_path);
        offset = poll.offset;
        if (poll.heartbeat_failed && !warned) {
            common::log::warn("job ", name, ": cannot touch the heartbeat file ", options.heartbeat_path,
                              "; the instance's watchdog may end it");
            warned = true;
        }
        if (options.after_poll) options.after_poll(poll);
        if (poll.info.state != "running") return poll;
        bool go_on = true;
        if (options.wait) {
            go_on = options.wait();
        } else {
            std::this_thread::sleep_for(std::chrono::seconds(2));
        }
        if (!go_on) return poll;
    }
}

}  // namespace bifrost
