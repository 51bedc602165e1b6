// Levelled logging to stderr (stdout carries results only). Every message passes through the
// redactor first, so a registered secret (API key, HF token) never reaches a terminal or log file.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace common::log {

enum class Level { Error = 0, Warn = 1, Info = 2, Debug = 3, Trace = 4 };

// Program name printed as the prefix ("broker: ..."); set once in main().
void set_program(std::string_view name);
const std::string & program();
void set_level(Level level);
Level level();
// -v, -vv, -vvv raise the default Info level; -q lowers it to Warn.
void set_verbosity(int verbose_count, bool quiet);
// Parses "error|warn|info|debug|trace"; throws common::Error (usage) otherwise.
Level parse_level(std::string_view text);
bool enabled(Level level);

// Secrets shorter than 4 characters are ignored (they would redact ordinary words).
void add_secret(std::string secret);
std::string redact(std::string text);

void write(Level level, std::string_view message);

// A one-line live status (a progress bar) kept at the bottom of an interactive stderr: log lines
// are printed above it and it is redrawn after them. Empty text removes it. On a non-TTY stderr
// this draws nothing (progress then reports through ordinary info lines).
void set_status_line(std::string_view text);
bool stderr_is_tty();

template <typename... Args>
std::string concat(const Args &... args) {
    std::ostringstream out;
    (out << ... << args);
    return out.str();
}

template <typename... Args> void error(const Args &... a) { write(Level::Error, concat(a...)); }
template <typename... Args> void warn(const Args &... a) { if (enabled(Level::Warn)) write(Level::Warn, concat(a...)); }
template <typename... Args> void info(const Args &... a) { if (enabled(Level::Info)) write(Level::Info, concat(a...)); }
template <typename... Args> void debug(const Args &... a) { if (enabled(Level::Debug)) write(Level::Debug, concat(a...)); }
template <typename... Args> void trace(const Args &... a) { if (enabled(Level::Trace)) write(Level::Trace, concat(a...)); }

}  // namespace common::log
