// CBOR statistics files. A file is untrusted: its raw CBOR is scanned before parsing (nesting,
// lengths), then every field is typed, range-checked and sized against what the file holds before
// anything is allocated, so a truncated, hand-edited or hostile file is refused naming the file and
// the field rather than read out of bounds.
#include "analysis/stats_file.h"

#include "common/error.h"
#include "common/regular_file.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

namespace analysis {

static_assert(std::endian::native == std::endian::little, "statistics files store little-endian arrays");

namespace {

using json = nlohmann::json;

template <typename T>
json bytes_of(const std::vector<T> & v) {
    std::vector<std::uint8_t> raw(v.size() * sizeof(T));
    if (!raw.empty()) std::memcpy(raw.data(), v.data(), raw.size());
    return json::binary(std::move(raw));
}

[[noreturn]] void bad(const std::string & path, const std::string & why) {
    throw common::Error::file(path, "not a valid statistics file: " + why +
                                        "; regenerate it with `analyze RUN_DIR` or `extract ... --analyze`");
}

[[noreturn]] void bad_field(const std::string & path, const std::string & field, const std::string & why) {
    throw common::Error::file(path, "not a valid statistics file: field '" + field + "' " + why +
                                        "; regenerate it with `analyze RUN_DIR` or `extract ... --analyze`")
        .with("field", field);
}

// a * b, or a usage error naming the field whose size it is when the product does not fit.
uint64_t checked_mul(uint64_t a, uint64_t b, const std::string & path, const std::string & field) {
    uint64_t out = 0;
    if (__builtin_mul_overflow(a, b, &out)) bad_field(path, field, "has a size that overflows (" + std::to_string(a) + " x " + std::to_string(b) + ")");
    return out;
}

// nlohmann's CBOR reader recurses once per nesting level (200000 nested arrays overflow the stack)
// and follows declared lengths as far as the bytes go. This iterative pass over the raw bytes runs
// first and refuses what the reader should never see: nesting deeper than kMaxStatisticsNesting,
// reserved or truncated heads, lengths or item counts beyond the bytes left (every item takes at
// least one byte, so nothing declared can outgrow the file), tags, integers below -2^63 and bytes
// after the document.
void scan_cbor(const std::uint8_t * p, size_t n, const std::string & path) {
    struct Frame {
        uint64_t left;  // items still to come (definite length)
        bool indefinite, map;
        uint64_t seen;
    };
    std::vector<Frame> stack;
    size_t i = 0, head = 0;
    auto fail = [&](const std::string & why) { bad(path, "malformed CBOR at byte " + std::to_string(head) + ": " + why); };
    auto argument = [&](int ai) -> uint64_t {
        if (ai < 24) return static_cast<uint64_t>(ai);
        if (ai > 27) fail("reserved additional information " + std::to_string(ai));
        const size_t len = size_t{1} << (ai - 24);
        if (n - i < len) fail("the file ends inside an item's head");
        uint64_t v = 0;
        for (size_t k = 0; k < len; ++k) v = (v << 8) | p[i++];
        return v;
    };
    bool started = false;
    for (;;) {
        while (!stack.empty() && !stack.back().indefinite && stack.back().left == 0) stack.pop_back();
        if (started && stack.empty()) break;
        head = i;
        if (i >= n) fail("the file ends inside an item");
        const std::uint8_t ib = p[i++];
        if (ib == 0xff) {
            if (stack.empty() || !stack.back().indefinite) fail("a break outside an indefinite-length item");
            if (stack.back().map && stack.back().seen % 2) fail("an indefinite-length map ends after a key");
            stack.pop_back();
            continue;
        }
        if (!stack.empty()) {
            if (!stack.back().indefinite) --stack.back().left;
            ++stack.back().seen;
        }
        started = true;
        const int major = ib >> 5, ai = ib & 31;
        const bool indefinite = ai == 31;
        if (indefinite && (major == 0 || major == 1 || major == 6 || major == 7)) fail("indefinite length on a number, tag or simple value");
        const uint64_t arg = indefinite ? 0 : argument(ai);
        switch (major) {
            case 0: break;
            case 1:
                if (arg > static_cast<uint64_t>(INT64_MAX)) fail("a negative integer below -2^63");
                break;
            case 2:
            case 3:
                if (!indefinite) {
                    if (arg > n - i) fail("a string of " + std::to_string(arg) + " bytes with " + std::to_string(n - i) + " left in the file");
                    i += static_cast<size_t>(arg);
                    break;
                }
                for (;;) {  // chunks: definite strings of the same type, up to a break
                    head = i;
                    if (i >= n) fail("the file ends inside an indefinite-length string");
                    const std::uint8_t c = p[i++];
                    if (c == 0xff) break;
                    if ((c >> 5) != major || (c & 31) == 31) fail("a chunk of an indefinite-length string that is not a definite string of its type");
                    const uint64_t len = argument(c & 31);
                    if (len > n - i) fail("a string chunk longer than the rest of the file");
                    i += static_cast<size_t>(len);
                }
                break;
            case 4:
            case 5: {
                if (stack.size() >= static_cast<size_t>(kMaxStatisticsNesting))
                    fail("arrays and maps nested deeper than " + std::to_string(kMaxStatisticsNesting));
                uint64_t items = arg;
                if (!indefinite) {
                    if (major == 5 && arg > (n - i) / 2) fail("a map of " + std::to_string(arg) + " pairs with " + std::to_string(n - i) + " bytes left");
                    if (major == 5) items = 2 * arg;
                    if (items > n - i) fail("an array of " + std::to_string(arg) + " items with " + std::to_string(n - i) + " bytes left");
                }
                stack.push_back({items, indefinite, major == 5, 0});
                break;
            }
            case 6: fail("a CBOR tag (statistics files use none)");
            default: break;  // 7: simple values and floats, their bytes already consumed as the argument
        }
    }
    if (i != n) bad(path, "malformed CBOR: " + std::to_string(n - i) + " bytes after the end of the document");
}

// Typed access to one CBOR map, naming each field by its path ("per_sequence[3].count") in errors.
class Fields {
public:
    Fields(const json & j, std::string where, const std::string & path) : j_(j), where_(std::move(where)), path_(path) {
        if (!j_.is_object()) bad_field(path_, where_.empty() ? "(document)" : where_, "is not a map");
    }
    std::string name(const std::string & key) const { return where_.empty() ? key : where_ + "." + key; }
    const std::string & path() const { return path_; }
    bool has(const std::string & key) const { return j_.contains(key); }
    const json & at(const std::string & key) const {
        const auto it = j_.find(key);
        if (it == j_.end()) bad_field(path_, name(key), "is missing");
        return *it;
    }
    int64_t integer(const std::string & key, int64_t lo, int64_t hi) const { return integer_value(at(key), name(key), lo, hi, path_); }
    double number(const std::string & key) const {
        const auto & v = at(key);
        if (!v.is_number()) bad_field(path_, name(key), "is not a number");
        const double d = v.get<double>();
        if (!std::isfinite(d)) bad_field(path_, name(key), "is not finite");
        return d;
    }
    bool boolean(const std::string & key) const {
        const auto & v = at(key);
        if (!v.is_boolean()) bad_field(path_, name(key), "is not a boolean");
        return v.get<bool>();
    }
    const json & array(const std::string & key) const {
        const auto & v = at(key);
        if (!v.is_array()) bad_field(path_, name(key), "is not an array");
        return v;
    }
    // A byte string of exactly `count` elements of T (count already checked not to overflow).
    template <typename T>
    std::vector<T> bytes(const std::string & key, uint64_t count) const {
        const auto & v = at(key);
        if (!v.is_binary()) bad_field(path_, name(key), "is not a byte string");
        const auto & raw = v.get_binary();
        const uint64_t expected = checked_mul(count, sizeof(T), path_, name(key));
        // The bytes are in the file, so once they match the expected size the allocation is bounded by it.
        if (raw.size() != expected)
            bad_field(path_, name(key), "has " + std::to_string(raw.size()) + " bytes, expected " + std::to_string(expected));
        std::vector<T> out(static_cast<size_t>(count));
        if (expected) std::memcpy(out.data(), raw.data(), raw.size());
        return out;
    }

