// Lambda Cloud through its REST API v1 (<base>/api/v1/...), following providers-api.md §3.
// Traps handled here:
//  - the SSH user is `ubuntu`, not root; `ip` is null while booting;
//  - launch takes quantity 1 and exactly one ssh_key_names entry: our key is found by its key
//    material among the account's keys, or registered under a toolkit name;
//  - price_cents_per_hour is cents for the whole instance; VRAM is parsed from the description;
//  - launch is rate-limited (429 → retried by the HTTP layer, which is safe: not processed);
//    instance_ids may come back empty (capacity); terminate may be partial (callers re-list).
#include <regex>

#include "broker/providers/json_api.h"
#include "broker/providers/providers.h"
#include "common/log.h"

namespace broker::providers {

namespace {

constexpr StatusRow kStatusMap[] = {
    {"booting",     InstanceStatus::Pending},
    {"active",      InstanceStatus::Running},
    {"unhealthy",   InstanceStatus::Failed},
    {"terminating", InstanceStatus::Terminating},
    {"terminated",  InstanceStatus::Terminated},
};

// Lambda error codes (OpenAPI) → kinds.
struct ErrorRow {
    std::string_view code;
    common::ErrorKind kind;
};
constexpr ErrorRow kErrorMap[] = {
    {"global/invalid-api-key",                        common::ErrorKind::Auth},
    {"global/account-inactive",                       common::ErrorKind::Auth},
    {"global/quota-exceeded",                         common::ErrorKind::Quota},
    {"instance-operations/launch/insufficient-capacity", common::ErrorKind::Capacity},
    {"global/object-does-not-exist",                  common::ErrorKind::NotFound},
    {"global/invalid-parameters",                     common::ErrorKind::Usage},
};

std::string key_material(const std::string & public_key) {
    // "ssh-ed25519 AAAA... comment" → "ssh-ed25519 AAAA..."
    auto first = public_key.find(' ');
    if (first == std::string::npos) return public_key;
    auto second = public_key.find(' ', first + 1);
    std::string s = public_key.substr(0, second);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
}

class Lambda final : public Provider {
public:
    explicit Lambda(const ProviderContext & c) : api_("lambda", c.base_url, c.api_key, c.http) {}

    std::string_view name() const override { return "lambda"; }
    ProviderCaps caps() const override { return {.stop_start = false, .native_deadline = false, .spot = false}; }

    std::vector<Offer> search(const OfferFilter & f) override {
        if (f.spot && *f.spot) return {};  // Lambda has no interruptible instances
        return lambda_parse_offers(call("GET", "/api/v1/instance-types", "search offers"));
    }

    Instance create(const CreateRequest & r) override {
        std::string key_name = ensure_key(r.ssh_public_key);
        nlohmann::json body = {
            {"region_name", r.offer.create_data.value("region", "")},
            {"instance_type_name", r.offer.create_data.value("instance_type", "")},
            {"ssh_key_names", nlohmann::json::array({key_name})},
            {"quantity", 1},
            {"name", r.name},
        };
        auto data = call("POST", "/api/v1/instance-operations/launch", "create " + r.name, body,
                         common::http::Retry::NotIdempotent);
        const auto & ids = data["instance_ids"];
        if (!ids.is_array() || ids.empty())
            throw common::Error(common::ErrorKind::Capacity,
                                "lambda: create " + r.name + ": no instance launched for " + r.offer.offer_id)
                .with("provider", "lambda");
        std::string id = ids[0].get<std::string>();
        if (auto i = get(id)) return *i;
        Instance i;
        i.provider = "lambda";
        i.id = id;
        i.name = r.name;
        i.status = InstanceStatus::Pending;
        return i;
    }

    std::optional<Instance> get(std::string_view id) override {
        try {
            auto data = call("GET", "/api/v1/instances/" + std::string(id), "get " + std::string(id));
            if (!data.is_object()) return std::nullopt;
            return lambda_parse_instance(data);
        } catch (const common::Error & e) {
            if (e.kind() == common::ErrorKind::NotFound) return std::nullopt;
            throw;
        }
    }

    std::vector<Instance> list() override {
        auto data = call("GET", "/api/v1/instances", "list instances");
        std::vector<Instance> out;
        if (!data.is_array()) return out;
        for (const auto & d : data) {
            Instance i = lambda_parse_instance(d);
            if (parse_instance_name(i.name)) out.push_back(std::move(i));
        }
        return out;
    }

    void terminate(std::string_view id) override {
        try {
            call("POST", "/api/v1/instance-operations/terminate", "terminate " + std::string(id),
                 nlohmann::json{{"instance_ids", {std::string(id)}}});
        } catch (const common::Error & e) {
            if (e.kind() == common::ErrorKind::NotFound) return;
            throw;
        }
    }

private:
    // Lambda wraps success in {"data": ...} and errors in {"error": {"code","message"}}.
    nlohmann::json call(const std::string & method, const std::string & path, const std::string & what,
                        const std::optional<nlohmann::json> & body = std::nullopt,
                        common::http::Retry retry = common::http::Retry::Idempotent) {
        auto response = api_.send(method, path, body, retry);
        nlohmann::json doc;
        try {
            doc = api_.parse(response, what);
        } catch (const common::Error &) {
            if (is_2xx(response.status)) throw;
        }
        if (doc.is_object() && doc.contains("error") && doc["error"].is_object()) {
            std::string code = json_string(doc["error"], "code");
            std::string message = json_string(doc["error"], "message");
            common::ErrorKind kind = common::http::kind_for_status(response.status);
            for (const auto & row : kErrorMap)
                if (row.code == code) kind = row.kind;
            throw common::Error(kind, common::log::redact("lambda: " + what + ": " + message + " (" + code + ")"))
                .with("provider", "lambda");
        }
        if (!is_2xx(response.status)) throw common::http::status_error("lambda", what, response);
        if (!doc.is_object() || !doc.contains("data"))
            throw common::Error(common::ErrorKind::Network, "lambda: " + what + ": response has no `data`")
                .with("provider", "lambda");
        return doc["data"];
    }

