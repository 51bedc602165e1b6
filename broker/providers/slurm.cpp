// The `slurm` provider: clusters the user can already submit to, reached through their login node
// over SSH (the way SkyPilot's and dstack's Slurm backends do it). Nothing is rented: an "instance"
// is one of our batch jobs, named with the toolkit's instance name (tk-<run>-<role>-dl<deadline>),
// and Slurm itself enforces the deadline through --time. Verbs:
//   search    sinfo per node: each configured partition's GPU shapes (1..GPUs per node of each GRES
//             type) and how many nodes could start that shape now; CPU-only partitions as 0-GPU rows
//   create    sbatch: with CreateRequest::batch, a job that runs that script and ends (deploy's
//             build and analysis jobs); without, a job that holds the allocation until its time
//             limit (srun --jobid reaches it)
//   get/list  squeue (--states=all for one job: ended jobs stay visible for the site's MinJobAge)
//   terminate scancel; an id Slurm no longer knows is already gone
// Traps (docs/providers.md, "Slurm"):
// - Every value that reaches the login node's shell (partition, account, paths, names, ids) is one
//   common::sh_quote word; job ids are checked to be digits before use.
// - Output is read with fixed '|' formats whose only free-text field (the job name) is last, so a
//   name containing '|' cannot shift fields. Output is cut at 4 MiB on the remote side and at most
//   10 000 rows are read; a line that does not parse is Error(Network) naming the cluster.
// - sacct needs slurmdbd; a terminate is proven with squeue --states=all, not sacct.
// - Slurm's --time has minute resolution and the job is killed at the limit (state TIMEOUT).
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "broker/credentials.h"
#include "broker/providers/providers.h"
#include "broker/readiness.h"
#include "broker/slurm_cluster.h"
#include "common/config_yaml.h"
#include "common/error.h"
#include "common/http.h"
#include "common/log.h"
#include "common/shell_quote.h"
#include "common/units.h"

