// The deploy_and_analyze flow (see flow.h). Everything the run learns goes into the run
// directory's state.json as soon as it is known (instance before readiness, log offset after every
// poll), so a crash at any point leaves enough to --resume or to clean up. The step functions are
// members of Flow and read top to bottom in the order they run.
#include "deploy/flow.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <charconv>
#include <ctime>

#include "bifrost/bifrost.h"
#include "common/error.h"
#include "common/log.h"
#include "common/program.h"
#include "common/sshd_server.h"
#include "common/subprocess.h"
#include "deploy/data_check.h"
#include "deploy/estimate.h"
#include "deploy/hub_rows.h"
#include "deploy/job_log.h"
#include "deploy/json_fields.h"
#include "deploy/local_report.h"
#include "deploy/policy.h"
#include "deploy/remote_plan.h"
#include "deploy/run_dir.h"
#include "deploy/steps.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace deploy {

namespace {

// How long a batch run follows its job beyond the job's own time limit: the time it may wait in
// the queue. A pending job costs nothing; Ctrl-C (or --resume later) is the user's way out sooner.
constexpr double kBatchQueueWaitS = 48 * 3600;

// How long a run waits for one of a sweep's download slots (--download-slots) before anything is
// rented: the wait costs nothing, and every holder lets go once its fetch step ends (each step before
// it has a deadline), so only a long queue of members behind few slots reaches this. Ctrl-C, or the
// sweep's stop or budget, ends the wait sooner.
constexpr double kDownloadSlotWaitS = 48 * 3600;
// A run resumed with its instance already rented (a crash between the create and the fetch) waits
// for a slot while the instance bills: no longer than the fetch step itself may take.
constexpr double kDownloadSlotWaitBillingS = 60 * 60;

// While finish terminates an instance, its watchdog's deadline is moved this close, so that a
// terminate that cannot be proven is still ended by the watchdog.
constexpr double kTerminateBackstopS = 15 * 60;

// How long finish waits for the provider to show the instance terminated (or the scheduler a job
// ended): a budget of its own, not what is left of finish's deadline, which a long salvage pull
// that kept moving may have used up (the terminate then got one look and read as leak risk).
constexpr common::Duration kProveGone = std::chrono::minutes(5);

// Offers the create step tries on one provider before it moves on to the next: as many as broker's
// own fall-through (CreateOptions::max_attempts), which the step does itself (Flow::rent_bound).
constexpr size_t kCreateOffersPerProvider = 3;

std::string joined(const std::vector<std::string> & words) {
    std::string out;
    for (const auto & w : words) out += (out.empty() ? "" : ", ") + w;
    return out;
}

common::Duration seconds(double s) {
    return std::chrono::duration_cast<common::Duration>(std::chrono::duration<double>(s));
}

class Flow {
public:
    Flow(RunConfig config, FlowOptions options, RunDir dir)
        : cfg_(std::move(config)), opt_(std::move(options)), batch_(is_batch(cfg_)), dir_(std::move(dir)), broker_(opt_.broker),
          clock_(*opt_.broker.clock), finished_before_(dir_.step_done("finish")) {}

    int run(const common::Output & out) {
        if (finished_before_) return summarize_finished(out);
        auto report = run_steps(with_test_hooks(with_data_step(batch_ ? batch_steps() : instance_steps())), Step{"finish", [this](StepContext & c) { finish(c); }, 10min, true, false},
                                dir_, clock_, [this](const RunReport & r) {
                                    release_download_slot();  // a run that failed before its fetch ended downloads nothing more
                                    outcome_ = !r.first_failure ? Outcome::Succeeded
                                               : r.first_failure->kind() == common::ErrorKind::Interrupted ? Outcome::Interrupted
                                                                                                          : Outcome::Failed;
                                });
        summarize(report, out);
        if (report.first_failure) common::report_error(*report.first_failure, out.json());
        if (report.finish_failure) common::report_error(*report.finish_failure, out.json());
        return report.exit_code();
    }

private:
    // The run's providers are a batch scheduler (validate() refuses mixing one with other providers).
    static bool is_batch(const RunConfig & c) {
        return !c.resources.providers.empty() && broker::provider_caps(c.resources.providers.front()).batch_jobs;
    }

    // data.hub_rows: the rows are fetched first, on this machine, so a dataset that is gated, missing
    // or too short costs nothing. Other sources are files already here (validate() checked them).
    std::vector<Step> with_data_step(std::vector<Step> steps) {
        if (cfg_.data.hub_rows) steps.insert(steps.begin(), Step{"data", [this](StepContext & c) { fetch_data(c); }, 30min});
        return steps;
    }

    // --test-sigkill-at-step STEP: every step is a place a test can kill the run at, as it starts.
    std::vector<Step> with_test_hooks(std::vector<Step> steps) {
        if (opt_.stop_after_step_started.empty()) return steps;
        for (auto & s : steps)
            s.run = [this, name = s.name, run = std::move(s.run)](StepContext & c) {
                test_hook(name);
                run(c);
            };
        return steps;
    }

    // A machine of our own: rent it, wait until SSH reaches its GPUs, and run there. With a sweep's
    // download slots, the slot is taken before the create, so a member waiting behind others'
    // downloads rents nothing while it waits, and the fetch comes before the bootstrap, so the slot
    // is not held through the build (the slot step, below).
    std::vector<Step> instance_steps() {
        const double deadline_s = cfg_.policy.max_duration_s;
        std::vector<Step> steps{
            {"estimate", [this](StepContext & c) { estimate(c); }, 2min},
            {"offers", [this](StepContext & c) { offers(c); }, 3min},
            {"create", [this](StepContext & c) { create(c); }, 10min},
            {"ready", [this](StepContext & c) { ready(c); }, 20min},
            {"push", [this](StepContext & c) { push(c); }, 15min},
            {"watchdog", [this](StepContext & c) { arm_watchdog(c); }, 2min},
            {"fetch", [this](StepContext & c) { fetch(c); }, 60min},
            {"bootstrap", [this](StepContext & c) { bootstrap(c); }, 45min},
            {"run", [this](StepContext & c) { run_job(c); }, seconds(deadline_s), false},
            {"pull", [this](StepContext & c) { pull(c); }, 20min, true, false},
        };
        return with_slot_step(std::move(steps), "create");
    }

    // A batch scheduler (deploy/README.md, "Batch schedulers"): push to the site's shared directory
    // through its login node, build and run as the scheduler's jobs, follow their output files.
    // Nothing is rented and nothing runs on the login node but file transfers and the Hub download;
    // the cluster's own --time is the deadline, so no watchdog is needed.
    std::vector<Step> batch_steps() {
        // The run step also waits in the queue: the job's own --time (max_duration) starts when it runs.
        const double follow_s = cfg_.policy.max_duration_s + kBatchQueueWaitS;
        std::vector<Step> steps{
            {"estimate", [this](StepContext & c) { estimate(c); }, 2min},
            {"offers", [this](StepContext & c) { offers(c); }, 3min},
            {"site", [this](StepContext & c) { site(c); }, 3min},
            {"push", [this](StepContext & c) { push(c); }, 15min},
            {"build", [this](StepContext & c) { build_batch(c); }, 90min},
            {"fetch", [this](StepContext & c) { fetch(c); }, 60min},
            {"run", [this](StepContext & c) { run_batch(c); }, seconds(follow_s), false},
            {"pull", [this](StepContext & c) { pull(c); }, 20min, true, false},
        };
        // Nothing bills while a batch run waits (the login node is the site's), so its slot is taken
        // right before the fetch, not held through the build.
        return with_slot_step(std::move(steps), "fetch");
    }

    // ---- slot: one of a sweep's download slots, held from here until the fetch step ends ---------
    // Only where the run downloads a Hub model under a sweep's cap (--download-slots). Its own step,
    // with its own long deadline, so the wait counts against no other step's (the fetch's 60 min
    // used to include it, so a long queue failed a member after it had paid for its instance).
    // It runs again on every attach (a slot is a lock this process holds) and takes nothing once
    // the fetch is done.
    bool downloads_model() const { return !cfg_.model.fixture && cfg_.model.local_path.empty() && !cfg_.model.hub_id.empty(); }
    std::vector<Step> with_slot_step(std::vector<Step> steps, const std::string & before) {
        if (opt_.download_slots.dir.empty() || !downloads_model()) return steps;
        auto at = std::find_if(steps.begin(), steps.end(), [&](const Step & s) { return s.name == before; });
        steps.insert(at, Step{"slot", [this](StepContext & c) { take_download_slot(c); }, seconds(kDownloadSlotWaitS), false});
        return steps;
    }

    void take_download_slot(StepContext & ctx) {
        if (dir_.step_done("fetch")) {
            common::log::info("slot: the model was fetched in an earlier attach; no download slot needed");
            return;
        }
        // Resumed with the instance already rented: it bills while this waits, so the wait is
        // bounded as the fetch step's was, and the watchdog (armed by now, perhaps) gets its heartbeats.
        const bool billing = !batch_ && st().instance.has_value();
        const common::Deadline billing_bound(clock_, seconds(kDownloadSlotWaitBillingS));
        const common::Deadline & deadline = billing && billing_bound.remaining() < ctx.deadline.remaining() ? billing_bound : ctx.deadline;
        double next = 0;
        bool said = false;
        auto slot = DownloadSlot::acquire(opt_.download_slots, deadline, 1, [&]() {
            if (!said)
                common::log::info("slot: all ", opt_.download_slots.count, " download slots are taken; waiting",
                                  billing ? " (the instance rented by an earlier attach bills meanwhile)" : " (nothing is rented yet)");
            said = true;
            if (!billing || !st().watchdog || clock_.unix_now() < next) return;
            next = clock_.unix_now() + opt_.poll_s;
            try {
                if (exec_sh("touch " + common::sh_quote(layout().heartbeat_file)) != 0)
                    common::log::warn("slot: could not touch the watchdog's heartbeat file while waiting for a download slot");
            } catch (const common::Error & e) {
                common::log::warn("slot: could not heartbeat the watchdog while waiting for a download slot: ", e.message());
            }
        });
        common::log::info("slot: download slot ", slot.index() + 1, " of ", opt_.download_slots.count, ", held until the fetch step ends");
        download_slot_.emplace(std::move(slot));
    }

    void release_download_slot() {
        if (!download_slot_) return;
        download_slot_.reset();
        common::log::info("download slot released");
    }
    RunState & st() { return dir_.state(); }
    const RunState & st() const { return dir_.state(); }
    void save() { dir_.save_state(); }
    // The instance, once create has recorded it (every step after create may rely on it).
    InstanceRecord & inst() {
        if (!st().instance) throw common::Error::internal("no instance recorded yet (create has not run)");
        return *st().instance;
    }

    void test_hook(const std::string & step) {
        if (!opt_.stop_after_step_started.empty() && opt_.stop_after_step_started == step) ::kill(::getpid(), SIGKILL);
    }

    // ---- data: the Hub rows the run reads, into RUN_DIR/data/ (deploy/hub_rows.h) -----------------
    void fetch_data(StepContext &) {
        const auto & h = *cfg_.data.hub_rows;
        HubRowsOptions o;
        o.token_env = cfg_.hf_token_env;
        auto r = prepare_hub_rows(h, tokens_needed(cfg_.data), data_dir(), o);
        const auto & rec = r.record;
        common::log::info("data: ", h.dataset, " (config ", h.config, ", split ", h.split, "): rows 0..", rec["rows"].get<int64_t>() - 1, ", ",
                          rec["bytes"].get<int64_t>(), " bytes of text for ", rec["tokens_needed"].get<int64_t>(), " tokens, sha256 ",
                          rec["sha256"].get<std::string>().substr(0, 16), "; ",
                          r.requests == 0 ? std::string("from the row cache") : std::to_string(r.requests) + " pages fetched", " -> ", r.text_path);
    }
    std::string data_dir() const { return dir_.path() + "/data"; }

