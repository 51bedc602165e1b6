// Prime Intellect through its REST API v1 (<base>/api/v1/...), following docs/providers.md#prime-intellect.
// Traps handled here:
//  - Prime resells other clouds: provider.type in a create must be the offer's own `provider`;
//  - `image` is a Prime image name from the offer's images[], not a Docker reference;
//  - offer ids are never split on '-': cloudId and dataCenter travel as separate fields;
//  - a pod is up only when status is ACTIVE and installation finished; sshConnection may be a
//    string, a list (one per node) or [null] ("not yet");
//  - prices.onDemand is the whole configuration's $/hour (the official CLI shows it per config).
#include <algorithm>
#include <cctype>
#include <cmath>

#include "broker/providers/json_api.h"
#include "broker/providers/providers.h"
#include "common/log.h"

namespace broker::providers {

namespace {

constexpr StatusRow kStatusMap[] = {
    {"PROVISIONING", InstanceStatus::Pending},
    {"PENDING",      InstanceStatus::Pending},
    {"ACTIVE",       InstanceStatus::Running},  // Pending until installation finished (see prime_status)
    {"STOPPED",      InstanceStatus::Stopped},
    {"DELETING",     InstanceStatus::Terminating},  // a DELETE is under way: wait, do not send it again
    {"TERMINATING",  InstanceStatus::Terminating},
    {"TERMINATED",   InstanceStatus::Terminated},
    {"ERROR",        InstanceStatus::Failed},
    {"FAILED",       InstanceStatus::Failed},
};

class Prime final : public Provider {
public:
    explicit Prime(const ProviderContext & c) : api_("primeintellect", c.base_url, c.api_key, c.http) {}

    std::string_view name() const override { return "primeintellect"; }
    ProviderCaps caps() const override { return {.stop_start = false, .native_deadline = false, .spot = true}; }

    std::vector<Offer> search(const OfferFilter & f) override {
        std::vector<Offer> out;
        for (int page = 1; page <= 50; ++page) {
            std::string path = "/api/v1/availability/gpus?page=" + std::to_string(page) + "&page_size=100";
            if (f.gpu_count) path += "&gpu_count=" + std::to_string(*f.gpu_count);
            auto body = api_.call("GET", path, "search offers");
            auto offers = prime_parse_offers(body);
            if (out.size() + offers.size() > kMaxOffersPerProvider) {
                offers.resize(kMaxOffersPerProvider - out.size());
                out.insert(out.end(), offers.begin(), offers.end());
                common::log::warn("primeintellect: more than ", kMaxOffersPerProvider, " offers; the rest are left out");
                break;
            }
            out.insert(out.end(), offers.begin(), offers.end());
            int total = prime_total_count(body, "totalCount");
            size_t items = body.is_object() && body.contains("items") && body["items"].is_array() ? body["items"].size() : 0;
            if (items == 0 || page * 100 >= total) break;
        }
        return out;
    }

    Instance create(const CreateRequest & r) override {
        auto response = api_.send("POST", "/api/v1/pods/", prime_create_body(r), common::http::Retry::NotIdempotent);
        nlohmann::json body;
        try {
            body = api_.parse(response, "create " + r.name);
        } catch (const common::Error &) {
            if (is_2xx(response.status)) throw;
        }
        if (!is_2xx(response.status)) {
            std::string detail = body.is_object() ? common::http::safe_text(json_string(body, "detail"), 300) : "";
            if (detail.empty()) detail = common::http::safe_text(response.body, 200);
            common::ErrorKind kind = common::ErrorKind::Network;
            if (!create_answer_is_ambiguous(response)) {  // Prime's own JSON refusal: read its detail
                kind = common::http::kind_for_status(response.status);
                if (contains_ci(detail, "availab") || contains_ci(detail, "capacity") || contains_ci(detail, "stock"))
                    kind = common::ErrorKind::Capacity;
                if (contains_ci(detail, "balance") || contains_ci(detail, "funds") || contains_ci(detail, "wallet"))
                    kind = common::ErrorKind::Quota;
            }
            throw common::Error(kind, common::log::redact("primeintellect: create " + r.name + ": HTTP " +
                                                          std::to_string(response.status) + ": " + detail))
                .with("provider", "primeintellect");
        }
        Instance i = prime_parse_pod(body);
        if (i.id.empty())
            // Accepted, but which pod? A network error makes the caller look it up by name.
            throw common::Error(common::ErrorKind::Network,
                                "primeintellect: create " + r.name + ": the answer names no pod id")
                .with("provider", "primeintellect");
        if (i.name.empty()) i.name = r.name;
        return i;
    }

