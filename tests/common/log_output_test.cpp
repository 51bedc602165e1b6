#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
#include "common/output.h"
#include <doctest/doctest.h>

TEST_CASE("registered secrets are redacted everywhere they appear") {
    common::log::add_secret("sk-live-0123456789");
    CHECK(common::log::redact("key=sk-live-0123456789 and again sk-live-0123456789") ==
          "key=[REDACTED] and again [REDACTED]");
    common::log::add_secret("ab");  // too short to redact safely: ignored
    CHECK(common::log::redact("abc") == "abc");
}

TEST_CASE("log levels: parse, verbosity and unknown level is a usage error") {
    CHECK(common::log::parse_level("debug") == common::log::Level::Debug);
    CHECK_THROWS_AS(common::log::parse_level("loud"), common::Error);
    common::log::set_verbosity(2, false);
    CHECK(common::log::level() == common::log::Level::Trace);
    common::log::set_verbosity(0, true);
    CHECK(common::log::level() == common::log::Level::Warn);
    CHECK_FALSE(common::log::enabled(common::log::Level::Info));
    common::log::set_verbosity(0, false);
    CHECK(common::log::level() == common::log::Level::Info);
}

TEST_CASE("output renders rows as an aligned table or as JSON with all keys") {
    nlohmann::json rows = nlohmann::json::array({
        {{"id", "runpod:abc"}, {"vram_gb", 80}, {"price_usd_per_hour", 2.49}, {"extra", "kept in json"}},
        {{"id", "vast:1"}, {"vram_gb", 24}, {"price_usd_per_hour", nullptr}},
    });
    std::vector<common::Column> cols = {{"id", "ID"}, {"vram_gb", "VRAM GB"}, {"price_usd_per_hour", "$/H"}};
    std::ostringstream table, json;
    common::Output(common::OutputFormat::Table, table).rows(cols, rows);
    CHECK(table.str() ==
          "ID          VRAM GB  $/H\n"
          "runpod:abc  80       2.49\n"
          "vast:1      24       -\n");
    common::Output(common::OutputFormat::Json, json).rows(cols, rows);
    auto parsed = nlohmann::json::parse(json.str());
    CHECK(parsed == rows);
}

TEST_CASE("output object and text: text is suppressed in JSON mode") {
    std::ostringstream t, j;
    common::Output(common::OutputFormat::Table, t).object({{"a", 1}, {"bb", "x"}});
    CHECK(t.str() == "a:  1\nbb: x\n");
    common::Output jo(common::OutputFormat::Json, j);
    jo.text("hello");
    CHECK(j.str().empty());
}
