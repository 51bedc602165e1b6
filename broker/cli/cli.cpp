// The `broker` program: the only file that includes CLI11. It wires every verb's options struct to
// flags and calls the verb; errors are printed once by common::run_program with their exit code.
#include <CLI/CLI.hpp>

#include "broker/cli/verbs.h"
#include "common/cli_parse.h"
#include "common/log.h"
#include "common/program.h"

using namespace broker::cli;

namespace {

void add_filter_flags(CLI::App * app, FilterFlags & f) {
    app->add_option("--gpu", f.gpu, "GPU model, case-insensitive substring (h100, 4090, a100)");
    app->add_option("--manufacturer", f.manufacturer, "nvidia | amd (case-insensitive)");
    app->add_option("--min-vram", f.min_vram_gb, "minimum VRAM per GPU, GB");
    app->add_option("--gpus", f.gpus, "exact GPU count per instance");
    app->add_option("--max-price", f.max_price, "maximum $/hour for the whole instance");
    app->add_option("--min-ram", f.min_ram, "minimum system RAM (GB, or 64GiB, 128GB)");
    app->add_option("--min-disk", f.min_disk, "minimum disk (GB, or 500GB, 1TiB)");
    app->add_option("--cloud", f.cloud, "secure | community");
    app->add_flag("--spot", f.spot, "interruptible (bid) instances only");
    app->add_flag("--on-demand", f.on_demand, "on-demand instances only (the default)");
    app->add_option("--region", f.region, "region / datacenter substring");
    app->add_option("--provider", f.providers,
                    "runpod | vast | lambda | primeintellect | local | ssh-hosts (repeatable; default: every cloud with a key)");
}

}  // namespace

