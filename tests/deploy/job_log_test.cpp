// RUN_DIR/logs/ files (deploy/job_log.h): what a user's folder may hold in a log's place (a FIFO, a
// symlink to another file, a dangling symlink, a directory, logs/ itself a link) is refused naming
// the path, without blocking and without touching anything a link points at; readers look at a
// bounded tail only.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <string>
#include <thread>

#include "common/error.h"
#include "deploy/job_log.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// Runs `fn` on a thread; a call still blocked after 5 s (an open of the FIFO at `fifo` waiting for
// its other end) is released by opening both ends, and counts as blocked.
bool finishes_without_blocking(const std::string & fifo, const std::function<void()> & fn) {
    auto done = std::async(std::launch::async, fn);
    if (done.wait_for(5s) == std::future_status::ready) {
        done.get();
        return true;
    }
    const int fd = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK);
    done.wait();
    if (fd >= 0) ::close(fd);
    return false;
}

// The message of the common::Error `fn` throws ("" when it throws none).
std::string error_of(const std::function<void()> & fn, common::ErrorKind * kind = nullptr) {
    try {
        fn();
    } catch (const common::Error & e) {
        if (kind) *kind = e.kind();
        return e.message();
    }
    return "";
}

}  // namespace

TEST_CASE("job log: cut to the saved offset, then appended and echoed line by line") {
    tests::TempDir dir("job-log");
    const std::string logs = dir / "logs";
    fs::create_directories(logs);
    tests::write_file(logs + "/analysis.log", "line one\nline two\ntorn tail after the saved offset");
    std::vector<std::string> seen;
    {
        deploy::JobLog log(logs, "analysis.log", 18, "analysis");
        log.write("line three\npart", [&](const std::string & l) { seen.push_back(l); });
        log.write("ial\n", [&](const std::string & l) { seen.push_back(l); });
    }
    CHECK(tests::read_file(logs + "/analysis.log") == "line one\nline two\nline three\npartial\n");
    CHECK(seen == std::vector<std::string>{"line three", "partial"});
    // A missing logs folder (an older or hand-cleaned run directory) is made.
    fs::remove_all(logs);
    { deploy::JobLog(logs, "fetch.log", 0, "fetch").write("x\n"); }
    CHECK(tests::read_file(logs + "/fetch.log") == "x\n");
}

TEST_CASE("job log: a FIFO in a log's place is refused at once, naming the path, by the writer and both readers") {
    tests::TempDir dir("job-log");
    const std::string logs = dir / "logs";
    fs::create_directories(logs);
    const std::string fifo = logs + "/analysis.log";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    std::string msg;
    common::ErrorKind kind = common::ErrorKind::Internal;
    CHECK(finishes_without_blocking(fifo, [&] { msg = error_of([&] { deploy::JobLog(logs, "analysis.log", 0, "analysis"); }, &kind); }));
    CHECK(kind == common::ErrorKind::Usage);
    CHECK(msg.find(fifo) != std::string::npos);
    CHECK(msg.find("not a regular file") != std::string::npos);
    // With a reader at the other end the open itself succeeds: the type is still checked.
    const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
    REQUIRE(reader >= 0);
    msg = error_of([&] { deploy::JobLog(logs, "analysis.log", 0, "analysis"); });
    ::close(reader);
    CHECK(msg.find("FIFO") != std::string::npos);

    std::string tail;
    CHECK(finishes_without_blocking(fifo, [&] { tail = deploy::tail_lines(logs, "analysis.log", 8); }));
    CHECK(tail.find("cannot be read") != std::string::npos);
    CHECK(tail.find(fifo) != std::string::npos);
    CHECK(finishes_without_blocking(fifo, [&] { msg = error_of([&] { deploy::value_from_log(logs, "analysis.log", "bin_dir"); }); }));
    CHECK(msg.find(fifo) != std::string::npos);
    CHECK(fs::is_fifo(fs::symlink_status(fifo)));  // left as it is
}

TEST_CASE("job log: a symlink in a log's place (to a file, or dangling) or as the logs folder is never written through") {
    tests::TempDir dir("job-log");
    const std::string logs = dir / "logs";
    fs::create_directories(logs);
    const std::string victim = dir / "precious.txt";
    tests::write_file(victim, "the user's own file, longer than the saved offset\n");
    fs::create_symlink(victim, logs + "/analysis.log");
    std::string msg = error_of([&] { deploy::JobLog(logs, "analysis.log", 3, "analysis").write("overwritten\n"); });
    CHECK(msg.find(logs + "/analysis.log") != std::string::npos);
    CHECK(msg.find("symbolic link") != std::string::npos);
    CHECK(tests::read_file(victim) == "the user's own file, longer than the saved offset\n");
    // Read through neither.
    CHECK(deploy::tail_lines(logs, "analysis.log", 8).find("the user's own file") == std::string::npos);
    CHECK(error_of([&] { deploy::value_from_log(logs, "analysis.log", "x"); }).find("symbolic link") != std::string::npos);

    // Dangling: its target is not created.
    const std::string target = dir / "created-elsewhere.txt";
    fs::create_symlink(target, logs + "/fetch.log");
    msg = error_of([&] { deploy::JobLog(logs, "fetch.log", 0, "fetch").write("x\n"); });
    CHECK(msg.find(logs + "/fetch.log") != std::string::npos);
    CHECK_FALSE(fs::exists(fs::symlink_status(target)));

    // A directory in a log's place.
    fs::create_directories(logs + "/bootstrap.log");
    CHECK(error_of([&] { deploy::JobLog(logs, "bootstrap.log", 0, "bootstrap"); }).find("a directory") != std::string::npos);

    // logs/ itself a link to another folder.
    const std::string elsewhere = dir / "elsewhere";
    fs::create_directories(elsewhere);
    const std::string linked = dir / "run2-logs";
    fs::create_directory_symlink(elsewhere, linked);
    msg = error_of([&] { deploy::JobLog(linked, "analysis.log", 0, "analysis").write("x\n"); });
    CHECK(msg.find(linked) != std::string::npos);
    CHECK(fs::is_empty(elsewhere));
}

TEST_CASE("job log: the readers look at a bounded tail of a huge log") {
    tests::TempDir dir("job-log");
    const std::string logs = dir / "logs";
    fs::create_directories(logs);
    // 5 MiB without a line break, then the lines the readers want.
    std::string text(5u << 20, 'x');
    text += "\nbin_dir=/old\nstep 1\nbin_dir=/cache/bin\nlast line\n";
    tests::write_file(logs + "/bootstrap.log", text);
    const std::string tail = deploy::tail_lines(logs, "bootstrap.log", 8);
    CHECK(tail.size() < 4096);  // the 5 MiB line, cut by the bound, is not one of the lines
    CHECK(tail.find("\n    last line") != std::string::npos);
    CHECK(tail.find("\n    step 1") != std::string::npos);
    CHECK(deploy::value_from_log(logs, "bootstrap.log", "bin_dir") == "/cache/bin");
    CHECK(deploy::tail_lines(logs, "bootstrap.log", 2) == "\n    bin_dir=/cache/bin\n    last line");
    // No log at all.
    CHECK(deploy::value_from_log(logs, "fetch.log", "model_dir").empty());
    CHECK(deploy::tail_lines(logs, "fetch.log", 8).find("no log") != std::string::npos);
}
