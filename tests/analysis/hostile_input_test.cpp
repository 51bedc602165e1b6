// Result and statistics files are untrusted input (issue #11): hostile names never become gnuplot
// code, crafted statistics files (deep nesting, sizes that overflow, counts past the bytes, indices
// out of range, huge position maps) and malformed results exit 2 naming the file and the field, and
// the committed fuzz regression inputs keep their properties (fuzz/analysis_properties.h).
#include "tests/analysis/analysis_test_util.h"

#include "analysis/report.h"
#include "analysis/stats_file.h"
#include "common/error.h"
#include "common/subprocess.h"
#include "fuzz/analysis_properties.h"
#include "tests/support/temp_dir.h"

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <functional>
#include <limits>

#include <doctest/doctest.h>

namespace {

using json = nlohmann::json;

analysis::Statistics planted_stats(int64_t first_sequence, uint64_t seed) {
    const std::vector<tests::Plant> plants = {{5, 12, 1.0, 0.5}, {9, 7, 0.5, 0.2}};
    analysis::OutlierAccumulator acc;
    tests::feed(acc, tests::make_batch(first_sequence, 2, 40, 16, 4, plants, seed));
    return acc.statistics({{"model", "tiny-planted"}, {"dtype", "float32"}});
}

common::ProcessResult analyze(const std::vector<std::string> & args) {
    std::vector<std::string> argv = {ANALYZE_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    common::RunOptions o;
    o.timeout = std::chrono::milliseconds(120000);
    return common::run_process(argv, o);
}

void write_bytes(const std::string & path, const std::vector<std::uint8_t> & bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char *>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::uint8_t> read_bytes(const std::string & path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A valid statistics file as a CBOR document to edit.
json stats_document() {
    tests::TempDir dir;
    analysis::save_statistics(planted_stats(0, 11), dir / "s.stats.cbor");
    return json::from_cbor(read_bytes(dir / "s.stats.cbor"));
}

json::binary_t binary_of(const std::vector<int64_t> & v) {
    std::vector<std::uint8_t> raw(v.size() * 8);
    if (!raw.empty()) std::memcpy(raw.data(), v.data(), raw.size());
    return json::binary_t(std::move(raw));
}

// parse_statistics on the document: the usage error's message, or "" when it loaded.
std::string stats_error(const json & doc) {
    const auto bytes = json::to_cbor(doc);
    try {
        (void)analysis::parse_statistics(bytes.data(), bytes.size(), "crafted.stats.cbor");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find("crafted.stats.cbor") != std::string::npos);
        return e.message();
    }
    return "";
}

// planted_stats with everything issue 14 adds: the threshold sweep, massive activations (a spike
// on the residual stream) and per-expert statistics (4 experts, top-2, one routed chunk per layer).
analysis::Statistics rich_stats(int64_t first_sequence, uint64_t seed) {
    const std::vector<tests::Plant> plants = {{5, 12, 1.0, 0.5}, {9, 7, 0.5, 0.2}};
    analysis::AccumulatorOptions o;
    o.sweep_thresholds = {3, 4, 5, 6, 8, 10, 20};
    o.massive_top_k = 4;
    o.expert_stats = true;
    analysis::OutlierAccumulator acc(o);
    auto fb = tests::make_batch(first_sequence, 2, 40, 16, 4, plants, seed);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    for (int l = 0; l < 4; ++l) {
        at::Tensor h = at::randn({2, 40, 16}, gen);
        h[0][0][3] = 800.0f * static_cast<float>(l + 1);  // a massive value on the first token
        fb.residual.push_back(h);
        at::Tensor top_i = at::randint(0, 4, {80, 1}, gen, at::TensorOptions().dtype(at::kLong));
        top_i = at::cat({top_i, (top_i + 1) % 4}, 1);
        fb.experts.push_back({4, 0, top_i, at::randn({160, 16}, gen).mul_(4), at::arange(160, at::TensorOptions().dtype(at::kLong))});
    }
    tests::feed(acc, fb);
    return acc.statistics({{"model", "tiny-planted"}, {"dtype", "float32"}});
}

json result_document() {
    auto r = analysis::build_result(rich_stats(0, 5), analysis::ReportOptions{}, [](int64_t id) { return "t" + std::to_string(id); });
    r["run"]["statistics_file"] = "outliers.stats.cbor";
    return r;
}

std::string result_error(const json & doc) {
    try {
        (void)analysis::parse_result(doc.dump(), "crafted.json");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find("crafted.json") != std::string::npos);
        return e.message();
    }
    return "";
}

}  // namespace

TEST_CASE("plots: no name from a result becomes gnuplot code, and every plot kind still renders") {
    tests::TempDir dir;
    const std::string canary = dir / "pwned";
    // Newlines, quotes, backslashes, backquotes, system(), gnuplot's `!` shell escape, a datablock
    // terminator, a comment start, a very long name and bytes that are not UTF-8.
    const std::vector<std::string> names = {
        "m\nsystem('touch " + canary + "')\n#",
        "m\"; system(\"touch " + canary + "\"); x=\"",
        "`touch " + canary + "`",
        "m\\\"\nsystem('touch " + canary + "')\n\\",
        "EOD\nsystem('touch " + canary + "')\n$x << EOD",
        "\n!touch " + canary + "\n",
        "# print system('touch " + canary + "')",
        std::string(100000, 'x') + "\nsystem('touch " + canary + "')",
        std::string("\xff\xfe\x80 name \x01\x1b[31m\xc0\xaf") + "\nsystem('touch " + canary + "')",
    };
    std::string why;
    const bool gnuplot = analysis::gnuplot_available(&why);
    if (!gnuplot) MESSAGE("gnuplot not available, checking the scripts only: " << why);
    const auto base = result_document();
    for (size_t i = 0; i < names.size(); ++i) {
        CAPTURE(i);
        auto r = base;
        r["run"]["model_name"] = names[i];  // every title of outliers_heatmap, magnitude_by_layer, magnitude_distribution
        json counts = json::object();
        for (const auto & [kind, c] : r["histogram"]["counts"].items()) counts[names[i] + kind] = c;  // distribution key titles
        r["histogram"]["counts"] = counts;
        // The script is the same as for a result without any of these strings.
        const auto job = analysis::plot_job(r);
        CHECK(job.script == analysis::plot_job(analysis_fuzz::renamed_kinds(analysis_fuzz::without_strings(r))).script);
        CHECK(job.script.find("touch") == std::string::npos);
        CHECK(job.outputs.size() == 12);  // the 3 base plots, threshold curve, expert heatmap, massive ratio

        const std::string run = dir / ("r" + std::to_string(i));
        std::filesystem::create_directories(run);
        // Invalid UTF-8 cannot be written as JSON text; replace it as a JSON writer would.
        tests::write_file(run + "/outliers.json", r.dump(1, ' ', false, json::error_handler_t::replace));
        auto p = analyze({"report", run + "/outliers.json", "--json"});
        CHECK_MESSAGE(p.exit_code == 0, p.err);
        CHECK_FALSE(std::filesystem::exists(canary));
        if (gnuplot) {
            CHECK_MESSAGE(p.err.find("plots skipped") == std::string::npos, p.err);
            for (const auto & name : job.outputs) CHECK(std::filesystem::file_size(run + "/plots/" + name) > 1000);
        }

        // compare: the model name is the row's label in both comparison plots (params by file name).
        p = analyze({"compare", run + "/outliers.json", "--params", run + "/outliers.json=1.5B", "-o", run + "/cmp", "--json"});
        CHECK_MESSAGE(p.exit_code == 0, p.err);
        CHECK_FALSE(std::filesystem::exists(canary));
        if (gnuplot) {
            CHECK_MESSAGE(p.err.find("plots skipped") == std::string::npos, p.err);
            for (const char * name : {"compare_outliers.png", "compare_outliers.svg", "compare_percentages.png", "compare_percentages.svg"})
                CHECK(std::filesystem::file_size(run + "/cmp/" + name) > 1000);
        }
    }
}

TEST_CASE("plots: one feature or one site still draws a heatmap, and the working directory is removed") {
    if (!analysis::gnuplot_available()) return;
    tests::TempDir dir;
    auto r = result_document();
    r["feature_profiles"] = json::array({r["feature_profiles"][0]});
    const auto out = analysis::write_plots(r, dir / "plots");
    REQUIRE_MESSAGE(out.produced, out.skipped_reason);
    size_t entries = 0;
    for (const auto & e : std::filesystem::directory_iterator(dir / "plots")) {
        CHECK(e.path().filename().string().rfind(".gnuplot-", 0) != 0);
        ++entries;
    }
    CHECK(entries == 12);
}

TEST_CASE("statistics files: the sweep and expert records are bounded and checked, naming the field") {
    tests::TempDir dir;
    analysis::save_statistics(rich_stats(0, 11), dir / "s.stats.cbor");
    const json doc = json::from_cbor(read_bytes(dir / "s.stats.cbor"));
    REQUIRE(doc.contains("sweep"));
    REQUIRE(doc.contains("experts"));
    CHECK(stats_error(doc).empty());
    auto refused = [&](const std::function<void(json &)> & edit, const std::string & field) {
        CAPTURE(field);
        json d = doc;
        edit(d);
        CHECK(stats_error(d).find(field) != std::string::npos);
    };
    refused([](json & d) { d["sweep"]["thresholds"] = json::array({6, 3}); }, "sweep.thresholds[1]");
    refused([](json & d) { d["sweep"]["thresholds"] = json::array({-1}); }, "sweep.thresholds[0]");
    refused([](json & d) { d["sweep"]["thresholds"] = json::array(); }, "sweep.thresholds");
    refused([](json & d) { d["sweep"]["thresholds"] = json(std::vector<int>(17, 1)); }, "sweep.thresholds");
    refused([](json & d) { d["sweep"]["site_level"] = json::binary({1, 2}); }, "sweep.site_level");
    refused([](json & d) {
        auto raw = d["sweep"]["site_level"].get_binary();
        raw[0] = 200;  // above the 7 thresholds
        d["sweep"]["site_level"] = json::binary(raw);
    }, "sweep.site_level[0]");
    refused([](json & d) { d["sweep"]["dim_positions"] = json::binary({}); }, "sweep.dim_positions");
    refused([](json & d) { d["per_sequence"][0]["sweep_count"] = uint64_t{1} << 60; }, "per_sequence[0].sweep");
    refused([](json & d) { d["per_sequence"][0].erase("sweep_count"); }, "per_sequence[0].sweep_count");
    refused([](json & d) {
        auto raw = d["per_sequence"][0]["sweep"].get_binary();
        raw[0] = 0xff, raw[1] = 0xff, raw[2] = 0xff, raw[3] = 0x7f;  // dim 2^31-1
        d["per_sequence"][0]["sweep"] = json::binary(raw);
    }, "per_sequence[0].sweep[0]");
    refused([](json & d) { d["experts"][0]["experts"] = 1 << 20; }, "experts[0].experts");
    refused([](json & d) { d["experts"][0]["tokens"] = json::binary({1}); }, "experts[0].tokens");
    refused([](json & d) { d["experts"][1]["layer"] = 0; }, "experts[1].layer");
    refused([](json & d) { d["experts"][0]["hit_tokens"] = binary_of({1000, 0, 0, 0}); }, "experts[0].hit_tokens[0]");
    refused([](json & d) { d["massive"][0]["top"][0] = json::array({1.0, 0, 0, 0, 1.0}); }, "massive[0].top[0]");  // v3: 6 items
    refused([](json & d) { d["massive"][0]["top"][0][5] = -2; }, "massive[0].top[0][5]");
    // A merge of files with different sweeps is refused by the program too, naming the file.
    auto other = rich_stats(2, 12);
    other.sweep_thresholds = {3, 6, 7, 8, 10, 12, 20};
    analysis::save_statistics(other, dir / "o.stats.cbor");
    const auto p = analyze({"merge", dir / "s.stats.cbor", dir / "o.stats.cbor", "-o", dir / "m.stats.cbor"});
    CHECK(p.exit_code == 2);
    CHECK(p.err.find("o.stats.cbor") != std::string::npos);
    CHECK(p.err.find("sweep") != std::string::npos);
}

TEST_CASE("statistics files: nesting, sizes, counts and indices are bounded, with exit 2 naming the file and the field") {
    tests::TempDir dir;
    // 200000 nested one-element arrays: the CBOR reader's recursion overflowed the stack (SIGSEGV).
    std::vector<std::uint8_t> deep(200000, 0x81);
    deep.push_back(0);
    write_bytes(dir / "deep.stats.cbor", deep);
    auto p = analyze({"report", dir / "deep.stats.cbor", "--no-plots"});
    CHECK(p.exit_code == 2);
    CHECK(p.err.find("deep.stats.cbor") != std::string::npos);
    CHECK(p.err.find("nested deeper") != std::string::npos);

    const auto doc = stats_document();
    CHECK(stats_error(doc).empty());

    // hidden = 2^61 with its arrays empty: S*H*8 wrapped to 0 and the report allocated [H] vectors.
    auto d = doc;
    d["hidden"] = uint64_t{1} << 61;
    d["site_hits"] = json::binary({});
    d["site_max_abs"] = json::binary({});
    d["position_dims"] = json::array();
    d["position_hits"] = json::binary({});
    d["max_positions"] = 0;
    write_bytes(dir / "hidden.stats.cbor", json::to_cbor(d));
    p = analyze({"report", dir / "hidden.stats.cbor", "--no-plots"});
    CHECK(p.exit_code == 2);
    CHECK(p.err.find("hidden.stats.cbor") != std::string::npos);
    CHECK(p.err.find("'hidden'") != std::string::npos);

    // token_hits[].count = 2^63 (2*n*8 wrapped to 0, then n reads past the array), and 2^62.
    d = doc;
    REQUIRE(!d["token_hits"].empty());
    d["token_hits"][0]["count"] = uint64_t{1} << 63;
    d["token_hits"][0]["pairs"] = json::binary({});
    write_bytes(dir / "tokens.stats.cbor", json::to_cbor(d));
    p = analyze({"report", dir / "tokens.stats.cbor", "--no-plots"});
    CHECK(p.exit_code == 2);
    CHECK(p.err.find("'token_hits[0].count'") != std::string::npos);
    d["token_hits"][0]["count"] = uint64_t{1} << 62;
    CHECK(stats_error(d).find("'token_hits[0].pairs'") != std::string::npos);

    // A per-sequence dim outside [0, hidden): indexed [H] arrays in the report (SIGSEGV).
    d = doc;
    REQUIRE(!d["per_sequence"].empty());
    auto dims = d["per_sequence"][0]["dims"].get_binary();
    const int32_t far = 1000000;
    std::memcpy(dims.data(), &far, 4);
    d["per_sequence"][0]["dims"] = json::binary(std::vector<std::uint8_t>(dims.begin(), dims.end()));
    write_bytes(dir / "dim.stats.cbor", json::to_cbor(d));
    p = analyze({"report", dir / "dim.stats.cbor", "--no-plots"});
    CHECK(p.exit_code == 2);
    CHECK(p.err.find("'per_sequence[0].dims[0]'") != std::string::npos);
    d = doc;
    d["per_sequence"][0]["count"] = uint64_t{1} << 62;
    CHECK(stats_error(d).find("'per_sequence[0].dims'") != std::string::npos);

    // max_positions = 2^26: a dense [T,H] map of 2^26 x 16 int32 (4 GiB; 17 GB at H = 64) from a small file.
    d = doc;
    d["max_positions"] = int64_t{1} << 26;
    d["position_dims"] = json::array();
    d["position_hits"] = json::binary({});
    write_bytes(dir / "positions.stats.cbor", json::to_cbor(d));
    p = analyze({"report", dir / "positions.stats.cbor", "--no-plots"});
    CHECK(p.exit_code == 2);
    CHECK(p.err.find("'max_positions'") != std::string::npos);
    // Within the row limit but past the entry limit: 2^11 positions x hidden 2^20 (no sites, so
    // nothing else in the file grows with hidden).
    d["sites"] = json::array();
    for (const char * key : {"site_hits", "site_max_abs", "site_histogram"}) d[key] = json::binary({});
    d["site_elements"] = d["site_sequences"] = d["site_nonfinite"] = json::array();
    d["hidden"] = int64_t{1} << 20;
    d["max_positions"] = int64_t{1} << 11;
    const auto why = stats_error(d);
    CHECK(why.find("'max_positions'") != std::string::npos);
    CHECK(why.find("position-map entries") != std::string::npos);

    // Field types and values: each refused naming its path, not with an internal error.
    struct Case {
        std::function<void(json &)> edit;
        const char * field;
    };
    const std::vector<Case> cases = {
        {[](json & j) { j["version"] = 1e300; }, "'version'"},
        {[](json & j) { j["threshold"] = "six"; }, "'threshold'"},
        {[](json & j) { j["histogram"]["bins_per_octave"] = 0; }, "'histogram.bins_per_octave'"},
        {[](json & j) { j["histogram"]["bins"] = 1 << 20; }, "'histogram.bins'"},
        {[](json & j) { j["sites"][0][1] = "evil"; }, "'sites[0][1]'"},
        {[](json & j) { j["sites"][0] = 3; }, "'sites[0]'"},
        {[](json & j) { j["site_elements"] = json::array({1}); }, "'site_elements'"},
        {[](json & j) { j["site_hits"] = binary_of({1}); }, "'site_hits'"},
        {[](json & j) { j["position_dims"] = json::array({16}); }, "'position_dims[0]'"},
        {[](json & j) { j["per_sequence"][0]["tokens"] = -1; }, "'per_sequence[0].tokens'"},
        {[](json & j) { j["per_sequence"][0] = json::array(); }, "'per_sequence[0]'"},
        {[](json & j) { j["token_hits"][0]["dim"] = 16; }, "'token_hits[0].dim'"},
        {[](json & j) { j["massive"] = json::array({{{"layer", 0}, {"top", json::array({json::array({1e39, 0, 0, 1, 1.0, -1})})}, {"medians", json::array()}}}); },
         "'massive[0].top[0][0]'"},
        {[](json & j) { j["metadata"]["partial"] = "yes"; }, "'metadata.partial'"},
        {[](json & j) { j["metadata"]["model"] = json::object({{"dir", 7}}); }, "'metadata.model.dir'"},
        {[](json & j) {
             std::vector<int64_t> hits(static_cast<size_t>(j["site_hits"].get_binary().size() / 8), 0);
             hits[0] = std::numeric_limits<int64_t>::max();
             hits[1] = 1;
             j["site_hits"] = binary_of(hits);
         },
         "'site_hits'"},
    };
    for (size_t i = 0; i < cases.size(); ++i) {
        CAPTURE(i);
        d = doc;
        cases[i].edit(d);
        const auto why = stats_error(d);
        CHECK_MESSAGE(why.find(cases[i].field) != std::string::npos, why);
    }

    // Malformed CBOR: truncated, trailing bytes, a tag, a reserved head, a string longer than the file.
    const auto good = json::to_cbor(doc);
    const std::vector<std::vector<std::uint8_t>> broken = {
        {good.begin(), good.end() - 3},
        [&] { auto b = good; b.push_back(0); return b; }(),
        {0xc1, 0x00},
        {0x1c},
        {0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
        {0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00},
        {0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
    };
    for (size_t i = 0; i < broken.size(); ++i) {
        CAPTURE(i);
        CHECK_THROWS_AS((void)analysis::parse_statistics(broken[i].data(), broken[i].size(), "x.stats.cbor"), common::Error);
    }
}

TEST_CASE("merge: counts that would overflow are refused, leaving the first statistics unchanged") {
    auto a = planted_stats(0, 21);
    auto b = planted_stats(2, 22);
    b.site_hits[0] = std::numeric_limits<int64_t>::max() - 1;
    const auto before = a.site_hits;
    try {
        analysis::merge_into(a, b, "a.stats.cbor", "b.stats.cbor");
        FAIL("merged counts that overflow");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find("site_hits") != std::string::npos);
    }
    CHECK(a.site_hits == before);
    CHECK(a.sequences == 2);
}

TEST_CASE("outliers.json: the whole shape is validated, with exit 2 naming the file and the field path") {
    tests::TempDir dir;
    const auto doc = result_document();
    CHECK(result_error(doc).empty());

    // hit_rate_by_site: [] indexed by site in the heatmap (SIGSEGV).
    auto d = doc;
    d["feature_profiles"][0]["hit_rate_by_site"] = json::array();
    tests::write_file(dir / "short.json", d.dump());
    auto p = analyze({"report", dir / "short.json"});
    CHECK(p.exit_code == 2);
    CHECK(p.err.find("short.json") != std::string::npos);
    CHECK(p.err.find("'feature_profiles[0].hit_rate_by_site'") != std::string::npos);

    // A wrong type was an internal error (exit 1) from json::value().
    d = doc;
    d["run"]["sequences"] = "many";
    tests::write_file(dir / "typed.json", d.dump());
    p = analyze({"report", dir / "typed.json"});
    CHECK(p.exit_code == 2);
    CHECK(p.err.find("'run.sequences'") != std::string::npos);
    p = analyze({"compare", dir / "typed.json"});
    CHECK(p.exit_code == 2);
    CHECK(p.err.find("'run.sequences'") != std::string::npos);

    const std::vector<std::pair<std::function<void(json &)>, const char *>> cases = {
        {[](json & j) { j.erase("layers"); }, "'layers'"},
        {[](json & j) { j["modes"]["paper"].erase("summary"); }, "'modes.paper.summary'"},
        {[](json & j) { j["modes"]["paper"]["summary"]["num_outliers"] = 2.5; }, "'modes.paper.summary.num_outliers'"},
        {[](json & j) { j["modes"]["predecessor"]["features"][0]["top_tokens"][0]["text"] = 5; }, "'modes.predecessor.features[0].top_tokens[0].text'"},
        {[](json & j) { j["modes"]["predecessor"]["features"][0].erase("top_tokens"); }, "'modes.predecessor.features[0].top_tokens'"},
        {[](json & j) { j["modes"]["predecessor"]["criteria"]["scope"] = json::array(); }, "'modes.predecessor.criteria.scope'"},
        {[](json & j) { j["layers"][1]["site"] = 3; }, "'layers[1].site'"},
        {[](json & j) { j["feature_profiles"][0]["max_abs_by_site"][2] = "big"; }, "'feature_profiles[0].max_abs_by_site[2]'"},
        {[](json & j) { j["histogram"]["lower_edges"][0] = -1; }, "'histogram.lower_edges[0]'"},
        {[](json & j) { j["histogram"]["counts"]["ln_mlp"][3] = 0.5; }, "'histogram.counts.ln_mlp[3]'"},
        {[](json & j) { j["massive_activations"] = {{"criterion", json::object()}, {"layers", json::array({{{"top", json::array()}}})}}; },
         "'massive_activations.layers[0].top'"},
        {[](json & j) { j["run"]["threshold"] = std::numeric_limits<double>::infinity(); }, "'run.threshold'"},
        {[](json & j) { j["run"]["partial"] = 1; }, "'run.partial'"},
    };
    for (size_t i = 0; i < cases.size(); ++i) {
        CAPTURE(i);
        d = doc;
        cases[i].first(d);
        const auto why = result_error(d);
        CHECK_MESSAGE(why.find(cases[i].second) != std::string::npos, why);
    }

    // Nesting (in run metadata, say) is bounded while parsing.
    std::string deep = "{\"schema\": \"toolkit.analysis.result\", \"x\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
    CHECK_THROWS_AS((void)analysis::parse_result(deep, "deep.json"), common::Error);
}

TEST_CASE("outliers.json: a non-finite max |x| (written as null) reads back, renders and plots") {
    auto s = planted_stats(0, 31);
    s.site_max_abs[5 * 1] = std::numeric_limits<float>::infinity();  // fp16 overflow in a capture
    auto r = analysis::build_result(s, analysis::ReportOptions{}, {});
    const auto back = analysis::parse_result(r.dump(), "inf.json");
    CHECK(back.at("feature_profiles").at(0).at("max_abs_by_site").at(0).is_null());
    CHECK(analysis::render_markdown(back, {}).find("| 5 |") != std::string::npos);
    analysis_fuzz::check_validated_result(back);
}

TEST_CASE("fuzz regressions: every committed input keeps its parser's property") {
    namespace fs = std::filesystem;
    size_t replayed = 0;
    for (const char * parser : {"stats_file", "result_json"}) {
        const fs::path dir = fs::path(ANALYSIS_FUZZ_REGRESSIONS_DIR) / parser;
        REQUIRE(fs::is_directory(dir));
        for (const auto & e : fs::directory_iterator(dir)) {
            if (!e.is_regular_file()) continue;
            CAPTURE(e.path().string());
            const auto bytes = read_bytes(e.path().string());
            if (std::string(parser) == "stats_file") analysis_fuzz::check_statistics_bytes(bytes.data(), bytes.size());
            else analysis_fuzz::check_result_text(std::string_view(reinterpret_cast<const char *>(bytes.data()), bytes.size()));
            ++replayed;
        }
    }
    CHECK(replayed > 0);
}

TEST_CASE("inputs and flags: a missing file is exit 9, a directory or FIFO exit 2, out-of-range flags exit 2, all naming what") {
    tests::TempDir dir;
    const std::string missing = dir / "nowhere/outliers.json";
    for (const std::vector<std::string> & args :
         {std::vector<std::string>{"report", missing}, {"compare", missing},
          {"merge", dir / "a.stats.cbor", dir / "b.stats.cbor", "-o", dir / "m.stats.cbor"}, {"run", dir / "no-run"}}) {
        auto p = analyze(args);
        CAPTURE(args[0]);
        CHECK(p.exit_code == 9);
        CHECK(p.err.find(dir.path()) != std::string::npos);
    }
    // A directory where a file belongs used to end as "unexpected error" (exit 1); a FIFO blocked.
    std::filesystem::create_directories(dir / "d.json");
    const std::string fifo = dir / "f.json", fifo_stats = dir / "f.stats.cbor";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    REQUIRE(::mkfifo(fifo_stats.c_str(), 0600) == 0);
    for (const std::vector<std::string> & args :
         {std::vector<std::string>{"report", dir / "d.json"}, {"compare", dir / "d.json"}, {"report", dir / "f.json"},
          {"merge", dir / "f.stats.cbor", dir / "f.stats.cbor", "-o", dir / "m.stats.cbor"}}) {
        auto p = analyze(args);
        CAPTURE(args[0]);
        CAPTURE(args[1]);
        CHECK(p.exit_code == 2);
        CHECK(p.err.find(args[1]) != std::string::npos);
    }
    // Each of these was accepted (a negative count silently meant "off") or failed as exit 1/4.
    const std::string run_dir = dir / "no-run";
    for (const std::vector<std::string> & args :
         {std::vector<std::string>{"--token-dims", "-3"}, {"--massive", "-2"}, {"--threshold", "0"},
          {"--threshold", "nan"}, {"--threshold", "-6"}, {"--device", "tpu"}, {"--device", "cuda:x"}}) {
        std::vector<std::string> argv = {"run", run_dir};
        argv.insert(argv.end(), args.begin(), args.end());
        auto p = analyze(argv);
        CAPTURE(args[0]);
        CAPTURE(args[1]);
        CHECK(p.exit_code == 2);
        CHECK(p.err.find(args[0]) != std::string::npos);
    }
    auto p = analyze({"extract", "-o", dir / "x", "--checkpoint-every", "-1", "--", "run", dir / "m"});
    CHECK(p.exit_code == 2);
    CHECK(p.err.find("--checkpoint-every") != std::string::npos);
}
