// doctest's main for the GPU tests (the host tests' main lives in tests/support, which needs libssh).
// A crash (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) prints where it happened and the stack before
// the process dies: the GPU machine has no debugger, and doctest's own handler only names the test
// case. Resolve "file(+offset)" with addr2line -f -C -e FILE OFFSET.
// The binary leaves through common::exit_now, as extract and analyze do (common/program.h), so
// its exit costs what theirs does.
#include <ATen/ATen.h>

#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdio>

#include "common/program.h"

#define DOCTEST_CONFIG_IMPLEMENT
#define DOCTEST_CONFIG_NO_POSIX_SIGNALS
#include <doctest/doctest.h>

namespace {
void print_crash(int sig, siginfo_t * info, void * context) {
    void * pc = nullptr;
#if defined(__x86_64__)
    pc = reinterpret_cast<void *>(static_cast<ucontext_t *>(context)->uc_mcontext.gregs[REG_RIP]);
#else
    (void)context;
#endif
    Dl_info where{};
    const bool known = pc && dladdr(pc, &where) != 0;
    char line[1024];
    const int n = std::snprintf(line, sizeof line, "\n*** signal %d (fault address %p) at pc %p: %s(+%#lx) %s\n", sig, info->si_addr, pc,
                                known && where.dli_fname ? where.dli_fname : "?",
                                known ? static_cast<unsigned long>(static_cast<char *>(pc) - static_cast<char *>(where.dli_fbase)) : 0ul,
                                known && where.dli_sname ? where.dli_sname : "");
    (void)!write(2, line, static_cast<size_t>(n > 0 ? n : 0));
#if defined(__x86_64__)
    // A call through a null pointer leaves pc at 0 and the unwinder lost: the caller's return
    // address is then the word at the top of the stack. Name the code addresses found there.
    auto ** sp = reinterpret_cast<void **>(static_cast<ucontext_t *>(context)->uc_mcontext.gregs[REG_RSP]);
    for (int i = 0; i < 24; ++i) {
        Dl_info d{};
        if (!sp[i] || dladdr(sp[i], &d) == 0 || !d.dli_fname) continue;
        const int m = std::snprintf(line, sizeof line, "  stack[%d] %p %s(+%#lx) %s\n", i, sp[i], d.dli_fname,
                                    static_cast<unsigned long>(static_cast<char *>(sp[i]) - static_cast<char *>(d.dli_fbase)),
                                    d.dli_sname ? d.dli_sname : "");
        (void)!write(2, line, static_cast<size_t>(m > 0 ? m : 0));
    }
#endif
    void * frames[64];
    backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
    signal(sig, SIG_DFL);
    raise(sig);
}
}  // namespace

int main(int argc, char ** argv) {
    struct sigaction sa {};
    sa.sa_sigaction = print_crash;
    sa.sa_flags = SA_SIGINFO;
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) sigaction(sig, &sa, nullptr);
    doctest::Context context(argc, argv);
    common::exit_now(context.run());
}
