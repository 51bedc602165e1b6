// Helpers shared by the verbs: client construction (direct or through the control master),
// env/command assembly, and the attached verbs' error convention (255, as ssh does).
#include <unistd.h>

#include <algorithm>
#include <iostream>

#include "bifrost/cli/commands.h"
#include "bifrost/mux.h"
#include "common/error.h"
#include "common/log.h"

namespace bifrost::cli {

Client make_client(const GlobalOptions & global, const std::string & target_text) {
    Target target = parse_target(target_text);
    Endpoint endpoint = resolve_target(target);
    ConnectOptions options;
    options.key_path = global.key_path;
    options.known_hosts_path = global.known_hosts_path;
    options.connect_timeout_s = global.connect_timeout_s;
    options.retry_deadline_s = global.wait_s;
    if (global.compress == "yes") options.compression = true;
    else if (global.compress == "no") options.compression = false;
    // A lost connection is re-made for as long as --wait allows (one quick retry at least): the
    // same patience the user gave the first connection.
    if (global.persist_s <= 0) {
        auto factory = [endpoint, options]() -> std::unique_ptr<Transport> { return Connection::open(endpoint, options); };
        Client client(factory(), factory);
        client.set_reconnect_window(global.wait_s);
        return client;
    }
    int persist = global.persist_s;
    auto factory = [endpoint, options, persist]() { return connect_via_control(endpoint, options, persist); };
    Client client(factory(), factory);
    client.set_reconnect_window(global.wait_s);
    return client;
}

ExecOptions make_exec_options(const std::vector<std::string> & env, const std::vector<std::string> & env_files,
                              const std::string & cwd, bool import_container_env) {
    ExecOptions o;
    // --env-file in order, then --env: later assignments win in the remote shell.
    for (const auto & f : env_files)
        for (auto & kv : read_env_file(f)) o.env.push_back(kv);
    for (const auto & e : env) o.env.push_back(parse_env_assignment(e));
    for (const auto & [k, v] : o.env) common::log::add_secret(v);
    o.cwd = cwd;
    o.import_container_env = import_container_env;
    return o;
}

Command make_command(const std::vector<std::string> & words, bool shell) {
    if (words.empty()) throw common::Error::usage("no remote command given; put it after --, e.g. bifrost exec HOST -- nvidia-smi");
    if (!shell) return Command::args(words);
    std::string line;
    for (const auto & w : words) line += (line.empty() ? "" : " ") + w;
    return Command::sh(line);
}

uint64_t follow_to_stdout(Client & client, const GlobalOptions & global, const std::string & target,
                          const std::string & name, uint64_t offset) {
    // A follow outlives connection drops (a sshd restart, a laptop's network change) for 3 minutes
    // of trying per outage, or --wait if longer.
    client.set_reconnect_window(std::max(global.wait_s, global.follow_window_s));
    uint64_t at = offset;
    try {
        return client.logs(name, offset, true, [&](std::string_view d) {
            at += d.size();  // counted as received: the resume offset is what the remote sent us
            while (!d.empty()) {
                ssize_t n = ::write(STDOUT_FILENO, d.data(), d.size());
                if (n <= 0) return;
                d.remove_prefix(static_cast<size_t>(n));
            }
        });
    } catch (const common::Error & e) {
        if (e.kind() == common::ErrorKind::Network || e.kind() == common::ErrorKind::Timeout)
            common::log::warn("stopped following job ", name, " (it keeps running); resume with: bifrost logs -f ", target,
                              " ", name, " --offset ", at);
        throw;
    }
}

int report_attached_error(const common::Error & error, bool json) {
    common::report_error(error, json);
    if (!json) std::cerr << common::log::program() << ": error kind: " << common::kind_name(error.kind()) << "\n";
    return 255;
}

nlohmann::json job_row(const JobInfo & j) {
    nlohmann::json row = {{"name", j.name},
                          {"state", j.state},
                          {"exit_code", j.exit_code ? nlohmann::json(*j.exit_code) : nlohmann::json(nullptr)},
                          {"pid", j.pid},
                          {"start_time_unix_s", j.start_time_unix_s},
                          {"end_time_unix_s", j.end_time_unix_s ? nlohmann::json(j.end_time_unix_s) : nlohmann::json(nullptr)},
                          {"log_bytes", j.log_bytes},
                          {"command", j.command}};
    row["status"] = j.state == "failed" ? "failed(" + std::to_string(*j.exit_code) + ")" : j.state;
    return row;
}

}  // namespace bifrost::cli
