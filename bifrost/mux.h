// Connection reuse across CLI invocations, like OpenSSH's ControlMaster: the first invocation for a
// target forks a background master that holds the authenticated libssh session and listens on a
// unix socket in a 0700 runtime directory; later invocations send their remote command over the
// socket and get stdout/stderr and the exit status back. The master serves many requests at once
// (one channel each) and exits after `persist_s` idle seconds or when the SSH connection dies.
#pragma once

#include <memory>
#include <string>

#include "bifrost/connection.h"

namespace bifrost {

// $XDG_RUNTIME_DIR/bifrost, else /tmp/bifrost-<uid>; created 0700 and refused if another user owns it.
std::string control_dir();
std::string control_socket_path(const Endpoint & endpoint, const ConnectOptions & options);

// A transport through the control socket, starting the master first when none is listening.
// Connection errors of a new master (auth, host key, unreachable) are rethrown here with their kind.
std::unique_ptr<Transport> connect_via_control(const Endpoint & endpoint, const ConnectOptions & options, int persist_s);

}  // namespace bifrost