namespace broker {

namespace {

bool is_name_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'; }

// "user@host[:port]"; the user is required (a login node is never reached as "whoever runs this").
SshEndpoint parse_login(const common::ConfigNode & node) {
    const std::string text = node.as_string();
    auto at = text.find('@');
    if (at == std::string::npos || at == 0) node.fail("expected user@host[:port], got '" + text + "'");
    SshEndpoint e;
    e.user = text.substr(0, at);
    std::string rest = text.substr(at + 1);
    auto colon = rest.rfind(':');
    if (colon != std::string::npos && rest.find(':') == colon) {
        const std::string port = rest.substr(colon + 1);
        int value = 0;
        auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
        if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535)
            node.fail("the port in '" + text + "' must be a number from 1 to 65535");
        e.port = value;
        rest = rest.substr(0, colon);
    }
    if (rest.empty()) node.fail("expected user@host[:port], got '" + text + "' (no host)");
    for (char c : e.user + rest)
        if (static_cast<unsigned char>(c) <= ' ' || c == '\'' || c == '"' || c == '\\')
            node.fail("'" + text + "' contains a space, quote or control character");
    e.host = rest;
    return e;
}

// `jump:` a list of hops, first to last, each "user@host[:port]" or {login: user@host[:port], key: PATH}
// (default key: the cluster's). The login node is reached through them (bifrost's in-process ProxyJump).
std::vector<SshHop> parse_jump(const common::ConfigNode & node, const std::string & cluster_key) {
    if (!node.is_sequence())
        node.fail("a list of jump hosts, first to last: user@host[:port] or {login: user@host[:port], key: PATH}");
    std::vector<SshHop> hops;
    for (const auto & item : node.elements()) {
        SshEndpoint e;
        std::string key = cluster_key;
        if (item.is_map()) {
            item.check_keys({"login", "key"});
            e = parse_login(item.at("login"));
            if (auto k = item.find("key"); k && !k->is_null()) {
                key = expand_home(k->as_string());
                if (key.empty()) k->fail("the path of the private key that opens this jump host (leave it out for the cluster's key)");
            }
        } else if (item.is_scalar()) {
            e = parse_login(item);
        } else {
            item.fail("expected user@host[:port] or {login: user@host[:port], key: PATH}");
        }
        hops.push_back(SshHop{e.host, e.port, e.user, key});
    }
    if (hops.empty()) node.fail("name at least one jump host (or leave the key out)");
    if (hops.size() > kMaxSlurmJumps)
        node.fail(std::to_string(hops.size()) + " jump hosts; at most " + std::to_string(kMaxSlurmJumps));
    return hops;
}

// A value that becomes one sbatch option: Slurm reads it itself, so it may not be empty or hold a
// newline (the option would end early); quotes and spaces are safe because sh_quote keeps them one word.
std::string option_value(const common::ConfigNode & parent, std::string_view key) {
    auto n = parent.find(key);
    if (!n || n->is_null()) return "";
    std::string v = n->as_string();
    if (v.empty()) n->fail("must not be empty (leave the key out instead)");
    for (char c : v)
        if (c == '\n' || c == '\r' || c == '\0') n->fail("must be one line");
    return v;
}

SlurmPartition parse_partition(const common::ConfigNode & n) {
    n.check_keys({"name", "gres", "gpu_types"});
    SlurmPartition p;
    p.name = n.at("name").as_string();
    for (char c : p.name)
        if (c == ',' || c == '|' || static_cast<unsigned char>(c) <= ' ')
            n.at("name").fail("a partition name cannot contain ',', '|', spaces or control characters");
    if (p.name.empty()) n.at("name").fail("must not be empty");
    if (n.has("gres")) p.gres = option_value(n, "gres");
    if (auto types = n.find("gpu_types"); types && !types->is_null()) {
        for (const auto & t : types->elements()) {
            t.check_keys({"type", "model", "vram_gb"});
            SlurmGpuType g;
            g.type = t.at("type").as_string();
            g.model = t.get_string("model", g.type);
            g.vram_gb = t.get_double("vram_gb", 0);
            if (!std::isfinite(g.vram_gb) || g.vram_gb < 0) t.at("vram_gb").fail("must be a number >= 0");
            p.gpu_types.push_back(g);
        }
    }
    return p;
}

SlurmCluster parse_cluster(const common::ConfigNode & n) {
    n.check_keys({"name", "login", "key", "jump", "work_dir", "account", "qos", "module_load", "container_image",
                  "default_time", "price_usd_per_gpu_hour", "partitions", "fetch"});
    SlurmCluster c;
    c.name = n.at("name").as_string();
    if (c.name.empty() || c.name.size() > 64 || !std::all_of(c.name.begin(), c.name.end(), is_name_char))
        n.at("name").fail("cluster names are 1-64 characters of a-z, 0-9, '-' and '_'");
    c.login = parse_login(n.at("login"));
    c.login.key_path = expand_home(n.at("key").as_string());
    if (c.login.key_path.empty()) n.at("key").fail("the path of the private key that opens the login node");
    if (auto j = n.find("jump"); j && !j->is_null()) c.login.jump = parse_jump(*j, c.login.key_path);
    c.work_dir = n.at("work_dir").as_string();
    if (c.work_dir.empty() || c.work_dir[0] != '/')
        n.at("work_dir").fail("must be an absolute path on the shared file system, got '" + c.work_dir + "'");
    for (char c2 : c.work_dir)
        if (c2 == '\n' || c2 == '\0') n.at("work_dir").fail("must be one line");
    c.account = option_value(n, "account");
    c.qos = option_value(n, "qos");
    c.container_image = option_value(n, "container_image");
    if (auto m = n.find("module_load"); m && !m->is_null()) {
        c.module_load = m->as_string_list();
        for (const auto & line : c.module_load)
            if (line.find('\n') != std::string::npos) m->fail("one command per list item");
    }
    if (auto t = n.find("default_time"); t && !t->is_null()) {
        double s = 0;
        try {
            s = common::parse_duration_s(t->as_string());
        } catch (const common::Error & e) {
            t->fail(e.message());
        }
        if (!(s >= 60) || s > 366.0 * 86400) t->fail("must be from 1m to 366d (Slurm's --time has minute resolution)");
        c.default_time_s = static_cast<long long>(s);
    }
    if (auto f = n.find("fetch"); f && !f->is_null()) {
        const std::string where = f->as_string();
        if (where != "login" && where != "job") f->fail("'login' (the login node downloads) or 'job' (a CPU job on a compute node)");
        c.fetch_on_login = where == "login";
    }
    c.price_usd_per_gpu_hour = n.get_double("price_usd_per_gpu_hour", 0);
    if (!std::isfinite(c.price_usd_per_gpu_hour) || c.price_usd_per_gpu_hour < 0)
        n.at("price_usd_per_gpu_hour").fail("must be a number >= 0");
    auto parts = n.at("partitions");
    for (const auto & p : parts.elements()) c.partitions.push_back(parse_partition(p));
    if (c.partitions.empty()) parts.fail("name at least one partition");
    return c;
}

}  // namespace