    std::optional<Instance> get(std::string_view id) override {
        const std::string what = "get " + std::string(id);
        auto response = api_.send("GET", "/api/v1/pods/" + common::http::url_encode(std::string(id)));
        // Gone is Prime's own "pod not found" answer, never a bare 404 (a proxy, a base URL with
        // the API path repeated) and never an empty or null 200 (a cut answer): those say nothing.
        if (prime_says_pod_not_found(response.status, response.body)) return std::nullopt;
        if (!is_2xx(response.status)) throw api_status_error("primeintellect", what, response);
        auto body = api_.parse(response, what);
        if (body.is_null())
            throw bad_response("primeintellect", what,
                               std::string(response.body.empty() ? "empty" : "null") + " answer (HTTP " +
                                   std::to_string(response.status) +
                                   (response.attempts > 1 ? ", after " + std::to_string(response.attempts) + " attempts" : "") +
                                   "), not a pod");
        return prime_parse_pod(body);
    }

    std::vector<Instance> list() override {
        std::vector<Instance> out;
        for (int offset = 0;; offset += 100) {
            // A listing cut short could hide a billing pod from sweep: past the bound it is an error.
            if (offset >= 10000)
                throw bad_response("primeintellect", "list pods",
                                   "the listing did not end within 10000 pods; refusing a partial list");
            auto body = api_.call("GET", "/api/v1/pods?offset=" + std::to_string(offset) + "&limit=100", "list pods");
            size_t page_size = 0;
            auto mine = prime_parse_pods_page(body, page_size);
            out.insert(out.end(), mine.begin(), mine.end());
            if (out.size() > kMaxInstancesListed)
                throw bad_response("primeintellect", "list pods",
                                   "more than " + std::to_string(kMaxInstancesListed) + " of our pods listed; refusing");
            int total = prime_total_count(body, "total_count");
            if (page_size < 100 || offset + 100 >= total) break;
        }
        return out;
    }

