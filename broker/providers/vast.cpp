// Vast.ai through its REST API v0 (<base>/api/v0/...), following docs/providers.md#vastai.
// Traps handled here:
//  - a non-null `price` in the create body rents an interruptible bid: on-demand creates omit it;
//  - gpu_ram and cpu_ram are MB (MiB in fact, varying per host, below the nominal size: VRAM is
//    snapped to the nominal size the other clouds state, vast_vram_gb), disk_space is GB,
//    dph_total is $/hour for the whole offer;
//  - show returns {"instances": {...}} (an object) or null when gone; list (v1) pages by next_token;
//  - a failed create may still return new_contract (a stopped instance): it is destroyed at once;
//  - actual_status is null while the contract is created; offline fails fast; HostPort is a string.
#include <algorithm>
#include <cctype>
#include <cmath>

#include "broker/providers/json_api.h"
#include "broker/providers/providers.h"
#include "common/log.h"

namespace broker::providers {

namespace {

// actual_status, lower-cased. SkyPilot's map (sky/provision/vast/instance.py); docs/providers.md,
// "Status values" under Vast.ai.
constexpr StatusRow kStatusMap[] = {
    {"created",    InstanceStatus::Pending},
    {"loading",    InstanceStatus::Pending},
    {"restarting", InstanceStatus::Pending},
    {"rebooting",  InstanceStatus::Pending},
    {"running",    InstanceStatus::Running},
    {"exited",     InstanceStatus::Stopped},
    {"stopped",    InstanceStatus::Stopped},
    {"frozen",     InstanceStatus::Stopped},
    {"offline",    InstanceStatus::Failed},
};

class Vast final : public Provider {
public:
    explicit Vast(const ProviderContext & c) : api_("vast", c.base_url, c.api_key, c.http) {}

    std::string_view name() const override { return "vast"; }
    ProviderCaps caps() const override {
        return {.stop_start = true, .native_deadline = false, .spot = true, .self_end = SelfEnd::ScopedRequest};
    }

    std::vector<Offer> search(const OfferFilter & f) override {
        // dph_total includes storage at allocated_storage: ask at the disk the create will rent.
        const int disk = f.rent_disk_gb.value_or(kVastSearchDiskGb);
        if (!f.gpu.empty() && f.offer_id.empty() && vast_gpu_names_for(f.gpu).empty())
            common::log::warn("vast: --gpu ", f.gpu, " matches no gpu_name the broker knows Vast to use (docs/providers.md, "
                              "Vast \"Offers\"); searching the 1000 cheapest offers and filtering them here, so offers of "
                              "that GPU beyond them are missed. Narrow with --min-vram, --gpus or --max-price");
        auto body = api_.call("POST", "/api/v0/bundles/", "search offers", vast_search_body(f, disk));
        return vast_parse_offers(body, f.spot.value_or(false), disk);
    }

    Instance create(const CreateRequest & r) override {
        auto response = api_.send("PUT", "/api/v0/asks/" + common::http::url_encode(r.offer.offer_id) + "/",
                                  vast_create_body(r), common::http::Retry::NotIdempotent);
        nlohmann::json body;
        try {
            body = api_.parse(response, "create " + r.name);
        } catch (const common::Error &) {
            if (is_2xx(response.status)) throw;
        }
        VastCreateAnswer answer = vast_parse_create(body);
        if (is_2xx(response.status) && answer.success && answer.contract == 0)
            // Whether an instance exists is unknown: a network error makes the caller look it up by name.
            throw common::Error(common::ErrorKind::Network,
                                "vast: create " + r.name + ": the answer says success but names no new_contract")
                .with("provider", "vast");
        bool ok = is_2xx(response.status) && answer.success && answer.contract > 0;
        if (!ok) {
            // A failed rent can still leave a stopped contract behind (dstack): destroy it now.
            if (answer.contract > 0) {
                common::log::warn("vast: create ", r.name, " failed but returned contract ", answer.contract,
                                  "; destroying it");
                terminate(std::to_string(answer.contract));
            }
            std::string why = answer.reason;
            if (why.empty()) why = common::http::safe_text(response.body, 200);
            common::ErrorKind kind = common::ErrorKind::Network;
            if (!create_answer_is_ambiguous(response)) {
                kind = common::http::kind_for_status(response.status);
                // Vast's own JSON refusal of a 2xx/4xx: read what it says.
                if (is_2xx(response.status) || response.status == 400 || response.status == 404 ||
                    response.status == 410 || contains_ci(why, "unavailable") || contains_ci(why, "no_such_ask") ||
                    contains_ci(why, "not available"))
                    kind = common::ErrorKind::Capacity;
                if (contains_ci(why, "balance") || contains_ci(why, "credit")) kind = common::ErrorKind::Quota;
                if (response.status == 401 || response.status == 403) kind = common::ErrorKind::Auth;
            }
            throw common::Error(kind, common::log::redact("vast: create " + r.name + " on offer " + r.offer.offer_id +
                                                          ": HTTP " + std::to_string(response.status) + ": " + why))
                .with("provider", "vast");
        }
        const std::string id = std::to_string(answer.contract);
        return created(id, r.name, [&] {
            if (!r.ssh_public_key.empty()) attach_key(id, r.ssh_public_key);
        });
    }

