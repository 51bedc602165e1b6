// Lambda Cloud through its REST API v1 (<base>/api/v1/...), following docs/providers.md#lambda.
// Traps handled here:
//  - the SSH user is `ubuntu`, not root; `ip` is null while booting;
//  - launch takes quantity 1 and exactly one ssh_key_names entry: our key is found by its key
//    material among the account's keys, or registered under a toolkit name;
//  - price_cents_per_hour is cents for the whole instance; VRAM is parsed from the description;
//  - launch is rate-limited (429 → retried by the HTTP layer, which is safe: not processed; without
//    Retry-After after 12 s, not 0.5 s, see launch_options);
//    instance_ids may come back empty (capacity); terminate may be partial (callers re-list).
#include <algorithm>
#include <cctype>

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

// Launch is rate-limited to one per ~12 s (five a minute; docs/providers.md, Lambda): a 429 on it
// without Retry-After is asked again after 12 s (jittered ±50 %, doubling, at most 60 s), not the
// 0.5/1/2 s that suit the other calls, which would land inside the same limit. SkyPilot's Lambda
// client backs off 10 s first for the same reason.
common::http::Options launch_options(common::http::Options o) {
    o.backoff_base_s = std::max(o.backoff_base_s, 12.0);
    o.backoff_max_s = std::max(o.backoff_max_s, 60.0);
    return o;
}

class Lambda final : public Provider {
public:
    explicit Lambda(const ProviderContext & c)
        : api_("lambda", c.base_url, c.api_key, c.http), launch_api_("lambda", c.base_url, c.api_key, launch_options(c.http)) {}

    std::string_view name() const override { return "lambda"; }
    ProviderCaps caps() const override { return {.stop_start = false, .native_deadline = false, .spot = false}; }

    std::vector<Offer> search(const OfferFilter & f) override {
        if (f.spot && *f.spot) return {};  // Lambda has no interruptible instances
        return lambda_parse_offers(call("GET", "/api/v1/instance-types", "search offers"));
    }

    Instance create(const CreateRequest & r) override {
        std::string key_name = ensure_key(r.ssh_public_key);
        auto text = [&r](const char * key) {
            const auto & d = r.offer.create_data;
            return d.is_object() && d.contains(key) && d[key].is_string() ? d[key].get<std::string>() : std::string();
        };
        nlohmann::json body = {
            {"region_name", text("region")},
            {"instance_type_name", text("instance_type")},
            {"ssh_key_names", nlohmann::json::array({key_name})},
            {"quantity", 1},
            {"name", r.name},
        };
        const std::string what = "create " + r.name;
        auto response = launch_api_.send("POST", "/api/v1/instance-operations/launch", body, common::http::Retry::NotIdempotent);
        if (!is_2xx(response.status) && create_answer_is_ambiguous(response)) {
            // A 5xx or an answer that is not Lambda's JSON: the launch may have happened, whatever
            // its text or code says; Error(Network) makes the caller look the instance up by name.
            common::Error e = common::http::status_error("lambda", what, response);
            throw common::Error(common::ErrorKind::Network, e.message(), e.context());
        }
        nlohmann::json doc;
        try {
            doc = api_.parse(response, what);
        } catch (const common::Error &) {
            if (is_2xx(response.status)) throw;
        }
        auto data = lambda_data(response.status, doc, response.body, what);
        std::string id = lambda_parse_launch(data);
        if (id.empty())
            throw common::Error(common::ErrorKind::Capacity,
                                "lambda: create " + r.name + ": no instance launched for " + r.offer.offer_id)
                .with("provider", "lambda");
        return created(id, r.name);
    }

    std::optional<Instance> get(std::string_view id) override {
        try {
            auto data = call("GET", "/api/v1/instances/" + common::http::url_encode(std::string(id)), "get " + std::string(id));
            if (data.is_null()) return std::nullopt;
            return lambda_parse_instance(data);
        } catch (const common::Error & e) {
            if (e.kind() == common::ErrorKind::NotFound) return std::nullopt;
            throw;
        }
    }

