// libssh session setup (options, connect with retry, host-key pinning, authentication) and the
// direct implementation of Transport::run on top of ChannelTask.
#include "bifrost/connection.h"

#include <fcntl.h>
#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <netinet/in.h>
#include <libssh/server.h>  // ssh_send_keepalive (exported for clients too)
#include <linux/tcp.h>    // struct tcp_info with tcpi_bytes_received (glibc's copy lacks it)
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "bifrost/channel.h"
#include "common/backoff.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/file_lock.h"
#include "common/log.h"
#include "common/program.h"

namespace fs = std::filesystem;
using common::Error;
using common::ErrorKind;

namespace bifrost {

namespace {

std::string env_or(const char * name, const std::string & fallback) {
    const char * v = std::getenv(name);
    return v && *v ? std::string(v) : fallback;
}

std::string home_dir() { return env_or("HOME", "/"); }

// Puts a session in non-blocking mode for a scope (libssh's own non-blocking reads do the same).
class NonBlocking {
public:
    explicit NonBlocking(ssh_session s) : s_(s), was_blocking_(ssh_is_blocking(s)) { ssh_set_blocking(s, 0); }
    ~NonBlocking() { ssh_set_blocking(s_, was_blocking_); }
    NonBlocking(const NonBlocking &) = delete;
    NonBlocking & operator=(const NonBlocking &) = delete;

private:
    ssh_session s_;
    int was_blocking_;
};

struct KeyGuard {
    ssh_key key = nullptr;
    ~KeyGuard() {
        if (key) ssh_key_free(key);
    }
};

std::string fingerprint(ssh_key key) {
    unsigned char * hash = nullptr;
    size_t len = 0;
    if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &len) != SSH_OK) return "?";
    char * fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, len);
    std::string out = fp ? fp : "?";
    ssh_string_free_char(fp);
    ssh_clean_pubkey_hash(&hash);
    return out;
}

// "[host]:port"; a host reached through jump hosts is pinned under its route too
// ("[10.0.0.5]:22/via/[bastion]:22"): the same private address behind two bastions is two machines.
std::string host_key_id(const Endpoint & e, const std::vector<Endpoint> & route) {
    std::string id = "[" + e.host + "]:" + std::to_string(e.port);
    for (size_t i = 0; i < route.size(); ++i)
        id += (i == 0 ? "/via/[" : "/[") + route[i].host + "]:" + std::to_string(route[i].port);
    return id;
}

// Known-hosts lines: "[host]:port keytype base64". Our own file, so its format is ours; one line per
// host:port. Returns the line index (1-based) and the stored key when present.
struct Pinned {
    int line = 0;
    std::string type;
    std::string base64;
};

std::optional<Pinned> find_pinned(const std::string & path, const std::string & id) {
    std::ifstream in(path);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
        ++n;
        std::istringstream fields(line);
        std::string host, type, b64;
        if (!(fields >> host >> type >> b64)) continue;
        if (host == id) return Pinned{n, type, b64};
    }
    return std::nullopt;
}

void check_host_key(ssh_session s, const Endpoint & e, const std::vector<Endpoint> & route, const std::string & path) {
    KeyGuard server;
    if (ssh_get_server_publickey(s, &server.key) != SSH_OK)
        throw Error(ErrorKind::Network, e.label() + ": no host key from the server: " + ssh_get_error(s));
    char * b64_raw = nullptr;
    if (ssh_pki_export_pubkey_base64(server.key, &b64_raw) != SSH_OK)
        throw Error::internal(e.label() + ": cannot encode the server's host key");
    std::string b64 = b64_raw;
    ssh_string_free_char(b64_raw);
    std::string type = ssh_key_type_to_char(ssh_key_type(server.key));
    const std::string id = host_key_id(e, route);
    if (auto pinned = find_pinned(path, id)) {
        if (pinned->type == type && pinned->base64 == b64) return;
        std::string old_fp = "?";
        KeyGuard old;
        if (ssh_pki_import_pubkey_base64(pinned->base64.c_str(), ssh_key_type_from_name(pinned->type.c_str()),
                                         &old.key) == SSH_OK)
            old_fp = fingerprint(old.key);
        throw Error(ErrorKind::Auth,
                    e.label() + ": host key changed: pinned " + pinned->type + " " + old_fp + ", server presented " +
                        type + " " + fingerprint(server.key) +
                        "; this may be an attack. If the machine was really replaced, delete line " +
                        std::to_string(pinned->line) + " of " + path + " and connect again")
            .with("host", e.label());
    }
    // First use: pin it. flock serialises concurrent first connections to different hosts.
    fs::create_directories(fs::path(path).parent_path());
    common::FileLock pins(path, common::FileLock::Mode::Append);
    if (!find_pinned(path, id)) {
        std::string line = id + " " + type + " " + b64 + "\n";
        if (::write(pins.fd(), line.data(), line.size()) != static_cast<ssize_t>(line.size()))
            throw Error::io(path, "write known-hosts file", errno);
        common::log::info(e.label(), ": pinned host key ", type, " ", fingerprint(server.key), " in ", path);
    }
}