    std::optional<Instance> get(std::string_view id) override {
        auto response = api_.send("GET", "/api/v0/instances/" + common::http::url_encode(std::string(id)) + "/?owner=me");
        // Gone is Vast's own answer ({"instances": null}, or the no_such_instance error), never a bare 404.
        if (vast_says_no_such_instance(response.body)) return std::nullopt;
        if (!is_2xx(response.status)) throw api_status_error("vast", "get " + std::string(id), response);
        return vast_parse_show(api_.parse(response, "get " + std::string(id)));
    }

    std::vector<Instance> list() override {
        // v1 is the paginated listing (v0 is deprecated): follow next_token, bounded.
        std::vector<Instance> out;
        std::string token;
        for (int page = 0;; ++page) {
            // A listing cut short could hide a billing instance from sweep: past the bound it is an error.
            if (page >= 100)
                throw bad_response("vast", "list instances",
                                   "the listing did not end within 100 pages (next_token still set); refusing a partial list");
            std::string path = "/api/v1/instances/?limit=100";
            if (!token.empty()) path += "&after_token=" + common::http::url_encode(token);
            auto body = api_.call("GET", path, "list instances");
            bool empty_page = false;
            auto mine = vast_parse_list_page(body, token, empty_page);
            out.insert(out.end(), mine.begin(), mine.end());
            if (out.size() > kMaxInstancesListed)
                throw bad_response("vast", "list instances",
                                   "more than " + std::to_string(kMaxInstancesListed) + " of our instances listed; refusing");
            if (token.empty() || empty_page) break;
        }
        return out;
    }

    void terminate(std::string_view id) override {
        const std::string what = "terminate " + std::string(id);
        auto response = api_.send(vast_terminate_call(id));
        if (vast_says_no_such_instance(response.body)) return;  // already gone (dstack); a bare 404 is not
        if (!is_2xx(response.status)) throw api_status_error("vast", what, response);
        nlohmann::json body = api_.parse(response, what);
        if (body.is_object() && body.contains("success") && body["success"] != true)
            throw common::Error(common::ErrorKind::Network,
                                common::log::redact("vast: " + what + ": refused: " + common::http::safe_text(response.body, 200)))
                .with("provider", "vast");
    }

    // CONTAINER_API_KEY in PID 1's environment may destroy its own instance (docs/providers.md, Vast
    // "Scoped key"); 404 means it is already gone.
    SelfEndRequest self_end_request(std::string_view id) const override {
        // No status counts as "already gone": the watchdog sending this runs on the instance, so a
        // 404 there is a proxy's or a wrong route's, not proof; it retries until the machine ends.
        return {api_.describe(vast_terminate_call(id)), "CONTAINER_API_KEY", "", {}};
    }

    void stop(std::string_view id) override { set_state(id, "stopped"); }
    void start(std::string_view id) override { set_state(id, "running"); }

private:
    void set_state(std::string_view id, const char * state) {
        const std::string what = std::string(state) + " " + std::string(id);
        auto response = api_.send("PUT", "/api/v0/instances/" + common::http::url_encode(std::string(id)) + "/",
                                  nlohmann::json{{"state", state}});
        if (!is_2xx(response.status))
            throw api_status_error("vast", what, response, vast_says_no_such_instance(response.body));
        api_.parse(response, what);
    }

    void attach_key(const std::string & id, const std::string & key) {
        auto response = api_.send("POST", "/api/v0/instances/" + id + "/ssh/", nlohmann::json{{"ssh_key", key}});
        if (!is_2xx(response.status))
            common::log::warn("vast: could not attach the SSH key to instance ", id, " (HTTP ", response.status,
                              "); the account's keys still apply");
    }

