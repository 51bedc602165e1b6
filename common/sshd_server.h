// A real OpenSSH sshd on 127.0.0.1 with its own generated host key, client key, authorized_keys,
// config and log, all inside one directory. Used by the `local` broker provider (an "instance" is
// one of these) and by the tests' SSH fixture. Works as root and as an ordinary user (then sshd
// can only log in that user, which is the user we authorise). Stopping it ends its sessions too.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/subprocess.h"

namespace common {

struct SshdOptions {
    std::string dir;                 // created if missing (mode 0700); everything lives here
    int port = 0;                    // 0: pick a free loopback port (another if sshd finds it taken)
    std::function<int()> pick_port;  // how port 0 picks; empty: pick_free_port (tests inject a taken one)
    std::string authorized_key;      // public key line to authorise; empty: generate a client key
    std::vector<std::string> extra_config;  // sshd_config lines that override the defaults (written first; no Match blocks)
    std::chrono::milliseconds ready_timeout{10000};
};

class SshdServer {
public:
    // Generates keys on first use of `dir` and reuses them after (so a restart keeps its identity).
    // Throws common::Error naming the sshd log when the server does not come up.
    static SshdServer start(const SshdOptions & options);

    SshdServer() = default;
    SshdServer(SshdServer &&) = default;
    SshdServer & operator=(SshdServer &&) = default;
    ~SshdServer() = default;  // ChildProcess stops the daemon and its sessions

    const std::string & host() const { return host_; }
    int port() const { return port_; }
    const std::string & user() const { return user_; }
    const std::string & dir() const { return dir_; }
    const std::string & client_key_path() const { return client_key_; }  // empty if authorized_key was given
    const std::string & host_key_path() const { return host_key_; }
    std::string host_public_key() const;  // "ssh-ed25519 AAAA..." (for pinning)
    std::string log_path() const { return dir_ + "/sshd.log"; }
    std::string log_text() const;
    pid_t pid() const { return process_.pid(); }

    bool running() { return process_.running(); }
    void stop() { process_.stop(); }
    void kill_hard() { process_.kill_hard(); }  // SIGKILL the daemon and every session at once
    // Starts again on the same port with the same keys.
    void restart();
    // Replaces the host key with a new one (next restart presents a different identity).
    void rotate_host_key();

private:
    void launch();

    SshdOptions options_;
    std::string host_ = "127.0.0.1";
    int port_ = 0;
    std::string user_;
    std::string dir_;
    std::string client_key_;
    std::string host_key_;
    ChildProcess process_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close).
int pick_free_port();
// The user this process runs as, from the password database.
std::string current_user();
// Generates an ed25519 key pair at path (and path.pub) with ssh-keygen; no passphrase.
void generate_ed25519_key(const std::string & path, const std::string & comment);
std::string read_text_file(const std::string & path);
void write_text_file(const std::string & path, const std::string & text, unsigned mode = 0600);

}  // namespace common
