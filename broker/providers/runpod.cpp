// RunPod through its GraphQL API (POST <base>/graphql), following docs/providers.md#runpod.
// Traps handled here:
//  - errors arrive inside HTTP 200 as `errors[]` with extensions.code (SUPPLY_CONSTRAINT = capacity,
//    INSUFFICIENT_BALANCE = quota); "pod not found to terminate" means already gone;
//  - desiredStatus is the desired state, and `runtime` stays null until the container is up: SSH
//    exists only once runtime.ports has privatePort 22 with isIpPublic (never the PTY-only proxy);
//  - a stopped pod reports EXITED (there is no STOPPED/PENDING/FAILED); unknown values stay Unknown;
//  - securePrice/communityPrice are per GPU-hour (SkyPilot, gpuhunt): total = price × gpuCount;
//  - create sets terminateAfter, the provider-side deadline, and supportPublicIp.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <future>
#include <unordered_map>

#include "broker/providers/json_api.h"
#include "broker/providers/providers.h"
#include "common/log.h"

namespace broker::providers {

namespace {

// desiredStatus enum PodStatus (docs/providers.md, "Status values" under RunPod).
constexpr StatusRow kStatusMap[] = {
    {"CREATED",    InstanceStatus::Pending},
    {"RUNNING",    InstanceStatus::Running},
    {"RESTARTING", InstanceStatus::Pending},
    {"PAUSED",     InstanceStatus::Pending},
    {"EXITED",     InstanceStatus::Stopped},
    {"DEAD",       InstanceStatus::Failed},
    {"TERMINATED", InstanceStatus::Terminated},
};

// GraphQL error codes and message fragments → error kinds (docs/providers.md, RunPod "Transport").
// extensions.code is RunPod's own classification and is read first; only without a known code are
// message fragments tried, in table order (the specific before the general: "not enough balance"
// is quota, "not enough" alone is capacity).
struct ErrorRow {
    std::string_view fragment;  // matched case-insensitively
    common::ErrorKind kind;
};
constexpr ErrorRow kErrorCodes[] = {
    {"SUPPLY_CONSTRAINT",                  common::ErrorKind::Capacity},
    {"INSUFFICIENT_BALANCE",               common::ErrorKind::Quota},
    {"UNAUTHENTICATED",                    common::ErrorKind::Auth},
    {"FORBIDDEN",                          common::ErrorKind::Auth},
    {"GRAPHQL_VALIDATION_FAILED",          common::ErrorKind::Usage},
    {"BAD_USER_INPUT",                     common::ErrorKind::Usage},
};
constexpr ErrorRow kErrorMessages[] = {
    {"no longer any instances available",  common::ErrorKind::Capacity},
    {"insufficient balance",               common::ErrorKind::Quota},
    {"balance",                            common::ErrorKind::Quota},
    {"unauthorized",                       common::ErrorKind::Auth},
    {"not found",                          common::ErrorKind::NotFound},
    {"not enough",                         common::ErrorKind::Capacity},
};

const char * const kPodFields =
    "id name imageName desiredStatus costPerHr gpuCount memoryInGb vcpuCount containerDiskInGb uptimeSeconds "
    "lastStatusChange podType machine { podHostId gpuDisplayName location } "
    "runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } gpus { id } }";

// Offer ids are "<gpuTypeId>/<cloud>[/<data centre>]/<count>[/spot]" (spaces and slashes inside the
// server's ids become '_'): the count is always the last number, so renting an offer by id knows it.
std::string id_part(std::string s) {
    for (char & c : s)
        if (c == ' ' || c == '/') c = '_';
    return s;
}

class RunPod final : public Provider {
public:
    explicit RunPod(const ProviderContext & c) : ctx_(c), api_("runpod", c.base_url, c.api_key, c.http) {}

    std::string_view name() const override { return "runpod"; }
    ProviderCaps caps() const override {
        return {.stop_start = true, .native_deadline = true, .spot = true, .self_end = SelfEnd::ScopedRequest};
    }

