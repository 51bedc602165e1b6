#include "broker/providers/json_api.h"

#include "broker/providers/providers.h"

#include <climits>
#include <cmath>
#include <ctime>
#include <vector>

namespace broker::providers {

common::Error bad_response(std::string_view subject, std::string_view what, std::string_view detail) {
    std::string msg = std::string(subject) + ": " + std::string(what) + ": " + std::string(detail);
    msg = common::http::safe_text(msg, 400);
    return common::Error(common::ErrorKind::Network, common::log::redact(msg)).with("provider", std::string(subject));
}

std::string body_problem(const std::string & body, size_t max_bytes) {
    if (body.size() > max_bytes) return "response larger than " + std::to_string(max_bytes) + " bytes";
    // One pass over the raw text, before nlohmann allocates anything: the nesting depth and each
    // array's length (commas at that array's own level). Strings are skipped, escapes included.
    std::vector<size_t> commas;   // per open array: commas seen at its level
    std::vector<bool> is_array;   // per open container
    bool in_string = false, escaped = false;
    for (char c : body) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        switch (c) {
        case '"': in_string = true; break;
        case '[':
        case '{':
            if (is_array.size() >= kMaxJsonDepth)
                return "response nests deeper than " + std::to_string(kMaxJsonDepth) + " levels";
            is_array.push_back(c == '[');
            commas.push_back(0);
            break;
        case ']':
        case '}':
            if (!is_array.empty()) {
                is_array.pop_back();
                commas.pop_back();
            }
            break;
        case ',':
            if (!is_array.empty() && is_array.back() && ++commas.back() >= kMaxJsonArrayItems)
                return "response has an array of more than " + std::to_string(kMaxJsonArrayItems) + " items";
            break;
        default: break;
        }
    }
    if (!body.empty() && !nlohmann::json::accept(body)) return "response is not JSON";
    return "";
}

nlohmann::json parse_body(std::string_view subject, std::string_view what, const std::string & body, long status,
                          int attempts, size_t max_bytes) {
    if (body.empty()) return nullptr;
    auto fail = [&](const std::string & why) {
        std::string detail = why;
        if (status) detail += " (HTTP " + std::to_string(status) + (attempts > 1 ? ", after " + std::to_string(attempts) + " attempts" : "") + ")";
        if (why == "response is not JSON") {
            detail += ": " + common::http::safe_text(body, 200);
        }
        return bad_response(subject, what, detail);
    };
    std::string why = body_problem(body, max_bytes);
    if (!why.empty()) throw fail(why);
    try {
        return nlohmann::json::parse(body);
    } catch (const nlohmann::json::exception &) {
        throw fail("response is not JSON");  // accept() said yes but a number overflowed (1e999)
    }
}

std::optional<nlohmann::json> try_parse_body(const std::string & body) {
    if (body.empty() || !body_problem(body).empty()) return std::nullopt;
    try {
        return nlohmann::json::parse(body);
    } catch (const nlohmann::json::exception &) {
        return std::nullopt;
    }
}

bool create_answer_is_ambiguous(const common::http::Response & r) {
    if (r.status == 429 || r.status >= 500 || r.status < 200) return true;
    return !is_2xx(r.status) && !try_parse_body(r.body);
}

common::Error api_status_error(std::string_view subject, const std::string & what,
                               const common::http::Response & response, bool provider_says_not_found) {
    common::Error e = common::http::status_error(std::string(subject), what, response);
    if (e.kind() != common::ErrorKind::NotFound || provider_says_not_found) return e;
    std::string msg = e.message() + " (not " + std::string(subject) +
                      "'s own not-found answer: a proxy, a base URL that repeats the API's path, or a changed "
                      "API route; nothing is known about the instance)";
    return common::Error(common::ErrorKind::Network, common::log::redact(msg), e.context());
}

JsonApi::JsonApi(std::string subject, std::string base_url, std::string api_key, common::http::Options options)
    : subject_(std::move(subject)), base_url_(std::move(base_url)), api_key_(std::move(api_key)),
      client_(subject_, options) {
    while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
    common::log::add_secret(api_key_);
}

// The one place a request is put together, for send() (with the key) and describe() (without).
common::http::Request JsonApi::request(const std::string & method, const std::string & path,
                                       const std::optional<nlohmann::json> & body) const {
    common::http::Request r;
    r.method = method;
    r.url = base_url_ + path;
    r.headers.emplace_back("Accept", "application/json");
    if (body) {
        r.headers.emplace_back("Content-Type", "application/json");
        r.body = body->dump();
    }
    return r;
}

broker::HttpCall JsonApi::describe(const ApiCall & call) const {
    auto r = request(call.method, call.path, call.body);
    return {r.method, r.url, r.headers, r.body};
}

