// What the model reads: token-id sequences of one length, built from plain text, JSONL with a text
// field, or token ids, cut into windows (with optional overlap), optionally sampled
// deterministically with a seed. Token ids are the primary input (docs/model-math.md#input-contract): text is
// tokenized once here with the checkpoint's tokenizer.json and the ids are what metadata records.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace extractor {

struct InputOptions {
    std::string text_file;             // one document of plain text
    std::string jsonl_file;            // one JSON object per line
    std::string text_field = "text";   // the JSONL field holding the text
    std::string tokens_file;           // ids: JSON [..] (one stream) or [[..],..] (sequences), or whitespace/comma separated
    std::string tokenizer;             // tokenizer.json (default: MODEL_DIR/tokenizer.json)
    int64_t seq_len = 2048;
    int64_t num_sequences = -1;        // -1: every window
    int64_t batch_size = 1;
    int64_t overlap = 0;               // tokens shared by consecutive windows
    bool shuffle = false;              // sample windows in a seeded random order
    uint64_t seed = 0;
    bool add_special_tokens = true;    // per document, as HF encode() does (BOS for Llama)
};

struct InputSet {
    std::vector<std::vector<int64_t>> sequences;  // each seq_len long
    std::vector<int64_t> window_index;            // which window of the stream each sequence is
    std::string source;                           // file it came from
    std::string tokenizer_path;                   // empty for token-id input
    std::string tokenizer_sha256;
    int64_t stream_tokens = 0;                    // tokens before windowing
};

// Input files are read whole; a larger one is refused (usage) by name.
constexpr uint64_t kMaxInputBytes = 16ull << 30;

// Refuses (usage) options that cannot describe a run: not exactly one input, --seq-len or
// --batch-size below 1, --overlap outside [0, seq-len), --num-sequences 0 or below -1 (0 used to
// run nothing and exit 0). prepare_inputs calls it; run_extraction calls it before anything else.
void check_input_options(const InputOptions & opt);

// Throws common::Error: usage for a bad option, an input that is a directory or too large, an id
// outside [0, vocab), or too few tokens for one window; not_found (exit 9) for a missing input
// file or tokenizer. Pipes are accepted (--text <(zcat corpus.gz)).
InputSet prepare_inputs(const InputOptions & opt, const std::string & model_dir, int64_t vocab);

// Windows over a stream: starts at 0, stride seq_len - overlap, only full windows.
std::vector<std::vector<int64_t>> make_windows(const std::vector<int64_t> & stream, int64_t seq_len, int64_t overlap);

// A seeded Fisher-Yates permutation of 0..n-1 (the same on every platform, unlike std::shuffle).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed);

}  // namespace extractor