void authenticate(ssh_session s, const Endpoint & e, const ConnectOptions & o) {
    std::string key_path = !e.key_path.empty() && o.key_path.empty() ? e.key_path : o.key_path;
    if (!key_path.empty()) {
        if (!fs::exists(key_path))
            throw Error::usage("key " + key_path + ": no such file; pass the private key file to --key");
        KeyGuard key;
        if (ssh_pki_import_privkey_file(key_path.c_str(), nullptr, nullptr, nullptr, &key.key) != SSH_OK)
            throw Error(ErrorKind::Auth, "key " + key_path +
                                             ": cannot read the private key (unreadable, not a key, or "
                                             "passphrase-protected); load a protected key into ssh-agent instead");
        int rc = ssh_userauth_publickey(s, nullptr, key.key);
        if (rc == SSH_AUTH_SUCCESS) return;
        throw Error(ErrorKind::Auth, e.label() + ": SSH authentication refused for key " + key_path +
                                         "; check the user name and that the public key is authorised on the host")
            .with("host", e.label());
    }
    if (std::getenv("SSH_AUTH_SOCK") && ssh_userauth_agent(s, nullptr) == SSH_AUTH_SUCCESS) return;
    if (ssh_userauth_publickey_auto(s, nullptr, nullptr) == SSH_AUTH_SUCCESS) return;
    throw Error(ErrorKind::Auth, e.label() +
                                     ": SSH authentication refused: tried ssh-agent and the default keys "
                                     "(~/.ssh/id_*); pass --key FILE")
        .with("host", e.label());
}

bool is_loopback(const std::string & host) {
    return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

bool retryable(const std::string & msg) {
    for (const char * s : {"refused", "timed out", "Timeout", "unreachable", "No route", "reset", "Network is down",
                           "Socket error", "disconnected", "Connection closed", "Temporary failure"})
        if (msg.find(s) != std::string::npos) return true;
    return false;
}

}  // namespace

std::string default_known_hosts_path() {
    if (const char * v = std::getenv("BIFROST_KNOWN_HOSTS"); v && *v) return v;
    return env_or("XDG_STATE_HOME", home_dir() + "/.local/state") + "/bifrost/known_hosts";
}

std::string JumpHost::label() const { return Endpoint{user, host, port, key_path}.label(); }

// One jump host: its session, the direct-tcpip channel to the next hop (or the target), and the
// relay thread that copies bytes between that channel and our end of a socketpair whose other end
// is the next session's socket (SSH_OPTIONS_FD). Once the thread runs, only it touches `session`
// and `channel`; the owner touches them again only after joining it.
struct Connection::Hop {
    std::string name;               // "jump 1 user@host:port"
    ssh_session session = nullptr;
    ssh_channel channel = nullptr;
    int fd = -1;                    // our end of the socketpair
    int session_fd = -1;            // the socket under `session` when it runs over the previous hop
    int wake[2] = {-1, -1};         // the owner writes here to stop the thread
    std::atomic<bool> stop{false};
    std::atomic<bool> ended{false};
    std::atomic<uint64_t> rx_bytes{0};  // bytes from the channel (the next session's server): liveness
    std::thread thread;
    int keepalive_s = 0;

    ~Hop() {
        if (thread.joinable()) {
            stop = true;
            if (wake[1] >= 0) {
                char b = 1;
                [[maybe_unused]] auto n = ::write(wake[1], &b, 1);
            }
            thread.join();
        }
        if (channel) {
            if (ssh_is_connected(session)) ssh_channel_close(channel);
            ssh_channel_free(channel);
        }
        if (session) {
            ssh_disconnect(session);
            ssh_free(session);
        }
        for (int f : {session_fd, fd, wake[0], wake[1]})
            if (f >= 0) ::close(f);
    }

    void relay();
};