common::http::Response JsonApi::send(const std::string & method, const std::string & path,
                                     const std::optional<nlohmann::json> & body, common::http::Retry retry,
                                     const common::http::RetryCheck & check) const {
    common::http::Request r = request(method, path, body);
    if (!api_key_.empty()) r.headers.emplace_back("Authorization", "Bearer " + api_key_);
    // A truncated or garbled 2xx body on a read is as transient as a 503: ask again (bounded).
    const size_t max_bytes = client_.options().max_body_bytes;
    common::http::RetryCheck full = [&check, max_bytes, &method](const common::http::Response & resp) -> std::string {
        if (is_2xx(resp.status) && body_problem(resp.body, max_bytes) == "response is not JSON")
            return "response is not JSON";
        if (is_2xx(resp.status) && resp.body.empty() && method == "GET") return "empty response";
        return check ? check(resp) : std::string();
    };
    return client_.send(r, retry, full);
}

nlohmann::json JsonApi::parse(const common::http::Response & response, const std::string & what) const {
    return parse_body(subject_, what, response.body, response.status, response.attempts,
                      client_.options().max_body_bytes);
}

nlohmann::json JsonApi::call(const std::string & method, const std::string & path, const std::string & what,
                             const std::optional<nlohmann::json> & body, common::http::Retry retry) const {
    auto response = send(method, path, body, retry);
    if (!is_2xx(response.status)) throw api_status_error(subject_, what, response);
    return parse(response, what);
}

std::string json_string(const nlohmann::json & j, const char * key) {
    if (!j.is_object()) return "";
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return "";
    if (it->is_string()) return it->get<std::string>();
    return it->dump();
}

std::optional<double> json_number(const nlohmann::json & j, const char * key) {
    if (!j.is_object()) return std::nullopt;
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    if (it->is_number()) return it->get<double>();  // JSON numbers are finite (nlohmann refuses 1e999)
    if (it->is_string()) {
        try {
            size_t used = 0;
            const std::string & s = it->get_ref<const std::string &>();
            double v = std::stod(s, &used);
            if (used != s.size() || !std::isfinite(v)) return std::nullopt;  // "nan", "inf", "3 GB"
            return v;
        } catch (...) {
            return std::nullopt;
        }
    }
    return std::nullopt;
}

int checked_int(double v, const char * what) {
    if (!std::isfinite(v) || v < static_cast<double>(INT_MIN) || v > static_cast<double>(INT_MAX))
        throw BadResponse(std::string("field '") + what + "': " + std::to_string(v) + " is not a usable integer");
    return static_cast<int>(v);
}

int json_int(const nlohmann::json & j, const char * key, int fallback) {
    auto v = json_number(j, key);
    return v ? checked_int(*v, key) : fallback;
}

bool json_bool(const nlohmann::json & j, const char * key, bool fallback) {
    if (!j.is_object()) return fallback;
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) throw BadResponse(std::string("field '") + key + "' is not a boolean: " + common::http::safe_text(it->dump(), 40));
    return it->get<bool>();
}

std::optional<int> json_port(const nlohmann::json & j, const char * key) {
    auto v = json_number(j, key);
    if (!v || *v == 0) return std::nullopt;  // 0: "none yet" in the wild
    if (*v < 1 || *v > 65535 || *v != std::floor(*v))
        throw BadResponse(std::string("field '") + key + "': " + std::to_string(*v) + " is not a TCP port");
    return static_cast<int>(*v);
}

bool usable_offer(const Offer & o) {
    auto ok = [](double v) { return std::isfinite(v) && v >= 0; };
    bool usable = o.gpu_count >= 1 && o.gpu_count <= 1024 && ok(o.price_usd_per_hour_total) &&
                  ok(o.price_usd_per_hour_gpu) && ok(o.vram_gb_per_gpu) && (!o.cpu_ram_gb || ok(*o.cpu_ram_gb)) &&
                  (!o.disk_gb || ok(*o.disk_gb)) && (!o.vcpus || *o.vcpus >= 0);
    if (!usable)
        common::log::debug(o.provider, ": offer ", common::http::safe_text(o.offer_id, 80), " left out: ", o.gpu_count,
                           " GPUs at $", o.price_usd_per_hour_total, "/h is not a usable offer");
    return usable;
}

bool is_2xx(long status) { return status >= 200 && status < 300; }

void keep_valid_ssh(Instance & i) {
    if (!i.ssh) return;
    const bool host_ok = valid_ssh_host(i.ssh->host), user_ok = valid_ssh_user(i.ssh->user);
    if (host_ok && user_ok) return;
    common::log::warn(i.provider, ": instance ", common::http::safe_text(i.id, 80), ": the provider's SSH ",
                      host_ok ? "user '" + common::http::safe_text(i.ssh->user, 60) + "' is not a user name"
                              : "host '" + common::http::safe_text(i.ssh->host, 80) + "' is not an IP address or DNS name",
                      "; no SSH endpoint is used");
    i.ssh.reset();
}

std::string iso8601_utc(long long unix_s) {
    std::time_t t = static_cast<std::time_t>(unix_s);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

}  // namespace broker::providers
