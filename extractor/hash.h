// SHA-256 (FIPS 180-4) for the provenance hashes in metadata.json: tokenizer.json's bytes and a
// checkpoint fingerprint. Small and dependency-free because the GPU-only build has no OpenSSL.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace extractor {

class Sha256 {
public:
    Sha256();
    void update(const void * data, size_t size);
    void update(std::string_view s) { update(s.data(), s.size()); }
    std::string hex();  // finishes; call once

private:
    void block(const uint8_t * p);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t buf_len_ = 0;
    uint64_t total_ = 0;
};

std::string sha256_file(const std::string & path);  // throws common::Error on read failure
// Hash of config.json plus every shard's name, size and header bytes: identifies a checkpoint in
// milliseconds without reading tens of gigabytes (documented in extractor/README.md).
std::string checkpoint_fingerprint(const std::string & dir);

}  // namespace extractor
