// The control-socket master and client. Wire format, both directions: 1 type byte, 4-byte
// big-endian length, payload. Client->master: 'R' command, 'I' stdin bytes, 'D' end of stdin.
// Master->client: 'O' stdout, 'E' stderr, 'K' the signal that killed the command (then 'X'), 'X' exit
// status (decimal), 'F' failure ("kind\tmessage"), 'N' failure before the command started (same
// payload; the client may run it again on a new master).
// One request per socket connection. Only peers with our uid are served (SO_PEERCRED).
#include "bifrost/mux.h"

#include <fcntl.h>
#include <libssh/libssh.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <errno.h>  // program_invocation_name
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <list>
#include <thread>

#include "bifrost/channel.h"
#include "bifrost/manifest.h"
#include "common/error.h"
#include "common/file_lock.h"
#include "common/log.h"
#include "common/program.h"

namespace bifrost {

using common::Error;
using common::ErrorKind;

namespace {

void append_frame(std::string & buf, char type, std::string_view payload) {
    uint32_t n = static_cast<uint32_t>(payload.size());
    char head[5] = {type, static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8), static_cast<char>(n)};
    buf.append(head, 5);
    buf.append(payload);
}

// Pops one complete frame from buf (consumed prefix tracked by off). Returns false if incomplete.
bool pop_frame(std::string & buf, size_t & off, char & type, std::string & payload) {
    if (buf.size() - off < 5) return false;
    const unsigned char * h = reinterpret_cast<const unsigned char *>(buf.data() + off);
    uint32_t n = (uint32_t(h[1]) << 24) | (uint32_t(h[2]) << 16) | (uint32_t(h[3]) << 8) | uint32_t(h[4]);
    if (buf.size() - off < 5 + n) return false;
    type = static_cast<char>(h[0]);
    payload.assign(buf, off + 5, n);
    off += 5 + n;
    if (off > (1u << 20) || off == buf.size()) {
        buf.erase(0, off);
        off = 0;
    }
    return true;
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

ErrorKind kind_from_name(const std::string & name) {
    for (ErrorKind k : {ErrorKind::Internal, ErrorKind::Usage, ErrorKind::Auth, ErrorKind::Capacity, ErrorKind::Quota,
                        ErrorKind::Network, ErrorKind::Timeout, ErrorKind::RemoteFailed, ErrorKind::NotFound,
                        ErrorKind::LeakRisk, ErrorKind::Interrupted})
        if (common::kind_name(k) == name) return k;
    return ErrorKind::Internal;
}

int connect_socket(const std::string & path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// ---- client side ----

class MuxTransport : public Transport {
public:
    MuxTransport(std::string path, std::string label) : path_(std::move(path)), label_(std::move(label)) {}
    std::string label() const override { return label_; }
    bool usable() override {
        int fd = connect_socket(path_);
        if (fd < 0) return false;
        ::close(fd);
        return true;
    }

    int run(const RemoteCommand & command) override {
        int fd = connect_socket(path_);
        if (fd < 0)
            throw CommandNotStarted(ErrorKind::Network, label_ + ": control master went away; the connection was lost",
                                    {{"host", label_}});
        struct Closer {
            int fd;
            ~Closer() { ::close(fd); }
        } closer{fd};
        set_nonblocking(fd);
        std::string out;
        size_t out_off = 0;
        append_frame(out, 'R', command.command);
        for (size_t i = 0; i < command.stdin_data.size(); i += 1 << 18)
            append_frame(out, 'I', std::string_view(command.stdin_data).substr(i, 1 << 18));
        bool source_open = static_cast<bool>(command.stdin_source) || command.stdin_fd >= 0;
        if (!source_open) append_frame(out, 'D', {});
        std::string in;
        size_t in_off = 0;
        std::string chunk, payload;
        char buf[1 << 16];
        bool streamed = false;  // stdin was taken from stdin_fd/stdin_source: a rerun could not replay it
        for (;;) {
            common::throw_if_interrupted();
            if (source_open && command.stdin_source && out.size() - out_off < (1u << 20)) {
                chunk.clear();
                streamed = true;
                if (command.stdin_source(chunk)) {
                    append_frame(out, 'I', chunk);
                } else {
                    append_frame(out, 'D', {});
                    source_open = false;
                }
            }
            pollfd fds[2];
            nfds_t n = 0;
            fds[n++] = {fd, static_cast<short>(POLLIN | (out.size() > out_off ? POLLOUT : 0)), 0};
            bool poll_stdin = source_open && command.stdin_fd >= 0 && out.size() - out_off < (1u << 20);
            if (poll_stdin) fds[n++] = {command.stdin_fd, POLLIN, 0};
            bool busy = source_open && command.stdin_source && out.size() - out_off < (1u << 20);
            int rc = ::poll(fds, n, busy ? 0 : 200);
            if (rc < 0 && errno != EINTR) throw Error::io(path_, "poll control socket", errno);
            if (rc <= 0) continue;
            if (fds[0].revents & POLLOUT) {
                ssize_t w = ::send(fd, out.data() + out_off, out.size() - out_off, MSG_NOSIGNAL);
                if (w > 0) out_off += static_cast<size_t>(w);
                if (out_off == out.size()) {
                    out.clear();
                    out_off = 0;
                }
            }
            if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t r = ::recv(fd, buf, sizeof buf, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                    throw Error(ErrorKind::Network, label_ + ": control master closed the request unexpectedly").with("host", label_);
                if (r > 0) in.append(buf, static_cast<size_t>(r));
                char type;
                while (pop_frame(in, in_off, type, payload)) {
                    if (type == 'O' && command.on_stdout) command.on_stdout(payload);
                    else if (type == 'E' && command.on_stderr) command.on_stderr(payload);
                    else if (type == 'K')
                        common::log::warn(label_, ": the remote command was killed by signal SIG", payload);
                    else if (type == 'X') return std::atoi(payload.c_str());
                    else if (type == 'F' || type == 'N') {
                        auto tab = payload.find('\t');
                        Error::Context context{{"host", label_}};
                        if (type == 'N' && !streamed)
                            throw CommandNotStarted(kind_from_name(payload.substr(0, tab)), payload.substr(tab + 1), context);
                        throw Error(kind_from_name(payload.substr(0, tab)), payload.substr(tab + 1), context);
                    }
                }
            }
            if (poll_stdin && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
                ssize_t r = ::read(command.stdin_fd, buf, sizeof buf);
                streamed = true;
                if (r > 0) append_frame(out, 'I', std::string_view(buf, static_cast<size_t>(r)));
                else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
                    append_frame(out, 'D', {});
                    source_open = false;
                }
            }
        }
    }

private:
    std::string path_;
    std::string label_;
};

// ---- master side ----

struct Peer {
    int fd = -1;
    std::string in;
    size_t in_off = 0;
    std::string out;
    size_t out_off = 0;
    std::unique_ptr<ChannelTask> task;
    bool finished = false;  // exit or failure frame queued; close once flushed
};

// Removes the socket path if it is still the one this master bound (a newer master may own it).
void unlink_if_ours(const std::string & path, const struct stat & mine) {
    struct stat now {};
    if (::stat(path.c_str(), &now) == 0 && now.st_ino == mine.st_ino && now.st_dev == mine.st_dev) ::unlink(path.c_str());
}

// Frees the event that watches the session socket while no channel is open.
struct EventGuard {
    ssh_event e;
    ssh_session s;
    ~EventGuard() {
        ssh_event_remove_session(e, s);
        ssh_event_free(e);
    }
};

// The master's loop and its phases: accept a client, read its frames, start or feed its command,
// pump the channel, flush to the client; on a lost connection tell every client and exit.
class Master {
public:
    Master(Connection & conn, int listen_fd, int persist_s, const ConnectOptions & options, const std::string & path,
           const struct stat & mine)
        : conn_(conn), listen_fd_(listen_fd), persist_s_(persist_s), options_(options), path_(path), mine_(mine),
          session_(conn.session()), label_(conn.label()) {}

    void serve() {
        auto idle_since = std::chrono::steady_clock::now();
        // With no channel being read nothing else reads the session socket; this event processes
        // what arrives there (server keepalives, EOF when the server goes away, data for channels
        // whose clients are behind) so a dead connection is noticed at once and poll() does not
        // spin on a readable socket.
        ssh_event idle_event = ssh_event_new();
        ssh_event_add_session(idle_event, session_);
        EventGuard event_guard{idle_event, session_};
        for (;;) {
            std::vector<pollfd> fds = poll_set();
            // Whether some channel will be read (or opened) this round. When none will (no task,
            // or every client is behind: back-pressure), nothing would take the packets waiting
            // on the session socket, which then stayed readable and this loop spun at ~90 % of a
            // core until the client read again. The event takes them instead (into libssh's
            // channel buffers, bounded by each channel's window, or the keepalive answers and EOF
            // of an idle session), and the loop sleeps until a client makes room.
            bool any_reader = false;
            for (auto & p : peers_) any_reader |= p.task && !p.finished && (!p.task->started() || !behind(p));
            ::poll(fds.data(), fds.size(), any_reader ? 5 : 200);
            auto now = std::chrono::steady_clock::now();
            if (!any_reader && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) ssh_event_dopoll(idle_event, 0);
            if (fds[0].revents & POLLIN) accept_peer();
            std::string failure;
            size_t i = 2;
            for (auto & p : peers_) {
                short rev = i < fds.size() && fds[i].fd == p.fd ? fds[i].revents : 0;
                ++i;
                serve_peer(p, rev, failure);
            }
            if (!failure.empty() || !ssh_is_connected(session_)) {
                fail_all(failure.empty() ? label_ + ": connection lost" : failure);
                return;
            }
            drop_finished();
            if (draining_ && peers_.empty()) return;
            if (!peers_.empty()) idle_since = now;
            if (peers_.empty() && now - idle_since > std::chrono::seconds(persist_s_)) return;
            try {
                conn_.keepalive_tick();
            } catch (const Error & e) {
                // The server stopped answering (frozen, not closed): every client is told, so its
                // reads reconnect on a new master instead of waiting here for ever.
                fail_all(e.message());
                return;
            }
        }
    }

private:
    // The listening socket (unless draining), the session socket, then one entry per client.
    std::vector<pollfd> poll_set() const {
        std::vector<pollfd> fds;
        fds.push_back({listen_fd_, static_cast<short>(draining_ ? 0 : POLLIN), 0});
        fds.push_back({ssh_get_fd(session_), POLLIN, 0});
        for (const auto & p : peers_) {
            short ev = 0;
            bool wants_input = !p.finished && (!p.task || (!p.task->stdin_closed() && p.task->stdin_queued() < (1u << 20)));
            if (wants_input) ev |= POLLIN;
            if (p.out.size() > p.out_off) ev |= POLLOUT;
            fds.push_back({p.fd, ev, 0});
        }
        return fds;
    }

    // A client of another uid is closed at once.
    void accept_peer() {
        int cfd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (cfd < 0) return;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != ::geteuid()) {
            ::close(cfd);
            return;
        }
        Peer p;
        p.fd = cfd;
        peers_.push_back(std::move(p));
    }

    // One round for one client; a channel or session error goes into `failure`.
    void serve_peer(Peer & p, short rev, std::string & failure) {
        if (rev & (POLLIN | POLLHUP | POLLERR)) {
            if (!read_peer(p)) {
                drop(p);  // the client went away (Ctrl-C): drop its channel
                return;
            }
            handle_frames(p, failure);
        }
        if (p.task && !p.finished && !p.task->started()) advance_start(p, failure);
        if (p.task && !p.finished && p.task->started()) pump(p, failure);
        if (failure.empty() && p.out.size() > p.out_off) flush(p);
    }

    // Drains what the client has sent (up to 1 MiB a round) so a push's stream is not paced by
    // this loop's poll. False when the client is gone.
    static bool read_peer(Peer & p) {
        char buf[1 << 16];
        bool gone = false;
        for (size_t got = 0; got < (1u << 20);) {
            ssize_t r = ::recv(p.fd, buf, sizeof buf, 0);
            if (r > 0) {
                p.in.append(buf, static_cast<size_t>(r));
                got += static_cast<size_t>(r);
                continue;
            }
            if (r == 0 || (errno != EAGAIN && errno != EINTR)) gone = got == 0;
            break;
        }
        return !gone;
    }

    void drop(Peer & p) {
        p.finished = true;
        // A channel abandoned while its open is pending leaves the session's channel table
        // untrustworthy (see ChannelTask::start_step): stop taking requests here.
        if (p.task && !p.task->started()) start_draining("a request left while its channel was being opened");
        p.task.reset();
        p.out.clear();
        p.out_off = 0;
    }

    void handle_frames(Peer & p, std::string & failure) {
        char type;
        std::string payload;
        while (!p.finished && pop_frame(p.in, p.in_off, type, payload)) {
            if (type == 'R' && !p.task) start_command(p, payload, failure);
            else if (type == 'I' && p.task) p.task->queue_stdin(payload);
            else if (type == 'D' && p.task) p.task->close_stdin();
        }
    }

    // Creates the command's channel; advance_start() then opens it and starts the command one
    // non-blocking step a round, so the other clients' channels keep moving and the keepalive keeps
    // watching the server meanwhile (a blocking open stopped this whole loop for up to
    // channel_timeout_s while the server was frozen).
    void start_command(Peer & p, const std::string & command, std::string & failure) {
        try {
            p.task = std::make_unique<ChannelTask>(session_, command, label_, options_.channel_timeout_s,
                                                   ChannelTask::Start::Deferred);
        } catch (const ChannelSetupFailed & e) {
            setup_failed(p, e);
        } catch (const Error & e) {
            setup_error(p, e, failure);
        }
    }

    void advance_start(Peer & p, std::string & failure) {
        try {
            p.task->start_step();
        } catch (const ChannelSetupFailed & e) {
            p.task.reset();
            setup_failed(p, e);
        } catch (const Error & e) {
            p.task.reset();
            setup_error(p, e, failure);
        }
    }

    // A channel that cannot be set up makes this master drain: the session's channel table is no
    // longer trusted, so the socket is unlinked (the next request starts a fresh master), the
    // requests in flight finish, and then this master exits.
    void setup_failed(Peer & p, const ChannelSetupFailed & e) {
        append_frame(p.out, e.may_have_started ? 'F' : 'N', std::string(common::kind_name(e.kind())) + "\t" + e.message());
        p.finished = true;
        start_draining(e.message());
    }

    void start_draining(const std::string & why) {
        if (draining_) return;
        common::log::warn("control master: ", why, "; draining and exiting");
        unlink_if_ours(path_, mine_);
        draining_ = true;
    }

    void setup_error(Peer & p, const Error & e, std::string & failure) {
        if (!ssh_is_connected(session_)) {
            failure = e.message();  // every peer is told in fail_all, after the socket is gone
        } else {
            append_frame(p.out, 'F', std::string(common::kind_name(e.kind())) + "\t" + e.message());
            p.finished = true;
        }
    }

    // Back-pressure: a client with more than this much output not yet taken is behind, and its
    // channel is not read until it catches up.
    static bool behind(const Peer & p) { return p.out.size() - p.out_off > (4u << 20); }

    // Channel output to the client's frames, and the exit status once the command is done.
    static void pump(Peer & p, std::string & failure) {
        try {
            size_t budget = behind(p) ? 0 : (1u << 20);
            p.task->pump([&](std::string_view d) { append_frame(p.out, 'O', d); },
                         [&](std::string_view d) { append_frame(p.out, 'E', d); }, budget);
            if (p.task->done()) {
                int status = p.task->finish();
                if (!p.task->signal_name().empty()) append_frame(p.out, 'K', p.task->signal_name());
                append_frame(p.out, 'X', std::to_string(status));
                p.task.reset();
                p.finished = true;
            }
        } catch (const Error & e) {
            failure = e.message();
        }
    }

    void flush(Peer & p) {
        ssize_t w = ::send(p.fd, p.out.data() + p.out_off, p.out.size() - p.out_off, MSG_NOSIGNAL);
        if (w > 0) p.out_off += static_cast<size_t>(w);
        else if (w < 0 && errno != EAGAIN && errno != EINTR) drop(p);
        if (p.out_off == p.out.size()) {
            p.out.clear();
            p.out_off = 0;
        }
    }

    // The connection is gone: unreachable first, so a request that sees this failure and retries
    // starts a new master; then every client is told (one whose command never got a channel is
    // told so: it may try a new master) and closed.
    void fail_all(const std::string & failure) {
        common::log::warn("control master: ", failure, "; exiting");
        unlink_if_ours(path_, mine_);
        for (auto & p : peers_) {
            if (!p.finished) append_frame(p.out, p.task && p.task->exec_sent() ? 'F' : 'N', std::string("network\t") + failure);
            int flags = ::fcntl(p.fd, F_GETFL);
            ::fcntl(p.fd, F_SETFL, flags & ~O_NONBLOCK);
            if (p.out.size() > p.out_off) (void)!::send(p.fd, p.out.data() + p.out_off, p.out.size() - p.out_off, MSG_NOSIGNAL);
            ::close(p.fd);
        }
    }

    void drop_finished() {
        for (auto it = peers_.begin(); it != peers_.end();) {
            if (it->finished && it->out.size() == it->out_off) {
                ::close(it->fd);
                it = peers_.erase(it);
            } else {
                ++it;
            }
        }
    }

    Connection & conn_;
    const int listen_fd_;
    const int persist_s_;
    const ConnectOptions & options_;
    const std::string & path_;
    const struct stat & mine_;
    ssh_session session_;
    const std::string label_;
    std::list<Peer> peers_;
    bool draining_ = false;
};

void serve(Connection & conn, int listen_fd, int persist_s, const ConnectOptions & options, const std::string & path,
           const struct stat & mine) {
    Master(conn, listen_fd, persist_s, options, path, mine).serve();
}

int bind_socket(const std::string & path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    ::unlink(path.c_str());
    if (::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 || ::chmod(path.c_str(), 0600) != 0 ||
        ::listen(fd, 64) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// The master is forked from the invocation that needed it, so without this it would show that
// invocation's argv in ps (an `--env TOKEN=...` included) for as long as it idles. Rewrites the
// argument area in place (what /proc/self/cmdline reads) with a fixed title.
void replace_command_line(const std::string & title) {
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::string current((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    char * area = program_invocation_name;  // glibc: argv[0], the start of the argument area
    if (current.empty() || !area || std::memcmp(area, current.data(), current.size()) != 0) return;
    std::memset(area, 0, current.size());
    std::memcpy(area, title.data(), std::min(title.size(), current.size() - 1));
}

// Closes every descriptor above stderr except `keep`.
void close_descriptors_except(int keep) {
    if (::close_range(3, static_cast<unsigned>(keep) - 1, 0) == 0 && ::close_range(static_cast<unsigned>(keep) + 1, ~0U, 0) == 0)
        return;
    // A kernel before 5.9: one by one.
    const long max = std::min(::sysconf(_SC_OPEN_MAX), 1L << 16);
    for (int fd = 3; fd < max; ++fd)
        if (fd != keep) ::close(fd);
}

// Runs in the daemonised grandchild: connect, listen, report on `ready_fd`, serve, clean up.
[[noreturn]] void master_main(const Endpoint & endpoint, const ConnectOptions & options, const std::string & path,
                              int persist_s, int ready_fd) {
    ::signal(SIGPIPE, SIG_IGN);
    ::signal(SIGINT, SIG_IGN);   // the terminal's Ctrl-C is for the invocation that started us
    ::signal(SIGHUP, SIG_IGN);
    ::signal(SIGTERM, SIG_DFL);  // the program's flag-setting handler was inherited through fork
    replace_command_line("bifrost control-master " + endpoint.label());
    std::unique_ptr<Connection> conn;
    try {
        conn = Connection::open(endpoint, options);
    } catch (const Error & e) {
        std::string msg = std::string(common::kind_name(e.kind())) + "\t" + e.message();
        (void)!::write(ready_fd, msg.data(), msg.size());
        ::_exit(1);
    } catch (const std::exception & e) {
        std::string msg = std::string("internal\t") + e.what();
        (void)!::write(ready_fd, msg.data(), msg.size());
        ::_exit(1);
    }
    int listen_fd = bind_socket(path);
    if (listen_fd < 0) {
        std::string msg = "internal\tcannot listen on control socket " + path + ": " + std::strerror(errno);
        (void)!::write(ready_fd, msg.data(), msg.size());
        ::_exit(1);
    }
    struct stat mine {};
    ::stat(path.c_str(), &mine);
    // The master's own log (connection loss, failures) lives beside its socket. Set up before the
    // master reports ready, so whoever started it finds it writing there (mux_test looks for it so).
    int devnull = ::open("/dev/null", O_RDWR);
    int log_fd = ::open((path.substr(0, path.size() - 5) + ".log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ::dup2(devnull, 0);
    ::dup2(devnull, 1);
    ::dup2(log_fd >= 0 ? log_fd : devnull, 2);
    (void)!::write(ready_fd, "ok", 2);
    ::close(ready_fd);
    try {
        serve(*conn, listen_fd, persist_s, options, path, mine);
    } catch (...) {
    }
    // Only remove the socket if it is still ours (a newer master may have replaced it).
    unlink_if_ours(path, mine);
    ::close(listen_fd);
    conn.reset();
    ::_exit(0);
}

}  // namespace

std::string control_dir() {
    const char * xdg = std::getenv("XDG_RUNTIME_DIR");
    std::string dir = xdg && *xdg ? std::string(xdg) + "/bifrost" : "/tmp/bifrost-" + std::to_string(::geteuid());
    ::mkdir(dir.c_str(), 0700);
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
        throw Error::usage("control directory " + dir + " is not a 0700 directory owned by you; remove it or set XDG_RUNTIME_DIR");
    return dir;
}

std::string control_socket_path(const Endpoint & endpoint, const ConnectOptions & options) {
    std::string key = endpoint.label() + "\n" + options.key_path + "\n" + endpoint.key_path + "\n" +
                      (options.known_hosts_path.empty() ? default_known_hosts_path() : options.known_hosts_path);
    // The route is part of a connection's identity: one private address behind two bastions is two machines.
    for (const auto & hop : options.jump) key += "\njump " + hop.label() + " " + hop.key_path;
    return control_dir() + "/" + sha256_hex(key).substr(0, 20) + ".sock";
}

std::unique_ptr<Transport> connect_via_control(const Endpoint & endpoint_in, const ConnectOptions & options, int persist_s) {
    Endpoint endpoint = endpoint_in;
    if (endpoint.user.empty()) {
        const char * u = std::getenv("USER");
        endpoint.user = u && *u ? u : "root";
    }
    const std::string path = control_socket_path(endpoint, options);
    auto make = [&]() { return std::make_unique<MuxTransport>(path, endpoint.label()); };
    if (int fd = connect_socket(path); fd >= 0) {
        ::close(fd);
        return make();
    }
    // Serialise master start-up per socket: a second invocation waits, then finds the socket.
    common::FileLock startup_lock(path + ".lock");
    if (int fd = connect_socket(path); fd >= 0) {
        ::close(fd);
        return make();
    }
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) throw Error::io("pipe", "create", errno);
    pid_t child = ::fork();
    if (child < 0) throw Error::io("fork", "start control master", errno);
    if (child == 0) {
        // The master outlives this call and must hold nothing of the process it came from: that
        // process may run other threads, and every descriptor they had open would live on in the
        // master. One of them waiting to start a master has the start-up lock file open; once it
        // took the lock through that descriptor and closed it, the master's copy kept the lock
        // held, and every later start-up for this target waited until the master exited.
        // This call's own lock goes too.
        close_descriptors_except(pipefd[1]);
        ::setsid();
        pid_t grandchild = ::fork();
        if (grandchild != 0) ::_exit(grandchild < 0 ? 1 : 0);
        master_main(endpoint, options, path, persist_s, pipefd[1]);
    }
    ::close(pipefd[1]);
    int status = 0;
    ::waitpid(child, &status, 0);
    std::string reply;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(pipefd[0], buf, sizeof buf);
        if (n > 0) {
            reply.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    ::close(pipefd[0]);
    if (reply == "ok") return make();
    if (reply.empty()) throw Error::internal("control master for " + endpoint.label() + " exited without a word");
    auto tab = reply.find('\t');
    throw Error(kind_from_name(reply.substr(0, tab)), reply.substr(tab + 1)).with("host", endpoint.label());
}

}  // namespace bifrost