    std::vector<Instance> list() override {
        return lambda_parse_instances(call("GET", "/api/v1/instances", "list instances"));
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
        return lambda_data(response.status, doc, response.body, what);
    }

    std::string ensure_key(const std::string & public_key) {
        if (public_key.empty())
            throw common::Error::usage("lambda: create: an SSH public key is required (Lambda launches need one key name)");
        std::string mine = key_material(public_key);
        std::string found = lambda_find_key(call("GET", "/api/v1/ssh-keys", "list SSH keys"), mine);
        if (!found.empty()) return found;
        std::string name = "tk-" + std::to_string(std::hash<std::string>{}(mine) % 1000000007ULL);
        auto created = call("POST", "/api/v1/ssh-keys", "add SSH key " + name,
                            nlohmann::json{{"name", name}, {"public_key", mine}});
        std::string got = json_string(created, "name");
        return got.empty() || got.size() > 200 ? name : got;
    }

    JsonApi api_;
    JsonApi launch_api_;  // the same API with launch_options(): only the launch call uses it
};

}  // namespace

InstanceStatus lambda_status(std::string_view s) {
    return lookup_status(kStatusMap, s);
}

nlohmann::json lambda_data(long status, const nlohmann::json & doc, const std::string & raw_body, const std::string & what) {
    // Lambda wraps success in {"data": ...} and errors in {"error": {"code","message"}}.
    if (doc.is_object() && doc.contains("error") && doc["error"].is_object()) {
        std::string code = common::http::safe_text(json_string(doc["error"], "code"), 100);
        std::string message = common::http::safe_text(json_string(doc["error"], "message"), 300);
        common::ErrorKind kind = common::http::kind_for_status(status);
        if (is_2xx(status)) kind = common::ErrorKind::Network;  // an error in a 2xx: not a status we can read
        // NotFound ("already gone" to get and terminate) only from Lambda's own code for it: a 404
        // with another code (global/invalid-address: no such route) says nothing about an instance.
        if (kind == common::ErrorKind::NotFound) kind = common::ErrorKind::Network;
        for (const auto & row : kErrorMap)
            if (row.code == code) kind = row.kind;
        throw common::Error(kind, common::log::redact("lambda: " + what + ": " + message + " (" + code + ")"))
            .with("provider", "lambda");
    }
    if (!is_2xx(status)) {
        common::http::Response r;
        r.status = status;
        r.body = raw_body;
        throw api_status_error("lambda", what, r);  // no envelope: never NotFound
    }
    if (!doc.is_object() || !doc.contains("data")) throw bad_response("lambda", what, "response has no `data`");
    return doc["data"];
}

namespace {
// "A10 (24 GB PCIe)" → 24: the number before the first "GB". Hand-written rather than std::regex,
// whose backtracking recursion grows with the input and can exhaust the stack on a hostile string.
double vram_from_description(const std::string & text) {
    for (size_t gb = text.find("GB"); gb != std::string::npos; gb = text.find("GB", gb + 2)) {
        size_t end = gb;
        while (end > 0 && text[end - 1] == ' ') --end;
        size_t begin = end;
        while (begin > 0 && std::isdigit(static_cast<unsigned char>(text[begin - 1])) && end - begin < 6) --begin;
        if (begin < end && (begin == 0 || !std::isdigit(static_cast<unsigned char>(text[begin - 1]))))
            return std::stod(text.substr(begin, end - begin));
    }
    return 0;
}
}  // namespace

