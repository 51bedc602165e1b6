// HTTP over libcurl for every provider client: connect and total timeouts, bounded retries with
// jittered exponential backoff on network errors, 429 (honouring Retry-After), 5xx and answers the
// caller rejects (a body that is not JSON, a GraphQL error inside a 200), a bound on the size of an
// answer, and one place that maps HTTP statuses to common::ErrorKind. Host side only (not in the
// GPU-only build). It does not parse bodies (providers do) and it never logs request bodies or
// headers (keys).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/error.h"

namespace common::http {

struct Request {
    std::string method = "GET";  // GET, POST, PUT, PATCH, DELETE
    std::string url;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;  // sent when non-empty, or always for POST/PUT/PATCH
};

struct Response {
    long status = 0;
    std::string body;
    std::map<std::string, std::string> headers;  // lower-case names
    int attempts = 0;
};

// Whether a request may be sent again after a failure. Reads and deletes are idempotent. A create is
// not: a lost response may hide a created (billing) instance, so it is retried only when the server
// says it did not process the request (429) or when the connection was never made; otherwise the
// caller looks the instance up by name before doing anything else.
enum class Retry { Idempotent, NotIdempotent };

struct Options {
    double timeout_connect_s = 10;
    double timeout_total_s = 60;
    int max_attempts = 4;           // total tries, first included
    double backoff_base_s = 0.5;    // delay before retry k (1-based): base * 2^(k-1), jittered ±50 %
    double backoff_max_s = 20;      // cap on one delay, Retry-After included
    // A larger answer is refused (Error Network, not retried) instead of buffered: a broken or
    // hostile server must not make the client allocate without bound. Real answers are far below it.
    size_t max_body_bytes = 16u << 20;
    Clock * clock = nullptr;        // sleeps between retries go through it (FakeClock in tests)
};

// For idempotent requests only: looks at an answer the HTTP layer would accept (not 429, not 5xx)
// and returns why it is still a transient failure worth sending again ("response is not JSON", a
// GraphQL error inside a 200), or "" when the answer is usable. After the last attempt the answer
// is returned as it is, and the caller reports it.
using RetryCheck = std::function<std::string(const Response &)>;

class Client {
public:
    // `subject` names the service in errors ("runpod"); `secrets` are redacted from every message.
    explicit Client(std::string subject, Options options = {});

    // Sends with retries. Returns the final response whatever its status (a 404 is a response, not
    // a transport error); throws Error(Network) when no response arrived after the retries, or when
    // the answer is larger than Options::max_body_bytes. `check` is consulted for idempotent
    // requests only (a create is never sent twice because of its answer's body).
    Response send(const Request & request, Retry retry = Retry::Idempotent, const RetryCheck & check = {}) const;

    const Options & options() const { return options_; }
    const std::string & subject() const { return subject_; }

private:
    std::string subject_;
    Options options_;
};

// The ErrorKind for a non-2xx status: 401/403 auth, 402 quota, 404/410 not found, 429 and 5xx
// network, other 4xx usage.
ErrorKind kind_for_status(long status);
// A typed error for a non-2xx response: "<subject>: <what>: HTTP <status>: <short body>".
Error status_error(const std::string & subject, const std::string & what, const Response & response);
// Seconds from a Retry-After header value (delta-seconds or an HTTP date); negative if unparseable.
double parse_retry_after_s(const std::string & value, double unix_now);
// URL-encodes one query component.
std::string url_encode(const std::string & text);
// Server text made fit for a message: at most `max_bytes` (then "..."), cut on a character boundary,
// invalid UTF-8 and control characters replaced by '?', line breaks by spaces. Error messages carry
// response snippets and end up in --json output, which must stay valid UTF-8 whatever a server sent.
std::string safe_text(std::string_view bytes, size_t max_bytes);

}  // namespace common::http