    // ---- estimate: how much GPU memory the model needs (skipped for the CPU rehearsal) ----------
    void estimate(StepContext &) {
        const auto & r = cfg_.resources;
        st().estimated = true;
        if (r.min_vram_gb) {
            st().min_vram_gb = *r.min_vram_gb;
            common::log::info("estimate: min_vram_gb ", *r.min_vram_gb, " given in the config");
        } else if (r.gpu_count == 0) {
            st().min_vram_gb.reset();
            common::log::info("estimate: CPU run (gpu_count 0); no GPU memory needed");
        } else {
            nlohmann::json hf;
            if (!cfg_.model.local_path.empty()) {
                std::ifstream in(cfg_.model.local_path + "/config.json");
                hf = nlohmann::json::parse(in, nullptr, false);
                if (hf.is_discarded()) throw common::Error::usage(cfg_.model.local_path + "/config.json: not valid JSON");
            } else if (!cfg_.model.hub_id.empty()) {
                hf = fetch_hub_config(cfg_.model.hub_id, cfg_.model.revision, cfg_.hf_token_env);
            } else {
                throw common::Error::usage("resources.min_vram_gb: auto needs a checkpoint config; give a number for fixtures");
            }
            check_capture_layers(cfg_, hf);  // a Hub model's layer count, known here before anything is rented
            auto e = estimate_memory(hf, cfg_.model.dtype, cfg_.data.batch_size, cfg_.data.sequence_length, r.gpu_count,
                                     r.safety_factor, r.offload_gb);
            st().estimate = EstimateRecord{e.params,   e.params_active, e.weights_gb, e.activations_gb,
                                           e.total_gb, e.per_gpu_gb,    e.offload_gb, e.ring_gb};
            st().min_vram_gb = std::ceil(e.per_gpu_gb);
            std::string offload;
            if (e.offload_gb > 0)
                offload = ", " + std::to_string(std::lround(e.offload_gb)) + " GB of them offloaded to pinned host memory (+" +
                          std::to_string(std::lround(e.ring_gb)) + " GB stream ring on the GPU)";
            common::log::info("estimate: ", cfg_.model.display_name(), ": ", e.params / 1000000, "M parameters (",
                              e.params_active / 1000000, "M active), ", std::lround(e.weights_gb), " GB weights", offload, "; needs ",
                              std::lround(std::ceil(e.per_gpu_gb)), " GB per GPU x ", r.gpu_count);
        }
        save();
    }

    // The price above which policy.max_cost_usd would leave the run no time (policy.h), when it is
    // below resources.max_price_usd_per_hour: such an offer is never rented. Batch jobs have no
    // instance end to fit into (the scheduler's --time is the deadline).
    std::optional<double> cap_price_limit() const {
        auto limit = batch_ ? std::nullopt : max_price_for_run_time(cfg_.policy);
        const auto & given = cfg_.resources.max_price_usd_per_hour;
        if (limit && given && *given <= *limit) return std::nullopt;
        return limit;
    }

    broker::OfferFilter filter_for(const std::string & provider, bool cap_limit = true) const {
        broker::OfferFilter f;
        const auto & r = cfg_.resources;
        f.providers = {provider};
        f.gpu = r.gpu_filter;
        if (r.gpu_count > 0) f.gpu_count = r.gpu_count;
        if (st().min_vram_gb) f.min_vram_gb = *st().min_vram_gb;
        f.max_price_usd_per_hour = r.max_price_usd_per_hour;
        if (auto limit = cap_price_limit(); limit && cap_limit) f.max_price_usd_per_hour = *limit;
        f.min_ram_gb = offer_min_ram_gb(r);
        f.min_disk_gb = r.disk_gb;
        // Prices at the disk the create rents (a provider whose price includes storage), so that the
        // price an offer is found at is the one its create is bounded by (rent_bound).
        f.rent_disk_gb = r.disk_gb;
        return f;
    }
    std::vector<std::string> providers() {
        if (!cfg_.resources.providers.empty()) return cfg_.resources.providers;
        return broker_.providers_for({});
    }

    // ---- offers: what matches, per provider in order of preference ------------------------------
    void offers(StepContext &) {
        std::vector<OfferRecord> rows;
        std::vector<std::string> tried;
        for (const auto & p : providers()) {
            common::throw_if_interrupted();
            tried.push_back(p);
            try {
                auto found = broker_.search(filter_for(p), broker::SortKey::Price, 3);
                for (const auto & o : found.offers)
                    rows.push_back({o.provider, o.offer_id, o.gpu_model, o.gpu_count, o.price_usd_per_hour_total, broker::offer_to_json(o)});
            } catch (const common::Error & e) {
                if (e.kind() == common::ErrorKind::Usage) throw;
                common::log::warn("offers: ", p, ": ", e.message());
            }
        }
        if (rows.empty()) {
            refuse_cost_cap_too_small(tried);
            std::string list;
            for (const auto & p : tried) list += (list.empty() ? "" : ", ") + p;
            throw common::Error(common::ErrorKind::Capacity,
                                "offers: nothing matches on " + list + "; loosen resources (gpu, max_price_usd_per_hour, min_vram_gb) or add providers");
        }
        for (const auto & r : rows)
            common::log::info("offers: ", r.provider, ":", r.offer_id, " ", r.gpu_model, " x", r.gpu_count, " $",
                              r.price_usd_per_hour_total, "/h");
        st().offers = std::move(rows);
        save();
    }

    // Nothing matched under the cap's price limit: when something would match without it, the cap is
    // what leaves the run no time, and saying "nothing matches" would send the user to the wrong key.
    void refuse_cost_cap_too_small(const std::vector<std::string> & tried) {
        if (!cap_price_limit()) return;
        std::optional<broker::Offer> cheapest;
        for (const auto & p : tried) {
            try {
                auto found = broker_.search(filter_for(p, false), broker::SortKey::Price, 1);
                if (!found.offers.empty() && (!cheapest || found.offers.front().price_usd_per_hour_total < cheapest->price_usd_per_hour_total))
                    cheapest = found.offers.front();
            } catch (const common::Error & e) {
                if (e.kind() == common::ErrorKind::Usage) throw;
            }
        }
        if (!cheapest) return;
        const double cap = *cfg_.policy.max_cost_usd, price = cheapest->price_usd_per_hour_total;
        char text[512];
        std::snprintf(text, sizeof text,
                      "policy.max_cost_usd: $%.2f buys %s of the cheapest matching offer (%s:%s, $%.2f/h), and the instance ends where "
                      "the cap is reached, with %s of its life kept to pull the results and end it: no time would be left to run the "
                      "job. Raise policy.max_cost_usd well above $%.2f (that margin at this price), or find a cheaper offer",
                      cap, common::format_duration(cap / price * 3600).c_str(), cheapest->provider.c_str(), cheapest->offer_id.c_str(), price,
                      common::format_duration(kPullFinishMarginS).c_str(), price * kPullFinishMarginS / 3600);
        throw common::Error::usage(text);
    }

    // ---- create: rent, provider by provider; the ledger records the intent before each call -----
    void create(StepContext &) {
        if (st().instance) return;  // resumed after a crash that followed the create
        std::string run_id = dir_.instance_run_id();
        // A crash between the provider's answer and our state write: the provider's own listing
        // knows the instance by its name; adopt it rather than renting a second one.
        if (st().create_intent && adopt_existing(run_id)) return;
        st().create_intent = CreateIntent{run_id, clock_.unix_now(), std::vector<std::string>{}};
        save();
        std::optional<common::Error> last;
        // Providers whose API failed while the step looked for an offer: each is warned about as it
        // happens and named in the step's error, so a provider that is down does not read as one
        // with nothing on offer.
        std::vector<broker::ProviderFailure> search_failures;
        for (const auto & p : providers()) {
            common::throw_if_interrupted();
            // Before the call: a create that fails after the provider made the instance (its answer
            // lost, its read-back failed) leaves finish a place to look for it by name.
            st().create_intent->providers->push_back(p);
            save();
            // Offer by offer, cheapest first, each rented under the deadline its own price allows
            // (rent_bound); a capacity refusal moves on to the next offer, found fresh.
            std::vector<std::string> tried;
            while (tried.size() < kCreateOffersPerProvider) {
                common::throw_if_interrupted();
                std::optional<broker::Offer> offer;
                try {
                    offer = cheapest_untried(p, tried);
                } catch (const common::Error & e) {
                    if (e.kind() == common::ErrorKind::Usage || e.kind() == common::ErrorKind::Interrupted) throw;
                    common::log::warn("create: ", p, ": the search for an offer failed (", e.message(), "); trying the next provider");
                    search_failures.push_back({p, e});
                    break;
                }
                if (!offer) {
                    if (tried.empty())
                        last = common::Error(common::ErrorKind::Capacity,
                                             "create: " + p + ": no offer matches the filters any more; run `broker search` to see what is on offer");
                    break;
                }
                tried.push_back(offer->offer_id);
                const RentBound bound = rent_bound(p, offer->price_usd_per_hour_total);
                broker::CreateOptions o;
                o.filter = filter_for(p);
                o.filter.offer_id = offer->offer_id;
                o.filter.max_price_usd_per_hour = bound.max_price;
                o.max_attempts = 1;
                o.image = cfg_.resources.image;
                o.disk_gb = cfg_.resources.disk_gb;
                o.ssh_private_key = key_path();
                o.run_id = run_id;
                o.role = "main";
                o.max_lifetime_s = bound.lifetime_s;  // the instance's own deadline: its name, RunPod's terminateAfter
                o.wait_ready = false;
                o.on_progress = [](const std::string & line) { common::log::info("create: ", line); };
                try {
                    auto r = broker_.create(o);
                    test_hook("create:answered");  // the provider created it; this run has not recorded it yet
                    const auto & i = r.instance;
                    st().instance = InstanceRecord{.provider = i.provider,
                                                   .id = i.id,
                                                   .name = i.name,
                                                   .price_usd_per_hour = r.offer.price_usd_per_hour_total,
                                                   .gpu_model = r.offer.gpu_model,
                                                   .gpu_count = r.offer.gpu_count,
                                                   .vram_gb_per_gpu = r.offer.vram_gb_per_gpu,
                                                   .created_unix = clock_.unix_now(),
                                                   .native_deadline = broker_.provider(i.provider).caps().native_deadline};
                    save();
                    common::log::info("create: ", i.provider, ":", i.id, " (", i.name, ")");
                    return;
                } catch (const common::Error & e) {
                    if (e.kind() != common::ErrorKind::Capacity) throw;
                    // A capacity refusal leaves nothing behind (broker's create ends what a refused rent left).
                    last = e;
                    common::log::warn("create: ", p, ": ", e.message(), "; trying the next offer");
                }
            }
            st().create_intent->providers->pop_back();
            save();
            if (search_failures.empty() || search_failures.back().provider != p)
                common::log::warn("create: ", p, ": no offer could be rented (", tried.size(), " tried); trying the next provider");
        }
        throw create_failure(last, search_failures);
    }

