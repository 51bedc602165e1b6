// Internal: building remote POSIX-sh text safely. Every value that reaches a remote shell passes
// through sh_quote; secrets travel on stdin inside a "prologue block" whose end is a random marker,
// so the remote argv (what ps and /proc/*/cmdline show) is the same fixed text for every call.
#pragma once

#include <string>
#include <string_view>

#include "bifrost/bifrost.h"
#include "common/shell_quote.h"

namespace bifrost {

using common::sh_quote;                                 // 'text' with ' escaped (common/shell_quote.h)
std::string remote_path_expr(std::string_view path);   // "~/x" -> "$HOME"/'x'; others quoted
bool valid_env_name(std::string_view name);
bool valid_job_name(std::string_view name);

// A remote command line and the stdin block it reads before running `script` (the block is eval'd
// by the remote sh; whatever follows it on stdin stays for the script's command).
struct Prologue {
    std::string command;
    std::string stdin_block;
};
Prologue make_prologue(const std::string & script);

// `export K='v'` lines for env (names validated; NUL refused).
std::string export_lines(const EnvList & env);
// The shell text that runs `command` (exec'd, so the status is the command's).
std::string command_text(const Command & command);

}  // namespace bifrost
