#include "common/sshd_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/error.h"

namespace common {

namespace fs = std::filesystem;

std::string read_text_file(const std::string & path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error::io(path, "open", errno ? errno : ENOENT);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void write_text_file(const std::string & path, const std::string & text, unsigned mode) {
    std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) throw Error::io(tmp, "create", errno);
        out << text;
        if (!out.flush()) throw Error::io(tmp, "write", errno);
    }
    ::chmod(tmp.c_str(), mode);
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw Error::io(path, "rename", errno);
}

int pick_free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) throw Error::internal(std::string("socket: ") + std::strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) != 0) {
        int e = errno;
        ::close(fd);
        throw Error::internal(std::string("bind 127.0.0.1:0: ") + std::strerror(e));
    }
    int port = ntohs(addr.sin_port);
    ::close(fd);
    return port;
}

std::string current_user() {
    passwd * pw = ::getpwuid(::geteuid());
    if (!pw) throw Error::internal("cannot find the current user in the password database");
    return pw->pw_name;
}

void generate_ed25519_key(const std::string & path, const std::string & comment) {
    ProcessResult r = run_process({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path});
    if (r.exit_code != 0)
        throw Error::internal("ssh-keygen failed for " + path + ": " + r.err);
}

SshdServer SshdServer::start(const SshdOptions & options) {
    SshdServer s;
    s.options_ = options;
    s.dir_ = fs::absolute(options.dir).string();
    fs::create_directories(s.dir_);
    ::chmod(s.dir_.c_str(), 0700);
    s.user_ = current_user();
    s.host_key_ = s.dir_ + "/host_ed25519";
    if (!fs::exists(s.host_key_)) generate_ed25519_key(s.host_key_, "toolkit-sshd-host");
    std::string authorized = options.authorized_key;
    if (authorized.empty()) {
        s.client_key_ = s.dir_ + "/client_ed25519";
        if (!fs::exists(s.client_key_)) generate_ed25519_key(s.client_key_, "toolkit-sshd-client");
        authorized = read_text_file(s.client_key_ + ".pub");
    }
    if (authorized.empty() || authorized.back() != '\n') authorized += '\n';
    write_text_file(s.dir_ + "/authorized_keys", authorized, 0600);
    if (options.port) {
        s.port_ = options.port;
        s.launch();
        return s;
    }
    // A port found free is closed again before sshd binds it, and in between another process may
    // take it (an outgoing connection's ephemeral port, a daemon started beside this one). sshd then
    // exits at once with "Address already in use": pick another port and start again.
    for (int attempt = 1;; ++attempt) {
        s.port_ = options.pick_port ? options.pick_port() : pick_free_port();
        try {
            s.launch();
            return s;
        } catch (const Error &) {
            if (attempt >= 5 || s.log_text().find("Address already in use") == std::string::npos) throw;
        }
    }
}

void SshdServer::launch() {
    if (::geteuid() == 0) {
        // A root sshd needs its privilege-separation directory; /run is tmpfs, so make it each time.
        ::mkdir("/run/sshd", 0755);
    }
    std::ostringstream cfg;
    // sshd keeps the first value it reads for a keyword, so the caller's lines go first and
    // override the defaults below (MaxSessions, ClientAliveInterval...).
    for (const auto & line : options_.extra_config) cfg << line << "\n";
    cfg << "ListenAddress 127.0.0.1\n"
        << "Port " << port_ << "\n"
        << "HostKey " << host_key_ << "\n"
        << "PidFile " << dir_ << "/sshd.pid\n"
        << "AuthorizedKeysFile " << dir_ << "/authorized_keys\n"
        << "PubkeyAuthentication yes\n"
        << "PasswordAuthentication no\n"
        << "KbdInteractiveAuthentication no\n"
        << "UsePAM no\n"
        << "StrictModes no\n"             // the per-run directory may sit under a 1777 /tmp
        << "PermitRootLogin prohibit-password\n"
        << "AllowUsers " << user_ << "\n"
        << "Subsystem sftp internal-sftp\n"
        << "MaxSessions 64\n"
        << "MaxStartups 64:30:128\n"
        << "ClientAliveInterval 15\n"
        << "LogLevel VERBOSE\n";
    std::string config_path = dir_ + "/sshd_config";
    write_text_file(config_path, cfg.str(), 0600);

    // Truncate the log so readiness is judged on this launch only.
    write_text_file(log_path(), "", 0600);
    ChildProcess::Options po;
    po.stderr_path = log_path();
    process_ = ChildProcess::spawn({"/usr/sbin/sshd", "-D", "-e", "-f", config_path}, po);

    const std::string ready = "Server listening on 127.0.0.1 port " + std::to_string(port_);
    auto end = std::chrono::steady_clock::now() + options_.ready_timeout;
    while (std::chrono::steady_clock::now() < end) {
        if (log_text().find(ready) != std::string::npos) return;
        if (auto code = process_.wait_for(std::chrono::milliseconds(0)))
            throw Error(ErrorKind::Internal, "sshd on 127.0.0.1:" + std::to_string(port_) + " exited with code " +
                                                 std::to_string(*code) + " before listening; log " + log_path() +
                                                 ":\n" + log_text());
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    process_.stop();
    throw Error(ErrorKind::Timeout, "sshd on 127.0.0.1:" + std::to_string(port_) + " not listening after " +
                                        std::to_string(options_.ready_timeout.count()) + " ms; log " + log_path() +
                                        ":\n" + log_text());
}

std::string SshdServer::host_public_key() const { return read_text_file(host_key_ + ".pub"); }

std::string SshdServer::log_text() const {
    std::ifstream in(log_path(), std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void SshdServer::restart() {
    process_.stop();
    launch();
}

void SshdServer::rotate_host_key() {
    fs::remove(host_key_);
    fs::remove(host_key_ + ".pub");
    generate_ed25519_key(host_key_, "toolkit-sshd-host");
}

}  // namespace common
