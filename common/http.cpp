#include "common/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <mutex>
#include <random>

#include "common/backoff.h"
#include "common/log.h"

namespace common::http {

namespace {

void global_init_once() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct BodySink {
    std::string * body;
    size_t limit;
    bool overflow = false;
};

size_t on_body(char * data, size_t size, size_t count, void * user) {
    auto * sink = static_cast<BodySink *>(user);
    size_t n = size * count;
    if (sink->body->size() + n > sink->limit) {
        sink->overflow = true;
        return 0;  // curl aborts the transfer (CURLE_WRITE_ERROR)
    }
    sink->body->append(data, n);
    return n;
}

size_t on_header(char * data, size_t size, size_t count, void * user) {
    auto * headers = static_cast<std::map<std::string, std::string> *>(user);
    std::string line(data, size * count);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
        std::string value = line.substr(colon + 1);
        while (!value.empty() && std::isspace(static_cast<unsigned char>(value.front()))) value.erase(0, 1);
        while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back()))) value.pop_back();
        (*headers)[name] = value;
    }
    return size * count;
}

struct Attempt {
    CURLcode code = CURLE_OK;
    std::string curl_error;
    bool body_too_large = false;
    Response response;
};

Attempt perform(const Request & request, const Options & options) {
    global_init_once();
    Attempt a;
    CURL * curl = curl_easy_init();
    if (!curl) {
        a.code = CURLE_FAILED_INIT;
        a.curl_error = "curl_easy_init failed";
        return a;
    }
    char errbuf[CURL_ERROR_SIZE] = {0};
    BodySink sink{&a.response.body, options.max_body_bytes};
    curl_slist * headers = nullptr;
    for (const auto & [k, v] : request.headers) headers = curl_slist_append(headers, (k + ": " + v).c_str());
    curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    if (request.method == "GET") curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    if (!request.body.empty() || request.method == "POST" || request.method == "PUT" || request.method == "PATCH") {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.c_str());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.body.size()));
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options.timeout_connect_s * 1000));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout_total_s * 1000));
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM-based DNS timeouts
    // Loopback (emulators, local proxies) must never go through an HTTP proxy from the environment.
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "127.0.0.1,localhost,::1");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &a.response.headers);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "outlier-toolkit-broker/0.1");
    a.code = curl_easy_perform(curl);
    if (a.code == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &a.response.status);
    } else {
        a.curl_error = errbuf[0] ? errbuf : curl_easy_strerror(a.code);
        a.body_too_large = sink.overflow;
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return a;
}

// Transport failures where the request certainly never reached the server.
bool never_sent(CURLcode code) {
    return code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_RESOLVE_PROXY;
}

std::string short_body(const std::string & body) { return safe_text(body, 300); }

}  // namespace

Client::Client(std::string subject, Options options) : subject_(std::move(subject)), options_(options) {
    if (!options_.clock) options_.clock = &real_clock();
    if (options_.max_attempts < 1) options_.max_attempts = 1;
}

