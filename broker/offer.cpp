#include "broker/offer.h"

#include <algorithm>
#include <cctype>

#include "common/error.h"

namespace broker {

std::string_view cloud_type_name(CloudType cloud) { return cloud == CloudType::Secure ? "secure" : "community"; }

std::string to_lower(std::string_view text) {
    std::string s(text);
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

bool contains_ci(std::string_view haystack, std::string_view needle) {
    return to_lower(haystack).find(to_lower(needle)) != std::string::npos;
}

std::string canonical_manufacturer(std::string_view raw) {
    std::string l = to_lower(raw);
    while (!l.empty() && std::isspace(static_cast<unsigned char>(l.back()))) l.pop_back();
    if (l == "nvidia" || l == "nvidia corporation") return "NVIDIA";
    if (l == "amd" || l == "advanced micro devices") return "AMD";
    if (l == "intel") return "INTEL";
    std::string u(raw);
    std::transform(u.begin(), u.end(), u.begin(), [](unsigned char c) { return std::toupper(c); });
    return u;
}

std::string canonical_gpu_model(std::string_view raw) {
    std::string s(raw);
    for (char & c : s)
        if (c == '_' || c == '-') c = ' ';
    // Vendor and family words carry no information once the manufacturer is its own field.
    static const char * const kDrop[] = {"NVIDIA ", "Nvidia ", "AMD ", "GeForce ", "Tesla ", "Radeon "};
    for (bool changed = true; changed;) {
        changed = false;
        for (const char * d : kDrop) {
            if (s.rfind(d, 0) == 0) {
                s.erase(0, std::string_view(d).size());
                changed = true;
            }
        }
    }
    std::string out;
    for (char c : s) {
        if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
        out += c;
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

bool gpu_query_matches(std::string_view canonical_model, std::string_view query) {
    return contains_ci(canonical_model, query) || contains_ci(canonical_model, canonical_gpu_model(query));
}

const std::vector<std::string> & known_manufacturers() {
    static const std::vector<std::string> names = {"nvidia", "amd"};
    return names;
}

void validate_filter(const OfferFilter & f) {
    if (!f.manufacturer.empty()) {
        // An unknown vendor matches nothing: say so instead of printing an empty table (exit 0).
        const auto & known = known_manufacturers();
        std::string canon = canonical_manufacturer(f.manufacturer);
        bool ok = std::any_of(known.begin(), known.end(),
                              [&](const std::string & k) { return canonical_manufacturer(k) == canon; });
        if (!ok) {
            std::string list;
            for (const auto & k : known) list += (list.empty() ? "" : ", ") + k;
            throw common::Error::usage("--manufacturer: unknown value '" + f.manufacturer + "'; accepted: " + list +
                                       " (case-insensitive)");
        }
    }
    auto neg = [](const std::optional<double> & v) { return v && *v < 0; };
    if (neg(f.min_vram_gb)) throw common::Error::usage("--min-vram: must not be negative");
    if (neg(f.min_ram_gb)) throw common::Error::usage("--min-ram: must not be negative");
    if (neg(f.min_disk_gb)) throw common::Error::usage("--min-disk: must not be negative");
    if (f.max_price_usd_per_hour && *f.max_price_usd_per_hour <= 0)
        throw common::Error::usage("--max-price: must be greater than 0 (dollars per hour for the whole instance)");
    if (f.gpu_count && *f.gpu_count < 1) throw common::Error::usage("--gpus: must be at least 1");
    if (f.gpu_count && *f.gpu_count > 64)
        throw common::Error::usage("--gpus: " + std::to_string(*f.gpu_count) +
                                   " GPUs in one instance is more than any provider offers (at most 64)");
    if (f.min_vram_gb && *f.min_vram_gb > 1024)
        throw common::Error::usage("--min-vram: is per GPU, in GB; no GPU has more than 1024 GB");
    // Bounded so that pushing them to an API (as integers) is always defined.
    if (f.min_ram_gb && *f.min_ram_gb > 100000)
        throw common::Error::usage("--min-ram: " + std::to_string(*f.min_ram_gb) + " GB is more than any instance has (at most 100000)");
    if (f.min_disk_gb && *f.min_disk_gb > 10000000)
        throw common::Error::usage("--min-disk: " + std::to_string(*f.min_disk_gb) + " GB is more than any instance has (at most 10000000)");
}

bool offer_matches(const Offer & o, const OfferFilter & f, std::string * why) {
    auto fail = [&](std::string reason) {
        if (why) *why = std::move(reason);
        return false;
    };
    if (!f.providers.empty() && std::find(f.providers.begin(), f.providers.end(), o.provider) == f.providers.end())
        return fail("provider");
    if (!f.offer_id.empty() && o.offer_id != f.offer_id) return fail("offer_id");
    if (!f.gpu.empty() && !gpu_query_matches(o.gpu_model, f.gpu)) return fail("gpu");
    if (!f.manufacturer.empty() && canonical_manufacturer(f.manufacturer) != canonical_manufacturer(o.manufacturer))
        return fail("manufacturer");
    if (f.min_vram_gb && o.vram_gb_per_gpu + 1e-9 < *f.min_vram_gb) return fail("min_vram");
    if (f.gpu_count && o.gpu_count != *f.gpu_count) return fail("gpus");
    if (f.max_price_usd_per_hour && o.price_usd_per_hour_total > *f.max_price_usd_per_hour + 1e-9)
        return fail("max_price");
    if (f.min_ram_gb && o.cpu_ram_gb && *o.cpu_ram_gb + 1e-9 < *f.min_ram_gb) return fail("min_ram");
    if (f.min_disk_gb && o.disk_gb && *o.disk_gb + 1e-9 < *f.min_disk_gb) return fail("min_disk");
    if (f.cloud && o.cloud != *f.cloud) return fail("cloud");
    if (f.spot && o.spot != *f.spot) return fail(*f.spot ? "spot" : "on_demand");
    if (!f.region.empty() && !contains_ci(o.region, f.region)) return fail("region");
    return true;
}

std::vector<Offer> filter_offers(std::vector<Offer> offers, const OfferFilter & filter) {
    offers.erase(std::remove_if(offers.begin(), offers.end(),
                                [&](const Offer & o) { return !offer_matches(o, filter); }),
                 offers.end());
    return offers;
}

SortKey parse_sort_key(std::string_view text) {
    std::string t = to_lower(text);
    if (t == "price") return SortKey::Price;
    if (t == "price-per-gpu" || t == "price_per_gpu") return SortKey::PricePerGpu;
    if (t == "vram") return SortKey::Vram;
    if (t == "value") return SortKey::Value;
    throw common::Error::usage("--sort: unknown key '" + std::string(text) +
                               "'; valid keys: price, price-per-gpu, vram, value");
}

void sort_offers(std::vector<Offer> & offers, SortKey key) {
    auto tie = [](const Offer & a, const Offer & b) {
        if (a.provider != b.provider) return a.provider < b.provider;
        return a.offer_id < b.offer_id;
    };
    auto value = [](const Offer & o) {
        return o.price_usd_per_hour_total > 0 ? o.vram_gb_per_gpu * o.gpu_count / o.price_usd_per_hour_total : 1e18;
    };
    std::stable_sort(offers.begin(), offers.end(), [&](const Offer & a, const Offer & b) {
        switch (key) {
        case SortKey::Price:
            if (a.price_usd_per_hour_total != b.price_usd_per_hour_total)
                return a.price_usd_per_hour_total < b.price_usd_per_hour_total;
            break;
        case SortKey::PricePerGpu:
            if (a.price_usd_per_hour_gpu != b.price_usd_per_hour_gpu)
                return a.price_usd_per_hour_gpu < b.price_usd_per_hour_gpu;
            break;
        case SortKey::Vram:
            if (a.vram_gb_per_gpu != b.vram_gb_per_gpu) return a.vram_gb_per_gpu > b.vram_gb_per_gpu;
            if (a.price_usd_per_hour_total != b.price_usd_per_hour_total)
                return a.price_usd_per_hour_total < b.price_usd_per_hour_total;
            break;
        case SortKey::Value:
            if (value(a) != value(b)) return value(a) > value(b);
            break;
        }
        return tie(a, b);
    });
}

nlohmann::json offer_to_json(const Offer & o) {
    auto opt = [](const auto & v) -> nlohmann::json { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
    auto str = [](const std::string & s) -> nlohmann::json { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); };
    return {
        {"provider", o.provider},
        {"offer_id", o.offer_id},
        {"manufacturer", o.manufacturer},
        {"gpu_model", o.gpu_model},
        {"vram_gb_per_gpu", o.vram_gb_per_gpu},
        {"gpu_count", o.gpu_count},
        {"price_usd_per_hour_total", o.price_usd_per_hour_total},
        {"price_usd_per_hour_gpu", o.price_usd_per_hour_gpu},
        {"spot", o.spot},
        {"cloud", std::string(cloud_type_name(o.cloud))},
        {"region", str(o.region)},
        {"availability", str(o.availability)},
        {"cpu_ram_gb", opt(o.cpu_ram_gb)},
        {"disk_gb", opt(o.disk_gb)},
        {"vcpus", opt(o.vcpus)},
        {"cuda_version", str(o.cuda_version)},
        {"driver_version", str(o.driver_version)},
        {"underlying_provider", str(o.underlying_provider)},
    };
}

}  // namespace broker