    // The create step's error once no provider rented: the last refusal (no offer left, no capacity),
    // with every provider whose search failed named with its error; when every provider failed that
    // way, the first failure's kind (a network error is not "nothing on offer").
    static common::Error create_failure(const std::optional<common::Error> & last, const std::vector<broker::ProviderFailure> & failed) {
        std::string named;
        for (const auto & f : failed) {
            const std::string & m = f.error.message();  // broker's errors mostly start with the provider's name
            named += (named.empty() ? "" : "; ") + (m.rfind(f.provider + ": ", 0) == 0 ? m : f.provider + ": " + m);
        }
        if (failed.empty()) return last ? *last : common::Error(common::ErrorKind::Capacity, "create: no provider to try");
        if (!last)
            return common::Error(failed.front().error.kind(), "create: the search for an offer failed on every provider (" + named +
                                                                  "); nothing was rented. Try again once the provider answers, or run `broker search`");
        return common::Error(last->kind(), last->message() + "; the search for an offer failed on (" + named + ")");
    }

    // An instance (or job) of this run that may still bill, found by its name in `provider`'s own
    // listing: what a crash between the provider's answer and our state write leaves. `role` empty:
    // any role.
    std::optional<broker::Instance> find_ours(const std::string & provider, const std::string & run_id, const std::string & role = "") {
        for (auto & i : broker_.provider(provider).list()) {
            auto n = broker::parse_instance_name(i.name);
            if (n && n->run_id == run_id && (role.empty() || n->role == role) && broker::may_bill(i.status)) return i;
        }
        return std::nullopt;
    }

    // Records an instance of this run found by its name (InstanceRecord::adopted).
    void record_found(const broker::Instance & i) {
        st().instance = InstanceRecord{.provider = i.provider,
                                       .id = i.id,
                                       .name = i.name,
                                       .price_usd_per_hour = i.price_usd_per_hour.value_or(0.0),
                                       .gpu_model = i.gpu_model,
                                       .gpu_count = i.gpu_count,
                                       .vram_gb_per_gpu = i.vram_gb_per_gpu,
                                       .created_unix = i.created_unix.value_or(clock_.unix_now()),
                                       .adopted = true};
        save();
    }

    // What one create call may rent at, and the lifetime the instance gets (the deadline in its
    // name; RunPod enforces it itself, as terminateAfter).
    struct RentBound {
        std::optional<double> max_price;
        double lifetime_s = 0;
    };

    // The deadline in an instance's name is fixed before the provider answers, so it cannot come
    // from the price actually rented. Left to itself, broker's create falls through to the next
    // offer on a capacity error, and that one may cost more than the offer the deadline was
    // computed for: under a binding policy.max_cost_usd the provider's own end (the backstop left
    // when the watchdog fails) then came minutes to hours after the cap. So the flow rents offer by
    // offer (CreateOptions::filter.offer_id, one attempt each), each bounded by a price (the filter's
    // max price: an offer whose price rose past it is refused, as no capacity) and given the lifetime
    // the cap allows at that bound. Whatever is rented costs at most the bound, so the cap is never
    // reached before the deadline, and the cheapest offer keeps the whole lifetime its price allows.
    // Up to the price at which the cap no longer binds, every offer gets max_duration + slack, and so
    // does every offer without a cap: there the bound is only the filter's own.
    RentBound rent_bound(const std::string & provider, double offer_price) const {
        const Policy & policy = cfg_.policy;
        const std::optional<double> given = filter_for(provider).max_price_usd_per_hour;
        if (!policy.max_cost_usd) return {given, instance_lifetime_s(policy, offer_price)};
        const double uncapped = *policy.max_cost_usd * 3600.0 / (policy.max_duration_s + kLifetimeSlackS);
        double bound = std::max(offer_price, uncapped);
        if (given) bound = std::min(bound, *given);  // nothing above the filter's own limit is rented anyway
        return {bound, instance_lifetime_s(policy, bound)};
    }

    // The cheapest offer on `provider` matching the run's filter whose id is not in `tried`, from a
    // fresh search (a capacity refusal often takes the offer off the market; one still listed is
    // not tried twice). nullopt when there is none.
    std::optional<broker::Offer> cheapest_untried(const std::string & provider, const std::vector<std::string> & tried) {
        auto found = broker_.search(filter_for(provider), broker::SortKey::Price, tried.size() + 1);
        for (auto & o : found.offers)
            if (std::find(tried.begin(), tried.end(), o.offer_id) == tried.end()) return std::move(o);
        return std::nullopt;
    }

    bool adopt_existing(const std::string & run_id) {
        for (const auto & p : providers()) {
            if (auto found = find_ours(p, run_id)) {
                record_found(*found);
                common::log::warn("create: adopted ", found->provider, ":", found->id, " created by an earlier attach of this run");
                return true;
            }
        }
        return false;
    }

    // A create that failed after the provider had made the instance (the answer lost, the read-back
    // failed, or a crash before the state write followed by an attach that could not list) leaves an
    // instance this run never recorded. Finish looks for it by name wherever a create was sent; one
    // found is recorded and ended. A lookup that fails is leak risk, never "nothing to end".
    void find_unrecorded_instance() {
        const std::string run_id = dir_.instance_run_id();
        const auto & intent = *st().create_intent;
        const std::vector<std::string> where = intent.providers ? *intent.providers : providers();
        for (const auto & p : where) {
            std::optional<broker::Instance> found;
            try {
                found = find_ours(p, run_id);
            } catch (const common::Error & e) {
                throw common::Error(common::ErrorKind::LeakRisk,
                                    "finish: run " + run_id + " (" + dir_.path() + "): a create sent to " + p +
                                        " did not complete, and " + p + "'s listing could not be read to look for the instance (" +
                                        e.message() + "); one named tk-" + run_id + "-main-dl<deadline> may be billing: run `broker instances list --provider " +
                                        p + "` and end it with `broker instances terminate " + p + ":<id> --yes`, or --resume " + dir_.path() +
                                        " once " + p + " answers")
                    .with("provider", p)
                    .with("run_id", run_id);
            }
            if (!found) continue;
            record_found(*found);
            found_unrecorded_ = true;
            common::log::warn("finish: ", found->provider, ":", found->id, " (", found->name,
                              ") was created for this run but never recorded (the create failed after the provider made it); ending it");
            return;
        }
        if (!where.empty()) common::log::info("finish: no instance of run ", run_id, " on ", joined(where), "; the create made none");
    }

    // ---- ready: staged wait (provider running → TCP → banner → auth → exec → GPU) ----------------
    void ready(StepContext & ctx) {
        auto & in = inst();
        broker::ReadyOptions ro;
        ro.budget = ctx.deadline.remaining();
        ro.poll_interval = seconds(opt_.ready_poll_s);
        ro.private_key_path = key_path();
        ro.clock = &clock_;
        if (opt_.gpu_check && in.gpu_count > 0) {
            ro.expect_gpu_count = in.gpu_count;
            ro.expect_vram_gb_per_gpu = in.vram_gb_per_gpu;
        }
        ro.on_stage = [](broker::ReadyStage s, const std::string & d) {
            common::log::info("ready: ", broker::stage_name(s), d.empty() ? "" : ": " + d);
        };
        auto i = broker::wait_ready(broker_.provider(in.provider), in.id, ro);
        if (!i.ssh) throw common::Error(common::ErrorKind::Internal, "ready: the instance is ready but has no SSH endpoint");
        in.ssh = SshRecord{i.ssh->host, i.ssh->port, i.ssh->user};
        save();
    }