// Copies channel -> fd and fd -> channel until both directions ended, the session died or the owner
// stops it. Never blocks on either side: channel reads are non-blocking, channel writes stay within
// the window, the fd is non-blocking, and the thread sleeps in poll() on the session's socket, the
// fd and the wake pipe (libssh may hold already-decrypted channel data that poll cannot see, so
// the loop polls only after a pass that moved nothing).
void Connection::Hop::relay() {
    std::string to_fd, to_channel;
    size_t to_fd_off = 0, to_channel_off = 0;
    bool channel_eof = false, fd_eof = false, fd_shut = false, eof_sent = false;
    auto last_keepalive = std::chrono::steady_clock::now();
    char buf[65536];
    while (!stop) {
        bool moved = false;
        // channel -> fd
        if (to_fd_off == to_fd.size() && !channel_eof) {
            to_fd.clear();
            to_fd_off = 0;
            int n = ssh_channel_read_nonblocking(channel, buf, sizeof buf, 0);
            if (n > 0) {
                to_fd.assign(buf, static_cast<size_t>(n));
                rx_bytes += static_cast<uint64_t>(n);
                moved = true;
            } else if (n == SSH_EOF || (n == 0 && ssh_channel_is_eof(channel) && ssh_channel_poll(channel, 0) <= 0) ||
                       (n < 0 && ssh_channel_is_closed(channel))) {
                channel_eof = true;
                moved = true;
            } else if (n < 0) {
                common::log::info(name, ": connection lost: ", ssh_get_error(session));
                break;
            }
        }
        if (to_fd_off < to_fd.size()) {
            ssize_t w = ::send(fd, to_fd.data() + to_fd_off, to_fd.size() - to_fd_off, MSG_NOSIGNAL);
            if (w > 0) {
                to_fd_off += static_cast<size_t>(w);
                moved = true;
            } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                break;  // the next session closed its socket
            }
        }
        if (channel_eof && to_fd_off == to_fd.size() && !fd_shut) {
            ::shutdown(fd, SHUT_WR);
            fd_shut = true;
        }
        // fd -> channel
        if (to_channel_off == to_channel.size() && !fd_eof) {
            to_channel.clear();
            to_channel_off = 0;
            ssize_t n = ::read(fd, buf, sizeof buf);
            if (n > 0) {
                to_channel.assign(buf, static_cast<size_t>(n));
                moved = true;
            } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                fd_eof = true;
                moved = true;
            }
        }
        // Writes never wait on a flush (see ChannelTask::pump): the owner's liveness check must be
        // able to stop this thread at once.
        std::optional<NonBlocking> nb;
        if (to_channel_off < to_channel.size()) nb.emplace(session);
        while (to_channel_off < to_channel.size() && !ssh_channel_is_closed(channel)) {
            uint32_t window = ssh_channel_window_size(channel);
            if (window == 0) break;
            size_t n = std::min<size_t>({to_channel.size() - to_channel_off, window, 32768});
            int w = ssh_channel_write(channel, to_channel.data() + to_channel_off, static_cast<uint32_t>(n));
            if (w < 0) {
                common::log::info(name, ": connection lost while sending: ", ssh_get_error(session));
                stop = true;
                break;
            }
            if (w == 0) break;
            to_channel_off += static_cast<size_t>(w);
            moved = true;
        }
        if (stop) break;
        if (fd_eof && to_channel_off == to_channel.size() && !eof_sent) {
            if (!ssh_channel_is_closed(channel)) ssh_channel_send_eof(channel);
            eof_sent = true;
        }
        if (channel_eof && fd_shut && eof_sent) break;
        if (!ssh_is_connected(session)) break;
        if (moved) continue;
        auto now = std::chrono::steady_clock::now();
        if (keepalive_s > 0 && now - last_keepalive > std::chrono::seconds(keepalive_s)) {
            ssh_send_ignore(session, "bifrost-keepalive");
            last_keepalive = now;
        }
        pollfd fds[3];
        fds[0] = {ssh_get_fd(session), POLLIN, 0};
        short want = 0;
        if (to_channel_off == to_channel.size() && !fd_eof) want |= POLLIN;
        if (to_fd_off < to_fd.size()) want |= POLLOUT;
        fds[1] = {want ? fd : -1, want, 0};
        fds[2] = {wake[0], POLLIN, 0};
        // Bounded so a window adjustment consumed by a write, or a keepalive, is never waited on forever.
        ::poll(fds, 3, keepalive_s > 0 ? std::min(1000, keepalive_s * 1000) : 1000);
    }
    // Our end closes: the next session sees its connection end (and fails instead of hanging).
    ::shutdown(fd, SHUT_RDWR);
    ended = true;
}