    std::string ensure_key(const std::string & public_key) {
        if (public_key.empty())
            throw common::Error::usage("lambda: create: an SSH public key is required (Lambda launches need one key name)");
        std::string mine = key_material(public_key);
        auto keys = call("GET", "/api/v1/ssh-keys", "list SSH keys");
        if (keys.is_array()) {
            for (const auto & k : keys)
                if (key_material(json_string(k, "public_key")) == mine) return json_string(k, "name");
        }
        std::string name = "tk-" + std::to_string(std::hash<std::string>{}(mine) % 1000000007ULL);
        auto created = call("POST", "/api/v1/ssh-keys", "add SSH key " + name,
                            nlohmann::json{{"name", name}, {"public_key", mine}});
        std::string got = json_string(created, "name");
        return got.empty() ? name : got;
    }

    JsonApi api_;
};

}  // namespace

InstanceStatus lambda_status(std::string_view s) {
    return lookup_status(kStatusMap, s);
}

std::vector<Offer> lambda_parse_offers(const nlohmann::json & data) {
    static const std::regex vram_re(R"((\d+)\s*GB)");
    std::vector<Offer> out;
    if (!data.is_object()) return out;
    for (const auto & [type_name, entry] : data.items()) {
        if (!entry.is_object() || !entry.contains("instance_type")) continue;
        const auto & t = entry["instance_type"];
        const auto specs = t.contains("specs") ? t["specs"] : nlohmann::json::object();
        int gpus = json_int(specs, "gpus", 0);
        if (gpus <= 0) continue;  // CPU-only types
        std::string gpu_desc = json_string(t, "gpu_description");  // "A10 (24 GB PCIe)"
        std::string desc = json_string(t, "description");          // "1x A10 (24 GB PCIe)"
        std::smatch m;
        double vram = 0;
        if (std::regex_search(gpu_desc, m, vram_re) || std::regex_search(desc, m, vram_re)) vram = std::stod(m[1].str());
        std::string model = gpu_desc.substr(0, gpu_desc.find(" ("));
        std::string form;
        if (auto open = gpu_desc.find('('); open != std::string::npos) {
            // "(80 GB SXM5)" → "SXM5" joins the model name, as the other clouds spell it.
            std::string inside = gpu_desc.substr(open + 1, gpu_desc.find(')') - open - 1);
            auto gb = inside.find("GB");
            if (gb != std::string::npos) form = inside.substr(gb + 2);
            while (!form.empty() && form.front() == ' ') form.erase(0, 1);
        }
        double cents = json_number(t, "price_cents_per_hour").value_or(0);
        const auto regions = entry.contains("regions_with_capacity_available")
                                 ? entry["regions_with_capacity_available"] : nlohmann::json::array();
        for (const auto & region : regions) {
            Offer o;
            o.provider = "lambda";
            std::string region_name = json_string(region, "name");
            o.offer_id = type_name + "@" + region_name;
            o.manufacturer = "NVIDIA";  // implicit on Lambda (SkyPilot, gpuhunt)
            o.gpu_model = canonical_gpu_model(form.empty() ? model : model + " " + form);
            o.vram_gb_per_gpu = vram;
            o.gpu_count = gpus;
            o.price_usd_per_hour_total = cents / 100.0;
            o.price_usd_per_hour_gpu = cents / 100.0 / gpus;
            o.cloud = CloudType::Secure;
            o.region = region_name;
            o.availability = "available";
            o.cpu_ram_gb = json_number(specs, "memory_gib");
            o.disk_gb = json_number(specs, "storage_gib");
            if (auto v = json_number(specs, "vcpus")) o.vcpus = static_cast<int>(*v);
            o.create_data = {{"instance_type", type_name}, {"region", region_name}};
            out.push_back(std::move(o));
        }
    }
    return out;
}

Instance lambda_parse_instance(const nlohmann::json & d) {
    Instance i;
    i.provider = "lambda";
    i.id = json_string(d, "id");
    i.name = json_string(d, "name");
    i.status_raw = json_string(d, "status");
    i.status = lambda_status(i.status_raw);
    if (d.contains("instance_type") && d["instance_type"].is_object()) {
        const auto & t = d["instance_type"];
        std::string gpu_desc = json_string(t, "gpu_description");
        i.gpu_model = canonical_gpu_model(gpu_desc.substr(0, gpu_desc.find(" (")));
        if (t.contains("specs")) i.gpu_count = json_int(t["specs"], "gpus", 0);
        if (auto c = json_number(t, "price_cents_per_hour")) i.price_usd_per_hour = *c / 100.0;
    }
    std::string ip = json_string(d, "ip");
    if (ip.empty()) ip = json_string(d, "hostname");  // the predecessor's fallback
    // The real API has no port (always 22); the test emulator adds x_emulator_ssh_port when its
    // sshd listens elsewhere.
    if (!ip.empty()) {
        std::string user = json_string(d, "x_emulator_ssh_user");  // likewise test-only; real Lambda is ubuntu
        i.ssh = SshEndpoint{ip, json_int(d, "x_emulator_ssh_port", 22), user.empty() ? "ubuntu" : user, ""};
    }
    return i;
}

std::unique_ptr<Provider> make_lambda(const ProviderContext & c) { return std::make_unique<Lambda>(c); }

}  // namespace broker::providers
