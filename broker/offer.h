// The normalised GPU offer every provider maps its catalogue into, the filter a user states, and the
// pure functions that match and sort offers. Units are converted once, in each provider's mapping
// layer (docs/providers.md, "Offer record"); this file never sees provider-specific fields except `create_data`,
// which the same provider reads back when it rents the offer.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace broker {

enum class CloudType { Secure, Community };
std::string_view cloud_type_name(CloudType cloud);  // "secure" | "community"

struct Offer {
    std::string provider;      // "runpod"
    std::string offer_id;      // what `broker create --offer` takes (unique within the provider)
    std::string manufacturer;  // canonical: "NVIDIA", "AMD", or the raw value upper-cased
    std::string gpu_model;     // canonical: "H100 SXM", "RTX 4090", "A100 PCIe"
    double vram_gb_per_gpu = 0;
    int gpu_count = 0;
    double price_usd_per_hour_total = 0;  // the whole instance
    double price_usd_per_hour_gpu = 0;    // total / gpu_count
    bool spot = false;                    // interruptible (bid) rather than on-demand
    CloudType cloud = CloudType::Secure;
    std::string region;        // datacenter, country or region name, as the provider names it
    std::string availability;  // provider's word: "High", "Low", "available", "leased", ...
    std::optional<double> cpu_ram_gb;  // system RAM
    std::optional<double> disk_gb;
    std::optional<int> vcpus;
    std::string cuda_version;
    std::string driver_version;
    std::string underlying_provider;  // Prime Intellect resells other clouds
    nlohmann::json create_data;       // provider-private fields needed to rent this offer
};

// What the user asks for. Every field is optional; the broker re-checks all of them after the
// provider's own (partial) server-side filtering.
struct OfferFilter {
    std::string gpu;           // case-insensitive substring of the canonical model ("h100", "4090")
    std::string manufacturer;  // case-insensitive exact after canonicalisation ("nvidia")
    std::optional<double> min_vram_gb;         // per GPU
    std::optional<int> gpu_count;              // exact
    std::optional<double> max_price_usd_per_hour;  // whole instance
    std::optional<double> min_ram_gb;          // system RAM; an offer that does not state it passes
    std::optional<double> min_disk_gb;         // likewise
    std::optional<CloudType> cloud;
    std::optional<bool> spot;                  // true: spot only; false: on-demand only
    std::string region;                        // case-insensitive substring
    std::vector<std::string> providers;        // empty: all
    std::string offer_id;                      // exact, when renting a known offer
    // The disk a create will rent (create's --disk), not a filter: a provider whose prices include
    // storage (Vast's dph_total at allocated_storage) is asked for prices at this size, so that
    // --max-price holds for what is rented. nullopt: the provider's default (Vast: 50 GB).
    std::optional<int> rent_disk_gb;
};

// Refuses filters that no offer can ever satisfy (negative numbers, zero GPUs, an unknown
// manufacturer), as usage errors that name the value and what is accepted.
void validate_filter(const OfferFilter & filter);
// The values --manufacturer accepts ("nvidia", "amd"), lower case.
const std::vector<std::string> & known_manufacturers();
// True when `offer` satisfies every stated condition; `why` (optional) names the first one it fails.
bool offer_matches(const Offer & offer, const OfferFilter & filter, std::string * why = nullptr);
std::vector<Offer> filter_offers(std::vector<Offer> offers, const OfferFilter & filter);

enum class SortKey { Price, PricePerGpu, Vram, Value };  // Value: total VRAM GB per dollar-hour, best first
SortKey parse_sort_key(std::string_view text);           // usage error on unknown keys
void sort_offers(std::vector<Offer> & offers, SortKey key);

std::string canonical_manufacturer(std::string_view raw);
// Strips vendor prefixes and family words so the same GPU reads the same everywhere:
// "NVIDIA GeForce RTX 4090" → "RTX 4090", "Tesla V100-SXM2-16GB" → "V100 SXM2 16GB", "H100 80GB HBM3" kept.
std::string canonical_gpu_model(std::string_view raw);
// The --gpu rule: `query`, as typed or canonicalised, is a case-insensitive substring of the
// canonical model ("h100" matches "H100 SXM", "H100 NVL"). One function for the local re-check and
// for the names a provider's own search is sent (Vast's gpu_name list), so the two never disagree.
bool gpu_query_matches(std::string_view canonical_model, std::string_view query);

std::string to_lower(std::string_view text);
bool contains_ci(std::string_view haystack, std::string_view needle);

// Row for listings and --json (stable keys; create_data is omitted).
nlohmann::json offer_to_json(const Offer & offer);

}  // namespace broker
