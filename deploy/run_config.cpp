// Reading, overriding and validating the run config (see run_config.h, configs/README.md).
// Relative model/data paths in a YAML file are taken relative to that file's folder, so a config
// works from any current directory; output_dir is relative to the current directory.
#include "deploy/run_config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "broker/provider.h"
#include "common/config_yaml.h"
#include "common/error.h"
#include "common/units.h"
#include "deploy/data_check.h"
#include "deploy/json_fields.h"

namespace fs = std::filesystem;

namespace deploy {

namespace {

const std::vector<std::string> kSites{"ln_attn", "ln_mlp", "residual"};
const std::vector<std::string> kModes{"predecessor", "paper", "both"};
const std::vector<std::string> kDtypes{"bf16", "f16", "f32"};
const std::vector<std::string> kFamilies{"llama", "qwen2", "qwen3", "olmoe", "qwen3_moe", "mixtral", "gpt_oss"};

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

// ---- bounds ------------------------------------------------------------------------------------
// Every number a run config holds has a range. Past it a value is no useful run, but it would go
// wrong where it is used (truncated into an int, a deadline that overflows into the past, a token
// list built in memory before the push), so it is refused where it is read (file:line:column and
// the key path) and again after the flags (validate). configs/README.md states these ranges.
constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kMaxGpuCount = 8;
constexpr int64_t kMaxDiskGb = 100000;             // 100 TB
constexpr int64_t kMaxFixtureLayers = 256;         // a fixture is a tiny random checkpoint
constexpr int kMaxLayerIndex = 1023;               // capture.layers; no decoder has 1024 layers
constexpr int64_t kMinFixtureHidden = 8, kMaxFixtureHidden = 16384;
constexpr int64_t kMaxVocab = 16777216;            // 2^24; real tokenizers have a few 100k tokens
constexpr int64_t kMaxSequences = 10000000;
constexpr int64_t kMaxSequenceLength = 1048576;    // 1M tokens
constexpr int64_t kMaxBatch = 65536;
constexpr int64_t kMaxSyntheticTokens = 50000000;  // synthetic ids are written here as JSON (~8 bytes each)
constexpr double kMaxVramGb = 10000, kMaxCpuRamGb = 100000, kMaxPriceUsdPerHour = 10000, kMaxCostUsd = 1000000;
constexpr double kMaxSafetyFactor = 10, kMaxThreshold = 1e6;
constexpr double kDay = 86400;
constexpr double kMaxDurationS = 30 * kDay;        // policy.max_duration and policy.keep_ttl
constexpr int kMaxRequeues = 20;                   // policy.max_requeues
constexpr double kMinHeartbeatS = 30, kMaxHeartbeatS = kDay;
constexpr double kMinStallS = 5, kMaxStallS = 6 * 3600;  // policy.stall_timeout

std::string num_text(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.15g", v);
    return buf;
}

std::string range_text(int64_t lo, int64_t hi) {
    return hi == kI64Max ? "at least " + std::to_string(lo) : std::to_string(lo) + ".." + std::to_string(hi);
}

// Seconds as the config would write them, for messages (format_duration is for sane values only).
std::string seconds_text(double s) {
    if (s >= kDay && std::fmod(s, kDay) == 0) return num_text(s / kDay) + "d";
    if (s >= 3600 && std::fmod(s, 3600) == 0) return num_text(s / 3600) + "h";
    return num_text(s) + "s";
}

// An integer within [lo, hi]. A value too large for 64 bits is out of range too (as_int alone
// would call it "not an integer"), and nothing is truncated into the narrower field afterwards.
int64_t int_in(const common::ConfigNode & n, int64_t lo, int64_t hi) {
    if (n.is_scalar()) {
        std::string s = n.as_string();
        std::string_view digits = s;
        if (!digits.empty() && digits[0] == '+') digits.remove_prefix(1);
        std::string_view unsigned_part = !digits.empty() && digits[0] == '-' ? digits.substr(1) : digits;
        bool all_digits = !unsigned_part.empty() && std::all_of(unsigned_part.begin(), unsigned_part.end(), [](char ch) {
            return std::isdigit(static_cast<unsigned char>(ch));
        });
        int64_t ignored = 0;
        if (all_digits && std::from_chars(digits.data(), digits.data() + digits.size(), ignored).ec == std::errc::result_out_of_range)
            n.fail(s + " is out of range: must be " + range_text(lo, hi));
    }
    int64_t v = n.as_int();
    if (v < lo || v > hi) n.fail(std::to_string(v) + " is out of range: must be " + range_text(lo, hi));
    return v;
}

int64_t get_int_in(const common::ConfigNode & map, std::string_view key, int64_t fallback, int64_t lo, int64_t hi) {
    auto n = map.find(key);
    return n && !n->is_null() ? int_in(*n, lo, hi) : fallback;
}

// A number in (lo, hi] (lo_open) or [lo, hi]; as_double already refuses nan and inf.
bool in_range(double v, double lo, double hi, bool lo_open) {
    return std::isfinite(v) && (lo_open ? v > lo : v >= lo) && v <= hi;
}
std::string range_text(double lo, double hi, bool lo_open) {
    return (lo_open ? "> " : ">= ") + num_text(lo) + " and at most " + num_text(hi);
}
double number_in(const common::ConfigNode & n, double lo, double hi, bool lo_open) {
    double v = n.as_double();
    if (!in_range(v, lo, hi, lo_open)) n.fail(num_text(v) + " is out of range: must be " + range_text(lo, hi, lo_open));
    return v;
}

std::string duration_range_text(double lo, double hi, bool lo_open) {
    return (lo_open ? "longer than " : "at least ") + seconds_text(lo) + " and at most " + seconds_text(hi);
}
double duration_in(const common::ConfigNode & n, double lo, double hi, bool lo_open) {
    // Plain numbers are seconds; strings use common::parse_duration_s ("90s", "1h30m").
    double v = 0;
    try {
        v = common::parse_duration_s(n.as_string());
    } catch (const common::Error & e) {
        n.fail(e.message());
    }
    if (!in_range(v, lo, hi, lo_open))
        n.fail("'" + n.as_string() + "' is out of range: must be " + duration_range_text(lo, hi, lo_open));
    return v;
}

// A number, or the word auto (nullopt).
std::optional<double> number_or_auto(const common::ConfigNode & n, double hi) {
    if (n.is_null()) return std::nullopt;
    if (n.is_scalar() && n.as_string() == "auto") return std::nullopt;
    return number_in(n, 0, hi, true);
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
        fx.layers = static_cast<int>(get_int_in(*f, "layers", fx.layers, 1, kMaxFixtureLayers));
        fx.hidden = static_cast<int>(get_int_in(*f, "hidden", fx.hidden, kMinFixtureHidden, kMaxFixtureHidden));
        if (auto pl = f->find("plant")) fx.plants = pl->is_sequence() ? pl->as_string_list() : std::vector{pl->as_string()};
        fx.seed = static_cast<uint64_t>(get_int_in(*f, "seed", 0, 0, kI64Max));
        out.fixture = fx;
    }
    out.revision = m.get_string("revision", out.revision);
    out.dtype = m.get_string("dtype", out.dtype);
    if (!one_of(out.dtype, kDtypes)) m.at("dtype").fail("unknown dtype '" + out.dtype + "': use " + joined(kDtypes));
}

void read_data(const common::ConfigNode & d, const std::string & base, DataConfig & out) {
    d.check_keys({"text", "jsonl", "tokens", "hub_rows", "text_field", "synthetic_tokens", "num_sequences", "sequence_length",
                  "batch_size", "overlap"});
    int sources = d.has("text") + d.has("jsonl") + d.has("tokens") + d.has("hub_rows") + d.has("synthetic_tokens");
    if (sources > 1) d.fail("give at most one of text, jsonl, tokens, hub_rows, synthetic_tokens");
    if (auto t = d.find("text")) out.text_file = resolve(base, t->as_string());
    if (auto t = d.find("jsonl")) out.jsonl_file = resolve(base, t->as_string());
    if (auto t = d.find("tokens")) out.tokens_file = resolve(base, t->as_string());
    if (auto h = d.find("hub_rows")) {
        h->check_keys({"dataset", "config", "split", "field"});
        HubRowsSource src;
        src.dataset = h->at("dataset").as_string();
        src.config = h->get_string("config", src.config);
        src.split = h->get_string("split", src.split);
        src.field = h->get_string("field", src.field);
        try {
            check_hub_rows_source(src);
        } catch (const common::Error & e) {
            h->fail(e.message());
        }
        out.hub_rows = src;
    }
    if (auto s = d.find("synthetic_tokens")) {
        s->check_keys({"vocab", "seed"});
        out.synthetic_vocab = int_in(s->at("vocab"), 2, kMaxVocab);
        out.seed = static_cast<uint64_t>(get_int_in(*s, "seed", 0, 0, kI64Max));
    }
    out.text_field = d.get_string("text_field", out.text_field);
    out.num_sequences = get_int_in(d, "num_sequences", out.num_sequences, 1, kMaxSequences);
    out.sequence_length = get_int_in(d, "sequence_length", out.sequence_length, 1, kMaxSequenceLength);
    out.batch_size = get_int_in(d, "batch_size", out.batch_size, 1, kMaxBatch);
    out.overlap = get_int_in(d, "overlap", out.overlap, 0, out.sequence_length - 1);
}

void read_capture(const common::ConfigNode & c, CaptureConfig & out) {
    c.check_keys({"layers", "sites"});
    if (auto l = c.find("layers")) {
        std::string v = l->as_string();
        if (v != "all") {
            try {
                (void)parse_capture_layers(v);  // the syntax now; the range once the layer count is known
            } catch (const common::Error & e) {
                l->fail(e.message());
            }
        }
        out.layers = v == "all" ? "" : v;
    }
    if (auto s = c.find("sites")) {
        out.sites = s->as_string_list();
        for (const auto & site : out.sites)
            if (!one_of(site, kSites)) s->fail("unknown site '" + site + "': use " + joined(kSites));
    }
}

void read_analysis(const common::ConfigNode & a, AnalysisConfig & out) {
    a.check_keys({"mode", "threshold", "layer_fraction", "position_fraction", "perplexity", "expert_stats", "thresholds"});
    out.mode = a.get_string("mode", out.mode);
    if (!one_of(out.mode, kModes)) a.at("mode").fail("unknown mode '" + out.mode + "': use " + joined(kModes));
    if (auto n = a.find("threshold")) out.threshold = number_in(*n, 0, kMaxThreshold, true);
    if (auto n = a.find("layer_fraction")) out.layer_fraction = number_in(*n, 0, 1, false);
    if (auto n = a.find("position_fraction")) out.position_fraction = number_in(*n, 0, 1, false);
    out.perplexity = a.get_bool("perplexity", out.perplexity);
    out.expert_stats = a.get_bool("expert_stats", out.expert_stats);
    if (auto n = a.find("thresholds")) {
        // A list of positive numbers (ascending, distinct, at most 16: analyze's limits), or [] for no sweep.
        if (!n->is_sequence()) n->fail("give a list of thresholds, e.g. [3, 4, 5, 6, 8, 10, 20], or [] for no sweep");
        out.thresholds.clear();
        for (const auto & item : n->elements()) {
            const double t = number_in(item, 0, kMaxThreshold, true);
            if (!out.thresholds.empty() && !(t > out.thresholds.back())) item.fail("thresholds must ascend without repeats");
            out.thresholds.push_back(t);
        }
        if (out.thresholds.size() > 16) n->fail("at most 16 thresholds");
    }
}

void read_resources(const common::ConfigNode & r, ResourcesConfig & out) {
    r.check_keys({"providers", "gpu", "gpu_count", "min_vram_gb", "min_cpu_ram_gb", "offload_gb", "max_price_usd_per_hour",
                  "disk_gb", "image", "safety_factor"});
    if (auto p = r.find("providers")) out.providers = p->as_string_list();
    out.gpu_filter = r.get_string("gpu", out.gpu_filter);
    if (out.gpu_filter == "auto" || out.gpu_filter == "any") out.gpu_filter.clear();
    out.gpu_count = static_cast<int>(get_int_in(r, "gpu_count", out.gpu_count, 0, kMaxGpuCount));
    if (auto v = r.find("min_vram_gb")) out.min_vram_gb = number_or_auto(*v, kMaxVramGb);
    if (auto v = r.find("min_cpu_ram_gb")) out.min_cpu_ram_gb = number_in(*v, 0, kMaxCpuRamGb, true);
    if (auto v = r.find("offload_gb")) out.offload_gb = number_in(*v, 0, kMaxCpuRamGb, false);
    if (auto v = r.find("max_price_usd_per_hour")) out.max_price_usd_per_hour = number_in(*v, 0, kMaxPriceUsdPerHour, true);
    out.disk_gb = static_cast<int>(get_int_in(r, "disk_gb", out.disk_gb, 1, kMaxDiskGb));
    out.image = r.get_string("image", out.image);
    if (auto v = r.find("safety_factor")) out.safety_factor = number_in(*v, 1, kMaxSafetyFactor, false);
}

void read_policy(const common::ConfigNode & p, Policy & out) {
    p.check_keys({"on_success", "on_failure", "keep_ttl", "max_duration", "max_cost_usd", "heartbeat_timeout", "max_requeues",
                  "stall_timeout"});
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
    // Bounded so every deadline derived from them (now + max_duration + 30 min on the instance,
    // the keep TTL, the step deadline in nanoseconds) stays a real time in the future.
    if (auto n = p.find("keep_ttl")) out.keep_ttl_s = duration_in(*n, 0, kMaxDurationS, true);
    if (auto n = p.find("max_duration")) out.max_duration_s = duration_in(*n, 0, kMaxDurationS, true);
    // At least 30s: heartbeats come every 10s.
    if (auto n = p.find("heartbeat_timeout")) out.heartbeat_timeout_s = duration_in(*n, kMinHeartbeatS, kMaxHeartbeatS, false);
    if (auto n = p.find("max_cost_usd")) out.max_cost_usd = number_in(*n, 0, kMaxCostUsd, true);
    out.max_requeues = static_cast<int>(get_int_in(p, "max_requeues", out.max_requeues, 0, kMaxRequeues));
    if (auto n = p.find("stall_timeout")) out.stall_timeout_s = duration_in(*n, kMinStallS, kMaxStallS, false);
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

void overlay_run_config(const common::ConfigNode & root, const std::string & source, RunConfig & c,
                        const std::vector<std::string> & also_allowed) {
    if (!root.is_map()) root.fail("a map of run-config sections (model:, data:, resources:, policy: ...)");
    std::vector<std::string> allowed{"model", "data", "capture", "analysis", "resources", "policy", "hf_token_env"};
    allowed.insert(allowed.end(), also_allowed.begin(), also_allowed.end());
    root.check_keys(allowed);
    std::string base = source.empty() ? "" : fs::path(source).parent_path().string();
    if (base.empty() && !source.empty()) base = ".";
    if (auto m = root.find("model")) {
        ModelConfig fresh;
        fresh.dtype = c.model.dtype;
        read_model(*m, base, fresh);
        c.model = fresh;
    }
    if (auto d = root.find("data")) {
        if (d->is_map() && (d->has("text") || d->has("jsonl") || d->has("tokens") || d->has("hub_rows") || d->has("synthetic_tokens"))) {
            c.data.text_file.clear();  // the member's data source replaces the base's
            c.data.jsonl_file.clear();
            c.data.tokens_file.clear();
            c.data.hub_rows.reset();
            c.data.synthetic_vocab.reset();
        }
        read_data(*d, base, c.data);
    }
    if (auto n = root.find("capture")) read_capture(*n, c.capture);
    if (auto n = root.find("analysis")) read_analysis(*n, c.analysis);
    if (auto n = root.find("resources")) read_resources(*n, c.resources);
    if (auto n = root.find("policy")) read_policy(*n, c.policy);
    c.hf_token_env = root.get_string("hf_token_env", c.hf_token_env);
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
    if (o.offload_gb) c.resources.offload_gb = *o.offload_gb;
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
    if (o.max_duration) {
        try {
            c.policy.max_duration_s = common::parse_duration_s(*o.max_duration);
        } catch (const common::Error & e) {
            throw common::Error::usage("--max-duration: " + e.message());
        }
    }
    if (o.max_cost_usd) c.policy.max_cost_usd = *o.max_cost_usd;
    if (o.output_dir) c.output_dir = *o.output_dir;
    if (o.name) c.name = *o.name;
}

namespace {

// The numeric ranges (see "bounds" above) on a config however it was made: read from YAML, changed
// by flags, or read back from run.json for --resume. `origin` prefixes the key in messages.
void check_bounds(const RunConfig & c, const std::string & origin) {
    auto fail = [&](const std::string & key, const std::string & msg) { throw common::Error::usage(origin + ": " + key + ": " + msg); };
    auto int_range = [&](const char * key, int64_t v, int64_t lo, int64_t hi) {
        if (v < lo || v > hi) fail(key, std::to_string(v) + " is out of range: must be " + range_text(lo, hi));
    };
    auto num_range = [&](const char * key, double v, double lo, double hi, bool lo_open) {
        if (!in_range(v, lo, hi, lo_open)) fail(key, num_text(v) + " is out of range: must be " + range_text(lo, hi, lo_open));
    };
    auto dur_range = [&](const char * key, double v, double lo, double hi, bool lo_open) {
        if (!in_range(v, lo, hi, lo_open))
            fail(key, seconds_text(v) + " is out of range: must be " + duration_range_text(lo, hi, lo_open));
    };
    if (const auto & f = c.model.fixture) {
        int_range("model.fixture.layers", f->layers, 1, kMaxFixtureLayers);
        int_range("model.fixture.hidden", f->hidden, kMinFixtureHidden, kMaxFixtureHidden);
        int_range("model.fixture.seed", static_cast<int64_t>(f->seed), 0, kI64Max);  // 2^63 and up wrap negative here
    }
    const auto & d = c.data;
    if (d.synthetic_vocab) int_range("data.synthetic_tokens.vocab", *d.synthetic_vocab, 2, kMaxVocab);
    int_range("data.synthetic_tokens.seed", static_cast<int64_t>(d.seed), 0, kI64Max);
    int_range("data.num_sequences", d.num_sequences, 1, kMaxSequences);
    int_range("data.sequence_length", d.sequence_length, 1, kMaxSequenceLength);
    int_range("data.batch_size", d.batch_size, 1, kMaxBatch);
    int_range("data.overlap", d.overlap, 0, d.sequence_length - 1);
    // Synthetic ids are generated and written here before the push: bound the whole list.
    if (d.synthetic_vocab && d.num_sequences * d.sequence_length > kMaxSyntheticTokens)  // both bounded: no overflow
        fail("data", "synthetic_tokens: num_sequences x sequence_length = " + std::to_string(d.num_sequences * d.sequence_length) +
                         " tokens; at most " + std::to_string(kMaxSyntheticTokens) + " are generated (give a tokens file for more)");
    num_range("analysis.threshold", c.analysis.threshold, 0, kMaxThreshold, true);
    num_range("analysis.layer_fraction", c.analysis.layer_fraction, 0, 1, false);
    num_range("analysis.position_fraction", c.analysis.position_fraction, 0, 1, false);
    const auto & r = c.resources;
    int_range("resources.gpu_count", r.gpu_count, 0, kMaxGpuCount);
    if (r.min_vram_gb) num_range("resources.min_vram_gb", *r.min_vram_gb, 0, kMaxVramGb, true);
    if (r.min_cpu_ram_gb) num_range("resources.min_cpu_ram_gb", *r.min_cpu_ram_gb, 0, kMaxCpuRamGb, true);
    num_range("resources.offload_gb", r.offload_gb, 0, kMaxCpuRamGb, false);
    if (r.max_price_usd_per_hour) num_range("resources.max_price_usd_per_hour", *r.max_price_usd_per_hour, 0, kMaxPriceUsdPerHour, true);
    int_range("resources.disk_gb", r.disk_gb, 1, kMaxDiskGb);
    num_range("resources.safety_factor", r.safety_factor, 1, kMaxSafetyFactor, false);
    const auto & p = c.policy;
    dur_range("policy.max_duration", p.max_duration_s, 0, kMaxDurationS, true);
    dur_range("policy.keep_ttl", p.keep_ttl_s, 0, kMaxDurationS, true);
    dur_range("policy.heartbeat_timeout", p.heartbeat_timeout_s, kMinHeartbeatS, kMaxHeartbeatS, false);
    if (p.max_cost_usd) num_range("policy.max_cost_usd", *p.max_cost_usd, 0, kMaxCostUsd, true);
    int_range("policy.max_requeues", p.max_requeues, 0, kMaxRequeues);
    dur_range("policy.stall_timeout", p.stall_timeout_s, kMinStallS, kMaxStallS, false);
}

// num_hidden_layers of a checkpoint's config.json; nullopt when it does not say (extract then
// reports what is missing on its own).
std::optional<int64_t> layer_count(const nlohmann::json & hf) {
    if (hf.is_object() && hf.contains("num_hidden_layers") && hf["num_hidden_layers"].is_number_integer())
        return hf["num_hidden_layers"].get<int64_t>();
    return std::nullopt;
}

// A local checkpoint's config.json, read with a size bound (it is a few KiB; anything huge is
// not a config).
nlohmann::json read_checkpoint_config(const std::string & path) {
    constexpr uintmax_t kMaxConfigBytes = 16u << 20;
    std::error_code ec;
    uintmax_t size = fs::file_size(path, ec);
    if (ec) throw common::Error::usage("model.path: " + path + ": " + ec.message());
    if (size > kMaxConfigBytes)
        throw common::Error::usage("model.path: " + path + ": " + std::to_string(size) + " bytes; a config.json is at most " +
                                   std::to_string(kMaxConfigBytes) + " bytes");
    std::ifstream in(path, std::ios::binary);
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw common::Error::usage("model.path: " + path + ": not a JSON object");
    return j;
}

}  // namespace

std::vector<int> parse_capture_layers(const std::string & spec) {
    auto bad = [&](const std::string & part, const std::string & why) -> common::Error {
        return common::Error::usage("'" + part + "' in '" + spec + "': " + why + " (give all, or indices and ranges like 0-3,47)");
    };
    // A layer index as `extract run --layers` reads it (std::stoi: leading spaces, then digits),
    // refused past kMaxLayerIndex so a range can never expand into a huge list.
    auto index = [&](std::string_view text, const std::string & part) -> int {
        size_t i = 0;
        while (i < text.size() && text[i] == ' ') ++i;
        text.remove_prefix(i);
        if (text.empty() || !std::all_of(text.begin(), text.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); }))
            throw bad(part, "not a layer index or range");
        if (text.size() > 6) throw bad(part, "layer index out of range (at most " + std::to_string(kMaxLayerIndex) + ")");
        int v = std::stoi(std::string(text));
        if (v > kMaxLayerIndex) throw bad(part, "layer index out of range (at most " + std::to_string(kMaxLayerIndex) + ")");
        return v;
    };
    std::set<int> out;
    size_t start = 0;
    while (start <= spec.size()) {
        size_t comma = spec.find(',', start);
        std::string part = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        start = comma == std::string::npos ? spec.size() + 1 : comma + 1;
        if (part.empty()) continue;  // "0,,3" and a trailing comma, as extract allows
        size_t dash = part.find('-');
        if (dash == std::string::npos) {
            out.insert(index(part, part));
            continue;
        }
        int a = index(std::string_view(part).substr(0, dash), part);
        int b = index(std::string_view(part).substr(dash + 1), part);
        if (b < a) throw bad(part, "a range goes upwards (" + std::to_string(b) + "-" + std::to_string(a) + ")");
        for (int v = a; v <= b; ++v) out.insert(v);
    }
    if (out.empty()) throw common::Error::usage("'" + spec + "': no layers given (give all, or indices and ranges like 0-3,47)");
    return {out.begin(), out.end()};
}

