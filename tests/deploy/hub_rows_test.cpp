// data.hub_rows (deploy/hub_rows.h) against the dataset viewer emulator (tests/emulators/
// hf_datasets.py): the documented answer read page by page, every hostile answer refused naming
// what was wrong, retries, auth, the row cache, and the pre-renting check that a run's local data
// can fill its windows (deploy/data_check.h).
#include <algorithm>
#include <filesystem>
#include <thread>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/error.h"
#include "common/sha256.h"
#include "deploy/data_check.h"
#include "deploy/hub_rows.h"
#include "deploy/remote_plan.h"
#include "deploy/run_config.h"
#include "tests/support/emulator.h"
#include "tests/support/error_of.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;
using deploy::HubRowsSource;
using tests::error_of;

namespace {

const HubRowsSource kFineWeb{"HuggingFaceFW/fineweb-edu", "default", "train", "text"};

// Options that point at the emulator and a test's own cache, with retries that do not wait long.
deploy::HubRowsOptions options_for(const tests::Emulator & emu, const tests::TempDir & dir) {
    deploy::HubRowsOptions o;
    o.endpoint = emu.base_url();
    o.cache_dir = dir / "cache";
    o.token_env = "HUB_ROWS_TEST_TOKEN";
    o.http.backoff_base_s = 0.01;
    o.http.backoff_max_s = 0.05;
    return o;
}

// The emulator's requests to /rows so far, and their offsets.
std::vector<int> offsets_asked(tests::Emulator & emu) {
    std::vector<int> out;
    const auto state = emu.state();  // held: a range-for over a temporary's member would dangle
    for (const auto & r : state["requests"])
        if (r["path"] == "/rows") out.push_back(std::stoi(r["query"]["offset"][0].get<std::string>()));
    return out;
}

// Rows [0, n) as the emulator serves them, read directly (not through the code under test).
std::vector<std::string> served_texts(tests::Emulator & emu, int n) {
    std::vector<std::string> out;
    for (int offset = 0; offset < n; offset += 100) {
        auto reply = tests::http_call(emu.port(), "GET",
                                      "/rows?dataset=HuggingFaceFW%2Ffineweb-edu&config=default&split=train&offset=" + std::to_string(offset) +
                                          "&length=100");
        const auto answer = reply.json();
        for (const auto & r : answer["rows"]) out.push_back(r["row"]["text"].get<std::string>());
    }
    out.resize(static_cast<size_t>(std::min<int>(n, static_cast<int>(out.size()))));
    return out;
}

// An answer of the documented shape holding `rows` (nlohmann's brace lists are spelled out as
// arrays: a one-element list would otherwise be taken as its element).
std::string page(const std::vector<nlohmann::json> & rows, const nlohmann::json & extra = nlohmann::json::object()) {
    nlohmann::json feature{{"feature_idx", 0}, {"name", "text"}, {"type", {{"dtype", "string"}, {"_type", "Value"}}}};
    nlohmann::json j{{"features", nlohmann::json::array({feature})},
                     {"rows", nlohmann::json(rows)},
                     {"num_rows_total", 1000},
                     {"num_rows_per_page", 100},
                     {"partial", false}};
    j.update(extra);
    return j.dump();
}

nlohmann::json row(int idx, const nlohmann::json & text, const nlohmann::json & truncated = nlohmann::json::array()) {
    return {{"row_idx", idx}, {"row", {{"text", text}, {"id", "x"}}}, {"truncated_cells", truncated}};
}

std::string parse_error(const std::string & body, int64_t offset = 0, int64_t asked = 100) {
    return error_of([&] { (void)deploy::parse_hub_rows_page(body, kFineWeb, offset, asked, "rows"); });
}

deploy::DataConfig data_with(int64_t n, int64_t len, int64_t overlap) {
    deploy::DataConfig d;
    d.num_sequences = n;
    d.sequence_length = len;
    d.overlap = overlap;
    return d;
}

}  // namespace

