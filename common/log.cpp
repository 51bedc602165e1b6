#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <vector>

#include <unistd.h>

#include "common/error.h"

namespace common::log {

namespace {
std::mutex g_mutex;  // guards g_program, g_secrets and the write itself (lines never interleave)
std::string g_program = "toolkit";
std::vector<std::string> g_secrets;
std::atomic<int> g_level{static_cast<int>(Level::Info)};
std::string g_status;  // the live status line currently drawn, if any

constexpr std::string_view kClearLine = "\r\033[K";

constexpr std::string_view kLevelNames[] = {"error", "warn", "info", "debug", "trace"};
}  // namespace

void set_program(std::string_view name) {
    std::lock_guard lock(g_mutex);
    g_program = std::string(name);
}

const std::string & program() { return g_program; }

void set_level(Level level) { g_level = static_cast<int>(level); }
Level level() { return static_cast<Level>(g_level.load()); }
bool enabled(Level level) { return static_cast<int>(level) <= g_level.load(); }

void set_verbosity(int verbose_count, bool quiet) {
    if (quiet) return set_level(Level::Warn);
    int lvl = static_cast<int>(Level::Info) + verbose_count;
    set_level(static_cast<Level>(lvl > 4 ? 4 : lvl));
}

Level parse_level(std::string_view text) {
    for (int i = 0; i < 5; ++i)
        if (kLevelNames[i] == text) return static_cast<Level>(i);
    throw Error::usage("unknown log level '" + std::string(text) + "' (error, warn, info, debug, trace)");
}

void add_secret(std::string secret) {
    if (secret.size() < 4) return;
    std::lock_guard lock(g_mutex);
    for (const auto & s : g_secrets)
        if (s == secret) return;
    g_secrets.push_back(std::move(secret));
}

namespace {
std::string redact_locked(std::string text) {
    for (const auto & secret : g_secrets) {
        for (size_t pos = text.find(secret); pos != std::string::npos; pos = text.find(secret, pos))
            text.replace(pos, secret.size(), "[REDACTED]");
    }
    return text;
}
}  // namespace

std::string redact(std::string text) {
    std::lock_guard lock(g_mutex);
    return redact_locked(std::move(text));
}

void write(Level level, std::string_view message) {
    std::lock_guard lock(g_mutex);
    std::string line = g_program;
    if (level != Level::Info) {
        line += ": ";
        line += kLevelNames[static_cast<int>(level)];
    }
    line += ": ";
    line += redact_locked(std::string(message));
    line += '\n';
    if (!g_status.empty()) line = std::string(kClearLine) + line + g_status;
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
}

bool stderr_is_tty() {
    static const bool tty = ::isatty(STDERR_FILENO) == 1;
    return tty;
}

void set_status_line(std::string_view text) {
    if (!stderr_is_tty()) return;
    std::lock_guard lock(g_mutex);
    g_status = redact_locked(std::string(text));
    std::string out = std::string(kClearLine) + g_status;
    std::fwrite(out.data(), 1, out.size(), stderr);
    std::fflush(stderr);
}

}  // namespace common::log