void check_capture_layers(const RunConfig & c, int64_t n_layers, const std::string & model_what) {
    if (c.capture.layers.empty()) return;
    std::vector<int> layers;
    try {
        layers = parse_capture_layers(c.capture.layers);
    } catch (const common::Error & e) {
        throw common::Error::usage(where(c, "capture.layers") + e.message());
    }
    if (layers.back() >= n_layers)
        throw common::Error::usage(where(c, "capture.layers") + "'" + c.capture.layers + "' names layer " +
                                   std::to_string(layers.back()) + " but " + model_what + " has " + std::to_string(n_layers) +
                                   " layers (0-" + std::to_string(n_layers - 1) + ")");
}

void check_capture_layers(const RunConfig & c, const nlohmann::json & hf_config) {
    if (auto n = layer_count(hf_config)) check_capture_layers(c, *n, c.model.display_name() + " (config.json)");
}

bool runs_on_this_machine(const ResourcesConfig & r) {
    if (r.providers.empty()) return false;
    for (const auto & p : r.providers) {
        try {
            if (!broker::provider_caps(p).on_this_machine) return false;
        } catch (const common::Error &) {
            return false;  // an unknown name: refused later, with the list of valid ones, by broker
        }
    }
    return true;
}

std::optional<double> offer_min_ram_gb(const ResourcesConfig & r) {
    if (r.min_cpu_ram_gb) return r.min_cpu_ram_gb;
    // Pinned layers plus a tenth, and the process; x 11 / 10 so that 90 GB gives 115, not 116 (90 x 1.1 > 99 in binary).
    if (r.offload_gb > 0) return std::ceil((r.offload_gb * 11 + 160) / 10);
    return std::nullopt;
}

