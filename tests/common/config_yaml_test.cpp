#include <functional>
#include "common/config_yaml.h"
#include "common/error.h"
#include "tests/support/temp_dir.h"
#include <doctest/doctest.h>

using common::ConfigNode;

namespace {
std::string error_of(const std::function<void()> & f) {
    try {
        f();
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        return e.message();
    }
    FAIL("expected a usage error");
    return {};
}
}  // namespace

TEST_CASE("config: nested values read strictly") {
    auto root = ConfigNode::load_string("model: Qwen/Qwen3-30B-A3B\nresources:\n  max_price: 2.5\n  gpus: 2\n"
                                        "  providers: [runpod, vast]\npolicy:\n  keep: false\n",
                                        "run.yaml");
    root.check_keys({"model", "resources", "policy"});
    CHECK(root.at("model").as_string() == "Qwen/Qwen3-30B-A3B");
    auto res = root.at("resources");
    CHECK(res.at("max_price").as_double() == doctest::Approx(2.5));
    CHECK(res.at("gpus").as_int() == 2);
    CHECK(res.at("providers").as_string_list() == std::vector<std::string>{"runpod", "vast"});
    CHECK(root.at("policy").at("keep").as_bool() == false);
    CHECK(res.get_int("disk_gb", 100) == 100);
    CHECK(res.at("gpus").path() == "resources.gpus");
}

TEST_CASE("config: an unknown key is refused with file:line and a suggestion") {
    auto root = ConfigNode::load_string("model: x\nresources:\n  max_prise: 2\n", "run.yaml");
    std::string msg = error_of([&] { root.at("resources").check_keys({"max_price", "gpus"}); });
    CHECK(msg == "run.yaml:3:3: resources: unknown key 'max_prise' (did you mean 'max_price'?)");
}

TEST_CASE("config: type errors name the location, the key and the value") {
    auto root = ConfigNode::load_string("a: 1\nb: abc\nc: on\nd: 010\ne: [1]\n", "c.yaml");
    CHECK(error_of([&] { root.at("b").as_int(); }) == "c.yaml:2:4: b: expected an integer, got 'abc'");
    CHECK(error_of([&] { root.at("c").as_bool(); }) == "c.yaml:3:4: c: expected true or false, got 'on'");
    CHECK(error_of([&] { root.at("d").as_int(); }).find("expected an integer, got '010'") != std::string::npos);
    CHECK(error_of([&] { root.at("e").as_string(); }).find("c.yaml:5:4: e: expected a string") == 0);
    CHECK(error_of([&] { root.at("missing"); }).find("missing required key 'missing'") != std::string::npos);
}

TEST_CASE("config: duplicate keys and malformed YAML are refused with a line") {
    CHECK(error_of([] { ConfigNode::load_string("a: 1\nb: 2\na: 3\n", "d.yaml"); }) ==
          "d.yaml:3:1: duplicate key 'a'");
    CHECK(error_of([] { ConfigNode::load_string("a: [1, 2\nb: 3\n", "m.yaml"); }).find("m.yaml:") == 0);
}

TEST_CASE("config: a missing file is not_found and names the path") {
    try {
        ConfigNode::load_file("/nonexistent/run.yaml");
        FAIL("expected an error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::NotFound);
        CHECK(e.message().find("/nonexistent/run.yaml") != std::string::npos);
    }
}

TEST_CASE("config: load_file reads a real file and empty documents are an empty map") {
    tests::TempDir dir;
    tests::write_file(dir / "x.yaml", "n: 3\n");
    CHECK(ConfigNode::load_file(dir / "x.yaml").at("n").as_int() == 3);
    auto empty = ConfigNode::load_string("", "e.yaml");
    CHECK(empty.is_map());
    CHECK(empty.keys().empty());
}
