// The sweep's combined report (see sweep.h): what each member's run directory holds (results,
// inspect.json, state.json, journal), compared by `analyze compare`, the same program a user runs
// by hand. Everything read here came from an instance: sizes are bounded and text that reaches the
// Markdown is reduced to a safe alphabet.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <tuple>

#include "broker/instance.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/gnuplot.h"
#include "common/log.h"
#include "common/regular_file.h"
#include "common/subprocess.h"
#include "deploy/run_dir.h"
#include "deploy/sweep.h"

namespace fs = std::filesystem;

namespace deploy {

namespace {

std::string safe(const std::string & text) {
    std::string s;
    for (char ch : text.substr(0, 80))
        s += (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.' || ch == '/' || ch == ':') ? ch : '_';
    return s;
}

std::string fixed(double v, int digits) {
    char b[48];
    std::snprintf(b, sizeof b, "%.*f", digits, v);
    return b;
}

std::string billions(double v) { return v >= 1e8 ? fixed(v / 1e9, 2) + "B" : fixed(v / 1e6, 2) + "M"; }

// `analyze compare`'s comparison.md, embedded in the report: bounded before it is read (a file in
// the sweep folder can be replaced by anything), and absent or refused reads as empty.
std::string read_text(const std::string & path) {
    try {
        return common::read_regular_file(path, 1u << 20, "comparison report");
    } catch (const common::Error & e) {
        common::log::warn("sweep report: ", e.message(), "; left out of the report");
        return "";
    }
}

// comparison.md from `analyze compare`, its title dropped and image links made relative to the report.
std::string embed(const std::string & md, const std::string & rel_dir) {
    std::istringstream in(md);
    std::string line, out;
    while (std::getline(in, line)) {
        if (line.rfind("# ", 0) == 0) continue;
        if (line.rfind("![](", 0) == 0) line = "![](" + rel_dir + "/" + line.substr(4);
        out += line + "\n";
    }
    return out;
}

// The overall perplexity a result records ("perplexity": {"overall": {"perplexity": x}}), if any.
std::optional<double> measured_perplexity(const nlohmann::json & result) {
    if (!result.is_object() || !result.contains("perplexity") || !result["perplexity"].is_object()) return std::nullopt;
    const auto & o = result["perplexity"];
    if (!o.contains("overall") || !o["overall"].is_object()) return std::nullopt;
    const auto & v = o["overall"];
    if (!v.contains("perplexity") || !v["perplexity"].is_number()) return std::nullopt;
    double x = v["perplexity"].get<double>();
    return std::isfinite(x) && x > 0 ? std::optional<double>(x) : std::nullopt;
}

double unix_now() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

// A program's error message (analyze compare's stderr, which quotes member files) as an indented
// Markdown code block: printable ASCII only, no backquotes, bounded, every line indented so nothing
// in it can end the block or become a link, table or heading.
std::string quoted_block(const std::string & text) {
    std::string clean;
    for (char ch : text.substr(0, 4000)) {
        const auto u = static_cast<unsigned char>(ch);
        if (ch == '\n') clean += ch;
        else if (u >= 0x20 && u < 0x7f && ch != '`') clean += ch;
        else if (ch == '\t') clean += ' ';
    }
    std::istringstream in(clean);
    std::string line, out;
    for (int n = 0; std::getline(in, line) && n < 20; ++n)
        if (!line.empty()) out += "    " + line + "\n";
    return out.empty() ? "    (no message)\n" : out;
}

// The earliest moment known to end an instance that no recorded end proves gone, and what sets it:
// the deadline in its name (RunPod enforces it as terminateAfter, `broker sweep` for every provider),
// its watchdog's deadline from state.json, and a keep deadline. A kept instance whose watchdog was
// reset to the keep deadline (watchdog_extended) no longer has the watchdog's first deadline; one
// whose reset failed keeps it. The sweep's budget (sweep_run.cpp, observe) applies the same rule to
// the member's state.json as it reads it. nullopt: nothing known ends it.
struct KnownEnd {
    double unix_s = 0;
    std::string what;  // "its name's deadline 2026-12-07 11:03 UTC"
};
std::optional<KnownEnd> earliest_known_end(const RunState & st) {
    std::optional<KnownEnd> best;
    auto consider = [&](double t, const char * what) {
        if (t > 0 && (!best || t < best->unix_s)) best = KnownEnd{t, std::string(what) + " " + common::format_utc_minute(t)};
    };
    if (!st.instance) return best;
    if (auto n = broker::parse_instance_name(st.instance->name)) consider(static_cast<double>(n->deadline_unix), "its name's deadline");
    const auto & end = st.end;
    const bool keep_moved_watchdog = end && end->keep_until_unix && end->watchdog_extended.value_or(false);
    if (st.watchdog && !keep_moved_watchdog) consider(st.watchdog->deadline_unix, "its watchdog's deadline");
    if (end && end->keep_until_unix) consider(*end->keep_until_unix, "its keep deadline");
    return best;
}

// The analysis modes `analyze compare` can compare, in the order one is preferred.
constexpr const char * kCompareModes[] = {"predecessor", "paper"};

struct SweepPlots {
    std::vector<std::string> files;  // bare names written
    std::string skipped;             // why none (no gnuplot, gnuplot failed, nothing to plot)
};

// Runs gnuplot on the job in a private folder and moves the plots into `dir` (common::run_gnuplot).
SweepPlots render_sweep_plots(const SweepPlotJob & job, const std::string & dir) {
    SweepPlots out;
    if (job.outputs.empty()) {
        out.skipped = "nothing to plot";
        return out;
    }
    try {
        auto r = common::run_gnuplot(job.script, job.data_files, job.outputs, dir);
        out.skipped = r.skipped_reason;
        for (const auto & path : r.files) out.files.push_back(fs::path(path).filename().string());
    } catch (const common::Error & e) {
        out.skipped = "cannot create " + dir + " (" + e.message() + ")";
    }
    return out;
}

}  // namespace

// The plots are made as analysis/plots.cpp makes its own: the script holds only our text and
// numbers we format; every member-derived text (the labels) is in the tab-separated data files,
// which gnuplot reads with its data reader only (xtic(1), `with labels`), never as code.
SweepPlotJob sweep_plot_job(const nlohmann::json & table) {
    SweepPlotJob job;
    auto num = [](const nlohmann::json & t, const char * key) {
        char b[64];
        std::snprintf(b, sizeof b, "%.9g", t[key].get<double>());
        return std::string(b);
    };
    auto has = [](const nlohmann::json & t, const char * key) {
        return t.is_object() && t.contains(key) && t[key].is_number() && std::isfinite(t[key].get<double>());
    };
    auto label = [](const nlohmann::json & t) { return safe(t.is_object() && t.contains("label") && t["label"].is_string() ? t["label"].get<std::string>() : "?"); };
    auto add = [&](const std::string & name, const std::string & body) {
        common::add_gnuplot_png_svg(job.script, job.outputs, name, body, 1000, 600);
    };
    // Bars per member: cost and wall time.
    for (const auto & [key, name, ylabel] : {std::tuple<const char *, const char *, const char *>{"cost_usd", "cost_per_model", "cost (USD)"},
                                             {"wall_s", "wall_time_per_model", "wall time (s)"}}) {
        std::string rows;
        for (const auto & t : table)
            if (has(t, key)) rows += label(t) + "\t" + num(t, key) + "\n";
        if (rows.empty()) continue;
        std::string file = std::string(name) + ".dat";
        job.data_files.emplace_back(file, rows);
        add(name, std::string("set style fill solid 0.6\nset boxwidth 0.6\nset yrange [0:*]\nset grid ytics\nset key off\nset xtics rotate by -30\n") +
                      "set ylabel \"" + ylabel + "\"\nset title \"" + ylabel + " per model\"\nplot \"" + file + "\" using 0:2:xtic(1) with boxes");
    }
    // Median layer % and median sequence % against total and active parameters.
    for (const auto & [key, name, xlabel] :
         {std::tuple<const char *, const char *, const char *>{"params", "median_pct_vs_total", "total parameters"},
          {"params_active", "median_pct_vs_active", "active parameters (per token)"}}) {
        std::string rows;
        for (const auto & t : table)
            if (has(t, key) && t[key].get<double>() > 0 && has(t, "median_layer_pct") && has(t, "median_position_pct"))
                rows += num(t, key) + "\t" + num(t, "median_layer_pct") + "\t" + num(t, "median_position_pct") + "\t" + label(t) + "\n";
        if (rows.empty()) continue;
        std::string file = std::string(name) + ".dat";
        job.data_files.emplace_back(file, rows);
        add(name, std::string("set logscale x\nset grid\nset yrange [0:100]\nset offsets graph 0.05, graph 0.15, 0, 0\nset key top left\n") +
                      "set xlabel \"" + xlabel + "\"\nset ylabel \"percent\"\nset title \"median layer % and median sequence % vs " + xlabel +
                      "\"\nplot \"" + file + "\" using 1:2 with points pt 7 ps 1.5 title \"median layer %\", \"" + file +
                      "\" using 1:3 with points pt 5 ps 1.5 title \"median sequence %\", \"" + file +
                      "\" using 1:2:4 with labels offset 0,1 font \",9\" notitle");
    }
    // Perplexity against outliers, for the members that measured it.
    std::string rows;
    for (const auto & t : table)
        if (has(t, "perplexity") && has(t, "num_outliers")) rows += num(t, "num_outliers") + "\t" + num(t, "perplexity") + "\t" + label(t) + "\n";
    if (!rows.empty()) {
        job.data_files.emplace_back("perplexity_vs_outliers.dat", rows);
        add("perplexity_vs_outliers", "set grid\nset key off\nset offsets graph 0.1, graph 0.1, graph 0.1, graph 0.1\nset xlabel \"outliers\"\n"
                                      "set ylabel \"perplexity\"\nset title \"perplexity vs outliers\"\n"
                                      "plot \"perplexity_vs_outliers.dat\" using 1:2 with points pt 7 ps 1.5, "
                                      "\"perplexity_vs_outliers.dat\" using 1:2:3 with labels offset 0,1 font \",9\"");
    }
    return job;
}

// A member's outcome from its own journal, for a report read after a sweep that may have stopped
// it: a run stopped by a Ctrl-C or by the sweep (its first failure is `interrupted`) is not a
// failure of the model, a finish that failed may have left its instance, and one that started its
// finish but never completed it (its process killed) may have too.
namespace {
std::string run_outcome(const std::vector<JournalEvent> & journal) {
    std::string finish, first_failure;
    for (const auto & e : journal) {
        if (e.event == "failed" && first_failure.empty()) first_failure = e.kind.empty() ? "?" : e.kind;
        if (e.step == "finish" && (e.event == "start" || e.event == "done" || e.event == "failed")) finish = e.event;
    }
    if (finish == "failed") return "finish failed (its instance may still bill)";
    if (finish == "start") return "unfinished (stopped inside its finish: its instance may still bill)";
    if (finish != "done") return "unfinished";
    if (first_failure.empty()) return "succeeded";
    return first_failure == common::kind_name(common::ErrorKind::Interrupted) ? "stopped" : "failed";
}
}  // namespace

std::string write_sweep_report(const SweepFile & s, const std::string & analyze_program) {
    const std::string root = sweep_dir(s);
    struct Row {
        std::string id, model, family, outcome = "not run", outliers_json;
        double params = 0, active = 0, cost = 0, wall_s = 0;
        bool have_cost = false, have_wall = false;
        // The instance is not proven ended (no ended_unix, or a terminate not proven): its cost is
        // taken up to now, or to the earliest deadline known to end it where that has passed, and
        // may still grow until then; cost_note says which.
        bool may_bill = false;
        std::string cost_note;
        std::optional<double> perplexity;  // results measured it (analysis.perplexity)
        std::vector<std::string> modes;    // the analysis modes its results hold (kCompareModes order)
        nlohmann::json stats;              // this member's row of `analyze compare` (outliers, mean/median %)
    };
    std::vector<Row> rows;
    for (const auto & m : s.members) {
        Row r;
        r.id = m.id;
        r.model = m.config.model.display_name();
        r.family = m.family;
        std::string dir = root + "/" + m.id;
        if (!m.blocked.empty()) r.outcome = "blocked (issue #13)";
        std::error_code ec;
        if (fs::exists(dir + "/run.json", ec)) try {
            RunDir d = RunDir::open(dir);
            double first = 0, last = 0;
            auto journal = d.journal();
            for (const auto & e : journal) {
                if (first == 0) first = e.unix_s;
                last = std::max(last, e.unix_s);
            }
            r.outcome = run_outcome(journal);
            if (last > first) {
                r.wall_s = last - first;
                r.have_wall = true;
            }
            const auto & st = d.state();
            if (st.instance) {
                // An instance bills from its creation until it is proven gone. One whose run never
                // recorded an end (its driver died, a finish never ran) or whose terminate was not
                // proven may still be billing: costed up to now, but never past the earliest
                // deadline known to end it (its name's, its watchdog's, a keep deadline; a report
                // read days later once costed a member killed mid-run at $2/h to $67 where its own
                // deadline allowed $3), and flagged with that deadline; $0.00 hid it.
                const auto & end = st.end;
                const auto known_end = earliest_known_end(st);
                std::optional<double> until;
                if (end && end->ended_unix) {
                    until = *end->ended_unix;
                    if (end->proven_gone.has_value() && !*end->proven_gone) {
                        r.may_bill = true;
                        r.cost_note = "not proven gone: may still be billing" +
                                      (known_end && known_end->unix_s > *until ? " until " + known_end->what : std::string());
                    }
                } else {
                    const double now = unix_now();
                    const std::string what = end && end->action == "keep" ? "kept" : "no end recorded";
                    r.may_bill = true;
                    if (known_end && known_end->unix_s < now) {
                        until = known_end->unix_s;
                        r.cost_note = what + ", not proven gone: may still be billing, costed until " + known_end->what;
                    } else {
                        until = now;
                        r.cost_note = what + ", costed to now: may still be billing" +
                                      (known_end ? " until " + known_end->what : std::string(" (no deadline known to end it)"));
                    }
                }
                if (st.instance->created_unix) {  // an adopted instance may not know its creation
                    r.cost = st.instance->price_usd_per_hour * std::max(0.0, *until - *st.instance->created_unix) / 3600;
                    r.have_cost = true;
                }
            }
            std::string o = dir + "/results/analysis/outliers.json";
            if (r.outcome == "succeeded" && fs::exists(o)) {
                r.outliers_json = o;
                const auto result = read_member_json(o);
                r.perplexity = measured_perplexity(result);
                // The modes the results hold decide which the compare can use; a result too large
                // to read here (over 4 MiB) is taken to hold what its config asked for.
                const bool readable = result.is_object() && result.contains("modes") && result["modes"].is_object();
                for (const char * mode : kCompareModes)
                    if (readable ? result["modes"].contains(mode) : (m.config.analysis.mode == "both" || m.config.analysis.mode == mode))
                        r.modes.push_back(mode);
            }
            auto inspect = read_member_json(dir + "/results/inspect.json");
            if (inspect.is_object()) {
                if (inspect.contains("params_total") && inspect["params_total"].is_number()) r.params = inspect["params_total"].get<double>();
                if (inspect.contains("params_active") && inspect["params_active"].is_number()) r.active = inspect["params_active"].get<double>();
                if (inspect.contains("model_type") && inspect["model_type"].is_string()) r.family = inspect["model_type"].get<std::string>();
            }
        } catch (const common::Error & e) {
            // A damaged member (its journal, state.json or run.json) is one row of the report, not
            // the end of it: listed as unreadable, the reason (file and key) in the log.
            if (e.kind() != common::ErrorKind::Usage && e.kind() != common::ErrorKind::NotFound) throw;
            r = Row{.id = m.id, .model = m.config.model.display_name(), .family = m.family, .outcome = "unreadable run directory"};
            common::log::warn("sweep report: ", m.id, ": ", e.message(), "; listed as unreadable, nothing in it was changed");
        }
        rows.push_back(r);
    }

    fs::create_directories(root + "/report");
    // `analyze compare` takes one mode for all its results: the first mode every member with
    // results holds (a sweep whose members all ran analysis.mode: paper has no predecessor numbers),
    // else one comparison per mode over the members holding it. A compare that fails is stated in
    // the report, which is written whatever it says (the member table with cost and wall time is
    // needed most when something went wrong).
    struct Group {
        std::string mode, dir;     // dir: report/ or report/<mode>/ when there are several
        std::vector<size_t> rows;  // indices into rows
        std::string md[2];         // comparison.md against total, against active parameters
        std::string error[2];      // why that compare failed ("" when it did not)
    };
    std::vector<Group> groups;
    std::vector<size_t> with_results, no_mode;
    for (size_t i = 0; i < rows.size(); ++i)
        if (!rows[i].outliers_json.empty()) (rows[i].modes.empty() ? no_mode : with_results).push_back(i);
    auto holds = [&](size_t i, const std::string & mode) {
        return std::find(rows[i].modes.begin(), rows[i].modes.end(), mode) != rows[i].modes.end();
    };
    for (const char * mode : kCompareModes)
        if (!with_results.empty() && std::all_of(with_results.begin(), with_results.end(), [&](size_t i) { return holds(i, mode); })) {
            groups.push_back(Group{.mode = mode, .dir = root + "/report", .rows = with_results});
            break;
        }
    if (groups.empty())
        for (const char * mode : kCompareModes) {
            Group g{.mode = mode, .dir = root + "/report/" + mode};
            for (size_t i : with_results)
                if (holds(i, mode)) g.rows.push_back(i);
            if (!g.rows.empty()) groups.push_back(g);
        }
    const size_t n_compared = with_results.size();
    for (auto & g : groups)
        for (int k = 0; k < 2; ++k) {
            const char * which = k == 0 ? "total" : "active";
            std::vector<std::string> argv{analyze_program, "compare"};
            for (size_t i : g.rows) argv.push_back(rows[i].outliers_json);
            for (size_t i : g.rows) {
                double p = k == 0 ? rows[i].params : rows[i].active;
                if (p > 0) argv.insert(argv.end(), {"--params", rows[i].outliers_json + "=" + fixed(p, 0)});
            }
            argv.insert(argv.end(), {"--mode", g.mode, "--params-kind", which, "-o", g.dir + "/" + which});
            const std::string what = "analyze compare (" + std::string(which) + ", " + g.mode + " mode) failed";
            try {
                auto res = common::run_process(argv);
                if (res.exit_code != 0) g.error[k] = what + " (exit " + std::to_string(res.exit_code) + "):\n\n" + quoted_block(res.err);
            } catch (const common::Error & e) {  // the program could not be run at all
                g.error[k] = what + ":\n\n" + quoted_block(e.message());
            }
            if (!g.error[k].empty()) {
                common::log::warn("sweep report: ", what, "; the report says so and lists every member without it");
                continue;
            }
            g.md[k] = read_text(g.dir + "/" + which + "/comparison.md");
        }
    // What analysis computed per run (outliers, mean and median layer % and sequence %), joined back
    // to the members by result file; a member in several comparisons takes the first's.
    for (const auto & g : groups) {
        if (!g.error[0].empty()) continue;
        auto cmp = read_member_json(g.dir + "/total/comparison.json");
        if (cmp.is_object() && cmp.contains("rows") && cmp["rows"].is_array())
            for (const auto & c : cmp["rows"])
                for (size_t i : g.rows)
                    if (c.is_object() && rows[i].stats.is_null() && c.value("file", "") == rows[i].outliers_json) rows[i].stats = c;
    }

    std::ostringstream md;
    md << "# Sweep " << s.name << "\n\n"
       << "One row per member; parameters from each member's own `extract inspect` (results/inspect.json), "
          "cost = instance price x lifetime, wall time = first to last journal event.\n\n"
       << "| member | model | family | outcome | params (total) | params (active) | cost $ | wall time | results |\n"
       << "|---|---|---|---|---:|---:|---:|---:|---|\n";
    double total_cost = 0, billing_cost = 0;
    int billing = 0;
    for (const auto & r : rows) {
        total_cost += r.have_cost ? r.cost : 0;
        if (r.may_bill) {
            billing_cost += r.have_cost ? r.cost : 0;
            ++billing;
        }
        std::string cost = r.have_cost ? fixed(r.cost, 2) : "-";
        if (r.may_bill) cost += " (" + r.cost_note + ")";
        md << "| " << r.id << " | " << safe(r.model) << " | " << (r.family.empty() ? "?" : safe(r.family)) << " | " << r.outcome << " | "
           << (r.params > 0 ? billions(r.params) : "-") << " | " << (r.active > 0 ? billions(r.active) : "-") << " | " << cost << " | "
           << (r.have_wall ? fixed(r.wall_s, 0) + " s" : "-") << " | " << (r.outliers_json.empty() ? "-" : r.id + "/results/analysis/report.md")
           << " |\n";
    }
    md << "\nTotal cost: $" << fixed(total_cost, 2) << " (" << rows.size() << " members, " << n_compared << " compared).";
    if (billing > 0)
        md << " $" << fixed(billing_cost, 2) << " of it for " << billing << (billing == 1 ? " instance" : " instances")
           << " that may still be billing: not proven ended, each costed up to now or to the earliest deadline known to end it "
              "(the one in its name, its watchdog's, a keep deadline) where that has passed, so the figure may grow until the "
              "deadline each row names; `broker instances list` shows what still runs.";
    md << "\n\n";
    if (!no_mode.empty()) {
        md << "Not compared (their results hold neither the predecessor nor the paper mode):";
        for (size_t i : no_mode) md << " " << rows[i].id;
        md << ".\n\n";
    }
    for (const auto & g : groups)
        for (const auto & e : g.error)
            if (!e.empty()) md << e << "\n";
    // Per model: analysis's own figures, perplexity where measured, cost and wall time; then plots.
    nlohmann::json table = nlohmann::json::array();
    for (const auto & r : rows) {
        nlohmann::json t{{"label", r.id}};
        if (r.params > 0) t["params"] = r.params;
        if (r.active > 0) t["params_active"] = r.active;
        if (r.have_cost) t["cost_usd"] = r.cost;
        if (r.have_wall) t["wall_s"] = r.wall_s;
        if (r.perplexity) t["perplexity"] = *r.perplexity;
        for (const char * k : {"num_outliers", "mean_layer_pct", "median_layer_pct", "mean_position_pct", "median_position_pct"})
            if (r.stats.is_object() && r.stats.contains(k) && r.stats[k].is_number()) t[k] = r.stats[k];
        table.push_back(t);
    }
    auto cell = [](const nlohmann::json & t, const char * key, int digits) {
        return t.contains(key) && t[key].is_number() ? fixed(t[key].get<double>(), digits) : std::string("-");
    };
    std::string modes_said;
    if (groups.size() == 1) {
        modes_said = groups[0].mode + " mode, the first mode every compared member's results hold";
    } else if (groups.size() > 1) {
        modes_said = "the members' results hold no mode in common, so per mode:";
        for (const auto & g : groups) {
            modes_said += " " + g.mode + " mode for";
            for (size_t i : g.rows) modes_said += " " + rows[i].id;
            modes_said += ";";
        }
        modes_said.pop_back();
        bool shared = false;  // a member in both comparisons: its row here is from the first
        for (size_t i : groups[0].rows) shared = shared || std::find(groups[1].rows.begin(), groups[1].rows.end(), i) != groups[1].rows.end();
        if (shared) modes_said += "; a member in both shows its " + groups[0].mode + " figures";
    }
    md << "## Per model\n\nOutliers and the layer / sequence percentages are `analyze compare`'s figures for each member's "
          "outliers.json"
       << (modes_said.empty() ? "" : " (" + modes_said + ")") << "; perplexity is the run's own (`analysis.perplexity`), where measured.\n\n"
       << "| member | outliers | mean layer % | median layer % | mean sequence % | median sequence % | perplexity | cost $ | wall time s |\n"
       << "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const auto & t : table)
        md << "| " << t["label"].get<std::string>() << " | " << cell(t, "num_outliers", 0) << " | " << cell(t, "mean_layer_pct", 1) << " | "
           << cell(t, "median_layer_pct", 1) << " | " << cell(t, "mean_position_pct", 1) << " | " << cell(t, "median_position_pct", 1)
           << " | " << cell(t, "perplexity", 2) << " | " << cell(t, "cost_usd", 2) << " | " << cell(t, "wall_s", 0) << " |\n";
    md << "\n";
    auto plots = render_sweep_plots(sweep_plot_job(table), root + "/report/plots");
    if (!plots.skipped.empty()) md << "Plots skipped: " << plots.skipped << "\n\n";
    auto image = [&](const std::string & name, const std::string & title) {
        for (const auto & f : plots.files)
            if (f == name + ".png") md << "### " << title << "\n\n![](report/plots/" << f << ") ([svg](report/plots/" << name << ".svg))\n\n";
    };
    image("cost_per_model", "Cost per model");
    image("wall_time_per_model", "Wall time per model");
    if (groups.empty()) {
        md << (no_mode.empty() ? "No member has results to compare yet.\n" : "No member has results that can be compared.\n");
    } else {
        for (int k = 0; k < 2; ++k) {
            const std::string which = k == 0 ? "total" : "active";
            for (const auto & g : groups) {
                const std::string mode = groups.size() > 1 ? g.mode + " mode" : "";
                md << (k == 0 ? "## Outliers vs total parameters" + (mode.empty() ? "" : " (" + mode + ")")
                              : "## Outliers vs active parameters (per token" + (mode.empty() ? "" : ", " + mode) + ")")
                   << "\n\n";
                const std::string rel = fs::path(g.dir).lexically_relative(root).string() + "/" + which;
                if (g.error[k].empty()) md << embed(g.md[k], rel) << "\n";
                else md << "Not compared: " << g.error[k].substr(0, g.error[k].find(':')) << " (above).\n\n";
            }
            if (k == 0) image("median_pct_vs_total", "Median layer % and median sequence % vs total parameters");
            else image("median_pct_vs_active", "Median layer % and median sequence % vs active parameters");
        }
    }
    md << "## Perplexity vs outliers\n\n";
    bool any_ppl = false;
    for (const auto & r : rows) any_ppl = any_ppl || r.perplexity.has_value();
    if (any_ppl) image("perplexity_vs_outliers", "Perplexity vs outliers");
    else md << "Not measured: no member's results record perplexity (set `analysis.perplexity: true`).\n";
    std::string path = root + "/report.md";
    std::ofstream(path) << md.str();
    return path;
}

}  // namespace deploy
