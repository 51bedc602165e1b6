// The options struct and entry function of every `broker` verb. cli.cpp (the only CLI11 file) fills
// these and calls the functions; the verb files never see CLI11.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "broker/broker.h"
#include "common/output.h"

namespace broker::cli {

struct GlobalOptions {
    bool json = false;
    std::string config;     // --config (else BROKER_CONFIG, else XDG)
    std::string state_dir;  // --state-dir
    std::string ledger;     // --ledger
    std::string hosts;      // --hosts (ssh-hosts inventory)
    std::string poll_interval = "5s";  // --poll-interval: readiness and terminate polls
};
std::unique_ptr<Broker> make_broker(const GlobalOptions & global);
common::Duration poll_interval(const GlobalOptions & global);

// Filter flags shared by search and create.
struct FilterFlags {
    std::string gpu, manufacturer, cloud, region, min_ram, min_disk;
    std::optional<double> min_vram_gb, max_price;
    std::optional<int> gpus;
    bool spot = false, on_demand = false;
    std::vector<std::string> providers;
};
OfferFilter to_filter(const FilterFlags & flags);

struct SearchOptions {
    FilterFlags filter;
    std::string sort = "price";
    int limit = 20;
};
int run_search(const GlobalOptions & g, const SearchOptions & o, const common::Output & out);

struct CreateCliOptions {
    FilterFlags filter;
    std::string offer;  // provider:offer_id from `broker search`
    std::string sort = "price";
    std::string image = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04";
    int disk_gb = 50;
    std::vector<std::string> env;  // K=V
    std::string ssh_key;
    std::string run_id;
    std::string role = "main";
    std::string max_lifetime = "12h";
    std::string ready_timeout = "15m";
    int max_attempts = 3;
    bool no_wait = false;
    bool no_gpu_check = false;
};
int run_create(const GlobalOptions & g, const CreateCliOptions & o, const common::Output & out);

struct InstancesListOptions {
    std::vector<std::string> providers;
};
int run_instances_list(const GlobalOptions & g, const InstancesListOptions & o, const common::Output & out);

struct InstancesShowOptions {
    std::string ref;
};
int run_instances_show(const GlobalOptions & g, const InstancesShowOptions & o, const common::Output & out);

struct InstancesTerminateOptions {
    std::vector<std::string> refs;
    bool all = false;
    bool yes = false;
    std::vector<std::string> providers;  // with --all
    std::string prove_timeout = "2m";
};
int run_instances_terminate(const GlobalOptions & g, const InstancesTerminateOptions & o, const common::Output & out);

struct InstancesSshOptions {
    std::string ref;
    std::string ssh_key;
    bool print = false;  // print the command instead of running it
};
int run_instances_ssh(const GlobalOptions & g, const InstancesSshOptions & o, const common::Output & out);

struct InstancesPowerOptions {
    std::string ref;
    bool start = false;  // false: stop
};
int run_instances_power(const GlobalOptions & g, const InstancesPowerOptions & o, const common::Output & out);

struct SweepCliOptions {
    std::vector<std::string> providers;
    bool dry_run = false;
};
int run_sweep(const GlobalOptions & g, const SweepCliOptions & o, const common::Output & out);

struct InitOptions {
    bool force = false;
};
int run_init(const GlobalOptions & g, const InitOptions & o, const common::Output & out);

struct ProvidersListOptions {};
int run_providers_list(const GlobalOptions & g, const ProvidersListOptions & o, const common::Output & out);

// Prints skipped/failed providers on stderr (never fatal on their own).
void report_failures(const std::vector<ProviderFailure> & failures);
// [{"provider", "kind", "exit_code", "message"}] for --json output: "could not ask" is data, so a
// script can tell it from "nothing there".
nlohmann::json failures_to_json(const std::vector<ProviderFailure> & failures);
// Throws when every provider in `asked` failed (none answered): the kind all failures share (6 for
// unreachable APIs, 3 for refused keys), network (6) when they differ. A partial answer returns.
void throw_if_none_answered(const std::string & what, const std::vector<std::string> & asked,
                            const std::vector<ProviderFailure> & failures);
// Table view only: prices and costs as text with 4 decimals ($1.2104/h), where the generic cell
// format keeps 3 and would merge prices that differ by a storage charge. --json keeps the numbers.
nlohmann::json with_table_prices(nlohmann::json row_or_rows);

}  // namespace broker::cli
