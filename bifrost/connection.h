// One authenticated SSH connection (libssh 0.10) and the single primitive everything in bifrost is
// built on: run a remote command with stdin fed from us and stdout/stderr streamed back separately,
// returning its exit status. Push, pull, jobs and logs are all remote POSIX-sh scripts run through
// this primitive, so the control-socket client (mux.h) that forwards it gives every verb connection
// reuse for free. Host keys are pinned on first use in bifrost's own known-hosts file.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bifrost/target.h"
#include "common/error.h"

struct ssh_session_struct;

namespace bifrost {

// One bastion on the way to the target (OpenSSH's ProxyJump, done in-process: libssh 0.10 has no
// SSH_OPTIONS_PROXYJUMP). Authenticated like the target (key_path, else ConnectOptions::key_path,
// else ssh-agent and ~/.ssh/id_*) and under the same host-key policy (pinned in the same file).
struct JumpHost {
    std::string user;      // empty: the local user name
    std::string host;
    int port = 22;
    std::string key_path;  // empty: ConnectOptions::key_path (then the agent and default keys)
    std::string label() const;  // "user@host:port"
};

struct ConnectOptions {
    std::string key_path;            // --key; empty: ssh-agent, then ~/.ssh/id_* defaults
    std::string known_hosts_path;    // empty: default_known_hosts_path()
    double connect_timeout_s = 10;   // per attempt
    double channel_timeout_s = 120;  // per channel round trip once connected (open, exec, exit status)
    double retry_deadline_s = 0;     // keep retrying refused/unreachable hosts (still booting) this long
    // A keepalive@openssh.com request (which the server must answer) every this many seconds while
    // a command runs or a control master holds the connection; when nothing at all arrives from the
    // server for kDeadKeepalives times this after one was sent, the connection is declared dead
    // (network error: readers reconnect). Also TCP_USER_TIMEOUT of 3x this for unacknowledged data.
    int keepalive_s = 15;
    std::optional<bool> compression; // nullopt: on unless the host is loopback
    // false: accept whatever host key the server presents, reading and writing no known-hosts file.
    // Only for broker's probes of machines it has just rented or leased (readiness, login-node
    // commands): fresh cloud instances come with new host keys and providers reuse IP addresses, so
    // a key pinned for one rental would refuse the next machine at that address. Every connection a
    // user asks for by target (the bifrost program, deploy) keeps pinning.
    bool pin_host_key = true;
    // > 0: a command still running this many seconds after its channel opened is abandoned: run()
    // throws Error(Timeout) and the connection is not reused. 0 (default): no limit, since jobs,
    // follows and pushes run as long as they need.
    double command_timeout_s = 0;
    // > 0: a command during which no byte moves either way for this long is abandoned the same way
    // (Timeout, the connection not reused). Unlike command_timeout_s it never cuts a long transfer
    // that keeps moving: deploy's finish bounds a command hung on a stuck volume with it, and still
    // pulls large results whole.
    double stall_timeout_s = 0;
    // Jump hosts, first to last: the first is connected directly, each next hop and then the target
    // through a direct-tcpip channel of the previous one (the host names are resolved there, so
    // they may be private names the bastion knows). At most kMaxJumpHosts. Each hop's host key is
    // checked like the target's; a host behind jump hosts is pinned under its route
    // ("[10.0.0.5]:22/via/[bastion]:22"), since one private address behind two bastions is two
    // machines, and the route is part of the control socket's name for the same reason.
    // Here and not in Endpoint: Endpoint is what a target string or instance id resolves to (and
    // the bifrost CLI's grammar); the chain is connection set-up, like the key and known-hosts file.
    std::vector<JumpHost> jump;
};

inline constexpr size_t kMaxJumpHosts = 8;
inline constexpr int kDeadKeepalives = 3;  // keepalive intervals without a byte from the server: dead

// $BIFROST_KNOWN_HOSTS, else $XDG_STATE_HOME/bifrost/known_hosts, else ~/.local/state/bifrost/known_hosts.
std::string default_known_hosts_path();

using StreamCallback = std::function<void(std::string_view)>;

struct RemoteCommand {
    std::string command;          // what the remote login shell runs (visible in ps: keep secrets out)
    std::string stdin_data;       // sent first on stdin (env blocks, scripts)
    // More stdin after stdin_data: called when the channel has room; return false at end of input.
    std::function<bool(std::string & chunk)> stdin_source;
    int stdin_fd = -1;            // or: forward this local fd until EOF (polled, never blocks output)
    StreamCallback on_stdout;
    StreamCallback on_stderr;
};

// How a remote command is run: a direct libssh connection, or a control-socket client.
// The remote command never ran (no channel, or the server refused it): running it again on a new
// connection cannot repeat it. Client retries such failures for every verb, not only reads.
struct CommandNotStarted : common::Error {
    using common::Error::Error;
};

class Transport {
public:
    virtual ~Transport() = default;
    // The remote exit status (255 when the command died from a signal). Throws common::Error(network)
    // when the connection fails underneath it.
    virtual int run(const RemoteCommand & command) = 0;
    virtual std::string label() const = 0;
    // Throws CommandNotStarted (a common::Error) when the command provably never ran, so the caller
    // may run it again on a new transport.
    // False once the transport is known to be dead; Client then reconnects before the next call
    // (never retrying a call that may have run: commands are not assumed idempotent).
    virtual bool usable() { return true; }
};

class Connection : public Transport {
public:
    // Connects, pins or checks the host key, authenticates. Retries refused/unreachable/timeouts with
    // backoff until options.retry_deadline_s. Errors: auth (3) for refused keys and changed host
    // keys, network (6) for unreachable hosts, timeout (7) when the retry deadline passes.
    static std::unique_ptr<Connection> open(const Endpoint & endpoint, const ConnectOptions & options);
    ~Connection() override;

    int run(const RemoteCommand & command) override;
    std::string label() const override { return endpoint_.label(); }
    bool usable() override { return alive(); }
    const Endpoint & endpoint() const { return endpoint_; }
    ssh_session_struct * session() { return session_; }
    bool alive();
    // Sends a keepalive when one is due and checks the answer to the last (see keepalive_s); throws
    // Error(network) and marks the connection dead when the server has stopped answering.
    void keepalive_tick();
    // Forgets an unanswered keepalive (call when nobody has read the session for a while).
    void reset_liveness();

    // Internal: one jump-host session and the thread that relays its forwarding channel.
    struct Hop;

private:
    Connection() = default;
    void send_keepalive();
    // Bytes received from the server so far (the kernel's TCP count, or the last jump host's relay
    // count); nullopt when unknown.
    std::optional<uint64_t> bytes_received();
    Endpoint endpoint_;
    ConnectOptions options_;
    ssh_session_struct * session_ = nullptr;
    bool broken_ = false;  // a channel setup failed: reconnect rather than open more channels here
    std::chrono::steady_clock::time_point last_keepalive_{};
    bool probe_pending_ = false;  // a keepalive went out and nothing has arrived since
    uint64_t probe_rx_ = 0;       // bytes_received() when it went out
    std::chrono::steady_clock::time_point probe_at_{};
    int session_fd_ = -1;  // behind jump hosts: the socketpair end under session_ (libssh leaves it open)
    // Jump hosts, first to last. After set-up each hop's session is touched only by its own relay
    // thread (libssh sessions are not thread-safe); the destructor frees the target session first,
    // then stops, joins and frees the hops from the last to the first.
    std::vector<std::unique_ptr<Hop>> hops_;
};

}  // namespace bifrost