TEST_CASE("hub rows: dataset, config, split and field are checked before they go into a URL") {
    CHECK_NOTHROW(deploy::check_hub_rows_source(kFineWeb));
    CHECK_NOTHROW(deploy::check_hub_rows_source({"squad", "plain_text", "validation", "context"}));
    CHECK_NOTHROW(deploy::check_hub_rows_source({"HuggingFaceFW/fineweb-edu", "CC-MAIN-2024-10", "train", "text"}));
    for (const char * bad : {"", "a/b/c", "a b/c", "a/$(reboot)", "owner/-name", "owner/na..me", "owner/na--me", "/name", "owner/",
                             "a/b;c", "a/b&config=x"}) {
        CAPTURE(bad);
        CHECK(error_of([&] { deploy::check_hub_rows_source({bad, "default", "train", "text"}); }).find("data.hub_rows.dataset: ") == 0);
    }
    CHECK(error_of([&] { deploy::check_hub_rows_source({"a/b", "x&split=y", "train", "text"}); }).find("data.hub_rows.config: ") == 0);
    CHECK(error_of([&] { deploy::check_hub_rows_source({"a/b", "default", "", "text"}); }).find("data.hub_rows.split: ") == 0);
    CHECK(error_of([&] { deploy::check_hub_rows_source({"a/b", "default", "tr ain", "text"}); }).find("data.hub_rows.split: ") == 0);
    CHECK(error_of([&] { deploy::check_hub_rows_source({"a/b", "default", "train", "te\nxt"}); }).find("data.hub_rows.field: ") == 0);
    CHECK(error_of([&] { deploy::check_hub_rows_source({"a/b", "default", "train", ""}); }).find("data.hub_rows.field: ") == 0);
    // Each value is percent-encoded into its own query parameter.
    CHECK(deploy::hub_rows_url("https://h", kFineWeb, 200, 100) ==
          "https://h/rows?dataset=HuggingFaceFW%2Ffineweb-edu&config=default&split=train&offset=200&length=100");
    {
        tests::EnvGuard e(deploy::kHubRowsEndpointEnv, std::nullopt);
        CHECK(deploy::hub_rows_endpoint() == "https://datasets-server.huggingface.co");
    }
    {
        tests::EnvGuard e(deploy::kHubRowsEndpointEnv, "http://127.0.0.1:5/");
        CHECK(deploy::hub_rows_endpoint() == "http://127.0.0.1:5");
    }
    {
        tests::EnvGuard e(deploy::kHubRowsEndpointEnv, "file:///etc/passwd");
        CHECK(error_of([] { (void)deploy::hub_rows_endpoint(); }).find("HF_DATASETS_SERVER_URL: ") == 0);
    }
}

TEST_CASE("hub rows: the documented answer is read, and every answer that is not it is refused naming what is wrong") {
    auto ok = deploy::parse_hub_rows_page(page({row(100, "a b"), row(101, "c")}), kFineWeb, 100, 100, "rows");
    CHECK(ok.texts == std::vector<std::string>{"a b", "c"});
    CHECK(ok.num_rows_total == 1000);
    CHECK_FALSE(ok.partial);
    // A cell of another column may be cut (the viewer's truncation); the text may not.
    CHECK(deploy::parse_hub_rows_page(page({row(0, "a", nlohmann::json::array({"id"}))}), kFineWeb, 0, 100, "rows").texts.size() == 1);
    CHECK(parse_error(page({row(0, "a"), row(1, "b", nlohmann::json::array({"text"}))})).find("row 1: the server cut its 'text' cell") != std::string::npos);
    // row_idx must follow on from the offset asked: skipped, repeated or out-of-order rows.
    CHECK(parse_error(page({row(5, "a")}), 4).find("row_idx 5 where 4 was due") != std::string::npos);
    CHECK(parse_error(page({row(0, "a"), row(0, "b")})).find("row_idx 0 where 1 was due") != std::string::npos);
    CHECK(parse_error(page({row(-1, "a")})).find("rows[0] has no row_idx") != std::string::npos);
    CHECK(parse_error(page({row(0, "a"), row(1, "b"), row(2, "c")}), 0, 2).find("3 rows in the answer; 2 were asked") != std::string::npos);
    // Types.
    CHECK(parse_error("[1, 2]").find("not an object") != std::string::npos);
    CHECK(parse_error("{\"rows\": {}}").find("no rows array") != std::string::npos);
    CHECK(parse_error(page({nlohmann::json(1)})).find("rows[0] is a number") != std::string::npos);
    CHECK(parse_error(page({nlohmann::json{{"row_idx", 0}, {"row", "x"}}})).find("row 0 has no row object") != std::string::npos);
    CHECK(parse_error(page({row(0, "a", "text")})).find("truncated_cells is not an array") != std::string::npos);
    CHECK(parse_error(page({row(0, "a")}, {{"num_rows_total", -3}})).find("num_rows_total is not a count") != std::string::npos);
    CHECK(parse_error(page({row(0, "a")}, {{"partial", "no"}})).find("partial is not true or false") != std::string::npos);
    CHECK(parse_error("{\"error\": \"The response is not ready yet. Please retry later.\"}").find("the server says: The response is not ready") !=
          std::string::npos);
    CHECK(parse_error("{\"rows\": [").find("answer is not JSON") != std::string::npos);
    // A cell that is not text, and a field the split does not have, are the config's to fix (usage).
    try {
        (void)deploy::parse_hub_rows_page(page({row(0, 7)}), kFineWeb, 0, 100, "rows");
        FAIL("a number cell was taken as text");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find("row 0 of HuggingFaceFW/fineweb-edu: column 'text' holds a number, not text") != std::string::npos);
    }
    HubRowsSource typo = kFineWeb;
    typo.field = "txt";
    try {
        (void)deploy::parse_hub_rows_page(page({row(0, "a")}), typo, 0, 100, "rows");
        FAIL("a missing column was not refused");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find("has no column 'txt'; its columns: text") != std::string::npos);
    }
    // Bounds before the answer is built in full: nesting, value count, size.
    CHECK(parse_error(std::string(100000, '[')).find("nests deeper than") != std::string::npos);
    std::string many = "{\"rows\": [" + std::string(2000000 * 2 - 1, ',') + "]}";
    for (size_t i = 10; i < many.size() - 2; i += 2) many[i] = '0';
    CHECK(parse_error(many).find("more than 1000000 values") != std::string::npos);
    CHECK(parse_error(std::string(deploy::kMaxHubRowsAnswerBytes + 1, ' ')).find("answer larger than") != std::string::npos);
    // Wrong shapes are the server's (network, exit 6), never a crash or a usage error.
    try {
        (void)deploy::parse_hub_rows_page(page({row(3, "a")}), kFineWeb, 0, 100, "rows");
        FAIL("a wrong row_idx was accepted");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Network);
    }
}

