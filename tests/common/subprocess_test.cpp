#include <signal.h>
#include <thread>
#include "common/error.h"
#include "common/shell_quote.h"
#include "common/subprocess.h"
#include <doctest/doctest.h>

TEST_CASE("run_process: exit code, separate streams, stdin") {
    auto r = common::run_process({"sh", "-c", "cat; echo err >&2; exit 7"}, {.stdin_data = "in\n"});
    CHECK(r.exit_code == 7);
    CHECK(r.out == "in\n");
    CHECK(r.err == "err\n");
}

TEST_CASE("run_process: megabytes on both pipes do not deadlock") {
    auto r = common::run_process(
        {"sh", "-c", "head -c 8000000 /dev/zero; head -c 8000000 /dev/zero >&2; head -c 3000000 /dev/zero"});
    CHECK(r.exit_code == 0);
    CHECK(r.out.size() == 11'000'000);
    CHECK(r.err.size() == 8'000'000);
}

TEST_CASE("run_process: a timeout kills the child and says so") {
    auto r = common::run_process({"sleep", "30"}, {.timeout = std::chrono::milliseconds(200)});
    CHECK(r.timed_out);
    CHECK(r.exit_code == 128 + 9);
}

TEST_CASE("run_process: a program that does not exist is not_found") {
    CHECK_THROWS_AS(common::run_process({"no-such-program-xyz"}), common::Error);
}

TEST_CASE("child process: stop ends the whole tree") {
    auto child = common::ChildProcess::spawn({"sh", "-c", "sleep 60 & sleep 60 & wait"}, {});
    std::vector<pid_t> tree;
    for (int i = 0; i < 100 && tree.size() < 2; ++i) {
        tree = common::process_descendants(child.pid());
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(tree.size() == 2);
    child.stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (pid_t p : tree) CHECK_FALSE(common::process_alive(p));
}

TEST_CASE("sh_quote: any bytes come back as one word (quotes, spaces, dollars, backticks, newlines)") {
    for (const std::string nasty : {std::string("it's a $HOME `x` \"y\""), std::string("a\nb; rm -rf /tmp/nothing"),
                                    std::string("''"), std::string(""), std::string("-n")}) {
        auto r = common::run_process({"sh", "-c", "printf %s " + common::sh_quote(nasty)});
        CHECK(r.out == nasty);
    }
}
