// config.json reader; both key spellings (legacy and transformers v5):
// docs/checkpoint-formats.md#legacy-and-v5-keys.
#include "extractor/checkpoint/hf_config.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <type_traits>

#include "common/error.h"
#include "common/regular_file.h"

namespace extractor {
namespace {

common::Error key_error(const std::string & path, const std::string & key, const std::string & what) {
    return common::Error(common::ErrorKind::Usage, path + ": key " + key + ": " + what).with("file", path).with("key", key);
}

// nlohmann's get<int64_t>() converts silently: 1e9 (a float), 2.7, true and 2^64-1 all become
// some integer. Counts here size allocations, so only a JSON integer in [min, max] is taken.
int64_t to_int(const nlohmann::json & v, const std::string & key, const std::string & path, int64_t min, int64_t max) {
    const std::string range = " (allowed: " + std::to_string(min) + " to " + std::to_string(max) + ")";
    if (v.is_number_float())
        throw key_error(path, key, "must be an integer, got " + v.dump() + range);
    // JSON text parses every non-negative integer as unsigned: both ends are checked here too.
    if (v.is_number_unsigned()) {
        auto u = v.get<uint64_t>();
        if (u > static_cast<uint64_t>(max) || (min > 0 && u < static_cast<uint64_t>(min)))
            throw key_error(path, key, std::to_string(u) + " is out of range" + range);
        return static_cast<int64_t>(u);
    }
    if (!v.is_number_integer()) throw key_error(path, key, "has the wrong type (" + std::string(v.type_name()) + ", expected an integer)");
    auto i = v.get<int64_t>();
    if (i < min || i > max) throw key_error(path, key, std::to_string(i) + " is out of range" + range);
    return i;
}

std::optional<int64_t> opt_int(const nlohmann::json & j, const std::string & key, const std::string & path, int64_t min,
                               int64_t max) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    return to_int(*it, key, path, min, max);
}

int64_t req_int(const nlohmann::json & j, const std::string & key, const std::string & path, int64_t min, int64_t max) {
    auto v = opt_int(j, key, path, min, max);
    if (!v) throw key_error(path, key, "missing (required)");
    return *v;
}

// A list of integers, each in [min, max], at most max_items long (checked before copying).
std::vector<int64_t> int_list(const nlohmann::json & j, const std::string & key, const std::string & path, size_t max_items,
                              int64_t min, int64_t max) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return {};
    if (!it->is_array()) throw key_error(path, key, "has the wrong type (" + std::string(it->type_name()) + ", expected a list of integers)");
    if (it->size() > max_items)
        throw key_error(path, key, std::to_string(it->size()) + " entries, more than " + std::to_string(max_items));
    std::vector<int64_t> out;
    out.reserve(it->size());
    for (size_t i = 0; i < it->size(); ++i) out.push_back(to_int((*it)[i], key + "[" + std::to_string(i) + "]", path, min, max));
    return out;
}

std::vector<std::string> string_list(const nlohmann::json & j, const std::string & key, const std::string & path,
                                     size_t max_items) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return {};
    if (!it->is_array()) throw key_error(path, key, "has the wrong type (" + std::string(it->type_name()) + ", expected a list of strings)");
    if (it->size() > max_items)
        throw key_error(path, key, std::to_string(it->size()) + " entries, more than " + std::to_string(max_items));
    std::vector<std::string> out;
    out.reserve(it->size());
    for (size_t i = 0; i < it->size(); ++i) {
        if (!(*it)[i].is_string())
            throw key_error(path, key + "[" + std::to_string(i) + "]", "has the wrong type (" + std::string((*it)[i].type_name()) + ", expected a string)");
        out.push_back((*it)[i].get<std::string>());
    }
    return out;
}

template <typename T> std::optional<T> opt(const nlohmann::json & j, const std::string & key, const std::string & path) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    if constexpr (std::is_same_v<T, int64_t>) {
        return to_int(*it, key, path, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
    } else if constexpr (std::is_same_v<T, double>) {
        // get<double>() would take true as 1.0.
        if (!it->is_number()) throw key_error(path, key, "has the wrong type (" + std::string(it->type_name()) + ", expected a number)");
        double d = it->get<double>();
        if (!std::isfinite(d)) throw key_error(path, key, "must be a finite number");
        return d;
    } else {
        try {
            return it->get<T>();
        } catch (const nlohmann::json::exception &) {
            throw key_error(path, key, "has the wrong type (" + std::string(it->type_name()) + ")");
        }
    }
}

