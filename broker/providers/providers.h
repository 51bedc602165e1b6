// Factories and the pure wire functions of each provider, declared here so the registry can build
// providers and the unit tests can feed recorded response bodies to the parsers. Callers outside
// broker/ use broker/broker.h instead.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/instance.h"
#include "broker/offer.h"
#include "broker/provider.h"
#include "broker/providers/json_api.h"
#include "broker/slurm_cluster.h"
#include "common/error.h"

namespace broker::providers {

// One row of a provider's status table: the provider's own string -> our status. Each provider file
// keeps its table at the top; lookup_status() is the one rule for all of them: anything not in the
// table is Unknown (kept raw by the caller), never a guess and never a crash on a new status.
struct StatusRow {
    std::string_view raw;
    InstanceStatus status;
};
template <size_t N>
InstanceStatus lookup_status(const StatusRow (&table)[N], std::string_view raw) {
    for (const auto & row : table)
        if (row.raw == raw) return row.status;
    return InstanceStatus::Unknown;
}

std::unique_ptr<Provider> make_runpod(const ProviderContext & context);
std::unique_ptr<Provider> make_vast(const ProviderContext & context);
std::unique_ptr<Provider> make_lambda(const ProviderContext & context);
std::unique_ptr<Provider> make_primeintellect(const ProviderContext & context);
std::unique_ptr<Provider> make_local(const ProviderContext & context);
std::unique_ptr<Provider> make_ssh_hosts(const ProviderContext & context);
std::unique_ptr<Provider> make_slurm(const ProviderContext & context);

// Every function below that takes a server body (parse_*, *_data, *_page) is total: it returns, or
// throws common::Error — Error(Network) naming the provider for a body it cannot use (wrong shape or
// types, integers that do not fit), the provider's own typed errors for error envelopes — and never
// anything else. fuzz/provider_json_fuzz.cpp checks exactly that. An offer whose numbers make no
// sense (no GPUs, a price that is not a finite non-negative number) is left out, not shown.
bool usable_offer(const Offer & offer);

// RunPod (GraphQL). Requests are {"query": constant text, "variables": {...}}: no value a user or a
// server wrote is ever spliced into GraphQL text.
InstanceStatus runpod_status(std::string_view desired_status);
nlohmann::json runpod_search_request(const OfferFilter & filter, int gpu_count, bool secure);
nlohmann::json runpod_create_request(const CreateRequest & request);
// minMemoryInGb a create sends: the search's --min-ram carried in the offer's create_data, else 8.
int runpod_min_memory_gb(const Offer & offer);
// The GPU count at the end of a RunPod offer id; a usage error when the id is not one of ours.
int runpod_offer_gpu_count(std::string_view offer_id);
// `data` of a GraphQL answer: errors[] → runpod_graphql_error, no data object → Error(Network).
nlohmann::json runpod_graphql_data(const nlohmann::json & doc, const std::string & what);
// gpuTypes (+ dataCenters) → offers: secure offers one per data centre that stocks the type.
std::vector<Offer> runpod_parse_offers(const nlohmann::json & data, int gpu_count, bool secure, bool spot = false);
Instance runpod_parse_pod(const nlohmann::json & pod);
std::vector<Instance> runpod_parse_pods(const nlohmann::json & data);  // myself.pods, ours only
// Whether a GraphQL answer (HTTP 200) carries RunPod's own "pod not found" error ("pod not found to
// terminate"): the only error that means a pod is gone.
bool runpod_says_pod_not_found(const nlohmann::json & doc);
// Classifies the GraphQL `errors` array of a 200 response into a typed error.
common::Error runpod_graphql_error(const nlohmann::json & errors, const std::string & what);

// The terminate call (used by the provider's terminate() and by self_end_request(), the watchdog's copy).
ApiCall runpod_terminate_call(std::string_view id);

// Vast.ai (REST v0)
InstanceStatus vast_status(const nlohmann::json & actual_status);
// Search body; `disk_gb` is the allocated storage every offer's price includes.
// --gpu pushed as `"gpu_name": {"in": [...]}` (the names vast_gpu_names_for gives), or, when it
// matches no known name, as 1000 rows instead of 200 that are filtered locally.
nlohmann::json vast_search_body(const OfferFilter & filter, int disk_gb);
// The gpu_name values Vast uses (vast-cli's list, docs/providers.md) whose canonical model --gpu
// matches by the local rule (gpu_query_matches); empty for an empty --gpu or an unknown card.
std::vector<std::string> vast_gpu_names_for(std::string_view gpu);
inline constexpr int kVastSearchDiskGb = 50;
// Nominal VRAM sizes (GB per GPU) as the clouds state them for the cards they rent (RunPod
// memoryInGb, Lambda's descriptions: 24 for an RTX 4090, 48 for an L40S, 141 for an H200, 192 for
// an MI300X), and the window of reported memory a nominal size covers: a card reports at least
// 0.93 of it (gpuhunt matches Vast's gpu_ram within 0.93…1.07 of the nominal size).
inline constexpr double kVramNominalSizesGb[] = {4,  6,  8,  10, 11,  12,  16,  20,  24,  32,  40, 48,
                                                 64, 80, 94, 96, 128, 141, 180, 192, 256, 288};
inline constexpr double kVastNominalWindow = 0.93;
// VRAM per GPU from gpu_ram (MiB as reported, below nominal): the nominal size it falls in, else
// whole GiB. 46068 (L40S) → 48, 143771 (H200) → 141, 24564 (RTX 4090) → 24, 196608 (MI300X) → 192.
double vast_vram_gb(double gpu_ram_mb);
// The gpu_ram floor a search pushes for --min-vram: exactly the rows whose vast_vram_gb reaches it.
double vast_min_gpu_ram_mb(double min_vram_gb);
// Spot rows are the bid floor (min_bid) plus the same storage charge dph_total includes.
std::vector<Offer> vast_parse_offers(const nlohmann::json & body, bool spot, int disk_gb = kVastSearchDiskGb);
Instance vast_parse_instance(const nlohmann::json & instance);
std::optional<Instance> vast_parse_show(const nlohmann::json & body);  // {"instances": {...} | [...] | null}
// One v1 list page: our instances; `next_token` is "" on the last page.
std::vector<Instance> vast_parse_list_page(const nlohmann::json & body, std::string & next_token, bool & empty_page);
// The contract id of a create answer (0 when none), whether the answer says it succeeded.
struct VastCreateAnswer {
    bool success = false;
    long long contract = 0;
    std::string reason;  // msg / error, bounded
};
VastCreateAnswer vast_parse_create(const nlohmann::json & body);
nlohmann::json vast_create_body(const CreateRequest & request);
ApiCall vast_terminate_call(std::string_view id);  // DELETE /api/v0/instances/<id>/ (the id percent-encoded)
// Whether an answer (any status) is Vast's own "no such instance" ({"success": false, "error":
// "no_such_instance"}): the only answer besides show's {"instances": null} that means gone.
bool vast_says_no_such_instance(const std::string & body);

// ssh-hosts: which detached bifrost jobs a terminate ends. `created` is the lease's start (this
// machine's clock, Unix seconds); jobs that started from `shared_from` on (another lease of the same
// account had begun by then) may be that lease's and are reported, not ended.
struct JobWindow {
    long long created = 0;
    std::optional<long long> shared_from;
};
// The POSIX sh script a terminate runs on the host (as `sh -c`): ends the toolkit's tmux sessions
// and, given a window, the running bifrost jobs that started in it (SIGTERM to the job's process
// group, SIGKILL after 5 s), printing one tab-separated report line per session or job.
std::string ssh_hosts_end_jobs_script(const std::optional<JobWindow> & window, long long local_now);

// Lambda Cloud (REST v1)
InstanceStatus lambda_status(std::string_view status);
// The envelope: {"error": {...}} → typed error (kind from the code table, else from `status`),
// non-2xx → status error, no `data` → Error(Network); returns `data`.
nlohmann::json lambda_data(long status, const nlohmann::json & doc, const std::string & raw_body, const std::string & what);
std::vector<Offer> lambda_parse_offers(const nlohmann::json & body);
Instance lambda_parse_instance(const nlohmann::json & instance);
std::vector<Instance> lambda_parse_instances(const nlohmann::json & data);  // ours only
std::string lambda_parse_launch(const nlohmann::json & data);  // the first instance id, "" when none
// The name of the account key whose material equals `material` ("" when none).
std::string lambda_find_key(const nlohmann::json & keys, const std::string & material);

// Prime Intellect (REST v1)
InstanceStatus prime_status(std::string_view status, std::string_view installation_status);
std::vector<Offer> prime_parse_offers(const nlohmann::json & body);
int prime_total_count(const nlohmann::json & body, const char * key);  // totalCount / total_count, 0 if absent
Instance prime_parse_pod(const nlohmann::json & pod);
// One list page: our pods, and how many pods the page held (paging stops on a short page).
std::vector<Instance> prime_parse_pods_page(const nlohmann::json & body, size_t & page_size);
std::optional<SshEndpoint> prime_parse_ssh(const nlohmann::json & ssh_connection);
// Whether a 404/410 answer is Prime's own "pod not found" ({"detail": "Pod not found"}), as opposed
// to FastAPI's {"detail": "Not Found"} for a route that does not exist, or any other 404.
bool prime_says_pod_not_found(long status, const std::string & body);
nlohmann::json prime_create_body(const CreateRequest & request);

// Slurm (text commands over SSH to a login node; slurm.cpp). Commands are shell text in which every
// value is a common::sh_quote word; parsers take the command's output and are total as above.
InstanceStatus slurm_status(std::string_view state);
// Wraps a command so stderr joins stdout and the output is cut at 4 MiB on the login node.
std::string slurm_remote(const std::string & command);
std::string slurm_sinfo_command(const SlurmCluster & cluster);
std::vector<Offer> slurm_parse_sinfo(const SlurmCluster & cluster, const std::string & out);
std::string slurm_squeue_command(std::optional<long long> job_id);  // nullopt: all of this user's jobs
std::vector<Instance> slurm_parse_squeue(const SlurmCluster & cluster, const std::string & out);
std::string slurm_sbatch_command(const SlurmCluster & cluster, const CreateRequest & request, long long now_unix);
long long slurm_parse_sbatch(const SlurmCluster & cluster, const std::string & out);
// A failed Slurm command's output → a typed error (bad account/QoS/partition: usage; no such node
// configuration: capacity; submit limits: quota; permission: auth; controller unreachable: network).
common::Error slurm_command_error(const SlurmCluster & cluster, std::string_view what, int exit_code, const std::string & text);

}  // namespace broker::providers
