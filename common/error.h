// The toolkit's one error type: a kind (which maps to a documented exit code), a message, and the
// context that names what failed (provider, instance, host, file, tensor...).
// Library code throws common::Error and never prints; only a program's main() catches it, prints it
// once (text or JSON) and returns exit_code(kind). See README "Exit codes".
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace common {

enum class ErrorKind {
    Internal,      // 1: a bug, or a state that should be impossible
    Usage,         // 2: bad flag/value, bad config (file:line), unknown provider, impossible filter
    Auth,          // 3: missing/invalid API key, SSH auth refused, pinned host key changed
    Capacity,      // 4: no offer matches, or no capacity left after fallbacks
    Quota,         // 5: balance, quota or account limit
    Network,       // 6: unreachable, 5xx/429 after retries, unparseable provider response
    Timeout,       // 7: readiness, job, load watchdog
    RemoteFailed,  // 8: a remote step (build, extract, analyze, command) exited non-zero
    NotFound,      // 9: unknown instance id, job name, run directory, file
    LeakRisk,      // 10: termination not proven or cleanup failed: an instance may still bill
    Interrupted,   // 130: Ctrl-C / SIGTERM after a clean shutdown
};

int exit_code(ErrorKind kind);
std::string_view kind_name(ErrorKind kind);  // "usage", "leak_risk", ... (stable: used in JSON)
// The inverse of kind_name, from the same table (a journal or JSON file read back); nullopt for a
// name that is not one of them.
std::optional<ErrorKind> kind_from_name(std::string_view name);

class Error : public std::runtime_error {
public:
    using Context = std::vector<std::pair<std::string, std::string>>;

    Error(ErrorKind kind, std::string message, Context context = {});

    ErrorKind kind() const { return kind_; }
    const std::string & message() const { return message_; }
    const Context & context() const { return context_; }
    // Adds a (key, value) pair naming what failed; returns *this so callers can rethrow fluently.
    Error & with(std::string key, std::string value);

    // Named factories keep each situation's wording stable (users paste these into issues).
    static Error usage(std::string message) { return {ErrorKind::Usage, std::move(message)}; }
    static Error internal(std::string message) { return {ErrorKind::Internal, std::move(message)}; }
    static Error not_found(std::string what, std::string detail = {});
    static Error missing_credential(std::string provider, std::string env_var);
    static Error file(std::string path, std::string what);  // NotFound or Usage chosen by caller below
    static Error io(const std::string & path, const std::string & action, int errno_value);

private:
    ErrorKind kind_;
    std::string message_;
    Context context_;
};

}  // namespace common
