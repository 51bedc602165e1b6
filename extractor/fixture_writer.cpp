// Fixture checkpoints (fixture_writer.h). The tensor list comes from the family's own weight table
// (plan_weights), so a fixture can never drift from what the loader expects.
#include "extractor/fixture_writer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"
#include "extractor/families/family.h"
#include "extractor/model.h"
#include "extractor/mxfp4.h"

namespace extractor {

namespace {

uint64_t fnv1a(const std::string & s) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

nlohmann::json fixture_config(const FixtureOptions & o) {
    const std::string dtype_text = o.dtype == at::kBFloat16 ? "bfloat16" : o.dtype == at::kHalf ? "float16" : "float32";
    nlohmann::json c = {
        {"model_type", o.family},
        {"vocab_size", o.vocab},
        {"hidden_size", o.hidden},
        {"num_hidden_layers", o.layers},
        {"num_attention_heads", o.heads},
        {"num_key_value_heads", o.kv_heads},
        {"head_dim", o.head_dim},
        {"intermediate_size", o.intermediate},
        {"rms_norm_eps", 1e-6},
        {"max_position_embeddings", 4096},
        {"hidden_act", "silu"},
        {"tie_word_embeddings", o.tie_embeddings},
        {"attention_bias", false},
    };
    if (o.legacy_keys) {
        c["torch_dtype"] = dtype_text;
        c["rope_theta"] = 10000.0;
    } else {
        c["dtype"] = dtype_text;
        c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
    }
    if (o.family == "llama") c["architectures"] = {"LlamaForCausalLM"};
    else if (o.family == "qwen2") {
        c["architectures"] = {"Qwen2ForCausalLM"};
        c["use_sliding_window"] = false;
        c["max_window_layers"] = o.layers;
    } else if (o.family == "qwen3") {
        c["architectures"] = {"Qwen3ForCausalLM"};
        c["use_sliding_window"] = false;
    } else if (o.family == "olmoe") {
        c["architectures"] = {"OlmoeForCausalLM"};
        c["num_experts"] = o.experts;
        c["num_experts_per_tok"] = o.top_k;
        c["norm_topk_prob"] = o.norm_topk_prob;
        c["clip_qkv"] = nullptr;
    } else if (o.family == "qwen3_moe") {
        c["architectures"] = {"Qwen3MoeForCausalLM"};
        c["num_experts"] = o.experts;
        c["num_experts_per_tok"] = o.top_k;
        c["moe_intermediate_size"] = o.moe_intermediate;
        c["norm_topk_prob"] = o.norm_topk_prob;
        c["decoder_sparse_step"] = 1;
        c["mlp_only_layers"] = o.mlp_only_layers;
        c["use_sliding_window"] = false;
    } else if (o.family == "mixtral") {
        c["architectures"] = {"MixtralForCausalLM"};
        c["num_local_experts"] = o.experts;  // experts are intermediate_size wide; the router always renormalises
        c["num_experts_per_tok"] = o.top_k;
        c["sliding_window"] = o.sliding_window ? nlohmann::json(*o.sliding_window) : nlohmann::json(nullptr);
        c["rms_norm_eps"] = 1e-5;
    } else if (o.family == "gpt_oss") {
        // The released gpt-oss config's shape of things: experts intermediate_size wide, MXFP4
        // experts, alternating sliding (window 4 here, 128 released) and full layers, YaRN.
        c["architectures"] = {"GptOssForCausalLM"};
        c["num_local_experts"] = o.experts;
        c["num_experts_per_tok"] = o.top_k;
        c["experts_per_token"] = o.top_k;
        c["rms_norm_eps"] = 1e-5;
        c["attention_bias"] = true;
        c["swiglu_limit"] = 7.0;
        c["sliding_window"] = o.sliding_window.value_or(4);
        c["max_position_embeddings"] = 131072;
        c["initial_context_length"] = 4096;
        std::vector<std::string> kinds;
        for (int64_t l = 0; l < o.layers; ++l) kinds.push_back(l % 2 == 0 ? "sliding_attention" : "full_attention");
        c["layer_types"] = kinds;
        const nlohmann::json yarn = {{"rope_type", "yarn"}, {"factor", 32.0}, {"beta_fast", 32.0}, {"beta_slow", 1.0},
                                     {"original_max_position_embeddings", 4096}, {"truncate", false}};
        if (o.legacy_keys) {
            c["rope_theta"] = 150000.0;
            c["rope_scaling"] = yarn;
        } else {
            c["rope_parameters"] = yarn;
            c["rope_parameters"]["rope_theta"] = 150000.0;
        }
        c["quantization_config"] = {{"quant_method", "mxfp4"},
                                    {"modules_to_not_convert",
                                     {"model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"}}};
    } else if (o.family == "glm4_moe") {
        // GLM-4.5-Air's released config in miniature: q/k/v biases, half the head rotated, a
        // dense first layer, sigmoid router with groups, one shared expert; routed_scaling 2.5
        // (GLM-4.5's) so that the scaling shows.
        c["architectures"] = {"Glm4MoeForCausalLM"};
        c["attention_bias"] = true;
        c["partial_rotary_factor"] = 0.5;
        if (!o.legacy_keys) c["rope_parameters"]["partial_rotary_factor"] = 0.5;
        c["rms_norm_eps"] = 1e-5;
        c["n_routed_experts"] = o.experts;
        c["num_experts_per_tok"] = o.top_k;
        c["moe_intermediate_size"] = o.moe_intermediate;
        c["n_shared_experts"] = o.shared_experts;
        c["first_k_dense_replace"] = o.first_k_dense;
        c["n_group"] = o.n_group;
        c["topk_group"] = o.topk_group;
        c["routed_scaling_factor"] = o.routed_scaling;
        c["norm_topk_prob"] = true;
        c["use_qk_norm"] = o.qk_norm;
        c["num_nextn_predict_layers"] = o.mtp_layers;
    } else if (o.family == "qwen3_next") {
        // The released Qwen3-Next config's shape of things in miniature: every 4th layer full
        // attention (every 2nd or 3rd when there are fewer than 4 layers, so both kinds appear),
        // partial rotary 0.25, value heads twice the key heads, Dk != Dv, softmax top-k with
        // renormalisation, a shared expert intermediate_size wide.
        c["architectures"] = {"Qwen3NextForCausalLM"};
        c["full_attention_interval"] = std::clamp<int64_t>(o.layers, 2, 4);
        c["partial_rotary_factor"] = 0.25;
        if (!o.legacy_keys) c["rope_parameters"]["partial_rotary_factor"] = 0.25;
        c["linear_num_key_heads"] = o.kv_heads;
        c["linear_num_value_heads"] = 2 * o.kv_heads;
        c["linear_key_head_dim"] = o.head_dim;
        c["linear_value_head_dim"] = std::max<int64_t>(1, o.head_dim / 2);
        c["linear_conv_kernel_dim"] = 4;
        c["num_experts"] = o.experts;
        c["num_experts_per_tok"] = o.top_k;
        c["moe_intermediate_size"] = o.moe_intermediate;
        c["shared_expert_intermediate_size"] = o.intermediate;
        c["norm_topk_prob"] = true;
        c["decoder_sparse_step"] = 1;
        c["mlp_only_layers"] = o.mlp_only_layers;
    } else {
        (void)find_family(o.family);  // throws the "supported: ..." error for unknown names
        throw common::Error::internal("fixture writer has no config entry for family " + o.family);
    }
    return c;
}

// The same values in the transformers v5 layout: per-expert tensors stacked into the fused
// experts tensors (gate rows then up rows, as the loader fuses them), every other tensor taken from
// the per-expert layout's tensor in the same (layer, slot) under the fused plan's name (Mixtral's
// router is block_sparse_moe.gate there, mlp.gate here). Both layouts therefore give identical runs.
std::vector<std::pair<std::string, at::Tensor>> fuse_experts(const Family & family, const ModelConfig & cfg,
                                                             const WeightPlan & per_expert,
                                                             const std::vector<std::pair<std::string, at::Tensor>> & tensors) {
    if (cfg.n_moe_layers() == 0) throw common::Error::usage("fixture: --fused-experts needs a MoE family (" + cfg.model_type + " has no experts)");
    const WeightPlan fused = family.plan_weights(cfg, /*fused_experts=*/true);
    std::map<std::pair<int, Slot>, at::Tensor> by_slot;  // non-expert tensors and the assembled fused ones
    for (const DestSpec & d : fused.dests)
        if (d.slot == Slot::ExpertsGateUp || d.slot == Slot::ExpertsDown)
            by_slot[{d.layer, d.slot}] = at::empty(d.shape, tensors.front().second.options());
    for (size_t i = 0; i < per_expert.sources.size(); ++i) {
        const WeightSpec & s = per_expert.sources[i];
        const at::Tensor & t = tensors[i].second;
        if (s.expert < 0) by_slot[{s.layer, s.slot}] = t;
        else by_slot.at({s.layer, s.slot})[s.expert].narrow(0, s.row_offset, s.shape[0]).copy_(t);
    }
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const WeightSpec & s : fused.sources) {
        auto it = by_slot.find({s.layer, s.slot});
        if (it == by_slot.end()) throw common::Error::internal("fixture: no per-expert tensor for " + s.name);
        out.emplace_back(s.name, it->second.contiguous());
    }
    return out;
}

// glm4_moe's multi-token-prediction layers as the released checkpoints store them after the last
// decoder layer: a whole decoder layer (its tensors as the weight table names them for that index)
// plus the MTP head's eh_proj [H,2H] and enorm, hnorm, shared_head.norm [H].
std::vector<std::pair<std::string, at::Tensor>> mtp_tensors(const Family & family, nlohmann::json config,
                                                            const FixtureOptions & o) {
    const int64_t L = o.layers;
    config["num_hidden_layers"] = L + o.mtp_layers;
    config["num_nextn_predict_layers"] = 0;
    const ModelConfig cfg = family.parse_config(parse_hf_config(config, o.out_dir + "/config.json"));
    std::vector<std::pair<std::string, at::Tensor>> out;
    auto draw = [&](const std::string & name, std::vector<int64_t> shape) {
        auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed ^ fnv1a(name));
        out.emplace_back(name, (0.05 * at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat))).to(o.dtype).contiguous());
    };
    for (const WeightSpec & s : family.plan_weights(cfg, o.fused_experts).sources)
        if (s.layer >= L) draw(s.name, s.shape);
    for (int64_t l = L; l < L + o.mtp_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        draw(p + "eh_proj.weight", {cfg.hidden, 2 * cfg.hidden});
        for (const char * n : {"enorm.weight", "hnorm.weight", "shared_head.norm.weight"}) draw(p + n, {cfg.hidden});
    }
    return out;
}

