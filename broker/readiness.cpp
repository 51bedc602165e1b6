#include "broker/readiness.h"

#include <arpa/inet.h>
#include <libssh/libssh.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
#include "common/program.h"

namespace broker {

std::string_view stage_name(ReadyStage s) {
    switch (s) {
    case ReadyStage::Provider: return "provider";
    case ReadyStage::Tcp: return "tcp";
    case ReadyStage::Banner: return "ssh-banner";
    case ReadyStage::Auth: return "ssh-auth";
    case ReadyStage::Exec: return "exec";
    case ReadyStage::Gpu: return "gpu-check";
    case ReadyStage::Ready: return "ready";
    }
    return "?";
}

namespace {

int ms_of(common::Duration d) {
    return static_cast<int>(std::max<long long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(d).count()));
}

// Connects with a timeout; returns the socket or -1 (errno-ish text in `why`).
int tcp_connect(const std::string & host, int port, common::Duration timeout, std::string & why) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo * res = nullptr;
    int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (rc != 0) {
        why = std::string("cannot resolve: ") + gai_strerror(rc);
        return -1;
    }
    int fd = -1;
    for (addrinfo * a = res; a; a = a->ai_next) {
        fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
        if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        if (errno == EINPROGRESS) {
            pollfd p{fd, POLLOUT, 0};
            if (::poll(&p, 1, ms_of(timeout)) == 1) {
                int err = 0;
                socklen_t len = sizeof err;
                ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err == 0) break;
                why = std::strerror(err);
            } else {
                why = "connect timed out";
            }
        } else {
            why = std::strerror(errno);
        }
        ::close(fd);
        fd = -1;
    }
    ::freeaddrinfo(res);
    return fd;
}

bool read_banner(int fd, common::Duration timeout, std::string & banner) {
    banner.clear();
    auto until = std::chrono::steady_clock::now() + timeout;
    char buf[256];
    while (std::chrono::steady_clock::now() < until && banner.find('\n') == std::string::npos && banner.size() < 1024) {
        pollfd p{fd, POLLIN, 0};
        auto left = std::chrono::duration_cast<common::Duration>(until - std::chrono::steady_clock::now());
        if (::poll(&p, 1, ms_of(left)) != 1) break;
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        banner.append(buf, static_cast<size_t>(n));
    }
    while (!banner.empty() && (banner.back() == '\n' || banner.back() == '\r')) banner.pop_back();
    return banner.rfind("SSH-", 0) == 0;
}

struct SessionGuard {
    ssh_session s = nullptr;
    ~SessionGuard() {
        if (s) {
            ssh_disconnect(s);
            ssh_free(s);
        }
    }
};

// Connect + authenticate; returns an authenticated session or throws with the failing stage.
ssh_session ssh_open(const SshEndpoint & e, const std::string & key_path, common::Duration timeout, ReadyStage & stage) {
    stage = ReadyStage::Banner;
    ssh_session s = ssh_new();
    if (!s) throw common::Error::internal("ssh_new failed");
    long timeout_s = std::max<long>(1, static_cast<long>(std::ceil(common::to_seconds(timeout))));
    int port = e.port;
    int zero = 0;
    ssh_options_set(s, SSH_OPTIONS_HOST, e.host.c_str());
    ssh_options_set(s, SSH_OPTIONS_PORT, &port);
    ssh_options_set(s, SSH_OPTIONS_USER, e.user.c_str());
    ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &timeout_s);
    ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &zero);
    ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
    ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
    if (ssh_connect(s) != SSH_OK) {
        std::string why = ssh_get_error(s);
        ssh_free(s);
        throw common::Error(common::ErrorKind::Network, "ssh " + e.user + "@" + e.host + ":" + std::to_string(e.port) +
                                                            ": connect failed: " + why);
    }
    stage = ReadyStage::Auth;
    ssh_key key = nullptr;
    if (ssh_pki_import_privkey_file(key_path.c_str(), nullptr, nullptr, nullptr, &key) != SSH_OK) {
        ssh_disconnect(s);
        ssh_free(s);
        throw common::Error(common::ErrorKind::Usage, key_path + ": cannot read the SSH private key");
    }
    int rc = ssh_userauth_publickey(s, nullptr, key);
    ssh_key_free(key);
    if (rc != SSH_AUTH_SUCCESS) {
        std::string why = ssh_get_error(s);
        ssh_disconnect(s);
        ssh_free(s);
        throw common::Error(common::ErrorKind::Auth, "ssh " + e.user + "@" + e.host + ":" + std::to_string(e.port) +
                                                         ": key authentication refused" + (why.empty() ? "" : ": " + why));
    }
    return s;
}

