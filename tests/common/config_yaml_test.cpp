#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <future>

#include "common/config_yaml.h"
#include "common/error.h"
#include "common/program.h"
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

// --- hostile files (issue #11): every config path (deploy configs, the broker config, --hosts) goes
// through ConfigNode, so each bound is tested here once.

namespace {
// 7 levels of nine aliases each: 9^7 references from 350 bytes.
std::string billion_laughs(int levels) {
    std::string text = "a0: &a0 [x,x,x,x,x,x,x,x,x]\n";
    for (int i = 1; i <= levels; ++i) {
        text += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
        for (int k = 0; k < 9; ++k) text += (k ? ",*a" : "*a") + std::to_string(i - 1);
        text += "]\n";
    }
    return text;
}
std::string nested_lists(int depth) { return std::string(static_cast<size_t>(depth), '[') + std::string(static_cast<size_t>(depth), ']') + "\n"; }
}  // namespace

TEST_CASE("config: an alias inside the node it refers to is refused at its location, not a stack overflow") {
    // Before: yaml-cpp links the alias to its own sequence and the duplicate-key walk recursed
    // until SIGSEGV.
    CHECK(error_of([] { ConfigNode::load_string("loop: &x [*x]\n", "l.yaml"); }) ==
          "l.yaml:1:11: alias *x refers to a node that contains it (a cycle)");
    CHECK(error_of([] { ConfigNode::load_string("a: &m {b: {c: *m}}\n", "l.yaml"); }).find("l.yaml:1:15: alias *m refers to a node that contains it") == 0);
}

TEST_CASE("config: aliases that expand past the node bound are refused quickly, at the alias") {
    const std::string text = billion_laughs(7);
    CHECK(text.size() < 400);
    auto t0 = std::chrono::steady_clock::now();
    std::string msg = error_of([&] { ConfigNode::load_string(text, "laughs.yaml"); });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(msg.find("laughs.yaml:5:") == 0);  // the first alias that crosses the bound
    CHECK(msg.find("alias *a3 expands past 65536 nodes") != std::string::npos);
    CHECK(s < 0.5);  // before: 2.2 s of walking 9^7 references, then accepted
}

TEST_CASE("config: ordinary aliases still work and count as what they expand to") {
    auto root = ConfigNode::load_string("base: &b {gpus: 2, providers: [runpod]}\nrun: *b\nother: *b\n", "a.yaml");
    CHECK(root.at("run").at("gpus").as_int() == 2);
    CHECK(root.at("other").at("providers").as_string_list() == std::vector<std::string>{"runpod"});
    // Four levels of nine (9^4 = 6561 references) stay under the bound.
    CHECK(ConfigNode::load_string(billion_laughs(3), "ok.yaml").keys().size() == 4);
    auto entries = root.entries();
    REQUIRE(entries.size() == 3);
    CHECK(entries[1].first == "run");
    CHECK(entries[1].second.path() == "run");
    CHECK(entries[1].second.at("gpus").as_int() == 2);
}

TEST_CASE("config: nesting is bounded, also through an alias") {
    CHECK(ConfigNode::load_string(nested_lists(ConfigNode::kMaxDepth), "d.yaml").is_sequence());
    CHECK(error_of([] { ConfigNode::load_string(nested_lists(ConfigNode::kMaxDepth + 1), "d.yaml"); }) ==
          "d.yaml:1:65: nesting deeper than 64 levels");
    // Each part is 40 and 30 deep; the alias puts the one inside the other.
    std::string text = "a: &d " + nested_lists(40) + "b: " + std::string(30, '[') + "*d" + std::string(30, ']') + "\n";
    CHECK(error_of([&] { ConfigNode::load_string(text, "d.yaml"); }) == "d.yaml:2:34: alias *d expands past 64 levels of nesting");
    // 100000 open brackets: refused at the 65th, before yaml-cpp's parser recurses further.
    CHECK(error_of([] { ConfigNode::load_string(std::string(100000, '['), "d.yaml"); }).find("nesting deeper than 64") !=
          std::string::npos);
}

