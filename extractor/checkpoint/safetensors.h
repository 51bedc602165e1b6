// Safetensors files: a validated, memory-mapped reader and a writer.
// Format per huggingface/safetensors (README "Format", safetensors/src/tensor.rs): u64 LE header
// length N, N bytes of JSON (may be space-padded), then the byte buffer; offsets are relative to the
// buffer. The reader applies the reference validation (contiguous offsets from 0, no holes or
// overlaps, byte sizes match shapes, buffer ends exactly at the file end) and names the file and
// tensor in every error. Not here: sharded checkpoints (sharded.h) and model semantics.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace extractor {

struct TensorInfo {
    std::string name;
    std::string dtype;                 // safetensors spelling: "BF16", "F32", ...
    c10::ScalarType scalar_type;       // the libtorch type the bytes are read as
    std::vector<int64_t> shape;
    uint64_t data_begin = 0;           // offsets relative to the byte buffer, end exclusive
    uint64_t data_end = 0;
    uint64_t file_offset = 0;          // absolute offset of the first byte in the file

    uint64_t size_bytes() const { return data_end - data_begin; }
};

// The parsed header of one file. Exposed separately so the fuzzer and tests can parse bytes
// without a file.
struct SafetensorsHeader {
    std::vector<TensorInfo> tensors;   // in offset order
    std::map<std::string, std::string> metadata;  // "__metadata__" (string -> string)
    uint64_t data_start = 0;           // 8 + N
};

// Parses and validates a header. `bytes` holds at least the first min(size, 8 + N) bytes of the
// file; `file_size` is the whole file's size (checked against the last offset). `path` only names
// the file in errors. Throws common::Error (usage) on any violation.
SafetensorsHeader parse_safetensors_header(const uint8_t * bytes, size_t size, uint64_t file_size,
                                           const std::string & path);

// "BF16" -> kBFloat16 etc. Throws common::Error (usage) for a dtype libtorch cannot represent.
c10::ScalarType scalar_type_from_safetensors(const std::string & dtype, const std::string & path,
                                             const std::string & tensor);
std::string safetensors_dtype_name(c10::ScalarType type);

class SafetensorsFile {
public:
    // Opens, memory-maps and validates the file (the mapping lives as long as any copy of this
    // object or any tensor returned by view()).
    static SafetensorsFile open(const std::string & path);

    const std::string & path() const;
    std::vector<std::string> names() const;  // in offset order
    bool contains(const std::string & name) const;
    const TensorInfo & info(const std::string & name) const;  // throws not_found naming file+tensor
    // A copy of the tensor on `device`, in its stored dtype.
    at::Tensor load(const std::string & name, c10::Device device = c10::Device(c10::kCPU)) const;
    // A zero-copy CPU tensor over the mapped bytes (read-only in spirit; keeps the mapping alive).
    at::Tensor view(const std::string & name) const;
    // Raw pointer to a tensor's first byte inside the mapping.
    const uint8_t * data(const std::string & name) const;
    // The "__metadata__" map as a JSON object of strings (empty object when absent).
    const nlohmann::json & metadata() const;
    uint64_t file_size_bytes() const;

private:
    struct State;
    std::shared_ptr<const State> state_;
};

// Writes tensors (any device; copied to the CPU, made contiguous) in the given order with an
// 8-byte-aligned header, via a temporary file renamed into place, so a crash never leaves a
// half-written file under the final name. Metadata values are strings, as the format requires.
void write_safetensors(const std::string & path,
                       const std::vector<std::pair<std::string, at::Tensor>> & tensors,
                       const std::map<std::string, std::string> & metadata = {});

}  // namespace extractor
