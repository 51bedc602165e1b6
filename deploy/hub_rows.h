// data.hub_rows: a run's text taken from the first rows of a Hugging Face Hub dataset split, read
// on this machine before anything is rented. The Hub stores most large datasets (FineWeb-Edu among
// them) as Parquet only, which this toolkit does not read; the Hub's dataset viewer serves any slice
// of a split's rows as JSON instead:
//   GET <endpoint>/rows?dataset=D&config=C&split=S&offset=O&length=L      (L at most 100)
//   -> {"features": [...], "rows": [{"row_idx": N, "row": {column: value}, "truncated_cells": [...]}],
//       "num_rows_total": N, "num_rows_per_page": N, "partial": bool}, errors as {"error": "..."}
// (https://huggingface.co/docs/dataset-viewer/rows). Pages of 100 rows are asked from offset 0 in
// order until the text held is kHubRowsBytesPerToken times the tokens the run needs; the split's
// first K rows that reach that are joined with one space, as the predecessor joined its input
// (docs/outlier-method.md, "Inputs"), into RUN_DIR/data/hub_rows.txt, pushed and tokenized on the
// instance like a `data.text` file, with a record of where it came from (hub_rows.json). Rows are cached per
// dataset/config/split/field under $XDG_CACHE_HOME/toolkit/hub-rows, so a sweep's members and later
// runs read them without the network; the cache is checked against its sha256 record before use,
// kept apart per endpoint, and checked against the served split before it is extended.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/http.h"