    std::string key_path() {
        if (!opt_.ssh_key.empty()) return opt_.ssh_key;
        std::string k = dir_.path() + "/ssh/id_ed25519";
        if (!fs::exists(k)) {
            fs::create_directories(dir_.path() + "/ssh");
            auto r = common::run_process({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy_and_analyze", "-f", k});
            if (r.exit_code != 0) throw common::Error(common::ErrorKind::Internal, "ssh-keygen failed: " + r.err);
        }
        return k;
    }

    bifrost::Client & client() {
        if (client_) return *client_;
        // A batch site is reached through its login node, with the key its definition names.
        const bool site = batch_ && st().batch;
        if (!site && !inst().ssh) throw common::Error::internal("no SSH endpoint recorded yet (ready has not run)");
        const SshRecord & ssh = site ? st().batch->login : *inst().ssh;
        const std::string key = site ? st().batch->login_key : key_path();
        bifrost::Endpoint ep;
        ep.host = ssh.host;
        ep.port = ssh.port;
        ep.user = ssh.user;
        ep.key_path = key;
        bifrost::Target t;
        t.text = ep.label();
        t.endpoint = ep;
        bifrost::ConnectOptions co;
        co.key_path = key;
        if (site)  // a login node behind a bastion (the cluster definition's `jump:`)
            for (const auto & h : st().batch->jump) co.jump.push_back(bifrost::JumpHost{h.user, h.host, h.port, h.key});
        co.known_hosts_path = dir_.path() + "/ssh/known_hosts";
        // While running, a host that refuses connections may still be booting or restarting sshd;
        // while finishing, the instance may be gone, so each remote call gets one short try.
        co.retry_deadline_s = finishing_ ? 10 : 60;
        // From the pull on, a command that moves no data for policy.stall_timeout is abandoned (a read
        // hung on a stuck volume), so it cannot hold off the terminate; a pull that keeps moving is
        // never cut.
        if (pulling_ || finishing_) co.stall_timeout_s = cfg_.policy.stall_timeout_s;
        if (finishing_ && host_unreachable_)
            throw common::Error(common::ErrorKind::Network, ep.label() + ": unreachable earlier in finish; not trying again");
        client_.emplace(bifrost::Client::connect(t, co));
        if (finishing_)
            client_->set_reconnect_window(0);
        else if (!site)
            // Through an outage on our side, as long as the watchdog keeps the instance: after
            // bifrost's default 3 minutes the run would fail and finish would end a healthy job.
            client_->set_reconnect_window(reconnect_window_s(cfg_.policy));
        return *client_;
    }

    RemoteLayout layout() {
        if (!st().remote) throw common::Error(common::ErrorKind::Internal, "the remote layout is not known yet (push has not run)");
        RemoteLayout l = remote_layout(st().remote->home, dir_.run_id(), st().remote->cache_dir);
        // A site's work directory is shared by every run of the user (a sweep's members at once):
        // each run builds from its own copy of the sources (builds are still shared, by source hash).
        if (batch_) l.src_dir = l.run_dir + "/src";
        return l;
    }

    std::string cache_dir_for(const std::string & provider) {
        if (!opt_.remote_cache_dir.empty()) return opt_.remote_cache_dir;
        if (broker_.provider(provider).caps().on_this_machine) {
            std::string sd = opt_.broker.state_dir.empty() ? broker::default_state_dir() : opt_.broker.state_dir;
            return sd + "/remote-cache";  // outlives the instance, so rehearsals share one build
        }
        return "";
    }

    // ---- push: the source tree, then this run's inputs --------------------------------------------
    void push(StepContext &) {
        auto & c = client();
        std::string home = batch_ ? st().batch->work_dir : c.home();
        st().remote = RemoteRecord{home, batch_ ? opt_.remote_cache_dir : cache_dir_for(inst().provider)};
        save();
        RemoteLayout l = layout();
        st().remote->cache_dir = l.cache_dir;
        save();
        bifrost::PushOptions po;
        po.remote_dir = l.src_dir;
        po.excludes = {"/runs/", "/" + fs::path(cfg_.output_dir).filename().string() + "/", "/.cache/"};
        auto stats = c.push(opt_.workspace, po);
        common::log::info("push: source tree: ", stats.files_sent, " of ", stats.files_total, " files sent (",
                          stats.bytes_sent / 1024, " KiB)");
        // The run's inputs: token ids or a data file; a local checkpoint separately.
        std::string payload = dir_.path() + "/payload";
        fs::create_directories(payload);
        const auto & d = cfg_.data;
        if (d.synthetic_vocab)
            common::write_text_file(payload + "/tokens.json",
                                    synthetic_tokens_json(*d.synthetic_vocab, d.num_sequences, d.sequence_length, d.seed), 0644);
        for (const auto * f : {&d.tokens_file, &d.text_file, &d.jsonl_file})
            if (!f->empty()) fs::copy_file(*f, payload + "/" + input_file_name(d), fs::copy_options::overwrite_existing);
        if (d.hub_rows) {
            (void)verify_hub_rows_input(data_dir());  // what the data step fetched, unchanged since
            fs::copy_file(data_dir() + "/" + kHubRowsTextFile, payload + "/" + input_file_name(d), fs::copy_options::overwrite_existing);
        }
        bifrost::PushOptions pi;
        pi.remote_dir = l.input_dir;
        c.push(payload, pi);
        if (!cfg_.model.local_path.empty()) {
            bifrost::PushOptions pm;
            pm.remote_dir = l.input_dir + "/model";
            auto ms = c.push(cfg_.model.local_path, pm);
            common::log::info("push: checkpoint: ", ms.bytes_sent / 1048576, " MiB sent");
        }
    }

    int exec_sh(const std::string & line, const std::string & stdin_data = {}) {
        bifrost::ExecOptions eo;
        eo.stdin_data = stdin_data;
        std::string err;
        int rc = client().exec(bifrost::Command::sh(line), eo, [](std::string_view) {}, [&err](std::string_view s) { err += s; });
        if (rc != 0) common::log::debug("remote: ", line, ": exit ", rc, ": ", err);
        return rc;
    }

    // When the instance ends whatever this process does: the deadline in its name (`broker sweep`;
    // RunPod's terminateAfter is the same one) and the watchdog's.
    double instance_end_unix() {
        const auto & in = inst();
        double end = in.created_unix.value_or(clock_.unix_now()) + instance_lifetime_s(cfg_.policy, in.price_usd_per_hour);
        if (auto n = broker::parse_instance_name(in.name)) end = std::min(end, static_cast<double>(n->deadline_unix));
        if (st().watchdog && st().watchdog->deadline_unix > 0) end = std::min(end, st().watchdog->deadline_unix);
        return end;
    }

    // The watchdog's way to end the instance, from what the provider declares (broker::SelfEnd).
    WatchdogSettings watchdog_settings() {
        const auto & in = inst();
        auto & provider = broker_.provider(in.provider);
        WatchdogSettings w;
        w.action = "none";
        switch (provider.caps().self_end) {
            case broker::SelfEnd::ScopedRequest:
                w.action = "request";
                w.request = provider.self_end_request(in.id);  // broker's own terminate, with the scoped key
                break;
            case broker::SelfEnd::SelfStop:
                w.action = "command";
                for (const auto & word : provider.self_stop_command(in.id))
                    w.terminate_command += (w.terminate_command.empty() ? "" : " ") + common::sh_quote(word);
                break;
            case broker::SelfEnd::BrokerOnHost:
                if (opt_.broker_program.empty()) break;
                w.action = "command";
                w.terminate_command = broker_terminate_command(in.ref());
                break;
            case broker::SelfEnd::None:
                break;
        }
        w.instance_id = in.id;
        // Where policy.max_cost_usd is reached at the instance's price, when that comes before
        // max_duration + slack: a cap is a cap, also for a run whose driver died.
        w.deadline_unix = in.created_unix.value_or(clock_.unix_now()) + instance_lifetime_s(cfg_.policy, in.price_usd_per_hour);
        w.heartbeat_timeout_s = cfg_.policy.heartbeat_timeout_s;
        return w;
    }

    // `broker instances terminate REF --yes` with this run's state dir and ledger.
    std::string broker_terminate_command(const std::string & ref) const {
        std::string sd = opt_.broker.state_dir.empty() ? broker::default_state_dir() : opt_.broker.state_dir;
        std::string cmd = common::sh_quote(opt_.broker_program) + " --state-dir " + common::sh_quote(sd);
        if (!opt_.broker.ledger_path.empty()) cmd += " --ledger " + common::sh_quote(opt_.broker.ledger_path);
        return cmd + " instances terminate " + common::sh_quote(ref) + " --yes";
    }

    // The shell line that replaces the watchdog's config with its stdin. Written beside it and
    // renamed over it: the watchdog re-reads the file every tick, and a write that fails midway (a
    // full disk) or is read half done must leave it the whole old config, not an empty one (with
    // which it would end nothing: no deadline, no heartbeat file).
    static std::string write_watchdog_conf(const RemoteLayout & l) {
        const std::string next = common::sh_quote(l.watchdog_conf + ".next");
        return "cat > " + next + " && mv -f " + next + " " + common::sh_quote(l.watchdog_conf);
    }

    // ---- watchdog: ends the instance when heartbeats stop or the deadline passes ------------------
    void arm_watchdog(StepContext &) {
        RemoteLayout l = layout();
        auto w = watchdog_settings();
        if (w.action == "none")
            common::log::warn("watchdog: ", inst().provider,
                              " has no in-instance credential to end itself; the name's deadline and `broker sweep` are the backstop");
        std::string script = l.src_dir + "/deploy/remote/watchdog.sh";
        std::string line = "mkdir -p " + common::sh_quote(l.run_dir) + " && " + write_watchdog_conf(l) + " && touch " +
                           common::sh_quote(l.heartbeat_file) + " && (setsid nohup sh " + common::sh_quote(script) + " " +
                           common::sh_quote(l.watchdog_conf) + " >> " + common::sh_quote(l.run_dir + "/watchdog.log") +
                           " 2>&1 < /dev/null &)";
        if (exec_sh(line, watchdog_config(w, l)) != 0)
            throw common::Error(common::ErrorKind::RemoteFailed, "watchdog: could not start " + script);
        st().watchdog = WatchdogRecord{w.action, w.deadline_unix, w.heartbeat_timeout_s};
        save();
        common::log::info("watchdog: armed (", w.action, "; ends the instance ", common::format_duration(w.heartbeat_timeout_s),
                          " after the last heartbeat, and at ", common::format_utc_minute(w.deadline_unix),
                          cost_cap_binds(cfg_.policy, inst().price_usd_per_hour) ? ", where policy.max_cost_usd is reached)"
                                                                                 : ", max_duration + 30 min after its create)");
    }

    bool container_env_readable() {
        if (batch_) return false;  // a login node: its PID 1 is the site's init
        if (broker_.provider(inst().provider).caps().on_this_machine) return false;  // PID 1 is this machine's, not ours
        if (!st().container_env) {
            // A real read: mode bits can say yes where the kernel's ptrace check says no.
            st().container_env = exec_sh("cat /proc/1/environ > /dev/null 2>&1") == 0;
            save();
        }
        return *st().container_env;
    }

    // The host's name of this run's job `role` (remote_job_name: it carries the run id; a run
    // directory from before keeps the bare role it recorded).
    std::string job_name(const std::string & role) const { return remote_job_name(role, dir_.run_id(), st().jobs.count(role) > 0); }
    // Whether a job listed on the host is this run's: recorded in state.json, or named with its run
    // id (started by an attach that crashed before recording it). Nothing else on the host (another
    // run's jobs, the user's own) is followed, copied or stopped.
    bool job_is_ours(const std::string & name) const { return st().jobs.count(name) > 0 || remote_job_of_run(name, dir_.run_id()); }

    // Starts this run's job `role` unless it already exists (a resumed run), then streams its log
    // into RUN_DIR/logs/<role>.log from the saved offset until it ends. Every poll also touches the
    // heartbeat file the on-instance watchdog checks.
    bifrost::JobInfo follow_job(const std::string & role, const bifrost::Command & command, const bifrost::EnvList & env,
                                const common::Deadline & deadline) {
        auto & c = client();
        const std::string name = job_name(role);
        // Only a job of this run is followed again (a resume). A finished job of the same name can
        // only be another run's when both use the names from before the run id (a reused machine: a
        // leased host, or one sshd standing in for several pods in the tests); run_detached replaces it.
        bool exists = false;
        if (job_is_ours(name))
            for (const auto & j : c.jobs())
                if (j.name == name) exists = true;
        if (!exists) {
            bifrost::JobSpec spec;
            spec.name = name;
            spec.command = command;
            spec.options.env = env;
            // Cloud containers keep their env (CUDA paths, the scoped key) on PID 1 only; the local
            // rehearsal's sshd is not in a container and PID 1 is not ours to read.
            spec.options.import_container_env = container_env_readable();
            c.run_detached(spec);
            st().jobs[name] = JobRecord{};
            save();
        }
        const uint64_t offset = st().jobs[name].offset;
        JobLog log(dir_.logs_dir(), role + ".log", offset, role);
        auto on_data = [&](std::string_view s) { log.write(s); };
        // A batch site's login node (the Hub download) costs nothing and has no instance yet.
        const double price = st().instance ? st().instance->price_usd_per_hour : 0.0;
        const double created = st().instance ? st().instance->created_unix.value_or(clock_.unix_now()) : clock_.unix_now();
        // One channel per poll (heartbeat, state, new log bytes), each surviving a dropped
        // connection; the same loop bifrost's soak test drives for hours (bench/soak_follow.sh).
        bifrost::FollowOptions fo;
        fo.heartbeat_path = st().remote ? layout().heartbeat_file : "";
        fo.after_poll = [&](const bifrost::JobPoll & p) {
            log.flush();
            auto & job = st().jobs[name];
            job.offset = p.offset;
            if (p.info.state != "running") {
                job.state = p.info.state;
                job.exit_code = p.info.exit_code.value_or(-1);
            }
            save();
            if (p.info.state == "running" && over_budget(cfg_.policy, price, clock_.unix_now() - created)) throw cost_cap_error(name);
        };
        fo.wait = [&] { return deadline.sleep(seconds(opt_.poll_s)); };
        auto last = c.follow_job(name, offset, on_data, fo);
        if (last.info.state == "running")
            throw common::Error(common::ErrorKind::Timeout, name + ": still running at its deadline of " +
                                                                common::format_duration(common::to_seconds(deadline.budget())));
        return last.info;
    }

    common::Error cost_cap_error(const std::string & job) const {
        return common::Error(common::ErrorKind::Quota,
                             job + ": stopped at the cost cap of $" + std::to_string(*cfg_.policy.max_cost_usd) + " (policy.max_cost_usd)");
    }

    common::Error hub_refused_error() const {
        return common::Error(common::ErrorKind::Auth, "fetch: " + cfg_.model.hub_id + ": the Hub refused the download; set " +
                                                          cfg_.hf_token_env + " and accept the model's licence");
    }

    void require_success(const bifrost::JobInfo & info, const std::string & what) {
        if (info.state == "succeeded") return;
        const std::string log = remote_job_role(info.name, dir_.run_id()) + ".log";
        throw common::Error(common::ErrorKind::RemoteFailed,
                            what + ": " + info.state + " (exit " + std::to_string(info.exit_code.value_or(-1)) + "); last lines of " +
                                dir_.logs_dir() + "/" + log + ":" + tail_lines(dir_.logs_dir(), log, 8));
    }

    // ---- bootstrap: build extract/analyze on the instance, cached by source hash ------------------
    void bootstrap(StepContext & ctx) {
        RemoteLayout l = layout();
        auto cmd = bifrost::Command::args({"sh", l.src_dir + "/deploy/remote/bootstrap.sh", l.src_dir, l.cache_dir});
        require_success(follow_job("bootstrap", cmd, {}, ctx.deadline), "bootstrap");
        std::string bin = value_from_log(dir_.logs_dir(), "bootstrap.log", "bin_dir");
        if (bin.empty()) throw common::Error(common::ErrorKind::RemoteFailed, "bootstrap: finished without printing bin_dir=");
        st().bin_dir = bin;
        save();
    }

    // ---- fetch: the checkpoint onto the instance (Hub, cached; a pushed path; or a fixture) ------
    void fetch(StepContext & ctx) {
        RemoteLayout l = layout();
        if (cfg_.model.fixture) {
            st().model_dir = "";  // the job writes it
        } else if (!cfg_.model.local_path.empty()) {
            st().model_dir = l.input_dir + "/model";
        } else {
            bifrost::EnvList env;
            const char * tok = std::getenv(cfg_.hf_token_env.c_str());
            if (tok && *tok) {
                common::log::add_secret(tok);
                env.push_back({"HF_TOKEN", tok});  // on stdin, never in argv
            }
            if (const char * ep = std::getenv("HF_ENDPOINT"); ep && *ep) env.push_back({"HF_ENDPOINT", ep});
            // In a sweep, at most N members download at once (the Hub answers 429 to a crowd): the
            // slot step took one of the N before anything was rented; it is let go below.
            if (!opt_.download_slots.dir.empty() && !download_slot_)
                throw common::Error::internal("fetch: no download slot held (the slot step did not run)");
            std::vector<std::string> words{"sh", l.src_dir + "/deploy/remote/fetch_model.sh", cfg_.model.hub_id, cfg_.model.revision,
                                           l.cache_dir};
            if (batch_ && !st().batch->fetch_on_login) {
                fetch_in_batch_job(words, env, ctx.deadline);
            } else {
                auto info = follow_job("fetch", bifrost::Command::args(words), env, ctx.deadline);
                if (info.state != "succeeded" && info.exit_code == 3) throw hub_refused_error();
                require_success(info, "fetch");
            }
            st().model_dir = value_from_log(dir_.logs_dir(), "fetch.log", "model_dir");
        }
        save();
        release_download_slot();
    }

    // ---- run: extract + analyze as one detached job, streamed here --------------------------------
    void run_job(StepContext & ctx) {
        RemoteLayout l = layout();
        // max_duration from now, but not past the instance's own end less room to pull and finish:
        // the steps before (or an earlier attach) used part of its lifetime (policy.h, run_budget).
        // A job started by an earlier attach is still followed (it may have ended; if not, the
        // budget's end stops the step and finish salvages what it wrote).
        const double end = instance_end_unix();
        const RunBudget budget = run_budget(cfg_.policy.max_duration_s, end, clock_.unix_now());
        // Why the instance ends then: the cost cap at its price, or max_duration + slack.
        const double price = inst().price_usd_per_hour;
        const bool capped = cost_cap_binds(cfg_.policy, price);
        char why[256];
        if (capped)
            std::snprintf(why, sizeof why, "where its price of $%.2f/h reaches policy.max_cost_usd $%.2f, %s after its create", price,
                          *cfg_.policy.max_cost_usd, common::format_duration(instance_lifetime_s(cfg_.policy, price)).c_str());
        else
            std::snprintf(why, sizeof why, "its deadline counts from the create: max_duration + %s", common::format_duration(kLifetimeSlackS).c_str());
        if (budget.seconds <= 0 && !st().jobs.count(job_name("analysis")))
            throw common::Error(capped ? common::ErrorKind::Quota : common::ErrorKind::Timeout,
                                "run: the instance ends at " + common::format_utc_minute(end) + " (" + why + "), less than " +
                                    common::format_duration(kPullFinishMarginS) +
                                    " from now: no time is left to run the job and still pull and finish; raise " +
                                    (capped ? "policy.max_cost_usd" : "policy.max_duration"));
        if (budget.shortened)
            common::log::warn("run: the job gets ", common::format_duration(budget.seconds), ", not policy.max_duration ",
                              common::format_duration(cfg_.policy.max_duration_s), ": the instance ends at ", common::format_utc_minute(end),
                              " (", why, ", and the steps before the run took part of it); ",
                              common::format_duration(kPullFinishMarginS), " are kept for pull and finish");
        common::Deadline deadline(clock_, std::min(ctx.deadline.remaining(), seconds(budget.seconds)));
        if (!st().jobs.count(job_name("analysis"))) {
            std::string job = job_script(cfg_, l, st().bin_dir.value_or(""), st().model_dir.value_or(""));
            if (exec_sh("cat > " + common::sh_quote(l.input_dir + "/job.sh"), job) != 0)
                throw common::Error(common::ErrorKind::RemoteFailed, "run: could not write job.sh");
        }
        auto info = follow_job("analysis", bifrost::Command::args({"sh", l.input_dir + "/job.sh"}), {}, deadline);
        require_success(info, "run (extract + analyze)");
    }

    // ---- site (batch): where the work is prepared, from the offer chosen ------------------------
    void site(StepContext &) {
        if (st().batch) return;  // resumed
        if (!st().offers || st().offers->empty()) throw common::Error::internal("site: no offers recorded");
        const OfferRecord & chosen = st().offers->front();  // the cheapest that matched
        auto f = filter_for(chosen.provider);
        f.offer_id = chosen.offer_id;
        auto found = broker_.search(f, broker::SortKey::Price, 1);
        if (found.offers.empty())
            throw common::Error(common::ErrorKind::Capacity, "site: " + chosen.provider + ":" + chosen.offer_id + " is no longer offered");
        auto site = broker_.provider(chosen.provider).batch_site(found.offers.front());
        std::vector<JumpRecord> jump;
        for (const auto & h : site.login.jump)
            jump.push_back({h.host, h.port, h.user, h.key_path.empty() ? site.login.key_path : h.key_path});
        st().batch = BatchRecord{chosen.provider, chosen.offer_id, SshRecord{site.login.host, site.login.port, site.login.user},
                                 site.login.key_path, site.work_dir, std::move(jump), site.fetch_on_login, {}};
        save();
        std::string via;
        for (const auto & h : st().batch->jump) via += " via " + h.user + "@" + h.host + ":" + std::to_string(h.port);
        common::log::info("site: ", chosen.provider, ":", chosen.offer_id, " (", chosen.gpu_model, " x", chosen.gpu_count, ") through ",
                          site.login.user, "@", site.login.host, ":", site.login.port, via, ", work directory ", site.work_dir);
    }

    // ---- build (batch): extract/analyze built by a CPU job on a compute node, cached by source hash
    void build_batch(StepContext & ctx) {
        RemoteLayout l = layout();
        std::string body = "sh " + common::sh_quote(l.src_dir + "/deploy/remote/bootstrap.sh") + " " + common::sh_quote(l.src_dir) + " " +
                           common::sh_quote(l.cache_dir);
        submit_batch("build", body, false, false, common::to_seconds(ctx.deadline.remaining()));
        follow_batch("build", ctx.deadline, 0);
        std::string bin = value_from_log(dir_.logs_dir(), "build.log", "bin_dir");
        if (bin.empty()) throw common::Error(common::ErrorKind::RemoteFailed, "build: finished without printing bin_dir=");
        st().bin_dir = bin;
        save();
    }

    // ---- fetch (batch, a site whose login node may not download): a CPU job on a compute node -----
    // The token never enters the job script (the scheduler keeps scripts where administrators read
    // them): it goes on stdin into a 0600 file that the job reads and deletes before anything else.
    void fetch_in_batch_job(const std::vector<std::string> & words, const bifrost::EnvList & env, const common::Deadline & deadline) {
        RemoteLayout l = layout();
        std::string body, token_file = l.input_dir + "/.hf_token";
        for (const auto & [k, v] : env) {
            if (k == "HF_TOKEN") {
                if (!st().batch->jobs.count("fetch") &&
                    exec_sh("mkdir -p " + common::sh_quote(l.input_dir) + " && umask 077 && cat > " + common::sh_quote(token_file), v) != 0)
                    throw common::Error(common::ErrorKind::RemoteFailed, "fetch: could not hand the Hub token to the job");
                body += "HF_TOKEN=$(cat " + common::sh_quote(token_file) + ") && rm -f " + common::sh_quote(token_file) +
                        " && export HF_TOKEN || exit 2\n";
            } else {
                body += "export " + k + "=" + common::sh_quote(v) + "\n";
            }
        }
        for (size_t i = 0; i < words.size(); ++i) body += (i ? " " : "") + common::sh_quote(words[i]);
        submit_batch("fetch", body, false, false, common::to_seconds(deadline.remaining()));
        try {
            follow_batch("fetch", deadline, 0);
        } catch (const common::Error &) {
            if (st().batch->jobs.at("fetch").exit_code == 3) throw hub_refused_error();
            throw;
        }
    }

    // ---- run (batch): extract + analyze as the scheduler's job with the run's GPUs ---------------
    void run_batch(StepContext & ctx) {
        RemoteLayout l = layout();
        if (!st().batch->jobs.count("analysis")) {
            std::string job = job_script(cfg_, l, st().bin_dir.value_or(""), st().model_dir.value_or(""));
            if (exec_sh("mkdir -p " + common::sh_quote(l.input_dir) + " && cat > " + common::sh_quote(l.input_dir + "/job.sh"), job) != 0)
                throw common::Error(common::ErrorKind::RemoteFailed, "run: could not write job.sh");
            // Results of an earlier start of this job are replaced, never mixed in (a requeue reruns it).
            std::string body = "rm -rf " + common::sh_quote(l.results_dir) + "\nsh " + common::sh_quote(l.input_dir + "/job.sh");
            // gpu_count 0 (a CPU rehearsal): the partition's offer may have GPUs; the job takes none.
            submit_batch("analysis", body, cfg_.resources.gpu_count > 0, cfg_.policy.max_requeues > 0, cfg_.policy.max_duration_s);
        }
        follow_batch("analysis", ctx.deadline, cfg_.policy.max_requeues);
    }

    // A job's role in its instance name (names allow [a-z0-9]).
    static std::string batch_name_role(const std::string & role) { return role == "analysis" ? "main" : role; }

    // Submits the job `role` unless this run already did (a resume follows it again; a crash between
    // sbatch and the state write is found by name in the scheduler's own listing).
    void submit_batch(const std::string & role, const std::string & body, bool use_gpus, bool requeue, double time_s) {
        auto & b = *st().batch;
        if (b.jobs.count(role)) return;
        const std::string run_id = dir_.instance_run_id();
        const std::string name_role = batch_name_role(role);
        const std::string output = layout().run_dir + "/" + role + ".out";
        if (auto i = find_ours(b.provider, run_id, name_role)) {
            b.jobs[role] = BatchJobRecord{i->id, i->name, output, 0, 0, std::nullopt, std::nullopt, clock_.unix_now()};
            b.submitting.reset();
            save();
            common::log::warn(role, ": adopted ", i->provider, ":", i->id, " submitted by an earlier attach of this run");
            return;
        }
        broker::CreateOptions o;
        o.filter = filter_for(b.provider);
        o.filter.offer_id = b.offer_id;
        o.max_attempts = 1;
        o.ssh_private_key = key_path();
        o.run_id = run_id;
        o.role = name_role;
        o.max_lifetime_s = time_s;
        o.wait_ready = false;
        o.batch = broker::BatchScript{body, output, use_gpus, requeue};
        o.on_progress = [&role](const std::string & line) { common::log::info(role, ": ", line); };
        // Before sbatch: a submit that fails after the scheduler took the job (its answer lost, the
        // squeue after it failed) or a crash before the state write leaves finish a job to look for.
        b.submitting = role;
        save();
        auto r = broker_.create(o);
        test_hook(role + ":submitted");  // the scheduler took it; this run has not recorded it yet
        b.jobs[role] = BatchJobRecord{r.instance.id, r.instance.name, output, 0, 0, std::nullopt, std::nullopt, clock_.unix_now()};
        b.submitting.reset();
        if (role == "analysis")  // the run's "instance": what the summary, the cost cap and `broker instances` show
            st().instance = InstanceRecord{.provider = r.instance.provider,
                                           .id = r.instance.id,
                                           .name = r.instance.name,
                                           .price_usd_per_hour = use_gpus ? r.offer.price_usd_per_hour_total : 0.0,
                                           .gpu_model = use_gpus ? r.offer.gpu_model : "",
                                           .gpu_count = use_gpus ? r.offer.gpu_count : 0,
                                           .vram_gb_per_gpu = use_gpus ? r.offer.vram_gb_per_gpu : 0.0,
                                           .created_unix = clock_.unix_now(),
                                           .native_deadline = true,
                                           .ssh = b.login};
        save();
        common::log::info(role, ": submitted ", r.instance.provider, ":", r.instance.id, " (", r.instance.name, ")");
    }

    // Runs `line` on the login node; its stdout (at most `max_bytes`) into `out`, the start of its
    // stderr into `err`. Returns the exit code.
    int exec_read(const std::string & line, size_t max_bytes, std::string & out, std::string & err) {
        return client().exec(
            bifrost::Command::sh(line), {}, [&](std::string_view d) { out.append(d.substr(0, max_bytes - std::min(max_bytes, out.size()))); },
            [&](std::string_view d) { err.append(d.substr(0, 400 - std::min<size_t>(400, err.size()))); });
    }

    // Copies the next bounded chunk of the job's output file into `log`; returns how many bytes
    // arrived. The start line the job prints at each start counts its restarts.
    uint64_t read_batch_output(const std::string & role, JobLog & log) {
        auto & job = st().batch->jobs.at(role);
        constexpr uint64_t kChunk = 4 << 20;
        const std::string f = common::sh_quote(job.output_path);
        std::string data, err;
        if (exec_read("if [ -f " + f + " ]; then tail -c +" + std::to_string(job.offset + 1) + " " + f + " | head -c " +
                          std::to_string(kChunk) + "; fi",
                      kChunk, data, err) != 0)
            throw common::Error(common::ErrorKind::Network, role + ": could not read " + job.output_path + ": " + err);
        log.write(data, [&](const std::string & line) {
            auto r = broker::batch_restart_of(line);
            if (!r) return;
            if (*r > job.restarts) {
                dir_.append({.step = "run", .event = "note", .unix_s = clock_.unix_now(),
                             .message = role + ": the cluster restarted the job (start " + std::to_string(*r + 1) + ")"});
                common::log::warn(role, ": the cluster restarted the job (restart ", *r, ")");
            }
            job.restarts = std::max(job.restarts, *r);
        });
        log.flush();
        job.offset += data.size();
        return data.size();
    }

    // Reads the job's output to its current end.
    void drain_batch_output(const std::string & role, JobLog & log) {
        while (read_batch_output(role, log) > 0 && !common::interrupted()) {
        }
    }

    JobLog batch_log(const std::string & role) {
        return JobLog(dir_.logs_dir(), role + ".log", st().batch->jobs.at(role).offset, role);
    }

    std::optional<int> batch_exit_code(const std::string & role) {
        std::string text, err;
        exec_read("cat " + common::sh_quote(st().batch->jobs.at(role).output_path + ".exit") + " 2>/dev/null | head -c 32", 32, text, err);
        int code = 0;
        auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), code);
        if (ec != std::errc() || p == text.data()) return std::nullopt;
        return code;
    }