std::vector<SlurmCluster> parse_slurm_clusters(const common::ConfigNode & section) {
    section.check_keys({"clusters"});
    std::vector<SlurmCluster> out;
    std::set<std::string> names;
    auto list = section.at("clusters");
    for (const auto & n : list.elements()) {
        out.push_back(parse_cluster(n));
        if (!names.insert(out.back().name).second) n.at("name").fail("cluster '" + out.back().name + "' is defined twice");
    }
    return out;
}

namespace providers {

namespace {

constexpr size_t kMaxOutputBytes = 4u << 20;
constexpr size_t kMaxRows = 10000;

// Slurm's job states (squeue(1), "JOB STATE CODES"). Ended jobs hold nothing, so every end state
// is Terminated; status_raw keeps which one (TIMEOUT, NODE_FAIL, ...) for the caller.
const StatusRow kSlurmStatus[] = {
    {"PENDING", InstanceStatus::Pending},        {"CONFIGURING", InstanceStatus::Pending},
    {"REQUEUED", InstanceStatus::Pending},       {"REQUEUE_HOLD", InstanceStatus::Pending},
    {"REQUEUE_FED", InstanceStatus::Pending},    {"RESV_DEL_HOLD", InstanceStatus::Pending},
    {"RUNNING", InstanceStatus::Running},        {"RESIZING", InstanceStatus::Running},
    {"SIGNALING", InstanceStatus::Running},      {"STAGE_OUT", InstanceStatus::Terminating},
    {"COMPLETING", InstanceStatus::Terminating}, {"SUSPENDED", InstanceStatus::Stopped},
    {"STOPPED", InstanceStatus::Stopped},        {"COMPLETED", InstanceStatus::Terminated},
    {"CANCELLED", InstanceStatus::Terminated},   {"FAILED", InstanceStatus::Terminated},
    {"TIMEOUT", InstanceStatus::Terminated},     {"PREEMPTED", InstanceStatus::Terminated},
    {"NODE_FAIL", InstanceStatus::Terminated},   {"BOOT_FAIL", InstanceStatus::Terminated},
    {"DEADLINE", InstanceStatus::Terminated},    {"OUT_OF_MEMORY", InstanceStatus::Terminated},
    {"SPECIAL_EXIT", InstanceStatus::Terminated}, {"REVOKED", InstanceStatus::Terminated},
};

// squeue fields; the job name, the only text a user chose, is last (see the header).
constexpr const char * kSqueueFormat = "%i|%T|%P|%b|%M|%D|%r|%j";
constexpr int kSqueueFields = 8;

std::vector<std::string> split_fields(std::string_view line, int max_fields) {
    std::vector<std::string> out;
    size_t start = 0;
    while (static_cast<int>(out.size()) + 1 < max_fields) {
        auto bar = line.find('|', start);
        if (bar == std::string_view::npos) break;
        out.emplace_back(line.substr(start, bar - start));
        start = bar + 1;
    }
    out.emplace_back(line.substr(start));
    for (auto & f : out) {
        while (!f.empty() && (f.back() == ' ' || f.back() == '\r')) f.pop_back();
        size_t lead = f.find_first_not_of(' ');
        f = lead == std::string::npos ? "" : f.substr(lead);
    }
    return out;
}

std::vector<std::string_view> lines_of(const std::string & text, const SlurmCluster & c, std::string_view what) {
    if (text.size() > kMaxOutputBytes)
        throw common::Error(common::ErrorKind::Network, "slurm: " + c.name + ": " + std::string(what) + " printed more than 4 MiB")
            .with("provider", "slurm");
    std::vector<std::string_view> out;
    std::string_view rest(text);
    while (!rest.empty()) {
        auto nl = rest.find('\n');
        std::string_view line = rest.substr(0, nl);
        if (!line.empty()) out.push_back(line);
        if (out.size() > kMaxRows)
            throw common::Error(common::ErrorKind::Network,
                                "slurm: " + c.name + ": " + std::string(what) + " printed more than 10000 rows")
                .with("provider", "slurm");
        if (nl == std::string_view::npos) break;
        rest.remove_prefix(nl + 1);
    }
    return out;
}

[[noreturn]] void bad_line(const SlurmCluster & c, std::string_view what, std::string_view line, const std::string & why) {
    throw common::Error(common::ErrorKind::Network, "slurm: " + c.name + ": unexpected " + std::string(what) + " line '" +
                                                        common::http::safe_text(std::string(line), 160) + "': " + why)
        .with("provider", "slurm");
}

bool parse_count(std::string_view text, long long & value) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc() && end == text.data() + text.size() && value >= 0;
}

// One GRES list ("gpu:a100:4(S:0-1),gpu:v100:2", "gpu:2", "(null)") → count per type of `name`.
std::map<std::string, long long> gres_counts(const SlurmCluster & c, std::string_view text, const std::string & name,
                                             std::string_view line) {
    std::map<std::string, long long> out;
    if (text == "(null)" || text.empty()) return out;
    // The index list of GresUsed ("(IDX:0-1,3)") contains commas: cut parentheses out first.
    std::string flat;
    int depth = 0;
    for (char ch : text) {
        if (ch == '(') ++depth;
        else if (ch == ')') depth = std::max(0, depth - 1);
        else if (depth == 0) flat += ch;
    }
    std::string_view rest(flat);
    while (!rest.empty()) {
        auto comma = rest.find(',');
        std::string_view item = rest.substr(0, comma);
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        auto first = item.find(':');
        if (first == std::string_view::npos || item.substr(0, first) != name) continue;
        auto last = item.rfind(':');
        std::string type = last == first ? "" : std::string(item.substr(first + 1, last - first - 1));
        long long n = 0;
        if (!parse_count(item.substr(last + 1), n) || n > 1024) bad_line(c, "sinfo", line, "GRES count in '" + std::string(item) + "'");
        out[type] += n;
    }
    return out;
}

// "1-02:03:04", "02:03:04", "03:04" → seconds; nullopt for anything else ("INVALID", "NOT_SET").
std::optional<double> elapsed_s(std::string_view text) {
    long long days = 0;
    auto dash = text.find('-');
    if (dash != std::string_view::npos) {
        if (!parse_count(text.substr(0, dash), days)) return std::nullopt;
        text.remove_prefix(dash + 1);
    }
    long long parts[3] = {0, 0, 0};
    int n = 0;
    while (n < 3) {
        auto colon = text.find(':');
        if (!parse_count(text.substr(0, colon), parts[n])) return std::nullopt;
        ++n;
        if (colon == std::string_view::npos) break;
        text.remove_prefix(colon + 1);
    }
    if (n < 2) return std::nullopt;
    double s = n == 3 ? parts[0] * 3600.0 + parts[1] * 60.0 + parts[2] : parts[0] * 60.0 + parts[1];
    return days * 86400.0 + s;
}

const SlurmGpuType * known_type(const SlurmPartition & p, const std::string & type) {
    for (const auto & t : p.gpu_types)
        if (t.type == type) return &t;
    return nullptr;
}

}  // namespace