    std::vector<Offer> search(const OfferFilter & f) override {
        // Spot offers are priced from secureSpotPrice/communitySpotPrice and rented with a bid.
        const bool spot = f.spot.value_or(false);
        int count = f.gpu_count.value_or(1);
        if (!f.gpu_count && !f.offer_id.empty()) count = runpod_offer_gpu_count(f.offer_id);
        // One query per cloud (lowestPrice depends on secureCloud); both run at once.
        auto query_cloud = [this, &f, count, spot](bool secure) {
            auto data = graphql(runpod_search_request(f, count, secure), "search offers", common::http::Retry::Idempotent);
            return runpod_parse_offers(data, count, secure, spot);
        };
        std::vector<std::future<std::vector<Offer>>> parts;
        for (bool secure : {true, false}) {
            if (f.cloud && (*f.cloud == CloudType::Secure) != secure) continue;
            parts.push_back(std::async(std::launch::async, query_cloud, secure));
        }
        std::vector<Offer> out;
        for (auto & p : parts) {
            auto offers = p.get();
            out.insert(out.end(), offers.begin(), offers.end());
        }
        // podFindAndDeployOnDemand picks the machine at deploy time: the RAM floor the search asked
        // lowestPrice for must travel to the create too, or any machine of the type may be given.
        if (f.min_ram_gb)
            for (auto & o : out) o.create_data["minMemoryInGb"] = static_cast<int>(std::ceil(*f.min_ram_gb));
        return out;
    }

    Instance create(const CreateRequest & r) override {
        const char * mutation = r.offer.spot ? "podRentInterruptable" : "podFindAndDeployOnDemand";
        auto data = graphql(runpod_create_request(r), "create " + r.name, common::http::Retry::NotIdempotent);
        const auto & pod = data.contains(mutation) ? data[mutation] : nlohmann::json();
        if (!pod.is_object())
            throw common::Error(common::ErrorKind::Capacity,
                                "runpod: create " + r.name + ": no pod returned for offer " + r.offer.offer_id)
                .with("provider", "runpod");
        return runpod_parse_pod(pod);
    }

    std::optional<Instance> get(std::string_view id) override {
        std::string q = "query Pod($input: PodFilter) { pod(input: $input) { " + std::string(kPodFields) + " } }";
        bool pod_not_found = false;
        auto data = graphql({{"query", q}, {"variables", {{"input", {{"podId", std::string(id)}}}}}},
                            "get " + std::string(id), common::http::Retry::Idempotent, &pod_not_found);
        if (pod_not_found) return std::nullopt;
        if (!data.contains("pod")) throw bad_response("runpod", "get " + std::string(id), "GraphQL data has no pod field");
        if (data["pod"].is_null()) return std::nullopt;  // the API's own answer for a pod that is gone
        return runpod_parse_pod(data["pod"]);
    }

    std::vector<Instance> list() override {
        std::string q = "query Pods { myself { pods { " + std::string(kPodFields) + " } } }";
        auto data = graphql({{"query", q}, {"variables", nlohmann::json::object()}}, "list pods",
                            common::http::Retry::Idempotent);
        return runpod_parse_pods(data);
    }

    void terminate(std::string_view id) override {
        // "pod not found to terminate" (an error inside HTTP 200) means already gone; an HTTP 404 does not.
        bool pod_not_found = false;
        graphql(*runpod_terminate_call(id).body, "terminate " + std::string(id), common::http::Retry::Idempotent,
                &pod_not_found);
    }

    // The pod-scoped key RunPod puts in PID 1's environment may terminate its own pod (docs/providers.md,
    // RunPod "Deadline and scoped key"). Errors come back inside HTTP 200, so a body with "errors" failed.
    SelfEndRequest self_end_request(std::string_view id) const override {
        return {api_.describe(runpod_terminate_call(id)), "RUNPOD_API_KEY", "\"errors\"", {}};
    }

    void stop(std::string_view id) override {
        std::string q = "mutation Stop($input: PodStopInput!) { podStop(input: $input) { id desiredStatus } }";
        graphql({{"query", q}, {"variables", {{"input", {{"podId", std::string(id)}}}}}}, "stop " + std::string(id),
                common::http::Retry::Idempotent);
    }