TEST_CASE("hub rows: the split's first rows reach the target, joined with one space, with their record, in pages from offset 0") {
    tests::TempDir dir("hub-rows");
    tests::Emulator emu("hf_datasets");
    // ~1000 rows of ~300 bytes; 6000 tokens x 8 bytes = 48,000 bytes: two pages.
    auto r = deploy::prepare_hub_rows(kFineWeb, 6000, dir / "run/data", options_for(emu, dir));
    CHECK(r.requests == 2);
    CHECK(offsets_asked(emu) == std::vector<int>{0, 100});
    const auto state = emu.state();
    for (const auto & q : state["requests"]) CHECK(q["query"]["length"][0] == "100");
    const std::string text = tests::read_file(r.text_path);
    CHECK(r.text_path == dir / "run/data/hub_rows.txt");
    const int k = r.record["rows"].get<int>();
    const auto served = served_texts(emu, k);
    std::string expected;
    for (int i = 0; i < k; ++i) expected += (i ? " " : "") + served[static_cast<size_t>(i)];
    CHECK(text == expected);
    // The fewest rows that reach the target: one row less would not.
    CHECK(static_cast<int64_t>(text.size()) >= 48000);
    CHECK(static_cast<int64_t>(text.size() - served.back().size() - 1) < 48000);
    CHECK(k > 100);
    const auto record = nlohmann::json::parse(tests::read_file(dir / "run/data/hub_rows.json"));
    CHECK(record == r.record);
    CHECK(record["dataset"] == "HuggingFaceFW/fineweb-edu");
    CHECK(record["config"] == "default");
    CHECK(record["split"] == "train");
    CHECK(record["field"] == "text");
    CHECK(record["bytes"] == text.size());
    CHECK(record["sha256"] == common::sha256_hex(text));
    CHECK(record["tokens_needed"] == 6000);
    CHECK(record["target_bytes"] == 48000);
    CHECK(record["num_rows_total"] == 1000);
    CHECK(record["from_cache"] == false);
    CHECK(record["pages_fetched"] == 2);
    CHECK(record["endpoint"] == emu.base_url());
    CHECK(record["first_fetched_unix"].get<double>() > 1.7e9);
    CHECK(record["last_fetched_unix"].get<double>() >= record["first_fetched_unix"].get<double>());
    CHECK(record["restarted_because"].is_null());
    CHECK(deploy::verify_hub_rows_input(dir / "run/data") == record);
    // A pushed text that is not what was fetched is refused naming it.
    tests::write_file(dir / "run/data/hub_rows.txt", text + " extra");
    CHECK(error_of([&] { (void)deploy::verify_hub_rows_input(dir / "run/data"); }).find("hub_rows.txt: its sha256 differs") != std::string::npos);
}

TEST_CASE("hub rows: a second run reads the cache without a request, a larger one checks page 0 and asks the pages it lacks, a tampered cache is fetched again") {
    tests::TempDir dir("hub-rows-cache");
    tests::Emulator emu("hf_datasets");
    const auto o = options_for(emu, dir);
    auto first = deploy::prepare_hub_rows(kFineWeb, 1000, dir / "a", o);
    CHECK(first.requests == 1);
    auto second = deploy::prepare_hub_rows(kFineWeb, 1000, dir / "b", o);
    CHECK(second.requests == 0);
    CHECK(offsets_asked(emu) == std::vector<int>{0});
    CHECK(second.record["from_cache"] == true);
    CHECK(tests::read_file(dir / "a/hub_rows.txt") == tests::read_file(dir / "b/hub_rows.txt"));
    // A run that needs more asks page 0 again (the dataset is unchanged: its rows are kept), then
    // from where the cache ends.
    auto larger = deploy::prepare_hub_rows(kFineWeb, 12000, dir / "c", o);
    CHECK(larger.requests >= 3);
    CHECK(offsets_asked(emu) == std::vector<int>{0, 0, 100, 200, 300});
    CHECK(larger.record["restarted_because"].is_null());
    CHECK(larger.record["first_fetched_unix"] == first.record["first_fetched_unix"]);
    // The smaller run's text is a prefix of the larger one's (the same first rows).
    CHECK(tests::read_file(dir / "c/hub_rows.txt").rfind(tests::read_file(dir / "a/hub_rows.txt"), 0) == 0);
    // One byte of the cached rows changed: not trusted, fetched again from offset 0, same result.
    std::string cache_file;
    for (const auto & e : fs::directory_iterator(dir / "cache"))
        if (e.path().extension() == ".jsonl") cache_file = e.path().string();
    REQUIRE_FALSE(cache_file.empty());
    CHECK(fs::path(cache_file).filename().string().rfind("HuggingFaceFW-fineweb-edu--default--train-", 0) == 0);
    std::string cached = tests::read_file(cache_file);
    cached[20] = cached[20] == 'a' ? 'b' : 'a';
    tests::write_file(cache_file, cached);
    emu.reset();
    auto again = deploy::prepare_hub_rows(kFineWeb, 1000, dir / "d", o);
    CHECK(again.requests == 1);
    CHECK(offsets_asked(emu) == std::vector<int>{0});
    CHECK(tests::read_file(dir / "d/hub_rows.txt") == tests::read_file(dir / "a/hub_rows.txt"));
    // Another field of the same split is another cache entry.
    emu.reset();
    HubRowsSource url = kFineWeb;
    url.field = "url";
    CHECK(deploy::prepare_hub_rows(url, 1000, dir / "e", o).requests >= 1);
    // The default cache folder follows XDG_CACHE_HOME.
    tests::EnvGuard xdg("XDG_CACHE_HOME", dir / "xdg");
    CHECK(deploy::hub_rows_cache_dir() == dir / "xdg/toolkit/hub-rows");
}

