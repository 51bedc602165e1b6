// common/program.h's interrupt handling, in a child process of the test (a second signal really
// ends the process): signals closer than kSignalBurstS to the one counted are one press, and the
// "interrupted twice" exit writes the interrupt note a program prepared.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "common/program.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace {

// Runs `body` in a child with the handlers installed and its stderr in `err_path`; the child's exit
// code (128 + N when a signal ended it).
template <class F>
int in_child(const std::string & err_path, F body) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) ::_exit(90);
        ::dup2(fd, STDERR_FILENO);
        common::reset_interrupted();
        common::install_interrupt_handlers(common::OnHangup::Continue);
        ::_exit(body());
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void pause_past_burst() { std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(common::kSignalBurstS * 1000) + 200)); }

}  // namespace

TEST_CASE("interrupts: signals within a second of the one counted are the same press, a later second one exits 130 and prints the note") {
    tests::TempDir dir;
    const std::string err = dir / "stderr.txt";
    const int code = in_child(err, [] {
        common::set_interrupt_note("left running: member-x (run directory /runs/x)\n");
        ::raise(SIGINT);
        ::raise(SIGINT);  // 0 ms later: a terminal that sent two
        ::raise(SIGTERM);
        if (!common::interrupted()) return 3;
        // The program acts on it and goes on to its clean-up: the same press still does not count.
        common::consume_interrupt();
        ::raise(SIGINT);
        if (common::interrupted()) return 4;
        pause_past_burst();
        ::raise(SIGINT);  // a new interruption of the clean-up: the flag, no exit
        if (!common::interrupted()) return 5;
        pause_past_burst();
        ::raise(SIGINT);  // the second press: out at once
        return 6;
    });
    const std::string text = tests::read_file(err);
    INFO(text);
    CHECK(code == 130);
    CHECK(text == "\ninterrupted twice: exiting now\nleft running: member-x (run directory /runs/x)\n");
}

TEST_CASE("interrupts: the note is kept to its bound (cut, marked), and an empty one prints nothing after the line") {
    tests::TempDir dir;
    const std::string err = dir / "stderr.txt";
    int code = in_child(err, [] {
        common::set_interrupt_note(std::string(common::kInterruptNoteMax + 5000, 'n'));
        ::raise(SIGINT);
        pause_past_burst();
        ::raise(SIGINT);
        return 6;
    });
    std::string text = tests::read_file(err);
    CHECK(code == 130);
    const std::string head = "\ninterrupted twice: exiting now\n";
    REQUIRE(text.size() == head.size() + common::kInterruptNoteMax);
    CHECK(text.substr(text.size() - 4) == "...\n");
    code = in_child(err, [] {
        common::set_interrupt_note("something\n");
        common::set_interrupt_note("");
        ::raise(SIGTERM);
        pause_past_burst();
        ::raise(SIGTERM);
        return 6;
    });
    CHECK(code == 130);
    CHECK(tests::read_file(err) == head);
}