    // Follows the job `role` until it ends: its output home from the saved offset at every poll, its
    // state from the scheduler every FlowOptions::scheduler_poll_s (login nodes limit SSH logins).
    // Returns when it completed; throws what its end means (docs in deploy/README.md).
    void follow_batch(const std::string & role, const common::Deadline & deadline, int max_restarts) {
        auto & provider = broker_.provider(st().batch->provider);
        JobLog log = batch_log(role);
        double next_state = 0;
        std::string last_raw;
        while (true) {
            auto & job = st().batch->jobs.at(role);
            std::optional<broker::Instance> now;
            bool asked = false;
            if (clock_.unix_now() >= next_state) {
                now = provider.get(job.id);
                asked = true;
                next_state = clock_.unix_now() + opt_.scheduler_poll_s;
            }
            drain_batch_output(role, log);
            save();
            if (job.restarts > max_restarts) {
                provider.terminate(job.id);
                throw common::Error(common::ErrorKind::RemoteFailed,
                                    role + ": the cluster restarted the job " + std::to_string(job.restarts) + " times; policy.max_requeues is " +
                                        std::to_string(max_restarts) + " (cancelled)");
            }
            if (asked) {
                std::string raw = now ? now->status_raw : "(no longer listed)";
                if (raw != last_raw) {
                    common::log::info(role, ": ", job.id, " ", raw);
                    if (raw == "RUNNING" && role == "analysis" && st().instance && last_raw != "RUNNING")
                        st().instance->created_unix = clock_.unix_now();  // cost counts from the start, not the queue
                    last_raw = raw;
                }
                if (!now || now->status == broker::InstanceStatus::Terminated) {
                    drain_batch_output(role, log);
                    job.end_state = now ? now->status_raw : "";
                    job.exit_code = batch_exit_code(role);
                    save();
                    return require_batch_success(role);
                }
                if (role == "analysis" && st().instance && now->status == broker::InstanceStatus::Running &&
                    over_budget(cfg_.policy, st().instance->price_usd_per_hour,
                                clock_.unix_now() - st().instance->created_unix.value_or(clock_.unix_now())))
                    throw cost_cap_error(role);
            }
            common::throw_if_interrupted();
            if (!deadline.sleep(seconds(opt_.poll_s)))
                throw common::Error(common::ErrorKind::Timeout, role + ": " + job.id + " not ended at the step's deadline of " +
                                                                    common::format_duration(common::to_seconds(deadline.budget())));
        }
    }