InstanceStatus slurm_status(std::string_view state) {
    // squeue may append a flag to the state ("CANCELLED by 0" in some views): compare the first word.
    auto space = state.find(' ');
    return lookup_status(kSlurmStatus, state.substr(0, space));
}

std::string slurm_remote(const std::string & command) {
    // stderr joins stdout so a failure's message comes back with it; the output is cut remotely so a
    // hostile or broken login node cannot make us hold more than kMaxOutputBytes (+1 to detect it).
    // The newline before '}' ends a here-document body as well as a plain command.
    return "out=$( { " + command + "\n} 2>&1 ); rc=$?; printf '%s\\n' \"$out\" | head -c " +
           std::to_string(kMaxOutputBytes + 1) + "; exit $rc";
}

std::string slurm_sinfo_command(const SlurmCluster & c) {
    std::string parts;
    for (const auto & p : c.partitions) parts += (parts.empty() ? "" : ",") + p.name;
    return "sinfo --noheader --Node --partition=" + common::sh_quote(parts) +
           " --Format=" + common::sh_quote("PartitionName:0|,StateLong:0|,Gres:0|,GresUsed:0|,CPUs:0|,Memory:0|,NodeHost:0");
}

std::vector<Offer> slurm_parse_sinfo(const SlurmCluster & c, const std::string & out) {
    struct Shape {
        long long max_per_node = 0;
        std::vector<long long> free_per_node;  // one entry per node of the partition that has this type
        long long total = 0, idle = 0;
        std::optional<int> vcpus;
        std::optional<double> ram_gb;
    };
    std::map<std::pair<std::string, std::string>, Shape> shapes;        // (partition, type)
    std::map<std::string, std::pair<long long, long long>> cpu_nodes;   // partition → (idle nodes, nodes)
    std::map<std::string, std::pair<int, double>> cpu_node_size;
    for (auto line : lines_of(out, c, "sinfo")) {
        auto f = split_fields(line, 7);
        if (f.size() != 7) bad_line(c, "sinfo", line, "expected 7 '|'-separated fields");
        const std::string partition = f[0].size() && f[0].back() == '*' ? f[0].substr(0, f[0].size() - 1) : f[0];
        const SlurmPartition * part = nullptr;
        for (const auto & p : c.partitions)
            if (p.name == partition) part = &p;
        if (!part) continue;  // sinfo was asked for ours only; ignore anything else
        std::string state = f[1];
        while (!state.empty() && std::string_view("*~#!%$@^-+").find(state.back()) != std::string_view::npos) state.pop_back();
        // A node that is down, drained, failing or not responding ('*') starts nothing now.
        const bool responding = f[1].empty() || f[1].back() != '*';
        const bool usable = responding && (state == "idle" || state == "mixed");
        long long cpus = 0, mem = 0;
        if (!parse_count(f[4], cpus) || !parse_count(f[5], mem)) bad_line(c, "sinfo", line, "CPUs and memory must be numbers");
        auto total = gres_counts(c, f[2], part->gres, line);
        auto used = gres_counts(c, f[3], part->gres, line);
        if (total.empty()) {
            auto & [idle, all] = cpu_nodes[partition];
            ++all;
            if (usable && state == "idle") ++idle;
            cpu_node_size[partition] = {static_cast<int>(cpus), mem / 1024.0};
        }
        for (const auto & [type, count] : total) {
            auto & s = shapes[{partition, type}];
            long long free = usable ? std::max(0LL, count - used[type]) : 0;
            s.max_per_node = std::max(s.max_per_node, count);
            s.free_per_node.push_back(free);
            s.total += count;
            s.idle += free;
            s.vcpus = static_cast<int>(cpus);
            s.ram_gb = mem / 1024.0;
        }
    }
    std::vector<Offer> offers;
    auto base = [&](const std::string & partition) {
        Offer o;
        o.provider = "slurm";
        o.region = c.name + "/" + partition;
        o.cloud = CloudType::Secure;
        return o;
    };
    for (const auto & [key, s] : shapes) {
        const auto & [partition, type] = key;
        const SlurmPartition * part = nullptr;
        for (const auto & p : c.partitions)
            if (p.name == partition) part = &p;
        const SlurmGpuType * known = known_type(*part, type);
        for (long long k = 1; k <= s.max_per_node; ++k) {
            Offer o = base(partition);
            long long fit = std::count_if(s.free_per_node.begin(), s.free_per_node.end(), [&](long long f) { return f >= k; });
            o.offer_id = c.name + "/" + partition + "/" + (type.empty() ? "any" : type) + "/" + std::to_string(k);
            o.manufacturer = "NVIDIA";
            o.gpu_model = known ? known->model : (type.empty() ? part->gres : canonical_gpu_model(type));
            o.vram_gb_per_gpu = known ? known->vram_gb : 0;
            o.gpu_count = static_cast<int>(k);
            o.price_usd_per_hour_gpu = c.price_usd_per_gpu_hour;
            o.price_usd_per_hour_total = c.price_usd_per_gpu_hour * static_cast<double>(k);
            o.availability = std::to_string(fit) + " nodes free, " + std::to_string(s.idle) + "/" + std::to_string(s.total) + " GPUs idle";
            o.vcpus = s.vcpus;
            o.cpu_ram_gb = s.ram_gb;
            o.create_data = {{"cluster", c.name}, {"partition", partition}, {"gres", part->gres}, {"type", type}, {"gpus", k}};
            offers.push_back(std::move(o));
        }
    }
    for (const auto & [partition, counts] : cpu_nodes) {
        Offer o = base(partition);
        o.offer_id = c.name + "/" + partition + "/none/0";
        o.gpu_model = "none";
        o.availability = std::to_string(counts.first) + "/" + std::to_string(counts.second) + " nodes idle";
        o.vcpus = cpu_node_size[partition].first;
        o.cpu_ram_gb = cpu_node_size[partition].second;
        o.create_data = {{"cluster", c.name}, {"partition", partition}, {"gres", ""}, {"type", ""}, {"gpus", 0}};
        offers.push_back(std::move(o));
    }
    return offers;
}