TEST_CASE("hub rows: a cache made from another endpoint is never served for this one, and the record names where its rows came from") {
    tests::TempDir dir("hub-rows-endpoint");
    tests::Emulator a("hf_datasets");
    tests::Emulator b("hf_datasets");  // another server: the same names, other documents
    b.configure({{"splits", {{{"dataset", "HuggingFaceFW/fineweb-edu"}, {"config", "default"}, {"split", "train"}, {"num_rows", 1000},
                              {"doc_bytes", 301}}}}});
    common::FakeClock clock;
    auto from = [&](const tests::Emulator & emu) {
        auto o = options_for(emu, dir);  // one cache folder for both
        o.http.clock = &clock;
        return o;
    };
    const double t1 = clock.unix_now();
    auto first = deploy::prepare_hub_rows(kFineWeb, 1000, dir / "a1", from(a));
    CHECK(first.requests == 1);
    clock.advance(std::chrono::hours(2));
    auto other = deploy::prepare_hub_rows(kFineWeb, 1000, dir / "b1", from(b));
    CHECK(other.requests == 1);  // asked b, not served a's rows
    CHECK(offsets_asked(b) == std::vector<int>{0});
    const int k = other.record["rows"].get<int>();
    const auto served = served_texts(b, k);
    std::string expected;
    for (int i = 0; i < k; ++i) expected += (i ? " " : "") + served[static_cast<size_t>(i)];
    CHECK(tests::read_file(dir / "b1/hub_rows.txt") == expected);
    CHECK(tests::read_file(dir / "b1/hub_rows.txt") != tests::read_file(dir / "a1/hub_rows.txt"));
    CHECK(other.record["endpoint"] == b.base_url());
    CHECK(other.record["from_cache"] == false);
    // Back to a: its own cache, its endpoint and the time its rows were fetched, not this run's.
    clock.advance(std::chrono::hours(2));
    auto again = deploy::prepare_hub_rows(kFineWeb, 1000, dir / "a2", from(a));
    CHECK(again.requests == 0);
    CHECK(offsets_asked(a) == std::vector<int>{0});
    CHECK(again.record["from_cache"] == true);
    CHECK(again.record["endpoint"] == a.base_url());
    CHECK(again.record["first_fetched_unix"].get<double>() == t1);
    CHECK(again.record["last_fetched_unix"].get<double>() == t1);
    CHECK(tests::read_file(dir / "a2/hub_rows.txt") == tests::read_file(dir / "a1/hub_rows.txt"));
    // A cache record naming another endpoint (edited, or a name that collides) is not served either.
    for (const auto & e : fs::directory_iterator(dir / "cache")) {
        if (e.path().extension() != ".json") continue;
        auto rec = nlohmann::json::parse(tests::read_file(e.path()));
        if (rec["endpoint"] != a.base_url()) continue;
        rec["endpoint"] = "http://127.0.0.1:1";
        tests::write_file(e.path(), rec.dump());
    }
    auto edited = deploy::prepare_hub_rows(kFineWeb, 1000, dir / "a3", from(a));
    CHECK(edited.requests == 1);
    CHECK(edited.record["endpoint"] == a.base_url());
}

TEST_CASE("hub rows: a cache extended after the dataset changed is taken again from row 0, never spliced") {
    tests::TempDir dir("hub-rows-changed");
    tests::Emulator emu("hf_datasets");
    auto split = [](int num_rows, int doc_bytes) {
        return nlohmann::json{{"splits", {{{"dataset", "HuggingFaceFW/fineweb-edu"}, {"config", "default"}, {"split", "train"},
                                           {"num_rows", num_rows}, {"doc_bytes", doc_bytes}}}}};
    };
    common::FakeClock clock;
    auto o = options_for(emu, dir);
    o.http.clock = &clock;
    // What a run with no cache reads from the split as it is now.
    auto fresh = [&](const std::string & name, int64_t tokens) {
        auto x = o;
        x.cache_dir = dir / ("cache-" + name);
        return tests::read_file(deploy::prepare_hub_rows(kFineWeb, tokens, dir / name, x).text_path);
    };
    // Run 1 caches rows 0-99; the documents change (the same count); run 2 needs ~320 rows.
    CHECK(deploy::prepare_hub_rows(kFineWeb, 1000, dir / "r1", o).requests == 1);
    emu.configure(split(1000, 301));
    emu.reset();
    clock.advance(std::chrono::hours(30));
    auto r2 = deploy::prepare_hub_rows(kFineWeb, 12000, dir / "r2", o);
    CHECK(offsets_asked(emu) == std::vector<int>{0, 100, 200, 300});  // page 0 once: it is the new start
    CHECK(tests::read_file(r2.text_path) == fresh("f2", 12000));
    CHECK(r2.record["restarted_because"].get<std::string>().find("the split changed since its rows were cached on ") != std::string::npos);
    CHECK(r2.record["restarted_because"].get<std::string>().find("(row 10 differs from the cached one)") != std::string::npos);
    CHECK(r2.record["first_fetched_unix"].get<double>() == clock.unix_now());
    CHECK(r2.record["from_cache"] == false);
    // The split grows (its first rows as before): its row count is part of what is compared.
    emu.configure(split(1200, 301));
    emu.reset();
    auto r3 = deploy::prepare_hub_rows(kFineWeb, 24000, dir / "r3", o);
    CHECK(offsets_asked(emu).at(0) == 0);
    CHECK(offsets_asked(emu).at(1) == 100);
    CHECK(r3.record["restarted_because"].get<std::string>().find("its split now has 1200 rows, 1000 when cached") != std::string::npos);
    CHECK(tests::read_file(r3.text_path) == fresh("f3", 24000));
}

