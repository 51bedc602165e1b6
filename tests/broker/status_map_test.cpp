// Every documented provider status maps to the right InstanceStatus; unknown values stay Unknown.
#include "broker/providers/providers.h"

#include <doctest/doctest.h>

using namespace broker;
using namespace broker::providers;

TEST_CASE("runpod: every desiredStatus maps, EXITED is stopped, unknown is kept unknown") {
    SUBCASE("CREATED") { CHECK(runpod_status("CREATED") == InstanceStatus::Pending); }
    SUBCASE("RUNNING") { CHECK(runpod_status("RUNNING") == InstanceStatus::Running); }
    SUBCASE("RESTARTING") { CHECK(runpod_status("RESTARTING") == InstanceStatus::Pending); }
    SUBCASE("PAUSED") { CHECK(runpod_status("PAUSED") == InstanceStatus::Pending); }
    SUBCASE("EXITED") { CHECK(runpod_status("EXITED") == InstanceStatus::Stopped); }
    SUBCASE("DEAD") { CHECK(runpod_status("DEAD") == InstanceStatus::Failed); }
    SUBCASE("TERMINATED") { CHECK(runpod_status("TERMINATED") == InstanceStatus::Terminated); }
    SUBCASE("unknown") { CHECK(runpod_status("HIBERNATING") == InstanceStatus::Unknown); }
}

TEST_CASE("vast: NULL status is pending, not failed, offline fails fast") {
    SUBCASE("null") { CHECK(vast_status(nullptr) == InstanceStatus::Pending); }
    SUBCASE("created") { CHECK(vast_status("created") == InstanceStatus::Pending); }
    SUBCASE("loading") { CHECK(vast_status("loading") == InstanceStatus::Pending); }
    SUBCASE("restarting") { CHECK(vast_status("restarting") == InstanceStatus::Pending); }
    SUBCASE("rebooting") { CHECK(vast_status("rebooting") == InstanceStatus::Pending); }
    SUBCASE("running") { CHECK(vast_status("running") == InstanceStatus::Running); }
    SUBCASE("exited") { CHECK(vast_status("exited") == InstanceStatus::Stopped); }
    SUBCASE("stopped") { CHECK(vast_status("stopped") == InstanceStatus::Stopped); }
    SUBCASE("frozen") { CHECK(vast_status("frozen") == InstanceStatus::Stopped); }
    SUBCASE("offline") { CHECK(vast_status("offline") == InstanceStatus::Failed); }
    SUBCASE("upper case") { CHECK(vast_status("RUNNING") == InstanceStatus::Running); }
    SUBCASE("unknown") { CHECK(vast_status("teleporting") == InstanceStatus::Unknown); }
}

TEST_CASE("lambda: every documented status maps") {
    SUBCASE("booting") { CHECK(lambda_status("booting") == InstanceStatus::Pending); }
    SUBCASE("active") { CHECK(lambda_status("active") == InstanceStatus::Running); }
    SUBCASE("unhealthy") { CHECK(lambda_status("unhealthy") == InstanceStatus::Failed); }
    SUBCASE("terminating") { CHECK(lambda_status("terminating") == InstanceStatus::Terminating); }
    SUBCASE("terminated") { CHECK(lambda_status("terminated") == InstanceStatus::Terminated); }
    SUBCASE("unknown") { CHECK(lambda_status("preempted") == InstanceStatus::Unknown); }
}

TEST_CASE("primeintellect: ACTIVE is running only once installation finished") {
    SUBCASE("PROVISIONING") { CHECK(prime_status("PROVISIONING", "") == InstanceStatus::Pending); }
    SUBCASE("PENDING") { CHECK(prime_status("PENDING", "") == InstanceStatus::Pending); }
    SUBCASE("ACTIVE installing") { CHECK(prime_status("ACTIVE", "INSTALLING") == InstanceStatus::Pending); }
    SUBCASE("ACTIVE finished") { CHECK(prime_status("ACTIVE", "FINISHED") == InstanceStatus::Running); }
    SUBCASE("ACTIVE no installation field") { CHECK(prime_status("ACTIVE", "") == InstanceStatus::Running); }
    SUBCASE("STOPPED") { CHECK(prime_status("STOPPED", "") == InstanceStatus::Stopped); }
    SUBCASE("TERMINATED") { CHECK(prime_status("TERMINATED", "") == InstanceStatus::Terminated); }
    SUBCASE("ERROR") { CHECK(prime_status("ERROR", "") == InstanceStatus::Failed); }
    SUBCASE("FAILED") { CHECK(prime_status("FAILED", "") == InstanceStatus::Failed); }
    SUBCASE("ACTIVE installation failed") { CHECK(prime_status("ACTIVE", "FAILED") == InstanceStatus::Failed); }
    SUBCASE("DELETING") { CHECK(prime_status("DELETING", "") == InstanceStatus::Terminating); }
    SUBCASE("unknown") { CHECK(prime_status("RUNNING", "") == InstanceStatus::Unknown); }
}

TEST_CASE("status: only terminated instances are known not to bill") {
    CHECK_FALSE(may_bill(InstanceStatus::Terminated));
    CHECK(may_bill(InstanceStatus::Unknown));
    CHECK(may_bill(InstanceStatus::Stopped));
    CHECK(may_bill(InstanceStatus::Terminating));
}
