// The deploy_and_analyze command line (the only CLI11 translation unit of this program).
//   deploy_and_analyze                               the rehearsal (local provider, no cloud account)
//   deploy_and_analyze --config configs/qwen3-30b-a3b.yaml [--gpu-count 2 ...]
//   deploy_and_analyze --resume runs/<run id>
//   deploy_and_analyze --sweep configs/sweeps/predecessor-moe.yaml [--max-price 12 ...] [--dry-run]
// Flags override the config; the predecessor's names are kept (--model, --gpu-count, --gpu-filter,
// --min-vram, --min-cpu-ram, --num-sequences, --keep-running). With --sweep the flags that mean the
// same for every member apply to each (after the sweep file); those that size or name one run are
// refused. A flag the chosen mode would not use is refused naming it (exit 2), never ignored.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "broker/registry.h"
#include "common/cli_parse.h"
#include "common/error.h"
#include "common/log.h"
#include "common/output.h"
#include "common/program.h"
#include "common/units.h"
#include "deploy/flow.h"
#include "deploy/run_config.h"
#include "deploy/run_dir.h"
#include "deploy/sweep.h"

namespace fs = std::filesystem;

namespace {

const char * kHelp =
    "Find a machine that fits the model, run the outlier analysis there, bring the results home, and stop paying.\n"
    "Every step is logged with its duration in a run directory; Ctrl-C stops cleanly and applies the policy;\n"
    "if this process dies, the instance still ends (provider deadline, on-instance watchdog, `broker sweep`).\n\n"
    "Examples:\n"
    "  deploy_and_analyze                                   # rehearsal on this machine (configs/rehearsal.yaml defaults)\n"
    "  deploy_and_analyze --config configs/qwen3-30b-a3b.yaml --max-price 3   # cheapest fit on every cloud with a key\n"
    "  deploy_and_analyze --config configs/qwen3-30b-a3b.yaml --dry-run       # the offer, time and cost bound; rents nothing\n"
    "  deploy_and_analyze --sweep configs/sweeps/predecessor-moe.yaml --max-price 2 --dry-run   # flags apply to every member\n"
    "  deploy_and_analyze --resume runs/20261122-041946-a1b2";

// The providers broker knows, for --help (deploy itself names none).
std::string provider_names() {
    std::string out;
    for (const auto & p : broker::provider_table()) out += (out.empty() ? "" : ", ") + std::string(p.name);
    return out;
}

// A program next to this one in the build tree (build/deploy/.. → build/<folder>/<name>), else on
// PATH: `broker` (the local rehearsal's watchdog ends its instance with it) and `analyze` (the sweep report).
std::string find_sibling_program(const std::string & folder, const std::string & name) {
    std::error_code ec;
    fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        fs::path sibling = self.parent_path().parent_path() / folder / name;
        if (fs::exists(sibling, ec)) return sibling.string();
        fs::path same_dir = self.parent_path() / name;
        if (fs::exists(same_dir, ec)) return same_dir.string();
    }
    const char * path = std::getenv("PATH");
    std::string p = path ? path : "";
    size_t start = 0;
    while (start <= p.size()) {
        size_t end = p.find(':', start);
        std::string dir = p.substr(start, end == std::string::npos ? std::string::npos : end - start);
        if (!dir.empty() && ::access((dir + "/" + name).c_str(), X_OK) == 0) return dir + "/" + name;
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return "";
}

// Flags of one run's config that mean the same for every member of a sweep: applied to each member
// after the sweep file (apply_sweep_overrides), and passed on to every member process.
const std::vector<std::string> kEveryMemberFlags{"--provider",    "--gpu-filter",  "--max-price",       "--max-cost",
                                                  "--max-duration", "--keep-running", "--on-success",     "--on-failure",
                                                  "--num-sequences", "--sequence-length", "--batch-size", "--threshold"};
// Flags that size one model or name one run: a sweep's members differ in them (refused with --sweep).
const std::vector<std::string> kOneRunFlags{"--model", "--name", "--gpu-count", "--min-vram", "--min-cpu-ram", "--offload-gb"};
// Where the programs and the broker state are: used by every mode that runs something.
const std::vector<std::string> kEnvironmentFlags{"--workspace", "--ssh-key", "--remote-cache", "--state-dir",
                                                  "--ledger",    "--scheduler-poll", "--no-gpu-check"};
// What a sweep gives each member process itself (and a test gives one run).
const std::vector<std::string> kOneProcessFlags{"--run-dir", "--download-slots", "--test-sigkill-at-step"};

std::vector<std::string> flags_of(std::initializer_list<const std::vector<std::string> *> groups, std::initializer_list<const char *> more = {}) {
    std::vector<std::string> all{"--json", "--verbose", "--quiet"};
    for (const auto * g : groups) all.insert(all.end(), g->begin(), g->end());
    all.insert(all.end(), more.begin(), more.end());
    return all;
}

std::string long_name(const CLI::Option * o) { return o->get_lnames().empty() ? o->get_name() : "--" + o->get_lnames().front(); }

bool given(const CLI::App & app, const std::string & flag) { return app.get_option(flag)->count() > 0; }

// The flags of `flags` that were given, joined for a message ("" when none).
std::string given_among(const CLI::App & app, const std::vector<std::string> & flags) {
    std::string list;
    for (const auto & f : flags)
        if (given(app, f)) list += (list.empty() ? "" : ", ") + f;
    return list;
}

// Every flag given outside `allowed` is refused (usage, exit 2), naming each: a flag this mode would
// not use must not be dropped in silence (a --max-price the run then ignores rents at any price).
void refuse_unused(const CLI::App & app, const std::vector<std::string> & allowed, const std::string & mode) {
    std::string list;
    for (const CLI::Option * o : app.get_options()) {
        if (o->count() == 0 || o->get_lnames().empty()) continue;
        const std::string name = long_name(o);
        if (name == "--help" || std::find(allowed.begin(), allowed.end(), name) != allowed.end()) continue;
        list += (list.empty() ? "" : ", ") + name;
    }
    if (!list.empty()) throw common::Error::usage(list + ": not used " + mode + "; nothing was run");
}

// The given flags of `flags` as they were given ("--max-price 12 --provider a --provider b"), to pass
// on to each member process and to show in the plan.
std::vector<std::string> given_args(const CLI::App & app, const std::vector<std::string> & flags, const deploy::Overrides & o) {
    std::vector<std::string> args;
    for (const auto & f : flags) {
        const CLI::Option * opt = app.get_option(f);
        if (opt->count() == 0) continue;
        if (f == "--keep-running") {  // a flag: `--keep-running=false` is no change
            if (o.keep_running) args.push_back(f);
            continue;
        }
        for (const auto & v : opt->results()) args.insert(args.end(), {f, v});
    }
    return args;
}

// Only the field of `o` that `flag` sets (for naming which flags would change a resumed run).
deploy::Overrides only(const deploy::Overrides & o, const std::string & flag) {
    deploy::Overrides one;
    if (flag == "--model") one.model = o.model;
    if (flag == "--name") one.name = o.name;
    if (flag == "--gpu-count") one.gpu_count = o.gpu_count;
    if (flag == "--gpu-filter") one.gpu_filter = o.gpu_filter;
    if (flag == "--min-vram") one.min_vram_gb = o.min_vram_gb;
    if (flag == "--min-cpu-ram") one.min_cpu_ram_gb = o.min_cpu_ram_gb;
    if (flag == "--offload-gb") one.offload_gb = o.offload_gb;
    if (flag == "--max-price") one.max_price = o.max_price;
    if (flag == "--num-sequences") one.num_sequences = o.num_sequences;
    if (flag == "--sequence-length") one.sequence_length = o.sequence_length;
    if (flag == "--batch-size") one.batch_size = o.batch_size;
    if (flag == "--threshold") one.threshold = o.threshold;
    if (flag == "--provider") one.providers = o.providers;
    if (flag == "--keep-running") one.keep_running = o.keep_running;
    if (flag == "--on-success") one.on_success = o.on_success;
    if (flag == "--on-failure") one.on_failure = o.on_failure;
    if (flag == "--max-duration") one.max_duration = o.max_duration;
    if (flag == "--max-cost") one.max_cost_usd = o.max_cost_usd;
    return one;
}

// A resumed run keeps the config it started with (RUN_DIR/run.json). Config flags given with
// --resume that agree with it are accepted (a sweep passes every member process the same flags,
// whether it starts or resumes it); one that would change it is refused, naming it.
void refuse_changed_config(const CLI::App & app, const std::string & run_dir, const deploy::Overrides & o, bool min_vram_auto) {
    std::vector<std::string> flags = kEveryMemberFlags;
    flags.insert(flags.end(), kOneRunFlags.begin(), kOneRunFlags.end());
    if (given_among(app, flags).empty()) return;
    deploy::RunDir dir = deploy::RunDir::open(run_dir);
    const auto & info = dir.run_info();
    if (!info.contains("config") || !info["config"].is_object()) return;  // run_resume refuses it, naming run.json
    const deploy::RunConfig stored = deploy::config_from_json(info["config"], run_dir + "/run.json");
    const nlohmann::json before = deploy::config_to_json(stored);
    std::string changed;
    for (const auto & f : flags) {
        if (!given(app, f)) continue;
        deploy::RunConfig c = stored;
        if (f == "--min-vram" && min_vram_auto) c.resources.min_vram_gb.reset();
        deploy::apply_overrides(c, only(o, f));
        if (deploy::config_to_json(c) != before) changed += (changed.empty() ? "" : ", ") + f;
    }
    if (!changed.empty())
        throw common::Error::usage("--resume " + run_dir + ": " + changed +
                                   " would change the run's config; a resumed run keeps the one it started with (run.json). "
                                   "Start a new run for other settings");
}

}  // namespace