namespace {

Error named(const Error & e, const std::string & name) {
    return Error(e.kind(), name + " " + e.message(), e.context());
}

// Options, connect (directly, or over `fd` when it is >= 0), host-key check, authentication.
// `failure` gets libssh's connect error (for the retry decision). Frees the session on failure.
ssh_session connect_one(const Endpoint & e, const std::vector<Endpoint> & route, const ConnectOptions & options,
                        const std::string & known, int fd, bool compress, std::string & failure) {
    ssh_session s = ssh_new();
    if (!s) {
        if (fd >= 0) ::close(fd);
        throw Error::internal("ssh_new failed");
    }
    int port = e.port;
    int no = 0;
    long timeout_s = std::max(1L, static_cast<long>(options.connect_timeout_s));
    ssh_options_set(s, SSH_OPTIONS_HOST, e.host.c_str());
    ssh_options_set(s, SSH_OPTIONS_PORT, &port);
    ssh_options_set(s, SSH_OPTIONS_USER, e.user.c_str());
    ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no);  // never read ~/.ssh/config (docs/build-notes.md, libssh)
    ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");  // we pin in our own file
    ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
    ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &timeout_s);
    // Over a jump host: the socketpair end. libssh does not close a socket given with SSH_OPTIONS_FD:
    // its owner closes it after ssh_free (here on failure, else the Hop or Connection).
    if (fd >= 0) ssh_options_set(s, SSH_OPTIONS_FD, &fd);
    // Channel set-up and teardown are chains of small packets; with Nagle on, each waits for
    // the server's delayed ACK (40 ms on Linux), which bounds how many channels a second a
    // control master can open.
    int nodelay = 1;
    if (fd < 0) ssh_options_set(s, SSH_OPTIONS_NODELAY, &nodelay);
    // AES-GCM first: with AES-NI it is several times faster than chacha20 in libssh.
    const char * ciphers = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr";
    ssh_options_set(s, SSH_OPTIONS_CIPHERS_C_S, ciphers);
    ssh_options_set(s, SSH_OPTIONS_CIPHERS_S_C, ciphers);
    ssh_options_set(s, SSH_OPTIONS_COMPRESSION, compress ? "yes" : "no");
    try {
        if (ssh_connect(s) != SSH_OK) {
            failure = ssh_get_error(s);
            throw Error(ErrorKind::Network, e.label() + ": cannot connect: " + failure).with("host", e.label());
        }
        if (options.pin_host_key) check_host_key(s, e, route, known);
        authenticate(s, e, options);
    } catch (...) {
        ssh_disconnect(s);
        ssh_free(s);
        if (fd >= 0) ::close(fd);
        throw;
    }
    if (int sock = ssh_get_fd(s); fd < 0 && sock >= 0 && options.keepalive_s > 0) {
        int on = 1;
        ::setsockopt(sock, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
        unsigned user_timeout_ms = static_cast<unsigned>(options.keepalive_s) * 3000u;
        ::setsockopt(sock, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
    }
    // From here on the session timeout bounds each channel round trip (open, exec, exit status).
    // It was the connect timeout (10 s) before: on a loaded machine a channel open could time
    // out, and libssh 0.10 then reports no error of its own (an old message showed instead).
    long request_s = static_cast<long>(options.channel_timeout_s);
    long request_us = static_cast<long>((options.channel_timeout_s - static_cast<double>(request_s)) * 1e6);
    ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &request_s);
    ssh_options_set(s, SSH_OPTIONS_TIMEOUT_USEC, &request_us);
    return s;
}

}  // namespace