// qwen3_next's multi-token-prediction head as the released checkpoints store it, under mtp.*:
// fc [H,2H], the two pre-fc norms and the final norm [H], and per MTP layer the decoder layer's
// norms and attention projections (enough to show that they are skipped, not a runnable head).
std::vector<std::pair<std::string, at::Tensor>> qwen3_next_mtp_tensors(const ModelConfig & cfg, const FixtureOptions & o) {
    std::vector<std::pair<std::string, at::Tensor>> out;
    auto draw = [&](const std::string & name, std::vector<int64_t> shape) {
        auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed ^ fnv1a(name));
        out.emplace_back(name, (0.05 * at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat))).to(o.dtype).contiguous());
    };
    const int64_t H = cfg.hidden, qw = cfg.n_heads * cfg.head_dim, kvw = cfg.n_kv_heads * cfg.head_dim;
    draw("mtp.fc.weight", {H, 2 * H});
    for (const char * n : {"mtp.pre_fc_norm_embedding.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.norm.weight"}) draw(n, {H});
    for (int64_t l = 0; l < o.mtp_layers; ++l) {
        const std::string p = "mtp.layers." + std::to_string(l) + ".";
        draw(p + "input_layernorm.weight", {H});
        draw(p + "post_attention_layernorm.weight", {H});
        draw(p + "self_attn.q_proj.weight", {2 * qw, H});
        draw(p + "self_attn.k_proj.weight", {kvw, H});
        draw(p + "self_attn.v_proj.weight", {kvw, H});
        draw(p + "self_attn.o_proj.weight", {H, qw});
    }
    return out;
}

}  // namespace