SshRunResult exec_on(ssh_session s, const std::string & command, common::Duration timeout) {
    SshRunResult r;
    ssh_channel ch = ssh_channel_new(s);
    if (!ch || ssh_channel_open_session(ch) != SSH_OK || ssh_channel_request_exec(ch, command.c_str()) != SSH_OK) {
        std::string why = ssh_get_error(s);
        if (ch) ssh_channel_free(ch);
        throw common::Error(common::ErrorKind::Network, "ssh: cannot run a command: " + why);
    }
    auto until = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    // Read both streams as they come so a chatty command cannot fill the window and deadlock.
    while (std::chrono::steady_clock::now() < until) {
        int n = ssh_channel_read_timeout(ch, buf, sizeof buf, 0, 200);
        if (n > 0) r.out.append(buf, static_cast<size_t>(n));
        int m = ssh_channel_read_timeout(ch, buf, sizeof buf, 1, 0);
        if (m > 0) r.err.append(buf, static_cast<size_t>(m));
        if (n == SSH_ERROR || m == SSH_ERROR) break;
        if (ssh_channel_is_eof(ch) && n <= 0 && m <= 0) break;
    }
    ssh_channel_send_eof(ch);
    r.exit_code = ssh_channel_get_exit_status(ch);
    ssh_channel_close(ch);
    ssh_channel_free(ch);
    return r;
}

}  // namespace

SshRunResult ssh_run(const SshEndpoint & e, const std::string & key_path, const std::string & command,
                     common::Duration timeout) {
    ReadyStage stage;
    SessionGuard g;
    g.s = ssh_open(e, key_path, timeout, stage);
    return exec_on(g.s, command, timeout);
}

std::string check_gpu_report(const std::string & out, int expect_count, double expect_vram_gb) {
    std::istringstream in(out);
    std::string line;
    std::vector<double> mib;
    while (std::getline(in, line)) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        try {
            mib.push_back(std::stod(line));
        } catch (...) {
            return "unexpected nvidia-smi output: " + line;
        }
    }
    if (static_cast<int>(mib.size()) != expect_count)
        return "expected " + std::to_string(expect_count) + " GPU(s), nvidia-smi shows " + std::to_string(mib.size());
    for (double m : mib) {
        double gb = m * 1048576.0 / 1e9;
        if (expect_vram_gb > 0 && gb < expect_vram_gb * 0.9) {
            std::ostringstream s;
            s << "expected " << expect_vram_gb << " GB per GPU, nvidia-smi shows " << std::round(gb) << " GB";
            return s.str();
        }
    }
    return "";
}

