#include "common/program.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>

#include "common/error.h"
#include "common/log.h"
#include "common/output.h"

namespace common {

namespace {
std::atomic<int> g_signals{0};
// When the last counted signal came (CLOCK_MONOTONIC, ns); 0: none since reset_interrupted().
std::atomic<int64_t> g_last_counted_ns{0};
static_assert(std::atomic<int64_t>::is_always_lock_free && std::atomic<size_t>::is_always_lock_free,
              "the signal handler needs lock-free atomics");
constexpr int64_t kBurstNs = static_cast<int64_t>(kSignalBurstS * 1e9);

// The interrupt note, double-buffered: the handler writes the buffer g_note_active names, and
// set_interrupt_note fills the other one before switching to it, so a handler that interrupts
// (or runs beside) an update reads a whole note, old or new. Once the handler has begun its exit
// (g_exiting), no update starts: the buffer it reads is never rewritten under it.
char g_note[2][kInterruptNoteMax];
std::atomic<size_t> g_note_len[2] = {0, 0};
std::atomic<int> g_note_active{0};
std::atomic<bool> g_exiting{false};

int64_t monotonic_ns() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe (POSIX.1-2008)
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void write_stderr(const char * p, size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        p += w;
        n -= static_cast<size_t>(w);
    }
}

// Async-signal-safe only: atomics, clock_gettime, write, _exit.
void on_signal(int) {
    const int saved_errno = errno;
    const int64_t now = monotonic_ns();
    int64_t last = g_last_counted_ns.load();
    do {
        if (last != 0 && now - last < kBurstNs) {  // the same press as the signal counted before
            errno = saved_errno;
            return;
        }
    } while (!g_last_counted_ns.compare_exchange_weak(last, now));
    if (g_signals.fetch_add(1) >= 1) {
        g_exiting = true;
        const char msg[] = "\ninterrupted twice: exiting now\n";
        write_stderr(msg, sizeof msg - 1);
        const int active = g_note_active.load();
        write_stderr(g_note[active], g_note_len[active].load());
        ::_exit(130);
    }
    errno = saved_errno;
}
}  // namespace

void install_interrupt_handlers(OnHangup hangup) {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR so loops notice promptly
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    if (hangup == OnHangup::Continue) {
        struct sigaction ignore {};
        ignore.sa_handler = SIG_IGN;
        sigemptyset(&ignore.sa_mask);
        ::sigaction(SIGHUP, &ignore, nullptr);
        ::sigaction(SIGPIPE, &ignore, nullptr);
    } else {
        ::sigaction(SIGHUP, &sa, nullptr);
    }
}

bool interrupted() { return g_signals.load() > 0; }

void throw_if_interrupted() {
    if (interrupted()) throw Error(ErrorKind::Interrupted, "interrupted");
}

void reset_interrupted() {
    g_signals = 0;
    g_last_counted_ns = 0;
}

void consume_interrupt() { g_signals = 0; }

void set_interrupt_note(std::string_view text) {
    if (g_exiting) return;
    const int next = 1 - g_note_active.load();
    const size_t n = std::min(text.size(), kInterruptNoteMax);
    std::memcpy(g_note[next], text.data(), n);
    if (text.size() > kInterruptNoteMax) std::memcpy(g_note[next] + kInterruptNoteMax - 4, "...\n", 4);
    g_note_len[next] = n;
    g_note_active = next;
}

void exit_now(int code) {
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    std::_Exit(code);
}

int run_program(std::string_view program, const bool * json_errors, const std::function<int()> & body) {
    log::set_program(program);
    try {
        return body();
    } catch (const Error & e) {
        return report_error(e, json_errors && *json_errors);
    } catch (const std::exception & e) {
        return report_error(Error::internal(std::string("unexpected error: ") + e.what()),
                            json_errors && *json_errors);
    }
}

}  // namespace common