PlantSpec parse_plant(const std::string & text) {
    auto bad = [&](const std::string & why) {
        return common::Error::usage("--plant \"" + text + "\": " + why + " (expected DIMS@LAYERS[xGAIN], e.g. 7,42@0-3 or 7@2x30)");
    };
    PlantSpec p;
    auto at = text.find('@');
    if (at == std::string::npos) throw bad("no @");
    std::string dims = text.substr(0, at), rest = text.substr(at + 1);
    auto x = rest.find('x');
    std::string layers = rest.substr(0, x);
    try {
        if (x != std::string::npos) {
            size_t used = 0;
            p.gain = std::stod(rest.substr(x + 1), &used);
            if (used != rest.size() - x - 1) throw bad("bad gain");
        }
        size_t pos = 0;
        while (pos <= dims.size()) {
            size_t comma = dims.find(',', pos);
            std::string d = dims.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
            size_t used = 0;
            int64_t v = std::stoll(d, &used);
            if (used != d.size() || v < 0) throw bad("bad dim \"" + d + "\"");
            p.dims.push_back(v);
            if (comma == std::string::npos) break;
            pos = comma + 1;
        }
        auto dash = layers.find('-');
        size_t used = 0;
        p.layer_first = std::stoi(layers.substr(0, dash), &used);
        p.layer_last = dash == std::string::npos ? p.layer_first : std::stoi(layers.substr(dash + 1), &used);
    } catch (const common::Error &) {
        throw;
    } catch (const std::exception &) {
        throw bad("not numbers");
    }
    if (p.dims.empty() || p.layer_first < 0 || p.layer_last < p.layer_first) throw bad("empty dims or bad layer range");
    return p;
}

