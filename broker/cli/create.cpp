// `broker create`: rent the cheapest matching offer (or the one named with --offer), fall through
// capacity errors to the next offer (bounded), then wait for readiness in stages with a progress line.
#include "broker/cli/verbs.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/units.h"

namespace broker::cli {

int run_create(const GlobalOptions & g, const CreateCliOptions & o, const common::Output & out) {
    CreateOptions c;
    c.filter = to_filter(o.filter);
    if (!o.offer.empty()) {
        auto colon = o.offer.find(':');
        if (colon == std::string::npos || colon == 0 || colon + 1 == o.offer.size())
            throw common::Error::usage("--offer: expected provider:offer_id as printed by `broker search` (got '" + o.offer + "')");
        c.filter.providers = {o.offer.substr(0, colon)};
        c.filter.offer_id = o.offer.substr(colon + 1);
        // RunPod and Prime spot offer ids end in "/spot": renting one is a spot rent without --spot.
        const std::string & id = c.filter.offer_id;
        if (!o.filter.on_demand && id.size() > 5 && id.compare(id.size() - 5, 5, "/spot") == 0) c.filter.spot = true;
    }
    c.sort = parse_sort_key(o.sort);
    c.max_attempts = o.max_attempts;
    c.image = o.image;
    if (o.disk_gb < 1) throw common::Error::usage("--disk: must be at least 1 GB");
    c.disk_gb = o.disk_gb;
    for (const auto & kv : o.env) {
        auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) throw common::Error::usage("--env: expected KEY=VALUE (got '" + kv + "')");
        c.env.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    }
    c.ssh_private_key = o.ssh_key.empty() ? default_ssh_key_path() : o.ssh_key;
    c.run_id = o.run_id;
    c.role = o.role;
    c.max_lifetime_s = common::parse_duration_s(o.max_lifetime);
    if (c.max_lifetime_s <= 0) throw common::Error::usage("--max-lifetime: must be positive");
    c.ready_budget = std::chrono::duration_cast<common::Duration>(
        std::chrono::duration<double>(common::parse_duration_s(o.ready_timeout)));
    c.poll_interval = poll_interval(g);
    c.wait_ready = !o.no_wait;
    c.gpu_check = !o.no_gpu_check;
    c.on_progress = [](const std::string & line) { common::log::info(line); };
    // A live status line on a terminal, plain log lines otherwise (CI logs stay readable).
    auto started = std::chrono::steady_clock::now();
    c.on_stage = [started](ReadyStage s, const std::string & detail) {
        double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        std::string line = "readiness [" + common::format_duration(t) + "] " + std::string(stage_name(s)) + ": " + detail;
        if (common::log::stderr_is_tty() && s != ReadyStage::Ready) common::log::set_status_line(line);
        else {
            common::log::set_status_line("");
            common::log::info(line);
        }
    };
    struct ClearStatus {
        ~ClearStatus() { common::log::set_status_line(""); }
    } clear_status;  // also on errors, so the message is not drawn under a stale bar
    auto broker = make_broker(g);
    CreateResult r = broker->create(c);
    nlohmann::json obj = instance_to_json(r.instance, broker->clock().unix_now());
    obj["offer_id"] = r.offer.offer_id;
    obj["price_usd_per_hour"] = r.instance.price_usd_per_hour ? *r.instance.price_usd_per_hour : r.offer.price_usd_per_hour_total;
    obj["ready"] = c.wait_ready;
    std::string ssh_key = c.ssh_private_key;
    if (r.instance.ssh && !r.instance.ssh->key_path.empty()) ssh_key = r.instance.ssh->key_path;
    obj["ssh_command"] = ssh_command(r.instance, ssh_key);
    nlohmann::json attempts = nlohmann::json::array();
    for (const auto & a : r.attempts)
        attempts.push_back({{"provider", a.provider}, {"offer_id", a.offer_id}, {"outcome", a.outcome}});
    obj["attempts"] = attempts;
    if (out.json()) {
        out.object(obj);
    } else {
        obj.erase("attempts");
        out.object(with_table_prices(obj));
    }
    return 0;
}

}  // namespace broker::cli