std::string slurm_squeue_command(std::optional<long long> job_id) {
    if (job_id)
        return "squeue --noheader --states=all --jobs=" + std::to_string(*job_id) + " --format=" + common::sh_quote(kSqueueFormat);
    return "squeue --noheader --me --format=" + common::sh_quote(kSqueueFormat);
}

std::vector<Instance> slurm_parse_squeue(const SlurmCluster & c, const std::string & out) {
    std::vector<Instance> rows;
    for (auto line : lines_of(out, c, "squeue")) {
        auto f = split_fields(line, kSqueueFields);
        if (f.size() != kSqueueFields) bad_line(c, "squeue", line, "expected 8 '|'-separated fields");
        long long id = 0;
        // Array and heterogeneous jobs print "12_3" / "12+1"; we submit neither, so they are not ours.
        if (!parse_count(f[0], id)) continue;
        Instance i;
        i.provider = "slurm";
        i.id = c.name + "/" + f[0];
        i.name = f[7];
        i.status_raw = f[1];
        i.status = slurm_status(f[1]);
        if (f[6] != "None" && !f[6].empty()) i.status_detail = f[6];
        // TRES per node: "gres:gpu:tiny:1", "gres/gpu:2", "N/A".
        std::string tres = f[3];
        for (const char * prefix : {"gres:", "gres/"})
            if (tres.rfind(prefix, 0) == 0) tres = tres.substr(5);
        if (tres != "N/A" && !tres.empty()) {
            auto last = tres.rfind(':');
            long long n = 0;
            if (last != std::string::npos && parse_count(std::string_view(tres).substr(last + 1), n) && n <= 1024) {
                long long nodes = 1;
                if (!parse_count(f[5], nodes) || nodes < 1) nodes = 1;
                i.gpu_count = static_cast<int>(n * nodes);
                auto first = tres.find(':');
                i.gpu_model = first < last ? tres.substr(first + 1, last - first - 1) : tres.substr(0, last);
                for (const auto & p : c.partitions)
                    if (p.name == f[2])
                        if (const auto * t = known_type(p, i.gpu_model)) {
                            i.gpu_model = t->model;
                            i.vram_gb_per_gpu = t->vram_gb;
                        }
            }
        }
        i.price_usd_per_hour = c.price_usd_per_gpu_hour * i.gpu_count;
        i.uptime_s = elapsed_s(f[4]);
        i.ssh = c.login;
        rows.push_back(std::move(i));
    }
    return rows;
}

