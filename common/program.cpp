#include "common/program.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
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

void on_signal(int) {
    if (g_signals.fetch_add(1) >= 1) {
        const char msg[] = "\ninterrupted twice: exiting now\n";
        (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
        ::_exit(130);
    }
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

void reset_interrupted() { g_signals = 0; }

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
