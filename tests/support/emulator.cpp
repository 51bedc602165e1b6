#include "tests/support/emulator.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/error.h"
#include "tests/support/temp_dir.h"

#ifndef TOOLKIT_SOURCE_DIR
#error "TOOLKIT_SOURCE_DIR must be defined (tests/CMakeLists.txt sets it on toolkit_test_support)"
#endif

namespace tests {

namespace {

std::string slurp(const std::string & path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

// Closes the fd on scope exit.
struct Fd {
    int fd;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

// TOOLKIT_PYTHON if set; else Debian's /usr/bin/python3 (what scripts/setup.sh installs; a pyenv
// shim earlier in PATH costs ~1 s per start); else python3 from PATH.
std::string python_interpreter() {
    if (const char * env = std::getenv("TOOLKIT_PYTHON"); env && *env) return env;
    if (::access("/usr/bin/python3", X_OK) == 0) return "/usr/bin/python3";
    return "python3";
}

}  // namespace

Emulator::Emulator(std::string provider, EmulatorOptions options)
    : provider_(std::move(provider)), dir_(std::make_unique<TempDir>("toolkit-emulator")) {
    const std::string port_file = *dir_ / "port";
    std::vector<std::string> argv = {python_interpreter(),
                                     std::string(TOOLKIT_SOURCE_DIR) + "/tests/emulators/emulator.py",
                                     "--provider", provider_, "--port-file", port_file,
                                     "--latency-ms", std::to_string(options.latency_ms),
                                     "--seed", std::to_string(options.seed)};
    if (!options.api_key.empty()) {
        argv.push_back("--api-key");
        argv.push_back(options.api_key);
    }
    common::ChildProcess::Options child_options;
    child_options.stdout_path = *dir_ / "stdout.log";
    child_options.stderr_path = *dir_ / "stderr.log";
    process_ = common::ChildProcess::spawn(argv, child_options);

    const auto deadline = std::chrono::steady_clock::now() + options.start_timeout;
    while (true) {
        std::ifstream in(port_file);
        if (in && (in >> port_) && port_ > 0) break;
        if (!process_.running() || std::chrono::steady_clock::now() >= deadline) {
            bool exited = !process_.running();
            process_.stop();
            throw common::Error(common::ErrorKind::Internal,
                                "emulator " + provider_ + (exited ? ": exited before listening" : ": not listening after " +
                                std::to_string(options.start_timeout.count()) + " ms") + "; its stderr:\n" + log_text())
                .with("log", *dir_ / "stderr.log");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

Emulator::~Emulator() { process_.stop(std::chrono::milliseconds(2000)); }

std::string Emulator::base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

std::string Emulator::log_text() const { return slurp(*dir_ / "stderr.log"); }

nlohmann::json Emulator::control(const std::string & method, const std::string & path, const nlohmann::json * body) {
    HttpReply reply = http_call(port_, method, path, body ? body->dump() : std::string(),
                                {{"Content-Type", "application/json"}});
    if (reply.status != 200)
        throw common::Error(common::ErrorKind::Internal, "emulator " + provider_ + ": " + method + " " + path +
                                                             ": HTTP " + std::to_string(reply.status) + ": " + reply.body);
    return reply.json();
}

nlohmann::json Emulator::state() { return control("GET", "/_emulator/state", nullptr); }

void Emulator::configure(const nlohmann::json & config) { control("POST", "/_emulator/config", &config); }

void Emulator::inject(const nlohmann::json & fault) {
    nlohmann::json body = fault.contains("faults") ? fault : nlohmann::json{{"faults", nlohmann::json::array({fault})}};
    control("POST", "/_emulator/faults", &body);
}

void Emulator::reset() {
    nlohmann::json empty = nlohmann::json::object();
    control("POST", "/_emulator/reset", &empty);
}

std::string HttpReply::header(const std::string & name) const {
    std::string want = lower(name);
    for (const auto & [k, v] : headers)
        if (k == want) return v;
    return {};
}

nlohmann::json HttpReply::json() const { return nlohmann::json::parse(body); }

HttpReply http_call(int port, const std::string & method, const std::string & target, const std::string & body,
                    const std::vector<std::pair<std::string, std::string>> & headers,
                    std::chrono::milliseconds timeout) {
    Fd sock{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (sock.fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(sock.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(sock.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(sock.fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0)
        throw std::runtime_error("connect 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno));

    std::string request = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                          "\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    for (const auto & [k, v] : headers) request += k + ": " + v + "\r\n";
    request += "\r\n" + body;
    for (size_t sent = 0; sent < request.size();) {
        ssize_t n = ::send(sock.fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw std::runtime_error(std::string("send: ") + std::strerror(errno));
        }
        sent += static_cast<size_t>(n);
    }

    std::string raw;
    char buf[16384];
    while (true) {
        ssize_t n = ::recv(sock.fd, buf, sizeof buf, 0);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == ECONNRESET && raw.empty()) break;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                throw std::runtime_error(method + " " + target + ": no answer within " + std::to_string(timeout.count()) + " ms");
            throw std::runtime_error(std::string("recv: ") + std::strerror(errno));
        }
        raw.append(buf, static_cast<size_t>(n));
    }
    if (raw.empty()) throw std::runtime_error(method + " " + target + ": connection closed without an answer");

    size_t head_end = raw.find("\r\n\r\n");
    if (head_end == std::string::npos) throw std::runtime_error(method + " " + target + ": truncated HTTP answer");
    HttpReply reply;
    std::istringstream head(raw.substr(0, head_end));
    std::string line;
    std::getline(head, line);
    // "HTTP/1.1 200 OK"
    size_t sp = line.find(' ');
    if (sp == std::string::npos) throw std::runtime_error("bad status line: " + line);
    reply.status = std::atoi(line.c_str() + sp + 1);
    while (std::getline(head, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        reply.headers.emplace_back(lower(line.substr(0, colon)), value);
    }
    reply.body = raw.substr(head_end + 4);
    return reply;
}

}  // namespace tests
