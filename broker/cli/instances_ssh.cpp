// `broker instances ssh ID`: runs (execvp) or, with --print, prints the ssh command line.
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "broker/cli/verbs.h"

namespace broker::cli {

int run_instances_ssh(const GlobalOptions & g, const InstancesSshOptions & o, const common::Output & out) {
    auto broker = make_broker(g);
    InstanceRef ref = parse_instance_ref(o.ref, broker->ledger());
    auto inst = broker->provider(ref.provider).get(ref.id);
    if (!inst) throw common::Error::not_found(ref.provider + ":" + ref.id);
    if (!inst->ssh)
        throw common::Error(common::ErrorKind::NotFound,
                            ref.provider + ":" + ref.id + ": no SSH endpoint yet (status " + inst->status_raw + ")");
    // --ssh-key, else the provider's own key (ssh-hosts), else the key the instance was created with.
    std::string key = !o.ssh_key.empty() ? o.ssh_key : ssh_key_for(*inst, broker->ledger());
    if (o.print || out.json()) {
        out.object({{"ref", ref.provider + ":" + ref.id}, {"ssh_command", ssh_command(*inst, key)}});
        if (!out.json()) return 0;
        return 0;
    }
    std::string port = std::to_string(inst->ssh->port);
    std::string target = inst->ssh->user + "@" + inst->ssh->host;
    std::vector<const char *> argv = {"ssh", "-p", port.c_str(), "-i", key.c_str(), target.c_str(), nullptr};
    ::execvp("ssh", const_cast<char * const *>(argv.data()));
    throw common::Error(common::ErrorKind::NotFound, std::string("ssh: cannot run the ssh client: ") + std::strerror(errno));
}

}  // namespace broker::cli
