#include "broker/instance.h"

#include <arpa/inet.h>

#include <charconv>
#include <regex>

#include "common/shell_quote.h"

namespace broker {

std::string_view status_name(InstanceStatus s) {
    switch (s) {
    case InstanceStatus::Pending: return "pending";
    case InstanceStatus::Running: return "running";
    case InstanceStatus::Stopping: return "stopping";
    case InstanceStatus::Stopped: return "stopped";
    case InstanceStatus::Terminating: return "terminating";
    case InstanceStatus::Terminated: return "terminated";
    case InstanceStatus::Failed: return "failed";
    case InstanceStatus::Unknown: return "unknown";
    }
    return "unknown";
}

std::optional<int> batch_restart_of(std::string_view line) {
    if (line.substr(0, kBatchStartPrefix.size()) != kBatchStartPrefix) return std::nullopt;
    line.remove_prefix(kBatchStartPrefix.size());
    // "<job id> restart <n> on <host>"
    auto space = line.find(' ');
    if (space == std::string_view::npos) return std::nullopt;
    line.remove_prefix(space + 1);
    constexpr std::string_view kRestart = "restart ";
    if (line.substr(0, kRestart.size()) != kRestart) return std::nullopt;
    line.remove_prefix(kRestart.size());
    int n = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), n);
    if (ec != std::errc() || end == line.data() || n < 0) return std::nullopt;
    return n;
}

std::string format_instance_name(const InstanceName & n) {
    return std::string(kNamePrefix) + "-" + n.run_id + "-" + n.role + "-dl" + std::to_string(n.deadline_unix);
}

std::optional<InstanceName> parse_instance_name(std::string_view name) {
    static const std::regex re("^tk-([a-z0-9]+)-([a-z0-9]+)-dl([0-9]{1,12})$");
    // Names come from provider listings: libstdc++'s regex recurses per character, so a hostile
    // megabyte-long name could exhaust the stack. Ours are far below this bound.
    if (name.size() > kMaxInstanceNameLength) return std::nullopt;
    std::string s(name);
    std::smatch sm;
    if (!std::regex_match(s, sm, re)) return std::nullopt;
    return InstanceName{sm[1].str(), sm[2].str(), std::stoll(sm[3].str())};
}

nlohmann::json instance_to_json(const Instance & i, double unix_now) {
    nlohmann::json j = {
        {"provider", i.provider},
        {"id", i.id},
        {"name", i.name},
        {"status", std::string(status_name(i.status))},
        {"status_raw", i.status_raw},
        {"gpu_model", i.gpu_model.empty() ? nlohmann::json(nullptr) : nlohmann::json(i.gpu_model)},
        {"gpu_count", i.gpu_count},
        {"price_usd_per_hour", i.price_usd_per_hour ? nlohmann::json(*i.price_usd_per_hour) : nlohmann::json(nullptr)},
        {"uptime_s", i.uptime_s ? nlohmann::json(*i.uptime_s) : nlohmann::json(nullptr)},
        {"ssh", i.ssh ? nlohmann::json(i.ssh->user + "@" + i.ssh->host + ":" + std::to_string(i.ssh->port))
                      : nlohmann::json(nullptr)},
    };
    if (!i.status_detail.empty()) j["status_detail"] = i.status_detail;
    std::optional<double> uptime = i.uptime_s;
    if (!uptime && i.created_unix) uptime = std::max(0.0, unix_now - *i.created_unix);
    j["uptime_s"] = uptime ? nlohmann::json(*uptime) : nlohmann::json(nullptr);
    j["cost_so_far_usd"] = (uptime && i.price_usd_per_hour) ? nlohmann::json(*uptime / 3600.0 * *i.price_usd_per_hour)
                                                            : nlohmann::json(nullptr);
    if (auto n = parse_instance_name(i.name)) {
        j["run_id"] = n->run_id;
        j["deadline_unix"] = n->deadline_unix;
    }
    return j;
}

namespace {
// One shell word: as it is when every character is plain, else sh-quoted.
std::string shell_word(std::string_view text) {
    bool plain = !text.empty();
    for (char c : text) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  std::string_view("@%+=:,./_-").find(c) != std::string_view::npos;
        plain = plain && ok;
    }
    return plain ? std::string(text) : common::sh_quote(text);
}
}  // namespace

std::string ssh_command(const Instance & i, const std::string & key_path) {
    if (!i.ssh) return "";
    std::string cmd = "ssh -p " + shell_word(std::to_string(i.ssh->port));
    if (!key_path.empty()) cmd += " -i " + shell_word(key_path);
    cmd += " " + shell_word(i.ssh->user + "@" + i.ssh->host);
    return cmd;
}

bool valid_ssh_host(std::string_view h) {
    if (h.empty() || h.size() > 253) return false;
    if (h.find(':') != std::string_view::npos) {  // only an IPv6 literal has colons
        in6_addr a{};
        return ::inet_pton(AF_INET6, std::string(h).c_str(), &a) == 1;
    }
    if (h.back() == '.') h.remove_suffix(1);  // a fully qualified "host.example."
    size_t start = 0;
    while (true) {
        size_t dot = h.find('.', start);
        std::string_view label = h.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (label.empty() || label.size() > 63 || label.front() == '-') return false;
        for (char c : label)
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
                return false;
        if (dot == std::string_view::npos) return true;
        start = dot + 1;
    }
}

bool valid_ssh_user(std::string_view u) {
    if (u.empty() || u.size() > 32) return false;
    if (!((u[0] >= 'a' && u[0] <= 'z') || u[0] == '_')) return false;
    for (char c : u)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
    return true;
}

}  // namespace broker
