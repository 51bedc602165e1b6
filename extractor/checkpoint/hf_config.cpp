// config.json reader; key spellings per model-spec.md §2.1.
#include "extractor/checkpoint/hf_config.h"

#include <filesystem>
#include <fstream>

#include "common/error.h"

namespace extractor {
namespace {

common::Error key_error(const std::string & path, const std::string & key, const std::string & what) {
    return common::Error(common::ErrorKind::Usage, path + ": key " + key + ": " + what).with("file", path);
}

template <typename T> std::optional<T> opt(const nlohmann::json & j, const std::string & key, const std::string & path) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    try {
        return it->get<T>();
    } catch (const nlohmann::json::exception &) {
        throw key_error(path, key, "has the wrong type (" + std::string(it->type_name()) + ")");
    }
}

template <typename T> T req(const nlohmann::json & j, const std::string & key, const std::string & path) {
    auto v = opt<T>(j, key, path);
    if (!v) throw key_error(path, key, "missing (required)");
    return *v;
}

void read_rope(const nlohmann::json & j, const std::string & path, RopeParams & r) {
    r.theta = opt<double>(j, "rope_theta", path);
    r.partial_rotary_factor = opt<double>(j, "partial_rotary_factor", path).value_or(1.0);
    // v5 writes rope_parameters (rope_type); legacy writes rope_scaling (type | rope_type).
    const nlohmann::json * p = nullptr;
    for (const char * key : {"rope_parameters", "rope_scaling"}) {
        auto it = j.find(key);
        if (it != j.end() && it->is_object()) {
            p = &*it;
            break;
        }
    }
    if (!p) return;
    const std::string where = path + " rope parameters";
    if (auto t = opt<std::string>(*p, "rope_type", where)) r.type = *t;
    else if (auto t2 = opt<std::string>(*p, "type", where)) r.type = *t2;
    if (auto th = opt<double>(*p, "rope_theta", where)) r.theta = th;
    r.factor = opt<double>(*p, "factor", where).value_or(1.0);
    r.low_freq_factor = opt<double>(*p, "low_freq_factor", where).value_or(1.0);
    r.high_freq_factor = opt<double>(*p, "high_freq_factor", where).value_or(4.0);
    r.original_max_position_embeddings = opt<int64_t>(*p, "original_max_position_embeddings", where);
    r.attention_factor = opt<double>(*p, "attention_factor", where);
    r.beta_fast = opt<double>(*p, "beta_fast", where).value_or(32.0);
    r.beta_slow = opt<double>(*p, "beta_slow", where).value_or(1.0);
    r.mscale = opt<double>(*p, "mscale", where);
    r.mscale_all_dim = opt<double>(*p, "mscale_all_dim", where);
    r.truncate = opt<bool>(*p, "truncate", where).value_or(true);
    if (auto prf = opt<double>(*p, "partial_rotary_factor", where)) r.partial_rotary_factor = *prf;
    if (r.type == "dynamic" || r.type == "longrope")
        throw key_error(path, "rope_parameters.rope_type", "\"" + r.type + "\" is not supported (supported: default, linear, llama3, yarn)");
}

}  // namespace

template <typename T> T HfConfig::get(const std::string & key) const { return req<T>(raw, key, path); }
template int64_t HfConfig::get<int64_t>(const std::string &) const;
template double HfConfig::get<double>(const std::string &) const;
template bool HfConfig::get<bool>(const std::string &) const;
template std::string HfConfig::get<std::string>(const std::string &) const;

HfConfig parse_hf_config(const nlohmann::json & j, const std::string & path) {
    if (!j.is_object()) throw common::Error::file(path, "config is not a JSON object");
    HfConfig c;
    c.path = path;
    c.raw = j;
    c.model_type = req<std::string>(j, "model_type", path);
    c.architectures = opt<std::vector<std::string>>(j, "architectures", path).value_or(std::vector<std::string>{});
    // v5 spells it dtype, v4 torch_dtype; prefer the v5 key when both are present.
    c.dtype = opt<std::string>(j, "dtype", path).value_or(opt<std::string>(j, "torch_dtype", path).value_or(""));
    c.vocab_size = req<int64_t>(j, "vocab_size", path);
    c.hidden_size = req<int64_t>(j, "hidden_size", path);
    c.num_hidden_layers = req<int64_t>(j, "num_hidden_layers", path);
    c.num_attention_heads = req<int64_t>(j, "num_attention_heads", path);
    c.num_key_value_heads = opt<int64_t>(j, "num_key_value_heads", path).value_or(c.num_attention_heads);
    c.head_dim = opt<int64_t>(j, "head_dim", path);
    c.intermediate_size = opt<int64_t>(j, "intermediate_size", path).value_or(0);
    c.rms_norm_eps = opt<double>(j, "rms_norm_eps", path);
    c.tie_word_embeddings = opt<bool>(j, "tie_word_embeddings", path).value_or(false);
    c.attention_bias = opt<bool>(j, "attention_bias", path).value_or(false);
    c.mlp_bias = opt<bool>(j, "mlp_bias", path).value_or(false);
    c.max_position_embeddings = opt<int64_t>(j, "max_position_embeddings", path).value_or(0);
    c.hidden_act = opt<std::string>(j, "hidden_act", path).value_or("silu");
    read_rope(j, path, c.rope);
    c.use_sliding_window = opt<bool>(j, "use_sliding_window", path).value_or(false);
    c.sliding_window = opt<int64_t>(j, "sliding_window", path);
    c.max_window_layers = opt<int64_t>(j, "max_window_layers", path);
    c.layer_types = opt<std::vector<std::string>>(j, "layer_types", path).value_or(std::vector<std::string>{});
    c.num_experts = opt<int64_t>(j, "num_experts", path).value_or(opt<int64_t>(j, "num_local_experts", path).value_or(0));
    c.num_experts_per_tok = opt<int64_t>(j, "num_experts_per_tok", path).value_or(0);
    c.norm_topk_prob = opt<bool>(j, "norm_topk_prob", path);
    c.moe_intermediate_size = opt<int64_t>(j, "moe_intermediate_size", path).value_or(0);
    c.decoder_sparse_step = opt<int64_t>(j, "decoder_sparse_step", path).value_or(1);
    c.mlp_only_layers = opt<std::vector<int64_t>>(j, "mlp_only_layers", path).value_or(std::vector<int64_t>{});
    c.clip_qkv = opt<double>(j, "clip_qkv", path);

    for (const char * k : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"})
        if (req<int64_t>(j, k, path) <= 0) throw key_error(path, k, "must be positive");
    if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0)
        throw key_error(path, "num_key_value_heads", "must divide num_attention_heads (" +
                                                         std::to_string(c.num_attention_heads) + ")");
    if (c.hidden_act != "silu" && c.hidden_act != "swish")
        throw key_error(path, "hidden_act", "\"" + c.hidden_act + "\" is not supported (only silu)");
    return c;
}

HfConfig read_hf_config(const std::string & path_or_dir) {
    std::filesystem::path p(path_or_dir);
    if (std::filesystem::is_directory(p)) p /= "config.json";
    std::ifstream in(p);
    if (!in) throw common::Error::not_found(p.string(), "cannot read config.json").with("file", p.string());
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception & e) {
        throw common::Error::file(p.string(), std::string("not valid JSON: ") + e.what());
    }
    return parse_hf_config(j, p.string());
}

}  // namespace extractor