std::string slurm_sbatch_command(const SlurmCluster & c, const CreateRequest & r, long long now_unix) {
    const auto & d = r.offer.create_data;
    if (!d.is_object() || !d.contains("partition") || !d.contains("gpus"))
        throw common::Error::usage("slurm: offer " + r.offer.offer_id + " was not made by a slurm search");
    const std::string partition = d.at("partition").get<std::string>();
    const long long gpus = d.at("gpus").get<long long>();
    long long seconds = c.default_time_s;
    if (r.deadline_unix > now_unix) seconds = r.deadline_unix - now_unix;
    const long long minutes = std::max(1LL, seconds / 60);  // never past the deadline: round down
    std::string output = c.work_dir + "/.toolkit-slurm/" + r.name + ".out";
    if (r.batch) {
        const auto & out = r.batch->output_path;
        if (out.empty() || out[0] != '/' || out.find('\n') != std::string::npos || out.find('%') != std::string::npos)
            throw common::Error::usage("slurm: the job's output path '" + out + "' must be absolute, without '%' or a newline");
        output = out;
    }
    const std::string log_dir = output.substr(0, output.rfind('/'));
    // --no-requeue unless the caller allows restarts: a node failure or preemption then ends the job
    // as NODE_FAIL / PREEMPTED for the caller's policy to decide, and Slurm refuses an administrator's
    // `scontrol requeue`. --open-mode=append: a restarted job's earlier output stays where the
    // caller's read offset points.
    const bool requeue = r.batch && r.batch->requeue;
    std::string cmd = "mkdir -p " + common::sh_quote(log_dir) + " && sbatch --parsable " + (requeue ? "--requeue" : "--no-requeue") +
                      " --open-mode=append --job-name=" +
                      common::sh_quote(r.name) + " --partition=" + common::sh_quote(partition) + " --time=" + std::to_string(minutes) +
                      " --output=" + common::sh_quote(output) + " --chdir=" + common::sh_quote(c.work_dir);
    if (!c.account.empty()) cmd += " --account=" + common::sh_quote(c.account);
    if (!c.qos.empty()) cmd += " --qos=" + common::sh_quote(c.qos);
    if (!c.container_image.empty()) cmd += " --container-image=" + common::sh_quote(c.container_image);
    if (gpus > 0 && (!r.batch || r.batch->use_gpus)) {
        const std::string type = d.value("type", "");
        cmd += " --gres=" + common::sh_quote(d.value("gres", "gpu") + (type.empty() ? "" : ":" + type) + ":" + std::to_string(gpus));
    }
    // The job script travels in a here-document whose delimiter is random and checked against every
    // line, so no value inside can end it early; values in it are sh_quote'd words.
    std::string script = "#!/bin/sh\n";
    for (const auto & line : c.module_load) script += line + "\n";
    for (const auto & [k, v] : r.env) {
        if (k.empty() || !std::all_of(k.begin(), k.end(), [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; }))
            throw common::Error::usage("slurm: environment variable name '" + k + "' is not a shell name");
        script += "export " + k + "=" + common::sh_quote(v) + "\n";
    }
    if (r.batch) {
        // The work, then its exit code beside the output: squeue forgets an ended job after the
        // site's MinJobAge, and a caller that comes back later still learns how it ended. The first
        // line says which start this is (a requeued job runs the script again).
        script += "printf '" + std::string(kBatchStartPrefix) + "%s restart %s on %s\\n' \"${SLURM_JOB_ID:-?}\" \"${SLURM_RESTART_COUNT:-0}\" "
                  "\"$(hostname)\"\n";
        script += "(\n" + r.batch->body + "\n)\nrc=$?\nprintf '%s\\n' \"$rc\" > " + common::sh_quote(output + ".exit") + "\nexit \"$rc\"\n";
    } else {
        // Hold the allocation until Slurm's own time limit ends it (srun --jobid=<id> --overlap reaches it).
        script += "exec sleep " + std::to_string(minutes * 60 + 60) + "\n";
    }
    std::mt19937_64 rng(std::random_device{}());
    std::string delim;
    do {
        std::ostringstream s;
        s << "TK_SLURM_EOF_" << std::hex << rng();
        delim = s.str();
    } while (("\n" + script).find("\n" + delim + "\n") != std::string::npos);
    return cmd + " <<'" + delim + "'\n" + script + delim + "\n";
}

