// Whether a run's data can fill its windows, known before anything is rented. Without this, an
// input too short for data.num_sequences was found by `extract` on the instance ("the input yields
// only 1 windows"), after the create, the push, the build and the model download had been paid for.
#pragma once

#include <cstdint>

#include "deploy/run_config.h"

namespace deploy {

// Tokens the windows take from the token stream: the first window sequence_length, each further one
// sequence_length - overlap (extract's windows: starts every sequence_length - overlap tokens).
int64_t tokens_needed(const DataConfig & data);

// Tokens a tokenizer may make of one document beyond one per byte: a BOS/EOS the template adds and
// SentencePiece's prefixed "▁", none of which covers a byte of the document.
inline constexpr int64_t kSpecialTokensPerDocument = 4;

// Refuses (common::Error usage, exit 2, naming the file, what it holds and the tokens needed) a
// local data file that cannot fill the run:
//  - data.text: byte-level BPE and SentencePiece tokens each cover at least one byte, so a file of
//    B bytes gives at most B + kSpecialTokensPerDocument tokens;
//  - data.jsonl: the same over its documents' text (each line's text_field), read when the file is
//    at most 64 MiB (a line that is not JSON or has no such string field is refused here too, as
//    extract would refuse it on the instance); a larger file is bounded by its size;
//  - data.tokens: the token ids counted exactly (a flat list, or pre-cut rows: each row one window,
//    a row shorter than sequence_length refused) when the file is at most 1 GiB.
// Synthetic tokens and data.hub_rows (fetched to hub_rows_target_bytes) always fill the run.
void check_data_fills_run(const DataConfig & data);

}  // namespace deploy