TEST_CASE("hub rows: a split that changes between two pages of one fetch is read again from row 0, at most 3 times") {
    tests::TempDir dir("hub-rows-midfetch");
    tests::Emulator emu("hf_datasets");
    auto o = options_for(emu, dir);
    // A new version is published after the first page was served: more rows, other documents.
    emu.configure({{"changes", {{{"after_requests", 1}, {"num_rows", 1200}, {"doc_bytes", 301}}}}});
    auto r = deploy::prepare_hub_rows(kFineWeb, 6000, dir / "a", o);
    CHECK(offsets_asked(emu) == std::vector<int>{0, 100, 0, 100});
    CHECK(r.record["restarted_because"].get<std::string>().find("the split changed while its rows were read (the page at row 100 says 1200 rows, 1000 before)") !=
          std::string::npos);
    CHECK(r.record["num_rows_total"] == 1200);
    auto x = o;
    x.cache_dir = dir / "cache-fresh";
    CHECK(tests::read_file(r.text_path) == tests::read_file(deploy::prepare_hub_rows(kFineWeb, 6000, dir / "b", x).text_path));
    // A split that changes at every request is given up on, with nothing written.
    emu.reset();
    nlohmann::json changes = nlohmann::json::array();
    for (int i = 1; i <= 10; ++i) changes.push_back({{"after_requests", i}, {"num_rows", 1200 + i}});
    emu.configure({{"changes", changes}});
    x.cache_dir = dir / "cache-busy";
    try {
        (void)deploy::prepare_hub_rows(kFineWeb, 6000, dir / "c", x);
        FAIL("a split that never stays still was read");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Network);
        CHECK(e.message().find("(config default, split train) changed 4 times while its rows were read") != std::string::npos);
    }
    CHECK(offsets_asked(emu).size() == 8);
    CHECK_FALSE(fs::exists(dir / "c/hub_rows.txt"));
}

TEST_CASE("hub rows: members of a sweep starting at once fetch the rows once, the others wait for the cache") {
    tests::TempDir dir("hub-rows-once");
    tests::Emulator emu("hf_datasets", {.latency_ms = 300});  // each answer slow enough for the others to arrive meanwhile
    const auto o = options_for(emu, dir);
    std::vector<std::thread> members;
    std::vector<int> requests(4, -1);
    for (int i = 0; i < 4; ++i)
        members.emplace_back([&, i] { requests[static_cast<size_t>(i)] = deploy::prepare_hub_rows(kFineWeb, 6000, dir / ("m" + std::to_string(i)), o).requests; });
    for (auto & t : members) t.join();
    CHECK(offsets_asked(emu) == std::vector<int>{0, 100});
    CHECK(std::count(requests.begin(), requests.end(), 2) == 1);
    CHECK(std::count(requests.begin(), requests.end(), 0) == 3);
    for (int i = 1; i < 4; ++i) CHECK(tests::read_file(dir / ("m" + std::to_string(i)) + "/hub_rows.txt") == tests::read_file(dir / "m0/hub_rows.txt"));
}

