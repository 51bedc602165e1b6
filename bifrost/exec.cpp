// Client construction and `exec`: the user's command, cwd and environment travel inside the stdin
// prologue block (shell.h), so secrets never appear in the remote argv, ps or shell history — the
// SSH "env" request is not used because sshd's AcceptEnv refuses nearly every name by default.
#include <fstream>

#include "bifrost/bifrost.h"
#include "bifrost/client_impl.h"
#include "bifrost/shell.h"
#include "common/error.h"

namespace bifrost {

using common::Error;
using common::ErrorKind;

std::string Command::display() const {
    if (!shell.empty()) return shell;
    std::string out;
    for (const auto & w : argv) {
        if (!out.empty()) out += ' ';
        bool plain = !w.empty() && w.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./=:,+@%") == std::string::npos;
        out += plain ? w : sh_quote(w);
    }
    return out;
}

Client Client::connect(const Target & target, const ConnectOptions & options) {
    Endpoint endpoint = resolve_target(target);
    auto factory = [endpoint, options]() -> std::unique_ptr<Transport> { return Connection::open(endpoint, options); };
    return Client(factory(), factory);
}

Client::Client(std::unique_ptr<Transport> transport, std::function<std::unique_ptr<Transport>()> reconnect)
    : impl_(std::make_unique<Impl>()) {
    impl_->transport = std::move(transport);
    impl_->reconnect = std::move(reconnect);
}
Client::Client(Client &&) noexcept = default;
Client & Client::operator=(Client &&) noexcept = default;
Client::~Client() = default;

Transport & Client::transport() { return impl_->t(); }

void Client::set_reconnect_window(double seconds) { impl_->reconnect_window_s = seconds; }

Client::Impl::Captured Client::Impl::run_script(const std::string & script, const std::string & extra_stdin) {
    Prologue p = make_prologue(script);
    RemoteCommand rc;
    rc.command = p.command;
    rc.stdin_data = p.stdin_block + extra_stdin;
    Captured c;
    rc.on_stdout = [&](std::string_view d) { c.out.append(d); };
    rc.on_stderr = [&](std::string_view d) { c.err.append(d); };
    c.status = run(rc);
    return c;
}

std::string Client::Impl::run_script_ok(const std::string & script, const std::string & what) {
    Captured c = run_script(script);
    if (c.status != 0) {
        std::string err = c.err;
        while (!err.empty() && (err.back() == '\n' || err.back() == '\r')) err.pop_back();
        throw Error(ErrorKind::RemoteFailed, t().label() + ": " + what + " failed (exit " + std::to_string(c.status) +
                                                 ")" + (err.empty() ? "" : ": " + err))
            .with("host", t().label());
    }
    return c.out;
}

std::string Client::home() {
    if (impl_->home.empty()) {
        std::string out = impl_->idempotent("reading $HOME", [&] { return impl_->run_script_ok("printf '%s' \"$HOME\"", "reading $HOME"); });
        if (out.empty() || out.front() != '/')
            throw Error(ErrorKind::RemoteFailed, transport().label() + ": remote $HOME is not an absolute path: '" + out + "'");
        impl_->home = out;
    }
    return impl_->home;
}

namespace {

// Names from the container's first process that must not override the SSH session's own.
bool skip_container_var(const std::string & name) {
    for (const char * s : {"HOME", "PWD", "OLDPWD", "SHLVL", "_", "TERM", "USER", "LOGNAME", "SHELL", "MAIL", "SSH_CLIENT",
                           "SSH_CONNECTION", "SSH_TTY"})
        if (name == s) return true;
    return false;
}

}  // namespace

// The env block shared by exec and run_detached: container env first, then ours (ours wins).
std::string env_block(Client::Impl & impl, const ExecOptions & options) {
    std::string block;
    if (options.import_container_env) {
        auto c = impl.run_script("cat /proc/1/environ");
        if (c.status != 0)
            throw Error(ErrorKind::RemoteFailed, impl.t().label() + ": cannot read /proc/1/environ for --import-container-env: " + c.err);
        EnvList imported;
        size_t start = 0;
        while (start < c.out.size()) {
            size_t end = c.out.find('\0', start);
            if (end == std::string::npos) end = c.out.size();
            std::string entry = c.out.substr(start, end - start);
            start = end + 1;
            auto eq = entry.find('=');
            if (eq == std::string::npos) continue;
            std::string k = entry.substr(0, eq);
            if (!valid_env_name(k) || skip_container_var(k)) continue;
            imported.emplace_back(k, entry.substr(eq + 1));
        }
        block += export_lines(imported);
    }
    block += export_lines(options.env);
    return block;
}

int Client::exec(const Command & command, const ExecOptions & options, const StreamCallback & on_stdout,
                 const StreamCallback & on_stderr) {
    std::string script = env_block(*impl_, options);
    if (!options.cwd.empty())
        script += "cd -- " + remote_path_expr(options.cwd) +
                  " || { echo 'bifrost: --cwd: cannot change directory' >&2; exit 255; }\n";
    script += command_text(command) + "\n";
    Prologue p = make_prologue(script);
    RemoteCommand rc;
    rc.command = p.command;
    rc.stdin_data = p.stdin_block + options.stdin_data;
    rc.stdin_fd = options.stdin_fd;
    rc.on_stdout = on_stdout;
    rc.on_stderr = on_stderr;
    return impl_->run(rc);
}

std::pair<std::string, std::string> parse_env_assignment(const std::string & text) {
    auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0)
        throw Error::usage("--env '" + text.substr(0, text.find('=')) + "': expected KEY=VALUE");
    std::string k = text.substr(0, eq);
    if (!valid_env_name(k)) throw Error::usage("--env " + k + ": not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)");
    return {k, text.substr(eq + 1)};
}

EnvList read_env_file(const std::string & path) {
    std::ifstream in(path);
    if (!in) throw Error::not_found("env file " + path, "cannot open it");
    EnvList out;
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
        ++n;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        size_t s = line.find_first_not_of(" \t");
        if (s == std::string::npos || line[s] == '#') continue;
        line = line.substr(s);
        if (line.rfind("export ", 0) == 0) line = line.substr(7);
        auto eq = line.find('=');
        std::string k = eq == std::string::npos ? line : line.substr(0, eq);
        if (eq == std::string::npos || !valid_env_name(k))
            throw Error::usage(path + ":" + std::to_string(n) + ": expected KEY=VALUE with KEY a shell variable name");
        std::string v = line.substr(eq + 1);
        if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) v = v.substr(1, v.size() - 2);
        out.emplace_back(k, v);
    }
    return out;
}

}  // namespace bifrost
