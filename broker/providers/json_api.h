// The JSON-over-HTTP plumbing the four cloud providers share: base URL + path, bearer auth, parse
// or fail with a typed error. Internal to broker/providers/ (not part of the public broker API).
//
// Every server body is hostile until parsed: parse_body() bounds its size, nesting and array
// lengths before nlohmann builds anything, and the providers' parsers run inside guarded(), which
// turns every way a body can be unusable (wrong types, integers that do not fit, shapes that are
// not the documented ones) into Error(Network) naming the provider — exit 6, never a crash.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "broker/provider.h"
#include "common/error.h"
#include "common/http.h"
#include "common/log.h"

namespace broker::providers {

// Bounds on a server body (checked before parsing). Real answers are far smaller: a Vast search page
// is 200 offers, a Prime page 100, RunPod lists a few dozen GPU types; objects nest less than 10 deep.
inline constexpr size_t kMaxJsonDepth = 64;
inline constexpr size_t kMaxJsonArrayItems = 10000;
// Bounds on what one provider's answers may make the broker build. A body is at most 16 MiB, but
// offers multiply (RunPod types × data centres, Lambda types × regions, Prime pages × items): past
// these, the rest is left out with a warning naming the provider. Real catalogues are far below.
inline constexpr size_t kMaxOffersPerProvider = 5000;
inline constexpr size_t kMaxPlacesPerType = 64;  // RunPod data centres, Lambda regions, per GPU type
// An instance listing longer than this (ours only), or one whose paging does not end within the
// provider's page bound, is an error: a partial list could hide a billing instance from sweep.
inline constexpr size_t kMaxInstancesListed = 10000;

// A server value the parsers cannot use: an integer field of 1e300, an array where an object must be.
// Thrown by the readers below and by parsers; guarded() reports it as Error(Network).
class BadResponse : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Error(Network) "<subject>: <what>: <detail>" with the provider named in the context.
common::Error bad_response(std::string_view subject, std::string_view what, std::string_view detail);

// Runs a parser over a server body; anything it throws other than common::Error (BadResponse,
// nlohmann type/range errors, std::stoi's errors) becomes bad_response(subject, what, ...).
template <class F>
auto guarded(std::string_view subject, std::string_view what, F && parse) -> decltype(parse()) {
    try {
        return parse();
    } catch (const common::Error &) {
        throw;
    } catch (const BadResponse & e) {
        throw bad_response(subject, what, e.what());
    } catch (const nlohmann::json::exception & e) {
        throw bad_response(subject, what, std::string("unexpected response shape: ") + e.what());
    } catch (const std::logic_error & e) {  // std::out_of_range / invalid_argument from number parsing
        throw bad_response(subject, what, std::string("unusable value: ") + e.what());
    }
}

// The one way a body becomes JSON: empty is null (a reader for which an empty answer cannot be
// right, e.g. a get, refuses that null itself: it never means "gone"); larger than `max_bytes`, nested deeper than
// kMaxJsonDepth, an array longer than kMaxJsonArrayItems, or not JSON at all → Error(Network)
// "<subject>: <what>: ..." (with the status and attempts when known).
nlohmann::json parse_body(std::string_view subject, std::string_view what, const std::string & body,
                          long status = 0, int attempts = 1, size_t max_bytes = 16u << 20);
// "" when `body` would pass parse_body's checks, else why not (used to decide on a retry).
std::string body_problem(const std::string & body, size_t max_bytes = 16u << 20);

// A non-2xx answer as a typed error (common::http::status_error), except that a 404/410 is
// NotFound only when `provider_says_not_found`: the body carries the provider's own not-found
// marker (Vast "no_such_instance", Lambda "global/object-does-not-exist", Prime's "Pod not found").
// Any other 404/410 (an HTML page from a proxy, a base URL that repeats the API's path, a route
// the API no longer has) says nothing about the instance: Error(Network) saying so. Callers that
// treat "not found" as "already gone" must only ever see NotFound from here.
common::Error api_status_error(std::string_view subject, const std::string & what,
                               const common::http::Response & response, bool provider_says_not_found = false);
// Whether a failed create answer leaves open that the create was carried out: a 5xx, a 429 (after
// the HTTP layer's retries), a status below 200, or any non-2xx answer whose body is not JSON (a
// proxy's page, a cut answer). Such a failure is Error(Network), whatever its text says (a 503's
// "Service Unavailable" is not "no capacity"), so the caller looks the instance up by name instead
// of renting the next offer. Only the provider's own JSON refusals are read for their meaning.
bool create_answer_is_ambiguous(const common::http::Response & response);
// The body parsed when it is JSON within parse_body's bounds, else nullopt (never throws): for
// reading a marker out of an error answer, which may be anything.
std::optional<nlohmann::json> try_parse_body(const std::string & body);

// One call as a provider's API takes it: method, path under the base URL, JSON body. A provider
// builds each call that must also leave the broker as data (the watchdog's terminate request) in
// one function, and both JsonApi::send(ApiCall) and JsonApi::describe() use that same value.
struct ApiCall {
    std::string method;
    std::string path;  // already percent-encoded where it carries a value
    std::optional<nlohmann::json> body;
};

class JsonApi {
public:
    JsonApi(std::string subject, std::string base_url, std::string api_key, common::http::Options options);

