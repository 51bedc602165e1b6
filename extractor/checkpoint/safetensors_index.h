// model.safetensors.index.json: the weight_map (tensor name -> shard file), read and bounded
// before any shard is opened. Torch-free, so the fuzzer links it alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace extractor {

// Bounds checked before the shards are opened. The largest released checkpoints list ~100k
// tensors in ~160 shards, in an index of ~10 MB.
namespace index_limits {
constexpr uint64_t kFileBytes = 64u << 20;
constexpr size_t kTensors = 1u << 20;
constexpr size_t kShards = 4096;      // each is mapped for the checkpoint's lifetime
constexpr size_t kNameBytes = 1024;   // a tensor name; a shard file name is at most 255 (NAME_MAX)
}  // namespace index_limits

// The weight_map of an index file's text: tensor name -> shard file name, a plain name inside the
// checkpoint directory (never empty, ".", "..", nor containing '/' or NUL). `path` only names the
// file in errors. Throws common::Error (usage) naming the file and the entry.
std::map<std::string, std::string> parse_safetensors_index(std::string_view text, const std::string & path);

}  // namespace extractor
