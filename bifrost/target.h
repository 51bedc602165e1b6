// Where bifrost connects: parsed from "user@host:port", "host", "user@host", "host:port",
// "[::1]:2222", or a broker instance id such as "runpod:abc123". Instance ids resolve through a
// resolver the program installs (set_instance_resolver), so bifrost does not depend on broker.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace bifrost {

struct Endpoint {
    std::string user;      // empty: the local user name (as ssh does)
    std::string host;
    int port = 22;
    std::string key_path;  // optional key the resolver knows (e.g. the one broker created the instance with)
    std::string label() const;  // "user@host:port"
};

struct Target {
    std::string text;                // as written by the user
    std::optional<Endpoint> endpoint;  // a direct address
    std::string instance_id;         // "runpod:abc123" when not a direct address
};

// Returns nullopt when the id is unknown (bifrost then fails with not_found, exit 9).
using InstanceResolver = std::function<std::optional<Endpoint>(std::string_view id)>;
void set_instance_resolver(InstanceResolver resolver);

// Throws common::Error(usage) for malformed text.
Target parse_target(std::string_view text);
// A direct endpoint, or the resolver's answer for an instance id; throws usage when no resolver is
// installed and not_found when the resolver does not know the id.
Endpoint resolve_target(const Target & target);

}  // namespace bifrost
