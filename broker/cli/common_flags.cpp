// Helpers shared by the verb files: building the Broker from global flags, and the filter flags.
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
        if (f.cloud == "secure") filter.cloud = CloudType::Secure;
        else if (f.cloud == "community") filter.cloud = CloudType::Community;
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

}  // namespace broker::cli
