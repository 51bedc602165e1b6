// Target parsing. The one ambiguity, "a:b", is settled by b: all digits is a port, anything else
// makes "a:b" a broker instance id (provider:id). IPv6 literals need brackets.
#include "bifrost/target.h"

#include <mutex>

#include "common/error.h"

namespace bifrost {

namespace {
std::mutex g_resolver_mutex;
InstanceResolver g_resolver;

bool all_digits(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

bool valid_host_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_' || c == ':';
}

common::Error bad_target(std::string_view text, const std::string & why) {
    return common::Error::usage("target '" + std::string(text) + "': " + why +
                                "; expected user@host:port, host, or an instance id such as runpod:abc123");
}
}  // namespace

std::string Endpoint::label() const {
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return (user.empty() ? "" : user + "@") + h + ":" + std::to_string(port);
}

void set_instance_resolver(InstanceResolver resolver) {
    std::lock_guard lock(g_resolver_mutex);
    g_resolver = std::move(resolver);
}

Target parse_target(std::string_view text) {
    Target t;
    t.text = std::string(text);
    if (text.empty()) throw bad_target(text, "empty");
    for (char c : text)
        if (static_cast<unsigned char>(c) <= ' ' || c == '\'' || c == '"' || c == '\\' || c == '/')
            throw bad_target(text, "contains whitespace, a quote, a slash or a control character");
    Endpoint e;
    std::string_view rest = text;
    auto at = rest.rfind('@');
    if (at != std::string_view::npos) {
        e.user = std::string(rest.substr(0, at));
        rest = rest.substr(at + 1);
        if (e.user.empty()) throw bad_target(text, "empty user before '@'");
        if (e.user.find('@') != std::string::npos || e.user.find(':') != std::string::npos)
            throw bad_target(text, "user name contains '@' or ':'");
    }
    std::string_view port_text;
    if (!rest.empty() && rest.front() == '[') {
        auto close = rest.find(']');
        if (close == std::string_view::npos) throw bad_target(text, "unclosed '['");
        e.host = std::string(rest.substr(1, close - 1));
        std::string_view after = rest.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') throw bad_target(text, "junk after ']'");
            port_text = after.substr(1);
            if (!all_digits(port_text)) throw bad_target(text, "port is not a number");
        }
    } else {
        auto colon = rest.find(':');
        if (colon != std::string_view::npos) {
            std::string_view host = rest.substr(0, colon);
            std::string_view after = rest.substr(colon + 1);
            if (all_digits(after)) {
                e.host = std::string(host);
                port_text = after;
            } else {
                if (at != std::string_view::npos) throw bad_target(text, "port is not a number");
                if (host.empty() || after.empty()) throw bad_target(text, "empty provider or id");
                t.instance_id = std::string(text);
                return t;
            }
        } else {
            e.host = std::string(rest);
        }
    }
    if (e.host.empty()) throw bad_target(text, "empty host");
    for (char c : e.host)
        if (!valid_host_char(c)) throw bad_target(text, std::string("invalid character '") + c + "' in host");
    if (!port_text.empty()) {
        if (port_text.size() > 5) throw bad_target(text, "port out of range");
        int port = std::stoi(std::string(port_text));
        if (port < 1 || port > 65535) throw bad_target(text, "port out of range 1..65535");
        e.port = port;
    }
    t.endpoint = e;
    return t;
}

Endpoint resolve_target(const Target & target) {
    if (target.endpoint) return *target.endpoint;
    InstanceResolver resolver;
    {
        std::lock_guard lock(g_resolver_mutex);
        resolver = g_resolver;
    }
    if (!resolver)
        throw common::Error::usage("target '" + target.text +
                                   "': instance ids need the broker, which this program has not wired in; "
                                   "use user@host:port (see `broker instances list` for the address)");
    auto endpoint = resolver(target.instance_id);
    if (!endpoint) throw common::Error::not_found("instance " + target.instance_id, "unknown to the broker");
    return *endpoint;
}

}  // namespace bifrost