std::unique_ptr<Connection> Connection::open(const Endpoint & endpoint, const ConnectOptions & options) {
    std::string known = options.known_hosts_path.empty() ? default_known_hosts_path() : options.known_hosts_path;
    Endpoint e = endpoint;
    if (e.user.empty()) e.user = env_or("USER", "root");
    if (options.jump.size() > kMaxJumpHosts)
        throw Error::usage(std::to_string(options.jump.size()) + " jump hosts for " + e.label() + "; at most " +
                           std::to_string(kMaxJumpHosts));
    std::vector<Endpoint> jumps;
    for (const auto & j : options.jump) {
        if (j.host.empty()) throw Error::usage("a jump host for " + e.label() + " has no host name");
        jumps.push_back(Endpoint{j.user.empty() ? env_or("USER", "root") : j.user, j.host, j.port, ""});
    }
    auto start = std::chrono::steady_clock::now();
    const common::Backoff backoff{0.5, 8.0};
    for (int attempt = 1;; ++attempt) {
        common::throw_if_interrupted();
        auto c = std::unique_ptr<Connection>(new Connection());
        c->endpoint_ = e;
        c->options_ = options;
        std::string failure;
        try {
            int fd = -1;  // the socket the next session uses: -1 for a direct connection
            for (size_t i = 0; i < jumps.size(); ++i) {
                const Endpoint & hop_e = jumps[i];
                const Endpoint & next = i + 1 < jumps.size() ? jumps[i + 1] : e;
                const std::string name = "jump " + std::to_string(i + 1);
                ConnectOptions hop_o = options;
                if (!options.jump[i].key_path.empty()) hop_o.key_path = options.jump[i].key_path;
                auto hop = std::make_unique<Hop>();
                hop->name = name + " " + hop_e.label();
                hop->keepalive_s = options.keepalive_s;
                try {
                    // Hops carry the next session's encrypted bytes: compressing them gains nothing.
                    const int under = fd;
                    fd = -1;  // connect_one owns it now (closes it on failure)
                    hop->session = connect_one(hop_e, {jumps.begin(), jumps.begin() + static_cast<long>(i)}, hop_o,
                                               known, under, false, failure);
                    hop->session_fd = under;
                } catch (const Error & err) {
                    throw named(err, name);
                }
                hop->channel = ssh_channel_new(hop->session);
                if (!hop->channel) throw Error::internal(hop->name + ": ssh_channel_new failed");
                if (ssh_channel_open_forward(hop->channel, next.host.c_str(), next.port, "127.0.0.1", 0) != SSH_OK) {
                    const std::string why = ssh_get_error(hop->session);
                    failure = "unreachable";  // retried like an unreachable host (the target may be booting)
                    ssh_channel_free(hop->channel);
                    hop->channel = nullptr;
                    throw Error(ErrorKind::Network, hop->name + ": cannot reach " + next.label() + " from there: " +
                                                        why + " (the bastion may forbid TCP forwarding)")
                        .with("host", next.label());
                }
                int pair[2];
                if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
                    throw Error::io("socketpair", "create a socket pair for " + hop->name, errno);
                hop->fd = pair[0];
                fd = pair[1];
                ::fcntl(hop->fd, F_SETFL, ::fcntl(hop->fd, F_GETFL) | O_NONBLOCK);
                if (::pipe2(hop->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
                    ::close(fd);
                    throw Error::io("pipe", "create a wake pipe for " + hop->name, errno);
                }
                Hop * h = hop.get();
                c->hops_.push_back(std::move(hop));
                h->thread = std::thread([h] { h->relay(); });
            }
            bool compress = options.compression.value_or(!is_loopback(jumps.empty() ? e.host : jumps.front().host));
            try {
                const int under = fd;
                fd = -1;
                c->session_ = connect_one(e, jumps, options, known, under, compress, failure);
                c->session_fd_ = under;
            } catch (const Error & err) {
                if (jumps.empty()) throw;
                throw named(err, "through " + c->hops_.back()->name + ":");
            }
        } catch (const Error & err) {
            c.reset();
            double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            const double backoff_s = backoff.delay_s(attempt);
            if (err.kind() != ErrorKind::Network || !retryable(failure) || elapsed + backoff_s > options.retry_deadline_s) {
                if (err.kind() == ErrorKind::Network && options.retry_deadline_s > 0 && attempt > 1)
                    throw Error(ErrorKind::Timeout,
                                (jumps.empty() ? e.label() + ": " : err.message() + "; ") + "still unreachable after " +
                                    std::to_string(attempt) + " attempts over " +
                                    std::to_string(static_cast<int>(elapsed)) + " s" +
                                    (jumps.empty() ? ": " + failure : std::string()) + "; is the machine up?")
                        .with("host", e.label());
                throw;
            }
            common::log::info(err.message(), "; retrying in ", backoff_s, " s (attempt ", attempt, ")");
            std::this_thread::sleep_for(std::chrono::duration<double>(backoff_s));
            continue;
        }
        return c;
    }
}

Connection::~Connection() {
    if (session_) {
        ssh_disconnect(session_);
        ssh_free(session_);
        session_ = nullptr;
    }
    if (session_fd_ >= 0) ::close(session_fd_);
    while (!hops_.empty()) hops_.pop_back();  // last to first: each hop's relay runs over the previous one
}

bool Connection::alive() {
    for (const auto & hop : hops_)
        if (hop->ended) return false;
    return session_ && !broken_ && ssh_is_connected(session_);
}

std::optional<uint64_t> Connection::bytes_received() {
    if (!hops_.empty()) return hops_.back()->rx_bytes.load();
    int fd = session_ ? ssh_get_fd(session_) : -1;
    if (fd < 0) return std::nullopt;
    tcp_info info{};
    socklen_t len = sizeof info;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
        len < offsetof(tcp_info, tcpi_bytes_received) + sizeof info.tcpi_bytes_received)
        return std::nullopt;  // not TCP, or a kernel older than 4.1: keepalives only, no verdict
    return info.tcpi_bytes_received;
}

void Connection::send_keepalive() {
    if (!session_) return;
    // keepalive@openssh.com with want-reply: the server must answer (it refuses the unknown name),
    // so an answer proves the far end alive. An SSH_MSG_IGNORE, used before, asks for nothing, and
    // its silence looks the same whether the server is there or frozen. Non-blocking: libssh would
    // otherwise wait for the answer up to the session timeout. It keeps one request outstanding;
    // the first call collects an answer that has arrived, the second then sends the next request.
    NonBlocking nb(session_);
    ssh_send_keepalive(session_);
    ssh_send_keepalive(session_);
}