void check_values(const RunConfig & c, const std::string & origin) {
    auto fail = [&](const std::string & key, const std::string & msg) { throw common::Error::usage(origin + ": " + key + ": " + msg); };
    // Checks below that name their key themselves ("data.hub_rows.dataset: ...", where(c, ...)) get
    // `origin` in front instead of the source the config names.
    RunConfig named = c;
    named.source = origin;
    const auto & m = c.model;
    int sources = !m.hub_id.empty() + !m.local_path.empty() + m.fixture.has_value();
    if (sources != 1) fail("model", "give exactly one model source (hub id, local path or fixture)");
    if (!m.hub_id.empty()) {
        auto slash = m.hub_id.find('/');
        if (slash == std::string::npos || slash == 0 || slash + 1 == m.hub_id.size() ||
            m.hub_id.find_first_of(" \t\"'`$\\;") != std::string::npos)
            fail("model.hub", "'" + m.hub_id + "' is not a Hugging Face id (owner/name)");
    }
    if (!one_of(m.dtype, kDtypes)) fail("model.dtype", "unknown dtype '" + m.dtype + "': use " + joined(kDtypes));
    // capture.layers against the fixture's own layer count; otherwise its syntax alone (a local
    // checkpoint's count is checked by validate, a Hub model's by the estimate step).
    if (m.fixture) check_capture_layers(named, m.fixture->layers, "the " + m.fixture->family + " fixture");
    else check_capture_layers(named, kMaxLayerIndex + 1, "any model");

    const auto & d = c.data;
    int data_sources = !d.text_file.empty() + !d.jsonl_file.empty() + !d.tokens_file.empty() + d.hub_rows.has_value() +
                       d.synthetic_vocab.has_value();
    if (data_sources != 1) fail("data", "give exactly one of text, jsonl, tokens, hub_rows or synthetic_tokens");
    if (d.hub_rows) {
        try {
            check_hub_rows_source(*d.hub_rows);
        } catch (const common::Error & e) {
            if (e.kind() != common::ErrorKind::Usage) throw;
            throw common::Error::usage(origin + ": " + e.message());
        }
        if (hub_rows_target_bytes(tokens_needed(d)) > kMaxHubRowsTextBytes)
            fail("data.hub_rows", "the run needs " + std::to_string(tokens_needed(d)) + " tokens, " +
                                      std::to_string(hub_rows_target_bytes(tokens_needed(d))) + " bytes of text at " +
                                      std::to_string(kHubRowsBytesPerToken) + " bytes per token; at most " +
                                      std::to_string(kMaxHubRowsTextBytes) + " are fetched this way: give a local text, jsonl or tokens file");
    }
    if (c.capture.sites.empty()) fail("capture.sites", "no sites given");
    for (const auto & s : c.capture.sites)
        if (!one_of(s, kSites)) fail("capture.sites", "unknown site '" + s + "': use " + joined(kSites));
    if (!one_of(c.analysis.mode, kModes)) fail("analysis.mode", "unknown mode '" + c.analysis.mode + "'");

    const auto & r = c.resources;
    for (const auto & p : r.providers)
        if (p.empty() || !std::all_of(p.begin(), p.end(), [](char ch) { return std::islower(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-'; }))
            fail("resources.providers", "'" + p + "' is not a provider name");
    // A batch scheduler (slurm) runs the work as its own jobs: one flow cannot fall through from it to a
    // cloud or back (deploy/README.md, "Batch schedulers").
    int batch = 0;
    for (const auto & p : r.providers) {
        try {
            batch += broker::provider_caps(p).batch_jobs;
        } catch (const common::Error &) {
            // an unknown name: refused later, with the list of valid ones, by broker
        }
    }
    if (batch > 0 && batch != static_cast<int>(r.providers.size()))
        fail("resources.providers", "a batch scheduler cannot be mixed with other providers in one run; give it alone");
    if (!runs_on_this_machine(r) && batch == 0 && r.gpu_count == 0)
        fail("resources.gpu_count", "0 GPUs is only for the local rehearsal provider and batch schedulers (a CPU partition)");
    // Offload keeps the layers that do not fit the GPUs in pinned host memory (extract run
    // --max-memory cpu=SIZE): a CPU run has no GPU to stream them to, and the host must hold them.
    if (r.offload_gb > 0 && r.gpu_count == 0)
        fail("resources.offload_gb", num_text(r.offload_gb) + " GB with gpu_count 0: offload streams layers to a GPU; a CPU run keeps "
                                     "every layer in host memory anyway (drop offload_gb or give gpu_count)");
    if (r.offload_gb > 0 && r.min_cpu_ram_gb && *r.min_cpu_ram_gb < r.offload_gb)
        fail("resources.min_cpu_ram_gb", num_text(*r.min_cpu_ram_gb) + " GB is less than resources.offload_gb (" + num_text(r.offload_gb) +
                                             " GB of pinned host memory); raise min_cpu_ram_gb or leave it out (then ceil(offload_gb x 1.1 + 16))");
    if (!c.name.empty() && (c.name.size() > 20 || !std::all_of(c.name.begin(), c.name.end(), [](char ch) {
                                return std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch));
                            })))
        fail("name", "'" + c.name + "': use at most 20 lower-case letters and digits (it becomes part of the instance name)");
    if (c.hf_token_env.empty()) fail("hf_token_env", "must name an environment variable");
}

void validate(const RunConfig & c) {
    auto fail = [&](const std::string & key, const std::string & msg) { throw common::Error::usage(where(c, key) + msg); };
    const std::string origin = c.source.empty() ? std::string("config") : c.source;
    check_bounds(c, origin);
    check_values(c, origin);
    // What only this machine's files can tell (a resumed run, whose files may be gone, is held to
    // check_bounds and check_values alone).
    const auto & m = c.model;
    std::error_code ec;
    if (!m.local_path.empty() && !fs::is_regular_file(fs::path(m.local_path) / "config.json", ec))
        fail("model.path", m.local_path + ": no config.json there; give a Hugging Face checkpoint directory");
    // capture.layers against a local checkpoint's layer count, known before renting.
    if (!m.local_path.empty())
        check_capture_layers(c, read_checkpoint_config((fs::path(m.local_path) / "config.json").string()));
    const auto & d = c.data;
    for (const auto * f : {&d.text_file, &d.jsonl_file, &d.tokens_file})
        if (!f->empty() && !fs::is_regular_file(*f, ec)) fail("data", *f + ": no such file");
    // Too little data for the windows is known here, not by extract on a rented instance.
    try {
        check_data_fills_run(d);
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::Usage) throw;
        throw common::Error::usage(origin + ": " + e.message());
    }
}

namespace {

template <typename T>
nlohmann::json opt(const std::optional<T> & v) {
    return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}
// An int field of run.json, refused rather than truncated when it does not fit (check_bounds
// then applies the config's own ranges).
int int_field(const JsonFields & f, const char * key, int fallback) {
    int64_t v = f.integer<int64_t>(key, fallback);
    if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
        throw common::Error(common::ErrorKind::Usage, f.source() + ": " + f.name(key) + ": " + std::to_string(v) + " is out of range")
            .with("file", f.source());
    return static_cast<int>(v);
}

EndAction end_action_field(const JsonFields & f, const char * key) {
    const std::string v = f.string(key, "terminate");
    if (v != "terminate" && v != "keep") f.fail(key, "terminate or keep", "'" + v.substr(0, 40) + "'");
    return parse_end_action(v);
}

// No real config lists more than a few sites, providers or plants; the YAML reader allows 16 thresholds.
constexpr size_t kMaxListItems = 64, kMaxThresholds = 16;

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
            {"data", {{"text", d.text_file}, {"jsonl", d.jsonl_file}, {"tokens", d.tokens_file},
                      {"hub_rows", d.hub_rows ? nlohmann::json{{"dataset", d.hub_rows->dataset}, {"config", d.hub_rows->config},
                                                               {"split", d.hub_rows->split}, {"field", d.hub_rows->field}}
                                              : nlohmann::json(nullptr)},
                      {"text_field", d.text_field},
                      {"synthetic_vocab", opt(d.synthetic_vocab)}, {"seed", d.seed}, {"num_sequences", d.num_sequences},
                      {"sequence_length", d.sequence_length}, {"batch_size", d.batch_size}, {"overlap", d.overlap}}},
            {"capture", {{"layers", c.capture.layers}, {"sites", c.capture.sites}}},
            {"analysis", {{"mode", c.analysis.mode}, {"threshold", c.analysis.threshold}, {"layer_fraction", c.analysis.layer_fraction},
                          {"position_fraction", c.analysis.position_fraction}, {"perplexity", c.analysis.perplexity},
                          {"expert_stats", c.analysis.expert_stats}, {"thresholds", c.analysis.thresholds}}},
            {"resources", {{"providers", r.providers}, {"gpu", r.gpu_filter}, {"gpu_count", r.gpu_count}, {"min_vram_gb", opt(r.min_vram_gb)},
                           {"min_cpu_ram_gb", opt(r.min_cpu_ram_gb)}, {"offload_gb", r.offload_gb},
                           {"max_price_usd_per_hour", opt(r.max_price_usd_per_hour)},
                           {"disk_gb", r.disk_gb}, {"image", r.image}, {"safety_factor", r.safety_factor}}},
            {"policy", {{"on_success", end_action_name(p.on_success)}, {"on_failure", end_action_name(p.on_failure)},
                        {"keep_ttl_s", p.keep_ttl_s}, {"max_duration_s", p.max_duration_s}, {"max_cost_usd", opt(p.max_cost_usd)},
                        {"heartbeat_timeout_s", p.heartbeat_timeout_s}, {"max_requeues", p.max_requeues},
                        {"stall_timeout_s", p.stall_timeout_s}}},
            {"hf_token_env", c.hf_token_env},
            {"output_dir", c.output_dir}};
}