    void start(std::string_view id) override {
        auto pod = get(id);
        if (!pod) throw common::Error::not_found("runpod:" + std::string(id));
        std::string q = "mutation Resume($input: PodResumeInput!) { podResume(input: $input) { id desiredStatus } }";
        graphql({{"query", q}, {"variables", {{"input", {{"podId", std::string(id)}, {"gpuCount", std::max(1, pod->gpu_count)}}}}}},
                "start " + std::string(id), common::http::Retry::Idempotent);
    }

private:
    // `request` is {"query": constant text, "variables": {...}}: values never become GraphQL text.
    // With `pod_not_found`, RunPod's own "pod not found" error (inside an HTTP 200) sets it and
    // returns null instead of throwing; nothing else ever counts as gone (an HTTP 404 is a wrong
    // route or a proxy, an Error(Network)).
    nlohmann::json graphql(const nlohmann::json & request, const std::string & what, common::http::Retry retry,
                           bool * pod_not_found = nullptr) {
        // A GraphQL error that is not about the request itself (an upstream hiccup, no data) is as
        // transient as a 503: idempotent calls ask again, bounded by the HTTP layer's attempts.
        common::http::RetryCheck transient = [&what](const common::http::Response & resp) -> std::string {
            if (!is_2xx(resp.status)) return "";
            try {
                runpod_graphql_data(parse_body("runpod", what, resp.body), what);
            } catch (const common::Error & e) {
                if (e.kind() == common::ErrorKind::Network) return e.message();
            }
            return "";
        };
        auto response = api_.send("POST", "/graphql", request, retry, transient);
        if (!is_2xx(response.status)) throw api_status_error("runpod", what, response);
        auto doc = api_.parse(response, what);
        if (pod_not_found && runpod_says_pod_not_found(doc)) {
            *pod_not_found = true;
            return nullptr;
        }
        std::string context = what;
        if (response.attempts > 1) context += " (after " + std::to_string(response.attempts) + " attempts)";
        return runpod_graphql_data(doc, context);
    }

