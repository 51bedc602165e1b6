#include <doctest/doctest.h>

#include "bifrost/target.h"
#include "common/error.h"

using bifrost::parse_target;

TEST_CASE("target: user@host:port, host, host:port, [v6]:port parse into endpoints") {
    auto t = parse_target("root@203.0.113.7:2222");
    REQUIRE(t.endpoint);
    CHECK(t.endpoint->user == "root");
    CHECK(t.endpoint->host == "203.0.113.7");
    CHECK(t.endpoint->port == 2222);
    t = parse_target("gpu-box");
    CHECK(t.endpoint->host == "gpu-box");
    CHECK(t.endpoint->port == 22);
    CHECK(t.endpoint->user.empty());
    t = parse_target("gpu-box:2200");
    CHECK(t.endpoint->port == 2200);
    t = parse_target("ubuntu@[::1]:22");
    CHECK(t.endpoint->host == "::1");
    CHECK(t.endpoint->label() == "ubuntu@[::1]:22");
}

TEST_CASE("target: provider:id is an instance id resolved through the installed resolver") {
    auto t = parse_target("runpod:abc123");
    CHECK_FALSE(t.endpoint);
    CHECK(t.instance_id == "runpod:abc123");
    bifrost::set_instance_resolver(nullptr);
    CHECK_THROWS_AS(bifrost::resolve_target(t), common::Error);
    bifrost::set_instance_resolver([](std::string_view id) -> std::optional<bifrost::Endpoint> {
        if (id != "runpod:abc123") return std::nullopt;
        return bifrost::Endpoint{"root", "198.51.100.4", 40022, "/keys/id"};
    });
    auto e = bifrost::resolve_target(t);
    CHECK(e.host == "198.51.100.4");
    CHECK(e.port == 40022);
    try {
        bifrost::resolve_target(parse_target("vast:i-999"));
        FAIL("expected not_found");
    } catch (const common::Error & err) {
        CHECK(err.kind() == common::ErrorKind::NotFound);
    }
    bifrost::set_instance_resolver(nullptr);
}

TEST_CASE("target: malformed targets are usage errors naming the text") {
    for (const char * bad : {"", "@host", "user@", "host:99999", "user@host:abc", "a b", "host:0", "[::1", "ho'st", "x/y"}) {
        CAPTURE(bad);
        try {
            parse_target(bad);
            FAIL("accepted");
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Usage);
        }
    }
}
