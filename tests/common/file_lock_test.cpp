// common::FileLock: what the ssh-hosts leases, bifrost's control-master start-up and known-hosts
// pinning, and the sweep's download slots rely on. flock(2) locks belong to an open file
// description, so a second open() in this same process contends like another process would.
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

#include "common/error.h"
#include "common/file_lock.h"
#include "common/program.h"
#include "tests/support/error_of.h"
#include "tests/support/temp_dir.h"
#include <doctest/doctest.h>

using common::FileLock;

namespace {

// A child process that takes the lock on `path`, then runs `while_held` and exits (dropping it).
// Returns once the child holds the lock.
pid_t fork_holder(const std::string & path, const std::function<void()> & while_held) {
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::close(ready[0]);
        FileLock held(path);
        (void)!::write(ready[1], "x", 1);
        while_held();
        ::_exit(0);
    }
    ::close(ready[1]);
    char c;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    ::close(ready[0]);
    return child;
}

}  // namespace

TEST_CASE("file lock: held until the object goes, moves keep it held") {
    tests::TempDir dir;
    const std::string path = dir / "a.lock";
    {
        FileLock first(path);
        CHECK_FALSE(FileLock::try_lock(path).has_value());
        FileLock moved(std::move(first));
        CHECK(first.fd() == -1);
        CHECK_FALSE(FileLock::try_lock(path).has_value());
        auto again = FileLock::try_lock(dir / "b.lock");  // another file is its own lock
        CHECK(again.has_value());
    }
    auto free_now = FileLock::try_lock(path);
    REQUIRE(free_now.has_value());
    CHECK(free_now->fd() >= 0);
}

TEST_CASE("file lock: a holder killed with SIGKILL leaves no stale lock") {
    tests::TempDir dir;
    const std::string path = dir / "k.lock";
    const pid_t child = fork_holder(path, [] {
        for (;;) ::pause();
    });
    CHECK_FALSE(FileLock::try_lock(path).has_value());
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    CHECK(FileLock::try_lock(path).has_value());
}

TEST_CASE("file lock: a waiter gets the lock once the holder exits, not before") {
    tests::TempDir dir;
    const std::string path = dir / "w.lock";
    const pid_t child = fork_holder(path, [&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        tests::write_file(dir / "leaving", "");  // written while the lock is still held
    });
    FileLock mine(path);  // blocks while the child holds it
    CHECK(std::filesystem::exists(dir / "leaving"));  // so it was not taken before the child let go
    int status = 0;
    ::waitpid(child, &status, 0);
}

TEST_CASE("file lock: Ctrl-C ends a wait for a lock that is never freed") {
    tests::TempDir dir;
    const std::string path = dir / "i.lock";
    FileLock holder(path);
    common::install_interrupt_handlers();
    common::reset_interrupted();
    // SIGINT aimed at this thread until the wait ends: one sent just before flock() starts would
    // otherwise be noticed only by the next.
    const pthread_t waiter = ::pthread_self();
    std::atomic<bool> done{false};
    std::thread nudger([&] {
        while (!done) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            if (!done) ::pthread_kill(waiter, SIGINT);
        }
    });
    bool taken = false;
    common::ErrorKind kind = common::ErrorKind::Internal;
    try {
        FileLock blocked(path);
        taken = true;
    } catch (const common::Error & e) {
        kind = e.kind();
    }
    done = true;
    nudger.join();
    common::reset_interrupted();
    CHECK_FALSE(taken);
    CHECK(kind == common::ErrorKind::Interrupted);
}

TEST_CASE("file lock: an unusable path is named in the error") {
    tests::TempDir dir;
    const std::string missing = dir / "no-such-dir/x.lock";
    CHECK(tests::error_of([&] { FileLock lock(missing); }).find(missing) == 0);
    CHECK(tests::error_of([&] { (void)FileLock::try_lock(missing); }).find(missing) == 0);
    try {
        FileLock lock(missing);
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::NotFound);
    }
}

TEST_CASE("file lock: an append lock writes through its descriptor and keeps what was there") {
    tests::TempDir dir;
    const std::string path = dir / "known_hosts";
    tests::write_file(path, "first\n");
    {
        FileLock pins(path, FileLock::Mode::Append);
        REQUIRE(::write(pins.fd(), "second\n", 7) == 7);
        CHECK_FALSE(FileLock::try_lock(path).has_value());
    }
    CHECK(tests::read_file(path) == "first\nsecond\n");
}
