#include "tests/support/sshd_fixture.h"

#include <libssh/libssh.h>

#include <memory>
#include <stdexcept>

namespace tests {

SshdFixture::SshdFixture(std::vector<std::string> extra_config) : dir_("toolkit-sshd") {
    common::SshdOptions options;
    options.dir = dir_.path() + "/sshd";
    options.extra_config = std::move(extra_config);
    server_ = common::SshdServer::start(options);
}

std::string SshdFixture::target() const { return user() + "@" + host() + ":" + std::to_string(port()); }

SshExecResult ssh_exec(const SshdFixture & fixture, const std::string & command) {
    std::unique_ptr<ssh_session_struct, void (*)(ssh_session)> session(ssh_new(), ssh_free);
    if (!session) throw std::runtime_error("ssh_new failed");
    ssh_session s = session.get();
    int port = fixture.port();
    int no = 0;
    long timeout_s = 10;
    ssh_options_set(s, SSH_OPTIONS_HOST, fixture.host().c_str());
    ssh_options_set(s, SSH_OPTIONS_PORT, &port);
    ssh_options_set(s, SSH_OPTIONS_USER, fixture.user().c_str());
    ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no);  // never read ~/.ssh/config in tests
    ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
    ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &timeout_s);
    if (ssh_connect(s) != SSH_OK) throw std::runtime_error(std::string("ssh_connect: ") + ssh_get_error(s));

    // Pin: the server must present exactly the fixture's host key.
    ssh_key server_key = nullptr, expected = nullptr;
    if (ssh_get_server_publickey(s, &server_key) != SSH_OK) throw std::runtime_error("no server key");
    std::string pub_path = fixture.server().host_key_path() + ".pub";
    if (ssh_pki_import_pubkey_file(pub_path.c_str(), &expected) != SSH_OK) throw std::runtime_error("bad host pub");
    bool same = ssh_key_cmp(server_key, expected, SSH_KEY_CMP_PUBLIC) == 0;
    ssh_key_free(server_key);
    ssh_key_free(expected);
    if (!same) throw std::runtime_error("host key mismatch");

    ssh_key priv = nullptr;
    if (ssh_pki_import_privkey_file(fixture.client_key().c_str(), nullptr, nullptr, nullptr, &priv) != SSH_OK)
        throw std::runtime_error("cannot import client key");
    int auth = ssh_userauth_publickey(s, nullptr, priv);
    ssh_key_free(priv);
    if (auth != SSH_AUTH_SUCCESS) throw std::runtime_error(std::string("auth failed: ") + ssh_get_error(s));

    ssh_channel ch = ssh_channel_new(s);
    if (!ch || ssh_channel_open_session(ch) != SSH_OK || ssh_channel_request_exec(ch, command.c_str()) != SSH_OK)
        throw std::runtime_error(std::string("exec failed: ") + ssh_get_error(s));
    SshExecResult result;
    char buf[16384];
    // Read both streams until EOF; ssh_channel_poll tells which one has data so neither blocks.
    while (!ssh_channel_is_eof(ch)) {
        int got_any = 0;
        for (int is_stderr = 0; is_stderr <= 1; ++is_stderr) {
            int avail = ssh_channel_poll_timeout(ch, 50, is_stderr);
            if (avail > 0) {
                int n = ssh_channel_read(ch, buf, sizeof buf, is_stderr);
                if (n > 0) {
                    (is_stderr ? result.err : result.out).append(buf, static_cast<size_t>(n));
                    got_any = 1;
                }
            }
        }
        (void)got_any;
    }
    for (int is_stderr = 0; is_stderr <= 1; ++is_stderr) {
        int n;
        while ((n = ssh_channel_read_nonblocking(ch, buf, sizeof buf, is_stderr)) > 0)
            (is_stderr ? result.err : result.out).append(buf, static_cast<size_t>(n));
    }
    ssh_channel_send_eof(ch);
    result.exit_code = ssh_channel_get_exit_status(ch);
    ssh_channel_close(ch);
    ssh_channel_free(ch);
    ssh_disconnect(s);
    return result;
}

}  // namespace tests
