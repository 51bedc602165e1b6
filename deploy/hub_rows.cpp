// data.hub_rows: the first rows of a Hub dataset split through the dataset viewer (hub_rows.h).
#include "deploy/hub_rows.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <limits>

#include "common/clock.h"
#include "common/error.h"
#include "common/file_lock.h"
#include "common/log.h"
#include "common/program.h"
#include "common/regular_file.h"
#include "common/sha256.h"
#include "common/sshd_server.h"

namespace fs = std::filesystem;

namespace deploy {

namespace {

// Bounds while an answer is parsed (before nlohmann has built the rest of it): real pages nest 4
// deep (answer, rows, row, cell) plus a list-typed column or two, and hold 100 rows of ~10 columns.
constexpr int kMaxAnswerDepth = 32;
constexpr int64_t kMaxAnswerValues = 1000000;
// The cache file may be a little larger than the text it holds (JSON escapes) plus the last page.
constexpr uint64_t kMaxCacheFileBytes = 1ull << 30;
constexpr uint64_t kMaxRecordBytes = 1u << 20;
constexpr const char * kSubject = "huggingface dataset viewer";
// Times a fetch starts again from row 0 because the split changed under it before it gives up.
constexpr int kMaxHubRowsRestarts = 3;

bool id_char(unsigned char c) { return std::isalnum(c) || c == '-' || c == '_' || c == '.'; }

// A Hub repository name part: letters, digits, '-', '_', '.', not starting or ending with '-' or
// '.', no "--" or ".." (the Hub's own rule), at most 96 characters.
bool hub_name_part(std::string_view p) {
    if (p.empty() || p.size() > 96 || !std::all_of(p.begin(), p.end(), [](char c) { return id_char(static_cast<unsigned char>(c)); }))
        return false;
    if (p.front() == '-' || p.front() == '.' || p.back() == '-' || p.back() == '.') return false;
    return p.find("--") == std::string_view::npos && p.find("..") == std::string_view::npos;
}

std::string shown(const std::string & v) { return "'" + common::http::safe_text(v, 120) + "'"; }

// The JSON body of an answer, parsed with its nesting depth and value count bounded as it goes
// (nlohmann's parser is iterative; the callback stops it before a hostile body is built in full).
struct AnswerTooDeep {};
nlohmann::json parse_answer(std::string_view body, const std::string & what) {
    auto bad = [&](const std::string & why) { return common::Error(common::ErrorKind::Network, what + ": " + why); };
    if (body.size() > kMaxHubRowsAnswerBytes) throw bad("answer larger than " + std::to_string(kMaxHubRowsAnswerBytes) + " bytes");
    int64_t values = 0;
    auto bound = [&values](int depth, nlohmann::json::parse_event_t, nlohmann::json &) {
        if (depth > kMaxAnswerDepth || ++values > kMaxAnswerValues) throw AnswerTooDeep{};
        return true;
    };
    try {
        return nlohmann::json::parse(body.begin(), body.end(), bound);
    } catch (const AnswerTooDeep &) {
        throw bad("answer nests deeper than " + std::to_string(kMaxAnswerDepth) + " levels or holds more than " +
                  std::to_string(kMaxAnswerValues) + " values; refused");
    } catch (const nlohmann::json::exception &) {
        throw bad("answer is not JSON: " + common::http::safe_text(body, 200));
    }
}

// An integer of the answer that fits int64_t and is not negative, else nullopt.
std::optional<int64_t> count_of(const nlohmann::json & v) {
    if (v.is_number_unsigned()) {
        const auto u = v.get<uint64_t>();
        if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return static_cast<int64_t>(u);
        return std::nullopt;
    }
    if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>();
    return std::nullopt;
}

std::string type_name(const nlohmann::json & v) { return v.is_null() ? "null" : v.type_name(); }

std::string home_cache() {
    const char * xdg = std::getenv("XDG_CACHE_HOME");
    if (xdg && *xdg && fs::path(xdg).is_absolute()) return xdg;
    const char * home = std::getenv("HOME");
    if (!home || !*home) throw common::Error::usage("data.hub_rows: neither XDG_CACHE_HOME nor HOME is set: no place for the row cache");
    return std::string(home) + "/.cache";
}

// The cache files of one dataset/config/split/field as one endpoint serves it: a readable name (the
// id's '/' as "--"; every character is already [A-Za-z0-9._-]) and a hash that keeps two sources
// apart however they read. The endpoint is part of the hash: another server (a mirror, a test's
// emulator) may serve other rows under the same names, and its rows must never stand in for these.
std::string cache_stem(const HubRowsSource & s, const std::string & endpoint) {
    std::string readable = s.dataset + "--" + s.config + "--" + s.split;
    std::replace(readable.begin(), readable.end(), '/', '-');
    if (readable.size() > 160) readable.resize(160);
    return readable + "-" +
           common::sha256_hex(s.dataset + '\n' + s.config + '\n' + s.split + '\n' + s.field + '\n' + endpoint).substr(0, 16);
}

struct CacheState {
    std::vector<std::string> texts;
    std::optional<int64_t> num_rows_total;
    bool partial = false;
    std::string endpoint;           // the server the rows came from
    double first_fetched_unix = 0;  // when row 0's page was fetched (the rows' dataset version)
    double last_fetched_unix = 0;   // when the last page held was fetched
};

// What the cache holds for `s` from `endpoint`, or nothing when it holds nothing usable. A cache
// that does not match its record (a damaged or edited file) or whose record names another source or
// endpoint is ignored with a warning and fetched again; it is never used.
std::optional<CacheState> load_cache(const std::string & stem_path, const HubRowsSource & s, const std::string & endpoint) {
    const std::string rows = stem_path + ".jsonl", record_path = stem_path + ".json";
    std::error_code ec;
    if (!fs::exists(record_path, ec) && !fs::exists(rows, ec)) return std::nullopt;
    auto discard = [&](const std::string & why) -> std::optional<CacheState> {
        common::log::warn("data: row cache ", rows, ": ", why, "; fetching the rows again");
        return std::nullopt;
    };
    try {
        const auto record = nlohmann::json::parse(common::read_regular_file(record_path, kMaxRecordBytes, "row cache record"));
        if (!record.is_object()) return discard("its record is not a JSON object");
        for (const auto & [key, want] :
             {std::pair{"dataset", s.dataset}, {"config", s.config}, {"split", s.split}, {"field", s.field}, {"endpoint", endpoint}})
            if (!record.contains(key) || !record[key].is_string() || record[key].get<std::string>() != want)
                return discard(std::string("its record is for another ") + key);
        const auto n = record.contains("rows") ? count_of(record["rows"]) : std::nullopt;
        if (!n || !record.contains("sha256") || !record["sha256"].is_string()) return discard("its record has no row count or sha256");
        const std::string text = common::read_regular_file(rows, kMaxCacheFileBytes, "row cache");
        if (common::sha256_hex(text) != record["sha256"].get<std::string>())
            return discard("its sha256 differs from the record's (the file was changed or damaged)");
        CacheState c;
        for (size_t begin = 0; begin < text.size();) {
            size_t end = text.find('\n', begin);
            if (end == std::string::npos) return discard("its last line is cut");
            const auto line = nlohmann::json::parse(text.begin() + static_cast<std::ptrdiff_t>(begin), text.begin() + static_cast<std::ptrdiff_t>(end));
            if (!line.is_object() || !line.contains("text") || !line["text"].is_string()) return discard("a line is not {\"text\": ...}");
            c.texts.push_back(line["text"].get<std::string>());
            begin = end + 1;
        }
        if (static_cast<int64_t>(c.texts.size()) != *n) return discard("it holds another number of rows than its record says");
        if (record.contains("num_rows_total")) c.num_rows_total = count_of(record["num_rows_total"]);
        if (record.contains("partial") && record["partial"].is_boolean()) c.partial = record["partial"].get<bool>();
        for (const auto & [key, out] : {std::pair{"first_fetched_unix", &c.first_fetched_unix}, {"last_fetched_unix", &c.last_fetched_unix}}) {
            if (!record.contains(key) || !record[key].is_number()) return discard(std::string("its record has no ") + key);
            *out = record[key].get<double>();
        }
        c.endpoint = endpoint;
        return c;
    } catch (const nlohmann::json::exception &) {
        return discard("it is not valid JSON");
    } catch (const common::Error & e) {
        if (e.kind() == common::ErrorKind::Interrupted) throw;
        return discard(e.message());
    }
}

void save_cache(const std::string & stem_path, const HubRowsSource & s, const CacheState & c) {
    std::string text;
    int64_t text_bytes = 0;
    for (const auto & t : c.texts) {
        text += nlohmann::json{{"text", t}}.dump() + "\n";
        text_bytes += static_cast<int64_t>(t.size());
    }
    // The rows first, then the record that vouches for them: a crash in between leaves a record
    // whose sha256 does not match, and the cache is fetched again rather than trusted.
    common::write_text_file(stem_path + ".jsonl", text, 0644);
    nlohmann::json record{{"dataset", s.dataset},
                          {"config", s.config},
                          {"split", s.split},
                          {"field", s.field},
                          {"endpoint", c.endpoint},
                          {"rows", c.texts.size()},
                          {"text_bytes", text_bytes},
                          {"sha256", common::sha256_hex(text)},
                          {"partial", c.partial},
                          {"first_fetched_unix", c.first_fetched_unix},
                          {"last_fetched_unix", c.last_fetched_unix}};
    if (c.num_rows_total) record["num_rows_total"] = *c.num_rows_total;
    common::write_text_file(stem_path + ".json", record.dump(2) + "\n", 0644);
}

// One page from the server, its HTTP failures as typed errors.
HubRowsPage fetch_page(const common::http::Client & client, const std::string & endpoint, const HubRowsSource & s, int64_t offset,
                       const std::string & token, const std::string & token_env) {
    common::http::Request req;
    req.url = hub_rows_url(endpoint, s, offset, kHubRowsPageRows);
    if (!token.empty()) req.headers.push_back({"Authorization", "Bearer " + token});
    const std::string what = s.dataset + " (config " + s.config + ", split " + s.split + ") rows " + std::to_string(offset) + "..";
    // An answer that is not JSON (a proxy's page, a cut transfer) is sent for again.
    auto resp = client.send(req, common::http::Retry::Idempotent, [](const common::http::Response & r) -> std::string {
        if (r.status >= 200 && r.status < 300 && !nlohmann::json::accept(r.body)) return "response is not JSON";
        return "";
    });
    if (resp.status == 401 || resp.status == 403)
        throw common::Error(common::ErrorKind::Auth,
                            std::string(kSubject) + ": " + what + ": refused (HTTP " + std::to_string(resp.status) + "): " +
                                common::http::safe_text(resp.body, 200) + (token.empty() ? "; the dataset may be gated or private: accept its terms on the Hub and set " + token_env
                                                                                         : "; the token in " + token_env + " was refused"))
            .with("provider", kSubject);
    if (resp.status == 404)
        throw common::Error(common::ErrorKind::NotFound, std::string(kSubject) + ": " + what +
                                                             ": no such dataset, config or split, or not readable without a token (HTTP 404): " +
                                                             common::http::safe_text(resp.body, 200))
            .with("provider", kSubject);
    if (resp.status < 200 || resp.status >= 300) throw common::http::status_error(kSubject, what, resp);
    return parse_hub_rows_page(resp.body, s, offset, kHubRowsPageRows, std::string(kSubject) + ": " + what);
}

// Why a split's first page as served now shows another version of the dataset than the one the
// cache holds, or nothing when it matches. The fingerprint is what a new version of a dataset on the
// Hub changes in practice and what one request can show: the split's row count (a new dump or a
// removed file changes it), the viewer's partial flag (its export grew or was redone), and the first
// page's documents themselves, compared in full (a reordered or rewritten split). A change that
// leaves all three as they were (a document rewritten further in, at the same count) is not seen.
std::optional<std::string> version_change(const CacheState & cached, const HubRowsPage & first) {
    if (cached.num_rows_total && first.num_rows_total && *cached.num_rows_total != *first.num_rows_total)
        return "its split now has " + std::to_string(*first.num_rows_total) + " rows, " + std::to_string(*cached.num_rows_total) + " when cached";
    if (cached.partial != first.partial)
        return std::string("the viewer's copy is now ") + (first.partial ? "partial" : "complete") + ", " +
               (cached.partial ? "partial" : "complete") + " when cached";
    const size_t n = std::min(cached.texts.size(), static_cast<size_t>(kHubRowsPageRows));
    if (first.texts.size() != n) return "its first page now holds " + std::to_string(first.texts.size()) + " rows, " + std::to_string(n) + " when cached";
    for (size_t i = 0; i < n; ++i)
        if (first.texts[i] != cached.texts[i]) return "row " + std::to_string(i) + " differs from the cached one";
    return std::nullopt;
}

int64_t joined_bytes(const std::vector<std::string> & texts, size_t count) {
    int64_t n = count > 0 ? static_cast<int64_t>(count) - 1 : 0;  // the spaces between documents
    for (size_t i = 0; i < count; ++i) n += static_cast<int64_t>(texts[i].size());
    return n;
}

}  // namespace

void check_hub_rows_source(const HubRowsSource & s, const std::string & key) {
    auto fail = [&](const char * part, const std::string & why) { throw common::Error::usage(key + "." + part + ": " + why); };
    const auto slash = s.dataset.find('/');
    const bool dataset_ok = slash == std::string::npos
                                ? hub_name_part(s.dataset)
                                : hub_name_part(std::string_view(s.dataset).substr(0, slash)) &&
                                      hub_name_part(std::string_view(s.dataset).substr(slash + 1));
    if (!dataset_ok)
        fail("dataset", shown(s.dataset) + " is not a Hub dataset id (owner/name: letters, digits, '-', '_', '.'; at most 96 each)");
    for (const auto & [part, value] : {std::pair{"config", &s.config}, {"split", &s.split}})
        if (value->empty() || value->size() > 128 ||
            !std::all_of(value->begin(), value->end(), [](char c) { return id_char(static_cast<unsigned char>(c)); }))
            fail(part, shown(*value) + " is not a " + part + " name (1 to 128 of letters, digits, '-', '_', '.')");
    if (s.field.empty() || s.field.size() > 256 ||
        std::any_of(s.field.begin(), s.field.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; }))
        fail("field", shown(s.field) + " is not a column name (1 to 256 bytes, no control characters)");
}