long long slurm_parse_sbatch(const SlurmCluster & c, const std::string & out) {
    // --parsable prints "<job id>" or "<job id>;<cluster>" on its last line (warnings may precede it).
    auto lines = lines_of(out, c, "sbatch");
    if (lines.empty()) throw common::Error(common::ErrorKind::Network, "slurm: " + c.name + ": sbatch printed no job id").with("provider", "slurm");
    std::string_view last = lines.back();
    last = last.substr(0, last.find(';'));
    long long id = 0;
    if (!parse_count(last, id) || id == 0) bad_line(c, "sbatch", lines.back(), "expected a job id");
    return id;
}

common::Error slurm_command_error(const SlurmCluster & c, std::string_view what, int exit_code, const std::string & text) {
    const std::string msg = common::http::safe_text(text, 400);
    auto kind = common::ErrorKind::RemoteFailed;
    auto has = [&](const char * s) { return text.find(s) != std::string::npos; };
    if (has("Invalid account") || has("Invalid qos") || has("invalid partition") || has("Invalid partition") ||
        has("Invalid generic resource") || has("Invalid Trackable RESource"))
        kind = common::ErrorKind::Usage;
    else if (has("Requested node configuration is not available") || has("Requested partition configuration not available"))
        kind = common::ErrorKind::Capacity;
    else if (has("MaxSubmitJob") || has("QOSMax") || has("AssocMax") || has("Job violates accounting/QOS policy"))
        kind = common::ErrorKind::Quota;
    else if (has("Access/permission denied"))
        kind = common::ErrorKind::Auth;
    else if (has("Unable to contact slurm controller") || has("Socket timed out"))
        kind = common::ErrorKind::Network;
    return common::Error(kind, "slurm: " + c.name + ": " + std::string(what) + " exited " + std::to_string(exit_code) +
                                   (msg.empty() ? "" : ": " + msg))
        .with("provider", "slurm")
        .with("cluster", c.name);
}

namespace {

class Slurm final : public Provider {
public:
    explicit Slurm(const ProviderContext & c) : clusters_(c.slurm_clusters), clock_(c.clock) {}

    std::string_view name() const override { return "slurm"; }
    ProviderCaps caps() const override {
        // Slurm ends the job at its --time (sent from the deadline), and a job ends itself with scancel.
        return {.stop_start = false, .native_deadline = true, .spot = false, .needs_api_key = false,
                .self_end = SelfEnd::SelfStop, .batch_jobs = true};
    }

    BatchEnd batch_end(std::string_view raw) const override {
        // squeue(1), "JOB STATE CODES"; DEADLINE is --deadline, which we do not set.
        const std::string_view state = raw.substr(0, raw.find(' '));
        if (state == "COMPLETED") return BatchEnd::Completed;
        if (state == "FAILED") return BatchEnd::Failed;
        if (state == "TIMEOUT" || state == "DEADLINE") return BatchEnd::TimedOut;
        if (state == "NODE_FAIL" || state == "BOOT_FAIL") return BatchEnd::NodeFailure;
        if (state == "PREEMPTED") return BatchEnd::Preempted;
        if (state == "CANCELLED") return BatchEnd::Cancelled;
        if (state == "OUT_OF_MEMORY") return BatchEnd::OutOfMemory;
        return BatchEnd::Other;
    }

