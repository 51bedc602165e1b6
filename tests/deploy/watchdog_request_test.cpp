// The watchdog's terminate request, end to end against the RunPod and Vast emulators: broker builds
// it (self_end_request: the same builder its own terminate() sends), deploy writes it into the
// watchdog config, the real deploy/remote/watchdog.sh sends it with curl once its deadline passes,
// and the emulator shows the instance gone. A hostile instance id or key injects nothing.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "broker/provider.h"
#include "broker/registry.h"
#include "common/error.h"
#include "common/subprocess.h"
#include "deploy/remote_plan.h"
#include "tests/support/emulator.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<broker::Provider> provider_for(tests::Emulator & emu, const std::string & key) {
    broker::ProviderContext ctx;
    ctx.api_key = key;
    ctx.base_url = emu.base_url();
    return broker::find_provider(emu.provider()).make(ctx);
}

std::string create_instance(broker::Provider & p, const std::string & role) {
    broker::OfferFilter f;
    f.gpu_count = 1;
    auto offers = p.search(f);
    REQUIRE(!offers.empty());
    broker::CreateRequest r;
    r.offer = offers.front();
    r.name = broker::format_instance_name({"watchdogtest", role, static_cast<long long>(std::time(nullptr)) + 3600});
    return p.create(r).id;
}

bool exists(broker::Provider & p, const std::string & id) {
    auto i = p.get(id);
    return i && i->status != broker::InstanceStatus::Terminated;
}

// Runs the real watchdog.sh with `request`, a deadline already passed and `key_env`=`key` in its
// environment (there is no container PID 1 here: the script falls back to its own environment),
// until it exits or `budget` passes. Returns its log.
std::string run_watchdog(const broker::SelfEndRequest & request, const std::string & key, std::chrono::seconds budget,
                         bool * exited = nullptr) {
    tests::TempDir dir;
    auto l = deploy::remote_layout(dir.path(), "r", "");
    fs::create_directories(l.run_dir);
    deploy::WatchdogSettings w;
    w.action = "request";
    w.request = request;
    w.instance_id = "under-test";
    w.deadline_unix = static_cast<double>(std::time(nullptr)) - 1;
    w.tick_s = 1;
    tests::write_file(l.watchdog_conf, deploy::watchdog_config(w, l));
    auto wd = common::ChildProcess::spawn({"env", request.credential_env + "=" + key, "sh",
                                           std::string(TOOLKIT_SOURCE_DIR) + "/deploy/remote/watchdog.sh", l.watchdog_conf},
                                          {.stdout_path = dir / "wd.log"});
    auto code = wd.wait_for(budget);
    if (exited) *exited = code.has_value();
    if (!code) wd.stop();
    return tests::read_file(dir / "wd.log");
}

size_t requests_of(tests::Emulator & emu, const std::string & action) {
    size_t n = 0;
    const auto state = emu.state();  // held: a range-for over a member of a temporary would dangle
    for (const auto & q : state["requests"]) n += q.value("action", "") == action;
    return n;
}

}  // namespace

TEST_CASE("watchdog request: RunPod and Vast instances end when the watchdog's deadline passes") {
    for (const std::string cloud : {"runpod", "vast"}) {
        CAPTURE(cloud);
        tests::Emulator emu(cloud, {.api_key = "scoped-key-1"});
        auto p = provider_for(emu, "scoped-key-1");
        REQUIRE(p->caps().self_end == broker::SelfEnd::ScopedRequest);
        std::string target = create_instance(*p, "target");
        std::string other = create_instance(*p, "other");
        REQUIRE(exists(*p, target));

        auto request = p->self_end_request(target);
        CHECK(request.call.headers.end() == std::find_if(request.call.headers.begin(), request.call.headers.end(),
                                                         [](const auto & h) { return h.first == "Authorization"; }));
        CHECK(request.call.url.rfind(emu.base_url(), 0) == 0);
        bool exited = false;
        std::string log = run_watchdog(request, "scoped-key-1", 40s, &exited);
        INFO(log);
        CHECK(exited);
        CHECK(log.find("terminate requested") != std::string::npos);
        CHECK_FALSE(exists(*p, target));
        CHECK(exists(*p, other));  // only the instance the request names
        CHECK(requests_of(emu, "terminate") == 1);
        // The key travelled as the Bearer token and nowhere else (not in the log).
        CHECK(log.find("scoped-key-1") == std::string::npos);
    }
}

TEST_CASE("watchdog request: a refused key keeps it retrying, the instance stays until it succeeds") {
    tests::Emulator emu("vast", {.api_key = "scoped-key-1"});
    auto p = provider_for(emu, "scoped-key-1");
    std::string target = create_instance(*p, "target");
    bool exited = true;
    std::string log = run_watchdog(p->self_end_request(target), "wrong-key", 4s, &exited);
    INFO(log);
    CHECK_FALSE(exited);  // waiting 60 s to try again
    CHECK(log.find("HTTP 401") != std::string::npos);
    CHECK(log.find("terminate failed; retrying") != std::string::npos);
    CHECK(exists(*p, target));
}