std::vector<std::string> write_fixture(const FixtureOptions & o) {
    namespace fs = std::filesystem;
    if (o.out_dir.empty()) throw common::Error::usage("fixture: --out DIR is required");
    if (o.shards < 1) throw common::Error::usage("fixture: --shards must be >= 1");
    if (o.sliding_window && o.family != "mixtral" && o.family != "gpt_oss")
        throw common::Error::usage("fixture: --sliding-window is a mixtral and gpt_oss option (family " + o.family + ")");
    if (o.fused_experts && o.family == "gpt_oss")
        throw common::Error::usage("fixture: gpt_oss experts are written in the released MXFP4 layout; --fused-experts does not apply");
    nlohmann::json config = fixture_config(o);
    const Family & family = find_family(o.family);
    ModelConfig cfg = family.parse_config(parse_hf_config(config, o.out_dir + "/config.json"));
    for (const auto & p : o.plants) {
        for (auto d : p.dims)
            if (d >= cfg.hidden) throw common::Error::usage("--plant: dim " + std::to_string(d) + " >= hidden size " + std::to_string(cfg.hidden));
        if (p.layer_last >= cfg.n_layers)
            throw common::Error::usage("--plant: layer " + std::to_string(p.layer_last) + " >= " + std::to_string(cfg.n_layers) + " layers");
    }
    WeightPlan plan = family.plan_weights(cfg, /*fused_experts=*/false);
    // qwen3_next's RMSNorm gains are stored as offsets from 1 (Qwen3NextRMSNorm: x * (1 + w)).
    const bool zero_centred = o.family == "qwen3_next";
    // Each count is within hf_limits, but their product is not: --hidden 65536 --layers 1024 would
    // start writing terabytes. A fixture holds at most kMaxFixtureBytes (2 real-shape Mixtral
    // layers are 6.4 GB), and is refused before anything is created.
    // The head (model.norm, lm_head unless tied) is not in the plan: the extractor loads it only for --perplexity.
    const uint64_t head_numel = static_cast<uint64_t>(cfg.hidden) * (o.tie_embeddings ? 1 : static_cast<uint64_t>(cfg.vocab) + 1);
    const uint64_t bytes = (plan.numel_total() + head_numel) * static_cast<uint64_t>(c10::elementSize(o.dtype));
    if (bytes > kMaxFixtureBytes)
        throw common::Error::usage("fixture: these sizes make a " + std::to_string(bytes >> 20) + " MiB checkpoint, more than the " +
                                   std::to_string(kMaxFixtureBytes >> 30) + " GiB a fixture may write");
    if (o.shards > 4096) throw common::Error::usage("fixture: --shards must be at most 4096");
    fs::create_directories(o.out_dir);
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const WeightSpec & s : plan.sources) {
        if (s.slot == Slot::ExpertsGateUp || s.slot == Slot::ExpertsDown || s.slot == Slot::ExpertsGateUpScales ||
            s.slot == Slot::ExpertsDownScales) {
            if (s.stored_dtype == "U8") {
                // MXFP4 (gpt_oss): random weights [E,R,C] quantized to blocks + scales; both tensors
                // of a matrix draw the same weights (seeded by the matrix's name without suffix).
                const std::string base = s.name.substr(0, s.name.rfind('_'));
                auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed ^ fnv1a(base));
                const bool blocks = s.slot == Slot::ExpertsGateUp || s.slot == Slot::ExpertsDown;
                const int64_t cols = s.shape[2] * mxfp4::kBlock;
                at::Tensor w = 0.05 * at::randn({s.shape[0], s.shape[1], cols}, gen, at::TensorOptions().dtype(at::kFloat));
                auto [b, sc] = mxfp4::quantize(w);
                tensors.emplace_back(s.name, blocks ? b : sc);
                continue;
            }
        }
        auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed ^ fnv1a(s.name));
        at::Tensor t;
        const bool is_norm = s.slot == Slot::InputNorm || s.slot == Slot::PostNorm || s.slot == Slot::QNorm ||
                             s.slot == Slot::KNorm || s.slot == Slot::LinearNorm;
        if (is_norm) {
            // Gains near 1 (HF initialises them to exactly 1; a little noise makes tests sharper).
            // Zero-centred norms (qwen3_next's, all but the gated one) store the gain minus 1.
            t = (zero_centred && s.slot != Slot::LinearNorm ? 0.0 : 1.0) +
                0.1 * at::randn(s.shape, gen, at::TensorOptions().dtype(at::kFloat));
        } else if (s.slot == Slot::LinearALog) {
            // Stored as log A (HF draws A from (0, 16)); A in [0.01, 1] here keeps per-token decays
            // between ~1 % and ~50 %, so the recurrent state carries over several tokens in tests.
            t = at::log(0.01 + 0.99 * at::rand(s.shape, gen, at::TensorOptions().dtype(at::kFloat)));
        } else if (s.slot == Slot::LinearDtBias) {
            t = 1.0 + 0.1 * at::randn(s.shape, gen, at::TensorOptions().dtype(at::kFloat));
        } else if (s.slot == Slot::LinearConv) {
            // Of the order of PyTorch's default conv init (bound 1/sqrt(kernel width)).
            t = 0.3 * at::randn(s.shape, gen, at::TensorOptions().dtype(at::kFloat));
        } else if (s.slot == Slot::Embed) {
            t = at::randn(s.shape, gen, at::TensorOptions().dtype(at::kFloat));
        } else if (s.slot == Slot::RouterScoreBias) {
            // Larger than the sigmoid scores' spread, so that it changes which experts are chosen.
            t = 0.2 * at::randn(s.shape, gen, at::TensorOptions().dtype(at::kFloat));
        } else {
            t = 0.05 * at::randn(s.shape, gen, at::TensorOptions().dtype(at::kFloat));
        }
        if (s.slot == Slot::InputNorm || s.slot == Slot::PostNorm)
            for (const auto & p : o.plants)
                if (s.layer >= p.layer_first && s.layer <= p.layer_last)
                    for (auto d : p.dims) t[d] = zero_centred ? p.gain - 1.0 : p.gain;
        tensors.emplace_back(s.name, t.to(o.dtype).contiguous());
    }
    if (o.fused_experts) tensors = fuse_experts(family, cfg, plan, tensors);
    if (o.mtp_layers > 0) {
        if (o.family != "glm4_moe" && o.family != "qwen3_next")
            throw common::Error::usage("fixture: multi-token-prediction layers are a glm4_moe and qwen3_next option (family " + o.family + ")");
        if (o.mtp_layers > 4) throw common::Error::usage("fixture: at most 4 multi-token-prediction layers");
        for (auto & t : o.family == "qwen3_next" ? qwen3_next_mtp_tensors(cfg, o) : mtp_tensors(family, config, o))
            tensors.push_back(std::move(t));
    }
    {
        // The final norm and the output projection, after every layer (as HF's writer orders them).
        auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed ^ fnv1a("model.norm.weight"));
        at::Tensor norm = (zero_centred ? 0.0 : 1.0) + 0.1 * at::randn({cfg.hidden}, gen, at::TensorOptions().dtype(at::kFloat));
        tensors.emplace_back("model.norm.weight", norm.to(o.dtype).contiguous());
        if (!o.tie_embeddings) {
            gen = at::make_generator<at::CPUGeneratorImpl>(o.seed ^ fnv1a("lm_head.weight"));
            at::Tensor head = 0.05 * at::randn({cfg.vocab, cfg.hidden}, gen, at::TensorOptions().dtype(at::kFloat));
            tensors.emplace_back("lm_head.weight", head.to(o.dtype).contiguous());
        }
    }
    std::vector<std::string> written;
    {
        fs::path cp = fs::path(o.out_dir) / "config.json";
        std::ofstream out(cp);
        out << config.dump(2) << "\n";
        if (!out) throw common::Error::io(cp.string(), "write", errno);
        written.push_back(cp.string());
    }
    if (o.shards == 1) {
        fs::path p = fs::path(o.out_dir) / "model.safetensors";
        write_safetensors(p.string(), tensors, {{"format", "pt"}});
        written.push_back(p.string());
        return written;
    }
    // Contiguous runs of tensors per shard, as HF's writer produces.
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
    uint64_t total = 0;
    const size_t per = (tensors.size() + static_cast<size_t>(o.shards) - 1) / static_cast<size_t>(o.shards);
    for (int k = 0; k < o.shards; ++k) {
        char name[64];
        std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, o.shards);
        std::vector<std::pair<std::string, at::Tensor>> part;
        for (size_t i = static_cast<size_t>(k) * per; i < std::min(tensors.size(), static_cast<size_t>(k + 1) * per); ++i) {
            part.push_back(tensors[i]);
            index["weight_map"][tensors[i].first] = name;
            total += static_cast<uint64_t>(tensors[i].second.nbytes());
        }
        fs::path p = fs::path(o.out_dir) / name;
        write_safetensors(p.string(), part, {{"format", "pt"}});
        written.push_back(p.string());
    }
    index["metadata"]["total_size"] = total;
    fs::path ip = fs::path(o.out_dir) / "model.safetensors.index.json";
    std::ofstream out(ip);
    out << index.dump(2) << "\n";
    written.push_back(ip.string());
    return written;
}

}  // namespace extractor
