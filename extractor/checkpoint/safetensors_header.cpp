// The safetensors header parser and dtype table, kept free of libtorch calls (only the
// c10::ScalarType enum), so the libFuzzer target (fuzz/safetensors_fuzz.cpp) builds without
// linking libtorch. Validation per safetensors/src/tensor.rs (Metadata::validate).
#include <algorithm>
#include <limits>
#include <string>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"

namespace extractor {

namespace {

// safetensors' MAX_HEADER_SIZE (src/tensor.rs)
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

common::Error header_error(const std::string & path, const std::string & what) {
    return common::Error(common::ErrorKind::Usage, path + ": bad safetensors header: " + what)
        .with("file", path);
}

common::Error tensor_error(const std::string & path, const std::string & tensor, const std::string & what) {
    return common::Error(common::ErrorKind::Usage, path + ": tensor " + tensor + ": " + what)
        .with("file", path)
        .with("tensor", tensor);
}

struct DtypeEntry {
    const char * name;
    c10::ScalarType type;
    int bits;
};

// The dtypes we can hand to libtorch; the rest of safetensors' list (U16/U32/U64, F4, F6, F8 on
// 1.13, ...) is refused by name rather than misread.
const DtypeEntry kDtypes[] = {
    {"BOOL", c10::ScalarType::Bool, 8},      {"U8", c10::ScalarType::Byte, 8},
    {"I8", c10::ScalarType::Char, 8},        {"I16", c10::ScalarType::Short, 16},
    {"I32", c10::ScalarType::Int, 32},       {"I64", c10::ScalarType::Long, 64},
    {"F16", c10::ScalarType::Half, 16},      {"BF16", c10::ScalarType::BFloat16, 16},
    {"F32", c10::ScalarType::Float, 32},     {"F64", c10::ScalarType::Double, 64},
};

const DtypeEntry * find_dtype(const std::string & name) {
    for (const auto & e : kDtypes)
        if (name == e.name) return &e;
    return nullptr;
}

std::string shape_text(const std::vector<int64_t> & shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
    return s + "]";
}

}  // namespace

c10::ScalarType scalar_type_from_safetensors(const std::string & dtype, const std::string & path,
                                             const std::string & tensor) {
    if (const DtypeEntry * e = find_dtype(dtype)) return e->type;
    throw tensor_error(path, tensor, "unsupported dtype " + dtype +
                                         " (supported: BOOL U8 I8 I16 I32 I64 F16 BF16 F32 F64)");
}

std::string safetensors_dtype_name(c10::ScalarType type) {
    for (const auto & e : kDtypes)
        if (e.type == type) return e.name;
    throw common::Error::usage("safetensors: no dtype name for scalar type " + std::to_string(static_cast<int>(type)));
}

SafetensorsHeader parse_safetensors_header(const uint8_t * bytes, size_t size, uint64_t file_size,
                                           const std::string & path) {
    if (size < 8 || file_size < 8) throw header_error(path, "file shorter than the 8-byte header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian u64
    if (n > kMaxHeaderBytes)
        throw header_error(path, "header length " + std::to_string(n) + " exceeds 100000000 bytes");
    if (8 + n > file_size)
        throw header_error(path, "header length " + std::to_string(n) + " runs past the end of the file (" +
                                     std::to_string(file_size) + " bytes); the file is truncated");
    if (8 + n > size) throw header_error(path, "header bytes not available");
    if (n == 0 || bytes[8] != '{') throw header_error(path, "header is not a JSON object");

    nlohmann::json j;
    try {
        j = nlohmann::json::parse(reinterpret_cast<const char *>(bytes + 8),
                                  reinterpret_cast<const char *>(bytes + 8 + n));
    } catch (const nlohmann::json::exception & e) {
        throw header_error(path, std::string("JSON: ") + e.what());
    }
    if (!j.is_object()) throw header_error(path, "header is not a JSON object");

    SafetensorsHeader h;
    h.data_start = 8 + n;
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string & name = it.key();
        const nlohmann::json & v = it.value();
        if (name == "__metadata__") {
            if (!v.is_object()) throw header_error(path, "__metadata__ is not an object");
            for (auto m = v.begin(); m != v.end(); ++m) {
                if (!m.value().is_string())
                    throw header_error(path, "__metadata__ value of " + m.key() + " is not a string");
                h.metadata[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        if (!v.is_object()) throw tensor_error(path, name, "entry is not an object");
        auto dt = v.find("dtype");
        auto sh = v.find("shape");
        auto of = v.find("data_offsets");
        if (dt == v.end() || !dt->is_string()) throw tensor_error(path, name, "missing or non-string dtype");
        if (sh == v.end() || !sh->is_array()) throw tensor_error(path, name, "missing or non-array shape");
        if (of == v.end() || !of->is_array() || of->size() != 2)
            throw tensor_error(path, name, "data_offsets must be [begin, end]");
        TensorInfo t;
        t.name = name;
        t.dtype = dt->get<std::string>();
        const DtypeEntry * e = find_dtype(t.dtype);
        if (!e) t.scalar_type = scalar_type_from_safetensors(t.dtype, path, name);  // throws
        t.scalar_type = e->type;
        uint64_t numel = 1;
        bool overflow = false;
        for (const auto & d : *sh) {
            if (!d.is_number_unsigned()) throw tensor_error(path, name, "shape entries must be non-negative integers");
            uint64_t dim = d.get<uint64_t>();
            if (dim > (uint64_t(1) << 62)) overflow = true;
            t.shape.push_back(static_cast<int64_t>(dim));
            if (dim != 0 && numel > (uint64_t(1) << 62) / dim) overflow = true;
            numel *= dim;
        }
        if (overflow) throw tensor_error(path, name, "shape " + shape_text(t.shape) + " overflows");
        for (const auto & o : *of)
            if (!o.is_number_unsigned()) throw tensor_error(path, name, "data_offsets must be non-negative integers");
        t.data_begin = (*of)[0].get<uint64_t>();
        t.data_end = (*of)[1].get<uint64_t>();
        if (t.data_end < t.data_begin) throw tensor_error(path, name, "data_offsets end before they begin");
        // numel <= 2^62, but numel x 8 bytes can pass 2^64: I64 [2^61] wrapped to 0 bytes and was
        // accepted as an empty tensor with data_offsets [c, c].
        const auto element_bytes = static_cast<uint64_t>(e->bits / 8);
        if (numel > std::numeric_limits<uint64_t>::max() / element_bytes)
            throw tensor_error(path, name, t.dtype + " " + shape_text(t.shape) + " is more than 2^64 bytes");
        const uint64_t expected = numel * element_bytes;
        if (t.data_end - t.data_begin != expected)
            throw tensor_error(path, name, "data_offsets span " + std::to_string(t.data_end - t.data_begin) +
                                               " bytes but " + t.dtype + " " + shape_text(t.shape) + " needs " +
                                               std::to_string(expected));
        h.tensors.push_back(std::move(t));
    }
    std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo & a, const TensorInfo & b) {
        return a.data_begin != b.data_begin ? a.data_begin < b.data_begin : a.data_end < b.data_end;
    });
    uint64_t cursor = 0;
    for (auto & t : h.tensors) {
        if (t.data_begin != cursor)
            throw tensor_error(path, t.name, t.data_begin > cursor ? "hole in the byte buffer before this tensor"
                                                                   : "overlaps the previous tensor");
        cursor = t.data_end;
        t.file_offset = h.data_start + t.data_begin;
    }
    if (h.data_start + cursor != file_size) {
        if (h.data_start + cursor > file_size)
            throw header_error(path, "tensors need " + std::to_string(h.data_start + cursor) + " bytes but the file has " +
                                         std::to_string(file_size) + "; the file is truncated" +
                                         (h.tensors.empty() ? "" : " (last tensor " + h.tensors.back().name + ")"));
        throw header_error(path, "file has " + std::to_string(file_size - h.data_start - cursor) +
                                     " bytes after the last tensor");
    }
    return h;
}

}  // namespace extractor
