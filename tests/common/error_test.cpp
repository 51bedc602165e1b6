#include <csignal>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/program.h"
#include <doctest/doctest.h>

using common::Error;
using common::ErrorKind;

TEST_CASE("error kinds map to the documented exit codes") {
    CHECK(common::exit_code(ErrorKind::Internal) == 1);
    CHECK(common::exit_code(ErrorKind::Usage) == 2);
    CHECK(common::exit_code(ErrorKind::Auth) == 3);
    CHECK(common::exit_code(ErrorKind::Capacity) == 4);
    CHECK(common::exit_code(ErrorKind::Quota) == 5);
    CHECK(common::exit_code(ErrorKind::Network) == 6);
    CHECK(common::exit_code(ErrorKind::Timeout) == 7);
    CHECK(common::exit_code(ErrorKind::RemoteFailed) == 8);
    CHECK(common::exit_code(ErrorKind::NotFound) == 9);
    CHECK(common::exit_code(ErrorKind::LeakRisk) == 10);
    CHECK(common::exit_code(ErrorKind::Interrupted) == 130);
    CHECK(common::kind_name(ErrorKind::LeakRisk) == "leak_risk");
}

TEST_CASE("kind names read back to the same kinds, unknown names to none") {
    for (auto k : {ErrorKind::Internal, ErrorKind::Usage, ErrorKind::Auth, ErrorKind::Capacity, ErrorKind::Quota,
                   ErrorKind::Network, ErrorKind::Timeout, ErrorKind::RemoteFailed, ErrorKind::NotFound,
                   ErrorKind::LeakRisk, ErrorKind::Interrupted})
        CHECK(common::kind_from_name(common::kind_name(k)) == k);
    CHECK(common::kind_from_name("remote_failed") == ErrorKind::RemoteFailed);
    CHECK_FALSE(common::kind_from_name("").has_value());
    CHECK_FALSE(common::kind_from_name("Usage").has_value());
    CHECK_FALSE(common::kind_from_name("leak-risk").has_value());
}

TEST_CASE("missing credential names the provider and the variable to set") {
    Error e = Error::missing_credential("runpod", "RUNPOD_API_KEY");
    CHECK(e.kind() == ErrorKind::Auth);
    CHECK(std::string(e.what()).find("RUNPOD_API_KEY") != std::string::npos);
    REQUIRE(e.context().size() == 1);
    CHECK(e.context()[0].second == "runpod");
}

TEST_CASE("io errors: a missing file is not_found, a permission problem is usage") {
    CHECK(Error::io("/x", "open", ENOENT).kind() == ErrorKind::NotFound);
    CHECK(Error::io("/x", "open", EACCES).kind() == ErrorKind::Usage);
    CHECK(Error::io("/x", "open", EIO).kind() == ErrorKind::Internal);
    CHECK(Error::io("/x/y", "open", ENOENT).message().find("/x/y") == 0);
}

TEST_CASE("run_program returns the error's exit code and 1 for foreign exceptions") {
    bool json = false;
    CHECK(common::run_program("t", &json, [] { return 0; }) == 0);
    CHECK(common::run_program("t", &json, []() -> int { throw Error(ErrorKind::Capacity, "none"); }) == 4);
    CHECK(common::run_program("t", &json, []() -> int { throw std::runtime_error("boom"); }) == 1);
    json = true;
    CHECK(common::run_program("t", &json, []() -> int { throw Error(ErrorKind::LeakRisk, "x"); }) == 10);
}

TEST_CASE("throw_if_interrupted throws an interrupted error once a signal arrived") {
    common::reset_interrupted();
    CHECK_NOTHROW(common::throw_if_interrupted());
    common::install_interrupt_handlers();
    ::raise(SIGTERM);
    CHECK(common::interrupted());
    try {
        common::throw_if_interrupted();
        FAIL("expected an exception");
    } catch (const Error & e) {
        CHECK(e.kind() == ErrorKind::Interrupted);
    }
    common::reset_interrupted();
}

TEST_CASE("a hang-up interrupts a short command, and is ignored (with SIGPIPE) by a program that must reach its finish") {
    common::reset_interrupted();
    common::install_interrupt_handlers();
    ::raise(SIGHUP);  // without a handler this would end the test binary
    CHECK(common::interrupted());
    common::reset_interrupted();

    common::install_interrupt_handlers(common::OnHangup::Continue);
    ::raise(SIGHUP);
    ::raise(SIGPIPE);
    CHECK_FALSE(common::interrupted());
    struct sigaction now {};
    ::sigaction(SIGPIPE, nullptr, &now);
    const bool pipe_ignored = now.sa_handler == SIG_IGN;
    CHECK(pipe_ignored);
    ::raise(SIGINT);  // Ctrl-C still stops it
    CHECK(common::interrupted());
    common::reset_interrupted();
    // Back to the default for the other cases in this binary.
    common::install_interrupt_handlers();
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
}
