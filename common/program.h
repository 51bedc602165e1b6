// What every program's main() shares: one place that turns an escaped exception into exactly one
// printed error and the documented exit code, and Ctrl-C/SIGTERM/SIGHUP handling that lets long work stop
// cleanly (the handler only sets a flag; loops call throw_if_interrupted()).
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

namespace common {

// Sets the log prefix, runs body, and maps common::Error to its exit code (printed as text or, when
// *json_errors is true at the time of the error, as one JSON object on stderr). Any other exception
// is an internal error (exit 1).
int run_program(std::string_view program, const bool * json_errors, const std::function<int()> & body);

// Ends a GPU program after its work is done and every output is written: flushes stdout and stderr
// and leaves without static destructors or library teardown. Releasing ~13 GiB of model weights
// through PyTorch's allocator and the CUDA driver one segment at a time took 1.8 s at exit on an H100
// (longer than the forward pass); the driver reclaims a finished process's memory at once.
[[noreturn]] void exit_now(int code);

// SIGINT and SIGTERM set a flag instead of killing the process. A second one exits at once with 130,
// for a user who really wants out, but only when it comes at least kSignalBurstS after the one
// counted before it: signals closer together are one press (a terminal that sends two, a key
// pressed twice in a hurry, `kill` run twice by a script) and are ignored, so that a quick double
// press cannot skip the clean-up the first one started (a sweep waiting for its members to end
// their instances). The exit prints the interrupt note (set_interrupt_note) after its own line.
//
// A hang-up (the terminal closed, the SSH session to the user's workstation dropped) is:
// - Interrupt (the default): one more interruption, so a short command still cleans up.
// - Continue: ignored, and so is SIGPIPE. For a program whose death can leave a paid machine
//   running (deploy_and_analyze): it goes on to its finish step like a `nohup` run, and a log line
//   written to a pipe whose reader has gone (`2>&1 | tee` after Ctrl-C) fails instead of killing it.
enum class OnHangup { Interrupt, Continue };
void install_interrupt_handlers(OnHangup hangup = OnHangup::Interrupt);
bool interrupted();
void throw_if_interrupted();  // throws Error(Interrupted) once a signal arrived
void reset_interrupted();     // for tests: forgets every signal, the burst window included

// Signals closer than this to the one counted before them are the same press (see above).
constexpr double kSignalBurstS = 1.0;

// The program has acted on the interruption and goes on to work that must not be cut by it (a
// finish that ends the instance, a sweep waiting for its members): clears the flag, so the next
// signal is a new interruption, while one still inside the burst window of the signal just handled
// is ignored as part of the same press.
void consume_interrupt();

// Text the "interrupted twice" exit writes after its own line: what such an exit leaves running
// and where to look (a sweep: its members still finishing, their run directories and instances).
// Copied into a fixed buffer here (at most kInterruptNoteMax bytes; longer text is cut, marked
// "..."), so that the signal handler only calls write(2): nothing is allocated or locked there.
// Call from one thread at a time; "" clears it.
constexpr size_t kInterruptNoteMax = 16 * 1024;
void set_interrupt_note(std::string_view text);

}  // namespace common