TEST_CASE("hub rows: 5xx and answers that are not JSON are retried, then fail as network errors, and a 404 is not found") {
    tests::TempDir dir("hub-rows-retry");
    tests::Emulator emu("hf_datasets");
    const auto o = options_for(emu, dir);
    emu.inject({{"kind", "http_status"}, {"status", 503}, {"count", 2}});
    CHECK(deploy::prepare_hub_rows(kFineWeb, 1000, dir / "a", o).record["rows"].get<int>() > 0);
    CHECK(offsets_asked(emu) == std::vector<int>{0, 0, 0});
    // A fresh cache for each case from here on.
    auto fresh = [&](const std::string & name) {
        auto x = o;
        x.cache_dir = dir / ("cache-" + name);
        return x;
    };
    emu.reset();
    emu.inject({{"kind", "malformed_json"}, {"count", 1}});
    CHECK_NOTHROW(deploy::prepare_hub_rows(kFineWeb, 1000, dir / "c", fresh("c")));
    CHECK(offsets_asked(emu).size() == 2);
    emu.reset();
    emu.inject({{"kind", "malformed_json"}, {"count", 10}});
    try {
        (void)deploy::prepare_hub_rows(kFineWeb, 1000, dir / "d", fresh("d"));
        FAIL("a server that never sends JSON was accepted");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Network);
        CHECK(e.message().find("answer is not JSON") != std::string::npos);
    }
    CHECK(offsets_asked(emu).size() == 4);  // the client's attempts, no more
    emu.reset();
    emu.inject({{"kind", "http_status"}, {"status", 500}, {"count", 10}, {"message", "The response is not ready yet."}});
    try {
        (void)deploy::prepare_hub_rows(kFineWeb, 1000, dir / "e", fresh("e"));
        FAIL("a server that answers 500 was accepted");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Network);
        CHECK(e.message().find("HTTP 500 after 4 attempts: {\"error\": \"The response is not ready yet.\"}") != std::string::npos);
    }
    emu.reset();
    HubRowsSource missing = kFineWeb;
    missing.dataset = "nobody/nothing";
    try {
        (void)deploy::prepare_hub_rows(missing, 1000, dir / "f", fresh("f"));
        FAIL("an unknown dataset was accepted");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::NotFound);
        CHECK(e.message().find("nobody/nothing (config default, split train) rows 0..: no such dataset, config or split") != std::string::npos);
    }
    HubRowsSource typo = kFineWeb;
    typo.field = "body";
    CHECK(error_of([&] { (void)deploy::prepare_hub_rows(typo, 1000, dir / "g", fresh("g")); })
              .find("has no column 'body'; its columns: text, id, dump, url") != std::string::npos);
}

TEST_CASE("hub rows: truncated text, a wrong row_idx, a huge answer and a cell that is not text are refused, and nothing is written") {
    tests::TempDir dir("hub-rows-hostile");
    tests::Emulator emu("hf_datasets");
    int n = 0;
    auto attempt = [&](const nlohmann::json & fault) {
        emu.reset();
        emu.inject(fault);
        auto o = options_for(emu, dir);
        o.cache_dir = dir / ("cache-" + std::to_string(++n));
        std::string msg = error_of([&] { (void)deploy::prepare_hub_rows(kFineWeb, 1000, dir / ("out-" + std::to_string(n)), o); });
        CHECK_FALSE(fs::exists(dir / ("out-" + std::to_string(n)) + "/hub_rows.txt"));
        for (const auto & e : fs::directory_iterator(o.cache_dir)) CHECK(e.path().extension() == ".lock");  // no rows cached
        return msg;
    };
    CHECK(attempt({{"kind", "truncated_cells"}, {"row", 7}}).find("row 7: the server cut its 'text' cell (truncated_cells)") != std::string::npos);
    CHECK(attempt({{"kind", "wrong_row_idx"}}).find("row_idx 1 where 0 was due") != std::string::npos);
    CHECK(attempt({{"kind", "huge_answer"}, {"bytes", 40 << 20}}).find("response larger than 33554432 bytes; refused") != std::string::npos);
    CHECK(attempt({{"kind", "text_not_string"}}).find("column 'text' holds a number, not text") != std::string::npos);
}

TEST_CASE("hub rows: a split that ends before the target is refused naming its rows, and its rows are kept for the next try") {
    tests::TempDir dir("hub-rows-short");
    tests::Emulator emu("hf_datasets");
    emu.configure({{"splits", {{{"dataset", "HuggingFaceFW/fineweb-edu"}, {"config", "default"}, {"split", "train"}, {"num_rows", 130}, {"doc_bytes", 300}}}}});
    const auto o = options_for(emu, dir);
    try {
        (void)deploy::prepare_hub_rows(kFineWeb, 17408, dir / "a", o);
        FAIL("a split too short was accepted");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find("HuggingFaceFW/fineweb-edu (config default, split train) ends after 130 rows holding ") != std::string::npos);
        CHECK(e.message().find("the run needs 139264 (17408 tokens x 8 bytes)") != std::string::npos);
    }
    // num_rows_total said where the split ends: no request past it.
    CHECK(offsets_asked(emu) == std::vector<int>{0, 100});
    CHECK_FALSE(fs::exists(dir / "a/hub_rows.txt"));
    // The 130 rows are cached: a run they suffice for asks nothing.
    CHECK(deploy::prepare_hub_rows(kFineWeb, 1000, dir / "b", o).requests == 0);
    // The split has grown since (its first rows unchanged): the cached count of 130 does not end
    // the next fetch; page 0 is asked, the new count seen, and the rows read from row 0.
    emu.configure({{"splits", {{{"dataset", "HuggingFaceFW/fineweb-edu"}, {"config", "default"}, {"split", "train"}, {"num_rows", 1000}, {"doc_bytes", 300}}}}});
    emu.reset();
    auto grown = deploy::prepare_hub_rows(kFineWeb, 17408, dir / "c", o);
    CHECK(offsets_asked(emu).at(0) == 0);
    CHECK(offsets_asked(emu).size() >= 5);
    CHECK(grown.record["num_rows_total"] == 1000);
    CHECK(grown.record["restarted_because"].get<std::string>().find("its split now has 1000 rows, 130 when cached") != std::string::npos);
}

