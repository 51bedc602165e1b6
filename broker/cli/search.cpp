// `broker search`: offers across providers, filtered (pushed to each API where it can, always
// re-checked here), sorted and limited. A failing provider is reported on stderr, not fatal.
#include "broker/cli/verbs.h"
#include "common/log.h"

namespace broker::cli {

int run_search(const GlobalOptions & g, const SearchOptions & o, const common::Output & out) {
    if (o.limit < 0) throw common::Error::usage("--limit: must not be negative");
    OfferFilter filter = to_filter(o.filter);
    SortKey sort = parse_sort_key(o.sort);
    auto broker = make_broker(g);
    SearchResult r = broker->search(filter, sort, static_cast<size_t>(o.limit));
    if (!r.skipped_no_key.empty()) {
        std::string s;
        for (const auto & p : r.skipped_no_key) s += (s.empty() ? "" : ", ") + p;
        common::log::info("not queried (no API key): ", s);
    }
    report_failures(r.failures);
    nlohmann::json rows = nlohmann::json::array();
    for (const auto & offer : r.offers) rows.push_back(offer_to_json(offer));
    out.rows({{"provider", "PROVIDER"},
              {"offer_id", "OFFER"},
              {"gpu_model", "GPU"},
              {"gpu_count", "N"},
              {"vram_gb_per_gpu", "VRAM_GB"},
              {"price_usd_per_hour_total", "$/H"},
              {"price_usd_per_hour_gpu", "$/GPU/H"},
              {"cloud", "CLOUD"},
              {"region", "REGION"},
              {"availability", "STOCK"},
              {"cpu_ram_gb", "RAM_GB"},
              {"disk_gb", "DISK_GB"}},
             out.json() ? rows : with_table_prices(rows));
    if (r.offers.empty()) common::log::info("no offers match; relax the filters or try other providers");
    return 0;
}

}  // namespace broker::cli
