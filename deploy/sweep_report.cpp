// The sweep's combined report (see sweep.h): what each member's run directory holds (results,
// inspect.json, state.json, journal), compared by `analyze compare`, the same program a user runs
// by hand. Everything read here came from an instance: sizes are bounded and text that reaches the
// Markdown is reduced to a safe alphabet.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
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

std::string read_text(const std::string & path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str().substr(0, 1u << 20);
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

}  // namespace

std::string write_sweep_report(const SweepFile & s, const std::string & analyze_program) {
    const std::string root = sweep_dir(s);
    struct Row {
        std::string id, model, family, outcome = "not run", outliers_json;
        double params = 0, active = 0, cost = 0, wall_s = 0;
        bool have_cost = false, have_wall = false;
    };
    std::vector<Row> rows;
    for (const auto & m : s.members) {
        Row r;
        r.id = m.id;
        r.model = m.config.model.display_name();
        r.family = m.family;
        std::string dir = root + "/" + m.id;
        if (!m.blocked.empty()) r.outcome = "blocked (issue #13)";
        if (fs::exists(dir + "/run.json")) {
            RunDir d = RunDir::open(dir);
            bool failed = false;
            double first = 0, last = 0;
            for (const auto & e : d.journal()) {
                failed = failed || e.event == "failed";
                if (first == 0) first = e.unix_s;
                last = std::max(last, e.unix_s);
            }
            r.outcome = !d.step_done("finish") ? "unfinished" : failed ? "failed" : "succeeded";
            if (last > first) {
                r.wall_s = last - first;
                r.have_wall = true;
            }
            const auto & st = d.state();
            if (st.instance) {
                double created = st.instance->created_unix.value_or(0.0), end = created;
                if (st.end) end = st.end->ended_unix.value_or(created);
                r.cost = st.instance->price_usd_per_hour * std::max(0.0, end - created) / 3600;
                r.have_cost = true;
            }
            std::string o = dir + "/results/analysis/outliers.json";
            if (r.outcome == "succeeded" && fs::exists(o)) r.outliers_json = o;
            auto inspect = read_member_json(dir + "/results/inspect.json");
            if (inspect.is_object()) {
                if (inspect.contains("params_total") && inspect["params_total"].is_number()) r.params = inspect["params_total"].get<double>();
                if (inspect.contains("params_active") && inspect["params_active"].is_number()) r.active = inspect["params_active"].get<double>();
                if (inspect.contains("model_type") && inspect["model_type"].is_string()) r.family = inspect["model_type"].get<std::string>();
            }
        }
        rows.push_back(r);
    }

    fs::create_directories(root + "/report");
    std::string compared[2];
    int n_compared = 0;
    for (const auto & r : rows) n_compared += !r.outliers_json.empty();
    for (int k = 0; k < 2 && n_compared > 0; ++k) {
        const char * which = k == 0 ? "total" : "active";
        std::vector<std::string> argv{analyze_program, "compare"};
        for (const auto & r : rows)
            if (!r.outliers_json.empty()) argv.push_back(r.outliers_json);
        for (const auto & r : rows) {
            double p = k == 0 ? r.params : r.active;
            if (!r.outliers_json.empty() && p > 0) argv.insert(argv.end(), {"--params", r.outliers_json + "=" + fixed(p, 0)});
        }
        argv.insert(argv.end(), {"-o", root + "/report/" + which});
        auto res = common::run_process(argv);
        if (res.exit_code != 0)
            throw common::Error(common::ErrorKind::Internal, "sweep report: analyze compare (" + std::string(which) + ") failed: " + res.err);
        compared[k] = read_text(root + "/report/" + which + "/comparison.md");
    }

    std::ostringstream md;
    md << "# Sweep " << s.name << "\n\n"
       << "One row per member; parameters from each member's own `extract inspect` (results/inspect.json), "
          "cost = instance price x lifetime, wall time = first to last journal event.\n\n"
       << "| member | model | family | outcome | params (total) | params (active) | cost $ | wall time | results |\n"
       << "|---|---|---|---|---:|---:|---:|---:|---|\n";
    double total_cost = 0;
    for (const auto & r : rows) {
        total_cost += r.have_cost ? r.cost : 0;
        md << "| " << r.id << " | " << safe(r.model) << " | " << (r.family.empty() ? "?" : safe(r.family)) << " | " << r.outcome << " | "
           << (r.params > 0 ? billions(r.params) : "-") << " | " << (r.active > 0 ? billions(r.active) : "-") << " | "
           << (r.have_cost ? fixed(r.cost, 2) : "-") << " | " << (r.have_wall ? fixed(r.wall_s, 0) + " s" : "-") << " | "
           << (r.outliers_json.empty() ? "-" : r.id + "/results/analysis/report.md") << " |\n";
    }
    md << "\nTotal cost: $" << fixed(total_cost, 2) << " (" << rows.size() << " members, " << n_compared << " compared).\n\n";
    if (n_compared == 0) {
        md << "No member has results to compare yet.\n";
    } else {
        md << "## Outliers vs total parameters\n\n" << embed(compared[0], "report/total") << "\n"
           << "## Outliers vs active parameters (per token)\n\n" << embed(compared[1], "report/active") << "\n";
    }
    md << "## Perplexity vs outliers\n\nNot measured: the runs of this sweep record no perplexity.\n";
    std::string path = root + "/report.md";
    std::ofstream(path) << md.str();
    return path;
}

}  // namespace deploy
