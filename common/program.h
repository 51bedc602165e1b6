// What every program's main() shares: one place that turns an escaped exception into exactly one
// printed error and the documented exit code, and Ctrl-C/SIGTERM/SIGHUP handling that lets long work stop
// cleanly (the handler only sets a flag; loops call throw_if_interrupted()).
#pragma once

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

// SIGINT and SIGTERM set a flag instead of killing the process. A second Ctrl-C exits at once
// with 130, for a user who really wants out.
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
void reset_interrupted();     // for tests

}  // namespace common
