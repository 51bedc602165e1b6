// Input preparation (inputs.h).
#include "extractor/inputs.h"

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/jsonl.h"
#include "common/program.h"
#include "common/regular_file.h"
#include "extractor/hash.h"
#include "extractor/tokenizer/tokenizer.h"

namespace extractor {

namespace {

// Not common::read_regular_file: a pipe is a fine input (--text <(zcat corpus.gz)) and only blocks
// while its writer is slow. A directory, a symlink loop or a missing file is named as such.
std::string read_file(const std::string & path) {
    struct stat sb {};
    if (::stat(path.c_str(), &sb) != 0) {
        const int e = errno;
        if (e == ENOENT || e == ENOTDIR) throw common::Error::not_found(path, "cannot open input file").with("file", path);
        if (e == ELOOP) throw common::Error::file(path, "too many levels of symbolic links (a symlink loop?)");
        throw common::Error::io(path, "stat", e);
    }
    if (S_ISDIR(sb.st_mode)) throw common::Error::file(path, "is a directory, not an input file");
    if (S_ISREG(sb.st_mode) && static_cast<uint64_t>(sb.st_size) > kMaxInputBytes)
        throw common::Error::file(path, std::to_string(sb.st_size) + " bytes, more than the " + std::to_string(kMaxInputBytes) +
                                            " allowed for an input file");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw common::Error::io(path, "open", errno ? errno : EIO);
    std::string text;
    std::vector<char> buf(1 << 20);
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        text.append(buf.data(), static_cast<size_t>(in.gcount()));
        if (text.size() > kMaxInputBytes)  // a pipe has no size to check up front
            throw common::Error::file(path, "more than the " + std::to_string(kMaxInputBytes) + " bytes allowed for an input file");
        common::throw_if_interrupted();
    }
    if (in.bad()) throw common::Error::io(path, "read", errno ? errno : EIO);
    return text;
}

std::vector<int64_t> ids_from_json(const nlohmann::json & j, const std::string & path, const std::string & where) {
    std::vector<int64_t> out;
    for (size_t i = 0; i < j.size(); ++i) {
        if (!j[i].is_number_integer())
            throw common::Error::file(path, where + "[" + std::to_string(i) + "] is not an integer token id");
        out.push_back(j[i].get<int64_t>());
    }
    return out;
}

}  // namespace