    // Sends `body` (when given) as JSON to base_url + path. Returns the raw response whatever the status.
    // An idempotent request whose 2xx answer is not JSON is sent again (bounded, with backoff), as
    // are a GET's empty 2xx answer (every API here answers a GET with JSON) and answers `check`
    // rejects (RunPod: a transient GraphQL error inside a 200).
    common::http::Response send(const std::string & method, const std::string & path,
                                const std::optional<nlohmann::json> & body = std::nullopt,
                                common::http::Retry retry = common::http::Retry::Idempotent,
                                const common::http::RetryCheck & check = {}) const;
    common::http::Response send(const ApiCall & call, common::http::Retry retry = common::http::Retry::Idempotent,
                                const common::http::RetryCheck & check = {}) const {
        return send(call.method, call.path, call.body, retry, check);
    }
    // `call` as send() would put it on the wire, without the Authorization header (the sender adds
    // its own credential): the URL, the headers and the serialised body.
    broker::HttpCall describe(const ApiCall & call) const;
    // parse_body() on a response: the bounded parse, errors naming this provider.
    nlohmann::json parse(const common::http::Response & response, const std::string & what) const;
    // send + status check (non-2xx → typed error via api_status_error: a 404 is never NotFound
    // here, since no marker was checked) + parse.
    nlohmann::json call(const std::string & method, const std::string & path, const std::string & what,
                        const std::optional<nlohmann::json> & body = std::nullopt,
                        common::http::Retry retry = common::http::Retry::Idempotent) const;

    const std::string & subject() const { return subject_; }
    const std::string & base_url() const { return base_url_; }

private:
    common::http::Request request(const std::string & method, const std::string & path,
                                  const std::optional<nlohmann::json> & body) const;
    std::string subject_;
    std::string base_url_;
    std::string api_key_;
    common::http::Client client_;
};

// Small readers that tolerate the type drift real APIs show (numbers as strings, nulls) but not
// values no field can hold: a number that is not finite, or an integer outside int, throws BadResponse.
std::string json_string(const nlohmann::json & j, const char * key);
std::optional<double> json_number(const nlohmann::json & j, const char * key);
int json_int(const nlohmann::json & j, const char * key, int fallback = 0);
// A bool field; absent or null → fallback; anything but a bool → BadResponse.
bool json_bool(const nlohmann::json & j, const char * key, bool fallback);
// A TCP port field: absent/null/unreadable/0 → nullopt; a number outside 1..65535 → BadResponse.
std::optional<int> json_port(const nlohmann::json & j, const char * key);
// An int from a double already read (a count, a percentage): outside int → BadResponse naming `what`.
int checked_int(double value, const char * what);
bool is_2xx(long status);
// An SSH endpoint a cloud reported for `instance`, kept only when its host and user pass
// valid_ssh_host / valid_ssh_user (broker/instance.h): otherwise the instance has no endpoint, with a
// warning naming the provider and the instance. Every cloud parser calls it last.
void keep_valid_ssh(Instance & instance);
std::string iso8601_utc(long long unix_s);

}  // namespace broker::providers