    void terminate(std::string_view id) override {
        auto response = api_.send("DELETE", "/api/v1/pods/" + common::http::url_encode(std::string(id)));
        if (prime_says_pod_not_found(response.status, response.body)) return;  // already gone
        if (!is_2xx(response.status)) throw api_status_error("primeintellect", "terminate " + std::string(id), response);
    }

private:
    JsonApi api_;
};

// Prime has no manufacturer field (its `provider` is the underlying cloud): AMD parts are named MI*.
std::string prime_manufacturer(const std::string & gpu_type) {
    std::string l = to_lower(gpu_type);
    if (l.rfind("mi", 0) == 0 || l.find("amd") != std::string::npos || l.find("instinct") != std::string::npos)
        return "AMD";
    return "NVIDIA";
}

}  // namespace

InstanceStatus prime_status(std::string_view status, std::string_view installation_status) {
    for (const auto & row : kStatusMap) {
        if (row.raw == status) {
            // The official CLI shows ACTIVE pods as INSTALLING until installation finished; an
            // installation that FAILED never finishes: the pod has failed (fail fast, then terminate).
            if (row.status == InstanceStatus::Running && (installation_status == "FAILED" || installation_status == "ERROR"))
                return InstanceStatus::Failed;
            if (row.status == InstanceStatus::Running && !installation_status.empty() &&
                installation_status != "FINISHED")
                return InstanceStatus::Pending;
            return row.status;
        }
    }
    return InstanceStatus::Unknown;
}

std::optional<SshEndpoint> prime_parse_ssh(const nlohmann::json & c) {
    return guarded("primeintellect", "read sshConnection", [&]() -> std::optional<SshEndpoint> {
        const nlohmann::json * s = &c;
        if (c.is_array()) {
            if (c.empty() || !c[0].is_string()) return std::nullopt;  // [null]: not yet
            s = &c[0];
        }
        if (!s->is_string()) return std::nullopt;
        std::string text = s->get<std::string>();
        if (text.size() > 300) throw BadResponse("sshConnection longer than 300 characters");
        if (text.rfind("ssh ", 0) == 0) text.erase(0, 4);  // the predecessor saw an "ssh " prefix
        if (text.empty()) return std::nullopt;
        SshEndpoint e;
        e.user = "root";
        std::string target = text;
        auto p = text.find(" -p ");
        if (p != std::string::npos) {
            target = text.substr(0, p);
            std::string port = text.substr(p + 4);
            while (!port.empty() && port.back() == ' ') port.pop_back();
            bool digits = !port.empty() && port.size() <= 5 &&
                          std::all_of(port.begin(), port.end(), [](unsigned char ch) { return std::isdigit(ch); });
            e.port = digits ? std::stoi(port) : 0;
            if (e.port < 1 || e.port > 65535) throw BadResponse("sshConnection port '" + common::http::safe_text(port, 20) + "' is not a TCP port");
        }
        auto at = target.find('@');
        if (at != std::string::npos) {
            e.user = target.substr(0, at);
            e.host = target.substr(at + 1);
        } else {
            e.host = target;
        }
        while (!e.host.empty() && e.host.back() == ' ') e.host.pop_back();
        if (e.host.empty()) return std::nullopt;
        return e;
    });
}

bool prime_says_pod_not_found(long status, const std::string & body) {
    if (status != 404 && status != 410) return false;
    auto doc = try_parse_body(body);
    if (!doc || !doc->is_object() || !doc->contains("detail") || !(*doc)["detail"].is_string()) return false;
    // FastAPI answers an unknown route {"detail": "Not Found"}: only a detail about the pod counts.
    const std::string & detail = (*doc)["detail"].get_ref<const std::string &>();
    return detail.size() <= 300 && contains_ci(detail, "pod") && contains_ci(detail, "not found");
}

int prime_total_count(const nlohmann::json & body, const char * key) {
    return guarded("primeintellect", key, [&] { return json_int(body, key, 0); });
}

std::vector<Offer> prime_parse_offers(const nlohmann::json & body) {
    return guarded("primeintellect", "search offers", [&] {
        std::vector<Offer> out;
        const nlohmann::json * items = &body;
        if (body.is_object() && body.contains("items")) items = &body["items"];
        if (!items->is_array()) throw BadResponse("answer has no items list");
        for (const auto & v : *items) {
            if (out.size() >= kMaxOffersPerProvider) {
                common::log::warn("primeintellect: more than ", kMaxOffersPerProvider, " offers in one answer; the rest are left out");
                break;
            }
            if (!v.is_object()) throw BadResponse("an items entry is not an object");
            Offer o;
            o.provider = "primeintellect";
            std::string cloud_id = json_string(v, "cloudId");
            std::string dc = json_string(v, "dataCenter");
            std::string gpu_type = json_string(v, "gpuType");
            o.gpu_count = json_int(v, "gpuCount", 1);
            bool spot = json_bool(v, "isSpot", false);
            o.offer_id = cloud_id + "/" + (dc.empty() ? "any" : dc) + "/" + std::to_string(o.gpu_count) + (spot ? "/spot" : "");
            o.manufacturer = prime_manufacturer(gpu_type);
            o.gpu_model = canonical_gpu_model(gpu_type);
            o.vram_gb_per_gpu = json_number(v, "gpuMemory").value_or(0);
            std::string security = json_string(v, "security");
            o.cloud = security == "community_cloud" ? CloudType::Community : CloudType::Secure;
            const nlohmann::json & prices = v.contains("prices") ? v["prices"] : nlohmann::json();
            auto price = o.cloud == CloudType::Community ? json_number(prices, "communityPrice") : json_number(prices, "onDemand");
            if (!price) price = json_number(prices, "onDemand");
            if (!price || *price <= 0) continue;
            o.price_usd_per_hour_total = *price;
            o.price_usd_per_hour_gpu = o.gpu_count > 0 ? *price / o.gpu_count : *price;
            o.spot = spot;
            o.region = dc.empty() ? json_string(v, "country") : dc;
            o.availability = json_string(v, "stockStatus");
            if (v.contains("memory")) o.cpu_ram_gb = json_number(v["memory"], "defaultCount");
            if (v.contains("disk")) o.disk_gb = json_number(v["disk"], "defaultCount");
            if (v.contains("vcpu"))
                if (auto c = json_number(v["vcpu"], "defaultCount")) o.vcpus = checked_int(*c, "vcpu.defaultCount");
            o.underlying_provider = json_string(v, "provider");
            nlohmann::json images = nlohmann::json::array();
            if (v.contains("images") && v["images"].is_array())
                for (const auto & im : v["images"])
                    if (im.is_string()) images.push_back(im);
            o.create_data = {
                {"cloudId", cloud_id},
                {"gpuType", gpu_type},
                {"socket", json_string(v, "socket")},
                {"dataCenterId", dc},
                {"country", json_string(v, "country")},
                {"security", security.empty() ? "secure_cloud" : security},
                {"provider", o.underlying_provider},
                {"images", images},
                {"disk_default", o.disk_gb ? nlohmann::json(*o.disk_gb) : nlohmann::json(nullptr)},
            };
            if (usable_offer(o)) out.push_back(std::move(o));
        }
        return out;
    });
}

nlohmann::json prime_create_body(const CreateRequest & r) {
    const auto & d = r.offer.create_data;
    // `image` must be one of the offer's Prime image names; a Docker reference is not accepted.
    std::string image;
    const auto images = d.contains("images") && d["images"].is_array() ? d["images"] : nlohmann::json::array();
    for (const auto & im : images)
        if (im.is_string() && im.get<std::string>() == r.image) image = r.image;
    if (image.empty()) {
        image = "ubuntu_22_cuda_12";
        for (const auto & im : images)
            if (im.is_string()) {
                image = im.get<std::string>();
                break;
            }
    }
    nlohmann::json env = nlohmann::json::array();
    for (const auto & [k, v] : r.env) env.push_back({{"key", k}, {"value", v}});
    if (!r.ssh_public_key.empty()) env.push_back({{"key", "PUBLIC_KEY"}, {"value", r.ssh_public_key}});
    nlohmann::json pod = {
        {"cloudId", d.value("cloudId", "")},
        {"gpuType", d.value("gpuType", "")},
        {"gpuCount", r.offer.gpu_count},
        {"name", r.name},
        {"diskSize", r.disk_gb},
        {"image", image},
        {"security", d.value("security", "secure_cloud")},
        {"envVars", env},
        {"maxPrice", r.offer.price_usd_per_hour_total},
    };
    // Optional location fields are sent only when the offer named them (an empty string is a mismatch).
    for (const char * key : {"socket", "dataCenterId", "country"}) {
        std::string v = d.value(key, "");
        if (!v.empty()) pod[key] = v;
    }
    return {{"pod", pod}, {"provider", {{"type", d.value("provider", "")}}}};
}

Instance prime_parse_pod(const nlohmann::json & p) {
    return guarded("primeintellect", "read pod", [&] {
        if (!p.is_object()) throw BadResponse("a pod is not an object");
        Instance i;
        i.provider = "primeintellect";
        i.id = json_string(p, "id");
        i.name = json_string(p, "name");
        i.status_raw = json_string(p, "status");
        std::string install = json_string(p, "installationStatus");
        i.status = prime_status(i.status_raw, install);
        if (!install.empty() && install != "FINISHED") {
            i.status_detail = "installation " + common::http::safe_text(install, 100);
            if (auto pr = json_number(p, "installationProgress"))
                i.status_detail += " " + std::to_string(checked_int(*pr, "installationProgress")) + "%";
        }
        std::string failure = json_string(p, "installationFailure");
        if (!failure.empty()) i.status_detail = common::http::safe_text(failure, 300);
        std::string gpu = json_string(p, "gpuName");
        if (gpu.empty()) gpu = json_string(p, "gpuType");
        i.gpu_model = canonical_gpu_model(gpu);
        i.gpu_count = json_int(p, "gpuCount", 0);
        i.price_usd_per_hour = json_number(p, "priceHr");
        if (p.contains("sshConnection")) i.ssh = prime_parse_ssh(p["sshConnection"]);
        keep_valid_ssh(i);
        return i;
    });
}

std::vector<Instance> prime_parse_pods_page(const nlohmann::json & body, size_t & page_size) {
    return guarded("primeintellect", "list pods", [&] {
        // Documented {"data": [...]}; older clients also saw a bare list or {"pods": [...]}.
        const nlohmann::json * pods = &body;
        if (body.is_object() && body.contains("data")) pods = &body["data"];
        else if (body.is_object() && body.contains("pods")) pods = &body["pods"];
        if (!pods->is_array()) throw BadResponse("answer has no list of pods");
        std::vector<Instance> out;
        for (const auto & p : *pods) {
            Instance i = prime_parse_pod(p);
            if (parse_instance_name(i.name)) out.push_back(std::move(i));
        }
        page_size = pods->size();
        return out;
    });
}

std::unique_ptr<Provider> make_primeintellect(const ProviderContext & c) { return std::make_unique<Prime>(c); }

}  // namespace broker::providers