Instance wait_ready(Provider & provider, std::string_view id, const ReadyOptions & o) {
    common::Deadline deadline(*o.clock, o.budget);
    const std::string subject = std::string(provider.name()) + ":" + std::string(id);
    ReadyStage stage = ReadyStage::Provider;
    std::string last_problem = "no answer yet";
    std::string auth_refused;  // sticky: a late key install may fix it, so it only decides the final error
    auto report = [&](ReadyStage s, const std::string & detail) {
        if (o.on_stage) o.on_stage(s, detail);
    };
    auto fail_timeout = [&]() -> common::Error {
        return common::Error(common::ErrorKind::Timeout,
                             subject + ": not ready after " + common::format_duration(common::to_seconds(o.budget)) +
                                 ": stuck at stage " + std::string(stage_name(stage)) + ": " + last_problem)
            .with("provider", std::string(provider.name()))
            .with("instance", std::string(id))
            .with("stage", std::string(stage_name(stage)));
    };
    report(ReadyStage::Provider, "waiting for the provider to report it running");
    while (true) {
        common::throw_if_interrupted();
        stage = ReadyStage::Provider;
        std::optional<Instance> inst;
        bool answered = false;
        try {
            inst = provider.get(id);
            answered = true;
        } catch (const common::Error & e) {
            // A flaky status call is not a reason to give up on a machine we pay for.
            if (e.kind() != common::ErrorKind::Network) throw;
            last_problem = e.message();
        }
        if (inst) {
            switch (inst->status) {
            case InstanceStatus::Failed:
            case InstanceStatus::Terminated:
            case InstanceStatus::Terminating:
            case InstanceStatus::Stopped:
            case InstanceStatus::Stopping:
                throw common::Error(common::ErrorKind::RemoteFailed,
                                    subject + ": entered status " + inst->status_raw + " while booting" +
                                        (inst->status_detail.empty() ? "" : ": " + inst->status_detail))
                    .with("provider", std::string(provider.name()))
                    .with("instance", std::string(id));
            default: break;
            }
            if (inst->status != InstanceStatus::Running) {
                last_problem = "status " + inst->status_raw +
                               (inst->status_detail.empty() ? "" : " (" + inst->status_detail + ")");
            } else if (!inst->ssh) {
                last_problem = "running but no public SSH endpoint yet";
            } else {
                const SshEndpoint & e = *inst->ssh;
                const std::string where = e.user + "@" + e.host + ":" + std::to_string(e.port);
                auto attempt_timeout = std::min(o.ssh_timeout, deadline.remaining());
                stage = ReadyStage::Tcp;
                report(stage, where);
                std::string why;
                int fd = tcp_connect(e.host, e.port, attempt_timeout, why);
                if (fd < 0) {
                    last_problem = where + ": " + why;
                } else {
                    stage = ReadyStage::Banner;
                    report(stage, where);
                    std::string banner;
                    bool ok = read_banner(fd, attempt_timeout, banner);
                    ::close(fd);
                    if (!ok) {
                        last_problem = where + ": no SSH banner" + (banner.empty() ? "" : " (got '" + banner.substr(0, 40) + "')");
                    } else {
                        try {
                            SessionGuard g;
                            stage = ReadyStage::Auth;
                            report(stage, where);
                            ReadyStage inner;
                            g.s = ssh_open(e, o.private_key_path, attempt_timeout, inner);
                            stage = ReadyStage::Exec;
                            report(stage, where);
                            auto r = exec_on(g.s, "true", attempt_timeout);
                            if (r.exit_code != 0) {
                                last_problem = "`true` exited " + std::to_string(r.exit_code);
                            } else if (o.expect_gpu_count) {
                                stage = ReadyStage::Gpu;
                                report(stage, where);
                                auto g2 = exec_on(g.s, "nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits",
                                                  attempt_timeout);
                                std::string problem =
                                    g2.exit_code != 0
                                        ? "nvidia-smi failed (exit " + std::to_string(g2.exit_code) + "): " + g2.err.substr(0, 200)
                                        : check_gpu_report(g2.out, *o.expect_gpu_count, o.expect_vram_gb_per_gpu);
                                if (!problem.empty())
                                    throw common::Error(common::ErrorKind::RemoteFailed, subject + ": GPU check failed: " + problem)
                                        .with("provider", std::string(provider.name()))
                                        .with("instance", std::string(id));
                                report(ReadyStage::Ready, where);
                                return *inst;
                            } else {
                                report(ReadyStage::Ready, where);
                                return *inst;
                            }
                        } catch (const common::Error & err) {
                            if (err.kind() == common::ErrorKind::RemoteFailed || err.kind() == common::ErrorKind::Usage) throw;
                            // Keys are sometimes installed after sshd starts (Vast): keep trying until the deadline.
                            last_problem = err.message();
                            if (err.kind() == common::ErrorKind::Auth) auth_refused = err.message();
                        }
                    }
                }
            }
        } else if (answered) {
            throw common::Error::not_found(subject, "the provider no longer lists it").with("provider", std::string(provider.name()));
        }
        if (!deadline.sleep(o.poll_interval)) {
            if (!auth_refused.empty())
                throw common::Error(common::ErrorKind::Auth, subject + ": SSH key authentication kept failing until the deadline: " + auth_refused)
                    .with("provider", std::string(provider.name()))
                    .with("instance", std::string(id));
            throw fail_timeout();
        }
    }
}

}  // namespace broker
