#include "broker/readiness.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <sstream>

#include "bifrost/connection.h"
#include "common/error.h"
#include "common/log.h"
#include "common/program.h"
#include "common/progress.h"

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

// Every SSH connection broker makes goes through bifrost's client (bifrost/connection.h): one
// attempt, bounded by `timeout` for the connection, each channel round trip and the command itself.
// No known-hosts file is read or written (pin_host_key = false): a freshly rented machine has a new
// host key, and providers hand the same address to the next renter.
std::unique_ptr<bifrost::Connection> open_ssh(const SshEndpoint & e, const std::string & key_path,
                                                 common::Duration timeout) {
    // bifrost would fall back to ssh-agent and ~/.ssh/id_* without a key, and retries a key it cannot
    // read like a refused one; broker always names its key, and a missing one is the caller's mistake.
    if (key_path.empty() || ::access(key_path.c_str(), R_OK) != 0)
        throw common::Error(common::ErrorKind::Usage, key_path + ": cannot read the SSH private key");
    const double seconds = std::max(1.0, std::ceil(common::to_seconds(timeout)));
    bifrost::ConnectOptions o;
    o.key_path = key_path;
    o.connect_timeout_s = seconds;
    o.channel_timeout_s = seconds;
    o.command_timeout_s = seconds;
    o.retry_deadline_s = 0;  // one attempt: callers decide whether to try again
    o.compression = false;   // short commands with little output
    o.pin_host_key = false;
    for (const auto & hop : e.jump) {
        // A hop without its own key uses the endpoint's, and every key is checked here like that one.
        const std::string & hop_key = hop.key_path.empty() ? key_path : hop.key_path;
        if (::access(hop_key.c_str(), R_OK) != 0)
            throw common::Error(common::ErrorKind::Usage, hop_key + ": cannot read the SSH private key of jump host " +
                                                              hop.user + "@" + hop.host + ":" + std::to_string(hop.port));
        o.jump.push_back(bifrost::JumpHost{hop.user, hop.host, hop.port, hop_key});
    }
    return bifrost::Connection::open(bifrost::Endpoint{e.user, e.host, e.port, key_path}, o);
}

// broker's remote commands print a few lines (nvidia-smi, squeue, a job table); a host that
// streams without end must not grow this process until it is killed. Throwing from the callback
// leaves the command unfinished: the connection is dropped with it (one per ssh_run).
constexpr size_t kMaxAnswerBytes = 16u << 20;

SshRunResult run_on(bifrost::Connection & c, const std::string & label, const std::string & command) {
    SshRunResult r;
    bifrost::RemoteCommand rc;
    rc.command = command;
    auto append_bounded = [&label](std::string & to, std::string_view d, const char * stream) {
        if (to.size() + d.size() > kMaxAnswerBytes)
            throw common::Error(common::ErrorKind::Network,
                                label + ": a remote command wrote more than " +
                                    common::format_bytes(static_cast<double>(kMaxAnswerBytes)) + " to " + stream +
                                    "; refused (broker's commands print a few lines: a broken or hostile host)")
                .with("host", label);
        to.append(d);
    };
    rc.on_stdout = [&](std::string_view d) { append_bounded(r.out, d, "stdout"); };
    rc.on_stderr = [&](std::string_view d) { append_bounded(r.err, d, "stderr"); };
    r.exit_code = c.run(rc);
    return r;
}

}  // namespace

SshRunResult ssh_run(const SshEndpoint & e, const std::string & key_path, const std::string & command,
                     common::Duration timeout) {
    auto c = open_ssh(e, key_path, timeout);
    return run_on(*c, e.user + "@" + e.host + ":" + std::to_string(e.port), command);
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
                // Behind jump hosts the endpoint is not reachable from here: authentication through
                // them is the first check.
                const bool direct = e.jump.empty();
                int fd = direct ? tcp_connect(e.host, e.port, attempt_timeout, why) : -1;
                if (direct && fd < 0) {
                    last_problem = where + ": " + why;
                } else {
                    std::string banner;
                    bool ok = true;
                    if (direct) {
                        stage = ReadyStage::Banner;
                        report(stage, where);
                        ok = read_banner(fd, attempt_timeout, banner);
                        ::close(fd);
                    }
                    if (!ok) {
                        last_problem = where + ": no SSH banner" + (banner.empty() ? "" : " (got '" + banner.substr(0, 40) + "')");
                    } else {
                        try {
                            stage = ReadyStage::Auth;
                            report(stage, where);
                            auto c = open_ssh(e, o.private_key_path, attempt_timeout);
                            stage = ReadyStage::Exec;
                            report(stage, where);
                            auto r = run_on(*c, where, "true");
                            if (r.exit_code != 0) {
                                last_problem = "`true` exited " + std::to_string(r.exit_code);
                            } else if (o.expect_gpu_count) {
                                stage = ReadyStage::Gpu;
                                report(stage, where);
                                std::string problem;
                                try {
                                    auto g = run_on(*c, where, "nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits");
                                    problem = g.exit_code != 0 ? "nvidia-smi failed (exit " + std::to_string(g.exit_code) +
                                                                     "): " + g.err.substr(0, 200)
                                                               : check_gpu_report(g.out, *o.expect_gpu_count, o.expect_vram_gb_per_gpu);
                                } catch (const common::Error & err) {
                                    // A hung nvidia-smi is a broken machine, not one still booting.
                                    if (err.kind() != common::ErrorKind::Timeout) throw;
                                    problem = "nvidia-smi failed: " + err.message();
                                }
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
