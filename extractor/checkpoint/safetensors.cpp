// Safetensors reader (mmap + validation) and writer. See safetensors.h for the format notes.
#include "extractor/checkpoint/safetensors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/regular_file.h"

namespace extractor {
namespace {

common::Error header_error(const std::string & path, const std::string & what) {
    return common::Error(common::ErrorKind::Usage, path + ": bad safetensors header: " + what).with("file", path);
}

}  // namespace

struct SafetensorsFile::State {
    std::string path;
    void * map = nullptr;
    uint64_t size = 0;
    SafetensorsHeader header;
    std::unordered_map<std::string, size_t> index;
    nlohmann::json metadata = nlohmann::json::object();
    ~State() {
        if (map && map != MAP_FAILED) munmap(map, size);
    }
};

SafetensorsFile SafetensorsFile::open(const std::string & path) {
    auto st = std::make_shared<State>();
    st->path = path;
    // Refuses a directory, FIFO (whose open() would block outside the load watchdog) or symlink
    // loop by name before mapping anything.
    common::RegularFile file = common::open_regular_file(path, "safetensors file");
    st->size = file.size();
    if (st->size < 8)
        throw header_error(path, "file has " + std::to_string(st->size) + " bytes, fewer than the 8-byte header length");
    st->map = mmap(nullptr, st->size, PROT_READ, MAP_PRIVATE, file.fd(), 0);
    if (st->map == MAP_FAILED) {
        int e = errno;
        st->map = nullptr;
        throw common::Error::io(path, "mmap", e);
    }
    st->header = parse_safetensors_header(static_cast<const uint8_t *>(st->map), st->size, st->size, path);
    for (size_t i = 0; i < st->header.tensors.size(); ++i) st->index[st->header.tensors[i].name] = i;
    for (const auto & [k, v] : st->header.metadata) st->metadata[k] = v;
    SafetensorsFile f;
    f.state_ = std::move(st);
    return f;
}

const std::string & SafetensorsFile::path() const { return state_->path; }
uint64_t SafetensorsFile::file_size_bytes() const { return state_->size; }
const nlohmann::json & SafetensorsFile::metadata() const { return state_->metadata; }

std::vector<std::string> SafetensorsFile::names() const {
    std::vector<std::string> out;
    out.reserve(state_->header.tensors.size());
    for (const auto & t : state_->header.tensors) out.push_back(t.name);
    return out;
}

bool SafetensorsFile::contains(const std::string & name) const { return state_->index.count(name) != 0; }

const TensorInfo & SafetensorsFile::info(const std::string & name) const {
    auto it = state_->index.find(name);
    if (it == state_->index.end())
        throw common::Error::not_found(state_->path + ": tensor " + name, "not in this file")
            .with("file", state_->path)
            .with("tensor", name);
    return state_->header.tensors[it->second];
}

const uint8_t * SafetensorsFile::data(const std::string & name) const {
    return static_cast<const uint8_t *>(state_->map) + info(name).file_offset;
}

at::Tensor SafetensorsFile::view(const std::string & name) const {
    const TensorInfo & t = info(name);
    auto keep = state_;
    void * ptr = const_cast<uint8_t *>(data(name));
    return at::from_blob(
        ptr, t.shape, [keep](void *) {}, at::TensorOptions().dtype(t.scalar_type).device(at::kCPU));
}

at::Tensor SafetensorsFile::load(const std::string & name, c10::Device device) const {
    return view(name).to(device, /*non_blocking=*/false, /*copy=*/true);
}

void write_safetensors(const std::string & path, const std::vector<std::pair<std::string, at::Tensor>> & tensors,
                       const std::map<std::string, std::string> & metadata) {
    nlohmann::json header = nlohmann::json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::vector<at::Tensor> host;
    host.reserve(tensors.size());
    uint64_t offset = 0;
    for (const auto & [name, t] : tensors) {
        if (name == "__metadata__" || header.contains(name))
            throw common::Error::usage(path + ": tensor " + name + ": duplicate or reserved name");
        at::Tensor c = t.detach().to(at::kCPU).contiguous();
        uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
        header[name] = {{"dtype", safetensors_dtype_name(c.scalar_type())},
                        {"shape", c.sizes().vec()},
                        {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
        host.push_back(std::move(c));
    }
    std::string text = header.dump();
    while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // align the buffer start to 8 bytes
    std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) throw common::Error::io(tmp, "open for writing", errno);
        uint64_t n = text.size();
        unsigned char len[8];
        for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
        out.write(reinterpret_cast<const char *>(len), 8);
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        for (const auto & c : host)
            out.write(static_cast<const char *>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
        out.flush();
        if (!out) throw common::Error::io(tmp, "write", errno);
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw common::Error::io(path, "rename into place", ec.value());
}

}  // namespace extractor