void Connection::reset_liveness() { probe_pending_ = false; }

void Connection::keepalive_tick() {
    if (options_.keepalive_s <= 0 || !session_) return;
    const auto now = std::chrono::steady_clock::now();
    const std::optional<uint64_t> rx = bytes_received();
    if (probe_pending_ && rx && *rx != probe_rx_) probe_pending_ = false;  // something arrived since
    if (now - last_keepalive_ >= std::chrono::seconds(options_.keepalive_s)) {
        send_keepalive();
        last_keepalive_ = now;
        if (!probe_pending_ && rx) {
            probe_pending_ = true;
            probe_rx_ = *rx;
            probe_at_ = now;
        }
    }
    const auto bound = std::chrono::seconds(options_.keepalive_s * kDeadKeepalives);
    if (probe_pending_ && now - probe_at_ > bound) {
        broken_ = true;
        throw Error(ErrorKind::Network, label() + ": connection lost: no answer from the server for " +
                                            std::to_string(options_.keepalive_s * kDeadKeepalives) +
                                            " s (keepalive); it stopped responding")
            .with("host", label());
    }
}

int Connection::run(const RemoteCommand & command) {
    if (!alive()) throw CommandNotStarted(ErrorKind::Network, label() + ": connection lost", {{"host", label()}});
    // The last run's unanswered keepalive says nothing about now: between runs nobody read the
    // session, so its answer may be waiting unread (and an idle gap is not silence).
    reset_liveness();
    std::optional<ChannelTask> started;
    try {
        started.emplace(session_, command.command, label(), options_.channel_timeout_s, ChannelTask::Start::Deferred);
        // The open and exec round trips step without blocking, so a server that stopped answering
        // is noticed by the keepalive within its bound, not after channel_timeout_s.
        while (!started->start_step()) {
            try {
                common::throw_if_interrupted();
                keepalive_tick();
            } catch (const Error & e) {
                broken_ = true;  // a pending channel is being abandoned: never open another here
                if (!started->exec_sent() && e.kind() != ErrorKind::Interrupted)
                    throw CommandNotStarted(e.kind(), e.message(), e.context());
                throw;
            }
            wait_session(session_, -1, 50);
        }
    } catch (const ChannelSetupFailed & e) {
        broken_ = true;
        if (!e.may_have_started) throw CommandNotStarted(e.kind(), e.message(), e.context());
        throw;
    }
    ChannelTask & task = *started;
    task.queue_stdin(command.stdin_data);
    bool source_open = static_cast<bool>(command.stdin_source) || command.stdin_fd >= 0;
    if (!source_open) task.close_stdin();
    const auto started_at = std::chrono::steady_clock::now();
    auto last_progress = started_at;
    std::string chunk;
    while (!task.done()) {
        common::throw_if_interrupted();
        const auto now_at = std::chrono::steady_clock::now();
        if (options_.command_timeout_s > 0 && now_at - started_at > std::chrono::duration<double>(options_.command_timeout_s)) {
            broken_ = true;  // the channel is still open on the server: never reuse this session
            throw Error(ErrorKind::Timeout, label() + ": the remote command did not finish within " +
                                                common::format_duration(options_.command_timeout_s))
                .with("host", label());
        }
        if (options_.stall_timeout_s > 0 && now_at - last_progress > std::chrono::duration<double>(options_.stall_timeout_s)) {
            broken_ = true;
            throw Error(ErrorKind::Timeout, label() + ": the remote command moved no data for " +
                                                common::format_duration(options_.stall_timeout_s))
                .with("host", label());
        }
        if (source_open && command.stdin_source && task.stdin_queued() < (1u << 20)) {
            chunk.clear();
            if (!command.stdin_source(chunk)) {
                source_open = false;
                task.close_stdin();
            } else {
                task.queue_stdin(chunk);
            }
        }
        bool moved = task.pump(command.on_stdout, command.on_stderr);
        if (moved) {
            last_progress = std::chrono::steady_clock::now();
            continue;
        }
        int extra = source_open && command.stdin_fd >= 0 && task.stdin_queued() < (1u << 20) ? command.stdin_fd : -1;
        if (wait_session(session_, extra, 50)) {
            char buf[65536];
            ssize_t n = ::read(extra, buf, sizeof buf);
            if (n > 0) {
                task.queue_stdin(std::string_view(buf, static_cast<size_t>(n)));
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                source_open = false;
                task.close_stdin();
            }
        }
        keepalive_tick();
    }
    int status = task.finish();
    if (!task.signal_name().empty())
        common::log::warn(label(), ": the remote command was killed by signal SIG", task.signal_name(), " (exit ", status, ")");
    return status;
}

