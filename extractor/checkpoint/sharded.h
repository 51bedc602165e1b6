// A checkpoint directory: model.safetensors, or model.safetensors.index.json plus its shards
// (weight_map: tensor name -> shard file). Each shard is opened and memory-mapped once; every
// lookup names the file and tensor in its errors. Not here: which names a model needs (families).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "extractor/checkpoint/safetensors.h"
#include "extractor/checkpoint/safetensors_index.h"

namespace extractor {

class Checkpoint {
public:
    // dir holds config.json and the safetensors file(s). Throws common::Error (not_found when no
    // weights exist or a listed shard is missing; usage for a bad index, a shard that fails
    // validation, or a weights path that is a directory, FIFO, symlink loop or other non-file).
    static Checkpoint open(const std::string & dir);
    // Whether dir has anything under the weights' names (model.safetensors or the index), usable
    // or not: open() then either loads it or says what is wrong with it.
    static bool present(const std::string & dir);

    const std::string & dir() const { return dir_; }
    bool contains(const std::string & name) const { return where_.count(name) != 0; }
    bool has_prefix(const std::string & prefix) const;  // any tensor name starting with prefix
    const TensorInfo & info(const std::string & name) const;
    const SafetensorsFile & file_of(const std::string & name) const;
    at::Tensor view(const std::string & name) const;  // zero-copy CPU tensor over the mapping
    std::vector<std::string> names() const;
    std::vector<std::string> files() const;           // shard paths
    uint64_t total_bytes() const;                     // sum of all tensors' bytes

private:
    std::string dir_;
    std::vector<SafetensorsFile> shards_;
    std::map<std::string, size_t> where_;             // tensor -> shard index
};

}  // namespace extractor