Response Client::send(const Request & request, Retry retry, const RetryCheck & check) const {
    std::string last_problem;
    for (int attempt = 1;; ++attempt) {
        Attempt a = perform(request, options_);
        a.response.attempts = attempt;
        bool retryable = false;
        double delay_s = -1;
        if (a.body_too_large) {
            // Deterministic for a given server state: sending again would only buffer it again.
            throw Error(ErrorKind::Network, log::redact(subject_ + ": " + request.method + " " + request.url +
                                                        ": response larger than " +
                                                        std::to_string(options_.max_body_bytes) +
                                                        " bytes; refused"))
                .with("provider", subject_);
        }
        if (a.code != CURLE_OK) {
            last_problem = a.curl_error;
            retryable = retry == Retry::Idempotent || never_sent(a.code);
        } else if (a.response.status == 429) {
            // 429 means "not processed": safe to send again even for a create.
            retryable = true;
            last_problem = "HTTP 429 (rate limited)";
            auto it = a.response.headers.find("retry-after");
            if (it != a.response.headers.end()) delay_s = parse_retry_after_s(it->second, options_.clock->unix_now());
        } else if (a.response.status >= 500) {
            retryable = retry == Retry::Idempotent;
            last_problem = "HTTP " + std::to_string(a.response.status);
        } else if (retry == Retry::Idempotent && check) {
            std::string why = check(a.response);
            if (why.empty()) return a.response;
            retryable = true;
            last_problem = why;
        } else {
            return a.response;
        }
        if (!retryable || attempt >= options_.max_attempts) {
            if (a.code == CURLE_OK) return a.response;  // the caller maps the status
            throw Error(ErrorKind::Network, log::redact(subject_ + ": " + request.method + " " + request.url +
                                                        ": no response after " + std::to_string(attempt) +
                                                        " attempt(s): " + last_problem))
                .with("provider", subject_);
        }
        if (delay_s < 0) delay_s = Backoff{options_.backoff_base_s, options_.backoff_max_s, /*jitter=*/true}.delay_s(attempt);
        delay_s = std::min(delay_s, options_.backoff_max_s);
        log::debug(subject_, ": ", request.method, " ", log::redact(request.url), ": ", last_problem, "; retry ",
                   attempt, "/", options_.max_attempts - 1, " in ", delay_s, " s");
        options_.clock->sleep_for(std::chrono::duration_cast<Duration>(std::chrono::duration<double>(delay_s)));
    }
}

ErrorKind kind_for_status(long status) {
    if (status == 401 || status == 403) return ErrorKind::Auth;
    if (status == 402) return ErrorKind::Quota;
    if (status == 404 || status == 410) return ErrorKind::NotFound;
    if (status == 429 || status >= 500) return ErrorKind::Network;
    if (status >= 400) return ErrorKind::Usage;
    return ErrorKind::Network;  // 1xx/3xx where a final 2xx was expected
}

Error status_error(const std::string & subject, const std::string & what, const Response & response) {
    std::string msg = subject + ": " + what + ": HTTP " + std::to_string(response.status);
    if (response.attempts > 1) msg += " after " + std::to_string(response.attempts) + " attempts";
    std::string body = short_body(response.body);
    if (!body.empty()) msg += ": " + body;
    if (response.status == 401 || response.status == 403) msg += "; check the API key for " + subject;
    return Error(kind_for_status(response.status), log::redact(msg)).with("provider", subject);
}

double parse_retry_after_s(const std::string & value, double unix_now) {
    if (value.empty()) return -1;
    if (std::all_of(value.begin(), value.end(), [](unsigned char c) { return std::isdigit(c) || c == '.'; })) {
        try {
            return std::stod(value);
        } catch (...) {
            return -1;
        }
    }
    std::tm tm{};
    // IMF-fixdate: "Wed, 21 Oct 2015 07:28:00 GMT"
    if (strptime(value.c_str(), "%a, %d %b %Y %H:%M:%S", &tm) == nullptr) return -1;
    double when = static_cast<double>(timegm(&tm));
    return std::max(0.0, when - unix_now);
}

std::string safe_text(std::string_view in, size_t max_bytes) {
    std::string out;
    size_t i = 0;
    while (i < in.size()) {
        unsigned char c = static_cast<unsigned char>(in[i]);
        // Length of a well-formed UTF-8 sequence starting here (RFC 3629: no overlongs, no surrogates).
        size_t len = 0;
        if (c < 0x80) len = 1;
        else if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) len = 3;
        else if (c >= 0xF0 && c <= 0xF4) len = 4;
        bool ok = len > 0 && i + len <= in.size();
        for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(in[i + k]) & 0xC0) == 0x80;
        if (ok && len >= 3) {
            unsigned char c1 = static_cast<unsigned char>(in[i + 1]);
            if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
                ok = false;
        }
        std::string piece;
        if (!ok) {
            piece = "?";
            len = 1;
        } else if (len == 1) {
            piece = (c == '\n' || c == '\r' || c == '\t') ? " " : (c < 0x20 || c == 0x7F) ? "?" : std::string(1, char(c));
        } else {
            piece.assign(in.substr(i, len));
        }
        if (out.size() + piece.size() > max_bytes) return out + "...";
        out += piece;
        i += len;
    }
    return out;
}

std::string url_encode(const std::string & text) {
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : text) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

}  // namespace common::http
