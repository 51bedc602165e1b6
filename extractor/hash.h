// The checkpoint fingerprint for the provenance hashes in metadata.json; tokenizer.json's bytes are
// hashed with common::sha256_file. SHA-256 itself is common's (OpenSSL's libcrypto), with
// known-answer tests in tests/common.
#pragma once

#include <string>

#include "common/sha256.h"

namespace extractor {

using common::sha256_file;  // throws common::Error on read failure
// Hash of config.json plus every shard's name, size and header bytes: identifies a checkpoint in
// milliseconds without reading tens of gigabytes (documented in extractor/README.md).
std::string checkpoint_fingerprint(const std::string & dir);

}  // namespace extractor
