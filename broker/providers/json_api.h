// The JSON-over-HTTP plumbing the four cloud providers share: base URL + path, bearer auth, parse
// or fail with a typed error. Internal to broker/providers/ (not part of the public broker API).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/error.h"
#include "common/http.h"

namespace broker::providers {

class JsonApi {
public:
    JsonApi(std::string subject, std::string base_url, std::string api_key, common::http::Options options);

    // Sends `body` (when given) as JSON to base_url + path. Returns the raw response whatever the status.
    common::http::Response send(const std::string & method, const std::string & path,
                                const std::optional<nlohmann::json> & body = std::nullopt,
                                common::http::Retry retry = common::http::Retry::Idempotent) const;
    // Parses a body as JSON; an empty body is null. Unparseable → Error(Network) naming `what`.
    nlohmann::json parse(const common::http::Response & response, const std::string & what) const;
    // send + status check (non-2xx → typed error via http::status_error) + parse.
    nlohmann::json call(const std::string & method, const std::string & path, const std::string & what,
                        const std::optional<nlohmann::json> & body = std::nullopt,
                        common::http::Retry retry = common::http::Retry::Idempotent) const;

    const std::string & subject() const { return subject_; }
    const std::string & base_url() const { return base_url_; }

private:
    std::string subject_;
    std::string base_url_;
    std::string api_key_;
    common::http::Client client_;
};

// Small readers that tolerate the type drift real APIs show (numbers as strings, nulls).
std::string json_string(const nlohmann::json & j, const char * key);
std::optional<double> json_number(const nlohmann::json & j, const char * key);
int json_int(const nlohmann::json & j, const char * key, int fallback = 0);
bool is_2xx(long status);
std::string iso8601_utc(long long unix_s);

}  // namespace broker::providers
