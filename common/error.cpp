#include "common/error.h"

#include <cerrno>
#include <cstring>

namespace common {

namespace {
struct KindRow {
    ErrorKind kind;
    int code;
    std::string_view name;
};
// The exit-code table; README "Exit codes" documents the same rows.
constexpr KindRow kKinds[] = {
    {ErrorKind::Internal,     1,   "internal"},
    {ErrorKind::Usage,        2,   "usage"},
    {ErrorKind::Auth,         3,   "auth"},
    {ErrorKind::Capacity,     4,   "capacity"},
    {ErrorKind::Quota,        5,   "quota"},
    {ErrorKind::Network,      6,   "network"},
    {ErrorKind::Timeout,      7,   "timeout"},
    {ErrorKind::RemoteFailed, 8,   "remote_failed"},
    {ErrorKind::NotFound,     9,   "not_found"},
    {ErrorKind::LeakRisk,     10,  "leak_risk"},
    {ErrorKind::Interrupted,  130, "interrupted"},
};

const KindRow & row(ErrorKind kind) {
    for (const auto & r : kKinds)
        if (r.kind == kind) return r;
    return kKinds[0];
}
}  // namespace

int exit_code(ErrorKind kind) { return row(kind).code; }
std::string_view kind_name(ErrorKind kind) { return row(kind).name; }

std::optional<ErrorKind> kind_from_name(std::string_view name) {
    for (const auto & r : kKinds)
        if (r.name == name) return r.kind;
    return std::nullopt;
}

Error::Error(ErrorKind kind, std::string message, Context context)
    : std::runtime_error(message), kind_(kind), message_(std::move(message)), context_(std::move(context)) {}

Error & Error::with(std::string key, std::string value) {
    context_.emplace_back(std::move(key), std::move(value));
    return *this;
}

Error Error::not_found(std::string what, std::string detail) {
    std::string msg = what + ": not found";
    if (!detail.empty()) msg += ": " + detail;
    return {ErrorKind::NotFound, std::move(msg)};
}

Error Error::missing_credential(std::string provider, std::string env_var) {
    return Error(ErrorKind::Auth,
                 provider + ": no API key: set " + env_var + " or run `broker init`")
        .with("provider", std::move(provider));
}

Error Error::file(std::string path, std::string what) {
    return Error(ErrorKind::Usage, path + ": " + what).with("file", std::move(path));
}

Error Error::io(const std::string & path, const std::string & action, int errno_value) {
    ErrorKind kind = errno_value == ENOENT                          ? ErrorKind::NotFound
                     : (errno_value == EACCES || errno_value == EPERM) ? ErrorKind::Usage
                                                                       : ErrorKind::Internal;
    return Error(kind, path + ": " + action + ": " + std::strerror(errno_value)).with("file", path);
}

}  // namespace common