    JsonApi api_;
};

// Every gpu_name Vast's search knows, spelt as Vast spells them (spaces, not the underscores of
// vast-cli's query strings). Source: vast-cli, vastai/data/query.py, the GPU name constants taken
// from Vast's own vast/controller/gpulist.json (commit 5567983, May 2026); docs/providers.md, Vast
// "Offers". A --gpu that matches none of these is searched the old way (below), never refused: a
// card Vast added later still has a chance.
constexpr std::string_view kVastGpuNames[] = {
    // NVIDIA data centre
    "A10", "A10g", "A16", "A30", "A40", "A100 PCIE", "A100 SXM4", "A100 SXM", "A100X", "A800 PCIE", "B200",
    "GH200 SXM", "H100 PCIE", "H100 SXM", "H100 NVL", "H200", "H200 NVL", "L4", "L40", "L40S",
    "Tesla K20c", "Tesla K80", "Tesla M40", "Tesla P4", "Tesla P6", "Tesla P40", "Tesla P100", "Tesla T4",
    "Tesla V100",
    // NVIDIA consumer
    "GeForce 970", "GTX 750 Ti", "GTX 1050", "GTX 1050 Ti", "GTX 1060", "GTX 1070", "GTX 1070 Ti", "GTX 1080",
    "GTX 1080 Ti", "GTX 1650", "GTX 1650 S", "GTX 1650 Ti", "GTX 1660", "GTX 1660 S", "GTX 1660 Ti", "GTX TITAN X",
    "RTX 2060", "RTX 2060S", "RTX 2070", "RTX 2070S", "RTX 2080", "RTX 2080S", "RTX 2080 Ti",
    "RTX 3050", "RTX 3060", "RTX 3060 laptop", "RTX 3060 Ti", "RTX 3070", "RTX 3070 laptop", "RTX 3070 Ti",
    "RTX 3080", "RTX 3080 Ti", "RTX 3090", "RTX 3090 Ti",
    "RTX 4060", "RTX 4060 laptop", "RTX 4060 Ti", "RTX 4070", "RTX 4070 laptop", "RTX 4070S", "RTX 4070S Ti",
    "RTX 4070 Ti", "RTX 4080", "RTX 4080 laptop", "RTX 4080S", "RTX 4090", "RTX 4090D", "RTX 4090 Ti",
    "RTX 5060", "RTX 5060 Ti", "RTX 5070", "RTX 5070 Ti", "RTX 5080", "RTX 5090", "RTX 5090 Ti",
    "Titan RTX", "Titan V", "TITAN V CEO", "Titan X", "Titan Xp",
    // NVIDIA professional
    "Quadro K620", "Quadro K2200", "Quadro P2000", "Quadro P4000", "Quadro P5000", "Quadro P6000", "Quadro GP100",
    "Quadro GV100", "Q RTX 4000", "Q RTX 5000", "Q RTX 6000", "Q RTX 8000",
    "RTX A2000", "RTX A4000", "RTX A4500", "RTX A5000", "RTX A6000",
    "RTX 2000Ada", "RTX 4000Ada", "RTX 4500Ada", "RTX 5000Ada", "RTX 5880Ada", "RTX 6000Ada",
    "RTX PRO 4000", "RTX PRO 4000 Mobile", "RTX PRO 4500", "RTX PRO 5000", "RTX PRO 6000", "RTX PRO 6000 S",
    "RTX PRO 6000 WS", "RTX PRO 6000 Max-Q",
    // NVIDIA mining and other
    "CMP 50HX", "CMP 170HX", "P104-100", "P106-100",
    // AMD
    "InstinctMI50", "InstinctMI100", "InstinctMI210", "InstinctMI250X",
    "PRO W6800", "PRO W7800", "PRO W7900", "Pro V620", "Radeon VII", "Radeon Pro VII",
    "RX 6800", "RX 6800 XT", "RX 6900 XT", "RX 6950 XT", "RX 7600", "RX 7700 XT", "RX 7800 XT", "RX 7900 GRE",
    "RX 7900 XT", "RX 7900 XTX",
};

}  // namespace

std::vector<std::string> vast_gpu_names_for(std::string_view gpu) {
    std::vector<std::string> out;
    if (gpu.empty()) return out;
    // The same rule the local re-check applies to an offer's canonical_gpu_model(gpu_name): the
    // names sent are exactly the rows that re-check would keep.
    for (std::string_view name : kVastGpuNames)
        if (gpu_query_matches(canonical_gpu_model(name), gpu)) out.emplace_back(name);
    return out;
}

InstanceStatus vast_status(const nlohmann::json & actual_status) {
    if (actual_status.is_null()) return InstanceStatus::Pending;  // contract still being created
    std::string s = to_lower(actual_status.is_string() ? actual_status.get<std::string>() : actual_status.dump());
    return lookup_status(kStatusMap, s);
}

double vast_vram_gb(double gpu_ram_mb) {
    // Vast's "MB" are MiB as the card reports them, below its nominal size (an L40S, 48 GB, reports
    // 46068 = 45.0 GiB; an H200, 141 GB, 140.4 GiB). The other clouds state nominal sizes, and
    // --min-vram means one: snap to the smallest nominal size S with reported ≥ kVastNominalWindow × S,
    // else round to whole GiB (a size not in the list is never rounded up past it).
    const double gib = gpu_ram_mb / 1024.0;
    if (!(gib > 0)) return 0;
    for (double nominal : kVramNominalSizesGb)
        if (nominal >= gib - 1e-9 && gib >= kVastNominalWindow * nominal) return nominal;
    return std::round(gib);
}

double vast_min_gpu_ram_mb(double min_vram_gb) {
    // The smallest gpu_ram (whole MiB) whose vast_vram_gb reaches min_vram_gb, so the server's floor
    // and the local re-check admit exactly the same rows. vast_vram_gb never decreases as gpu_ram
    // grows (a snapped range [0.93 S, S] sits below the next size's range), so bisect.
    double lo = 0, hi = 4.0 * 1024 * 1024;  // 4 TiB: above any card (validate_filter: ≤ 1024 GB)
    if (vast_vram_gb(hi) + 1e-9 < min_vram_gb) return hi;
    while (hi - lo > 1) {
        double mid = std::floor((lo + hi) / 2);
        if (vast_vram_gb(mid) + 1e-9 >= min_vram_gb) hi = mid;
        else lo = mid;
    }
    return hi;
}

nlohmann::json vast_search_body(const OfferFilter & f, int disk_gb) {
    bool spot = f.spot.value_or(false);
    nlohmann::json q = {
        {"verified", {{"eq", true}}},
        {"external", {{"eq", false}}},
        {"rentable", {{"eq", true}}},
        {"rented", {{"eq", false}}},
        {"order", nlohmann::json::array({nlohmann::json::array({spot ? "min_bid" : "dph_total", "asc"})})},
        {"type", spot ? "bid" : "on-demand"},
        {"allocated_storage", static_cast<double>(disk_gb)},
        // The cheapest rows only, re-checked here: enough when every filter that selects rows is
        // pushed; raised below when --gpu cannot be.
        {"limit", 200},
    };
    if (!f.gpu.empty()) {
        // Vast has no substring operator, but `in` takes a list of exact names: the known names
        // that --gpu matches. Sent as a list, so any name can only ever be a JSON string value.
        auto names = vast_gpu_names_for(f.gpu);
        if (!names.empty()) q["gpu_name"] = {{"in", names}};
        else q["limit"] = 1000;  // no known name: the cheapest rows, filtered here (search() warns)
    }
    // Renting a known ask (`--offer vast:N`): ask for that id, whatever its price rank.
    if (!f.offer_id.empty()) {
        const bool digits = f.offer_id.size() <= 18 &&
                            std::all_of(f.offer_id.begin(), f.offer_id.end(), [](unsigned char c) { return std::isdigit(c); });
        if (!digits)
            throw common::Error::usage("--offer vast:" + f.offer_id + ": a Vast offer id is the ask's number, as `broker search` prints");
        q["id"] = {{"eq", f.offer_id}};
    }
    if (f.gpu_count) q["num_gpus"] = {{"eq", std::to_string(*f.gpu_count)}};
    if (f.min_vram_gb) q["gpu_ram"] = {{"gte", vast_min_gpu_ram_mb(*f.min_vram_gb)}};
    if (f.min_ram_gb) q["cpu_ram"] = {{"gte", *f.min_ram_gb * 1000.0 * 0.95}};
    if (f.min_disk_gb) q["disk_space"] = {{"gte", std::to_string(*f.min_disk_gb)}};
    if (f.max_price_usd_per_hour && !spot) q["dph_total"] = {{"lte", std::to_string(*f.max_price_usd_per_hour)}};
    if (!f.manufacturer.empty()) q["gpu_arch"] = {{"eq", to_lower(f.manufacturer)}};
    return q;
}

std::vector<Offer> vast_parse_offers(const nlohmann::json & body, bool spot, int disk_gb) {
    return guarded("vast", "search offers", [&] {
        std::vector<Offer> out;
        if (!body.is_object() || !body.contains("offers") || !body["offers"].is_array())
            throw BadResponse("answer has no offers list");
        for (const auto & v : body["offers"]) {
            if (!v.is_object()) throw BadResponse("an offers entry is not an object");
            Offer o;
            o.provider = "vast";
            o.offer_id = json_string(v, "id");
            std::string arch = json_string(v, "gpu_arch");
            o.manufacturer = canonical_manufacturer(arch.empty() ? "nvidia" : arch);
            o.gpu_model = canonical_gpu_model(json_string(v, "gpu_name"));
            o.vram_gb_per_gpu = vast_vram_gb(json_number(v, "gpu_ram").value_or(0));
            o.gpu_count = json_int(v, "num_gpus", 1);
            // dph_total is the whole offer INCLUDING storage at allocated_storage (docs/providers.md, Vast "Offers");
            // min_bid is the machine alone. A spot row adds the same storage charge, so on-demand and
            // spot rows compare like with like: dph_total − dph_base as the API computed it, else
            // storage_cost ($/GB/month) × the search's allocated storage / 720 h.
            double price = 0;
            if (spot) {
                double storage_hr = 0;
                auto total = json_number(v, "dph_total"), base = json_number(v, "dph_base");
                if (total && base && *total >= *base) storage_hr = *total - *base;
                else if (auto per_gb_month = json_number(v, "storage_cost"))
                    storage_hr = *per_gb_month * disk_gb / (30.0 * 24.0);
                auto bid = json_number(v, "min_bid");
                if (!bid) continue;  // no bid floor: not rentable as spot
                price = *bid + storage_hr;
                o.create_data["bid"] = *bid;  // what the create bids: the machine's $/h (storage is billed apart)
            } else {
                price = json_number(v, "dph_total").value_or(0);
            }
            o.price_usd_per_hour_total = price;
            o.price_usd_per_hour_gpu = o.gpu_count > 0 ? price / o.gpu_count : price;
            o.spot = spot;
            o.cloud = json_number(v, "hosting_type").value_or(0) >= 1 ? CloudType::Secure : CloudType::Community;
            o.region = json_string(v, "geolocation");
            o.availability = json_bool(v, "rentable", true) ? "available" : "unavailable";
            if (auto ram = json_number(v, "cpu_ram")) o.cpu_ram_gb = std::round(*ram / 1024.0);
            o.disk_gb = json_number(v, "disk_space");
            if (auto c = json_number(v, "cpu_cores_effective")) o.vcpus = checked_int(*c, "cpu_cores_effective");
            o.cuda_version = json_string(v, "cuda_max_good");
            o.driver_version = json_string(v, "driver_version");
            o.create_data["ask_id"] = o.offer_id;
            if (usable_offer(o)) out.push_back(std::move(o));
        }
        return out;
    });
}

// Vast's destroy takes an empty JSON object as its body.
ApiCall vast_terminate_call(std::string_view id) {
    return {"DELETE", "/api/v0/instances/" + common::http::url_encode(std::string(id)) + "/", nlohmann::json::object()};
}

nlohmann::json vast_create_body(const CreateRequest & r) {
    nlohmann::json env = nlohmann::json::object();
    for (const auto & [k, v] : r.env) env[k] = v;
    nlohmann::json body = {
        {"client_id", "me"},
        {"image", r.image},
        {"env", env},
        {"disk", r.disk_gb},
        {"label", r.name},
        {"onstart", ""},
        {"runtype", "ssh_direc ssh_proxy"},
        {"python_utf8", false},
        {"lang_utf8", false},
        {"use_jupyter_lab", false},
        {"force", false},
        {"cancel_unavail", true},
    };
    // Trap 1: any non-null price makes the rental an interruptible bid. On-demand sends none. A spot
    // rent bids the machine's floor (min_bid), not the row's price, which includes storage.
    if (r.offer.spot) {
        const auto & d = r.offer.create_data;
        body["price"] = d.is_object() && d.contains("bid") && d["bid"].is_number() ? d["bid"].get<double>()
                                                                                   : r.offer.price_usd_per_hour_total;
    }
    return body;
}

Instance vast_parse_instance(const nlohmann::json & v) {
    return guarded("vast", "read instance", [&] {
        if (!v.is_object()) throw BadResponse("an instance is not an object");
        Instance i;
        i.provider = "vast";
        i.id = json_string(v, "id");
        i.name = json_string(v, "label");
        const nlohmann::json & status = v.contains("actual_status") ? v["actual_status"] : nlohmann::json();
        i.status = vast_status(status);
        i.status_raw = status.is_string() ? status.get<std::string>() : "null";
        i.status_detail = common::http::safe_text(json_string(v, "status_msg"), 300);
        i.gpu_model = canonical_gpu_model(json_string(v, "gpu_name"));
        i.gpu_count = json_int(v, "num_gpus", 0);
        i.price_usd_per_hour = json_number(v, "dph_total");
        i.created_unix = json_number(v, "start_date");
        std::string ip = json_string(v, "public_ipaddr");
        if (!ip.empty() && v.contains("ports") && v["ports"].is_object() && v["ports"].contains("22/tcp") &&
            v["ports"]["22/tcp"].is_array() && !v["ports"]["22/tcp"].empty()) {
            if (auto port = json_port(v["ports"]["22/tcp"][0], "HostPort"))  // a string on the wire
                i.ssh = SshEndpoint{ip, *port, "root", ""};
        }
        if (!i.ssh) {
            std::string host = json_string(v, "ssh_host");
            auto port = json_port(v, "ssh_port");
            if (!host.empty() && port) i.ssh = SshEndpoint{host, *port, "root", ""};
        }
        keep_valid_ssh(i);
        return i;
    });
}

std::optional<Instance> vast_parse_show(const nlohmann::json & body) {
    return guarded("vast", "get instance", [&]() -> std::optional<Instance> {
        if (!body.is_object() || !body.contains("instances")) throw BadResponse("answer has no instances field");
        const auto & inst = body["instances"];
        if (inst.is_object()) return vast_parse_instance(inst);
        if (inst.is_array() && !inst.empty()) return vast_parse_instance(inst[0]);
        if (inst.is_null() || inst.is_array()) return std::nullopt;  // null: gone
        throw BadResponse("instances is neither an object, a list nor null");
    });
}

std::vector<Instance> vast_parse_list_page(const nlohmann::json & body, std::string & next_token, bool & empty_page) {
    return guarded("vast", "list instances", [&] {
        if (!body.is_object() || !body.contains("instances") || !body["instances"].is_array())
            throw BadResponse("answer has no instances list");
        std::vector<Instance> out;
        for (const auto & inst : body["instances"]) {
            Instance i = vast_parse_instance(inst);
            if (parse_instance_name(i.name)) out.push_back(std::move(i));
        }
        next_token = json_string(body, "next_token");
        if (next_token.size() > 200) throw BadResponse("next_token longer than 200 characters");
        empty_page = body["instances"].empty();
        return out;
    });
}

bool vast_says_no_such_instance(const std::string & body) {
    auto doc = try_parse_body(body);
    return doc && doc->is_object() && doc->contains("error") && (*doc)["error"] == "no_such_instance";
}

VastCreateAnswer vast_parse_create(const nlohmann::json & body) {
    return guarded("vast", "create", [&] {
        VastCreateAnswer a;
        if (!body.is_object()) return a;
        a.success = body.contains("success") && body["success"] == true;
        if (body.contains("new_contract") && !body["new_contract"].is_null()) {
            auto c = json_number(body, "new_contract");
            if (!c || *c < 1 || *c > 9.0e15 || *c != std::floor(*c))
                throw BadResponse("new_contract is not an instance id: " + common::http::safe_text(body["new_contract"].dump(), 40));
            a.contract = static_cast<long long>(*c);
        }
        a.reason = json_string(body, "msg");
        if (a.reason.empty()) a.reason = json_string(body, "error");
        a.reason = common::http::safe_text(a.reason, 300);
        return a;
    });
}

std::unique_ptr<Provider> make_vast(const ProviderContext & c) { return std::make_unique<Vast>(c); }

}  // namespace broker::providers
