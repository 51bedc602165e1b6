// common/http: retries on network errors, 429 (Retry-After) and 5xx; creates are not retried blindly;
// statuses map to error kinds. Uses the Vast emulator as the server and a FakeClock for the sleeps.
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/http.h"
#include "common/sshd_server.h"
#include "tests/support/emulator.h"

#include <doctest/doctest.h>

using namespace common;

namespace {
http::Request get(const std::string & url) {
    http::Request r;
    r.url = url;
    r.headers = {{"Authorization", "Bearer k"}};
    return r;
}
}  // namespace

TEST_CASE("http: statuses map to error kinds") {
    CHECK(http::kind_for_status(401) == ErrorKind::Auth);
    CHECK(http::kind_for_status(403) == ErrorKind::Auth);
    CHECK(http::kind_for_status(402) == ErrorKind::Quota);
    CHECK(http::kind_for_status(404) == ErrorKind::NotFound);
    CHECK(http::kind_for_status(429) == ErrorKind::Network);
    CHECK(http::kind_for_status(503) == ErrorKind::Network);
    CHECK(http::kind_for_status(422) == ErrorKind::Usage);
}

TEST_CASE("http: Retry-After as seconds or an HTTP date") {
    CHECK(http::parse_retry_after_s("3", 0) == doctest::Approx(3));
    CHECK(http::parse_retry_after_s("Thu, 01 Jan 1970 00:00:10 GMT", 4) == doctest::Approx(6));
    CHECK(http::parse_retry_after_s("soon", 0) < 0);
}

TEST_CASE("http: an unreachable server is a network error after bounded retries, without real sleeping") {
    FakeClock clock;
    auto start = clock.now();
    http::Client c("test", {.timeout_connect_s = 2, .timeout_total_s = 5, .max_attempts = 3, .clock = &clock});
    int port = pick_free_port();  // nothing listens there
    try {
        c.send(get("http://127.0.0.1:" + std::to_string(port) + "/x"));
        FAIL("expected a network error");
    } catch (const Error & e) {
        CHECK(e.kind() == ErrorKind::Network);
        CHECK(e.message().find("3 attempt") != std::string::npos);
    }
    CHECK(clock.now() > start);  // two backoff sleeps went through the fake clock
}

TEST_CASE("http: 429 with Retry-After and 500 are retried, a 404 is returned, not thrown") {
    tests::Emulator emu("vast", {.api_key = "k"});
    FakeClock clock;
    http::Client c("vast", {.max_attempts = 4, .clock = &clock});
    emu.inject({{"kind", "http_status"}, {"status", 429}, {"retry_after_s", 7}, {"count", 1}});
    emu.inject({{"kind", "http_status"}, {"status", 500}, {"count", 1}});
    auto start = clock.now();
    auto r = c.send(get(emu.base_url() + "/api/v0/instances/?owner=me"));
    CHECK(r.status == 200);
    CHECK(r.attempts == 3);
    CHECK(to_seconds(clock.now() - start) >= 7.0);  // Retry-After honoured
    r = c.send(get(emu.base_url() + "/api/v0/instances/424242/?owner=me"));
    CHECK(r.attempts == 1);
}

TEST_CASE("http: a create (not idempotent) is not retried after a 500") {
    tests::Emulator emu("vast", {.api_key = "k"});
    FakeClock clock;
    http::Client c("vast", {.max_attempts = 4, .clock = &clock});
    emu.inject({{"kind", "http_status"}, {"status", 500}, {"count", 3}});
    http::Request r = get(emu.base_url() + "/api/v0/asks/1/");
    r.method = "PUT";
    r.body = "{}";
    auto resp = c.send(r, http::Retry::NotIdempotent);
    CHECK(resp.status == 500);
    CHECK(resp.attempts == 1);
}

TEST_CASE("http: a dropped connection on a read is retried") {
    tests::Emulator emu("vast", {.api_key = "k"});
    FakeClock clock;
    http::Client c("vast", {.max_attempts = 3, .clock = &clock});
    emu.inject({{"kind", "drop_connection"}, {"count", 1}});
    auto r = c.send(get(emu.base_url() + "/api/v0/instances/?owner=me"));
    CHECK(r.status == 200);
    CHECK(r.attempts == 2);
}

TEST_CASE("http: an answer the caller's check rejects (a malformed 200) is retried on reads, never on a create") {
    tests::Emulator emu("vast", {.api_key = "k"});
    FakeClock clock;
    http::Client c("vast", {.max_attempts = 4, .clock = &clock});
    auto not_json = [](const http::Response & r) -> std::string {
        return nlohmann::json::accept(r.body) ? "" : "response is not JSON";
    };
    emu.inject({{"kind", "malformed_json"}, {"count", 2}});
    auto r = c.send(get(emu.base_url() + "/api/v0/instances/?owner=me"), http::Retry::Idempotent, not_json);
    CHECK(r.status == 200);
    CHECK(r.attempts == 3);
    CHECK(nlohmann::json::accept(r.body));
    // Persistent: the last answer comes back as it is, after the bounded attempts.
    emu.inject({{"kind", "malformed_json"}, {"count", 10}});
    r = c.send(get(emu.base_url() + "/api/v0/instances/?owner=me"), http::Retry::Idempotent, not_json);
    CHECK(r.attempts == 4);
    CHECK_FALSE(nlohmann::json::accept(r.body));
    emu.reset();
    emu.inject({{"kind", "malformed_json"}, {"count", 1}});
    http::Request put = get(emu.base_url() + "/api/v0/asks/1/");
    put.method = "PUT";
    put.body = "{}";
    r = c.send(put, http::Retry::NotIdempotent, not_json);
    CHECK(r.attempts == 1);
}

TEST_CASE("http: an answer larger than max_body_bytes is refused (network error), not buffered or retried") {
    tests::Emulator emu("vast", {.api_key = "k"});
    FakeClock clock;
    http::Client c("vast", {.max_attempts = 4, .max_body_bytes = 64, .clock = &clock});
    http::Request r = get(emu.base_url() + "/api/v0/bundles/");
    r.method = "POST";
    r.body = "{}";
    try {
        c.send(r);
        FAIL("expected a network error");
    } catch (const Error & e) {
        CHECK(e.kind() == ErrorKind::Network);
        CHECK(e.message().find("larger than 64 bytes") != std::string::npos);
    }
    CHECK(emu.state()["requests"].size() == 1);
}

TEST_CASE("http: safe_text keeps messages valid UTF-8 and bounded") {
    CHECK(http::safe_text("plain", 100) == "plain");
    CHECK(http::safe_text("a\xff\xfe" "b", 100) == "a??b");
    CHECK(http::safe_text("line\r\nnext\x1b[31m", 100) == "line  next?[31m");
    CHECK(http::safe_text("caf\xc3\xa9", 100) == "caf\xc3\xa9");
    CHECK(http::safe_text("caf\xc3\xa9", 4) == "caf...");  // never half a character
    CHECK(http::safe_text("\xed\xa0\x80", 10) == "???");     // a surrogate is not UTF-8
    CHECK(nlohmann::json(http::safe_text(std::string("\xc3", 1), 10)).dump() == "\"?\"");
}

TEST_CASE("http: a status error quotes a hostile body as valid UTF-8") {
    http::Response resp;
    resp.status = 500;
    resp.body = std::string("\xff\xfe oops \xc3", 9);
    Error e = http::status_error("vast", "search offers", resp);
    CHECK_NOTHROW((void)nlohmann::json(e.message()).dump());
    CHECK(e.kind() == ErrorKind::Network);
}
