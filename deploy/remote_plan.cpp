// Remote layout, job script, watchdog config and synthetic tokens (see remote_plan.h).
#include "deploy/remote_plan.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "common/error.h"

namespace deploy {

RemoteLayout remote_layout(const std::string & home, const std::string & run_id, const std::string & cache_dir) {
    RemoteLayout l;
    l.base = home + "/toolkit";
    l.src_dir = l.base + "/src";
    l.run_dir = l.base + "/runs/" + run_id;
    l.input_dir = l.run_dir + "/input";
    l.results_dir = l.run_dir + "/results";
    l.cache_dir = cache_dir.empty() ? home + "/.cache/toolkit" : cache_dir;
    l.heartbeat_file = l.run_dir + "/heartbeat";
    l.watchdog_conf = l.run_dir + "/watchdog.conf";
    return l;
}

std::string remote_job_name(const std::string & role, const std::string & run_id, bool legacy) {
    if (legacy) return role;
    std::string name = role + "-" + run_id;
    if (name.size() > 64)
        throw common::Error::usage("run id '" + run_id.substr(0, 64) + "': too long for the name of its " + role +
                                   " job on the host (at most 64 characters with the role; runs write 20)");
    return name;
}

bool remote_job_of_run(const std::string & name, const std::string & run_id) {
    const std::string suffix = "-" + run_id;
    return !run_id.empty() && name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string remote_job_role(const std::string & name, const std::string & run_id) {
    return remote_job_of_run(name, run_id) ? name.substr(0, name.size() - run_id.size() - 1) : name;
}

std::string input_file_name(const DataConfig & d) {
    if (d.synthetic_vocab) return "tokens.json";
    if (d.hub_rows) return kHubRowsTextFile;  // fetched into RUN_DIR/data/ by the data step
    for (const auto * f : {&d.tokens_file, &d.text_file, &d.jsonl_file})
        if (!f->empty()) return std::filesystem::path(*f).filename().string();
    return "";
}

namespace {
// A number as common::parse_bytes and analyze's flags read it: digits and a decimal point, whatever
// the locale (90, 90.5), and the shortest form that reads back as the same double (an ostream's six
// significant digits cut 0.0612345678 to 0.0612346). The buffer holds any double in fixed notation.
std::string plain_decimal(double v) {
    char buf[512];
    auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
    if (r.ec != std::errc()) throw common::Error::internal("cannot format the number " + std::to_string(v));
    return std::string(buf, r.ptr);
}

// How the reports name the model: the hub id, the local checkpoint's folder, or the fixture (the
// remote directory is always called "model").
std::string report_model_name(const ModelConfig & m) {
    if (!m.hub_id.empty()) return m.hub_id;
    if (!m.local_path.empty()) {
        std::filesystem::path p(m.local_path);
        if (!p.has_filename()) p = p.parent_path();  // "ckpt/" names ckpt
        return p.filename().string();
    }
    if (m.fixture) return m.fixture->family + " fixture";
    return "model";
}
}  // namespace

std::string job_script(const RunConfig & c, const RemoteLayout & l, const std::string & bin_dir, const std::string & model_dir) {
    const auto q = [](const std::string & text) { return common::sh_quote(text); };
    std::ostringstream s;
    s << "#!/bin/sh\n"
      << "# Written by deploy_and_analyze for run " << l.run_dir << "; runs as a bifrost detached job.\n"
      << "set -eu\n"
      << "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True\n"
      << "bin=" << q(bin_dir) << "\n"
      << "run=" << q(l.run_dir) << "\n"
      << "mkdir -p \"$run/results\"\n";
    std::string model = model_dir;
    if (c.model.fixture) {
        const auto & f = *c.model.fixture;
        model = l.run_dir + "/model";
        s << "echo \"job: writing the " << f.family << " fixture checkpoint\"\n"
          << "rm -rf \"$run/model\"\n"
          << "\"$bin/extract\" fixture --family " << q(f.family) << " --out \"$run/model\" --layers " << f.layers
          << " --hidden " << f.hidden << " --seed " << f.seed;
        for (const auto & p : f.plants) s << " --plant " << q(p);
        s << "\n";
    }
    const auto & d = c.data;
    std::string input = l.input_dir + "/" + input_file_name(d);
    // Hub rows travel as one text (documents joined with a space, as the predecessor tokenized them).
    std::string input_flag = d.synthetic_vocab || !d.tokens_file.empty()     ? "--tokens"
                             : !d.text_file.empty() || d.hub_rows.has_value() ? "--text"
                                                                               : "--jsonl";
    // GPU runs let extract place the model on the GPUs the readiness check verified (--device auto
    // falls back to the CPU on a GPU-less instance, as in the emulator tests).
    const bool gpu = c.resources.gpu_count > 0;
    // The fused pass: `analyze extract` runs the extractor's own command line with the streaming
    // accumulators as a sink, so captures stay on the device and no activation touches the disk.
    // --checkpoint-every keeps partial statistics in results/ if the run dies; salvage pulls them.
    // The model's own parameter figures (total and active per token, config.json and weight
    // headers only) next to the analysis: the sweep's combined report reads them from here.
    s << "\"$bin/extract\" inspect " << q(model) << " --json > \"$run/results/inspect.json\" || "
      << "echo \"job: extract inspect failed; the results have no parameter figures\"\n";
    s << "echo \"job: extract + analyze (fused)\"\n"
      << "\"$bin/analyze\" extract -o \"$run/results/analysis\" --mode " << q(c.analysis.mode) << " --threshold "
      << plain_decimal(c.analysis.threshold);
    // The fractions only when the config sets its own (analyze's defaults are the modes' criteria),
    // written exactly (shortest round trip) so analyze compares the very value the config holds.
    const AnalysisConfig defaults;
    if (c.analysis.layer_fraction != defaults.layer_fraction) s << " --layer-fraction " << plain_decimal(c.analysis.layer_fraction);
    if (c.analysis.position_fraction != defaults.position_fraction) s << " --position-fraction " << plain_decimal(c.analysis.position_fraction);
    s << " --checkpoint-every 10 --model-name " << q(report_model_name(c.model));
    // Issue 14's statistics (analysis.thresholds, expert_stats, perplexity): numbers and flags only.
    std::string thresholds;
    for (double t : c.analysis.thresholds) thresholds += (thresholds.empty() ? "" : ",") + plain_decimal(t);
    s << " --thresholds " << q(thresholds.empty() ? "none" : thresholds);
    if (c.analysis.expert_stats) s << " --expert-stats";
    s << " -- run " << q(model) << " " << input_flag << " " << q(input);
    if (c.analysis.perplexity) s << " --perplexity";
    if (!d.jsonl_file.empty()) s << " --text-field " << q(d.text_field);
    s << " --seq-len " << d.sequence_length << " --num-sequences " << d.num_sequences << " --batch-size " << d.batch_size
      << " --overlap " << d.overlap << " --dtype " << q(c.model.dtype) << " --device " << (gpu ? "auto" : "cpu");
    // resources.offload_gb: the layers that do not fit the GPUs stay in pinned host memory, at most
    // this much, and are streamed to the last GPU (extract's placement; without cpu= it refuses them).
    if (gpu && c.resources.offload_gb > 0) s << " --max-memory " << q("cpu=" + plain_decimal(c.resources.offload_gb) + "GB");
    if (!c.capture.layers.empty()) s << " --layers " << q(c.capture.layers);
    std::string sites;
    for (const auto & site : c.capture.sites) sites += (sites.empty() ? "" : ",") + site;
    s << " --sites " << q(sites) << "\n"
      << "echo \"job: done\"\n";
    return s.str();
}

namespace {

bool all_of_chars(const std::string & text, bool (*ok)(unsigned char)) {
    return !text.empty() && std::all_of(text.begin(), text.end(), [ok](char c) { return ok(static_cast<unsigned char>(c)); });
}
bool upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
bool env_char(unsigned char c) { return std::isalnum(c) || c == '_'; }
bool url_char(unsigned char c) { return c > 0x20 && c < 0x7f; }  // printable, no space: percent-encoded already
bool header_name_char(unsigned char c) { return std::isalnum(c) || c == '-'; }

// The request is broker's, but it becomes a curl header file and argument on the instance: refuse
// anything that could turn into a second header or an option rather than trusting it.
void check_request(const broker::SelfEndRequest & r) {
    auto bad = [](const std::string & what) {
        return common::Error::internal("watchdog: the terminate request's " + what + " cannot be sent as it is");
    };
    if (!all_of_chars(r.call.method, upper)) throw bad("method");
    if (!all_of_chars(r.call.url, url_char) || !(r.call.url.rfind("https://", 0) == 0 || r.call.url.rfind("http://", 0) == 0))
        throw bad("URL");
    for (const auto & [name, value] : r.call.headers)
        if (!all_of_chars(name, header_name_char) || value.find_first_of("\r\n") != std::string::npos) throw bad("header " + name);
    if (!all_of_chars(r.credential_env, env_char) || std::isdigit(static_cast<unsigned char>(r.credential_env[0])))
        throw bad("key variable");
    if (r.failure_marker.find_first_of("\r\n") != std::string::npos) throw bad("failure marker");
}

}  // namespace

std::string watchdog_config(const WatchdogSettings & w, const RemoteLayout & l) {
    std::ostringstream s;
    s << "ACTION=" << common::sh_quote(w.action) << "\n"
      << "INSTANCE_ID=" << common::sh_quote(w.instance_id) << "\n"
      << "DEADLINE_UNIX=" << static_cast<long long>(std::floor(w.deadline_unix)) << "\n"
      << "HEARTBEAT_FILE=" << common::sh_quote(l.heartbeat_file) << "\n"
      << "HEARTBEAT_TIMEOUT_S=" << static_cast<long long>(std::ceil(w.heartbeat_timeout_s)) << "\n"
      << "TICK_S=" << w.tick_s << "\n";
    if (!w.terminate_command.empty()) s << "TERMINATE_COMMAND=" << common::sh_quote(w.terminate_command) << "\n";
    if (w.action == "request") {
        check_request(w.request);
        std::string headers, gone;
        for (const auto & [name, value] : w.request.call.headers) headers += (headers.empty() ? "" : "\n") + name + ": " + value;
        for (long code : w.request.gone_statuses) gone += (gone.empty() ? "" : " ") + std::to_string(code);
        s << "REQUEST_METHOD=" << common::sh_quote(w.request.call.method) << "\n"
          << "REQUEST_URL=" << common::sh_quote(w.request.call.url) << "\n"
          << "REQUEST_HEADERS=" << common::sh_quote(headers) << "\n"
          << "REQUEST_BODY=" << common::sh_quote(w.request.call.body) << "\n"
          << "REQUEST_KEY_ENV=" << common::sh_quote(w.request.credential_env) << "\n"
          << "REQUEST_FAILURE_MARKER=" << common::sh_quote(w.request.failure_marker) << "\n"
          << "REQUEST_GONE_STATUSES=" << common::sh_quote(gone) << "\n";
    }
    if (w.disarmed) s << "DISARMED=1\n";
    return s.str();
}

std::string synthetic_tokens_json(int64_t vocab, int64_t sequences, int64_t seq_len, uint64_t seed) {
    // splitmix64: the same ids on every platform (std:: distributions are implementation-defined).
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    auto next = [&x]() {
        uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    };
    std::ostringstream s;
    s << "[";
    for (int64_t i = 0; i < sequences; ++i) {
        s << (i ? ",\n[" : "[");
        for (int64_t t = 0; t < seq_len; ++t) s << (t ? "," : "") << next() % static_cast<uint64_t>(vocab);
        s << "]";
    }
    s << "]\n";
    return s.str();
}

}  // namespace deploy
