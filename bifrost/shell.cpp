#include "bifrost/shell.h"

#include <fcntl.h>
#include <unistd.h>

#include <random>

#include "common/error.h"

namespace bifrost {

std::string remote_path_expr(std::string_view path) {
    if (path == "~") return "\"$HOME\"";
    if (path.rfind("~/", 0) == 0) return "\"$HOME\"/" + sh_quote(path.substr(2));
    return sh_quote(path);
}

bool valid_env_name(std::string_view name) {
    if (name.empty()) return false;
    for (size_t i = 0; i < name.size(); ++i) {
        char c = name[i];
        bool ok = c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

bool valid_job_name(std::string_view name) {
    if (name.empty() || name.size() > 64) return false;
    for (size_t i = 0; i < name.size(); ++i) {
        char c = name[i];
        bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return false;
    }
    return true;
}

Prologue make_prologue(const std::string & script) {
    // 128 random bits: a block line can only end the block early by guessing it.
    std::random_device rd;
    char marker[48];
    std::snprintf(marker, sizeof marker, "BIFROST_%08x%08x%08x%08x", rd(), rd(), rd(), rd());
    Prologue p;
    // `read` in sh consumes stdin one line at a time and never past the marker line, so the rest of
    // stdin is still there for the command.
    p.command = std::string("sh -c 'b=; while IFS= read -r l; do if [ \"$l\" = ") + marker +
                " ]; then unset l; eval \"$b\"; exit; fi; b=\"$b$l\n\"; done; "
                "echo \"bifrost: incomplete command block on stdin\" >&2; exit 255'";
    p.stdin_block = script;
    if (!p.stdin_block.empty() && p.stdin_block.back() != '\n') p.stdin_block += '\n';
    p.stdin_block += marker;
    p.stdin_block += '\n';
    return p;
}

std::string export_lines(const EnvList & env) {
    std::string out;
    for (const auto & [k, v] : env) {
        if (!valid_env_name(k)) throw common::Error::usage("environment variable name '" + k + "' is not a valid shell name");
        if (v.find('\0') != std::string::npos) throw common::Error::usage("environment variable " + k + ": value contains a NUL byte");
        out += "export " + k + "=" + sh_quote(v) + "\n";
    }
    return out;
}

std::string command_text(const Command & command) {
    if (!command.shell.empty()) return "exec \"${SHELL:-/bin/sh}\" -c " + sh_quote(command.shell);
    if (command.argv.empty()) throw common::Error::usage("no remote command given");
    std::string out = "exec";
    for (const auto & w : command.argv) out += " " + sh_quote(w);
    return out;
}

}  // namespace bifrost
