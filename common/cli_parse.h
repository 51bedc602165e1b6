// The command-line parse step every program's main() shares (broker, bifrost, extract, analyze,
// deploy_and_analyze), so --help and a bad flag behave the same everywhere. Header only: CLI11 is
// header only and only the programs' cli/ folders include it (the libraries stay free of it).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <optional>
#include <string>

#include "common/error.h"

namespace common {

// Parses argv into app. --help, --help-all and --version print their text and return the exit code
// to end with (0); on success nothing is returned. Any other parse error throws Error(usage)
// "<CLI11's message>; see <program> --help", for run_program to print once with exit code 2;
// before_error runs just before (broker reads its --json flag there, so the error honours it).
inline std::optional<int> parse_command_line(CLI::App & app, int argc, const char * const * argv, const std::string & program,
                                             const std::function<void()> & before_error = {}) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError & e) {
        if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
        if (before_error) before_error();
        throw Error::usage(e.what() + std::string("; see ") + program + " --help");
    }
    return std::nullopt;
}

}  // namespace common