TEST_CASE("hub rows: the token in the configured variable is sent as a bearer token, and a gated dataset without it names the variable") {
    tests::TempDir dir("hub-rows-auth");
    tests::Emulator emu("hf_datasets", {.api_key = "hf_test_secret"});
    emu.configure({{"require_token", true}});
    auto o = options_for(emu, dir);
    {
        tests::EnvGuard none("HUB_ROWS_TEST_TOKEN", std::nullopt);
        try {
            (void)deploy::prepare_hub_rows(kFineWeb, 1000, dir / "a", o);
            FAIL("a refused request was accepted");
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Auth);
            CHECK(e.message().find("refused (HTTP 401)") != std::string::npos);
            CHECK(e.message().find("accept its terms on the Hub and set HUB_ROWS_TEST_TOKEN") != std::string::npos);
        }
    }
    {
        tests::EnvGuard wrong("HUB_ROWS_TEST_TOKEN", "hf_wrong_one");
        std::string msg = error_of([&] { (void)deploy::prepare_hub_rows(kFineWeb, 1000, dir / "b", o); });
        CHECK(msg.find("the token in HUB_ROWS_TEST_TOKEN was refused") != std::string::npos);
        CHECK(msg.find("hf_wrong_one") == std::string::npos);
    }
    tests::EnvGuard right("HUB_ROWS_TEST_TOKEN", "hf_test_secret");
    CHECK(deploy::prepare_hub_rows(kFineWeb, 1000, dir / "c", o).requests == 1);
    auto requests = emu.state()["requests"];
    CHECK(requests.back()["headers"]["authorization"] == "<redacted>");  // sent (the emulator logs it redacted)
}

TEST_CASE("data check: a local text, jsonl or tokens file too small for the windows is refused before renting, naming it") {
    tests::TempDir dir("data-check");
    auto d = data_with(16, 2048, 1024);
    CHECK(deploy::tokens_needed(d) == 17408);
    CHECK(deploy::tokens_needed(data_with(16, 2048, 0)) == 32768);
    CHECK(deploy::tokens_needed(data_with(1, 64, 0)) == 64);
    // The shipped sample (13 KB) for a 16 x 2048 run: the failure extract met on the instance.
    d.jsonl_file = std::string(TOOLKIT_SOURCE_DIR) + "/examples/data/sample.jsonl";
    std::string msg = error_of([&] { deploy::check_data_fills_run(d); });
    CHECK(msg.find("data.jsonl: " + d.jsonl_file + " holds ") == 0);
    CHECK(msg.find("fewer than the 17408 tokens the run needs (16 sequences of 2048, overlapping by 1024)") != std::string::npos);
    // Text: bytes + a few special tokens per document, exactly at the bound.
    d = data_with(2, 100, 0);
    d.text_file = dir / "a.txt";
    tests::write_file(d.text_file, std::string(196, 'x'));
    CHECK_NOTHROW(deploy::check_data_fills_run(d));
    tests::write_file(d.text_file, std::string(195, 'x'));
    msg = error_of([&] { deploy::check_data_fills_run(d); });
    CHECK(msg.find("data.text: " + d.text_file + " holds 195 bytes of text (at most 199 tokens") == 0);
    // JSONL: the documents' text, not the JSON around it.
    d = data_with(1, 30, 0);
    d.jsonl_file = dir / "a.jsonl";
    tests::write_file(d.jsonl_file, "{\"text\": \"abcdefghijklmnopqrstuvwxyz0123456789\", \"id\": 1}\n\n");
    CHECK_NOTHROW(deploy::check_data_fills_run(d));
    d.sequence_length = 41;
    CHECK(error_of([&] { deploy::check_data_fills_run(d); }).find("holds 1 documents of 36 bytes of text (at most 40 tokens") != std::string::npos);
    d.sequence_length = 10;
    tests::write_file(d.jsonl_file, "{\"text\": \"abcdefghijkl\"}\n{\"body\": \"x\"}\n");
    CHECK(error_of([&] { deploy::check_data_fills_run(d); }) == "data.jsonl: " + d.jsonl_file + ":2: no string field \"text\" (data.text_field)");
    tests::write_file(d.jsonl_file, "{\"text\": \"abcdefghijkl\"}\n{\"text\": \n");
    CHECK(error_of([&] { deploy::check_data_fills_run(d); }) == "data.jsonl: " + d.jsonl_file + ":2: not valid JSON");
    // Token ids, counted exactly in each of extract's three forms.
    d = data_with(3, 4, 2);  // 4 + 2 x 2 = 8 ids
    d.tokens_file = dir / "ids.json";
    tests::write_file(d.tokens_file, "[1, 2, 3, 4, 5, 6, 7, 8]");
    CHECK_NOTHROW(deploy::check_data_fills_run(d));
    tests::write_file(d.tokens_file, "[1, 2, 3, 4, 5, 6, 7]");
    CHECK(error_of([&] { deploy::check_data_fills_run(d); }).find("holds 7 token ids, fewer than the 8 tokens") != std::string::npos);
    tests::write_file(d.tokens_file, "1 2 3,4\n5 6 7 8\n");
    CHECK_NOTHROW(deploy::check_data_fills_run(d));
    tests::write_file(d.tokens_file, "1 2 3,4\n5 6 7\n");
    CHECK(error_of([&] { deploy::check_data_fills_run(d); }).find("holds 7 token ids") != std::string::npos);
    tests::write_file(d.tokens_file, "[[1, 2, 3, 4], [5, 6, 7, 8, 9], [1, 1, 1, 1]]");
    CHECK_NOTHROW(deploy::check_data_fills_run(d));
    tests::write_file(d.tokens_file, "[[1, 2, 3, 4], [5, 6, 7, 8, 9]]");
    CHECK(error_of([&] { deploy::check_data_fills_run(d); }).find("holds 2 pre-cut rows (one window each), fewer than data.num_sequences 3") !=
          std::string::npos);
    tests::write_file(d.tokens_file, "[[1, 2, 3, 4], [5, 6, 7], [1, 1, 1, 1]]");
    CHECK(error_of([&] { deploy::check_data_fills_run(d); }).find("row 1 has 3 token ids, fewer than data.sequence_length 4") != std::string::npos);
}

