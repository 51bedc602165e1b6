// Internal: one exec channel driven without blocking on output, shared by the direct connection
// (one channel at a time) and the control-socket master (many channels on one session). Stdin is
// written only within the peer's window and output is drained on every step, so no output size can
// deadlock it (a client that waits for the exit status before reading hangs once the remote fills
// the channel window and blocks on write).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "bifrost/connection.h"
#include "common/error.h"

struct ssh_channel_struct;
struct ssh_channel_callbacks_struct;

namespace bifrost {

// Thrown when a channel could not be opened or its command not started: besides the failed
// command, the session itself must not be used for new channels again (see ChannelTask()).
struct ChannelSetupFailed : common::Error {
    using common::Error::Error;
    bool may_have_started = false;  // the exec request went out but its answer did not come
};

class ChannelTask {
public:
    enum class Start { Now, Deferred };
    // Opens a session channel and starts `command`. Start::Now blocks until it runs (each round trip,
    // open and exec, bounded by timeout_s). Start::Deferred only creates the channel: start_step()
    // then advances it without ever blocking, so one caller can keep serving other channels and
    // watching the connection's liveness meanwhile (the control master; Connection::run).
    // Throws ChannelSetupFailed: Error(network), or Error(timeout) when the server did not answer in
    // time. After any such failure the session's channel bookkeeping is no longer trustworthy (see
    // start_step()), so the caller must not open more channels on it: it reconnects.
    ChannelTask(ssh_session_struct * session, const std::string & command, const std::string & label,
                double timeout_s = 120, Start start = Start::Now);
    ~ChannelTask();
    ChannelTask(const ChannelTask &) = delete;
    ChannelTask & operator=(const ChannelTask &) = delete;

    // One non-blocking step of a deferred start: true once the command runs. Throws
    // ChannelSetupFailed (also when a round trip has taken longer than timeout_s).
    bool start_step();
    bool started() const { return stage_ == Stage::Running; }
    // The exec request has gone out: from here a failure may leave the command running.
    bool exec_sent() const { return stage_ == Stage::Exec || stage_ == Stage::Running; }

    void queue_stdin(std::string_view data) { pending_.append(data); }
    void close_stdin() { want_eof_ = true; }
    size_t stdin_queued() const { return pending_.size() - pending_off_; }
    bool stdin_closed() const { return want_eof_; }

    // Writes what the window allows and reads what has arrived (up to max_read_bytes). Returns true
    // when anything moved. Throws Error(network) when the session fails.
    bool pump(const StreamCallback & out, const StreamCallback & err, size_t max_read_bytes = 1 << 20);
    bool done() const { return out_eof_ && err_eof_; }
    // After done(): the exit status; 128+N when the command was killed by signal N (as a shell
    // reports it; signal_name() then says which), 255 when the server sent neither.
    int finish();
    const std::string & signal_name() const { return signal_; }

private:
    enum class Stage { Open, Exec, Running };
    [[noreturn]] void fail(const char * step, int rc, bool may_have_started);

    static void on_exit_signal(ssh_session_struct *, ssh_channel_struct *, const char * signal, int core,
                               const char * errmsg, const char * lang, void * self);

    ssh_session_struct * session_;
    ssh_channel_struct * channel_ = nullptr;
    std::string label_;
    std::string command_;
    double timeout_s_;
    Stage stage_ = Stage::Open;
    std::chrono::steady_clock::time_point stage_since_;  // when the current round trip began
    std::string error_before_;  // libssh's last error when the set-up began (never report an older failure)
    std::string pending_;
    size_t pending_off_ = 0;
    bool want_eof_ = false;
    bool eof_sent_ = false;
    bool out_eof_ = false;
    bool err_eof_ = false;
    std::string signal_;  // from the server's exit-signal request ("KILL", "SEGV", ...)
    // Registered on the channel and removed before it is freed: libssh 0.10 keeps a freed channel
    // until the server's close arrives and would otherwise call into a destroyed task.
    std::unique_ptr<ssh_channel_callbacks_struct> callbacks_;
};

// "KILL" -> 9, "SIGSEGV" -> 11; 0 when unknown. The SSH exit-signal request names the signal
// without "SIG" (RFC 4254 section 6.10).
int signal_number(std::string_view name);

// Polls the session socket (and optionally one more fd for reading) for up to timeout_ms.
// Returns true when extra_fd is readable.
bool wait_session(ssh_session_struct * session, int extra_fd, int timeout_ms);

}  // namespace bifrost