template <typename T> T req(const nlohmann::json & j, const std::string & key, const std::string & path) {
    auto v = opt<T>(j, key, path);
    if (!v) throw key_error(path, key, "missing (required)");
    return *v;
}

// The rotary width is head_dim x this factor and sizes the frequency table.
void check_rotary_factor(double f, const std::string & path) {
    if (!(f > 0.0 && f <= 1.0)) throw key_error(path, "partial_rotary_factor", "must be in (0, 1], got " + std::to_string(f));
}

// A rope value every formula divides by or takes a power or log of: must be positive (HF would make
// inf/NaN frequencies, or a complex power, from a zero or negative one).
void check_positive(const std::optional<double> & v, const std::string & key, const std::string & path) {
    if (v && !(*v > 0)) throw key_error(path, key, "must be positive, got " + std::to_string(*v));
}

void read_rope(const nlohmann::json & j, const std::string & path, RopeParams & r) {
    r.theta = opt<double>(j, "rope_theta", path);
    check_positive(r.theta, "rope_theta", path);
    r.partial_rotary_factor = opt<double>(j, "partial_rotary_factor", path).value_or(1.0);
    check_rotary_factor(r.partial_rotary_factor, path);
    // v5 writes rope_parameters (rope_type); legacy writes rope_scaling (type | rope_type).
    const nlohmann::json * p = nullptr;
    std::string pkey;
    for (const char * key : {"rope_parameters", "rope_scaling"}) {
        auto it = j.find(key);
        if (it != j.end() && it->is_object()) {
            p = &*it;
            pkey = key;
            break;
        }
    }
    if (!p) return;
    const std::string where = path + " rope parameters";
    if (auto t = opt<std::string>(*p, "rope_type", where)) r.type = *t;
    else if (auto t2 = opt<std::string>(*p, "type", where)) r.type = *t2;
    if (auto th = opt<double>(*p, "rope_theta", where)) {
        check_positive(th, pkey + ".rope_theta", path);
        r.theta = th;
    }
    const auto factor = opt<double>(*p, "factor", where);
    check_positive(factor, pkey + ".factor", path);  // linear and llama3 divide by it, yarn takes its log
    r.factor = factor.value_or(1.0);
    r.low_freq_factor = opt<double>(*p, "low_freq_factor", where).value_or(1.0);
    r.high_freq_factor = opt<double>(*p, "high_freq_factor", where).value_or(4.0);
    r.original_max_position_embeddings = opt_int(*p, "original_max_position_embeddings", where, 1, hf_limits::kPositions);
    r.attention_factor = opt<double>(*p, "attention_factor", where);
    r.beta_fast = opt<double>(*p, "beta_fast", where).value_or(32.0);
    r.beta_slow = opt<double>(*p, "beta_slow", where).value_or(1.0);
    r.mscale = opt<double>(*p, "mscale", where);
    r.mscale_all_dim = opt<double>(*p, "mscale_all_dim", where);
    r.truncate = opt<bool>(*p, "truncate", where).value_or(true);
    if (auto prf = opt<double>(*p, "partial_rotary_factor", where)) r.partial_rotary_factor = *prf;
    check_rotary_factor(r.partial_rotary_factor, where);
    if (r.type == "dynamic" || r.type == "longrope")
        throw key_error(path, "rope_parameters.rope_type", "\"" + r.type + "\" is not supported (supported: default, linear, llama3, yarn)");
    if (r.type == "llama3") {  // wavelengths are divided by both, and the blend by their difference
        check_positive(r.low_freq_factor, pkey + ".low_freq_factor", path);
        if (!(r.high_freq_factor > r.low_freq_factor))
            throw key_error(path, pkey + ".high_freq_factor", "must be above low_freq_factor (" + std::to_string(r.low_freq_factor) +
                                                                  "), got " + std::to_string(r.high_freq_factor));
    }
}

}  // namespace

template <typename T> T HfConfig::get(const std::string & key) const { return req<T>(raw, key, path); }
template int64_t HfConfig::get<int64_t>(const std::string &) const;
template double HfConfig::get<double>(const std::string &) const;
template bool HfConfig::get<bool>(const std::string &) const;
template std::string HfConfig::get<std::string>(const std::string &) const;

