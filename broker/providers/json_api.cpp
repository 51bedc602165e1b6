#include "broker/providers/json_api.h"

#include <ctime>

#include "common/log.h"

namespace broker::providers {

JsonApi::JsonApi(std::string subject, std::string base_url, std::string api_key, common::http::Options options)
    : subject_(std::move(subject)), base_url_(std::move(base_url)), api_key_(std::move(api_key)),
      client_(subject_, options) {
    while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
    common::log::add_secret(api_key_);
}

common::http::Response JsonApi::send(const std::string & method, const std::string & path,
                                     const std::optional<nlohmann::json> & body, common::http::Retry retry) const {
    common::http::Request r;
    r.method = method;
    r.url = base_url_ + path;
    r.headers.emplace_back("Accept", "application/json");
    if (!api_key_.empty()) r.headers.emplace_back("Authorization", "Bearer " + api_key_);
    if (body) {
        r.headers.emplace_back("Content-Type", "application/json");
        r.body = body->dump();
    }
    return client_.send(r, retry);
}

nlohmann::json JsonApi::parse(const common::http::Response & response, const std::string & what) const {
    if (response.body.empty()) return nullptr;
    try {
        return nlohmann::json::parse(response.body);
    } catch (const nlohmann::json::exception &) {
        std::string snippet = response.body.substr(0, 200);
        throw common::Error(common::ErrorKind::Network,
                            common::log::redact(subject_ + ": " + what + ": response is not JSON (HTTP " +
                                                std::to_string(response.status) + "): " + snippet))
            .with("provider", subject_);
    }
}

nlohmann::json JsonApi::call(const std::string & method, const std::string & path, const std::string & what,
                             const std::optional<nlohmann::json> & body, common::http::Retry retry) const {
    auto response = send(method, path, body, retry);
    if (!is_2xx(response.status)) throw common::http::status_error(subject_, what, response);
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
    if (it->is_number()) return it->get<double>();
    if (it->is_string()) {
        try {
            return std::stod(it->get<std::string>());
        } catch (...) {
            return std::nullopt;
        }
    }
    return std::nullopt;
}

int json_int(const nlohmann::json & j, const char * key, int fallback) {
    auto v = json_number(j, key);
    return v ? static_cast<int>(*v) : fallback;
}

bool is_2xx(long status) { return status >= 200 && status < 300; }

std::string iso8601_utc(long long unix_s) {
    std::time_t t = static_cast<std::time_t>(unix_s);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

}  // namespace broker::providers
