// Reading, overriding and validating the run config (see run_config.h, configs/README.md).
// Relative model/data paths in a YAML file are taken relative to that file's folder, so a config
// works from any current directory; output_dir is relative to the current directory.
#include "deploy/run_config.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "common/config_yaml.h"
#include "common/error.h"
#include "common/units.h"

namespace fs = std::filesystem;

namespace deploy {

namespace {

const std::vector<std::string> kSites{"ln_attn", "ln_mlp", "residual"};
const std::vector<std::string> kModes{"predecessor", "paper", "both"};
const std::vector<std::string> kDtypes{"bf16", "f16", "f32"};
const std::vector<std::string> kFamilies{"llama", "qwen2", "qwen3", "olmoe", "qwen3_moe"};

bool one_of(const std::string & v, const std::vector<std::string> & set) {
    return std::find(set.begin(), set.end(), v) != set.end();
}

std::string joined(const std::vector<std::string> & v) {
    std::string s;
    for (const auto & x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
}

std::string resolve(const std::string & base_dir, const std::string & p) {
    if (p.empty() || base_dir.empty() || fs::path(p).is_absolute()) return p;
    return (fs::path(base_dir) / p).lexically_normal().string();
}

double duration_of(const common::ConfigNode & n) {
    // Plain numbers are seconds; strings use common::parse_duration_s ("90s", "1h30m").
    try {
        return common::parse_duration_s(n.as_string());
    } catch (const common::Error & e) {
        n.fail(e.message());
    }
}

// A number, or the word auto (nullopt).
std::optional<double> number_or_auto(const common::ConfigNode & n) {
    if (n.is_null()) return std::nullopt;
    if (n.is_scalar() && n.as_string() == "auto") return std::nullopt;
    return n.as_double();
}

void read_model(const common::ConfigNode & m, const std::string & base, ModelConfig & out) {
    m.check_keys({"hub", "revision", "path", "fixture", "dtype"});
    int sources = m.has("hub") + m.has("path") + m.has("fixture");
    if (sources != 1) m.fail("give exactly one of hub (a Hugging Face id), path (a local checkpoint) or fixture");
    if (auto h = m.find("hub")) out.hub_id = h->as_string();
    if (auto p = m.find("path")) out.local_path = resolve(base, p->as_string());
    if (auto f = m.find("fixture")) {
        f->check_keys({"family", "layers", "hidden", "plant", "seed"});
        FixtureModel fx;
        fx.family = f->get_string("family", fx.family);
        if (!one_of(fx.family, kFamilies)) f->at("family").fail("unknown family '" + fx.family + "': use " + joined(kFamilies));
        fx.layers = static_cast<int>(f->get_int("layers", fx.layers));
        fx.hidden = static_cast<int>(f->get_int("hidden", fx.hidden));
        if (auto pl = f->find("plant")) fx.plants = pl->is_sequence() ? pl->as_string_list() : std::vector{pl->as_string()};
        fx.seed = static_cast<uint64_t>(f->get_int("seed", 0));
        out.fixture = fx;
    }
    out.revision = m.get_string("revision", out.revision);
    out.dtype = m.get_string("dtype", out.dtype);
    if (!one_of(out.dtype, kDtypes)) m.at("dtype").fail("unknown dtype '" + out.dtype + "': use " + joined(kDtypes));
}

void read_data(const common::ConfigNode & d, const std::string & base, DataConfig & out) {
    d.check_keys({"text", "jsonl", "tokens", "text_field", "synthetic_tokens", "num_sequences", "sequence_length",
                  "batch_size", "overlap"});
    int sources = d.has("text") + d.has("jsonl") + d.has("tokens") + d.has("synthetic_tokens");
    if (sources > 1) d.fail("give at most one of text, jsonl, tokens, synthetic_tokens");
    if (auto t = d.find("text")) out.text_file = resolve(base, t->as_string());
    if (auto t = d.find("jsonl")) out.jsonl_file = resolve(base, t->as_string());
    if (auto t = d.find("tokens")) out.tokens_file = resolve(base, t->as_string());
    if (auto s = d.find("synthetic_tokens")) {
        s->check_keys({"vocab", "seed"});
        out.synthetic_vocab = s->at("vocab").as_int();
        out.seed = static_cast<uint64_t>(s->get_int("seed", 0));
    }
    out.text_field = d.get_string("text_field", out.text_field);
    out.num_sequences = d.get_int("num_sequences", out.num_sequences);
    out.sequence_length = d.get_int("sequence_length", out.sequence_length);
    out.batch_size = d.get_int("batch_size", out.batch_size);
    out.overlap = d.get_int("overlap", out.overlap);
    auto positive = [&](const char * key, int64_t v) {
        if (v <= 0) d.at(key).fail("must be at least 1, got " + std::to_string(v));
    };
    if (d.has("num_sequences")) positive("num_sequences", out.num_sequences);
    if (d.has("sequence_length")) positive("sequence_length", out.sequence_length);
    if (d.has("batch_size")) positive("batch_size", out.batch_size);
}

void read_capture(const common::ConfigNode & c, CaptureConfig & out) {
    c.check_keys({"layers", "sites"});
    if (auto l = c.find("layers")) {
        std::string v = l->as_string();
        out.layers = v == "all" ? "" : v;
    }
    if (auto s = c.find("sites")) {
        out.sites = s->as_string_list();
        for (const auto & site : out.sites)
            if (!one_of(site, kSites)) s->fail("unknown site '" + site + "': use " + joined(kSites));
    }
}

void read_analysis(const common::ConfigNode & a, AnalysisConfig & out) {
    a.check_keys({"mode", "threshold", "layer_fraction", "position_fraction"});
    out.mode = a.get_string("mode", out.mode);
    if (!one_of(out.mode, kModes)) a.at("mode").fail("unknown mode '" + out.mode + "': use " + joined(kModes));
    out.threshold = a.get_double("threshold", out.threshold);
    out.layer_fraction = a.get_double("layer_fraction", out.layer_fraction);
    out.position_fraction = a.get_double("position_fraction", out.position_fraction);
    if (a.has("threshold") && !(out.threshold > 0)) a.at("threshold").fail("must be > 0");
    for (const char * k : {"layer_fraction", "position_fraction"})
        if (a.has(k)) {
            double v = a.at(k).as_double();
            if (v < 0 || v > 1) a.at(k).fail("must be between 0 and 1");
        }
}

void read_resources(const common::ConfigNode & r, ResourcesConfig & out) {
    r.check_keys({"providers", "gpu", "gpu_count", "min_vram_gb", "min_cpu_ram_gb", "max_price_usd_per_hour", "disk_gb",
                  "image", "safety_factor"});
    if (auto p = r.find("providers")) out.providers = p->as_string_list();
    out.gpu_filter = r.get_string("gpu", out.gpu_filter);
    if (out.gpu_filter == "auto" || out.gpu_filter == "any") out.gpu_filter.clear();
    out.gpu_count = static_cast<int>(r.get_int("gpu_count", out.gpu_count));
    if (r.has("gpu_count") && (out.gpu_count < 0 || out.gpu_count > 8)) r.at("gpu_count").fail("must be 0..8");
    if (auto v = r.find("min_vram_gb")) out.min_vram_gb = number_or_auto(*v);
    if (auto v = r.find("min_cpu_ram_gb")) out.min_cpu_ram_gb = v->as_double();
    if (auto v = r.find("max_price_usd_per_hour")) {
        out.max_price_usd_per_hour = v->as_double();
        if (*out.max_price_usd_per_hour <= 0) v->fail("must be > 0");
    }
    out.disk_gb = static_cast<int>(r.get_int("disk_gb", out.disk_gb));
    if (r.has("disk_gb") && out.disk_gb <= 0) r.at("disk_gb").fail("must be > 0");
    out.image = r.get_string("image", out.image);
    out.safety_factor = r.get_double("safety_factor", out.safety_factor);
    if (r.has("safety_factor") && out.safety_factor < 1.0) r.at("safety_factor").fail("must be >= 1.0");
}

void read_policy(const common::ConfigNode & p, Policy & out) {
    p.check_keys({"on_success", "on_failure", "keep_ttl", "max_duration", "max_cost_usd", "heartbeat_timeout"});
    auto action = [&](const char * key, EndAction & a) {
        if (auto n = p.find(key)) {
            try {
                a = parse_end_action(n->as_string());
            } catch (const common::Error & e) {
                n->fail(e.message());
            }
        }
    };
    action("on_success", out.on_success);
    action("on_failure", out.on_failure);
    if (auto n = p.find("keep_ttl")) out.keep_ttl_s = duration_of(*n);
    if (auto n = p.find("max_duration")) out.max_duration_s = duration_of(*n);
    if (auto n = p.find("heartbeat_timeout")) out.heartbeat_timeout_s = duration_of(*n);
    if (auto n = p.find("max_cost_usd")) {
        out.max_cost_usd = n->as_double();
        if (*out.max_cost_usd <= 0) n->fail("must be > 0");
    }
    if (out.max_duration_s <= 0) p.at("max_duration").fail("must be > 0");
    if (out.heartbeat_timeout_s < 30) p.at("heartbeat_timeout").fail("must be at least 30s (heartbeats come every 10s)");
}

RunConfig from_node(const common::ConfigNode & root, const std::string & source) {
    if (!root.is_map()) root.fail("a run config is a map (model:, data:, resources:, policy: ...)");
    root.check_keys({"name", "model", "data", "capture", "analysis", "resources", "policy", "hf_token_env", "output_dir"});
    RunConfig c;
    c.source = source;
    std::string base = source.empty() ? "" : fs::path(source).parent_path().string();
    if (base.empty() && !source.empty()) base = ".";
    c.name = root.get_string("name", "");
    read_model(root.at("model"), base, c.model);
    if (auto d = root.find("data")) read_data(*d, base, c.data);
    if (auto n = root.find("capture")) read_capture(*n, c.capture);
    if (auto n = root.find("analysis")) read_analysis(*n, c.analysis);
    if (auto n = root.find("resources")) read_resources(*n, c.resources);
    if (auto n = root.find("policy")) read_policy(*n, c.policy);
    c.hf_token_env = root.get_string("hf_token_env", c.hf_token_env);
    c.output_dir = root.get_string("output_dir", c.output_dir);
    return c;
}

std::string where(const RunConfig & c, const std::string & key) {
    return (c.source.empty() ? std::string("config") : c.source) + ": " + key + ": ";
}

}  // namespace

std::string ModelConfig::display_name() const {
    if (!hub_id.empty()) return hub_id;
    if (!local_path.empty()) return local_path;
    if (fixture) return "fixture:" + fixture->family;
    return "(none)";
}

RunConfig load_run_config(const std::string & path) {
    RunConfig c = from_node(common::ConfigNode::load_file(path), path);
    return c;
}

RunConfig parse_run_config(const std::string & yaml_text, const std::string & name) {
    return from_node(common::ConfigNode::load_string(yaml_text, name), "");
}

void apply_overrides(RunConfig & c, const Overrides & o) {
    if (o.model) {
        c.model.hub_id.clear();
        c.model.local_path.clear();
        c.model.fixture.reset();
        std::error_code ec;
        if (fs::is_directory(*o.model, ec)) c.model.local_path = *o.model;
        else c.model.hub_id = *o.model;
    }
    if (o.gpu_count) c.resources.gpu_count = *o.gpu_count;
    if (o.gpu_filter) c.resources.gpu_filter = *o.gpu_filter;
    if (o.min_vram_gb) c.resources.min_vram_gb = *o.min_vram_gb;
    if (o.min_cpu_ram_gb) c.resources.min_cpu_ram_gb = *o.min_cpu_ram_gb;
    if (o.max_price) c.resources.max_price_usd_per_hour = *o.max_price;
    if (o.num_sequences) c.data.num_sequences = *o.num_sequences;
    if (o.sequence_length) c.data.sequence_length = *o.sequence_length;
    if (o.batch_size) c.data.batch_size = *o.batch_size;
    if (o.threshold) c.analysis.threshold = *o.threshold;
    if (!o.providers.empty()) c.resources.providers = o.providers;
    if (o.keep_running) {
        c.policy.on_success = EndAction::Keep;
        c.policy.on_failure = EndAction::Keep;
    }
    if (o.on_success) c.policy.on_success = parse_end_action(*o.on_success);
    if (o.on_failure) c.policy.on_failure = parse_end_action(*o.on_failure);
    if (o.max_duration) c.policy.max_duration_s = common::parse_duration_s(*o.max_duration);
    if (o.max_cost_usd) c.policy.max_cost_usd = *o.max_cost_usd;
    if (o.output_dir) c.output_dir = *o.output_dir;
    if (o.name) c.name = *o.name;
}

void validate(const RunConfig & c) {
    auto fail = [&](const std::string & key, const std::string & msg) { throw common::Error::usage(where(c, key) + msg); };
    const auto & m = c.model;
    int sources = !m.hub_id.empty() + !m.local_path.empty() + m.fixture.has_value();
    if (sources != 1) fail("model", "give exactly one model source (hub id, local path or fixture)");
    if (!m.hub_id.empty()) {
        auto slash = m.hub_id.find('/');
        if (slash == std::string::npos || slash == 0 || slash + 1 == m.hub_id.size() ||
            m.hub_id.find_first_of(" \t\"'`$\\;") != std::string::npos)
            fail("model.hub", "'" + m.hub_id + "' is not a Hugging Face id (owner/name)");
    }
    std::error_code ec;
    if (!m.local_path.empty() && !fs::is_regular_file(fs::path(m.local_path) / "config.json", ec))
        fail("model.path", m.local_path + ": no config.json there; give a Hugging Face checkpoint directory");
    if (m.fixture && (m.fixture->layers < 1 || m.fixture->hidden < 8))
        fail("model.fixture", "layers must be >= 1 and hidden >= 8");
    if (!one_of(m.dtype, kDtypes)) fail("model.dtype", "unknown dtype '" + m.dtype + "': use " + joined(kDtypes));

    const auto & d = c.data;
    int data_sources = !d.text_file.empty() + !d.jsonl_file.empty() + !d.tokens_file.empty() + d.synthetic_vocab.has_value();
    if (data_sources != 1) fail("data", "give exactly one of text, jsonl, tokens or synthetic_tokens");
    for (const auto * f : {&d.text_file, &d.jsonl_file, &d.tokens_file})
        if (!f->empty() && !fs::is_regular_file(*f, ec)) fail("data", *f + ": no such file");
    if (d.synthetic_vocab && *d.synthetic_vocab < 2) fail("data.synthetic_tokens.vocab", "must be >= 2");
    if (d.num_sequences < 1 || d.sequence_length < 1 || d.batch_size < 1)
        fail("data", "num_sequences, sequence_length and batch_size must be at least 1");
    if (d.overlap < 0 || d.overlap >= d.sequence_length) fail("data.overlap", "must be in [0, sequence_length)");
    if (c.capture.sites.empty()) fail("capture.sites", "no sites given");
    for (const auto & s : c.capture.sites)
        if (!one_of(s, kSites)) fail("capture.sites", "unknown site '" + s + "': use " + joined(kSites));
    if (!one_of(c.analysis.mode, kModes)) fail("analysis.mode", "unknown mode '" + c.analysis.mode + "'");
    if (!(c.analysis.threshold > 0)) fail("analysis.threshold", "must be > 0");

    const auto & r = c.resources;
    if (r.gpu_count < 0 || r.gpu_count > 8) fail("resources.gpu_count", "must be 0..8");
    if (r.min_vram_gb && *r.min_vram_gb <= 0) fail("resources.min_vram_gb", "must be > 0 (or auto)");
    if (r.max_price_usd_per_hour && *r.max_price_usd_per_hour <= 0) fail("resources.max_price_usd_per_hour", "must be > 0");
    for (const auto & p : r.providers)
        if (p.empty() || !std::all_of(p.begin(), p.end(), [](char ch) { return std::islower(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-'; }))
            fail("resources.providers", "'" + p + "' is not a provider name");
    bool local_only = !r.providers.empty() && std::all_of(r.providers.begin(), r.providers.end(), [](const std::string & p) { return p == "local"; });
    if (!local_only && r.gpu_count == 0) fail("resources.gpu_count", "0 GPUs is only for the local rehearsal provider");
    if (c.policy.max_duration_s <= 0) fail("policy.max_duration", "must be > 0");
    if (c.policy.keep_ttl_s <= 0) fail("policy.keep_ttl", "must be > 0");
    if (c.policy.max_cost_usd && *c.policy.max_cost_usd <= 0) fail("policy.max_cost_usd", "must be > 0");
    if (!c.name.empty() && (c.name.size() > 20 || !std::all_of(c.name.begin(), c.name.end(), [](char ch) {
                                return std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch));
                            })))
        fail("name", "'" + c.name + "': use at most 20 lower-case letters and digits (it becomes part of the instance name)");
    if (c.hf_token_env.empty()) fail("hf_token_env", "must name an environment variable");
}

namespace {

template <typename T>
nlohmann::json opt(const std::optional<T> & v) {
    return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}
template <typename T>
std::optional<T> opt_get(const nlohmann::json & j, const char * key) {
    if (!j.contains(key) || j[key].is_null()) return std::nullopt;
    return j[key].get<T>();
}

}  // namespace

nlohmann::json config_to_json(const RunConfig & c) {
    nlohmann::json model{{"hub", c.model.hub_id}, {"revision", c.model.revision}, {"path", c.model.local_path}, {"dtype", c.model.dtype}};
    if (c.model.fixture) {
        const auto & f = *c.model.fixture;
        model["fixture"] = {{"family", f.family}, {"layers", f.layers}, {"hidden", f.hidden}, {"plant", f.plants}, {"seed", f.seed}};
    }
    const auto & d = c.data;
    const auto & r = c.resources;
    const auto & p = c.policy;
    return {{"source", c.source},
            {"name", c.name},
            {"model", model},
            {"data", {{"text", d.text_file}, {"jsonl", d.jsonl_file}, {"tokens", d.tokens_file}, {"text_field", d.text_field},
                      {"synthetic_vocab", opt(d.synthetic_vocab)}, {"seed", d.seed}, {"num_sequences", d.num_sequences},
                      {"sequence_length", d.sequence_length}, {"batch_size", d.batch_size}, {"overlap", d.overlap}}},
            {"capture", {{"layers", c.capture.layers}, {"sites", c.capture.sites}}},
            {"analysis", {{"mode", c.analysis.mode}, {"threshold", c.analysis.threshold}, {"layer_fraction", c.analysis.layer_fraction},
                          {"position_fraction", c.analysis.position_fraction}}},
            {"resources", {{"providers", r.providers}, {"gpu", r.gpu_filter}, {"gpu_count", r.gpu_count}, {"min_vram_gb", opt(r.min_vram_gb)},
                           {"min_cpu_ram_gb", opt(r.min_cpu_ram_gb)}, {"max_price_usd_per_hour", opt(r.max_price_usd_per_hour)},
                           {"disk_gb", r.disk_gb}, {"image", r.image}, {"safety_factor", r.safety_factor}}},
            {"policy", {{"on_success", end_action_name(p.on_success)}, {"on_failure", end_action_name(p.on_failure)},
                        {"keep_ttl_s", p.keep_ttl_s}, {"max_duration_s", p.max_duration_s}, {"max_cost_usd", opt(p.max_cost_usd)},
                        {"heartbeat_timeout_s", p.heartbeat_timeout_s}}},
            {"hf_token_env", c.hf_token_env},
            {"output_dir", c.output_dir}};
}

RunConfig config_from_json(const nlohmann::json & j) {
    try {
        RunConfig c;
        c.source = j.value("source", "");
        c.name = j.value("name", "");
        const auto & m = j.at("model");
        c.model.hub_id = m.value("hub", "");
        c.model.revision = m.value("revision", "main");
        c.model.local_path = m.value("path", "");
        c.model.dtype = m.value("dtype", "bf16");
        if (m.contains("fixture")) {
            const auto & f = m["fixture"];
            FixtureModel fx;
            fx.family = f.value("family", fx.family);
            fx.layers = f.value("layers", fx.layers);
            fx.hidden = f.value("hidden", fx.hidden);
            fx.plants = f.value("plant", std::vector<std::string>{});
            fx.seed = f.value("seed", uint64_t{0});
            c.model.fixture = fx;
        }
        const auto & d = j.at("data");
        c.data.text_file = d.value("text", "");
        c.data.jsonl_file = d.value("jsonl", "");
        c.data.tokens_file = d.value("tokens", "");
        c.data.text_field = d.value("text_field", "text");
        c.data.synthetic_vocab = opt_get<int64_t>(d, "synthetic_vocab");
        c.data.seed = d.value("seed", uint64_t{0});
        c.data.num_sequences = d.value("num_sequences", c.data.num_sequences);
        c.data.sequence_length = d.value("sequence_length", c.data.sequence_length);
        c.data.batch_size = d.value("batch_size", c.data.batch_size);
        c.data.overlap = d.value("overlap", c.data.overlap);
        c.capture.layers = j.at("capture").value("layers", "");
        c.capture.sites = j.at("capture").value("sites", c.capture.sites);
        const auto & a = j.at("analysis");
        c.analysis.mode = a.value("mode", c.analysis.mode);
        c.analysis.threshold = a.value("threshold", c.analysis.threshold);
        c.analysis.layer_fraction = a.value("layer_fraction", c.analysis.layer_fraction);
        c.analysis.position_fraction = a.value("position_fraction", c.analysis.position_fraction);
        const auto & r = j.at("resources");
        c.resources.providers = r.value("providers", std::vector<std::string>{});
        c.resources.gpu_filter = r.value("gpu", "");
        c.resources.gpu_count = r.value("gpu_count", 1);
        c.resources.min_vram_gb = opt_get<double>(r, "min_vram_gb");
        c.resources.min_cpu_ram_gb = opt_get<double>(r, "min_cpu_ram_gb");
        c.resources.max_price_usd_per_hour = opt_get<double>(r, "max_price_usd_per_hour");
        c.resources.disk_gb = r.value("disk_gb", c.resources.disk_gb);
        c.resources.image = r.value("image", c.resources.image);
        c.resources.safety_factor = r.value("safety_factor", c.resources.safety_factor);
        const auto & p = j.at("policy");
        c.policy.on_success = parse_end_action(p.value("on_success", "terminate"));
        c.policy.on_failure = parse_end_action(p.value("on_failure", "terminate"));
        c.policy.keep_ttl_s = p.value("keep_ttl_s", c.policy.keep_ttl_s);
        c.policy.max_duration_s = p.value("max_duration_s", c.policy.max_duration_s);
        c.policy.max_cost_usd = opt_get<double>(p, "max_cost_usd");
        c.policy.heartbeat_timeout_s = p.value("heartbeat_timeout_s", c.policy.heartbeat_timeout_s);
        c.hf_token_env = j.value("hf_token_env", c.hf_token_env);
        c.output_dir = j.value("output_dir", c.output_dir);
        return c;
    } catch (const nlohmann::json::exception & e) {
        throw common::Error::usage(std::string("run.json: not a run config this version understands: ") + e.what());
    }
}

RunConfig rehearsal_defaults() {
    RunConfig c;
    c.name = "rehearsal";
    FixtureModel fx;
    fx.family = "olmoe";
    fx.layers = 4;
    fx.hidden = 64;
    fx.plants = {"7,42@0-3"};
    fx.seed = 1;
    c.model.fixture = fx;
    c.model.dtype = "f32";
    c.data.synthetic_vocab = 128;
    c.data.seed = 1;
    c.data.num_sequences = 8;
    c.data.sequence_length = 64;
    c.data.batch_size = 2;
    c.resources.providers = {"local"};
    c.resources.gpu_count = 0;
    c.resources.min_vram_gb.reset();
    c.resources.disk_gb = 1;
    c.policy.max_duration_s = 3600;
    c.policy.keep_ttl_s = 600;
    c.policy.heartbeat_timeout_s = 120;
    return c;
}

}  // namespace deploy
