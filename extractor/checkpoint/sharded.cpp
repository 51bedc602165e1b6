// Checkpoint directory reader (single file or sharded index): docs/checkpoint-formats.md#sharded-index.
#include "extractor/checkpoint/sharded.h"

#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/program.h"
#include "common/regular_file.h"

namespace extractor {

namespace fs = std::filesystem;

namespace {

// lstat, not stat: a dangling symlink or a symlink loop is "there" and open() names the problem.
bool anything_at(const fs::path & p) {
    struct stat sb {};
    return ::lstat(p.c_str(), &sb) == 0;
}

}  // namespace

bool Checkpoint::present(const std::string & dir) {
    return anything_at(fs::path(dir) / "model.safetensors.index.json") || anything_at(fs::path(dir) / "model.safetensors");
}

Checkpoint Checkpoint::open(const std::string & dir) {
    Checkpoint c;
    c.dir_ = dir;
    fs::path index = fs::path(dir) / "model.safetensors.index.json";
    fs::path single = fs::path(dir) / "model.safetensors";
    if (anything_at(index)) {
        const std::string text = common::read_regular_file(index.string(), index_limits::kFileBytes, "safetensors index");
        std::map<std::string, size_t> shard_index;
        for (const auto & [name, file] : parse_safetensors_index(text, index.string())) {
            common::throw_if_interrupted();
            auto [si, inserted] = shard_index.emplace(file, c.shards_.size());
            if (inserted) {
                const fs::path shard_path = fs::path(dir) / file;
                if (!anything_at(shard_path))
                    throw common::Error::not_found(shard_path.string(), "shard listed in " + index.string() + " (for " + name + ")")
                        .with("file", shard_path.string());
                c.shards_.push_back(SafetensorsFile::open(shard_path.string()));
            }
            const SafetensorsFile & shard = c.shards_[si->second];
            if (!shard.contains(name))
                throw common::Error(common::ErrorKind::Usage,
                                    shard.path() + ": tensor " + name + ": listed in " + index.string() +
                                        " but missing from the shard")
                    .with("file", shard.path())
                    .with("tensor", name);
            c.where_[name] = si->second;
        }
    } else if (anything_at(single)) {
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

bool Checkpoint::has_prefix(const std::string & prefix) const {
    auto it = where_.lower_bound(prefix);
    return it != where_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

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
