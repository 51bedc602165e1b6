// A rented (or leased) machine as every provider reports it, and what a create asks for.
// Statuses are normalised through each provider's table; the raw string is always kept.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "broker/offer.h"

namespace broker {

enum class InstanceStatus {
    Pending,      // accepted, booting, image pulling: keep waiting
    Running,      // the provider says it is up (not yet proof of SSH readiness)
    Stopping,
    Stopped,      // not running; storage may still bill
    Terminating,
    Terminated,   // gone: no longer bills
    Failed,       // the provider gave up on it: fail fast, then terminate
    Unknown,      // a status string we do not know; kept raw, treated as still billing
};
std::string_view status_name(InstanceStatus status);
// Terminated instances no longer bill; every other state (Unknown included) might.
inline bool may_bill(InstanceStatus s) { return s != InstanceStatus::Terminated; }

// A jump host (bastion) on the way to an SshEndpoint, as OpenSSH's ProxyJump.
struct SshHop {
    std::string host;
    int port = 22;
    std::string user;
    std::string key_path;  // empty: the endpoint's key
};

struct SshEndpoint {
    std::string host;
    int port = 22;
    std::string user;
    std::string key_path;  // set when the provider dictates the key (ssh-hosts inventory)
    // Jump hosts, first to last (a Slurm cluster's `jump:`); empty: connect directly. Copied into
    // bifrost::ConnectOptions::jump by whoever opens the connection (ssh_run here, deploy for sites).
    std::vector<SshHop> jump;
};

struct Instance {
    std::string provider;
    std::string id;
    std::string name;  // "<prefix>-<run_id>-<role>-dl<deadline_unix>" for instances we created
    InstanceStatus status = InstanceStatus::Unknown;
    std::string status_raw;
    std::string status_detail;  // provider message (Vast status_msg, Prime installation failure...)
    std::string gpu_model;
    int gpu_count = 0;
    double vram_gb_per_gpu = 0;
    std::optional<double> price_usd_per_hour;
    std::optional<SshEndpoint> ssh;
    std::optional<double> uptime_s;
    std::optional<double> created_unix;
};

// The toolkit's naming convention, so that list, sweep and --resume find our instances from the
// provider's own listing without local state.
inline constexpr std::string_view kNamePrefix = "tk";
inline constexpr size_t kMaxInstanceNameLength = 128;
struct InstanceName {
    std::string run_id;  // [a-z0-9]+
    std::string role;    // [a-z0-9]+
    long long deadline_unix = 0;
};
std::string format_instance_name(const InstanceName & name);
std::optional<InstanceName> parse_instance_name(std::string_view name);  // nullopt: not ours

// What a batch scheduler's job runs (providers whose caps().batch_jobs is set): the job does this
// work and ends, instead of holding an allocation that SSH then uses. The script runs under `sh` on
// the compute node after the site's own setup lines (module loads); its output goes to
// `output_path`, a file in the site's shared work directory that the caller reads from the login
// node, appended to (not truncated) when the scheduler restarts the job.
struct BatchScript {
    std::string body;
    std::string output_path;  // absolute
    bool use_gpus = true;     // false: the job takes no GPUs whatever the offer has (a CPU build)
    bool requeue = false;     // the scheduler may restart it (node failure, preemption, an admin's requeue)
};

// The line a batch job prints first at every start ("toolkit-batch: start job 42 restart 1 on
// node7"), so whoever follows its output counts the scheduler's restarts. Returns the restart
// number of such a line, nullopt for any other line.
inline constexpr std::string_view kBatchStartPrefix = "toolkit-batch: start job ";
std::optional<int> batch_restart_of(std::string_view line);

// How a batch job ended, in the scheduler's terms mapped to ours (the raw state stays in
// Instance::status_raw for messages).
enum class BatchEnd { Completed, Failed, TimedOut, NodeFailure, Preempted, Cancelled, OutOfMemory, Other };

struct CreateRequest {
    Offer offer;
    std::optional<BatchScript> batch;  // batch_jobs providers only; nullopt: hold the allocation
    std::string name;  // format_instance_name(...)
    std::string image = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04";
    int disk_gb = 50;
    std::vector<std::pair<std::string, std::string>> env;
    std::string ssh_public_key;  // one OpenSSH public key line
    long long deadline_unix = 0;
};

nlohmann::json instance_to_json(const Instance & instance, double unix_now);
// "ssh -p 2222 -i KEY root@1.2.3.4" (key omitted when empty); empty when no endpoint is known.
// Shell text a user may paste: every word that is not made of plain characters
// ([A-Za-z0-9@%+=:,./_-]) is sh-quoted, so no value (a key path, a server's host) can become code.
std::string ssh_command(const Instance & instance, const std::string & key_path);

// What a cloud's SSH host and user must look like before they become an endpoint (they come from
// provider answers and end up in ssh's argv and in printed shell text). A host is an IPv4 or IPv6
// literal or a DNS name (labels of letters, digits, '-' and '_', none starting with '-', at most 253
// characters); a user is [a-z_][a-z0-9_-]* of at most 32 characters.
bool valid_ssh_host(std::string_view host);
bool valid_ssh_user(std::string_view user);

}  // namespace broker
