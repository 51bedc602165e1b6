// Internal: the state behind bifrost::Client, shared by the verb files (exec.cpp, push.cpp, ...).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "bifrost/bifrost.h"
#include "common/error.h"

namespace bifrost {

struct Client::Impl {
    std::unique_ptr<Transport> transport;
    std::function<std::unique_ptr<Transport>()> reconnect;
    std::string home;

    Transport & t() {
        if (transport && !transport->usable() && reconnect) transport.reset();
        if (!transport) {
            if (!reconnect) throw common::Error(common::ErrorKind::Network, "connection lost and no way to reconnect");
            transport = reconnect();
        }
        return *transport;
    }
    // Runs a script through the prologue (stdin block), collecting stdout; stderr is collected too.
    struct Captured {
        int status = 0;
        std::string out;
        std::string err;
    };
    Captured run_script(const std::string & script, const std::string & extra_stdin = {});
    // Like run_script but throws Error(remote_failed) with the captured stderr when status != 0.
    std::string run_script_ok(const std::string & script, const std::string & what);
};

}  // namespace bifrost

namespace bifrost {
// The env export block shared by exec and run_detached (container env first, then ours).
std::string env_block(Client::Impl & impl, const ExecOptions & options);
}  // namespace bifrost