// ---- ChannelTask ----

ChannelTask::ChannelTask(ssh_session session, const std::string & command, const std::string & label, double timeout_s,
                         Start start)
    : session_(session), label_(label), command_(command), timeout_s_(timeout_s) {
    // libssh keeps its last error string until another error replaces it, and a failed round trip
    // does not always set one (a timed-out open sets none): compare, so an old message is never
    // reported as this failure's reason.
    error_before_ = ssh_get_error(session);
    stage_since_ = std::chrono::steady_clock::now();
    channel_ = ssh_channel_new(session);
    if (!channel_) fail("creating a channel", SSH_ERROR, false);
    if (start == Start::Deferred) return;
    while (!start_step()) wait_session(session_, -1, 50);
}

void ChannelTask::fail(const char * step, int rc, bool may_have_started) {
    std::string now = ssh_get_error(session_);
    std::string why = rc == SSH_AGAIN ? "no answer from the server within " + common::format_duration(timeout_s_)
                      : now != error_before_ && !now.empty() ? now
                                                            : "the server refused it";
    // A channel whose open is still pending is removed from libssh's table at once when freed
    // (it was never bound), so the server's late confirmation and anything it later sends on
    // that channel (keepalive@openssh.com requests) name an id libssh no longer knows ("Server
    // specified invalid channel N"), and the server keeps a session open that nobody will
    // close. The session's channel bookkeeping cannot be trusted after that: the owner drops
    // it and reconnects (ChannelSetupFailed).
    if (channel_) {
        if (callbacks_) ssh_remove_channel_callbacks(channel_, callbacks_.get());
        ssh_channel_free(channel_);
        channel_ = nullptr;
    }
    ChannelSetupFailed failure(rc == SSH_AGAIN ? ErrorKind::Timeout : ErrorKind::Network,
                               label_ + ": cannot start a remote command: " + step + ": " + why, {{"host", label_}});
    failure.may_have_started = may_have_started;
    throw failure;
}

bool ChannelTask::start_step() {
    if (stage_ == Stage::Running) return true;
    // Each round trip is one non-blocking step (libssh resumes a pending open or request where it
    // left it), so the caller never waits inside libssh on a server that has stopped answering.
    NonBlocking nb(session_);
    const bool overdue = std::chrono::steady_clock::now() - stage_since_ > std::chrono::duration<double>(timeout_s_);
    if (stage_ == Stage::Open) {
        int rc = ssh_channel_open_session(channel_);
        if (rc == SSH_AGAIN) {
            if (overdue) fail("opening a session channel", SSH_AGAIN, false);
            return false;
        }
        if (rc != SSH_OK) fail("opening a session channel", rc, false);
        callbacks_ = std::make_unique<ssh_channel_callbacks_struct>();
        std::memset(callbacks_.get(), 0, sizeof *callbacks_);
        callbacks_->userdata = this;
        callbacks_->channel_exit_signal_function = &ChannelTask::on_exit_signal;
        ssh_callbacks_init(callbacks_.get());
        ssh_add_channel_callbacks(channel_, callbacks_.get());
        stage_ = Stage::Exec;
        stage_since_ = std::chrono::steady_clock::now();
    }
    int rc = ssh_channel_request_exec(channel_, command_.c_str());
    if (rc == SSH_AGAIN) {
        if (std::chrono::steady_clock::now() - stage_since_ > std::chrono::duration<double>(timeout_s_))
            fail("exec request", SSH_AGAIN, true);
        return false;
    }
    if (rc != SSH_OK) fail("exec request", rc, false);
    stage_ = Stage::Running;
    return true;
}

void ChannelTask::on_exit_signal(ssh_session, ssh_channel, const char * signal, int, const char *, const char *, void * self) {
    static_cast<ChannelTask *>(self)->signal_ = signal ? signal : "";
}

ChannelTask::~ChannelTask() {
    if (channel_) {
        if (callbacks_) ssh_remove_channel_callbacks(channel_, callbacks_.get());
        // Sends our close; libssh frees the channel once the server's close arrives (it stays in
        // the session's table until then, so late packets for it are still recognised). Only an
        // open channel is closed: libssh would address a pending one's EOF and close to remote
        // channel 0, another command's. Without blocking: on a server that stopped reading, a
        // blocking close waits for its flush up to the session timeout.
        NonBlocking nb(session_);
        if (ssh_is_connected(session_) && ssh_channel_is_open(channel_)) ssh_channel_close(channel_);
        ssh_channel_free(channel_);
    }
}

