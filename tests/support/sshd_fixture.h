// The SSH test fixture: a real OpenSSH sshd on 127.0.0.1 (a free port), with generated host and
// client keys and its own authorized_keys, in a temporary directory. It works as root or not, and
// RAII stops the daemon and all of its sessions even when a test fails or throws.
//
//   tests::SshdFixture sshd;
//   auto r = tests::ssh_exec(sshd, "echo hi; exit 3");   // r.out == "hi\n", r.exit_code == 3
#pragma once

#include <string>

#include "common/sshd_server.h"
#include "tests/support/temp_dir.h"

namespace tests {

class SshdFixture {
public:
    explicit SshdFixture(std::vector<std::string> extra_config = {});
    common::SshdServer & server() { return server_; }
    const common::SshdServer & server() const { return server_; }
    const std::string & host() const { return server_.host(); }
    int port() const { return server_.port(); }
    const std::string & user() const { return server_.user(); }
    const std::string & client_key() const { return server_.client_key_path(); }
    std::string target() const;  // "user@127.0.0.1:port"
    const TempDir & dir() const { return dir_; }

private:
    TempDir dir_;
    common::SshdServer server_;
};

struct SshExecResult {
    int exit_code = -1;
    std::string out;
    std::string err;
};

// Minimal libssh client for fixture self-tests: connect, check the host key against the fixture's,
// authenticate with the client key, run `command`, collect stdout/stderr/exit status.
// (bifrost is the product client; this exists so the fixture is tested independently of it.)
SshExecResult ssh_exec(const SshdFixture & fixture, const std::string & command);

}  // namespace tests