    void require_batch_success(const std::string & role) {
        const auto & job = st().batch->jobs.at(role);
        const std::string state = job.end_state.value_or("");
        if (state == "COMPLETED" || (state.empty() && job.exit_code == 0)) return;
        const std::string log_path = dir_.logs_dir() + "/" + role + ".log";
        const std::string tail = "; last lines of " + log_path + ":" + tail_lines(dir_.logs_dir(), role + ".log", 8);
        const std::string code = job.exit_code ? " (exit " + std::to_string(*job.exit_code) + ")" : "";
        auto fail = [&](common::ErrorKind kind, const std::string & what) {
            return common::Error(kind, role + ": " + job.id + " " + (state.empty() ? "ended" : state) + code + ": " + what + tail);
        };
        if (state.empty())
            throw fail(common::ErrorKind::RemoteFailed, job.exit_code ? "the job failed (the scheduler no longer lists it)"
                                                                      : "the scheduler no longer lists the job and it left no exit code");
        switch (broker_.provider(st().batch->provider).batch_end(state)) {
            case broker::BatchEnd::Completed:
                return;
            case broker::BatchEnd::TimedOut:
                throw fail(common::ErrorKind::Timeout, "the cluster stopped it at its time limit (policy.max_duration " +
                                                           common::format_duration(cfg_.policy.max_duration_s) + ")");
            case broker::BatchEnd::NodeFailure:
            case broker::BatchEnd::Preempted:
                throw fail(common::ErrorKind::RemoteFailed,
                           "the cluster ended it (" + std::string(cfg_.policy.max_requeues > 0 ? "and did not restart it"
                                                                                            : "policy.max_requeues is 0: not restarted") +
                               ")");
            case broker::BatchEnd::Cancelled:
                throw fail(common::ErrorKind::RemoteFailed, "cancelled outside this run (scancel by a user or an administrator)");
            case broker::BatchEnd::OutOfMemory:
                throw fail(common::ErrorKind::RemoteFailed, "ran out of memory on its node");
            case broker::BatchEnd::Failed:
            case broker::BatchEnd::Other:
                break;
        }
        throw fail(common::ErrorKind::RemoteFailed, "the job failed");
    }

    // ---- finish (batch): nothing is kept; every job of this run that still runs is cancelled -----
    void finish_batch(StepContext &) {
        if (finished_before_) return;
        finishing_ = true;
        client_.reset();  // reconnect with finish's bounds (client()): a stuck shared directory cannot hold off the cancel
        if (st().batch && st().batch->submitting && !st().batch->jobs.count(*st().batch->submitting)) find_unrecorded_job();
        if (!st().batch || st().batch->jobs.empty()) {
            common::log::info("finish: no job was submitted; nothing to end");
            st().end = EndRecord{.action = "none"};
            save();
            return;
        }
        if (outcome_ != Outcome::Succeeded) salvage_batch();
        EndDecision d = decide(cfg_.policy, outcome_, clock_.unix_now());
        std::string reason = d.action == EndAction::Keep ? "batch jobs are not kept (their files stay in " + st().batch->work_dir + ")"
                                                         : d.reason;
        st().end = EndRecord{.action = "terminate", .reason = reason};
        save();
        bool proven = true;
        std::string last;
        for (auto & [role, job] : st().batch->jobs) {
            auto t = broker_.terminate_and_prove(st().batch->provider, job.id, kProveGone, 2s);
            if (!job.end_state && t.proven) common::log::info("finish: ", role, " job ", job.id, " cancelled");
            proven = proven && t.proven;
            if (!t.proven) last = job.id + ": " + t.last_status;
        }
        st().end->proven_gone = proven;
        st().end->last_status = last.empty() ? "ended" : last;
        st().end->ended_unix = clock_.unix_now();
        save();
        if (!proven)
            throw common::Error(common::ErrorKind::LeakRisk, "finish: a job of this run is not confirmed ended (" + last +
                                                                 "); run: broker instances list --provider " + st().batch->provider);
    }