    BatchSite batch_site(const Offer & offer) const override {
        const auto & d = offer.create_data;
        const SlurmCluster & c = cluster(d.is_object() ? d.value("cluster", "") : "");
        return {c.login, c.work_dir, c.fetch_on_login};
    }

    std::vector<std::string> self_stop_command(std::string_view id) const override {
        return {"scancel", std::to_string(split_id(id).second)};
    }

    std::vector<Offer> search(const OfferFilter &) override {
        std::vector<Offer> out;
        for (const auto & c : clusters()) {
            auto r = run(c, "sinfo", slurm_sinfo_command(c));
            for (auto & o : slurm_parse_sinfo(c, r)) out.push_back(std::move(o));
        }
        return out;
    }

    Instance create(const CreateRequest & request) override {
        const auto & d = request.offer.create_data;
        const SlurmCluster & c = cluster(d.is_object() ? d.value("cluster", "") : "");
        auto out = run(c, "sbatch", slurm_sbatch_command(c, request, static_cast<long long>(clock_->unix_now())));
        const std::string id = c.name + "/" + std::to_string(slurm_parse_sbatch(c, out));
        return created(id, request.name);
    }

    std::optional<Instance> get(std::string_view id) override {
        auto [c, job] = split_id(id);
        auto r = ssh(*c, slurm_remote(slurm_squeue_command(job)));
        // squeue's answer for a job it no longer knows (ended longer than MinJobAge ago).
        if (r.exit_code != 0 && r.out.find("Invalid job id specified") != std::string::npos) return std::nullopt;
        if (r.exit_code != 0) throw slurm_command_error(*c, "squeue", r.exit_code, r.out);
        for (auto & i : slurm_parse_squeue(*c, r.out))
            if (i.id == id) return i;
        return std::nullopt;
    }

    std::vector<Instance> list() override {
        std::vector<Instance> out;
        for (const auto & c : clusters())
            for (auto & i : slurm_parse_squeue(c, run(c, "squeue", slurm_squeue_command(std::nullopt))))
                if (parse_instance_name(i.name)) out.push_back(std::move(i));
        return out;
    }

    void terminate(std::string_view id) override {
        auto [c, job] = split_id(id);
        auto r = ssh(*c, slurm_remote("scancel " + std::to_string(job)));
        if (r.exit_code == 0) return;
        if (r.out.find("Invalid job id specified") != std::string::npos) return;  // already gone
        throw slurm_command_error(*c, "scancel", r.exit_code, r.out);
    }

private:
    const std::vector<SlurmCluster> & clusters() const {
        if (clusters_.empty())
            throw common::Error(common::ErrorKind::Usage,
                                "slurm: no clusters are defined; add a `slurm: clusters:` section to the broker config "
                                "(broker/README.md, \"Slurm clusters\")")
                .with("provider", "slurm");
        return clusters_;
    }
    const SlurmCluster & cluster(const std::string & name) const {
        for (const auto & c : clusters())
            if (c.name == name) return c;
        throw common::Error::not_found("slurm:" + name, "no cluster of that name in the broker config");
    }
    std::pair<const SlurmCluster *, long long> split_id(std::string_view id) const {
        auto slash = id.find('/');
        long long job = 0;
        if (slash == std::string_view::npos || !parse_count(id.substr(slash + 1), job) || job == 0)
            throw common::Error::usage("slurm: '" + std::string(id) + "' is not a slurm instance id (<cluster>/<job id>)");
        return {&cluster(std::string(id.substr(0, slash))), job};
    }
    SshRunResult ssh(const SlurmCluster & c, const std::string & command) const {
        return ssh_run(c.login, c.login.key_path, command, std::chrono::seconds(60));
    }
    std::string run(const SlurmCluster & c, std::string_view what, const std::string & command) const {
        auto r = ssh(c, slurm_remote(command));
        if (r.exit_code != 0) throw slurm_command_error(c, what, r.exit_code, r.out);
        return r.out;
    }

    std::vector<SlurmCluster> clusters_;
    common::Clock * clock_;
};

}  // namespace

std::unique_ptr<Provider> make_slurm(const ProviderContext & c) { return std::make_unique<Slurm>(c); }

}  // namespace providers

}  // namespace broker
