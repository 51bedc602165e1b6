// The staged readiness wait with a scripted provider and a FakeClock: terminal states fail at once,
// the deadline is respected without real sleeping, a vanished instance is NotFound, and the GPU
// report check compares count and VRAM.
#include <deque>

#include "broker/readiness.h"
#include "common/error.h"

#include <doctest/doctest.h>

using namespace broker;

namespace {
class ScriptedProvider final : public Provider {
public:
    std::deque<std::optional<Instance>> script;  // answers to get(); the last one repeats
    int gets = 0;
    std::string_view name() const override { return "scripted"; }
    ProviderCaps caps() const override { return {}; }
    std::vector<Offer> search(const OfferFilter &) override { return {}; }
    Instance create(const CreateRequest &) override { return {}; }
    std::optional<Instance> get(std::string_view) override {
        ++gets;
        auto a = script.front();
        if (script.size() > 1) script.pop_front();
        return a;
    }
    std::vector<Instance> list() override { return {}; }
    void terminate(std::string_view) override {}
};

Instance with_status(InstanceStatus s, const char * raw) {
    Instance i;
    i.id = "x";
    i.status = s;
    i.status_raw = raw;
    return i;
}
}  // namespace

TEST_CASE("readiness: a terminal provider state fails at once, not at the deadline") {
    common::FakeClock clock;
    ScriptedProvider p;
    p.script = {with_status(InstanceStatus::Pending, "CREATED"), with_status(InstanceStatus::Failed, "DEAD")};
    ReadyOptions o;
    o.clock = &clock;
    o.budget = std::chrono::minutes(15);
    o.poll_interval = std::chrono::seconds(5);
    auto start = clock.now();
    try {
        wait_ready(p, "x", o);
        FAIL("expected failure");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::RemoteFailed);
        CHECK(e.message().find("DEAD") != std::string::npos);
    }
    CHECK(common::to_seconds(clock.now() - start) == doctest::Approx(5));  // one poll, not 15 minutes
}

TEST_CASE("readiness: a machine that stays pending times out at the deadline, naming the stage") {
    common::FakeClock clock;
    ScriptedProvider p;
    p.script = {with_status(InstanceStatus::Pending, "loading")};
    ReadyOptions o;
    o.clock = &clock;
    o.budget = std::chrono::seconds(60);
    o.poll_interval = std::chrono::seconds(7);
    auto start = clock.now();
    try {
        wait_ready(p, "x", o);
        FAIL("expected a timeout");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Timeout);
        CHECK(e.message().find("stage provider") != std::string::npos);
        CHECK(e.message().find("loading") != std::string::npos);
    }
    CHECK(common::to_seconds(clock.now() - start) == doctest::Approx(60));  // never overshoots
    CHECK(p.gets == 10);  // polls at 0, 7, ..., 56 and a last look at the deadline (60)
}

TEST_CASE("readiness: running without an SSH endpoint keeps waiting, a vanished instance is not found") {
    common::FakeClock clock;
    ScriptedProvider p;
    p.script = {with_status(InstanceStatus::Running, "RUNNING"), std::nullopt};
    ReadyOptions o;
    o.clock = &clock;
    CHECK_THROWS_WITH_AS(wait_ready(p, "x", o), doctest::Contains("no longer lists it"), common::Error);
}

TEST_CASE("readiness: GPU report check compares count and VRAM") {
    CHECK(check_gpu_report("81559\n81559\n", 2, 80).empty());
    CHECK(check_gpu_report("81559\n", 2, 80).find("expected 2 GPU(s)") != std::string::npos);
    CHECK(check_gpu_report("24564\n", 1, 80).find("expected 80 GB") != std::string::npos);
    CHECK(check_gpu_report("", 1, 24).find("shows 0") != std::string::npos);
    CHECK(check_gpu_report("No devices were found\n", 1, 24).find("unexpected") != std::string::npos);
}