TEST_CASE("config: a file over the size bound is refused before parsing, naming its size") {
    tests::TempDir dir;
    std::string text;
    while (text.size() <= ConfigNode::kMaxBytes) text += "# padding padding padding padding padding padding\n";
    tests::write_file(dir / "big.yaml", text);
    CHECK(error_of([&] { ConfigNode::load_file(dir / "big.yaml"); }) ==
          dir / "big.yaml" + ": " + std::to_string(text.size()) + " bytes, more than the 1048576 allowed for a config file");
    CHECK(error_of([&] { ConfigNode::load_string(text, "s.yaml"); }).find("s.yaml: ") == 0);
    // The node bound also holds for a file under the size bound.
    std::string many;
    for (int i = 0; many.size() < 1000000; ++i) many += "k" + std::to_string(i) + ": [a, b]\n";
    CHECK(error_of([&] { ConfigNode::load_string(many, "n.yaml"); }).find("past 65536 nodes") != std::string::npos);
}

TEST_CASE("config: Ctrl-C stops a load in progress") {
    common::install_interrupt_handlers();
    ::raise(SIGINT);
    CHECK(common::interrupted());
    try {
        ConfigNode::load_string(billion_laughs(3), "i.yaml");  // 6561 references: more than one check
        FAIL("expected an interruption");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Interrupted);
    }
    common::reset_interrupted();
}

TEST_CASE("config: a path that is not a regular file is refused by name, without blocking") {
    tests::TempDir dir;
    std::filesystem::create_directory(dir / "d.yaml");
    CHECK(error_of([&] { ConfigNode::load_file(dir / "d.yaml"); }) ==
          dir / "d.yaml: is a directory, not a regular file (expected a config file)");
    std::filesystem::create_symlink(dir / "l2.yaml", dir / "l1.yaml");
    std::filesystem::create_symlink(dir / "l1.yaml", dir / "l2.yaml");
    CHECK(error_of([&] { ConfigNode::load_file(dir / "l1.yaml"); }) ==
          dir / "l1.yaml: too many levels of symbolic links (a symlink loop?)");
    // A FIFO: open() without O_NONBLOCK waits for a writer forever. If the load blocks, the test
    // opens the writing end itself after 2 s so that it fails instead of hanging.
    const std::string fifo = dir / "f.yaml";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    auto pending = std::async(std::launch::async, [&] { return error_of([&] { ConfigNode::load_file(fifo); }); });
    if (pending.wait_for(std::chrono::seconds(2)) != std::future_status::ready) {
        int w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
        if (w >= 0) ::close(w);
        FAIL("load_file blocked on a FIFO");
    }
    CHECK(pending.get() == fifo + ": is a FIFO (named pipe), not a regular file (expected a config file)");
}

TEST_CASE("config: a key that is a mapping or list is refused at its location") {
    CHECK(error_of([] { ConfigNode::load_string("? [a, b]\n: 1\n", "k.yaml"); }) == "k.yaml:1:3: a key must be a plain value, not a list");
    CHECK(error_of([] { ConfigNode::load_string("~: 1\n", "k.yaml"); }) == "k.yaml:1:1: a key must be a plain value, not null");
}

TEST_CASE("config: committed fuzz regression inputs are refused or loaded, never crash") {
    namespace fs = std::filesystem;
    int seen = 0;
    for (const auto & e : fs::directory_iterator(CONFIG_YAML_FUZZ_REGRESSIONS_DIR)) {
        const std::string text = tests::read_file(e.path().string());
        try {
            ConfigNode root = ConfigNode::load_string(text, e.path().filename().string());
            (void)root.keys();
        } catch (const common::Error & err) {
            CHECK(err.kind() == common::ErrorKind::Usage);
        }
        ++seen;
    }
    MESSAGE("replayed " << seen << " regression inputs");
    CHECK(seen >= 1);
}
