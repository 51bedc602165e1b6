// SHA-256 (FIPS 180-4) from OpenSSL's libcrypto, the one implementation every part uses: bifrost's
// manifests, push stream and pull verification (the remote side runs coreutils' sha256sum, which
// must agree), and extract's provenance hashes (tokenizer.json, the checkpoint fingerprint).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace common {

class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256 &) = delete;
    Sha256 & operator=(const Sha256 &) = delete;

    void update(const void * data, size_t size);
    void update(std::string_view s) { update(s.data(), s.size()); }
    std::string hex();  // finishes: 64 lower-case hex digits; call once

private:
    void * ctx_;  // EVP_MD_CTX (kept out of this header so users need no OpenSSL headers)
};

std::string sha256_hex(std::string_view data);
// The hash of a regular file's bytes; a FIFO or directory under the name is refused (common::Error,
// as open_regular_file says) rather than waited on or read as empty; a read error throws Error::io.
std::string sha256_file(const std::string & path);

}  // namespace common
