// The checkpoint fingerprint (hash.h).
#include "extractor/hash.h"

#include <algorithm>
#include <filesystem>
#include <unistd.h>
#include <vector>

#include "common/regular_file.h"

namespace extractor {

std::string checkpoint_fingerprint(const std::string & dir) {
    namespace fs = std::filesystem;
    // The safetensors reference refuses headers over 100 MB; hashing reads no more than that.
    constexpr uint64_t kMaxHeaderBytes = 100u << 20;
    constexpr uint64_t kMaxJsonBytes = 64u << 20;
    common::Sha256 h;
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