    // A submit that failed after the scheduler took the job, or a crash before its state write, leaves
    // a job this run never recorded: looked for by its name; one found is recorded and cancelled with
    // the others. A lookup that fails is leak risk, never "no job was submitted".
    void find_unrecorded_job() {
        auto & b = *st().batch;
        const std::string role = *b.submitting;
        const std::string run_id = dir_.instance_run_id();
        const std::string name_role = batch_name_role(role);
        std::optional<broker::Instance> found;
        try {
            found = find_ours(b.provider, run_id, name_role);
        } catch (const common::Error & e) {
            throw common::Error(common::ErrorKind::LeakRisk,
                                "finish: run " + run_id + " (" + dir_.path() + "): its " + role + " job was being submitted to " + b.provider +
                                    " when the run stopped, and the scheduler could not be asked whether it exists (" + e.message() +
                                    "); a job named tk-" + run_id + "-" + name_role + "-dl<deadline> may hold the cluster: run `broker instances list --provider " +
                                    b.provider + "` and cancel it with `broker instances terminate " + b.provider + ":<id> --yes`, or --resume " +
                                    dir_.path() + " once the scheduler answers")
                .with("provider", b.provider)
                .with("run_id", run_id);
        }
        if (found) {
            b.jobs[role] = BatchJobRecord{found->id, found->name, layout().run_dir + "/" + role + ".out", 0, 0, std::nullopt, std::nullopt,
                                          clock_.unix_now()};
            common::log::warn("finish: ", role, " job ", found->provider, ":", found->id, " (", found->name,
                              ") was submitted for this run but never recorded; cancelling it");
        } else {
            common::log::info("finish: no ", role, " job of run ", run_id, " is queued or running on ", b.provider);
        }
        b.submitting.reset();
        save();
    }

    // After a failure or interrupt: the job outputs to their ends, and whatever results exist.
    void salvage_batch() {
        if (host_unreachable_) return;
        try {
            for (const auto & entry : st().batch->jobs) {
                JobLog log = batch_log(entry.first);
                drain_batch_output(entry.first, log);
            }
            save();
            RemoteLayout l = layout();
            if (exec_sh("test -d " + common::sh_quote(l.results_dir)) == 0) client().pull(l.results_dir, dir_.results_dir());
        } catch (const common::Error & e) {
            common::log::warn("finish: could not copy everything home: ", e.message());
            note_remote_failure(e);
        }
    }

    // ---- pull: results home, verified --------------------------------------------------------------
    void pull(StepContext &) {
        RemoteLayout l = layout();
        pulling_ = true;
        client_.reset();  // the pull's connection gets the stall bound (client())
        auto stats = pull_results(l);
        common::log::info("pull: ", stats.files_fetched, " files, ", stats.bytes_fetched / 1024, " KiB");
        std::string outliers;
        for (const auto & e : fs::recursive_directory_iterator(dir_.results_dir()))
            if (e.path().filename() == "outliers.json") outliers = e.path().string();
        if (outliers.empty())
            throw common::Error(common::ErrorKind::RemoteFailed, "pull: no outliers.json among the results in " + dir_.results_dir());
        std::ifstream in(outliers);
        auto j = nlohmann::json::parse(in, nullptr, false);
        if (j.is_discarded()) throw common::Error(common::ErrorKind::RemoteFailed, "pull: " + outliers + " is not valid JSON");
        st().results = ResultsRecord{dir_.results_dir(), outliers};
        save();
        // Where the text came from, beside what was measured on it.
        if (cfg_.data.hub_rows)
            fs::copy_file(data_dir() + "/" + kHubRowsRecordFile, dir_.results_dir() + "/data_source.json", fs::copy_options::overwrite_existing);
        redraw_missing_plots(outliers, opt_.analyze_program);  // the GPU image has no gnuplot
    }

    // The results of a job that succeeded are what the run is for: a connection that drops (or a
    // transfer that stalls) during their pull is retried on a new connection, a few times while the
    // watchdog still keeps the instance (reconnect_window_s), before the run fails and finish applies
    // on_failure. bifrost keeps each unfinished file as NAME.bifrost-part and skips finished ones,
    // so every attempt resumes where the last one stopped; nothing that arrived is deleted.
    bifrost::PullStats pull_results(const RemoteLayout & l) {
        constexpr int kAttempts = 4;
        const double window = reconnect_window_s(cfg_.policy);
        double first_failure = 0;  // the window counts from here: a long pull that drops late still gets it
        for (int attempt = 1;; ++attempt) {
            try {
                // No heartbeat comes while we pull: the watchdog must not end the instance under a retry.
                if (attempt > 1 && st().watchdog) exec_sh("touch " + common::sh_quote(l.heartbeat_file));
                return client().pull(l.results_dir, dir_.results_dir());
            } catch (const common::Error & e) {
                if (e.kind() != common::ErrorKind::Network && e.kind() != common::ErrorKind::Timeout) throw;
                client_.reset();
                if (attempt == 1) first_failure = clock_.unix_now();
                const double spent = clock_.unix_now() - first_failure;
                if (attempt >= kAttempts || spent > window)
                    throw common::Error(common::ErrorKind::Network,
                                        "pull: the connection to the instance failed " + std::to_string(attempt) + " times within " +
                                            common::format_duration(spent) + " (last: " + e.message() +
                                            "); gave up on the results. What arrived is kept in " + dir_.results_dir() +
                                            " (unfinished files end in .bifrost-part); finish tries once more, then applies policy.on_failure");
                common::log::warn("pull: ", e.message(), "; reconnecting to resume the pull (attempt ", attempt + 1, " of ", kAttempts, ")");
                common::Deadline pause(clock_, seconds(2.0 * attempt));
                pause.sleep(pause.budget());
                common::throw_if_interrupted();
            }
        }
    }

    // Finish talks to the host only while it answers: the first connection failure (or an instance
    // the provider reports gone) ends every later remote call of finish at once, instead of each
    // one spending its own reconnect budget on a machine that is not there.
    void enter_finish() {
        finishing_ = true;
        client_.reset();  // the next remote call connects with finish's bounds (client())
        try {
            const auto & in = inst();
            auto now = broker_.provider(in.provider).get(in.id);
            if (!now || now->status == broker::InstanceStatus::Terminated) {
                common::log::info("finish: ", in.ref(), " is already gone; nothing to salvage");
                host_unreachable_ = true;
            }
        } catch (const common::Error & e) {
            common::log::debug("finish: could not ask the provider about the instance: ", e.message());
        }
    }

    void note_remote_failure(const common::Error & e) {
        if (e.kind() == common::ErrorKind::Network || e.kind() == common::ErrorKind::Timeout || e.kind() == common::ErrorKind::Auth) {
            if (!host_unreachable_)
                common::log::warn("finish: no more remote commands on this host (", e.message(), "; policy.stall_timeout is ",
                                  common::format_duration(cfg_.policy.stall_timeout_s), "); going on to end what the run holds, per policy");
            host_unreachable_ = true;
            client_.reset();
        }
    }

    // Finish's remote calls go to a host that has answered this run (ready recorded its endpoint)
    // and has not failed to answer in finish.
    bool may_reach_host() const { return !host_unreachable_ && (client_ || (st().instance && st().instance->ssh)); }

    // A run that did not succeed ends whatever job still runs (a kept instance then sits idle until
    // its TTL). Ctrl-C, the run step's budget, a lost connection, the cost cap: the job did not end
    // on its own, and left running it would go on writing the files salvage pulls.
    void stop_jobs() {
        if (!may_reach_host()) return;
        try {
            for (const auto & j : client().jobs())
                if (j.state == "running" && job_is_ours(j.name)) {  // never another run's job on the same host
                    common::log::info("finish: stopping job ", j.name, " (it did not end on its own)");
                    const auto end = client().kill(j.name, 5);
                    if (auto it = st().jobs.find(j.name); it != st().jobs.end()) {
                        it->second.state = end.state;
                        it->second.exit_code = end.exit_code;
                        save();
                    }
                }
        } catch (const common::Error & e) {
            common::log::warn("finish: could not stop the remote jobs: ", e.message());
            note_remote_failure(e);
        }
    }

    // Best effort after a failure or interrupt: whatever results and logs exist, before any terminate.
    void salvage() {
        if (!may_reach_host()) return;
        try {
            RemoteLayout l = layout();
            if (exec_sh("test -d " + common::sh_quote(l.results_dir)) == 0) client().pull(l.results_dir, dir_.results_dir());
            fs::create_directories(dir_.logs_dir() + "/remote");
            if (exec_sh("test -f " + common::sh_quote(l.run_dir + "/watchdog.log")) == 0)
                client().pull(l.run_dir + "/watchdog.log", dir_.logs_dir() + "/remote");
            for (const auto & j : client().jobs()) {
                if (!job_is_ours(j.name)) continue;  // another run's (or the user's) job on the same host
                auto & job = st().jobs[j.name];
                JobLog log(dir_.logs_dir(), remote_job_role(j.name, dir_.run_id()) + ".log", job.offset, j.name, false);
                job.offset = client().logs(j.name, job.offset, false, [&](std::string_view s) { log.write(s); });
            }
            save();
        } catch (const common::Error & e) {
            common::log::warn("finish: could not pull everything before ending the instance: ", e.message());
            note_remote_failure(e);
        }
    }

    // ---- finish: policy → terminate and prove, or keep with a deadline ----------------------------
    void finish(StepContext & ctx) {
        if (batch_) return finish_batch(ctx);
        if (!st().instance && st().create_intent) find_unrecorded_instance();
        if (!st().instance) {
            common::log::info("finish: no instance was created; nothing to end");
            st().end = EndRecord{.action = "none"};
            save();
            return;
        }
        const InstanceRecord in = inst();
        if (finished_before_) return;  // an earlier attach ended it; --resume only summarises
        enter_finish();
        if (outcome_ != Outcome::Succeeded) {
            stop_jobs();  // before salvage, so what it pulls is no longer being written
            salvage();
        }
        // A kept instance bills on: its watchdog's deadline stops where policy.max_cost_usd is reached.
        // Kept only with a watchdog to end it (none yet after a failure in create, ready or push).
        const double now = clock_.unix_now();
        EndDecision d = decide(cfg_.policy, outcome_, now, cost_cap_unix(cfg_.policy, in.price_usd_per_hour, in.created_unix.value_or(now)),
                               st().watchdog.has_value());
        if (found_unrecorded_)  // nothing was set up on it and no watchdog guards it: never kept
            d = EndDecision{EndAction::Terminate, 0, "terminate: created for this run but never recorded (the create failed)"};
        // A keep's reason is said once the watchdog has (or has not) been moved to its deadline.
        if (d.action == EndAction::Terminate) common::log::info("finish: ", d.reason);
        st().end = EndRecord{.action = std::string(end_action_name(d.action)), .reason = d.reason};
        save();
        if (d.action == EndAction::Keep) {
            bool extended = false;
            if (may_reach_host()) try {
                RemoteLayout l = layout();
                auto w = watchdog_settings();
                w.deadline_unix = d.keep_until_unix;
                w.heartbeat_timeout_s = cfg_.policy.keep_ttl_s;  // nobody heartbeats a kept box
                extended = exec_sh(write_watchdog_conf(l), watchdog_config(w, l)) == 0;
            } catch (const common::Error & e) {
                common::log::warn("finish: could not reset the watchdog for the keep TTL: ", e.message());
                note_remote_failure(e);
            }
            st().end->keep_until_unix = d.keep_until_unix;
            st().end->watchdog_extended = extended;
            if (extended) {
                common::log::info("finish: ", d.reason);
            } else {
                // The keep deadline is enforced by nothing: what ends the instance is what was armed.
                st().end->keep_until_unix = instance_end_unix();
                st().end->reason = keep_not_extended_reason(d.keep_until_unix, *st().end->keep_until_unix);
                common::log::warn("finish: ", *st().end->reason);
            }
            save();
            common::log::warn("finish: ", in.ref(), " kept; end it with: broker instances terminate ", in.ref(), " --yes");
            return;
        }
        // The watchdog stays armed until the instance is proven gone: its deadline moves near instead,
        // so a terminate that cannot be proven below (the API down, an instance that will not go) is
        // still ended by it. (A disarm here left nothing behind such a failure.)
        if (may_reach_host() && st().watchdog) {
            try {
                RemoteLayout l = layout();
                WatchdogSettings w = watchdog_settings();
                w.deadline_unix = std::min(w.deadline_unix, clock_.unix_now() + kTerminateBackstopS);
                exec_sh(write_watchdog_conf(l), watchdog_config(w, l));
            } catch (const common::Error & e) {
                note_remote_failure(e);
            }
        }
        client_.reset();
        auto t = broker_.terminate_and_prove(in.provider, in.id, kProveGone, 2s);
        st().end->proven_gone = t.proven;
        st().end->last_status = t.last_status;
        st().end->ended_unix = clock_.unix_now();
        save();
        if (!t.proven)
            throw common::Error(common::ErrorKind::LeakRisk,
                                "finish: " + in.ref() + ": terminate not confirmed (status " + t.last_status +
                                    "); it may still bill; run: broker instances terminate " + in.ref() + " --yes");
        common::log::info("finish: ", in.ref(), " is gone");
    }