HfConfig parse_hf_config(const nlohmann::json & j, const std::string & path) {
    namespace lim = hf_limits;
    if (!j.is_object()) throw common::Error::file(path, "config is not a JSON object");
    HfConfig c;
    c.path = path;
    c.raw = j;
    c.model_type = req<std::string>(j, "model_type", path);
    c.architectures = string_list(j, "architectures", path, 64);
    // v5 spells it dtype, v4 torch_dtype; prefer the v5 key when both are present.
    c.dtype = opt<std::string>(j, "dtype", path).value_or(opt<std::string>(j, "torch_dtype", path).value_or(""));
    // Every count is bounded here, before a family sizes a per-layer table or a weight plan by it.
    c.vocab_size = req_int(j, "vocab_size", path, 1, lim::kVocab);
    c.hidden_size = req_int(j, "hidden_size", path, 1, lim::kHidden);
    c.num_hidden_layers = req_int(j, "num_hidden_layers", path, 1, lim::kLayers);
    c.num_attention_heads = req_int(j, "num_attention_heads", path, 1, lim::kHeads);
    c.num_key_value_heads = opt_int(j, "num_key_value_heads", path, 1, c.num_attention_heads).value_or(c.num_attention_heads);
    c.head_dim = opt_int(j, "head_dim", path, 1, lim::kHeadDim);
    c.intermediate_size = opt_int(j, "intermediate_size", path, 0, lim::kIntermediate).value_or(0);
    c.rms_norm_eps = opt<double>(j, "rms_norm_eps", path);
    if (c.rms_norm_eps && *c.rms_norm_eps < 0)  // rsqrt(var + eps) of a negative: NaN wherever var < -eps
        throw key_error(path, "rms_norm_eps", "must not be negative, got " + std::to_string(*c.rms_norm_eps));
    c.tie_word_embeddings = opt<bool>(j, "tie_word_embeddings", path).value_or(false);
    c.attention_bias = opt<bool>(j, "attention_bias", path).value_or(false);
    c.mlp_bias = opt<bool>(j, "mlp_bias", path).value_or(false);
    c.max_position_embeddings = opt_int(j, "max_position_embeddings", path, 0, lim::kPositions).value_or(0);
    c.hidden_act = opt<std::string>(j, "hidden_act", path).value_or("silu");
    read_rope(j, path, c.rope);
    c.use_sliding_window = opt<bool>(j, "use_sliding_window", path).value_or(false);
    c.sliding_window = opt_int(j, "sliding_window", path, 0, lim::kPositions);
    c.max_window_layers = opt_int(j, "max_window_layers", path, 0, lim::kLayers);
    c.layer_types = string_list(j, "layer_types", path, static_cast<size_t>(lim::kLayers));
    auto ne = j.find("num_experts");
    const char * experts_key = ne != j.end() && !ne->is_null() ? "num_experts" : "num_local_experts";
    c.num_experts = opt_int(j, experts_key, path, 0, lim::kExperts).value_or(0);
    if (c.num_experts * c.num_hidden_layers > lim::kExpertMatrices)
        throw key_error(path, experts_key, std::to_string(c.num_experts) + " experts x " + std::to_string(c.num_hidden_layers) +
                                               " layers is more than " + std::to_string(lim::kExpertMatrices) + " experts in all");
    c.num_experts_per_tok = opt_int(j, "num_experts_per_tok", path, 0, lim::kExperts).value_or(0);
    c.norm_topk_prob = opt<bool>(j, "norm_topk_prob", path);
    c.moe_intermediate_size = opt_int(j, "moe_intermediate_size", path, 0, lim::kIntermediate).value_or(0);
    c.decoder_sparse_step = opt_int(j, "decoder_sparse_step", path, 1, c.num_hidden_layers).value_or(1);
    c.mlp_only_layers = int_list(j, "mlp_only_layers", path, static_cast<size_t>(c.num_hidden_layers), 0, c.num_hidden_layers - 1);
    c.clip_qkv = opt<double>(j, "clip_qkv", path);

    if (c.num_attention_heads % c.num_key_value_heads != 0)
        throw key_error(path, "num_key_value_heads", "must divide num_attention_heads (" +
                                                         std::to_string(c.num_attention_heads) + ")");
    if (c.hidden_act != "silu" && c.hidden_act != "swish")
        throw key_error(path, "hidden_act", "\"" + c.hidden_act + "\" is not supported (only silu)");
    return c;
}

HfConfig read_hf_config(const std::string & path_or_dir) {
    std::filesystem::path p(path_or_dir);
    std::error_code ec;  // is_directory(path, ec): a symlink loop is an error below, not an exception here
    if (std::filesystem::is_directory(p, ec)) p /= "config.json";
    const std::string text = common::read_regular_file(p.string(), hf_limits::kFileBytes, "config.json");
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception & e) {
        throw common::Error::file(p.string(), std::string("not valid JSON: ") + e.what());
    }
    return parse_hf_config(j, p.string());
}

}  // namespace extractor
