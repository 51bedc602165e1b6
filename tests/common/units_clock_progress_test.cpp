#include "common/clock.h"
#include "common/error.h"
#include "common/progress.h"
#include "common/units.h"
#include <doctest/doctest.h>

using namespace std::chrono_literals;

TEST_CASE("parse_bytes: binary and decimal units") {
    CHECK(common::parse_bytes("76GiB") == 76ull * 1024 * 1024 * 1024);
    CHECK(common::parse_bytes("80GB") == 80'000'000'000ull);
    CHECK(common::parse_bytes("1.5KiB") == 1536);
    CHECK(common::parse_bytes("512") == 512);
    CHECK_THROWS_AS(common::parse_bytes("76 parsecs"), common::Error);
    CHECK_THROWS_AS(common::parse_bytes("GiB"), common::Error);
}

TEST_CASE("parse_duration_s: units and compounds") {
    CHECK(common::parse_duration_s("90s") == 90);
    CHECK(common::parse_duration_s("15m") == 900);
    CHECK(common::parse_duration_s("1h30m") == 5400);
    CHECK(common::parse_duration_s("1.5h") == 5400);
    CHECK(common::parse_duration_s("45") == 45);
    CHECK_THROWS_AS(common::parse_duration_s("soon"), common::Error);
    CHECK_THROWS_AS(common::parse_duration_s("3w"), common::Error);
}

TEST_CASE("deadline: a poll never sleeps past the time left") {
    common::FakeClock clock;
    common::Deadline d(clock, 10s);
    auto start = clock.now();
    int polls = 0;
    while (d.sleep(3s)) ++polls;
    CHECK(polls == 4);  // 3+3+3+1
    CHECK(clock.now() - start == 10s);
    CHECK(d.expired());
}

TEST_CASE("format_duration and format_bytes read naturally") {
    CHECK(common::format_duration(12.34) == "12.3s");
    CHECK(common::format_duration(185) == "3m05s");
    CHECK(common::format_duration(3720) == "1h02m");
    CHECK(common::format_bytes(17) == "17 B");
    CHECK(common::format_bytes(1.5 * 1024 * 1024 * 1024) == "1.5 GiB");
}

TEST_CASE("progress renders fraction, amounts and an ETA from the injected clock") {
    common::FakeClock clock;
    common::Progress p("loading", 4ull << 30, common::ProgressUnit::Bytes, clock);
    clock.advance(10s);
    p.set(1ull << 30);
    std::string s = p.render();
    CHECK(s.find("loading [######..................]  25% 1.0 GiB/4.0 GiB eta 30.0s") == 0);
    CHECK(s.find("(102.4 MiB/s)") != std::string::npos);
}
