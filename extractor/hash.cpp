// SHA-256 per FIPS 180-4, and the checkpoint fingerprint (hash.h).
#include "extractor/hash.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <unistd.h>
#include <vector>

#include "common/error.h"
#include "common/program.h"
#include "common/regular_file.h"

namespace extractor {
namespace {
constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
}  // namespace

Sha256::Sha256() {
    const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    std::memcpy(h_, init, sizeof h_);
}

void Sha256::block(const uint8_t * p) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h_[0] += a; h_[1] += b; h_[2] += c; h_[3] += d; h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += h;
}

void Sha256::update(const void * data, size_t size) {
    const auto * p = static_cast<const uint8_t *>(data);
    total_ += size;
    while (size > 0) {
        size_t n = std::min(size, 64 - buf_len_);
        std::memcpy(buf_ + buf_len_, p, n);
        buf_len_ += n;
        p += n;
        size -= n;
        if (buf_len_ == 64) {
            block(buf_);
            buf_len_ = 0;
        }
    }
}

std::string Sha256::hex() {
    uint64_t bits = total_ * 8;
    uint8_t pad = 0x80;
    update(&pad, 1);
    uint8_t zero = 0;
    while (buf_len_ != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(len, 8);
    static const char * digits = "0123456789abcdef";
    std::string out;
    for (uint32_t v : h_)
        for (int i = 28; i >= 0; i -= 4) out.push_back(digits[(v >> i) & 0xF]);
    return out;
}

std::string sha256_file(const std::string & path) {
    // A FIFO or directory under the name is refused rather than waited on or read as empty.
    common::RegularFile file = common::open_regular_file(path, "file to hash");
    Sha256 h;
    std::vector<char> buf(1 << 20);
    for (;;) {
        ssize_t n = ::read(file.fd(), buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) {
                common::throw_if_interrupted();
                continue;
            }
            throw common::Error::io(path, "read", errno);
        }
        if (n == 0) break;
        h.update(buf.data(), static_cast<size_t>(n));
    }
    return h.hex();
}

std::string checkpoint_fingerprint(const std::string & dir) {
    namespace fs = std::filesystem;
    // The safetensors reference refuses headers over 100 MB; hashing reads no more than that.
    constexpr uint64_t kMaxHeaderBytes = 100u << 20;
    constexpr uint64_t kMaxJsonBytes = 64u << 20;
    Sha256 h;
    std::vector<fs::path> files;
    for (const auto & e : fs::directory_iterator(dir)) {
        auto name = e.path().filename().string();
        if (name == "config.json" || name == "model.safetensors.index.json" ||
            (name.size() > 12 && name.substr(name.size() - 12) == ".safetensors"))
            files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto & f : files) {
        const std::string name = f.filename().string();
        // Every file matched by name is opened as a regular file: a stray FIFO named x.safetensors
        // (not in the index, so never validated) would otherwise block here after the whole run.
        common::RegularFile file = common::open_regular_file(f.string(), "checkpoint file");
        const uint64_t size = file.size();
        h.update(name);
        h.update(std::to_string(size));
        std::string bytes;
        if (name.find(".safetensors") != std::string::npos && name.find(".json") == std::string::npos) {
            uint8_t len[8] = {};
            if (::pread(file.fd(), len, 8, 0) == 8) {
                uint64_t n = 0;
                for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
                n = std::min<uint64_t>({n, size > 8 ? size - 8 : 0, kMaxHeaderBytes});
                bytes.resize(static_cast<size_t>(n));
                ssize_t got = ::pread(file.fd(), bytes.data(), bytes.size(), 8);
                bytes.resize(got > 0 ? static_cast<size_t>(got) : 0);
            }
        } else {
            bytes = common::read_regular_file(f.string(), kMaxJsonBytes, "checkpoint file");
        }
        h.update(bytes);
    }
    return h.hex();
}

}  // namespace extractor
