// Checkpoint directory reader (single file or sharded index). model-spec.md §13.
#include "extractor/checkpoint/sharded.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace extractor {

namespace fs = std::filesystem;

Checkpoint Checkpoint::open(const std::string & dir) {
    Checkpoint c;
    c.dir_ = dir;
    fs::path index = fs::path(dir) / "model.safetensors.index.json";
    fs::path single = fs::path(dir) / "model.safetensors";
    if (fs::exists(index)) {
        std::ifstream in(index);
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(in);
        } catch (const nlohmann::json::exception & e) {
            throw common::Error::file(index.string(), std::string("not valid JSON: ") + e.what());
        }
        auto wm = j.find("weight_map");
        if (wm == j.end() || !wm->is_object())
            throw common::Error::file(index.string(), "no weight_map object");
        std::map<std::string, size_t> shard_index;
        for (auto it = wm->begin(); it != wm->end(); ++it) {
            if (!it.value().is_string())
                throw common::Error::file(index.string(), "weight_map entry " + it.key() + " is not a file name");
            std::string file = it.value().get<std::string>();
            if (file.find('/') != std::string::npos)
                throw common::Error::file(index.string(), "weight_map entry " + it.key() + " names a path outside the directory: " + file);
            auto [si, inserted] = shard_index.emplace(file, c.shards_.size());
            if (inserted) c.shards_.push_back(SafetensorsFile::open((fs::path(dir) / file).string()));
            const SafetensorsFile & shard = c.shards_[si->second];
            if (!shard.contains(it.key()))
                throw common::Error(common::ErrorKind::Usage,
                                    shard.path() + ": tensor " + it.key() + ": listed in " + index.string() +
                                        " but missing from the shard")
                    .with("file", shard.path())
                    .with("tensor", it.key());
            c.where_[it.key()] = si->second;
        }
    } else if (fs::exists(single)) {
        c.shards_.push_back(SafetensorsFile::open(single.string()));
        for (const auto & n : c.shards_[0].names()) c.where_[n] = 0;
    } else {
        throw common::Error::not_found(dir, "no model.safetensors or model.safetensors.index.json").with("file", dir);
    }
    return c;
}

const SafetensorsFile & Checkpoint::file_of(const std::string & name) const {
    auto it = where_.find(name);
    if (it == where_.end())
        throw common::Error(common::ErrorKind::Usage, dir_ + ": tensor " + name + ": missing from the checkpoint")
            .with("file", dir_)
            .with("tensor", name);
    return shards_[it->second];
}

const TensorInfo & Checkpoint::info(const std::string & name) const { return file_of(name).info(name); }
at::Tensor Checkpoint::view(const std::string & name) const { return file_of(name).view(name); }

std::vector<std::string> Checkpoint::names() const {
    std::vector<std::string> out;
    for (const auto & [n, _] : where_) out.push_back(n);
    return out;
}

std::vector<std::string> Checkpoint::files() const {
    std::vector<std::string> out;
    for (const auto & s : shards_) out.push_back(s.path());
    return out;
}

uint64_t Checkpoint::total_bytes() const {
    uint64_t total = 0;
    for (const auto & [n, _] : where_) total += info(n).size_bytes();
    return total;
}

}  // namespace extractor