TEST_CASE("watchdog request: a 404 that is not the provider's own answer is not taken for the instance gone") {
    tests::Emulator emu("vast", {.api_key = "scoped-key-1"});
    auto p = provider_for(emu, "scoped-key-1");
    std::string target = create_instance(*p, "target");
    // A proxy or a wrong route answers; the watchdog runs on the instance, so it cannot be gone.
    emu.inject({{"kind", "http_status"}, {"status", 404}, {"body", "<html>Not Found</html>"}, {"match", {{"action", "terminate"}}},
                {"count", 99}});
    bool exited = true;
    std::string log = run_watchdog(p->self_end_request(target), "scoped-key-1", 4s, &exited);
    INFO(log);
    CHECK_FALSE(exited);  // retrying in 60 s, not "terminate requested"
    CHECK(log.find("HTTP 404") != std::string::npos);
    CHECK(log.find("terminate failed; retrying") != std::string::npos);
    CHECK(exists(*p, target));
}

TEST_CASE("watchdog request: a hostile instance id is data in the body or the path, never code") {
    SUBCASE("RunPod: GraphQL in the id terminates nothing else") {
        tests::Emulator emu("runpod", {.api_key = "scoped-key-1"});
        auto p = provider_for(emu, "scoped-key-1");
        std::string victim = create_instance(*p, "victim");
        // What the old shell watchdog spliced into its mutation text would have ended `victim`.
        std::string hostile = "x\\\"}) podTerminate(input: {podId: \\\"" + victim + "\\\"}) { \"}) podTerminate(input: {podId: \"" +
                              victim + "\"}) #'$(touch /tmp/pwned)`id`";
        auto request = p->self_end_request(hostile);
        auto body = nlohmann::json::parse(request.call.body);
        CHECK(body["variables"]["input"]["podId"] == hostile);  // one JSON string, exactly the id
        CHECK(body["query"].get<std::string>().find(victim) == std::string::npos);
        std::string log = run_watchdog(request, "scoped-key-1", 4s);
        INFO(log);
        CHECK(exists(*p, victim));
        CHECK(log.find("terminate request: curl exit 0") != std::string::npos);  // it was sent, as data
    }
    SUBCASE("Vast: a path in the id stays inside one percent-encoded segment") {
        tests::Emulator emu("vast", {.api_key = "scoped-key-1"});
        auto p = provider_for(emu, "scoped-key-1");
        std::string victim = create_instance(*p, "victim");
        std::string hostile = "../" + victim + "/?x=1 #";
        auto request = p->self_end_request(hostile);
        CHECK(request.call.url.find("/" + victim + "/") == std::string::npos);
        CHECK(request.call.url.find(' ') == std::string::npos);
        run_watchdog(request, "scoped-key-1", 4s);
        CHECK(exists(*p, victim));
    }
}

TEST_CASE("watchdog request: a key with a newline or a space is not sent (it could add a header)") {
    tests::Emulator emu("runpod", {});  // any non-empty key is accepted: an injected header would get through
    auto p = provider_for(emu, "any-key");
    std::string target = create_instance(*p, "target");
    const size_t before = emu.state()["requests"].size();
    for (const std::string key : {"k\nX-Injected: 1", "k Authorization: Bearer other", "k\r\nHost: evil"}) {
        CAPTURE(key);
        std::string log = run_watchdog(p->self_end_request(target), key, 3s);
        CHECK(log.find("not sending it") != std::string::npos);
    }
    CHECK(emu.state()["requests"].size() == before);  // nothing reached the API
    CHECK(exists(*p, target));
}

TEST_CASE("watchdog config: a request no header file or argument can carry safely is refused") {
    auto l = deploy::remote_layout("/home/u", "r", "");
    deploy::WatchdogSettings w;
    w.action = "request";
    w.request.call = {"POST", "https://api.example/graphql", {{"Content-Type", "application/json"}}, "{}"};
    w.request.credential_env = "SCOPED_KEY";
    CHECK(deploy::watchdog_config(w, l).find("REQUEST_URL='https://api.example/graphql'") != std::string::npos);
    auto refused = [&](auto change) {
        auto bad = w;
        change(bad);
        CHECK_THROWS_AS(deploy::watchdog_config(bad, l), common::Error);
    };
    refused([](auto & b) { b.request.call.headers.push_back({"X-A", "1\r\nX-B: 2"}); });
    refused([](auto & b) { b.request.call.headers.push_back({"X A", "1"}); });
    refused([](auto & b) { b.request.call.method = "POST -d @/etc/passwd"; });
    refused([](auto & b) { b.request.call.url = "-K/etc/passwd"; });
    refused([](auto & b) { b.request.call.url = "https://a b"; });
    refused([](auto & b) { b.request.credential_env = "KEY; rm -rf /"; });
    refused([](auto & b) { b.request.credential_env = ""; });
    // The body may hold anything: it reaches curl from a file, quoted in the config.
    w.request.call.body = "{\"a\":\"'$(x)`y`\\n\"}";
    auto conf = deploy::watchdog_config(w, l);
    auto r = common::run_process({"sh", "-c", conf + "printf '%s' \"$REQUEST_BODY\""});
    CHECK(r.out == w.request.call.body);
}
