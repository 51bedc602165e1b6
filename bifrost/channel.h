// Internal: one exec channel driven without blocking on output, shared by the direct connection
// (one channel at a time) and the control-socket master (many channels on one session). Stdin is
// written only within the peer's window and output is drained on every step, so no output size can
// deadlock it (the predecessor waited for the exit status before reading: predecessor.md §19.25).
#pragma once

#include <string>
#include <string_view>

#include "bifrost/connection.h"

struct ssh_channel_struct;

namespace bifrost {

class ChannelTask {
public:
    // Opens a session channel and starts `command` (blocking round trips). Throws Error(network).
    ChannelTask(ssh_session_struct * session, const std::string & command, const std::string & label);
    ~ChannelTask();
    ChannelTask(const ChannelTask &) = delete;
    ChannelTask & operator=(const ChannelTask &) = delete;

    void queue_stdin(std::string_view data) { pending_.append(data); }
    void close_stdin() { want_eof_ = true; }
    size_t stdin_queued() const { return pending_.size() - pending_off_; }
    bool stdin_closed() const { return want_eof_; }

    // Writes what the window allows and reads what has arrived (up to max_read_bytes). Returns true
    // when anything moved. Throws Error(network) when the session fails.
    bool pump(const StreamCallback & out, const StreamCallback & err, size_t max_read_bytes = 1 << 20);
    bool done() const { return out_eof_ && err_eof_; }
    // After done(): the exit status (255 when the command was killed by a signal).
    int finish();

private:
    ssh_session_struct * session_;
    ssh_channel_struct * channel_ = nullptr;
    std::string label_;
    std::string pending_;
    size_t pending_off_ = 0;
    bool want_eof_ = false;
    bool eof_sent_ = false;
    bool out_eof_ = false;
    bool err_eof_ = false;
};

// Polls the session socket (and optionally one more fd for reading) for up to timeout_ms.
// Returns true when extra_fd is readable.
bool wait_session(ssh_session_struct * session, int extra_fd, int timeout_ms);

}  // namespace bifrost
