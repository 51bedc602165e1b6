// Whether a run's local data can fill its windows (data_check.h).
#include "deploy/data_check.h"

#include <cctype>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/jsonl.h"
#include "common/regular_file.h"

namespace deploy {

namespace {

constexpr uint64_t kMaxJsonlReadBytes = 64ull << 20;
constexpr uint64_t kMaxTokensScanBytes = 1ull << 30;

std::string need_text(const DataConfig & d) {
    std::string s = std::to_string(tokens_needed(d)) + " tokens the run needs (" + std::to_string(d.num_sequences) + " sequences of " +
                    std::to_string(d.sequence_length);
    if (d.overlap > 0) s += ", overlapping by " + std::to_string(d.overlap);
    return s + ")";
}

[[noreturn]] void too_little(const std::string & key, const std::string & path, const std::string & holds, const DataConfig & d) {
    throw common::Error::usage("data." + key + ": " + path + " " + holds + ", fewer than the " + need_text(d) +
                               "; give more data, fewer or shorter sequences (data.num_sequences, data.sequence_length, data.overlap), "
                               "or data.hub_rows (configs/README.md)")
        .with("file", path);
}

// Token ids in a tokens file as extract reads it (extractor/inputs.cpp): a JSON list of ids, a JSON
// list of pre-cut rows, or ids separated by whitespace or commas. Counted in one streaming pass
// without building anything: digits runs at list level 1 (ids) or 2 (a row's ids). The file's
// syntax is extract's to judge; this pass only counts, so it never refuses a file extract reads.
struct TokenCount {
    bool rows = false;           // pre-cut rows
    int64_t ids = 0;             // flat: the ids
    int64_t full_rows = 0;       // rows of at least sequence_length ids
    int64_t short_row = -1;      // the first row shorter than that
    int64_t short_row_ids = 0;
};

TokenCount count_token_ids(const std::string & path, const common::RegularFile & file, int64_t seq_len) {
    TokenCount c;
    enum class Mode { Unknown, Json, Plain } mode = Mode::Unknown;
    int depth = 0;
    bool in_run = false;
    int64_t row = -1, row_ids = 0;
    std::vector<char> buf(1 << 20);
    for (;;) {
        const size_t n = common::read_some(file, buf.data(), buf.size(), path);
        if (n == 0) break;
        for (size_t i = 0; i < n; ++i) {
            const char ch = buf[i];
            const bool space = std::isspace(static_cast<unsigned char>(ch)) != 0;
            if (mode == Mode::Unknown) {
                if (space) continue;
                mode = ch == '[' ? Mode::Json : Mode::Plain;
            }
            if (mode == Mode::Plain) {
                const bool sep = space || ch == ',';
                if (!sep && !in_run) ++c.ids;
                in_run = !sep;
                continue;
            }
            const bool num = (ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == '.' || ch == 'e' || ch == 'E';
            if (num && !in_run) {
                if (depth == 1) ++c.ids;
                if (depth == 2) ++row_ids;
            }
            in_run = num;
            if (ch == '[') {
                if (++depth == 2) {
                    c.rows = true;
                    ++row;
                    row_ids = 0;
                }
            } else if (ch == ']') {
                if (depth == 2) {
                    if (row_ids >= seq_len) ++c.full_rows;
                    else if (c.short_row < 0) c.short_row = row, c.short_row_ids = row_ids;
                }
                if (depth > 0) --depth;
            }
        }
    }
    return c;
}

void check_tokens(const DataConfig & d) {
    const auto file = common::open_regular_file(d.tokens_file, "tokens file");
    if (file.size() > kMaxTokensScanBytes) return;  // billions of ids: more than any window count allowed
    const TokenCount c = count_token_ids(d.tokens_file, file, d.sequence_length);
    if (c.rows) {
        if (c.short_row >= 0)
            throw common::Error::usage("data.tokens: " + d.tokens_file + ": row " + std::to_string(c.short_row) + " has " +
                                       std::to_string(c.short_row_ids) + " token ids, fewer than data.sequence_length " +
                                       std::to_string(d.sequence_length) + " (pre-cut rows are one window each)")
                .with("file", d.tokens_file);
        if (c.full_rows < d.num_sequences)
            throw common::Error::usage("data.tokens: " + d.tokens_file + " holds " + std::to_string(c.full_rows) +
                                       " pre-cut rows (one window each), fewer than data.num_sequences " + std::to_string(d.num_sequences))
                .with("file", d.tokens_file);
        return;
    }
    if (c.ids < tokens_needed(d)) too_little("tokens", d.tokens_file, "holds " + std::to_string(c.ids) + " token ids", d);
}

// The most tokens the text of a jsonl file can give, and its lines checked as extract reads them.
void check_jsonl(const DataConfig & d) {
    const auto size = common::open_regular_file(d.jsonl_file, "jsonl file").size();
    if (size > kMaxJsonlReadBytes) {
        // Every line carries at least {"x":""} around its text, more than a document's special tokens.
        if (static_cast<int64_t>(2 * size) < tokens_needed(d))
            too_little("jsonl", d.jsonl_file, "holds " + std::to_string(size) + " bytes", d);
        return;
    }
    const std::string all = common::read_regular_file(d.jsonl_file, kMaxJsonlReadBytes, "jsonl file");
    int64_t text_bytes = 0, docs = 0;
    auto bad = common::for_each_jsonl_document(all, d.text_field, [&](int64_t, const std::string & doc) {
        text_bytes += static_cast<int64_t>(doc.size());
        ++docs;
    });
    if (bad)
        throw common::Error::usage("data.jsonl: " + d.jsonl_file + ":" + std::to_string(bad->line_no) + ": " +
                                   (bad->no_field ? bad->problem + " (data.text_field)" : std::string("not valid JSON")))
            .with("file", d.jsonl_file);
    if (text_bytes + kSpecialTokensPerDocument * docs < tokens_needed(d))
        too_little("jsonl", d.jsonl_file,
                   "holds " + std::to_string(docs) + " documents of " + std::to_string(text_bytes) + " bytes of text (at most " +
                       std::to_string(text_bytes + kSpecialTokensPerDocument * docs) +
                       " tokens: a token covers at least one byte, plus a few special tokens per document)",
                   d);
}

}  // namespace

int64_t tokens_needed(const DataConfig & d) {
    return d.sequence_length + (d.num_sequences - 1) * (d.sequence_length - d.overlap);
}

void check_data_fills_run(const DataConfig & d) {
    if (!d.text_file.empty()) {
        const auto size = static_cast<int64_t>(common::open_regular_file(d.text_file, "text file").size());
        if (size + kSpecialTokensPerDocument < tokens_needed(d))
            too_little("text", d.text_file,
                       "holds " + std::to_string(size) + " bytes of text (at most " + std::to_string(size + kSpecialTokensPerDocument) +
                           " tokens: a token covers at least one byte)",
                       d);
    }
    if (!d.jsonl_file.empty()) check_jsonl(d);
    if (!d.tokens_file.empty()) check_tokens(d);
}

}  // namespace deploy
