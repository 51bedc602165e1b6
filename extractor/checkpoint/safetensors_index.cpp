// parse_safetensors_index (safetensors_index.h).
#include "extractor/checkpoint/safetensors_index.h"

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace extractor {

namespace {

common::Error index_error(const std::string & path, const std::string & what) {
    return common::Error::file(path, what);
}

}  // namespace

std::map<std::string, std::string> parse_safetensors_index(std::string_view text, const std::string & path) {
    if (text.size() > index_limits::kFileBytes)
        throw index_error(path, std::to_string(text.size()) + " bytes, more than the " +
                                    std::to_string(index_limits::kFileBytes) + " allowed for an index");
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception & e) {
        throw index_error(path, std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) throw index_error(path, "not a JSON object");
    auto wm = j.find("weight_map");
    if (wm == j.end() || !wm->is_object()) throw index_error(path, "no weight_map object");
    if (wm->size() > index_limits::kTensors)
        throw index_error(path, "weight_map lists " + std::to_string(wm->size()) + " tensors, more than " +
                                    std::to_string(index_limits::kTensors));
    std::map<std::string, std::string> out;
    std::map<std::string, size_t> shards;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
        const std::string & name = it.key();
        // Names are quoted with JSON escapes so a control character or a megabyte name cannot
        // garble the error.
        const std::string shown = nlohmann::json(name.substr(0, 200)).dump();
        if (name.empty() || name.size() > index_limits::kNameBytes)
            throw index_error(path, "weight_map entry " + shown + ": a tensor name must have 1 to " +
                                        std::to_string(index_limits::kNameBytes) + " bytes");
        if (!it.value().is_string())
            throw index_error(path, "weight_map entry " + shown + " is not a file name");
        const std::string & file = it.value().get_ref<const std::string &>();
        const std::string shown_file = nlohmann::json(file.substr(0, 300)).dump();
        if (file.empty() || file == "." || file == ".." || file.size() > 255 || file.find('/') != std::string::npos ||
            file.find('\0') != std::string::npos)
            throw index_error(path, "weight_map entry " + shown + " names " + shown_file +
                                        ", not a file name inside the checkpoint directory");
        if (shards.emplace(file, shards.size()).second && shards.size() > index_limits::kShards)
            throw index_error(path, "weight_map names more than " + std::to_string(index_limits::kShards) + " shard files");
        out.emplace(name, file);
    }
    return out;
}

}  // namespace extractor