int64_t hub_rows_target_bytes(int64_t tokens_needed) { return tokens_needed * kHubRowsBytesPerToken; }

std::string hub_rows_endpoint() {
    const char * v = std::getenv(kHubRowsEndpointEnv);
    std::string e = v && *v ? v : kHubRowsDefaultEndpoint;
    const bool scheme = e.rfind("https://", 0) == 0 || e.rfind("http://", 0) == 0;
    if (!scheme || e.size() > 512 || std::any_of(e.begin(), e.end(), [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7F; }))
        throw common::Error::usage(std::string(kHubRowsEndpointEnv) + ": " + shown(e) + " is not an http:// or https:// URL");
    while (e.size() > 8 && e.back() == '/') e.pop_back();
    return e;
}

std::string hub_rows_url(const std::string & endpoint, const HubRowsSource & s, int64_t offset, int64_t length) {
    using common::http::url_encode;
    return endpoint + "/rows?dataset=" + url_encode(s.dataset) + "&config=" + url_encode(s.config) + "&split=" + url_encode(s.split) +
           "&offset=" + std::to_string(offset) + "&length=" + std::to_string(length);
}

HubRowsPage parse_hub_rows_page(std::string_view body, const HubRowsSource & s, int64_t offset, int64_t asked, const std::string & what) {
    auto bad = [&](const std::string & why) { return common::Error(common::ErrorKind::Network, what + ": " + why); };
    const nlohmann::json j = parse_answer(body, what);
    if (!j.is_object()) throw bad("answer is a JSON " + type_name(j) + ", not an object");
    if (j.contains("error")) throw bad("the server says: " + common::http::safe_text(j["error"].is_string() ? j["error"].get<std::string>() : j["error"].dump(), 300));
    // The field named in the config must be one of the split's columns: a typo is the user's to fix.
    if (j.contains("features")) {
        const auto & f = j["features"];
        if (!f.is_array()) throw bad("features is a " + type_name(f) + ", not an array");
        std::vector<std::string> names;
        for (const auto & feature : f)
            if (feature.is_object() && feature.contains("name") && feature["name"].is_string()) names.push_back(feature["name"].get<std::string>());
        if (!names.empty() && std::find(names.begin(), names.end(), s.field) == names.end()) {
            std::string list;
            for (size_t i = 0; i < names.size() && i < 20; ++i) list += (list.empty() ? "" : ", ") + common::http::safe_text(names[i], 60);
            throw common::Error::usage("data.hub_rows.field: " + s.dataset + " (config " + s.config + ", split " + s.split + ") has no column " +
                                       shown(s.field) + "; its columns: " + list);
        }
    }
    if (!j.contains("rows") || !j["rows"].is_array()) throw bad("no rows array in the answer");
    const auto & rows = j["rows"];
    if (static_cast<int64_t>(rows.size()) > asked)
        throw bad(std::to_string(rows.size()) + " rows in the answer; " + std::to_string(asked) + " were asked");
    HubRowsPage page;
    for (size_t i = 0; i < rows.size(); ++i) {
        const auto & r = rows[i];
        const int64_t want = offset + static_cast<int64_t>(i);
        if (!r.is_object()) throw bad("rows[" + std::to_string(i) + "] is a " + type_name(r) + ", not an object");
        const auto idx = r.contains("row_idx") ? count_of(r["row_idx"]) : std::nullopt;
        if (!idx) throw bad("rows[" + std::to_string(i) + "] has no row_idx");
        // Rows out of order or skipped would change the token stream without a word.
        if (*idx != want) throw bad("row_idx " + std::to_string(*idx) + " where " + std::to_string(want) + " was due (rows must follow on from the offset asked)");
        if (r.contains("truncated_cells")) {
            const auto & t = r["truncated_cells"];
            if (!t.is_array()) throw bad("row " + std::to_string(want) + ": truncated_cells is not an array");
            for (const auto & name : t)
                if (name.is_string() && name.get<std::string>() == s.field)
                    throw bad("row " + std::to_string(want) + ": the server cut its " + shown(s.field) +
                              " cell (truncated_cells); a cut document would change the token stream, so it is not used");
        }
        if (!r.contains("row") || !r["row"].is_object()) throw bad("row " + std::to_string(want) + " has no row object");
        const auto & row = r["row"];
        if (!row.contains(s.field))
            throw common::Error::usage("data.hub_rows.field: row " + std::to_string(want) + " of " + s.dataset + " has no column " + shown(s.field));
        const auto & cell = row[s.field];
        if (!cell.is_string())
            throw common::Error::usage("data.hub_rows.field: row " + std::to_string(want) + " of " + s.dataset + ": column " + shown(s.field) +
                                       " holds a " + type_name(cell) + ", not text");
        page.texts.push_back(cell.get<std::string>());
    }
    if (j.contains("num_rows_total")) {
        page.num_rows_total = count_of(j["num_rows_total"]);
        if (!page.num_rows_total) throw bad("num_rows_total is not a count");
    }
    if (j.contains("partial")) {
        if (!j["partial"].is_boolean()) throw bad("partial is not true or false");
        page.partial = j["partial"].get<bool>();
    }
    return page;
}