std::vector<Offer> lambda_parse_offers(const nlohmann::json & data) {
    return guarded("lambda", "search offers", [&] {
        std::vector<Offer> out;
        if (!data.is_object()) throw BadResponse("instance types are not an object");
        bool full = false, many_regions = false;
        for (const auto & [type_name, entry] : data.items()) {
            if (full) break;
            if (!entry.is_object() || !entry.contains("instance_type") || !entry["instance_type"].is_object()) continue;
            const auto & t = entry["instance_type"];
            const nlohmann::json & specs = t.contains("specs") ? t["specs"] : nlohmann::json();
            int gpus = json_int(specs, "gpus", 0);
            if (gpus <= 0) continue;  // CPU-only types
            std::string gpu_desc = json_string(t, "gpu_description");  // "A10 (24 GB PCIe)"
            std::string desc = json_string(t, "description");          // "1x A10 (24 GB PCIe)"
            double vram = vram_from_description(gpu_desc);
            if (vram == 0) vram = vram_from_description(desc);
            std::string model = gpu_desc.substr(0, gpu_desc.find(" ("));
            std::string form;
            if (auto open = gpu_desc.find('('); open != std::string::npos) {
                // "(80 GB SXM5)" → "SXM5" joins the model name, as the other clouds spell it.
                auto close = gpu_desc.find(')', open);
                std::string inside = gpu_desc.substr(open + 1, close == std::string::npos ? std::string::npos : close - open - 1);
                auto gb = inside.find("GB");
                if (gb != std::string::npos) form = inside.substr(gb + 2);
                while (!form.empty() && form.front() == ' ') form.erase(0, 1);
            }
            double cents = json_number(t, "price_cents_per_hour").value_or(0);
            if (!entry.contains("regions_with_capacity_available")) continue;
            const auto & regions = entry["regions_with_capacity_available"];
            if (!regions.is_array()) throw BadResponse("regions_with_capacity_available is not a list");
            size_t places = 0;
            for (const auto & region : regions) {
                if (out.size() >= kMaxOffersPerProvider) {
                    full = true;
                    break;
                }
                if (places++ >= kMaxPlacesPerType) {
                    many_regions = true;
                    break;
                }
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
                if (auto v = json_number(specs, "vcpus")) o.vcpus = checked_int(*v, "vcpus");
                o.create_data = {{"instance_type", type_name}, {"region", region_name}};
                if (usable_offer(o)) out.push_back(std::move(o));
            }
        }
        if (many_regions)
            common::log::warn("lambda: an instance type lists more than ", kMaxPlacesPerType,
                              " regions with capacity; the others are left out");
        if (full)
            common::log::warn("lambda: more than ", kMaxOffersPerProvider, " offers in one answer; the rest are left out");
        return out;
    });
}

Instance lambda_parse_instance(const nlohmann::json & d) {
    return guarded("lambda", "read instance", [&] {
        if (!d.is_object()) throw BadResponse("an instance is not an object");
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
            i.ssh = SshEndpoint{ip, json_port(d, "x_emulator_ssh_port").value_or(22), user.empty() ? "ubuntu" : user, ""};
        }
        keep_valid_ssh(i);
        return i;
    });
}

std::vector<Instance> lambda_parse_instances(const nlohmann::json & data) {
    return guarded("lambda", "list instances", [&] {
        if (!data.is_array()) throw BadResponse("instances are not a list");
        std::vector<Instance> out;
        for (const auto & d : data) {
            Instance i = lambda_parse_instance(d);
            if (parse_instance_name(i.name)) out.push_back(std::move(i));
        }
        return out;
    });
}

std::string lambda_parse_launch(const nlohmann::json & data) {
    return guarded("lambda", "create", [&]() -> std::string {
        if (!data.is_object() || !data.contains("instance_ids")) throw BadResponse("launch answer has no instance_ids");
        const auto & ids = data["instance_ids"];
        if (!ids.is_array()) throw BadResponse("instance_ids is not a list");
        if (ids.empty()) return "";
        if (!ids[0].is_string() || ids[0].get_ref<const std::string &>().empty() || ids[0].get_ref<const std::string &>().size() > 200)
            throw BadResponse("instance_ids[0] is not an instance id");
        return ids[0].get<std::string>();
    });
}

std::string lambda_find_key(const nlohmann::json & keys, const std::string & material) {
    return guarded("lambda", "list SSH keys", [&]() -> std::string {
        if (!keys.is_array()) throw BadResponse("SSH keys are not a list");
        for (const auto & k : keys)
            if (key_material(json_string(k, "public_key")) == material) return json_string(k, "name");
        return "";
    });
}

std::unique_ptr<Provider> make_lambda(const ProviderContext & c) { return std::make_unique<Lambda>(c); }

}  // namespace broker::providers
