// CBOR statistics files. Every array's length is checked against the header fields on load, so a
// truncated or hand-edited file is refused with its name rather than read out of bounds.
#include "analysis/stats_file.h"

#include "common/error.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

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

template <typename T>
std::vector<T> array_of(const json & j, const char * key, size_t expected, const std::string & path) {
    if (!j.contains(key) || !j.at(key).is_binary()) bad(path, std::string("missing byte array '") + key + "'");
    const auto & raw = j.at(key).get_binary();
    if (raw.size() != expected * sizeof(T))
        bad(path, std::string("array '") + key + "' has " + std::to_string(raw.size()) + " bytes, expected " +
                      std::to_string(expected * sizeof(T)));
    std::vector<T> out(expected);
    if (expected) std::memcpy(out.data(), raw.data(), raw.size());
    return out;
}

template <typename T>
T field(const json & j, const char * key, const std::string & path) {
    try {
        return j.at(key).get<T>();
    } catch (const json::exception &) {
        bad(path, std::string("missing or mistyped field '") + key + "'");
    }
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
        j["per_sequence"].push_back({{"sequence_index", seq.sequence_index}, {"tokens", seq.tokens},
                                     {"sites", seq.sites}, {"layers", seq.layers}, {"count", seq.dims.size()},
                                     {"dims", bytes_of(ints)}, {"hits", bytes_of(hits)}, {"max_abs", bytes_of(maxima)}});
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
            top.push_back({e.abs_value, e.sequence_index, e.position, e.dim, e.sequence_median_abs});
        for (const auto & [seq, m] : l.medians) medians.push_back({seq, m});
        j["massive"].push_back({{"layer", l.layer}, {"top", top}, {"medians", medians}});
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
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        if (errno == ENOENT) throw common::Error::not_found(path, "no such statistics file").with("file", path);
        throw common::Error::io(path, "cannot open statistics file", errno);
    }
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    json j;
    try {
        j = json::from_cbor(bytes);
    } catch (const json::exception & e) {
        bad(path, std::string("not CBOR (") + e.what() + ")");
    }
    if (!j.is_object() || j.value("format", std::string()) != kStatisticsFormat) bad(path, "no '" + std::string(kStatisticsFormat) + "' format tag");
    const int version = field<int>(j, "version", path);
    if (version != kStatisticsVersion)
        bad(path, "version " + std::to_string(version) + " (this build reads version " + std::to_string(kStatisticsVersion) + ")");

    Statistics s;
    s.threshold = field<double>(j, "threshold", path);
    s.round_bf16 = field<bool>(j, "round_bf16", path);
    s.hidden = field<int64_t>(j, "hidden", path);
    if (s.hidden < 0) bad(path, "negative hidden size");
    const auto & hist = j.at("histogram");
    s.histogram_spec.log2_min = field<double>(hist, "log2_min", path);
    s.histogram_spec.bins_per_octave = field<int>(hist, "bins_per_octave", path);
    s.histogram_spec.bins = field<int>(hist, "bins", path);
    if (s.histogram_spec.bins < 0) bad(path, "negative histogram size");
    s.massive_top_k = field<int>(j, "massive_top_k", path);
    s.token_dims_per_batch = field<int>(j, "token_dims_per_batch", path);
    try {
        for (const auto & site : j.at("sites")) s.sites.push_back({site.at(0).get<int>(), site.at(1).get<std::string>()});
    } catch (const json::exception &) {
        bad(path, "malformed 'sites'");
    }
    const auto S = s.sites.size();
    const auto H = static_cast<size_t>(s.hidden);
    s.site_hits = array_of<int64_t>(j, "site_hits", S * H, path);
    s.site_max_abs = array_of<float>(j, "site_max_abs", S * H, path);
    s.site_elements = field<std::vector<int64_t>>(j, "site_elements", path);
    s.site_sequences = field<std::vector<int64_t>>(j, "site_sequences", path);
    if (s.site_elements.size() != S || s.site_sequences.size() != S) bad(path, "per-site arrays do not match the site list");
    s.site_histogram = array_of<int64_t>(j, "site_histogram", S * static_cast<size_t>(s.histogram_spec.bins), path);
    s.max_positions = field<int64_t>(j, "max_positions", path);
    if (s.max_positions < 0) bad(path, "negative position count");
    const auto pdims = field<std::vector<int32_t>>(j, "position_dims", path);
    const auto T = static_cast<size_t>(s.max_positions);
    const auto pdata = array_of<int32_t>(j, "position_hits", pdims.size() * T, path);
    s.position_hits.assign(T * H, 0);
    for (size_t k = 0; k < pdims.size(); ++k) {
        if (pdims[k] < 0 || static_cast<size_t>(pdims[k]) >= H) bad(path, "position map dim out of range");
        for (size_t t = 0; t < T; ++t) s.position_hits[t * H + static_cast<size_t>(pdims[k])] = pdata[k * T + t];
    }
    s.sequences = field<int64_t>(j, "sequences", path);
    s.tokens = field<int64_t>(j, "tokens", path);
    s.batches = field<int64_t>(j, "batches", path);
    try {
        for (const auto & q : j.at("per_sequence")) {
            SequenceStats seq;
            seq.sequence_index = q.at("sequence_index").get<int64_t>();
            seq.tokens = q.at("tokens").get<int64_t>();
            seq.sites = q.at("sites").get<int32_t>();
            seq.layers = q.at("layers").get<int32_t>();
            const auto n = q.at("count").get<size_t>();
            const auto ints = array_of<int32_t>(q, "dims", 4 * n, path);
            const auto hits = array_of<int64_t>(q, "hits", n, path);
            const auto maxima = array_of<float>(q, "max_abs", n, path);
            for (size_t i = 0; i < n; ++i)
                seq.dims.push_back({ints[4 * i], ints[4 * i + 1], ints[4 * i + 2], ints[4 * i + 3], hits[i], maxima[i]});
            s.per_sequence.push_back(std::move(seq));
        }
        for (const auto & t : j.at("token_hits")) {
            const auto dim = t.at("dim").get<int32_t>();
            const auto n = t.at("count").get<size_t>();
            const auto pairs = array_of<int64_t>(t, "pairs", 2 * n, path);
            auto & m = s.token_hits[dim];
            for (size_t i = 0; i < n; ++i) m[pairs[2 * i]] = pairs[2 * i + 1];
            s.token_hits_batches[dim] = t.at("batches").get<int64_t>();
        }
        for (const auto & l : j.at("massive")) {
            MassiveLayer ml;
            ml.layer = l.at("layer").get<int>();
            for (const auto & e : l.at("top"))
                ml.top.push_back({e.at(0).get<float>(), e.at(1).get<int64_t>(), e.at(2).get<int64_t>(),
                                  e.at(3).get<int32_t>(), e.at(4).get<float>()});
            for (const auto & m : l.at("medians")) ml.medians.emplace_back(m.at(0).get<int64_t>(), m.at(1).get<float>());
            s.massive.push_back(std::move(ml));
        }
    } catch (const json::exception & e) {
        bad(path, std::string("malformed record (") + e.what() + ")");
    }
    s.metadata = j.value("metadata", json::object());
    return s;
}

}  // namespace analysis