int main(int argc, char ** argv) {
    bool json = false;
    return common::run_program("deploy_and_analyze", &json, [&]() -> int {
        // A closed terminal must not end a run between renting a machine and ending it.
        common::install_interrupt_handlers(common::OnHangup::Continue);
        CLI::App app{kHelp};
        std::string config_path, resume, run_dir, workspace = TOOLKIT_SOURCE_DIR, ssh_key, remote_cache, state_dir, ledger;
        std::string min_vram;
        int verbose = 0;
        bool quiet = false;
        deploy::Overrides o;
        app.add_option("--config", config_path, "Run config YAML (configs/*.yaml); default: the built-in rehearsal");
        app.add_option("--resume", resume, "Reattach to a run directory (as printed at the start of a run)");
        std::string sweep_path;
        bool dry_run = false;
        int max_parallel = 0;
        app.add_option("--sweep", sweep_path, "Sweep file (configs/sweeps/*.yaml): many run configs as one study");
        app.add_flag("--dry-run", dry_run,
                     "Print the plan (offer, memory, time and cost bounds) per sweep member with --sweep, or for the one run of --config; rent nothing");
        app.add_option("--max-parallel", max_parallel, "With --sweep: members running at once (default: the file's sweep.max_parallel)")
            ->check(CLI::Range(1, 32));
        bool fail_fast = false, retry_failed = false;
        std::string member;
        app.add_flag("--fail-fast", fail_fast, "With --sweep: the first failed member stops the others");
        app.add_flag("--retry-failed", retry_failed, "With --sweep: run the members that failed before again (others that finished are kept)");
        bool report_only = false;
        app.add_flag("--report", report_only, "With --sweep: (re)write the combined report <sweep dir>/report.md from the members' results; run nothing");
        app.add_option("--member", member, "With --sweep: run this one member (how the sweep starts each member)");
        app.add_option("--run-dir", run_dir, "Run directory to create (default: <output_dir>/<run id>)");
        app.add_option("--model", o.model, "Hugging Face id (Qwen/Qwen3-30B-A3B) or a local checkpoint directory");
        app.add_option("--gpu-count", o.gpu_count, "GPUs per instance");
        app.add_option("--gpu-filter", o.gpu_filter, "GPU model substring (A100, H100)");
        app.add_option("--min-vram", min_vram, "Minimum VRAM per GPU in GB, or auto");
        app.add_option("--min-cpu-ram", o.min_cpu_ram_gb, "Minimum system RAM in GB");
        app.add_option("--offload-gb", o.offload_gb,
                       "GB of layers kept in pinned host memory and streamed to the GPU (a model larger than the GPUs on fewer GPUs); 0 = none");
        app.add_option("--max-price", o.max_price, "Maximum $/hour for the whole instance");
        app.add_option("--num-sequences", o.num_sequences, "Sequences to run");
        app.add_option("--sequence-length", o.sequence_length, "Tokens per sequence");
        app.add_option("--batch-size", o.batch_size, "Sequences per forward pass");
        app.add_option("--threshold", o.threshold, "Outlier magnitude threshold");
        app.add_option("--provider", o.providers, "Provider, in order of preference (repeatable): " + provider_names());
        app.add_flag("--keep-running", o.keep_running, "Keep the instance after success and failure (each for policy.keep_ttl)");
        app.add_option("--on-success", o.on_success, "terminate | keep");
        app.add_option("--on-failure", o.on_failure, "terminate | keep");
        app.add_option("--max-duration", o.max_duration, "Longest the run may take (3h, 90m)");
        app.add_option("--max-cost", o.max_cost_usd, "Dollar cap for the instance (price x time)");
        app.add_option("--output-dir", o.output_dir,
                       "Parent folder of run directories (default runs); with --sweep, of the sweep's directory (default: the file's sweep.output_dir)");
        app.add_option("--name", o.name, "Run name (lower-case letters and digits; part of the instance name)");
        app.add_option("--workspace", workspace, "Source tree pushed to the instance (default: this build's source tree)");
        app.add_option("--ssh-key", ssh_key, "Private key for the instance (default: a fresh key per run)");
        app.add_option("--remote-cache", remote_cache, "Build/model cache folder on the instance");
        app.add_option("--state-dir", state_dir, "broker state directory (default $BROKER_STATE_DIR)");
        app.add_option("--ledger", ledger, "broker ledger (default $BROKER_LEDGER)");
        double scheduler_poll_s = 10;
        app.add_option("--scheduler-poll", scheduler_poll_s, "Batch schedulers: seconds between job state queries (default 10)")
            ->check(CLI::Range(0.1, 600.0));
        bool no_gpu_check = false;
        app.add_flag("--no-gpu-check", no_gpu_check, "Skip the nvidia-smi GPU count/VRAM check at readiness");
        app.add_flag("--json", json, "Summary (and errors) as JSON");
        app.add_flag("-v,--verbose", verbose, "More logging");
        app.add_flag("-q,--quiet", quiet, "Warnings and errors only");
        std::string test_kill_at;
        app.add_option("--test-sigkill-at-step", test_kill_at, "Testing: SIGKILL this process when the named step starts")->group("");
        std::string download_slots;
        app.add_option("--download-slots", download_slots, "DIR:N: hold one of N download slots in DIR while fetching (how a sweep caps downloads)")
            ->group("");
        if (auto done = common::parse_command_line(app, argc, argv, "deploy_and_analyze")) return *done;
        common::log::set_verbosity(verbose, quiet);
        common::Output out(json ? common::OutputFormat::Json : common::OutputFormat::Table);

        deploy::FlowOptions fo;
        fo.workspace = workspace;
        fo.run_dir = run_dir;
        fo.ssh_key = ssh_key;
        fo.remote_cache_dir = remote_cache;
        fo.broker.state_dir = state_dir;
        fo.broker.ledger_path = ledger;
        fo.broker_program = find_sibling_program("broker", "broker");
        fo.analyze_program = find_sibling_program("analysis", "analyze");
        fo.stop_after_step_started = test_kill_at;
        fo.gpu_check = !no_gpu_check;
        fo.scheduler_poll_s = scheduler_poll_s;
        if (!download_slots.empty()) fo.download_slots = deploy::parse_download_slots(download_slots);

        bool min_vram_auto = false;
        if (!min_vram.empty()) {
            if (min_vram == "auto") min_vram_auto = true;
            else {
                try {
                    o.min_vram_gb = std::stod(min_vram);
                } catch (const std::exception &) {
                    throw common::Error::usage("--min-vram: '" + min_vram + "' is not a number of GB or auto");
                }
            }
        }

        if (!sweep_path.empty()) {
            if (!config_path.empty() || !resume.empty())
                throw common::Error::usage("--sweep: give the sweep file alone (each member's config is in it)");
            if (auto list = given_among(app, kOneRunFlags); !list.empty())
                throw common::Error::usage(list + ": cannot go with --sweep: each sizes or names one run, and the members differ; set it on the "
                                                  "member in " + sweep_path);
            if (dry_run && report_only) throw common::Error::usage("--dry-run and --report: give one");
            if (dry_run)
                refuse_unused(app, flags_of({&kEveryMemberFlags}, {"--sweep", "--dry-run", "--max-parallel", "--output-dir", "--state-dir", "--ledger"}),
                              "with --sweep --dry-run");
            else if (report_only)
                refuse_unused(app, flags_of({}, {"--sweep", "--report", "--output-dir"}),
                              "with --sweep --report (the report reads the members' results; --output-dir finds the sweep directory)");
            else if (!member.empty())
                refuse_unused(app, flags_of({&kEveryMemberFlags, &kEnvironmentFlags, &kOneProcessFlags}, {"--sweep", "--member", "--output-dir"}),
                              "with --sweep --member (one member runs)");
            else
                refuse_unused(app,
                              flags_of({&kEveryMemberFlags, &kEnvironmentFlags},
                                       {"--sweep", "--max-parallel", "--fail-fast", "--retry-failed", "--output-dir"}),
                              "with --sweep (the sweep gives each member its own --run-dir)");
            deploy::SweepFile sweep = deploy::load_sweep(sweep_path);  // every member checked before anything is rented
            if (max_parallel > 0) sweep.max_parallel = max_parallel;
            // The command line wins over the file for every member, in this process and in each
            // member's (the flags are passed on below); --output-dir moves the sweep directory.
            const std::vector<std::string> every = given_args(app, kEveryMemberFlags, o);
            std::vector<std::string> shown = every;
            if (o.output_dir) shown.insert(shown.end(), {"--output-dir", *o.output_dir});
            deploy::apply_sweep_overrides(sweep, o, shown);
            if (dry_run) {
                broker::Broker broker(fo.broker);
                deploy::print_sweep_plan(deploy::plan_sweep(sweep, broker), out);
                return 0;
            }
            if (report_only) {
                std::string analyze = find_sibling_program("analysis", "analyze");
                if (analyze.empty()) throw common::Error::usage("--report: no analyze program next to this one or on PATH");
                out.text("report: " + deploy::write_sweep_report(sweep, analyze));
                return 0;
            }
            deploy::refuse_blocked(sweep);
            if (!member.empty()) {  // one member, as an ordinary single run
                for (const auto & m : sweep.members)
                    if (m.id == member) return deploy::run_new(m.config, fo, out);
                throw common::Error::usage("--member " + member + ": no such member in " + sweep_path);
            }
            if (!fs::exists(fo.workspace + "/deploy/remote/bootstrap.sh"))
                throw common::Error::usage("--workspace " + fo.workspace + ": not the toolkit's source tree (no deploy/remote/bootstrap.sh)");
            deploy::SweepRunOptions so;
            std::error_code ec;
            so.program = fs::read_symlink("/proc/self/exe", ec).string();
            if (ec) throw common::Error(common::ErrorKind::Internal, "cannot find this program's path: " + ec.message());
            so.child_args = {"--workspace", fs::absolute(workspace).string()};
            auto pass = [&](const char * flag, const std::string & v) {
                if (!v.empty()) so.child_args.insert(so.child_args.end(), {flag, v});
            };
            pass("--state-dir", state_dir);
            pass("--ledger", ledger);
            pass("--ssh-key", ssh_key);
            pass("--remote-cache", remote_cache);
            if (no_gpu_check) so.child_args.push_back("--no-gpu-check");
            so.child_args.insert(so.child_args.end(), {"--scheduler-poll", std::to_string(scheduler_poll_s)});
            for (int i = 0; i < verbose; ++i) so.child_args.push_back("-v");
            // A member started anew applies them after the sweep file as this process did; one
            // resumed keeps its run.json, and refuses them only where they would change it.
            so.child_args.insert(so.child_args.end(), every.begin(), every.end());
            so.fail_fast = fail_fast;
            so.retry_failed = retry_failed;
            so.live = !json && ::isatty(1);
            so.analyze_program = find_sibling_program("analysis", "analyze");
            if (so.analyze_program.empty()) common::log::warn("sweep: no analyze program next to this one or on PATH; no combined report");
            return deploy::run_sweep(sweep, so, out);
        }
        if (auto list = given_among(app, {"--member", "--fail-fast", "--retry-failed", "--max-parallel", "--report"}); !list.empty())
            throw common::Error::usage(list + ": only with --sweep");
        std::vector<std::string> config_flags = kEveryMemberFlags;
        config_flags.insert(config_flags.end(), kOneRunFlags.begin(), kOneRunFlags.end());
        if (!resume.empty()) {
            if (!config_path.empty()) throw common::Error::usage("--resume and --config: give one (a resumed run keeps its config)");
            refuse_unused(app, flags_of({&config_flags, &kEnvironmentFlags}, {"--resume", "--download-slots", "--test-sigkill-at-step"}),
                          "with --resume (a resumed run keeps its run directory and config)");
            refuse_changed_config(app, resume, o, min_vram_auto);
            return deploy::run_resume(resume, fo, out);
        }
        if (dry_run)
            refuse_unused(app, flags_of({&config_flags}, {"--config", "--dry-run", "--output-dir", "--state-dir", "--ledger"}), "with --dry-run");
        deploy::RunConfig cfg = config_path.empty() ? deploy::rehearsal_defaults() : deploy::load_run_config(config_path);
        if (min_vram_auto) cfg.resources.min_vram_gb.reset();
        deploy::apply_overrides(cfg, o);
        deploy::validate(cfg);  // before anything is rented
        if (dry_run) {  // the plan a sweep's dry run makes, for this one run
            broker::Broker broker(fo.broker);
            deploy::print_sweep_plan(deploy::plan_run(cfg, broker), out);
            return 0;
        }
        if (!fs::exists(fo.workspace + "/deploy/remote/bootstrap.sh"))
            throw common::Error::usage("--workspace " + fo.workspace + ": not the toolkit's source tree (no deploy/remote/bootstrap.sh)");
        return deploy::run_new(cfg, fo, out);
    });
}