namespace deploy {

struct HubRowsSource {
    std::string dataset;             // "HuggingFaceFW/fineweb-edu"
    std::string config = "default";  // the viewer's "config" (the dataset's subset)
    std::string split = "train";
    std::string field = "text";      // the column that holds each document's text
    bool operator==(const HubRowsSource &) const = default;
};

// In the run directory's data/ folder, and in input/ on the instance.
inline constexpr const char * kHubRowsTextFile = "hub_rows.txt";
inline constexpr const char * kHubRowsRecordFile = "hub_rows.json";
// Bytes of text fetched per token the run needs. English byte-level BPE averages 4 to 5 bytes per
// token (Mixtral's SentencePiece a little less), so 8 leaves the windows a margin of about two.
inline constexpr int64_t kHubRowsBytesPerToken = 8;
inline constexpr int64_t kHubRowsPageRows = 100;                 // the API's largest page
inline constexpr int64_t kMaxHubRowsTextBytes = 256ll << 20;     // text one run may take (~32M tokens)
inline constexpr int64_t kMaxHubRows = 1000000;                  // rows (10,000 pages) one run may read
inline constexpr size_t kMaxHubRowsAnswerBytes = 32u << 20;      // one page (100 documents and their other columns)
// The endpoint: the public dataset viewer, or what this variable names (tests: a loopback emulator).
inline constexpr const char * kHubRowsEndpointEnv = "HF_DATASETS_SERVER_URL";
inline constexpr const char * kHubRowsDefaultEndpoint = "https://datasets-server.huggingface.co";

// Refuses (common::Error usage, naming `key`.dataset/.config/.split/.field) what is not a Hub
// dataset id ("owner/name" or "name": letters, digits, '-', '_', '.', no "--" or "..", at most 96
// per part), a config or split name outside [A-Za-z0-9._-] (1..128), or a field that is empty,
// longer than 256 bytes or holds control characters. They go into a URL (percent-encoded) and
// into messages; never into a shell.
void check_hub_rows_source(const HubRowsSource & source, const std::string & key = "data.hub_rows");

// The text to fetch for a run that needs `tokens_needed` tokens: kHubRowsBytesPerToken per token.
int64_t hub_rows_target_bytes(int64_t tokens_needed);

// $HF_DATASETS_SERVER_URL (http:// or https://, trailing '/' dropped) or the public viewer; throws
// common::Error(usage) naming the variable for anything else.
std::string hub_rows_endpoint();
// <endpoint>/rows?dataset=..&config=..&split=..&offset=..&length=.., each value percent-encoded.
std::string hub_rows_url(const std::string & endpoint, const HubRowsSource & source, int64_t offset, int64_t length);

struct HubRowsPage {
    std::vector<std::string> texts;          // rows offset, offset+1, ... in order
    std::optional<int64_t> num_rows_total;   // the split's rows, when the answer says
    bool partial = false;                    // the viewer read only part of the split (its export)
};

// One /rows answer for rows [offset, offset + asked), read as hostile: at most kMaxHubRowsAnswerBytes,
// nesting and value counts bounded while parsing, every type checked, at most `asked` rows, and
// row_idx consecutive from `offset`. A row whose `field` cell is listed in truncated_cells is refused
// naming its row_idx (a cut document would change the token stream; the /rows endpoint documents
// that it does not truncate, so this is a server that changed). Throws common::Error: Network for
// an answer that is not the documented shape ("<what>: ..."), Usage for a field the split does not
// have (naming the columns it has) or a cell that is not text.
HubRowsPage parse_hub_rows_page(std::string_view body, const HubRowsSource & source, int64_t offset, int64_t asked,
                                const std::string & what);

struct HubRowsOptions {
    std::string endpoint;                 // "" = hub_rows_endpoint()
    std::string cache_dir;                // "" = hub_rows_cache_dir()
    std::string token_env = "HF_TOKEN";   // sent as "Authorization: Bearer" when set (gated datasets)
    common::http::Options http;           // timeouts and retries; max_body_bytes is kMaxHubRowsAnswerBytes
};

// $XDG_CACHE_HOME/toolkit/hub-rows, else $HOME/.cache/toolkit/hub-rows (the cache the instance's
// builds use is ~/.cache/toolkit there).
std::string hub_rows_cache_dir();

struct HubRowsResult {
    std::string text_path;   // <out_dir>/hub_rows.txt
    nlohmann::json record;   // what <out_dir>/hub_rows.json holds
    int requests = 0;        // pages this call asked the server for (0: the cache held enough)
    std::string restarted_because;  // why the rows were taken again from row 0 (the dataset changed), or ""
};

// Writes <out_dir>/hub_rows.txt, the split's first K documents joined with one space, K the fewest
// rows whose text reaches hub_rows_target_bytes(tokens_needed), and <out_dir>/hub_rows.json: dataset,
// config, split, field, rows, bytes, sha256 of the text, the endpoint the rows came from, when their
// first and last pages were fetched, whether any page was asked now, the split's size and whether
// the viewer's copy is partial. The cache is kept per source and endpoint (one holder at a time: a
// lock beside the cache files); rows come from it as they are when it holds enough. When it holds
// too few, page 0 is asked again first: if the split's row count, the partial flag or the first
// page's rows differ from the cached ones, the dataset changed and every row is taken again from
// row 0 (restarted_because says why); else only the missing pages are asked. A split whose row
// count changes between two pages of one fetch is also taken again from row 0 (at most 3 times). A
// cache whose file does not match its sha256 record is fetched again.
// Throws common::Error: Usage when the split ends before the target (naming its rows and bytes) or
// the target exceeds kMaxHubRowsTextBytes; Auth for a gated/private dataset (naming token_env);
// NotFound for an unknown dataset/config/split; Network when the server does not answer usably
// after retries; Interrupted on Ctrl-C.
HubRowsResult prepare_hub_rows(const HubRowsSource & source, int64_t tokens_needed, const std::string & out_dir,
                               const HubRowsOptions & options = {});

// The record in <dir>/hub_rows.json after checking <dir>/hub_rows.txt against its sha256 (before
// the text is pushed: the file may have been changed or damaged since the data step). Throws
// common::Error(usage) naming the file otherwise.
nlohmann::json verify_hub_rows_input(const std::string & dir);

}  // namespace deploy