bool ChannelTask::pump(const StreamCallback & out, const StreamCallback & err, size_t max_read_bytes) {
    if (stage_ != Stage::Running) return false;
    bool moved = false;
    // Writes never wait: within the window they only queue packets, and libssh flushes them as the
    // socket takes them. Blocking, each write's flush waits for the socket up to the session
    // timeout, which on a server that stopped reading (but whose kernel still ACKs) is minutes.
    NonBlocking nb(session_);
    // stdin within the window only: ssh_channel_write would otherwise block waiting for window
    // adjustments while output piles up on the other side.
    while (stdin_queued() > 0 && !out_eof_) {
        uint32_t window = ssh_channel_window_size(channel_);
        if (window == 0) break;
        size_t n = std::min<size_t>({stdin_queued(), window, 32768});
        int w = ssh_channel_write(channel_, pending_.data() + pending_off_, static_cast<uint32_t>(n));
        if (w < 0) throw Error(ErrorKind::Network, label_ + ": connection lost while sending: " + ssh_get_error(session_)).with("host", label_);
        if (w == 0) break;
        pending_off_ += static_cast<size_t>(w);
        moved = true;
    }
    if (pending_off_ == pending_.size()) {
        pending_.clear();
        pending_off_ = 0;
    } else if (pending_off_ > (1u << 20)) {
        pending_.erase(0, pending_off_);
        pending_off_ = 0;
    }
    if (want_eof_ && !eof_sent_ && stdin_queued() == 0) {
        if (!out_eof_) ssh_channel_send_eof(channel_);
        eof_sent_ = true;
        moved = true;
    }
    char buf[65536];
    size_t read_total = 0;
    for (int is_stderr = 0; is_stderr <= 1; ++is_stderr) {
        bool & eof = is_stderr ? err_eof_ : out_eof_;
        while (!eof && read_total < max_read_bytes) {
            int n = ssh_channel_read_nonblocking(channel_, buf, sizeof buf, is_stderr);
            if (n > 0) {
                read_total += static_cast<size_t>(n);
                moved = true;
                const StreamCallback & cb = is_stderr ? err : out;
                if (cb) cb(std::string_view(buf, static_cast<size_t>(n)));
                continue;
            }
            if (n == SSH_EOF || (n == 0 && ssh_channel_is_eof(channel_) && ssh_channel_poll(channel_, is_stderr) <= 0)) {
                eof = true;
                moved = true;
                break;
            }
            if (n < 0) {
                if (ssh_channel_is_closed(channel_)) {
                    eof = true;
                    break;
                }
                throw Error(ErrorKind::Network, label_ + ": connection lost: " + ssh_get_error(session_)).with("host", label_);
            }
            break;
        }
    }
    if (!ssh_is_connected(session_) && !done())
        throw Error(ErrorKind::Network, label_ + ": connection lost: " + ssh_get_error(session_)).with("host", label_);
    return moved;
}

int ChannelTask::finish() {
    int status = ssh_channel_get_exit_status(channel_);
    // No status and no session: the connection died under the command (not a remote failure).
    if (status < 0 && !ssh_is_connected(session_))
        throw Error(ErrorKind::Network, label_ + ": connection lost: " + ssh_get_error(session_)).with("host", label_);
    if (status >= 0) return status;
    if (!signal_.empty()) {
        int n = signal_number(signal_);
        return n > 0 ? 128 + n : 255;
    }
    return 255;
}

int signal_number(std::string_view name) {
    if (name.rfind("SIG", 0) == 0) name.remove_prefix(3);
    // The names RFC 4254 section 6.10 lists, plus the other common Linux ones, with Linux numbers.
    static const std::pair<std::string_view, int> table[] = {
        {"HUP", 1},  {"INT", 2},   {"QUIT", 3},  {"ILL", 4},   {"TRAP", 5},  {"ABRT", 6},  {"BUS", 7},
        {"FPE", 8},  {"KILL", 9},  {"USR1", 10}, {"SEGV", 11}, {"USR2", 12}, {"PIPE", 13}, {"ALRM", 14},
        {"TERM", 15}, {"XCPU", 24}, {"XFSZ", 25}, {"SYS", 31}};
    for (const auto & [n, v] : table)
        if (n == name) return v;
    return 0;
}

bool wait_session(ssh_session session, int extra_fd, int timeout_ms) {
    pollfd fds[2];
    int n = 0;
    fds[n++] = {ssh_get_fd(session), POLLIN, 0};
    if (extra_fd >= 0) fds[n++] = {extra_fd, POLLIN, 0};
    int rc = ::poll(fds, static_cast<nfds_t>(n), timeout_ms);
    return rc > 0 && extra_fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR));
}

}  // namespace bifrost