std::vector<std::vector<int64_t>> make_windows(const std::vector<int64_t> & stream, int64_t seq_len, int64_t overlap) {
    std::vector<std::vector<int64_t>> out;
    const int64_t stride = seq_len - overlap;
    for (int64_t start = 0; start + seq_len <= static_cast<int64_t>(stream.size()); start += stride)
        out.emplace_back(stream.begin() + start, stream.begin() + start + seq_len);
    return out;
}

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed) {
    std::vector<int64_t> p(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
    std::mt19937_64 rng(seed);  // mt19937_64's output sequence is fixed by the standard
    for (int64_t i = n - 1; i > 0; --i) {
        int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
        std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
    }
    return p;
}

void check_input_options(const InputOptions & opt) {
    int given = !opt.text_file.empty() + !opt.jsonl_file.empty() + !opt.tokens_file.empty();
    if (given != 1) throw common::Error::usage("give exactly one input: --text FILE, --jsonl FILE or --tokens FILE");
    if (opt.seq_len <= 0) throw common::Error::usage("--seq-len must be positive");
    if (opt.overlap < 0 || opt.overlap >= opt.seq_len) throw common::Error::usage("--overlap must be in [0, seq-len)");
    if (opt.batch_size <= 0) throw common::Error::usage("--batch-size must be positive");
    if (opt.num_sequences == 0 || opt.num_sequences < -1)
        throw common::Error::usage("--num-sequences must be positive, or -1 for every window (got " +
                                   std::to_string(opt.num_sequences) + ")");
}

InputSet prepare_inputs(const InputOptions & opt, const std::string & model_dir, int64_t vocab) {
    check_input_options(opt);
    InputSet in;
    std::vector<int64_t> stream;
    std::vector<std::vector<int64_t>> windows;

    if (!opt.tokens_file.empty()) {
        in.source = opt.tokens_file;
        std::string text = read_file(opt.tokens_file);
        size_t first = text.find_first_not_of(" \t\r\n");
        if (first != std::string::npos && text[first] == '[') {
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(text);
            } catch (const nlohmann::json::exception & e) {
                throw common::Error::file(opt.tokens_file, std::string("not valid JSON: ") + e.what());
            }
            if (!j.empty() && j[0].is_array()) {
                // Pre-cut sequences: each row is truncated to seq_len; none may be shorter.
                for (size_t r = 0; r < j.size(); ++r) {
                    if (!j[r].is_array()) throw common::Error::file(opt.tokens_file, "row " + std::to_string(r) + " is not an array");
                    auto row = ids_from_json(j[r], opt.tokens_file, "row " + std::to_string(r));
                    if (static_cast<int64_t>(row.size()) < opt.seq_len)
                        throw common::Error::file(opt.tokens_file, "row " + std::to_string(r) + " has " + std::to_string(row.size()) +
                                                                       " tokens, fewer than --seq-len " + std::to_string(opt.seq_len));
                    row.resize(static_cast<size_t>(opt.seq_len));
                    in.stream_tokens += static_cast<int64_t>(j[r].size());
                    windows.push_back(std::move(row));
                }
            } else {
                stream = ids_from_json(j, opt.tokens_file, "ids");
            }
        } else {
            std::string cleaned = text;
            for (char & c : cleaned)
                if (c == ',') c = ' ';
            std::istringstream ss(cleaned);
            std::string tok;
            while (ss >> tok) {
                size_t used = 0;
                int64_t v = 0;
                try {
                    v = std::stoll(tok, &used);
                } catch (const std::exception &) {
                    used = 0;
                }
                if (used != tok.size())
                    throw common::Error::file(opt.tokens_file, "\"" + tok + "\" is not a token id (expected integers)");
                stream.push_back(v);
            }
        }
    } else {
        in.tokenizer_path = opt.tokenizer.empty() ? (std::filesystem::path(model_dir) / "tokenizer.json").string() : opt.tokenizer;
        std::error_code ec;  // exists(path, ec): a symlink loop is not an exception (exit 1) here
        if (!std::filesystem::exists(in.tokenizer_path, ec)) {
            if (ec && ec != std::errc::no_such_file_or_directory)
                throw common::Error::file(in.tokenizer_path, "cannot read the tokenizer: " + ec.message());
            throw common::Error::not_found(in.tokenizer_path, "text input needs a tokenizer.json (pass --tokenizer PATH or use --tokens)");
        }
        // A directory, FIFO or symlink loop is refused by name here: the tokenizer reads the path
        // itself, and a FIFO would block it forever.
        (void)common::open_regular_file(in.tokenizer_path, "tokenizer.json");
        Tokenizer tok = Tokenizer::from_file(in.tokenizer_path);
        in.tokenizer_sha256 = sha256_file(in.tokenizer_path);
        auto append = [&](const std::string & doc) {
            auto ids = tok.encode(doc, opt.add_special_tokens);
            stream.insert(stream.end(), ids.begin(), ids.end());
        };
        if (!opt.text_file.empty()) {
            in.source = opt.text_file;
            append(read_file(opt.text_file));
        } else {
            in.source = opt.jsonl_file;
            const std::string all = read_file(opt.jsonl_file);
            auto bad = common::for_each_jsonl_document(all, opt.text_field, [&](int64_t, const std::string & doc) { append(doc); });
            if (bad)
                throw common::Error::file(opt.jsonl_file + ":" + std::to_string(bad->line_no),
                                          bad->problem + (bad->no_field ? " (choose it with --text-field)" : ""));
        }
    }
    if (windows.empty()) {
        in.stream_tokens = static_cast<int64_t>(stream.size());
        windows = make_windows(stream, opt.seq_len, opt.overlap);
        if (windows.empty())
            throw common::Error::file(in.source, std::to_string(stream.size()) + " tokens are fewer than one window of --seq-len " +
                                                     std::to_string(opt.seq_len));
    }
    for (size_t w = 0; w < windows.size(); ++w)
        for (size_t i = 0; i < windows[w].size(); ++i)
            if (windows[w][i] < 0 || windows[w][i] >= vocab)
                throw common::Error::file(in.source, "token id " + std::to_string(windows[w][i]) + " (sequence " + std::to_string(w) +
                                                         ", position " + std::to_string(i) + ") is outside the vocabulary [0, " +
                                                         std::to_string(vocab) + ")");
    std::vector<int64_t> order(windows.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    if (opt.shuffle) order = seeded_permutation(static_cast<int64_t>(windows.size()), opt.seed);
    int64_t n = opt.num_sequences < 0 ? static_cast<int64_t>(windows.size()) : opt.num_sequences;
    if (n > static_cast<int64_t>(windows.size()))
        throw common::Error::usage("--num-sequences " + std::to_string(n) + " but the input yields only " +
                                   std::to_string(windows.size()) + " windows of " + std::to_string(opt.seq_len) + " tokens");
    for (int64_t i = 0; i < n; ++i) {
        in.sequences.push_back(std::move(windows[static_cast<size_t>(order[static_cast<size_t>(i)])]));
        in.window_index.push_back(order[static_cast<size_t>(i)]);
    }
    return in;
}

}  // namespace extractor