TEST_CASE("data check: validate refuses a config whose local data cannot fill the run (exit 2), and reads hub_rows from YAML and run.json") {
    tests::TempDir dir("data-check-config");
    const std::string sample = std::string(TOOLKIT_SOURCE_DIR) + "/examples/data/sample.jsonl";
    auto c = deploy::parse_run_config("model: {hub: a/b}\ndata:\n  jsonl: " + sample + "\n  num_sequences: 16\n  sequence_length: 2048\n");
    try {
        deploy::validate(c);
        FAIL("a config whose data cannot fill the run validated");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(common::exit_code(e.kind()) == 2);
        CHECK(e.message().find("config: data.jsonl: " + sample) == 0);
    }
    c.data.num_sequences = 1;
    c.data.sequence_length = 64;
    CHECK_NOTHROW(deploy::validate(c));
    auto h = deploy::parse_run_config(
        "model: {hub: a/b}\ndata:\n  hub_rows: {dataset: HuggingFaceFW/fineweb-edu}\n  num_sequences: 16\n  sequence_length: 2048\n  overlap: 1024\n");
    REQUIRE(h.data.hub_rows);
    CHECK(*h.data.hub_rows == kFineWeb);
    CHECK_NOTHROW(deploy::validate(h));
    auto back = deploy::config_from_json(deploy::config_to_json(h));
    REQUIRE(back.data.hub_rows);
    CHECK(*back.data.hub_rows == kFineWeb);
    CHECK(deploy::config_to_json(back) == deploy::config_to_json(h));
    // One source only; bad ids refused at the line they are on.
    CHECK(error_of([] { (void)deploy::parse_run_config("model: {hub: a/b}\ndata:\n  hub_rows: {dataset: a/b}\n  jsonl: x.jsonl\n"); })
              .find("give at most one of text, jsonl, tokens, hub_rows, synthetic_tokens") != std::string::npos);
    CHECK(error_of([] { (void)deploy::parse_run_config("model: {hub: a/b}\ndata:\n  hub_rows: {dataset: 'a/b c'}\n"); })
              .find("data.hub_rows.dataset: 'a/b c' is not a Hub dataset id") != std::string::npos);
    CHECK(error_of([] { (void)deploy::parse_run_config("model: {hub: a/b}\ndata:\n  hub_rows: {dataset: a/b, revision: x}\n"); }).find("revision") !=
          std::string::npos);
    // Beyond what is fetched this way: 2000 x 32768 tokens x 8 bytes.
    h.data.num_sequences = 2000;
    h.data.sequence_length = 32768;
    h.data.overlap = 0;
    CHECK(error_of([&] { deploy::validate(h); }).find("data.hub_rows: the run needs 65536000 tokens") != std::string::npos);
    // A hand-edited run.json with a bad id is refused naming the file.
    auto j = deploy::config_to_json(deploy::parse_run_config("model: {hub: a/b}\ndata: {hub_rows: {dataset: a/b}}\n"));
    j["data"]["hub_rows"]["split"] = "train&x=1";
    CHECK(error_of([&] { (void)deploy::config_from_json(j, "R/run.json"); }).find("R/run.json: config.data.hub_rows.split: ") == 0);
}

TEST_CASE("hub rows: the job reads the fetched rows as one text from its input folder, tokenized with the model's tokenizer") {
    auto cfg = deploy::parse_run_config("model: {hub: Qwen/Qwen3-30B-A3B}\ndata:\n  hub_rows: {dataset: HuggingFaceFW/fineweb-edu}\n"
                                        "  num_sequences: 16\n  sequence_length: 2048\n  overlap: 1024\n");
    CHECK(deploy::input_file_name(cfg.data) == "hub_rows.txt");
    auto l = deploy::remote_layout("/root", "r2", "/cache");
    std::string job = deploy::job_script(cfg, l, "/cache/b/bin", "/cache/models/m");
    CHECK(job.find("-- run '/cache/models/m' --text '/root/toolkit/runs/r2/input/hub_rows.txt'") != std::string::npos);
    CHECK(job.find("--text-field") == std::string::npos);
    CHECK(job.find("--seq-len 2048 --num-sequences 16 --batch-size 1 --overlap 1024") != std::string::npos);
}

