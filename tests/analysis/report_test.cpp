// Result JSON, markdown, plots and the `analyze` program's verbs (merge, report, compare) on
// statistics from planted tensors; bad inputs get errors naming the file and the documented code.
#include "tests/analysis/analysis_test_util.h"

#include "analysis/report.h"
#include "analysis/stats_file.h"
#include "common/error.h"
#include "common/subprocess.h"
#include "tests/support/temp_dir.h"

#include <filesystem>

#include <doctest/doctest.h>

namespace {

analysis::Statistics planted_stats(int64_t first_sequence, uint64_t seed) {
    const std::vector<tests::Plant> plants = {{5, 12, 1.0, 0.5}, {9, 7, 0.5, 0.2}};
    analysis::OutlierAccumulator acc;
    tests::feed(acc, tests::make_batch(first_sequence, 2, 40, 16, 4, plants, seed));
    auto s = acc.statistics({{"model", "tiny-planted"}, {"dtype", "float32"}});
    return s;
}

common::ProcessResult analyze(const std::vector<std::string> & args) {
    std::vector<std::string> argv = {ANALYZE_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    common::RunOptions o;
    o.timeout = std::chrono::milliseconds(120000);
    return common::run_process(argv, o);
}

}  // namespace

TEST_CASE("result JSON: versioned schema, both modes, per-layer table, profiles and token strings") {
    const auto s = planted_stats(0, 3);
    analysis::ReportOptions o;
    const auto r = analysis::build_result(s, o, [](int64_t id) { return "tok" + std::to_string(id); });
    CHECK(r.at("schema") == analysis::kResultSchema);
    CHECK(r.at("version") == analysis::kResultVersion);
    CHECK(r.at("run").at("model_name") == "tiny-planted");
    auto named = s;
    named.metadata["model_name"] = "allenai/OLMoE-1B-7B-0924";  // analyze extract --model-name wins over the directory
    CHECK(analysis::build_result(named, o, {}).at("run").at("model_name") == "allenai/OLMoE-1B-7B-0924");
    const auto & pred = r.at("modes").at("predecessor");
    CHECK(pred.at("summary").at("num_outliers") == 4);  // dims 5 and 9 in each of 2 sequences
    CHECK(pred.at("summary").at("unique_dims") == 2);
    CHECK(pred.at("features").at(0).at("dim") == 5);   // largest max |x| first
    CHECK(pred.at("features").at(0).at("top_tokens").at(0).at("text").get<std::string>().rfind("tok", 0) == 0);
    CHECK(r.at("modes").at("paper").at("summary").at("num_outliers") == 2);
    CHECK(r.at("layers").size() == 8);
    CHECK(r.at("feature_profiles").at(0).at("max_abs_by_site").size() == 8);

    o.modes = {"predecessor"};
    o.layer_fraction = 0.9;
    const auto strict = analysis::build_result(s, o, {});
    CHECK(strict.at("modes").at("predecessor").at("criteria").at("mode") == "predecessor+custom");
    CHECK(strict.at("modes").at("predecessor").at("summary").at("num_outliers") == 2);  // dim 9 is in half the layers
    CHECK_FALSE(strict.at("modes").at("predecessor").at("features").at(0).at("top_tokens").at(0).contains("text"));
}

TEST_CASE("result JSON: fractions given equal to the mode's own are not labelled custom, only values that differ are") {
    // deploy_and_analyze passes the configured fractions; the defaults are the modes' own criteria,
    // so a run with the defaults is a plain predecessor / paper run, whatever flags carried them.
    const auto s = planted_stats(0, 3);
    analysis::ReportOptions o;
    o.layer_fraction = 0.25;
    o.position_fraction = 0.06;
    auto r = analysis::build_result(s, o, {});
    CHECK(r.at("modes").at("predecessor").at("criteria").at("mode") == "predecessor");
    CHECK(r.at("modes").at("paper").at("criteria").at("mode") == "paper");
    o.position_fraction = 0.07;  // one value off the default: both modes are custom
    r = analysis::build_result(s, o, {});
    CHECK(r.at("modes").at("predecessor").at("criteria").at("mode") == "predecessor+custom");
    CHECK(r.at("modes").at("paper").at("criteria").at("mode") == "paper+custom");
    CHECK(r.at("modes").at("paper").at("criteria").at("position_fraction") == 0.07);
}

TEST_CASE("comparison plots: against active parameters the axis and titles say active parameters, else parameters") {
    auto row = [](const char * label, double params) {
        return nlohmann::json{{"label", label}, {"params", params}, {"num_outliers", 3}, {"mean_layer_pct", 40.0}, {"mean_position_pct", 5.0}};
    };
    nlohmann::json c = {{"mode", "predecessor"}, {"rows", {row("a", 7e9), row("b", 3e10)}}};
    auto job = analysis::comparison_plot_job(c);
    REQUIRE(job.skipped_reason.empty());
    CHECK(job.script.find("set xlabel \"parameters\"") != std::string::npos);
    CHECK(job.script.find("active") == std::string::npos);
    c["params_kind"] = "active";
    job = analysis::comparison_plot_job(c);
    CHECK(job.script.find("set xlabel \"active parameters (per token)\"") != std::string::npos);
    CHECK(job.script.find("outlier features vs active parameters") != std::string::npos);
    CHECK(job.script.find("mean position % vs active parameters") != std::string::npos);
    CHECK(job.script.find("vs parameters") == std::string::npos);
    // The kind is ours to name: anything else in a (hostile) comparison file never reaches the script.
    c["params_kind"] = "x\"; system(\"touch PWNED\")";
    job = analysis::comparison_plot_job(c);
    CHECK(job.script.find("system") == std::string::npos);
    CHECK(job.script.find("set xlabel \"parameters\"") != std::string::npos);
    // The markdown's column follows.
    c["params_kind"] = "active";
    CHECK(analysis::render_comparison_markdown(c, {}).find("| model | active params |") != std::string::npos);
    c.erase("params_kind");
    CHECK(analysis::render_comparison_markdown(c, {}).find("| model | params |") != std::string::npos);
}

TEST_CASE("finalize writes statistics, result, markdown and PNG+SVG plots when gnuplot exists") {
    tests::TempDir dir;
    analysis::FinalizeOptions f;
    f.out_dir = dir / "analysis";
    const auto outcome = analysis::finalize_run(planted_stats(0, 4), f);
    CHECK(std::filesystem::exists(outcome.statistics_path));
    CHECK(std::filesystem::exists(outcome.result_path));
    const auto md = tests::read_file(outcome.report_path);
    CHECK(md.find("# Outlier features: tiny-planted") != std::string::npos);
    CHECK(md.find("| 5 | 12.00 |") != std::string::npos);
    std::string why;
    if (analysis::gnuplot_available(&why)) {
        REQUIRE(outcome.plots.produced);
        CHECK(outcome.plots.files.size() == 6);
        for (const auto & p : outcome.plots.files) CHECK(std::filesystem::file_size(p) > 1000);
        CHECK(md.find("![outliers_heatmap.png](plots/outliers_heatmap.png)") != std::string::npos);
    } else {
        MESSAGE("gnuplot not available: " << why);
        CHECK_FALSE(outcome.plots.produced);
    }
    const auto back = analysis::load_result(outcome.result_path);
    CHECK(back.at("modes").at("paper").at("summary").at("num_outliers") == 2);
}

TEST_CASE("analyze merge + report + compare: merged statistics equal one run, bad files exit with their kind") {
    tests::TempDir dir;
    analysis::save_statistics(planted_stats(0, 7), dir / "a.stats.cbor");
    analysis::save_statistics(planted_stats(2, 8), dir / "b.stats.cbor");
    auto r = analyze({"merge", dir / "a.stats.cbor", dir / "b.stats.cbor", "-o", dir / "ab.stats.cbor", "--json"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    const auto merged = analysis::load_statistics(dir / "ab.stats.cbor");
    CHECK(merged.sequences == 4);

    r = analyze({"report", dir / "ab.stats.cbor", "-o", dir / "rep", "--mode", "predecessor", "--no-plots", "--json"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    const auto result = analysis::load_result(dir / "rep/outliers.json");
    CHECK(result.at("modes").at("predecessor").at("summary").at("num_outliers") == 8);
    CHECK_FALSE(result.at("modes").contains("paper"));

    r = analyze({"compare", dir / "rep/outliers.json", "--params", "tiny-planted=1.5M", "--json", "-o", dir / "cmp"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    const auto rows = nlohmann::json::parse(r.out);
    CHECK(rows.at(0).at("num_outliers") == 8);
    CHECK(rows.at(0).at("params") == 1.5e6);
    CHECK(std::filesystem::exists(dir / "cmp/comparison.md"));

    // A --params label that names no result is a usage error naming it and the labels there are
    // (it was ignored: the plots then had no parameter count and nothing said why).
    r = analyze({"compare", dir / "rep/outliers.json", "--params", "tiny-planted-0125=1.5M", "-o", dir / "cmp-typo"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("tiny-planted-0125") != std::string::npos);
    CHECK(r.err.find("'tiny-planted'") != std::string::npos);
    CHECK(r.err.find("rep/outliers.json") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir / "cmp-typo/comparison.json"));
    // The file itself is a label too.
    r = analyze({"compare", dir / "rep/outliers.json", "--params", dir / "rep/outliers.json=2M", "--json"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    CHECK(nlohmann::json::parse(r.out).at(0).at("params") == 2e6);

    // Against active parameters: the comparison says so in its JSON, table and plots.
    r = analyze({"compare", dir / "rep/outliers.json", "--params", "tiny-planted=0.5M", "--params-kind", "active", "-o", dir / "cmp-active"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    const auto active = nlohmann::json::parse(tests::read_file(dir / "cmp-active/comparison.json"));
    CHECK(active.at("params_kind") == "active");
    CHECK(active.at("rows").at(0).at("params") == 5e5);
    CHECK(tests::read_file(dir / "cmp-active/comparison.md").find("| model | active params |") != std::string::npos);
    r = analyze({"compare", dir / "rep/outliers.json", "--params-kind", "experts"});
    CHECK(r.exit_code == 2);

    // The same sequences twice: refused (usage, 2), naming the second file.
    r = analyze({"merge", dir / "a.stats.cbor", dir / "a.stats.cbor", "-o", dir / "aa.stats.cbor"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("a.stats.cbor") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir / "aa.stats.cbor"));

    tests::write_file(dir / "bad.json", "{\"schema\": \"something else\"}");
    r = analyze({"report", dir / "bad.json"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("bad.json") != std::string::npos);

    r = analyze({"report", dir / "ab.stats.cbor", "--mode", "int8"});
    CHECK(r.exit_code == 2);

    r = analyze({dir / "no-such-run"});
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("no-such-run") != std::string::npos);
}

TEST_CASE("analyze CLI tree: every verb has help with an example, and --json is accepted after the verb") {
    auto r = analyze({"--help"});
    CHECK(r.exit_code == 0);
    for (const char * verb : {"run", "merge", "report", "compare", "extract"}) {
        CAPTURE(verb);
        CHECK(r.out.find(verb) != std::string::npos);
        const auto h = analyze({verb, "--help"});
        CHECK(h.exit_code == 0);
        CHECK(h.out.find("Example") != std::string::npos);
    }
    r = analyze({"frobnicate", "--json"});  // not a verb: taken as a run directory that does not exist
    CHECK((r.exit_code == 9 || r.exit_code == 2));  // 2 where the build has no run reader
    CHECK(r.err.find("\"kind\"") != std::string::npos);
    r = analyze({"merge", "--bogus-flag"});
    CHECK(r.exit_code == 2);
}
