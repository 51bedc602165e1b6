// Helpers shared by the verb files: building the Broker from global flags, and the filter flags.
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "broker/cli/verbs.h"
#include "broker/registry.h"
#include "common/log.h"
#include "common/units.h"

namespace broker::cli {

std::unique_ptr<Broker> make_broker(const GlobalOptions & g) {
    BrokerOptions o;
    o.config_path = g.config;
    o.state_dir = g.state_dir;
    o.ledger_path = g.ledger;
    o.hosts_file = g.hosts;
    return std::make_unique<Broker>(o);
}

common::Duration poll_interval(const GlobalOptions & g) {
    double s = common::parse_duration_s(g.poll_interval);
    if (s <= 0) throw common::Error::usage("--poll-interval: must be positive");
    return std::chrono::duration_cast<common::Duration>(std::chrono::duration<double>(s));
}

namespace {
// --min-ram/--min-disk: a bare number means GB (as the providers quote them); "512GiB" etc. also work.
double size_flag_gb(const std::string & text) {
    bool bare = text.find_first_not_of("0123456789.") == std::string::npos;
    return static_cast<double>(common::parse_bytes(bare ? text + "GB" : text)) / 1e9;
}
}  // namespace

OfferFilter to_filter(const FilterFlags & f) {
    OfferFilter filter;
    filter.gpu = f.gpu;
    filter.manufacturer = f.manufacturer;
    filter.min_vram_gb = f.min_vram_gb;
    filter.gpu_count = f.gpus;
    filter.max_price_usd_per_hour = f.max_price;
    filter.region = f.region;
    filter.providers = f.providers;
    if (!f.min_ram.empty()) filter.min_ram_gb = size_flag_gb(f.min_ram);
    if (!f.min_disk.empty()) filter.min_disk_gb = size_flag_gb(f.min_disk);
    if (!f.cloud.empty()) {
        if (to_lower(f.cloud) == "secure") filter.cloud = CloudType::Secure;
        else if (to_lower(f.cloud) == "community") filter.cloud = CloudType::Community;
        else throw common::Error::usage("--cloud: unknown value '" + f.cloud + "'; valid values: secure, community");
    }
    if (f.spot && f.on_demand) throw common::Error::usage("--spot and --on-demand: choose one");
    if (f.spot) filter.spot = true;
    else filter.spot = false;  // on-demand unless --spot: interruptible machines are opt-in
    for (const auto & p : f.providers) find_provider(p);
    return filter;
}

void report_failures(const std::vector<ProviderFailure> & failures) {
    for (const auto & f : failures) common::log::warn(f.provider, ": skipped: ", f.error.message());
}

nlohmann::json failures_to_json(const std::vector<ProviderFailure> & failures) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto & f : failures)
        out.push_back({{"provider", f.provider},
                       {"kind", std::string(common::kind_name(f.error.kind()))},
                       {"exit_code", common::exit_code(f.error.kind())},
                       {"message", f.error.message()}});
    return out;
}

void throw_if_none_answered(const std::string & what, const std::vector<std::string> & asked,
                            const std::vector<ProviderFailure> & failures) {
    if (asked.empty() || failures.empty()) return;
    for (const auto & p : asked) {
        bool failed = std::any_of(failures.begin(), failures.end(), [&](const ProviderFailure & f) { return f.provider == p; });
        if (!failed) return;  // at least one answered: a partial answer, reported as warnings
    }
    if (asked.size() == 1 && failures.size() == 1) throw failures.front().error;  // its own words and context
    common::ErrorKind kind = failures.front().error.kind();
    for (const auto & f : failures)
        if (f.error.kind() != kind) kind = common::ErrorKind::Network;
    std::string msg = what + ": no provider answered, so nothing is known about what is billing:";
    for (const auto & f : failures) msg += " [" + f.error.message() + "]";
    common::Error e(kind, msg);
    std::string names;
    for (const auto & p : asked) names += (names.empty() ? "" : ",") + p;
    e.with("providers", names);
    throw e;
}

nlohmann::json with_table_prices(nlohmann::json j) {
    if (j.is_array()) {
        for (auto & row : j) row = with_table_prices(std::move(row));
        return j;
    }
    if (!j.is_object()) return j;
    for (const char * key : {"price_usd_per_hour_total", "price_usd_per_hour_gpu", "price_usd_per_hour", "cost_so_far_usd"}) {
        auto it = j.find(key);
        if (it == j.end() || !it->is_number()) continue;
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.4f", it->get<double>());
        *it = std::string(buf);
    }
    return j;
}

}  // namespace broker::cli
