// tokenize_ids: a test-only program for the tokenizer parity script (tests/parity/tokenizer_parity.py)
// and for timing. Not a user command; the extract program is the product entry point.
//
//   tokenize_ids TOKENIZER_JSON LINES_FILE [--no-special]   one JSON array of ids per input line
//   tokenize_ids TOKENIZER_JSON LINES_FILE --decode          one JSON string per line: decode(encode(line)),
//                                                             skipping special tokens (Python's default)
//   tokenize_ids TOKENIZER_JSON TEXT_FILE --bench [--repeat N]  encodes the whole file (cold, then warm
//                                                               cache), prints {"tokens": .., "seconds": ..}
// A line that starts with '"' is a JSON string literal (so lines can hold \n, \r, \u0085 ...); any
// other line is taken verbatim (without its '\n').
#include "common/error.h"
#include "extractor/tokenizer/tokenizer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

namespace {

int usage() {
    std::cerr << "usage: tokenize_ids TOKENIZER_JSON FILE [--no-special | --decode | --bench [--repeat N]]\n";
    return 2;
}

}  // namespace

int main(int argc, char ** argv) {
    if (argc < 3) return usage();
    bool add_special = true, decode = false, bench = false;
    int repeat = 3;
    for (int k = 3; k < argc; ++k) {
        if (!std::strcmp(argv[k], "--no-special")) add_special = false;
        else if (!std::strcmp(argv[k], "--decode")) decode = true;
        else if (!std::strcmp(argv[k], "--bench")) bench = true;
        else if (!std::strcmp(argv[k], "--repeat") && k + 1 < argc) repeat = std::atoi(argv[++k]);
        else return usage();
    }
    try {
        auto t0 = std::chrono::steady_clock::now();
        const extractor::Tokenizer tok = extractor::Tokenizer::from_file(argv[1]);
        const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::ifstream in(argv[2], std::ios::binary);
        if (!in) {
            std::cerr << "tokenize_ids: " << argv[2] << ": cannot open\n";
            return 9;
        }
        if (bench) {
            std::ostringstream ss;
            ss << in.rdbuf();
            const std::string text = ss.str();
            nlohmann::json runs = nlohmann::json::array();
            std::size_t tokens = 0;
            for (int r = 0; r < repeat; ++r) {
                auto a = std::chrono::steady_clock::now();
                tokens = tok.encode(text, false).size();
                const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
                runs.push_back({{"seconds", s}, {"tokens_per_s", static_cast<double>(tokens) / s}});
            }
            std::cout << nlohmann::json{{"bytes", text.size()}, {"tokens", tokens}, {"load_s", load_s}, {"runs", runs}}.dump()
                      << "\n";
            return 0;
        }
        std::string line;
        while (std::getline(in, line)) {
            std::string text = line;
            if (!line.empty() && line[0] == '"') text = nlohmann::json::parse(line).get<std::string>();
            const std::vector<int32_t> ids = tok.encode(text, add_special);
            if (decode) std::cout << nlohmann::json(tok.decode(ids, /*skip_special_tokens=*/true)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
            else std::cout << nlohmann::json(ids).dump() << "\n";
        }
        return 0;
    } catch (const common::Error & e) {
        std::cerr << "tokenize_ids: " << e.message() << "\n";
        return common::exit_code(e.kind());
    } catch (const std::exception & e) {
        std::cerr << "tokenize_ids: " << e.what() << "\n";
        return 1;
    }
}