    static int64_t integer_value(const json & v, const std::string & field, int64_t lo, int64_t hi, const std::string & path) {
        int64_t x = 0;
        if (v.is_number_unsigned()) {
            const auto u = v.get<uint64_t>();
            if (u > static_cast<uint64_t>(INT64_MAX)) bad_field(path, field, "is " + std::to_string(u) + ", above the allowed " + std::to_string(hi));
            x = static_cast<int64_t>(u);
        } else if (v.is_number_integer()) {
            x = v.get<int64_t>();
        } else {
            bad_field(path, field, "is not an integer");
        }
        if (x < lo || x > hi)
            bad_field(path, field, "is " + std::to_string(x) + ", outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        return x;
    }

private:
    const json & j_;
    std::string where_;
    const std::string & path_;
};

// A float field (massive activations): inf and NaN are legitimate (fp16 overflow), but a finite
// double beyond float's range would not convert.
float float_value(const json & v, const std::string & field, const std::string & path) {
    if (!v.is_number()) bad_field(path, field, "is not a number");
    const double d = v.get<double>();
    if (std::isfinite(d) && std::fabs(d) > static_cast<double>(std::numeric_limits<float>::max()))
        bad_field(path, field, "is outside the range of a 32-bit float");
    return static_cast<float>(d);
}

// The run metadata is kept as it is, but the fields that reports and merges read must have the
// types they expect (model_label, build_result, merge_into and load_token_text read these).
void check_metadata(const json & m, const std::string & path) {
    if (!m.is_object()) bad_field(path, "metadata", "is not a map");
    auto expect = [&](const json & obj, const char * key, bool (json::*is)() const noexcept, const char * what, const std::string & prefix) {
        if (obj.contains(key) && !(obj.at(key).*is)()) bad_field(path, prefix + key, std::string("is not ") + what);
    };
    expect(m, "model_name", &json::is_string, "a string", "metadata.");
    expect(m, "partial", &json::is_boolean, "a boolean", "metadata.");
    expect(m, "sources", &json::is_array, "an array", "metadata.");
    expect(m, "checkpoint_fingerprint_sha256", &json::is_string, "a string", "metadata.");
    if (m.contains("model") && !m["model"].is_string()) {
        if (!m["model"].is_object()) bad_field(path, "metadata.model", "is neither a string nor a map");
        expect(m["model"], "dir", &json::is_string, "a string", "metadata.model.");
        expect(m["model"], "model_type", &json::is_string, "a string", "metadata.model.");
    }
    if (m.contains("tokenizer") && m["tokenizer"].is_object()) expect(m["tokenizer"], "path", &json::is_string, "a string", "metadata.tokenizer.");
}

}  // namespace

void save_statistics(const Statistics & s, const std::string & path) {
    json j;
    j["format"] = kStatisticsFormat;
    j["version"] = kStatisticsVersion;
    j["threshold"] = s.threshold;
    j["round_bf16"] = s.round_bf16;
    j["hidden"] = s.hidden;
    j["histogram"] = {{"log2_min", s.histogram_spec.log2_min},
                      {"bins_per_octave", s.histogram_spec.bins_per_octave},
                      {"bins", s.histogram_spec.bins}};
    j["massive_top_k"] = s.massive_top_k;
    j["token_dims_per_batch"] = s.token_dims_per_batch;
    j["sites"] = json::array();
    for (const auto & site : s.sites) j["sites"].push_back({site.layer, site.site});
    j["site_hits"] = bytes_of(s.site_hits);
    j["site_max_abs"] = bytes_of(s.site_max_abs);
    j["site_elements"] = s.site_elements;
    j["site_sequences"] = s.site_sequences;
    {
        std::vector<int64_t> nonfinite = s.site_nonfinite;
        nonfinite.resize(s.sites.size(), 0);
        j["site_nonfinite"] = nonfinite;
    }
    j["site_histogram"] = bytes_of(s.site_histogram);
    // The position map is stored for dims with any hit only: most of [T,H] is zero.
    const auto H = static_cast<size_t>(s.hidden);
    std::vector<int32_t> pdims, pdata;
    for (size_t h = 0; h < H; ++h) {
        bool any = false;
        for (int64_t t = 0; t < s.max_positions && !any; ++t) any = s.position_hits[static_cast<size_t>(t) * H + h] != 0;
        if (!any) continue;
        pdims.push_back(static_cast<int32_t>(h));
        for (int64_t t = 0; t < s.max_positions; ++t) pdata.push_back(s.position_hits[static_cast<size_t>(t) * H + h]);
    }
    j["max_positions"] = s.max_positions;
    j["position_dims"] = pdims;
    j["position_hits"] = bytes_of(pdata);
    j["sequences"] = s.sequences;
    j["tokens"] = s.tokens;
    j["batches"] = s.batches;
    j["per_sequence"] = json::array();
    for (const auto & seq : s.per_sequence) {
        std::vector<int32_t> ints;
        std::vector<int64_t> hits;
        std::vector<float> maxima;
        for (const auto & d : seq.dims) {
            ints.insert(ints.end(), {d.dim, d.sites_hit, d.layers_hit, d.positions_hit});
            hits.push_back(d.hits);
            maxima.push_back(d.max_abs);
        }
        json record = {{"sequence_index", seq.sequence_index}, {"tokens", seq.tokens},
                       {"sites", seq.sites}, {"layers", seq.layers}, {"count", seq.dims.size()},
                       {"dims", bytes_of(ints)}, {"hits", bytes_of(hits)}, {"max_abs", bytes_of(maxima)}};
        if (!s.sweep_thresholds.empty()) {
            record["sweep_count"] = seq.sweep.size() / (1 + 3 * s.sweep_thresholds.size());
            record["sweep"] = bytes_of(seq.sweep);
        }
        j["per_sequence"].push_back(std::move(record));
    }
    if (!s.sweep_thresholds.empty())
        j["sweep"] = {{"thresholds", s.sweep_thresholds}, {"site_level", bytes_of(s.sweep_site_level)},
                      {"dim_positions", bytes_of(s.sweep_dim_positions)}};
    if (s.expert_stats) {
        json layers = json::array();
        for (const auto & l : s.experts)
            layers.push_back({{"layer", l.layer}, {"experts", l.tokens.size()}, {"tokens", bytes_of(l.tokens)},
                              {"max_abs", bytes_of(l.max_abs)}, {"hit_tokens", bytes_of(l.hit_tokens)}});
        j["experts"] = layers;
    }
    j["token_hits"] = json::array();
    for (const auto & [dim, tokens] : s.token_hits) {
        std::vector<int64_t> pairs;
        for (const auto & [token, n] : tokens) pairs.insert(pairs.end(), {token, n});
        auto batches = s.token_hits_batches.count(dim) ? s.token_hits_batches.at(dim) : 0;
        j["token_hits"].push_back({{"dim", dim}, {"batches", batches}, {"count", tokens.size()}, {"pairs", bytes_of(pairs)}});
    }
    j["massive"] = json::array();
    for (const auto & l : s.massive) {
        json top = json::array(), medians = json::array();
        for (const auto & e : l.top)
            top.push_back({e.abs_value, e.sequence_index, e.position, e.dim, e.sequence_median_abs, e.token_id});
        for (const auto & [seq, m] : l.medians) medians.push_back({seq, m});
        j["massive"].push_back({{"layer", l.layer}, {"top", top}, {"medians", medians}});
    }
    if (s.perplexity) {
        json records = json::array();
        for (const auto & r : s.perplexity_sequences)
            records.push_back({{"sequence_index", r.sequence_index}, {"tokens", r.tokens}, {"nll_sum", r.nll_sum},
                               {"buckets", r.bucket_nll.size()}, {"bucket_nll", bytes_of(r.bucket_nll)},
                               {"bucket_tokens", bytes_of(r.bucket_tokens)}});
        j["perplexity"] = {{"sequences", records}};
    }
    j["metadata"] = s.metadata;

    const auto bytes = json::to_cbor(j);
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) throw common::Error::io(tmp, "cannot create statistics file", errno);
        out.write(reinterpret_cast<const char *>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        out.flush();
        if (!out) throw common::Error::io(tmp, "cannot write statistics file", errno);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw common::Error::io(path, "cannot rename statistics file into place", errno);
}

Statistics load_statistics(const std::string & path) {
    // Bounded before reading a byte, and a FIFO or directory is refused by name instead of
    // blocking or failing as an internal error.
    const std::string bytes = common::read_regular_file(path, kMaxStatisticsFileBytes, "statistics file");
    return parse_statistics(reinterpret_cast<const std::uint8_t *>(bytes.data()), bytes.size(), path);
}

namespace {

// Phases of parse_statistics, in the order they read the document: each refuses what it reads
// before the next one starts, so the first bad field a hostile file holds is the one reported.

// Scan, decode and tag check: the raw bytes become a json document only after scan_cbor bounds them.
json decode_document(const std::uint8_t * data, size_t size, const std::string & path) {
    scan_cbor(data, size, path);
    json j;
    try {
        j = json::from_cbor(data, data + size);
    } catch (const json::exception & e) {
        bad(path, std::string("not CBOR (") + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("format") || !j["format"].is_string() || j["format"].get<std::string>() != kStatisticsFormat)
        bad(path, "no '" + std::string(kStatisticsFormat) + "' format tag");
    return j;
}

// The scalar settings (threshold, hidden, histogram bins, top-K and token dims) that size what follows.
void read_settings(const Fields & root, const std::string & path, Statistics & s) {
    s.threshold = root.number("threshold");
    s.round_bf16 = root.boolean("round_bf16");
    s.hidden = root.integer("hidden", 0, kMaxStatisticsHidden);
    {
        const Fields hist(root.at("histogram"), "histogram", path);
        // lower_edge() = 2^(log2_min + bin / bins_per_octave): bounded so every edge is a finite,
        // positive double (the result JSON cannot hold inf), and bins_per_octave is a divisor.
        s.histogram_spec.bins_per_octave = static_cast<int>(hist.integer("bins_per_octave", 1, 64));
        s.histogram_spec.bins = static_cast<int>(hist.integer("bins", 0, kMaxStatisticsHistogramBins));
        s.histogram_spec.log2_min = hist.number("log2_min");
        if (s.histogram_spec.log2_min < -500 || s.histogram_spec.log2_min > 500)
            bad_field(path, "histogram.log2_min", "is outside [-500, 500]");
        if (s.histogram_spec.bins / s.histogram_spec.bins_per_octave > 500)
            bad_field(path, "histogram.bins", "spans more than 500 octaves");
    }
    s.massive_top_k = static_cast<int>(root.integer("massive_top_k", 0, 1 << 20));
    s.token_dims_per_batch = static_cast<int>(root.integer("token_dims_per_batch", 0, INT32_MAX));
}

// The site list and its per-site arrays; returns sites x hidden, the size of the [S,H] arrays
// (the sweep's site levels have it too).
uint64_t read_sites(const Fields & root, const std::string & path, Statistics & s) {
    const auto & sites = root.array("sites");
    for (size_t i = 0; i < sites.size(); ++i) {
        const std::string field = "sites[" + std::to_string(i) + "]";
        const auto & site = sites[i];
        if (!site.is_array() || site.size() != 2) bad_field(path, field, "is not a [layer, site] pair");
        const auto layer = Fields::integer_value(site[0], field + "[0]", 0, kMaxStatisticsLayer, path);
        if (!site[1].is_string() || (site[1] != "ln_attn" && site[1] != "ln_mlp"))
            bad_field(path, field + "[1]", "is not \"ln_attn\" or \"ln_mlp\"");
        s.sites.push_back({static_cast<int>(layer), site[1].get<std::string>()});
    }
    const uint64_t S = s.sites.size();
    const auto H = static_cast<uint64_t>(s.hidden);
    const uint64_t SH = checked_mul(S, H, path, "site_hits");
    s.site_hits = root.bytes<int64_t>("site_hits", SH);
    s.site_max_abs = root.bytes<float>("site_max_abs", SH);
    for (const char * key : {"site_elements", "site_sequences"}) {
        const auto & a = root.array(key);
        if (a.size() != S)
            bad_field(path, key, "has " + std::to_string(a.size()) + " entries for " + std::to_string(S) + " sites");
        auto & dst = std::string(key) == "site_elements" ? s.site_elements : s.site_sequences;
        for (size_t i = 0; i < a.size(); ++i)
            dst.push_back(Fields::integer_value(a[i], std::string(key) + "[" + std::to_string(i) + "]", 0, INT64_MAX, path));
    }
    s.site_histogram = root.bytes<int64_t>("site_histogram", checked_mul(S, static_cast<uint64_t>(s.histogram_spec.bins), path, "site_histogram"));
    // Version 4; absent (older files): none counted.
    s.site_nonfinite.assign(S, 0);
    if (root.has("site_nonfinite")) {
        const auto & a = root.array("site_nonfinite");
        if (a.size() != S)
            bad_field(path, "site_nonfinite", "has " + std::to_string(a.size()) + " entries for " + std::to_string(S) + " sites");
        for (size_t i = 0; i < a.size(); ++i)
            s.site_nonfinite[i] = Fields::integer_value(a[i], "site_nonfinite[" + std::to_string(i) + "]", 0, s.site_elements[i], path);
    }
    return SH;
}

// The [T,H] position map, stored sparse (dims with a hit only) and bounded before it is allocated dense.
void read_position_map(const Fields & root, const std::string & path, Statistics & s) {
    const auto H = static_cast<uint64_t>(s.hidden);
    s.max_positions = root.integer("max_positions", 0, kMaxStatisticsPositions);
    const auto T = static_cast<uint64_t>(s.max_positions);
    const uint64_t TH = checked_mul(T, H, path, "max_positions");
    if (TH > kMaxPositionMapEntries)
        bad_field(path, "max_positions", "x hidden = " + std::to_string(T) + " x " + std::to_string(H) +
                                             " position-map entries, more than the " + std::to_string(kMaxPositionMapEntries) + " allowed");
    const auto & pdims_json = root.array("position_dims");
    std::vector<size_t> pdims;
    for (size_t k = 0; k < pdims_json.size(); ++k)
        pdims.push_back(static_cast<size_t>(Fields::integer_value(pdims_json[k], "position_dims[" + std::to_string(k) + "]", 0,
                                                                  static_cast<int64_t>(H) - 1, path)));
    const auto pdata = root.bytes<int32_t>("position_hits", checked_mul(pdims.size(), T, path, "position_hits"));
    s.position_hits.assign(static_cast<size_t>(TH), 0);
    for (size_t k = 0; k < pdims.size(); ++k)
        for (size_t t = 0; t < T; ++t) s.position_hits[t * H + pdims[k]] = pdata[k * T + t];
}

// The threshold sweep's run-wide record (version 3): thresholds ascending, levels at most K.
void read_sweep(const Fields & root, const std::string & path, uint64_t SH, Statistics & s) {
    const auto H = static_cast<uint64_t>(s.hidden);
    const Fields sweep(root.at("sweep"), "sweep", path);
    const auto & thresholds = sweep.array("thresholds");
    if (thresholds.empty() || thresholds.size() > static_cast<size_t>(kMaxSweepThresholds))
        bad_field(path, "sweep.thresholds", "holds " + std::to_string(thresholds.size()) + " thresholds, expected 1 to " +
                                                std::to_string(kMaxSweepThresholds));
    for (size_t k = 0; k < thresholds.size(); ++k) {
        const std::string field = "sweep.thresholds[" + std::to_string(k) + "]";
        if (!thresholds[k].is_number()) bad_field(path, field, "is not a number");
        const double t = thresholds[k].get<double>();
        if (!(t > 0) || !std::isfinite(t)) bad_field(path, field, "is not a positive finite number");
        if (k > 0 && !(t > s.sweep_thresholds.back())) bad_field(path, field, "is not above the threshold before it");
        s.sweep_thresholds.push_back(t);
    }
    const uint64_t K = s.sweep_thresholds.size();
    s.sweep_site_level = sweep.bytes<uint8_t>("site_level", SH);
    for (size_t i = 0; i < s.sweep_site_level.size(); ++i)
        if (s.sweep_site_level[i] > K) bad_field(path, "sweep.site_level[" + std::to_string(i) + "]", "is above the number of thresholds");
    s.sweep_dim_positions = sweep.bytes<int64_t>("dim_positions", checked_mul(K, H, path, "sweep.dim_positions"));
}

// The per-sequence records: dims inside [0, hidden), counts non-negative, sweep rows ascending by dim.
void read_per_sequence(const Fields & root, const std::string & path, Statistics & s) {
    const auto H = static_cast<uint64_t>(s.hidden);
    const uint64_t sweep_width = 1 + 3 * s.sweep_thresholds.size();
    const auto & per_sequence = root.array("per_sequence");
    for (size_t q = 0; q < per_sequence.size(); ++q) {
        const Fields f(per_sequence[q], "per_sequence[" + std::to_string(q) + "]", path);
        SequenceStats seq;
        seq.sequence_index = f.integer("sequence_index", 0, INT64_MAX);
        seq.tokens = f.integer("tokens", 0, INT64_MAX);
        seq.sites = static_cast<int32_t>(f.integer("sites", 0, INT32_MAX));
        seq.layers = static_cast<int32_t>(f.integer("layers", 0, INT32_MAX));
        const auto n = static_cast<uint64_t>(f.integer("count", 0, INT64_MAX));
        const auto ints = f.bytes<int32_t>("dims", checked_mul(n, 4, path, f.name("dims")));
        const auto hits = f.bytes<int64_t>("hits", n);
        const auto maxima = f.bytes<float>("max_abs", n);
        for (size_t i = 0; i < n; ++i) {
            // The dim indexes [H]-sized arrays in reports; the counts are denominators' numerators.
            if (ints[4 * i] < 0 || static_cast<uint64_t>(ints[4 * i]) >= H)
                bad_field(path, f.name("dims") + "[" + std::to_string(i) + "]", "holds dim " + std::to_string(ints[4 * i]) + ", outside [0, hidden=" + std::to_string(H) + ")");
            for (int c = 1; c < 4; ++c)
                if (ints[4 * i + static_cast<size_t>(c)] < 0)
                    bad_field(path, f.name("dims") + "[" + std::to_string(i) + "]", "holds a negative count");
            seq.dims.push_back({ints[4 * i], ints[4 * i + 1], ints[4 * i + 2], ints[4 * i + 3], hits[i], maxima[i]});
        }
        if (!s.sweep_thresholds.empty()) {
            const auto m = static_cast<uint64_t>(f.integer("sweep_count", 0, INT64_MAX));
            seq.sweep = f.bytes<int32_t>("sweep", checked_mul(m, sweep_width, path, f.name("sweep")));
            for (size_t i = 0; i < m; ++i) {
                const int32_t * r = seq.sweep.data() + i * sweep_width;
                const std::string field = f.name("sweep") + "[" + std::to_string(i) + "]";
                if (r[0] < 0 || static_cast<uint64_t>(r[0]) >= H || (i > 0 && r[0] <= r[-static_cast<std::ptrdiff_t>(sweep_width)]))
                    bad_field(path, field, "holds dim " + std::to_string(r[0]) + ", outside [0, hidden) or not ascending");
                for (uint64_t c = 1; c < sweep_width; ++c)
                    if (r[c] < 0) bad_field(path, field, "holds a negative count");
            }
        }
        s.per_sequence.push_back(std::move(seq));
    }
}

// The token tallies: per dim (inside [0, hidden)), (token, count) pairs and the batches they cover.
void read_token_hits(const Fields & root, const std::string & path, Statistics & s) {
    const auto H = static_cast<uint64_t>(s.hidden);
    const auto & token_hits = root.array("token_hits");
    for (size_t q = 0; q < token_hits.size(); ++q) {
        const Fields f(token_hits[q], "token_hits[" + std::to_string(q) + "]", path);
        const auto dim = static_cast<int32_t>(f.integer("dim", 0, static_cast<int64_t>(H) - 1));
        const auto n = static_cast<uint64_t>(f.integer("count", 0, INT64_MAX));
        const auto pairs = f.bytes<int64_t>("pairs", checked_mul(n, 2, path, f.name("pairs")));
        auto & m = s.token_hits[dim];
        for (size_t i = 0; i < n; ++i) m[pairs[2 * i]] = pairs[2 * i + 1];
        s.token_hits_batches[dim] = f.integer("batches", 0, INT64_MAX);
    }
}

// Massive activations per layer: the top entries (a token id from version 3 on) and the medians.
void read_massive(const Fields & root, const std::string & path, int64_t version, Statistics & s) {
    const auto H = static_cast<uint64_t>(s.hidden);
    const auto & massive = root.array("massive");
    for (size_t q = 0; q < massive.size(); ++q) {
        const Fields f(massive[q], "massive[" + std::to_string(q) + "]", path);
        MassiveLayer ml;
        ml.layer = static_cast<int>(f.integer("layer", 0, kMaxStatisticsLayer));
        const auto & top = f.array("top");
        for (size_t k = 0; k < top.size(); ++k) {
            const std::string field = f.name("top") + "[" + std::to_string(k) + "]";
            const auto & e = top[k];
            // Version 3 adds the token id (-1: unknown) as a sixth item.
            if (!e.is_array() || e.size() != (version >= 3 ? 6u : 5u))
                bad_field(path, field, version >= 3 ? "is not [abs, sequence, position, dim, median, token]" : "is not [abs, sequence, position, dim, median]");
            ml.top.push_back({float_value(e[0], field + "[0]", path), Fields::integer_value(e[1], field + "[1]", 0, INT64_MAX, path),
                              Fields::integer_value(e[2], field + "[2]", 0, INT64_MAX, path),
                              static_cast<int32_t>(Fields::integer_value(e[3], field + "[3]", 0, static_cast<int64_t>(H) - 1, path)),
                              float_value(e[4], field + "[4]", path),
                              version >= 3 ? Fields::integer_value(e[5], field + "[5]", -1, INT64_MAX, path) : -1});
        }
        const auto & medians = f.array("medians");
        for (size_t k = 0; k < medians.size(); ++k) {
            const std::string field = f.name("medians") + "[" + std::to_string(k) + "]";
            const auto & m = medians[k];
            if (!m.is_array() || m.size() != 2) bad_field(path, field, "is not [sequence, median]");
            ml.medians.emplace_back(Fields::integer_value(m[0], field + "[0]", 0, INT64_MAX, path), float_value(m[1], field + "[1]", path));
        }
        s.massive.push_back(std::move(ml));
    }
}

// Perplexity records (version 2): losses non-negative, bucket tokens adding up to the sequence's.
void read_perplexity(const Fields & root, const std::string & path, Statistics & s) {
    // Losses are non-negative (NaN kept: a diverged model's loss is reported, not refused);
    // a window has at most kMaxStatisticsPositions - 1 of them, so sums of tokens fit int64.
    const Fields ppl(root.at("perplexity"), "perplexity", path);
    const auto & records = ppl.array("sequences");
    s.perplexity = true;
    auto loss = [&](double v, const std::string & field) {
        if (v < 0) bad_field(path, field, "is a negative loss");
        return v;
    };
    for (size_t q = 0; q < records.size(); ++q) {
        const Fields f(records[q], "perplexity.sequences[" + std::to_string(q) + "]", path);
        SequencePerplexity r;
        r.sequence_index = f.integer("sequence_index", 0, INT64_MAX);
        r.tokens = f.integer("tokens", 0, kMaxStatisticsPositions);
        const auto & sum = f.at("nll_sum");
        if (!sum.is_number()) bad_field(path, f.name("nll_sum"), "is not a number");
        r.nll_sum = loss(sum.get<double>(), f.name("nll_sum"));
        const auto n = static_cast<uint64_t>(f.integer("buckets", 0, kMaxPerplexityBuckets));
        r.bucket_nll = f.bytes<double>("bucket_nll", n);
        r.bucket_tokens = f.bytes<int64_t>("bucket_tokens", n);
        int64_t in_buckets = 0;
        for (size_t k = 0; k < n; ++k) {
            loss(r.bucket_nll[k], f.name("bucket_nll") + "[" + std::to_string(k) + "]");
            if (r.bucket_tokens[k] < 0 || r.bucket_tokens[k] > r.tokens)
                bad_field(path, f.name("bucket_tokens") + "[" + std::to_string(k) + "]", "is outside [0, tokens]");
            in_buckets += r.bucket_tokens[k];  // at most 64 x 2^24
        }
        if (in_buckets != r.tokens) bad_field(path, f.name("bucket_tokens"), "do not add up to tokens");
        s.perplexity_sequences.push_back(std::move(r));
    }
    std::sort(s.perplexity_sequences.begin(), s.perplexity_sequences.end(),
              [](const SequencePerplexity & x, const SequencePerplexity & y) { return x.sequence_index < y.sequence_index; });
}

// Per-expert records (version 3): layers ascending, threshold hits at most the expert's tokens.
void read_experts(const Fields & root, const std::string & path, Statistics & s) {
    s.expert_stats = true;
    const auto & layers = root.array("experts");
    for (size_t q = 0; q < layers.size(); ++q) {
        const Fields f(layers[q], "experts[" + std::to_string(q) + "]", path);
        ExpertLayer l;
        l.layer = static_cast<int>(f.integer("layer", 0, kMaxStatisticsLayer));
        if (!s.experts.empty() && l.layer <= s.experts.back().layer) bad_field(path, f.name("layer"), "is not above the layer before it");
        const auto E = static_cast<uint64_t>(f.integer("experts", 0, kMaxStatisticsExperts));
        l.tokens = f.bytes<int64_t>("tokens", E);
        l.max_abs = f.bytes<float>("max_abs", E);
        l.hit_tokens = f.bytes<int64_t>("hit_tokens", E);
        for (size_t e = 0; e < E; ++e)
            if (l.hit_tokens[e] < 0 || l.tokens[e] < 0 || l.hit_tokens[e] > l.tokens[e])
                bad_field(path, f.name("hit_tokens") + "[" + std::to_string(e) + "]", "is negative or above the expert's tokens");
        s.experts.push_back(std::move(l));
    }
}

}  // namespace

Statistics parse_statistics(const std::uint8_t * data, size_t size, const std::string & path) {
    json j = decode_document(data, size, path);
    const Fields root(j, "", path);
    const auto version = root.integer("version", INT64_MIN, INT64_MAX);
    // Version 1 is version 2 without perplexity records, version 2 is 3 without the sweep and
    // expert records: still read.
    if (version < 1 || version > kStatisticsVersion)
        bad(path, "version " + std::to_string(version) + " (this build reads versions 1 to " + std::to_string(kStatisticsVersion) + ")");

    Statistics s;
    read_settings(root, path, s);
    const uint64_t SH = read_sites(root, path, s);
    read_position_map(root, path, s);
    s.sequences = root.integer("sequences", 0, INT64_MAX);
    s.tokens = root.integer("tokens", 0, INT64_MAX);
    s.batches = root.integer("batches", 0, INT64_MAX);
    if (version >= 3 && j.contains("sweep")) read_sweep(root, path, SH, s);
    read_per_sequence(root, path, s);
    read_token_hits(root, path, s);
    read_massive(root, path, version, s);
    if (version >= 2 && j.contains("perplexity")) read_perplexity(root, path, s);
    if (version >= 3 && j.contains("experts")) read_experts(root, path, s);
    // The reports and merges sum these counts: none negative, every total within int64.
    CountTotals totals;
    std::string field;
    if (!count_totals(s, totals, field)) bad_field(path, field, "holds a negative count or counts whose total passes 2^63-1");
    if (j.contains("metadata")) {
        check_metadata(j["metadata"], path);
        s.metadata = j["metadata"];
    }
    return s;
}

}  // namespace analysis