int main(int argc, char ** argv) {
    common::install_interrupt_handlers();
    GlobalOptions g;
    bool json_errors = false;
    return common::run_program("broker", &json_errors, [&]() -> int {
        CLI::App app{"broker: GPU offers and instances across clouds (RunPod, Vast.ai, Lambda, Prime Intellect, "
                     "local sshd rehearsal, your own SSH hosts)"};
        app.require_subcommand(1);
        app.fallthrough();  // global flags (--json, -v, -q) are accepted after the verb too
        app.footer("Examples:\n"
                   "  broker search --gpu h100 --gpus 1 --max-price 3\n"
                   "  broker create --gpu a100 --min-vram 80 --max-price 2.5 --ssh-key ~/.ssh/id_ed25519\n"
                   "  broker instances list --json\n"
                   "Exit codes: 0 ok, 2 usage, 3 auth, 4 capacity, 5 quota, 6 network, 7 timeout, 8 remote failed,\n"
                   "  9 not found, 10 leak risk (an instance may still bill), 130 interrupted.");
        app.add_flag("--json", g.json, "machine-readable output on stdout (errors as one JSON object on stderr)");
        int verbose = 0;
        bool quiet = false;
        app.add_flag("-v,--verbose", verbose, "more logging on stderr (-vv for debug)");
        app.add_flag("-q,--quiet", quiet, "warnings and errors only");
        app.add_option("--config", g.config, "config file (default $BROKER_CONFIG or $XDG_CONFIG_HOME/toolkit/broker.yaml)");
        app.add_option("--state-dir", g.state_dir, "state directory (default $BROKER_STATE_DIR or $XDG_STATE_HOME/toolkit)");
        app.add_option("--ledger", g.ledger, "ledger database (default $BROKER_LEDGER or <state-dir>/broker-ledger.sqlite)");
        app.add_option("--hosts", g.hosts, "ssh-hosts inventory YAML (default $BROKER_SSH_HOSTS)");
        app.add_option("--poll-interval", g.poll_interval, "readiness/terminate poll interval (5s, 500ms)")
            ->envname("BROKER_POLL_INTERVAL");

        std::function<int()> run;

        SearchOptions search;
        auto * s = app.add_subcommand("search", "list GPU offers across providers, cheapest first");
        add_filter_flags(s, search.filter);
        s->add_option("--sort", search.sort, "price | price-per-gpu | vram | value");
        s->add_option("--limit", search.limit, "rows to show (0: all)");
        s->footer("Examples:\n  broker search --gpu 4090 --gpus 2\n  broker search --manufacturer amd --min-vram 128 --json\n"
                  "  broker search --provider local");
        s->callback([&] { run = [&] { return run_search(g, search, common::Output(g.json ? common::OutputFormat::Json : common::OutputFormat::Table)); }; });

        CreateCliOptions create;
        auto * c = app.add_subcommand("create", "rent an instance and wait until SSH works");
        add_filter_flags(c, create.filter);
        c->add_option("--offer", create.offer, "provider:offer_id, as printed by `broker search`");
        c->add_option("--sort", create.sort, "price | price-per-gpu | vram | value (which offer is tried first)");
        c->add_option("--image", create.image, "container image (RunPod, Vast); Prime picks from the offer's images");
        c->add_option("--disk", create.disk_gb, "container disk, GB");
        c->add_option("--env", create.env, "KEY=VALUE for the instance (repeatable)");
        c->add_option("--ssh-key", create.ssh_key, "private key; KEY.pub is injected (default $BROKER_SSH_KEY or ~/.ssh/id_ed25519)");
        c->add_option("--run-id", create.run_id, "run id in the instance name (lower-case letters and digits; default random)");
        c->add_option("--role", create.role, "role in the instance name (default main)");
        c->add_option("--max-lifetime", create.max_lifetime, "deadline from now (12h); `broker sweep` and RunPod enforce it");
        c->add_option("--ready-timeout", create.ready_timeout, "readiness budget (15m)");
        c->add_option("--max-attempts", create.max_attempts, "offers tried on capacity errors (3)");
        c->add_flag("--no-wait", create.no_wait, "return once the provider accepted the create");
        c->add_flag("--no-gpu-check", create.no_gpu_check, "skip the nvidia-smi GPU count/VRAM check");
        c->footer("Examples:\n  broker create --gpu h100 --gpus 1 --max-price 3\n  broker create --offer vast:123456 --max-price 0.5\n"
                  "  broker create --provider local --ssh-key ~/.ssh/id_ed25519 --no-gpu-check");
        c->callback([&] { run = [&] { return run_create(g, create, common::Output(g.json ? common::OutputFormat::Json : common::OutputFormat::Table)); }; });

        auto * inst = app.add_subcommand("instances", "list, show, terminate, ssh into, stop or start our instances");
        inst->require_subcommand(1);
        InstancesListOptions ilist;
        auto * il = inst->add_subcommand("list", "our instances (named tk-...) on every provider with a key");
        il->add_option("--provider", ilist.providers, "only these providers (repeatable)");
        il->footer("Examples:\n  broker instances list\n  broker instances list --provider runpod --json");
        il->callback([&] { run = [&] { return run_instances_list(g, ilist, common::Output(g.json ? common::OutputFormat::Json : common::OutputFormat::Table)); }; });
        InstancesShowOptions ishow;
        auto * is = inst->add_subcommand("show", "one instance as the provider reports it");
        is->add_option("id", ishow.ref, "provider:id, as printed by `broker instances list`")->required();
        is->footer("Examples:\n  broker instances show runpod:abc123\n  broker instances show vast:7835610 --json");
        is->callback([&] { run = [&] { return run_instances_show(g, ishow, common::Output(g.json ? common::OutputFormat::Json : common::OutputFormat::Table)); }; });
        InstancesTerminateOptions iterm;
        auto * it = inst->add_subcommand("terminate", "terminate and prove it (exit 10 if any may still bill)");
        it->add_option("ids", iterm.refs, "provider:id ...");
        it->add_flag("--all", iterm.all, "every instance of ours on the providers with a key");
        it->add_flag("-y,--yes", iterm.yes, "do not ask for confirmation");
        it->add_option("--provider", iterm.providers, "with --all: only these providers");
        it->add_option("--prove-timeout", iterm.prove_timeout, "how long to re-list before reporting leak risk (2m)");
        it->footer("Examples:\n  broker instances terminate runpod:abc123 --yes\n  broker instances terminate --all --yes");
        it->callback([&] { run = [&] { return run_instances_terminate(g, iterm, common::Output(g.json ? common::OutputFormat::Json : common::OutputFormat::Table)); }; });
        InstancesSshOptions issh;
        auto * ish = inst->add_subcommand("ssh", "open an SSH session (or --print the command)");
        ish->add_option("id", issh.ref, "provider:id")->required();
        ish->add_option("--ssh-key", issh.ssh_key, "private key (default $BROKER_SSH_KEY or ~/.ssh/id_ed25519)");
        ish->add_flag("--print", issh.print, "print the ssh command line instead of running it");
        ish->footer("Examples:\n  broker instances ssh runpod:abc123\n  broker instances ssh lambda:0920582c --print");
        ish->callback([&] { run = [&] { return run_instances_ssh(g, issh, common::Output(g.json ? common::OutputFormat::Json : common::OutputFormat::Table)); }; });
        InstancesPowerOptions istop, istart;
        istart.start = true;
        auto * ist = inst->add_subcommand("stop", "stop (keep the disk; storage may still bill)");
        ist->add_option("id", istop.ref, "provider:id")->required();
        ist->footer("Examples:\n  broker instances stop runpod:abc123");
        ist->callback([&] { run = [&] { return run_instances_power(g, istop, common::Output(g.json ? common::OutputFormat::Json : common::OutputFormat::Table)); }; });
        auto * isa = inst->add_subcommand("start", "start a stopped instance");
        isa->add_option("id", istart.ref, "provider:id")->required();
        isa->footer("Examples:\n  broker instances start runpod:abc123");
        isa->callback([&] { run = [&] { return run_instances_power(g, istart, common::Output(g.json ? common::OutputFormat::Json : common::OutputFormat::Table)); }; });

        SweepCliOptions sweep;
        auto * sw = app.add_subcommand("sweep", "reconcile the ledger with providers; terminate instances past their deadline");
        sw->add_option("--provider", sweep.providers, "only these providers (repeatable)");
        sw->add_flag("--dry-run", sweep.dry_run, "report what would be done");
        sw->footer("Examples:\n  broker sweep\n  broker sweep --dry-run --json");
        sw->callback([&] { run = [&] { return run_sweep(g, sweep, common::Output(g.json ? common::OutputFormat::Json : common::OutputFormat::Table)); }; });

        InitOptions init;
        auto * in = app.add_subcommand("init", "write the config file (mode 0600) from the API keys in the environment");
        in->add_flag("--force", init.force, "rewrite an existing file");
        in->footer("Examples:\n  RUNPOD_API_KEY=... broker init\n  broker init --config ./broker.yaml --force");
        in->callback([&] { run = [&] { return run_init(g, init, common::Output(g.json ? common::OutputFormat::Json : common::OutputFormat::Table)); }; });

        ProvidersListOptions plist;
        auto * pv = app.add_subcommand("providers", "the providers this broker knows and whether a key is configured");
        pv->footer("Examples:\n  broker providers\n  broker providers --json");
        pv->callback([&] { run = [&] { return run_providers_list(g, plist, common::Output(g.json ? common::OutputFormat::Json : common::OutputFormat::Table)); }; });

        if (auto done = common::parse_command_line(app, argc, argv, "broker", [&] { json_errors = g.json; })) return *done;
        json_errors = g.json;
        common::log::set_verbosity(verbose, quiet);
        if (!run) throw common::Error::usage("no command; see broker --help");
        return run();
    });
}
