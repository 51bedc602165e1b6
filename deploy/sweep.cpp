// Reading, checking and planning a sweep file (see sweep.h).
#include "deploy/sweep.h"

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "common/config_yaml.h"
#include "common/error.h"
#include "common/log.h"
#include "common/program.h"
#include "common/units.h"
#include "deploy/download_slots.h"
#include "deploy/estimate.h"

namespace fs = std::filesystem;

namespace deploy {

namespace {

constexpr size_t kMinIdLength = 4, kMaxIdLength = 24;  // two-character ids collided in the predecessor's sweep
constexpr int kMaxParallel = 32;
constexpr double kMaxStaggerS = 3600;
constexpr double kMaxSweepCostUsd = 1000000;

bool id_char(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'; }

std::string compact(const std::string & id) {
    std::string s;
    for (char ch : id)
        if (ch != '-') s += ch;
    return s;
}

void check_id(const common::ConfigNode & n, const std::string & id) {
    if (id.size() < kMinIdLength || id.size() > kMaxIdLength || !std::all_of(id.begin(), id.end(), id_char) || id.front() == '-' ||
        id.back() == '-')
        n.fail("'" + id + "': a member id is " + std::to_string(kMinIdLength) + ".." + std::to_string(kMaxIdLength) +
               " lower-case letters, digits and inner dashes (it names the run directory and, without dashes, the instance)");
}

SweepFile from_node(const common::ConfigNode & root, const std::string & source) {
    if (!root.is_map()) root.fail("a sweep file is a map (sweep:, base:, members:)");
    root.check_keys({"sweep", "base", "members"});
    SweepFile s;
    s.source = source;
    std::string dir = source.empty() ? "" : fs::path(source).parent_path().string();
    if (dir.empty() && !source.empty()) dir = ".";

    auto head = root.at("sweep");
    head.check_keys({"name", "max_cost_usd", "max_parallel", "download_stagger", "max_concurrent_downloads", "output_dir"});
    s.name = head.at("name").as_string();
    if (s.name.size() < 3 || s.name.size() > 40 || !std::all_of(s.name.begin(), s.name.end(), id_char))
        head.at("name").fail("'" + s.name + "': 3..40 lower-case letters, digits and dashes (it names the sweep directory)");
    if (auto n = head.find("max_cost_usd")) {
        double v = n->as_double();
        if (!(v > 0 && v <= kMaxSweepCostUsd)) n->fail("out of range: must be > 0 and at most " + std::to_string(int(kMaxSweepCostUsd)));
        s.max_cost_usd = v;
    }
    if (auto n = head.find("max_parallel")) {
        int64_t v = n->as_int();
        if (v < 1 || v > kMaxParallel) n->fail(std::to_string(v) + " is out of range: must be 1.." + std::to_string(kMaxParallel));
        s.max_parallel = static_cast<int>(v);
    }
    if (auto n = head.find("download_stagger")) {
        double v = 0;
        try {
            v = common::parse_duration_s(n->as_string());
        } catch (const common::Error & e) {
            n->fail(e.message());
        }
        if (!(v >= 0 && v <= kMaxStaggerS)) n->fail("out of range: must be 0s..1h");
        s.download_stagger_s = v;
    }
    if (auto n = head.find("max_concurrent_downloads")) {
        int64_t v = n->as_int();
        if (v < 1 || v > kMaxDownloadSlots) n->fail(std::to_string(v) + " is out of range: must be 1.." + std::to_string(kMaxDownloadSlots));
        s.max_concurrent_downloads = static_cast<int>(v);
    }
    s.output_dir = head.get_string("output_dir", s.output_dir);

    RunConfig base;
    base.source = source;
    if (auto b = root.find("base")) overlay_run_config(*b, source, base);

    auto list = root.at("members");
    if (!list.is_sequence()) list.fail("a list of members (- id: ..., model: ...)");
    auto elements = list.elements();
    if (elements.empty()) list.fail("no members");
    if (elements.size() > kMaxSweepMembers)
        list.fail(std::to_string(elements.size()) + " members; at most " + std::to_string(kMaxSweepMembers));
    std::map<std::string, std::string> ids, compacts;  // id → where; compacted → id
    for (const auto & m : elements) {
        if (!m.is_map()) m.fail("a member is a map (id:, model:, ...)");
        SweepMember member;
        member.id = m.at("id").as_string();
        check_id(m.at("id"), member.id);
        if (ids.count(member.id)) m.at("id").fail("'" + member.id + "' is used twice (first at " + ids[member.id] + ")");
        ids[member.id] = m.at("id").where();
        std::string c = compact(member.id);
        if (compacts.count(c))
            m.at("id").fail("'" + member.id + "' and '" + compacts[c] + "' are the same once dashes are dropped ('" + c +
                            "', the instance name); pick ids that differ in letters or digits");
        compacts[c] = member.id;

        RunConfig cfg = base;
        if (auto f = m.find("config")) {
            std::string path = f->as_string();
            if (!fs::path(path).is_absolute() && !dir.empty()) path = (fs::path(dir) / path).lexically_normal().string();
            cfg = load_run_config(path);
        }
        overlay_run_config(m, source, cfg, {"id", "config", "family"});
        cfg.name = c.size() > 20 ? c.substr(0, 20) : c;  // the run name is at most 20 (validate); uniqueness below
        cfg.output_dir = s.output_dir + "/" + s.name;
        // The family: declared, or the fixture's. A declared family must agree with a fixture's.
        if (auto f = m.find("family")) {
            member.family = f->as_string();
            if (member.family.size() > 64) f->fail("too long");
            if (cfg.model.fixture && cfg.model.fixture->family != member.family)
                f->fail("'" + member.family + "' but the fixture is '" + cfg.model.fixture->family + "'");
            const auto & known = extract_families();
            if (std::find(known.begin(), known.end(), member.family) == known.end()) {
                member.blocked = pending_family_reason(member.family);
                if (member.blocked.empty()) {
                    std::string list;
                    for (const auto & k : known) list += (list.empty() ? "" : ", ") + k;
                    f->fail("unknown family '" + member.family + "': extract implements " + list);
                }
            }
        } else if (cfg.model.fixture) {
            member.family = cfg.model.fixture->family;
        }
        try {
            validate(cfg);
        } catch (const common::Error & e) {
            throw common::Error::usage(m.where() + ": member " + member.id + ": " + e.message());
        }
        member.config = cfg;
        s.members.push_back(std::move(member));
    }
    // Run names are ids without dashes cut to 20 characters: two ids that agree on those collide.
    std::map<std::string, std::string> names;
    for (const auto & m : s.members) {
        if (names.count(m.config.name))
            throw common::Error::usage(source + ": members " + names[m.config.name] + " and " + m.id +
                                       " share the run name '" + m.config.name + "' (ids without dashes, first 20 characters)");
        names[m.config.name] = m.id;
    }
    // The budget is enforced on the accrued cost while the sweep runs (sweep_run.cpp). Each member
    // still needs its own bound: a SIGKILLed sweep enforces nothing, and each member then stops at
    // its own. When those bounds add up past the budget, say so before anything is rented.
    if (s.max_cost_usd) {
        double total = 0;
        for (const auto & m : s.members) {
            if (!m.blocked.empty()) continue;
            auto b = member_cost_bound_usd(m.config);
            if (!b)
                throw common::Error::usage(source + ": member " + m.id +
                                           ": no cost bound (give policy.max_cost_usd or resources.max_price_usd_per_hour) under sweep.max_cost_usd");
            total += *b;
        }
        if (total > *s.max_cost_usd + 1e-9) {
            char buf[300];
            std::snprintf(buf, sizeof buf,
                          "the members' cost bounds add up to $%.2f, over sweep.max_cost_usd $%.2f: the sweep stops launching and stops its "
                          "running members once their accrued cost reaches the budget (a SIGKILLed sweep leaves each to its own bound)",
                          total, *s.max_cost_usd);
            common::log::warn(source, ": ", buf);
        }
    }
    return s;
}

}  // namespace

const std::vector<std::string> & extract_families() {
    static const std::vector<std::string> f{"llama",   "qwen2",   "qwen3",    "olmoe",     "qwen3_moe",
                                            "mixtral", "gpt_oss", "glm4_moe", "qwen3_next"};
    return f;
}

std::string pending_family_reason(const std::string & family) {
    // Families a sweep file may name before extract implements them, with the model they are for
    // (issue #13's two, qwen3_next and glm4_moe, are implemented now: none waits).
    static const std::map<std::string, std::string> pending{};
    auto it = pending.find(family);
    if (it == pending.end()) return "";
    return "family " + family + " (" + it->second + ") is not implemented in extract yet";
}

SweepFile load_sweep(const std::string & path) { return from_node(common::ConfigNode::load_file(path), path); }

SweepFile parse_sweep(const std::string & yaml_text, const std::string & name) {
    return from_node(common::ConfigNode::load_string(yaml_text, name), "");
}

void apply_sweep_overrides(SweepFile & s, const Overrides & o, const std::vector<std::string> & shown) {
    // A sweep's members are different models on different machines: one value for all of them
    // would be wrong for most, so these stay in the sweep file.
    const std::pair<bool, const char *> per_member[] = {{o.model.has_value(), "--model"},           {o.name.has_value(), "--name"},
                                                        {o.gpu_count.has_value(), "--gpu-count"},   {o.min_vram_gb.has_value(), "--min-vram"},
                                                        {o.min_cpu_ram_gb.has_value(), "--min-cpu-ram"}, {o.offload_gb.has_value(), "--offload-gb"}};
    for (const auto & [given, flag] : per_member)
        if (given)
            throw common::Error::usage(std::string(flag) + " cannot go with --sweep: it sizes or names one run, and the members differ; "
                                                           "set it on the member in " + (s.source.empty() ? std::string("the sweep file") : s.source));
    Overrides every = o;
    if (every.output_dir) {
        if (every.output_dir->empty()) throw common::Error::usage("--output-dir: empty");
        s.output_dir = *every.output_dir;
        every.output_dir.reset();
    }
    for (auto & m : s.members) {
        apply_overrides(m.config, every);
        m.config.output_dir = s.output_dir + "/" + s.name;
        try {
            validate(m.config);
        } catch (const common::Error & e) {
            throw common::Error::usage((s.source.empty() ? std::string("sweep") : s.source) + ": member " + m.id + " with the command line's flags: " +
                                       e.message());
        }
    }
    s.overrides = shown;
}

double member_lifetime_s(const Policy & p, double price) {
    double life = instance_lifetime_s(p, price);
    if (p.on_success == EndAction::Keep || p.on_failure == EndAction::Keep) {
        life += p.keep_ttl_s;
        if (p.max_cost_usd && price > 0) life = std::min(life, *p.max_cost_usd / price * 3600.0);
    }
    return life;
}

std::optional<double> member_cost_bound_usd(const RunConfig & c) {
    std::optional<double> bound = c.policy.max_cost_usd;
    if (c.resources.max_price_usd_per_hour) {
        const double price = *c.resources.max_price_usd_per_hour;
        double by_price = price * member_lifetime_s(c.policy, price) / 3600;
        bound = bound ? std::min(*bound, by_price) : by_price;
    }
    if (runs_on_this_machine(c.resources)) return bound.value_or(0.0);
    return bound;
}

void refuse_blocked(const SweepFile & s) {
    std::string list;
    for (const auto & m : s.members)
        if (!m.blocked.empty()) list += "\n  " + m.id + ": " + m.blocked;
    if (!list.empty())
        throw common::Error::usage((s.source.empty() ? std::string("sweep") : s.source) +
                                   ": members that cannot run yet (nothing was rented; drop them or wait for issue #13):" + list);
}

nlohmann::json plan_sweep(const SweepFile & s, broker::Broker & broker) {
    nlohmann::json rows = nlohmann::json::array();
    double total = 0;
    bool total_known = true;
    for (const auto & m : s.members) {
        common::throw_if_interrupted();
        const RunConfig & c = m.config;
        const auto & r = c.resources;
        nlohmann::json row{{"id", m.id},
                           {"model", c.model.display_name()},
                           {"family", m.family},
                           {"gpu_count", r.gpu_count},
                           {"max_duration_s", c.policy.max_duration_s},
                           {"run_dir", c.output_dir + "/" + m.id}};
        std::string note;
        if (!m.blocked.empty()) {
            row["state"] = "blocked";
            row["note"] = m.blocked;
            rows.push_back(row);
            continue;
        }
        // The estimate, as the run's estimate step makes it.
        std::optional<double> vram = r.min_vram_gb;
        if (!vram && r.gpu_count > 0) {
            try {
                nlohmann::json hf;
                if (!c.model.local_path.empty()) {
                    std::ifstream in(c.model.local_path + "/config.json");
                    hf = nlohmann::json::parse(in, nullptr, false);
                    if (hf.is_discarded()) throw common::Error::usage(c.model.local_path + "/config.json: not valid JSON");
                } else if (!c.model.hub_id.empty()) {
                    hf = fetch_hub_config(c.model.hub_id, c.model.revision, c.hf_token_env);
                } else {
                    throw common::Error::usage("min_vram_gb auto needs a checkpoint config");
                }
                auto e = estimate_memory(hf, c.model.dtype, c.data.batch_size, c.data.sequence_length, r.gpu_count, r.safety_factor,
                                         r.offload_gb);
                vram = std::ceil(e.per_gpu_gb);
                row["estimate_gb"] = e.total_gb;
                row["params"] = e.params;
                row["params_active"] = e.params_active;
                if (e.offload_gb > 0) row["offload_gb"] = e.offload_gb;
            } catch (const common::Error & e) {
                if (e.kind() == common::ErrorKind::Interrupted) throw;
                note = "no estimate (" + e.message() + ")";
            }
        }
        if (vram) row["min_vram_gb"] = *vram;
        // The offer the create step would take: the cheapest match of the first provider that has one.
        std::vector<std::string> providers = r.providers.empty() ? broker.providers_for({}) : r.providers;
        std::optional<broker::Offer> chosen;
        std::string misses;
        if (!vram && r.gpu_count > 0) {
            misses = "no VRAM floor without an estimate";
        } else {
            for (const auto & p : providers) {
                broker::OfferFilter f;
                f.providers = {p};
                f.gpu = r.gpu_filter;
                if (r.gpu_count > 0) f.gpu_count = r.gpu_count;
                if (vram) f.min_vram_gb = *vram;
                f.max_price_usd_per_hour = r.max_price_usd_per_hour;
                f.min_ram_gb = offer_min_ram_gb(r);
                f.min_disk_gb = r.disk_gb;
                try {
                    auto found = broker.search(f, broker::SortKey::Price, 1);
                    if (!found.offers.empty()) {
                        chosen = found.offers.front();
                        break;
                    }
                    misses += (misses.empty() ? "" : "; ") + p + ": nothing matches";
                } catch (const common::Error & e) {
                    if (e.kind() == common::ErrorKind::Interrupted || e.kind() == common::ErrorKind::Usage) throw;
                    misses += (misses.empty() ? "" : "; ") + p + ": " + e.message();
                }
            }
        }
        std::optional<double> bound = member_cost_bound_usd(c);
        // The instance bills from its create to its own end, not for max_duration alone: the slack
        // for pull and finish, and keep_ttl where it is kept (member_lifetime_s).
        if (r.max_price_usd_per_hour) row["lifetime_s"] = member_lifetime_s(c.policy, *r.max_price_usd_per_hour);
        if (chosen) {
            row["offer"] = chosen->provider + ":" + chosen->offer_id + " " + chosen->gpu_model + " x" + std::to_string(chosen->gpu_count) +
                           " " + std::to_string(static_cast<int>(std::lround(chosen->vram_gb_per_gpu))) + "GB";
            const double price = chosen->price_usd_per_hour_total;
            row["price_usd_per_hour"] = price;
            const double life = member_lifetime_s(c.policy, price);
            row["lifetime_s"] = life;
            double by_time = price * life / 3600;
            bound = bound ? std::min(*bound, by_time) : by_time;
            row["state"] = "planned";
        } else {
            row["state"] = "no-offer";
            note += (note.empty() ? "" : "; ") + misses;
        }
        if (bound) {
            row["cost_bound_usd"] = *bound;
            total += *bound;
        } else {
            total_known = false;
        }
        if (!note.empty()) row["note"] = note;
        rows.push_back(row);
    }
    nlohmann::json plan{{"sweep", s.name}, {"members", rows}};
    plan["total_cost_bound_usd"] = total_known ? nlohmann::json(total) : nlohmann::json(nullptr);
    plan["max_cost_usd"] = s.max_cost_usd ? nlohmann::json(*s.max_cost_usd) : nlohmann::json(nullptr);
    plan["max_parallel"] = s.max_parallel;
    plan["download_stagger_s"] = s.download_stagger_s;
    plan["max_concurrent_downloads"] = s.max_concurrent_downloads > 0 ? nlohmann::json(s.max_concurrent_downloads) : nlohmann::json(nullptr);
    plan["overrides"] = s.overrides;
    return plan;
}

nlohmann::json plan_run(const RunConfig & config, broker::Broker & broker) {
    SweepFile one;
    one.source = config.source;
    one.name = config.name;
    one.output_dir = config.output_dir;
    SweepMember m;
    m.id = config.name;
    m.config = config;
    if (config.model.fixture) m.family = config.model.fixture->family;
    one.members.push_back(std::move(m));
    nlohmann::json plan = plan_sweep(one, broker);
    plan["run"] = true;
    plan["members"][0]["run_dir"] = config.output_dir + "/<run id>";
    return plan;
}

void print_sweep_plan(const nlohmann::json & plan, const common::Output & out) {
    if (out.json()) {
        out.object(plan);
        return;
    }
    auto money = [](double v) {
        char b[32];
        std::snprintf(b, sizeof b, "%.2f", v);
        return std::string(b);
    };
    nlohmann::json rows = nlohmann::json::array();
    for (const auto & m : plan["members"]) {
        nlohmann::json r{{"id", m["id"]}, {"model", m["model"]}, {"state", m["state"]}};
        r["family"] = m.value("family", "").empty() ? "?" : m.value("family", "");
        r["gpus"] = std::to_string(m.value("gpu_count", 0));
        r["vram"] = m.contains("min_vram_gb") ? money(m["min_vram_gb"].get<double>()).substr(0, money(m["min_vram_gb"].get<double>()).size() - 3) : "-";
        r["params"] = m.contains("params") ? money(m["params"].get<double>() / 1e9) + "B" : "-";
        r["offer"] = m.value("offer", "-");
        r["price"] = m.contains("price_usd_per_hour") ? money(m["price_usd_per_hour"].get<double>()) : "-";
        r["hours"] = m.contains("lifetime_s") ? money(m["lifetime_s"].get<double>() / 3600) : "-";
        r["cost"] = m.contains("cost_bound_usd") ? money(m["cost_bound_usd"].get<double>()) : "-";
        rows.push_back(r);
    }
    const bool run = plan.value("run", false);
    out.text((run ? "run " : "sweep ") + plan.value("sweep", "") + ": plan (dry run; nothing rented). Time and cost are upper bounds: " +
             "the instance's lifetime (policy.max_duration + " + std::to_string(static_cast<int>(kLifetimeSlackS / 60)) +
             " min to pull and finish, + policy.keep_ttl where on_success or on_failure keeps it), at the offer's price, "
             "capped by policy.max_cost_usd.");
    if (plan.contains("overrides") && !plan["overrides"].empty()) {
        std::string given;
        for (const auto & f : plan["overrides"]) given += " " + f.get<std::string>();
        out.text("command line, applied to every member after the sweep file:" + given);
    }
    out.rows({{"id", "MEMBER"}, {"model", "MODEL"}, {"family", "FAMILY"}, {"state", "STATE"}, {"gpus", "GPUS"},
              {"vram", "GB/GPU"}, {"params", "PARAMS"}, {"offer", "OFFER"}, {"price", "$/H"}, {"hours", "<=H"}, {"cost", "<=$"}},
             rows);
    for (const auto & m : plan["members"])
        if (m.contains("note")) out.text("  " + m.value("id", "") + ": " + m.value("note", ""));
    std::string total = plan["total_cost_bound_usd"].is_number() ? "$" + money(plan["total_cost_bound_usd"].get<double>())
                                                                   : "unknown (a member has no cost bound)";
    std::string budget = plan["max_cost_usd"].is_number()
                             ? "$" + money(plan["max_cost_usd"].get<double>()) + ", enforced on the accrued cost while running"
                             : "none";
    std::string downloads = plan.contains("max_concurrent_downloads") && plan["max_concurrent_downloads"].is_number()
                                ? "at most " + std::to_string(plan["max_concurrent_downloads"].get<int>()) + " at once"
                                : "no cap";
    if (run) {
        out.text("run total: at most " + total);
        return;
    }
    out.text("sweep total: at most " + total + " for the runnable members; budget (sweep.max_cost_usd) " + budget + "; max_parallel " +
             std::to_string(plan.value("max_parallel", 0)) + "; starts " +
             std::to_string(static_cast<int>(plan.value("download_stagger_s", 0.0))) + "s apart; Hub downloads " + downloads);
}

}  // namespace deploy