RunConfig config_from_json(const nlohmann::json & j, const std::string & source) {
    // Every field typed (json_fields.h): run.json is a file on the user's disk, and a hand edit or a
    // damaged copy must be refused naming the key, never crash on a type_error or cast a float.
    JsonFields top(j, source, "config");
    RunConfig c;
    c.source = top.string("source");
    c.name = top.string("name");
    const auto m = top.required_object("model");
    c.model.hub_id = m.string("hub");
    c.model.revision = m.string("revision", "main");
    c.model.local_path = m.string("path");
    c.model.dtype = m.string("dtype", "bf16");
    if (m.has("fixture")) {
        const auto f = m.object("fixture");
        FixtureModel fx;
        fx.family = f.string("family", fx.family);
        fx.layers = int_field(f, "layers", fx.layers);
        fx.hidden = int_field(f, "hidden", fx.hidden);
        fx.plants = f.string_list("plant", kMaxListItems);
        fx.seed = f.integer<uint64_t>("seed", 0);
        c.model.fixture = fx;
    }
    const auto d = top.required_object("data");
    c.data.text_file = d.string("text");
    c.data.jsonl_file = d.string("jsonl");
    c.data.tokens_file = d.string("tokens");
    if (d.has("hub_rows")) {
        const auto h = d.object("hub_rows");
        HubRowsSource src;
        src.dataset = h.string("dataset");
        src.config = h.string("config", src.config);
        src.split = h.string("split", src.split);
        src.field = h.string("field", src.field);
        try {
            check_hub_rows_source(src, source + ": config.data.hub_rows");
        } catch (const common::Error & e) {
            throw common::Error(common::ErrorKind::Usage, e.message()).with("file", source);
        }
        c.data.hub_rows = src;
    }
    c.data.text_field = d.string("text_field", "text");
    if (d.has("synthetic_vocab")) c.data.synthetic_vocab = d.integer<int64_t>("synthetic_vocab");
    c.data.seed = d.integer<uint64_t>("seed", 0);
    c.data.num_sequences = d.integer<int64_t>("num_sequences", c.data.num_sequences);
    c.data.sequence_length = d.integer<int64_t>("sequence_length", c.data.sequence_length);
    c.data.batch_size = d.integer<int64_t>("batch_size", c.data.batch_size);
    c.data.overlap = d.integer<int64_t>("overlap", c.data.overlap);
    const auto cap = top.required_object("capture");
    c.capture.layers = cap.string("layers");
    c.capture.sites = cap.string_list("sites", kMaxListItems, c.capture.sites);
    const auto a = top.required_object("analysis");
    c.analysis.mode = a.string("mode", c.analysis.mode);
    c.analysis.threshold = a.number("threshold", c.analysis.threshold);
    c.analysis.layer_fraction = a.number("layer_fraction", c.analysis.layer_fraction);
    c.analysis.position_fraction = a.number("position_fraction", c.analysis.position_fraction);
    c.analysis.perplexity = a.boolean("perplexity", c.analysis.perplexity);
    c.analysis.expert_stats = a.boolean("expert_stats", c.analysis.expert_stats);
    c.analysis.thresholds = a.number_list("thresholds", kMaxThresholds, c.analysis.thresholds);
    const auto r = top.required_object("resources");
    c.resources.providers = r.string_list("providers", kMaxListItems);
    c.resources.gpu_filter = r.string("gpu");
    c.resources.gpu_count = int_field(r, "gpu_count", 1);
    c.resources.min_vram_gb = r.opt_number("min_vram_gb");
    c.resources.min_cpu_ram_gb = r.opt_number("min_cpu_ram_gb");
    c.resources.offload_gb = r.number("offload_gb", 0.0);  // absent in run dirs from before offload
    c.resources.max_price_usd_per_hour = r.opt_number("max_price_usd_per_hour");
    c.resources.disk_gb = int_field(r, "disk_gb", c.resources.disk_gb);
    c.resources.image = r.string("image", c.resources.image);
    c.resources.safety_factor = r.number("safety_factor", c.resources.safety_factor);
    const auto p = top.required_object("policy");
    c.policy.on_success = end_action_field(p, "on_success");
    c.policy.on_failure = end_action_field(p, "on_failure");
    c.policy.keep_ttl_s = p.number("keep_ttl_s", c.policy.keep_ttl_s);
    c.policy.max_duration_s = p.number("max_duration_s", c.policy.max_duration_s);
    c.policy.max_requeues = int_field(p, "max_requeues", c.policy.max_requeues);
    c.policy.stall_timeout_s = p.number("stall_timeout_s", c.policy.stall_timeout_s);  // absent in older run dirs
    c.policy.max_cost_usd = p.opt_number("max_cost_usd");
    c.policy.heartbeat_timeout_s = p.number("heartbeat_timeout_s", c.policy.heartbeat_timeout_s);
    c.hf_token_env = top.string("hf_token_env", c.hf_token_env);
    c.output_dir = top.string("output_dir", c.output_dir);
    check_bounds(c, source);  // a resumed run is held to the same ranges as a new one
    // ...and to every check that needs no local file: a value edited in run.json (a capture site
    // that is shell text, a model id, a provider or run name) would otherwise go unchecked into the
    // job script, a URL or an instance name, since validate() needs the config's data files.
    try {
        check_values(c, source);
    } catch (const common::Error & e) {
        if (e.kind() != common::ErrorKind::Usage) throw;
        throw common::Error(common::ErrorKind::Usage, JsonFields::printable(e.message())).with("file", source);  // the value came from the file
    }
    return c;
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
    c.resources.providers = {std::string(broker::this_machine_provider())};
    c.resources.gpu_count = 0;
    c.resources.min_vram_gb.reset();
    c.resources.disk_gb = 1;
    c.policy.max_duration_s = 3600;
    c.policy.keep_ttl_s = 600;
    c.policy.heartbeat_timeout_s = 120;
    return c;
}

}  // namespace deploy