    // A keep whose watchdog could not be moved to the keep deadline (the host did not answer, the
    // write failed): the watchdog still holds what it was armed with, and the deadline in the
    // instance's name stands, so the keep deadline `wanted` ends nothing. `end`: instance_end_unix().
    std::string keep_not_extended_reason(double wanted, double end) {
        const std::string rule = outcome_ == Outcome::Succeeded ? "on_success" : "on_failure";
        const std::string head = rule + ": keep, but the watchdog could not be moved to the keep deadline " + common::format_utc_minute(wanted) + ": ";
        if (st().watchdog && st().watchdog->action != "none")
            return head + "the watchdog ends the instance as it was armed to, " + common::format_duration(st().watchdog->heartbeat_timeout_s) +
                   " after the last heartbeat, or at " + common::format_utc_minute(end) +
                   " at the latest (the earlier of its watchdog's deadline and the one in its name)";
        return head + "its watchdog cannot end it here; it ends at " + common::format_utc_minute(end) +
               " at the latest (the deadline in its name, enforced by `broker sweep` or the provider itself)";
    }

    // A run that already finished: the report is rebuilt from the journal (last event per step).
    int summarize_finished(const common::Output & out) {
        RunReport report;
        std::map<std::string, JournalEvent> last;
        for (const auto & e : dir_.journal()) {
            if (e.event == "start" || e.event == "note" || e.event == "skipped") continue;
            if (!last.count(e.step)) report.steps.push_back({e.step, "", 0});
            last[e.step] = e;
        }
        for (auto & t : report.steps) {
            const auto & e = last[t.name];
            t.outcome = e.event;
            t.duration_s = e.duration_s;
            if (e.event != "failed") continue;
            common::ErrorKind kind = common::kind_from_name(e.kind).value_or(common::ErrorKind::Internal);
            if (t.name == "finish") report.finish_failure = common::Error(kind, e.message);
            else if (!report.first_failure) report.first_failure = common::Error(kind, e.message);
        }
        summarize(report, out);
        return report.exit_code();
    }

    void summarize(const RunReport & report, const common::Output & out) {
        nlohmann::json steps = nlohmann::json::array();
        for (const auto & s : report.steps) steps.push_back({{"step", s.name}, {"outcome", s.outcome}, {"duration_s", s.duration_s}});
        double price = 0, elapsed = 0;
        std::string ref;
        if (st().instance) {
            const auto & i = *st().instance;
            price = i.price_usd_per_hour;
            double end = st().end ? st().end->ended_unix.value_or(clock_.unix_now()) : clock_.unix_now();
            elapsed = end - i.created_unix.value_or(end);
            ref = i.ref();
        }
        nlohmann::json end = st().end ? to_json(*st().end) : nlohmann::json::object();
        nlohmann::json summary{{"run_dir", dir_.path()},
                               {"model", cfg_.model.display_name()},
                               {"instance", ref},
                               {"price_usd_per_hour", price},
                               {"instance_s", elapsed},
                               {"cost_usd", cost_usd(price, elapsed)},
                               {"results_dir", st().results ? st().results->dir : ""},
                               {"end", end},
                               {"exit_code", report.exit_code()},
                               {"steps", steps}};
        const nlohmann::json data = data_summary();
        if (!data.is_null()) summary["data"] = data;  // data.hub_rows only: other summaries as before
        if (out.json()) {
            out.object(summary);
            return;
        }
        out.rows({{"step", "STEP"}, {"outcome", "OUTCOME"}, {"duration_s", "SECONDS"}}, steps);
        std::ostringstream s;
        s << "run " << dir_.path() << ": " << (report.exit_code() == 0 ? "succeeded" : "FAILED (exit " + std::to_string(report.exit_code()) + ")");
        out.text(s.str());
        if (!ref.empty()) {
            char money[96];
            std::snprintf(money, sizeof money, " at $%.2f/h = $%.2f", price, cost_usd(price, elapsed));
            out.text("instance " + ref + ": " + common::format_duration(elapsed) + money + "; " +
                     (st().end ? st().end->reason.value_or("not ended") : std::string("not ended")));
        }
        if (st().results) out.text("results: " + st().results->dir + " (report: analysis/report.md)");
        if (const auto & d = data; d.contains("dataset"))
            out.text("data: " + d["dataset"].get<std::string>() + " (config " + d["config"].get<std::string>() + ", split " +
                     d["split"].get<std::string>() + "): first " + std::to_string(d["rows"].get<uint64_t>()) + " rows, " +
                     std::to_string(d["bytes"].get<uint64_t>()) + " bytes, sha256 " + d["sha256"].get<std::string>().substr(0, 16) +
                     " (" + data_dir() + "/" + kHubRowsRecordFile + ")");
    }

    // The data.hub_rows record (RUN_DIR/data/hub_rows.json) once the data step wrote it; null before,
    // for other sources, or when the file no longer matches what was fetched.
    nlohmann::json data_summary() const {
        if (!cfg_.data.hub_rows || !fs::exists(data_dir() + "/" + kHubRowsRecordFile)) return nullptr;
        try {
            auto r = verify_hub_rows_input(data_dir());
            for (const char * key : {"dataset", "config", "split", "sha256"})
                if (!r.contains(key) || !r[key].is_string()) throw common::Error::usage(data_dir() + "/" + kHubRowsRecordFile + ": no " + key);
            for (const char * key : {"rows", "bytes"})
                if (!r.contains(key) || !r[key].is_number_unsigned()) throw common::Error::usage(data_dir() + "/" + kHubRowsRecordFile + ": no " + key);
            return r;
        } catch (const common::Error & e) {
            common::log::warn("summary: ", e.message());
            return nullptr;
        }
    }

    RunConfig cfg_;
    FlowOptions opt_;
    const bool batch_;  // the providers are a batch scheduler (caps().batch_jobs): batch_steps()
    RunDir dir_;
    broker::Broker broker_;
    common::Clock & clock_;
    std::optional<bifrost::Client> client_;
    std::optional<DownloadSlot> download_slot_;  // from the slot step to the end of the fetch step
    bool finished_before_ = false;
    bool pulling_ = false;            // from the pull step on: remote commands are bounded by policy.stall_timeout
    bool finishing_ = false;          // in finish: remote calls get one short try each
    bool host_unreachable_ = false;   // in finish: the host did not answer (or is gone); stop trying
    bool found_unrecorded_ = false;   // in finish: the instance was found by name after a failed create
    Outcome outcome_ = Outcome::Failed;
};

}  // namespace

namespace {

// state.json is written with run.json, before any step: a run directory whose journal records steps
// but has no state.json lost its record of the instance (a sync tool, a hand clean-up). Resumed,
// the run would rent again or, in finish, find "no instance" and end nothing while one may bill.
void refuse_lost_state(const RunDir & dir) {
    std::error_code ec;
    if (fs::exists(dir.path() + "/state.json", ec) || dir.journal().empty()) return;
    throw common::Error(common::ErrorKind::NotFound,
                        dir.path() + "/state.json: missing, but the journal records steps that ran: the run's record of its instance "
                                     "is lost, so it is not resumed (it could rent a second one, or end nothing while one bills). "
                                     "Look for an instance named tk-" + dir.instance_run_id() +
                                     "-... with `broker instances list` and end it with `broker instances terminate <provider>:<id> --yes`")
        .with("file", dir.path() + "/state.json");
}

}  // namespace

int run_new(const RunConfig & config, const FlowOptions & options, const common::Output & out) {
    validate(config);
    common::Clock & clock = *options.broker.clock;
    std::string run_id = new_run_id(clock.unix_now());
    std::string path = options.run_dir.empty() ? config.output_dir + "/" + run_id : options.run_dir;
    // The instance name allows [a-z0-9]: the config name plus the run id without dashes.
    std::string compact;
    for (char ch : run_id)
        if (ch != '-') compact += ch;
    nlohmann::json info{{"run_id", run_id},
                        {"instance_run_id", config.name.empty() ? compact : config.name + compact.substr(2)},
                        {"config", config_to_json(config)},
                        {"workspace", options.workspace},
                        {"started_unix", clock.unix_now()}};
    // Held until this process ends: a second process driving the same directory refuses.
    common::FileLock lock = lock_run_dir(path);
    RunDir dir = RunDir::create(path, info);
    common::log::info("run ", run_id, ": ", config.model.display_name(), "; run directory ", path,
                      " (resume with: deploy_and_analyze --resume ", path, ")");
    Flow flow(config, options, std::move(dir));
    return flow.run(out);
}

int run_resume(const std::string & run_dir, const FlowOptions & options, const common::Output & out) {
    RunDir dir = RunDir::open(run_dir);
    // A run still to drive is driven by one process at a time (held until this one ends); its state
    // is read again once this process holds it. A finished run is only summarised.
    std::optional<common::FileLock> lock;
    if (!dir.step_done("finish")) {
        lock = lock_run_dir(run_dir);
        dir = RunDir::open(run_dir);
        refuse_lost_state(dir);
    }
    // run_new writes these three; without them the run's remote folder, its instance's name and its
    // config are unknown, and guessing would touch another run's files.
    const std::string info_path = run_dir + "/run.json";
    JsonFields info(dir.run_info(), info_path, "");
    for (const char * key : {"run_id", "instance_run_id"})
        if (info.string(key).empty()) info.fail_missing(key, "the run's id (run.json as deploy_and_analyze writes it)");
    const JsonFields config_json = info.required_object("config");
    RunConfig config = config_from_json(config_json.json(), info_path);
    // A provider name the broker does not know would be refused deep in the flow without naming
    // the file it came from.
    for (const auto & p : config.resources.providers) {
        try {
            (void)broker::provider_caps(p);
        } catch (const common::Error & e) {
            config_json.object("resources").fail("providers", "providers this version knows (" + e.message() + ")", "'" + p.substr(0, 64) + "'");
        }
    }
    FlowOptions o = options;
    if (o.workspace.empty()) o.workspace = dir.workspace();
    if (dir.step_done("finish")) common::log::info("resume: ", run_dir, " already finished; summarising");
    common::log::info("resume: ", run_dir, " (", config.model.display_name(), ")");
    Flow flow(config, o, std::move(dir));
    return flow.run(out);
}

}  // namespace deploy