    ProviderContext ctx_;
    JsonApi api_;
};

}  // namespace

InstanceStatus runpod_status(std::string_view s) {
    return lookup_status(kStatusMap, s);
}

common::Error runpod_graphql_error(const nlohmann::json & errors, const std::string & what) {
    std::string message, code;
    if (errors.is_array() && !errors.empty() && errors[0].is_object()) {
        message = json_string(errors[0], "message");
        if (errors[0].contains("extensions")) code = json_string(errors[0]["extensions"], "code");
    }
    // Bounded: a server message is shown to the user, not a megabyte of it.
    message = common::http::safe_text(message, 300);
    code = common::http::safe_text(code, 80);
    std::optional<common::ErrorKind> kind;
    for (const auto & row : kErrorCodes)
        if (!kind && contains_ci(code, row.fragment)) kind = row.kind;
    for (const auto & row : kErrorMessages)
        if (!kind && contains_ci(message, row.fragment)) kind = row.kind;
    std::string text = "runpod: " + what + ": " + (message.empty() ? "GraphQL error" : message);
    if (!code.empty()) text += " (" + code + ")";
    return common::Error(kind.value_or(common::ErrorKind::Network), common::log::redact(text)).with("provider", "runpod");
}

bool runpod_says_pod_not_found(const nlohmann::json & doc) {
    if (!doc.is_object() || !doc.contains("errors") || !doc["errors"].is_array()) return false;
    for (const auto & e : doc["errors"]) {
        if (!e.is_object() || !e.contains("message") || !e["message"].is_string()) continue;
        const std::string & m = e["message"].get_ref<const std::string &>();
        if (m.size() <= 300 && contains_ci(m, "pod not found")) return true;
    }
    return false;
}

nlohmann::json runpod_graphql_data(const nlohmann::json & doc, const std::string & what) {
    if (doc.is_object() && doc.contains("errors") && doc["errors"].is_array() && !doc["errors"].empty())
        throw runpod_graphql_error(doc["errors"], what);
    if (!doc.is_object() || !doc.contains("data") || !doc["data"].is_object())
        throw bad_response("runpod", what, "GraphQL response has no data");
    return doc["data"];
}

int runpod_offer_gpu_count(std::string_view offer_id) {
    std::string id(offer_id);
    if (id.size() > 5 && id.compare(id.size() - 5, 5, "/spot") == 0) id.resize(id.size() - 5);
    auto slash = id.rfind('/');
    std::string tail = slash == std::string::npos ? "" : id.substr(slash + 1);
    bool digits = !tail.empty() && tail.size() <= 2 &&
                  std::all_of(tail.begin(), tail.end(), [](unsigned char c) { return std::isdigit(c); });
    int count = digits ? std::stoi(tail) : 0;
    if (count < 1 || count > 64)
        throw common::Error::usage("--offer runpod:" + std::string(offer_id) +
                                   ": not a RunPod offer id (<gpu type>/<cloud>[/<data centre>]/<gpu count>[/spot], "
                                   "as `broker search` prints)");
    return count;
}

nlohmann::json runpod_search_request(const OfferFilter & f, int gpu_count, bool secure) {
    // Constant text: every value travels in `variables`, so nothing a user or a server wrote can
    // become GraphQL syntax. dataCenters carries where each GPU type is stocked (the offers' region).
    static const std::string query =
        "query GpuTypes($lowestPrice: GpuLowestPriceInput) { gpuTypes { id displayName manufacturer memoryInGb "
        "secureCloud communityCloud securePrice communityPrice secureSpotPrice communitySpotPrice maxGpuCount "
        "lowestPrice(input: $lowestPrice) { minimumBidPrice uninterruptablePrice stockStatus maxUnreservedGpuCount "
        "availableGpuCounts countryCode } } dataCenters { id name location gpuAvailability { gpuTypeId stockStatus } } }";
    nlohmann::json lp = {{"gpuCount", gpu_count}, {"secureCloud", secure}};
    // validate_filter bounds both, so the casts are defined.
    if (f.min_ram_gb) lp["minMemoryInGb"] = static_cast<int>(std::ceil(*f.min_ram_gb));
    if (f.min_disk_gb) lp["minDisk"] = static_cast<int>(std::ceil(*f.min_disk_gb));
    return {{"query", query}, {"variables", {{"lowestPrice", lp}}}};
}

int runpod_min_memory_gb(const Offer & offer) {
    // The search's --min-ram (create_data), else what the offer states, else 8 GB (RunPod offers
    // carry no RAM figure; validate_filter bounds --min-ram, so the cast is defined).
    const auto & d = offer.create_data;
    double gb = offer.cpu_ram_gb.value_or(8);
    if (d.is_object() && d.contains("minMemoryInGb") && d["minMemoryInGb"].is_number()) gb = d["minMemoryInGb"].get<double>();
    return static_cast<int>(std::clamp(std::ceil(gb), 1.0, 100000.0));
}

nlohmann::json runpod_create_request(const CreateRequest & r) {
    const auto & d = r.offer.create_data;
    auto text = [&d](const char * key, const char * fallback) {
        return d.is_object() && d.contains(key) && d[key].is_string() ? d[key].get<std::string>() : std::string(fallback);
    };
    nlohmann::json env = nlohmann::json::array();
    for (const auto & [k, v] : r.env) env.push_back({{"key", k}, {"value", v}});
    // RunPod images' /start.sh writes authorized_keys from PUBLIC_KEY (docs/providers.md, RunPod "SSH").
    if (!r.ssh_public_key.empty()) env.push_back({{"key", "PUBLIC_KEY"}, {"value", r.ssh_public_key}});
    nlohmann::json input = {
        {"cloudType", text("cloudType", "SECURE")},
        {"gpuTypeId", text("gpuTypeId", "")},
        {"gpuCount", r.offer.gpu_count},
        {"name", r.name},
        {"imageName", r.image},
        {"containerDiskInGb", r.disk_gb},
        {"volumeInGb", 0},
        {"minVcpuCount", 1},
        {"minMemoryInGb", runpod_min_memory_gb(r.offer)},
        {"ports", "22/tcp"},
        {"env", env},
        {"startSsh", true},
        {"supportPublicIp", true},
    };
    // The offer's place: a secure offer is one data centre, a community offer one country.
    if (std::string dc = text("dataCenterId", ""); !dc.empty()) input["dataCenterId"] = dc;
    if (std::string cc = text("countryCode", ""); !cc.empty()) input["countryCode"] = cc;
    if (r.deadline_unix > 0) input["terminateAfter"] = iso8601_utc(r.deadline_unix);
    // On-demand and spot are different mutations; a spot rent bids the offer's per-GPU spot price.
    const char * mutation = r.offer.spot ? "podRentInterruptable" : "podFindAndDeployOnDemand";
    if (r.offer.spot) input["bidPerGpu"] = r.offer.price_usd_per_hour_gpu;
    std::string q = std::string("mutation Deploy($input: ") +
                    (r.offer.spot ? "PodRentInterruptableInput!" : "PodFindAndDeployOnDemandInput!") + ") { " +
                    mutation + "(input: $input) { " + std::string(kPodFields) + " } }";
    return {{"query", q}, {"variables", {{"input", input}}}};
}

namespace {
struct DataCentre {
    std::string id, location, stock;
};
// gpuTypeId → the data centres that stock it (gpuAvailability.stockStatus not null), in the
// server's order, built in one pass over dataCenters (not once per GPU type: that is types × data
// centres × entries on a hostile answer). At most kMaxPlacesPerType per type. nullopt when the
// answer has no dataCenters list at all.
using DataCentreIndex = std::unordered_map<std::string, std::vector<DataCentre>>;
std::optional<DataCentreIndex> index_data_centres(const nlohmann::json & data) {
    if (!data.contains("dataCenters") || data["dataCenters"].is_null()) return std::nullopt;
    const auto & dcs = data["dataCenters"];
    if (!dcs.is_array()) throw BadResponse("dataCenters is not a list");
    DataCentreIndex index;
    bool capped = false;
    for (const auto & dc : dcs) {
        if (!dc.is_object() || !json_bool(dc, "listed", true)) continue;
        std::string id = json_string(dc, "id");
        if (id.empty() || !dc.contains("gpuAvailability") || !dc["gpuAvailability"].is_array()) continue;
        const std::string location = json_string(dc, "location");
        for (const auto & a : dc["gpuAvailability"]) {
            std::string stock = json_string(a, "stockStatus");
            if (stock.empty()) continue;
            auto & places = index[json_string(a, "gpuTypeId")];
            if (!places.empty() && places.back().id == id) continue;  // one entry per data centre
            if (places.size() >= kMaxPlacesPerType) {
                capped = true;
                continue;
            }
            places.push_back({id, location, stock});
        }
    }
    if (capped)
        common::log::warn("runpod: a GPU type is stocked in more than ", kMaxPlacesPerType,
                          " data centres; the others are left out");
    return index;
}
}  // namespace

ApiCall runpod_terminate_call(std::string_view id) {
    static const char * const q = "mutation Terminate($input: PodTerminateInput!) { podTerminate(input: $input) }";
    return {"POST", "/graphql", nlohmann::json{{"query", q}, {"variables", {{"input", {{"podId", std::string(id)}}}}}}};
}

std::vector<Offer> runpod_parse_offers(const nlohmann::json & data, int gpu_count, bool secure, bool spot) {
    return guarded("runpod", "search offers", [&] {
        std::vector<Offer> out;
        if (!data.is_object() || !data.contains("gpuTypes") || !data["gpuTypes"].is_array())
            throw BadResponse("GraphQL data has no gpuTypes list");
        const auto dc_index = secure ? index_data_centres(data) : std::nullopt;
        static const std::vector<DataCentre> kNone;
        bool full = false;
        auto add = [&](Offer && o) {
            if (out.size() >= kMaxOffersPerProvider) {
                full = true;
                return;
            }
            if (usable_offer(o)) out.push_back(std::move(o));
        };
        for (const auto & g : data["gpuTypes"]) {
            if (full) break;
            if (!g.is_object()) throw BadResponse("a gpuTypes entry is not an object");
            if (!json_bool(g, secure ? "secureCloud" : "communityCloud", false)) continue;
            const nlohmann::json & lp = g.contains("lowestPrice") ? g["lowestPrice"] : nlohmann::json();
            // gpuhunt: a null stockStatus means "not offered" at this count and cloud.
            std::string stock = json_string(lp, "stockStatus");
            if (stock.empty()) continue;
            auto per_gpu = json_number(g, spot ? (secure ? "secureSpotPrice" : "communitySpotPrice")
                                               : (secure ? "securePrice" : "communityPrice"));
            if (!per_gpu || *per_gpu <= 0) continue;
            int max_count = json_int(g, "maxGpuCount", 0);
            if (max_count > 0 && gpu_count > max_count) continue;
            Offer o;
            o.provider = "runpod";
            std::string id = json_string(g, "id");
            o.manufacturer = canonical_manufacturer(json_string(g, "manufacturer"));
            std::string display = json_string(g, "displayName");
            o.gpu_model = canonical_gpu_model(display.empty() ? id : display);
            o.vram_gb_per_gpu = json_number(g, "memoryInGb").value_or(0);
            o.gpu_count = gpu_count;
            o.price_usd_per_hour_gpu = *per_gpu;
            o.price_usd_per_hour_total = *per_gpu * gpu_count;
            o.spot = spot;
            o.cloud = secure ? CloudType::Secure : CloudType::Community;
            o.availability = stock;
            o.create_data = {{"gpuTypeId", id}, {"cloudType", secure ? "SECURE" : "COMMUNITY"}};
            const std::string cloud = secure ? "secure" : "community";
            const std::string suffix = std::to_string(gpu_count) + (spot ? "/spot" : "");
            // Region: secure cloud rents in a data centre (one offer per data centre that stocks the
            // type, rented there with dataCenterId); community cloud in a country (lowestPrice's
            // countryCode, rented there with countryCode). docs/providers.md (RunPod "Offers"), broker/README.md.
            const std::vector<DataCentre> * dcs = &kNone;
            if (dc_index) {
                auto it = dc_index->find(id);
                if (it != dc_index->end()) dcs = &it->second;
            }
            if (!dcs->empty()) {
                for (const auto & dc : *dcs) {
                    Offer d = o;
                    d.offer_id = id_part(id) + "/" + cloud + "/" + id_part(dc.id) + "/" + suffix;
                    d.region = dc.location.empty() ? dc.id : dc.id + " (" + dc.location + ")";
                    d.availability = dc.stock;
                    d.create_data["dataCenterId"] = dc.id;
                    add(std::move(d));
                }
                continue;
            }
            o.offer_id = id_part(id) + "/" + cloud + "/" + suffix;
            if (!secure) {
                std::string country = json_string(lp, "countryCode");
                if (!country.empty()) {
                    o.region = country;
                    o.create_data["countryCode"] = country;
                }
            }
            add(std::move(o));
        }
        if (full)
            common::log::warn("runpod: more than ", kMaxOffersPerProvider, " offers in one answer; the rest are left out");
        return out;
    });
}

Instance runpod_parse_pod(const nlohmann::json & p) {
    return guarded("runpod", "read pod", [&] {
        if (!p.is_object()) throw BadResponse("a pod is not an object");
        Instance i;
        i.provider = "runpod";
        i.id = json_string(p, "id");
        i.name = json_string(p, "name");
        i.status_raw = json_string(p, "desiredStatus");
        i.status = runpod_status(i.status_raw);
        i.gpu_count = json_int(p, "gpuCount", 0);
        i.price_usd_per_hour = json_number(p, "costPerHr");
        if (p.contains("machine") && p["machine"].is_object())
            i.gpu_model = canonical_gpu_model(json_string(p["machine"], "gpuDisplayName"));
        const nlohmann::json & runtime = p.contains("runtime") ? p["runtime"] : nlohmann::json();
        if (runtime.is_object()) {
            i.uptime_s = json_number(runtime, "uptimeInSeconds");
            if (runtime.contains("ports") && runtime["ports"].is_array()) {
                for (const auto & port : runtime["ports"]) {
                    if (json_int(port, "privatePort") == 22 && json_bool(port, "isIpPublic", false) &&
                        json_string(port, "type") != "http") {
                        i.ssh = SshEndpoint{json_string(port, "ip"), json_port(port, "publicPort").value_or(22), "root", ""};
                        break;
                    }
                }
            }
        } else if (i.status == InstanceStatus::Running) {
            i.status_detail = "container not up yet (runtime is null)";
        }
        if (!i.uptime_s) i.uptime_s = json_number(p, "uptimeSeconds");
        keep_valid_ssh(i);
        return i;
    });
}

std::vector<Instance> runpod_parse_pods(const nlohmann::json & data) {
    return guarded("runpod", "list pods", [&] {
        if (!data.is_object() || !data.contains("myself") || !data["myself"].is_object())
            throw BadResponse("GraphQL data has no myself object");
        const auto & myself = data["myself"];
        if (!myself.contains("pods") || !myself["pods"].is_array()) throw BadResponse("myself has no pods list");
        std::vector<Instance> out;
        for (const auto & p : myself["pods"]) {
            Instance i = runpod_parse_pod(p);
            if (parse_instance_name(i.name)) out.push_back(std::move(i));
        }
        return out;
    });
}

std::unique_ptr<Provider> make_runpod(const ProviderContext & c) { return std::make_unique<RunPod>(c); }

}  // namespace broker::providers
