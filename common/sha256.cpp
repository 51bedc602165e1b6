// SHA-256 through libcrypto's EVP interface (sha256.h).
#include "common/sha256.h"

#include <openssl/evp.h>

#include <vector>

#include "common/error.h"
#include "common/hex.h"
#include "common/regular_file.h"

namespace common {

namespace {

EVP_MD_CTX * ctx_of(void * p) { return static_cast<EVP_MD_CTX *>(p); }

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
    // Only allocation can fail here; it is not worth a recoverable error.
    if (!ctx_ || EVP_DigestInit_ex(ctx_of(ctx_), EVP_sha256(), nullptr) != 1)
        throw Error::internal("libcrypto: cannot set up a SHA-256 context");
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_of(ctx_)); }

void Sha256::update(const void * data, size_t size) {
    if (size != 0 && EVP_DigestUpdate(ctx_of(ctx_), data, size) != 1) throw Error::internal("libcrypto: SHA-256 update failed");
}

std::string Sha256::hex() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (EVP_DigestFinal_ex(ctx_of(ctx_), out, &n) != 1) throw Error::internal("libcrypto: SHA-256 final failed");
    return to_hex(out, n);
}

std::string sha256_hex(std::string_view data) {
    Sha256 h;
    h.update(data);
    return h.hex();
}

std::string sha256_file(const std::string & path) {
    RegularFile file = open_regular_file(path, "file to hash");
    Sha256 h;
    std::vector<char> buf(1 << 20);
    while (size_t n = read_some(file, buf.data(), buf.size(), path)) h.update(buf.data(), n);
    return h.hex();
}

}  // namespace common