std::string hub_rows_cache_dir() { return home_cache() + "/toolkit/hub-rows"; }

HubRowsResult prepare_hub_rows(const HubRowsSource & s, int64_t tokens_needed, const std::string & out_dir, const HubRowsOptions & options) {
    check_hub_rows_source(s);
    if (tokens_needed < 1) throw common::Error::internal("hub rows: " + std::to_string(tokens_needed) + " tokens needed");
    const int64_t target = hub_rows_target_bytes(tokens_needed);
    if (target > kMaxHubRowsTextBytes)
        throw common::Error::usage("data.hub_rows: the run needs " + std::to_string(tokens_needed) + " tokens, " + std::to_string(target) +
                                   " bytes of text at " + std::to_string(kHubRowsBytesPerToken) + " bytes per token; at most " +
                                   std::to_string(kMaxHubRowsTextBytes) + " are fetched this way: give a local text, jsonl or tokens file");
    const std::string endpoint = options.endpoint.empty() ? hub_rows_endpoint() : options.endpoint;
    const std::string cache_dir = options.cache_dir.empty() ? hub_rows_cache_dir() : options.cache_dir;
    std::error_code ec;
    fs::create_directories(cache_dir, ec);
    if (ec) throw common::Error::io(cache_dir, "create the row cache folder", ec.value());
    const std::string stem = cache_dir + "/" + cache_stem(s, endpoint);
    // One fetch per source at a time: a sweep's members wait here and then find the rows cached.
    common::FileLock lock(stem + ".lock");

    CacheState cache = load_cache(stem, s, endpoint).value_or(CacheState{});
    cache.endpoint = endpoint;  // load_cache serves only a cache of this endpoint
    std::string token;
    if (const char * t = std::getenv(options.token_env.c_str()); t && *t) {
        token = t;
        common::log::add_secret(token);
    }
    common::http::Options http = options.http;
    http.max_body_bytes = kMaxHubRowsAnswerBytes;
    common::http::Client client(kSubject, http);
    common::Clock & clock = http.clock ? *http.clock : common::real_clock();
    HubRowsResult result;
    const std::string names = s.dataset + " (config " + s.config + ", split " + s.split + ")";
    auto reached = [&] { return joined_bytes(cache.texts, cache.texts.size()) >= target; };
    auto fetch = [&](int64_t offset) {
        if (offset >= kMaxHubRows)
            throw common::Error::usage("data.hub_rows: " + std::to_string(kMaxHubRows) + " rows of " + s.dataset + " hold " +
                                       std::to_string(joined_bytes(cache.texts, cache.texts.size())) + " bytes, fewer than the " +
                                       std::to_string(target) + " the run needs: give a local file");
        auto page = fetch_page(client, endpoint, s, offset, token, options.token_env);
        ++result.requests;
        return page;
    };
    // The rows from page 0 on, as one version of the dataset: a new start drops what was held.
    auto start_over = [&](HubRowsPage first, const std::string & why) {
        common::log::warn("data: ", names, ": ", why, "; the rows are taken again from row 0 so that the text is one version of the dataset");
        result.restarted_because = why;
        cache = CacheState{};
        cache.endpoint = endpoint;
        cache.first_fetched_unix = cache.last_fetched_unix = clock.unix_now();
        cache.num_rows_total = first.num_rows_total;
        cache.partial = first.partial;
        cache.texts = std::move(first.texts);
    };
    // Extending the cache: its rows and the pages to come must be of one version of the dataset,
    // so page 0 is asked again and compared before a later page is added to them. Its stored
    // num_rows_total is replaced by the one served now, so an old count never ends the fetch early.
    if (!reached() && !cache.texts.empty()) {
        common::throw_if_interrupted();
        HubRowsPage first = fetch(0);
        if (auto why = version_change(cache, first))
            start_over(std::move(first), "the split changed since its rows were cached on " + common::format_utc_minute(cache.first_fetched_unix) +
                                             " (" + *why + ")");
        else if (first.num_rows_total)
            cache.num_rows_total = first.num_rows_total;
    }
    int restarts = 0;
    std::optional<common::Error> ended;
    while (!reached()) {
        common::throw_if_interrupted();
        const auto offset = static_cast<int64_t>(cache.texts.size());
        const bool past_end = cache.num_rows_total && offset >= *cache.num_rows_total;
        HubRowsPage page;
        if (!past_end) {
            page = fetch(offset);
            const double now = clock.unix_now();
            if (offset == 0) {
                cache.first_fetched_unix = now;
                cache.num_rows_total = page.num_rows_total;
                cache.partial = page.partial;
            } else if ((page.num_rows_total && cache.num_rows_total && *page.num_rows_total != *cache.num_rows_total) ||
                       page.partial != cache.partial) {
                // The dataset changed between two pages of this fetch: its rows so far are of the
                // version before. Bounded: a split that changes at every page is not read at all.
                if (++restarts > kMaxHubRowsRestarts)
                    throw common::Error(common::ErrorKind::Network, "data.hub_rows: " + names + " changed " + std::to_string(restarts) +
                                                                        " times while its rows were read; try again later");
                start_over(fetch(0), "the split changed while its rows were read (the page at row " + std::to_string(offset) +
                                         (page.num_rows_total && cache.num_rows_total
                                              ? " says " + std::to_string(*page.num_rows_total) + " rows, " + std::to_string(*cache.num_rows_total) +
                                                    " before"
                                              : std::string(" has another partial flag")) +
                                         ")");
                continue;
            }
            cache.last_fetched_unix = now;
        }
        if (page.texts.empty()) {
            ended = common::Error::usage(
                "data.hub_rows: " + names + " ends after " + std::to_string(offset) + " rows holding " +
                std::to_string(joined_bytes(cache.texts, cache.texts.size())) + " bytes of text; the run needs " + std::to_string(target) +
                " (" + std::to_string(tokens_needed) + " tokens x " + std::to_string(kHubRowsBytesPerToken) +
                " bytes): choose a larger split, or fewer or shorter sequences");
            break;
        }
        for (auto & t : page.texts) cache.texts.push_back(std::move(t));
    }
    // What was fetched is kept even when the split ended short: the next attempt need not ask again.
    if (result.requests > 0) save_cache(stem, s, cache);
    if (ended) throw *ended;

    size_t k = 0;
    for (int64_t bytes = -1; k < cache.texts.size() && bytes < target; ++k) bytes += 1 + static_cast<int64_t>(cache.texts[k].size());
    std::string text;
    text.reserve(static_cast<size_t>(joined_bytes(cache.texts, k)));
    for (size_t i = 0; i < k; ++i) {
        if (i > 0) text += ' ';  // documents joined with one space, as the predecessor did
        text += cache.texts[i];
    }
    fs::create_directories(out_dir, ec);
    if (ec) throw common::Error::io(out_dir, "create", ec.value());
    result.text_path = out_dir + "/" + kHubRowsTextFile;
    common::write_text_file(result.text_path, text, 0644);
    result.record = {{"source", "hub_rows"},
                     {"dataset", s.dataset},
                     {"config", s.config},
                     {"split", s.split},
                     {"field", s.field},
                     {"rows", k},
                     {"first_row", 0},
                     {"joined_with", " "},
                     {"bytes", text.size()},
                     {"sha256", common::sha256_hex(text)},
                     {"tokens_needed", tokens_needed},
                     {"target_bytes", target},
                     {"endpoint", cache.endpoint},
                     {"first_fetched_unix", cache.first_fetched_unix},
                     {"last_fetched_unix", cache.last_fetched_unix},
                     {"from_cache", result.requests == 0},
                     {"pages_fetched", result.requests},
                     {"restarted_because", result.restarted_because.empty() ? nlohmann::json(nullptr) : nlohmann::json(result.restarted_because)},
                     {"partial", cache.partial},
                     {"num_rows_total", cache.num_rows_total ? nlohmann::json(*cache.num_rows_total) : nlohmann::json(nullptr)}};
    common::write_text_file(out_dir + "/" + kHubRowsRecordFile, result.record.dump(2) + "\n", 0644);
    return result;
}

nlohmann::json verify_hub_rows_input(const std::string & dir) {
    const std::string record_path = dir + "/" + kHubRowsRecordFile, text_path = dir + "/" + kHubRowsTextFile;
    nlohmann::json record;
    try {
        record = nlohmann::json::parse(common::read_regular_file(record_path, kMaxRecordBytes, "hub rows record"));
    } catch (const nlohmann::json::exception &) {
        throw common::Error::usage(record_path + ": not valid JSON");
    }
    if (!record.is_object() || !record.contains("sha256") || !record["sha256"].is_string())
        throw common::Error::usage(record_path + ": no sha256 of " + kHubRowsTextFile);
    if (common::sha256_file(text_path) != record["sha256"].get<std::string>())
        throw common::Error::usage(text_path + ": its sha256 differs from the one " + record_path +
                                   " recorded when the rows were fetched (changed or damaged since); start a new run");
    return record;
}

}  // namespace deploy
