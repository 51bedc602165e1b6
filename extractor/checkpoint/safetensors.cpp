// Safetensors reader (mmap + validation) and writer. See safetensors.h for the format notes.
#include "extractor/checkpoint/safetensors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <mutex>
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

// A shard is mapped, not read, so if another process truncates or rewrites it in place while we
// load (a download still running, a sync tool), touching a page past its new end raises SIGBUS,
// which would kill the program with no word about which file. Every mapping is registered here,
// and a SIGBUS whose address falls inside one is reported as that file's error (exit 2, usage:
// a bad checkpoint); any other SIGBUS keeps its previous disposition. The handler reads the table
// without a lock: an entry's path and size are written before its start is published.
struct MappedRegion {
    std::atomic<uintptr_t> begin{0};
    uint64_t size = 0;
    char path[1024] = {};
};
constexpr size_t kMaxMappedRegions = 8192;  // shards mapped at once (a 235 B checkpoint has ~100)
MappedRegion g_regions[kMaxMappedRegions];
std::mutex g_regions_mutex;
struct sigaction g_previous_sigbus {};

void write_all(const char * text, size_t n) {
    while (n > 0) {
        ssize_t w = ::write(STDERR_FILENO, text, n);
        if (w <= 0) return;
        text += w;
        n -= static_cast<size_t>(w);
    }
}

void on_sigbus(int sig, siginfo_t * info, void * context) {
    const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
    for (auto & r : g_regions) {
        const uintptr_t b = r.begin.load(std::memory_order_acquire);
        if (b != 0 && addr >= b && addr - b < r.size) {
            static const char prefix[] = "extract: error: ";
            static const char tail[] = ": the file shrank while it was being read (truncated or rewritten by another "
                                       "process during the load); stopping\n";
            write_all(prefix, sizeof prefix - 1);
            write_all(r.path, ::strnlen(r.path, sizeof r.path));
            write_all(tail, sizeof tail - 1);
            ::_exit(2);
        }
    }
    if (g_previous_sigbus.sa_flags & SA_SIGINFO) {
        if (g_previous_sigbus.sa_sigaction) return g_previous_sigbus.sa_sigaction(sig, info, context);
    } else if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN &&
               g_previous_sigbus.sa_handler != nullptr) {
        return g_previous_sigbus.sa_handler(sig);
    }
    ::signal(SIGBUS, SIG_DFL);  // returning re-executes the faulting access: now the default action
}

// Returns the slot, or -1 when the table is full (the mapping is then simply not guarded).
int register_mapping(const void * map, uint64_t size, const std::string & path) {
    static std::once_flag installed;
    std::call_once(installed, [] {
        struct sigaction sa {};
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGBUS, &sa, &g_previous_sigbus);
    });
    std::lock_guard lock(g_regions_mutex);
    for (size_t i = 0; i < kMaxMappedRegions; ++i) {
        MappedRegion & r = g_regions[i];
        if (r.begin.load(std::memory_order_relaxed) != 0) continue;
        r.size = size;
        const size_t n = std::min(path.size(), sizeof r.path - 1);
        std::memcpy(r.path, path.data(), n);
        r.path[n] = '\0';
        r.begin.store(reinterpret_cast<uintptr_t>(map), std::memory_order_release);
        return static_cast<int>(i);
    }
    return -1;
}

void unregister_mapping(int slot) {
    if (slot < 0) return;
    std::lock_guard lock(g_regions_mutex);
    g_regions[slot].begin.store(0, std::memory_order_release);
}

}  // namespace

struct SafetensorsFile::State {
    std::string path;
    void * map = nullptr;
    uint64_t size = 0;
    SafetensorsHeader header;
    std::unordered_map<std::string, size_t> index;
    nlohmann::json metadata = nlohmann::json::object();
    int guard_slot = -1;  // in the SIGBUS table (see on_sigbus)
    ~State() {
        unregister_mapping(guard_slot);
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
    st->guard_slot = register_mapping(st->map, st->size, path);
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
