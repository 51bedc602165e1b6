// Remote plan: quoting, the job script (checked by sh -n and run against fake binaries), the
// watchdog config, and the real watchdog.sh ending an "instance" when heartbeats stop; the real
// fetch_model.sh against a Hub stand-in, and the flow's estimate step refusing a layer range
// against the config.json it fetched from there.
#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/output.h"
#include "common/subprocess.h"
#include "deploy/flow.h"
#include "deploy/local_report.h"
#include "deploy/remote_plan.h"
#include "deploy/run_dir.h"
#include "deploy/run_config.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;

TEST_CASE("remote plan: the rehearsal job writes the fixture, extracts, analyses, in that order") {
    auto cfg = deploy::rehearsal_defaults();
    auto l = deploy::remote_layout("/home/u", "r1", "");
    CHECK(l.cache_dir == "/home/u/.cache/toolkit");
    CHECK(l.run_dir == "/home/u/toolkit/runs/r1");
    std::string job = deploy::job_script(cfg, l, "/c/bin", "");
    auto fx = job.find("extract\" fixture --family 'olmoe'");
    auto an = job.find("analyze\" extract -o \"$run/results/analysis\" --mode 'both'");
    auto ex = job.find("-- run '/home/u/toolkit/runs/r1/model' --tokens '/home/u/toolkit/runs/r1/input/tokens.json'");
    REQUIRE(fx != std::string::npos);
    REQUIRE(ex != std::string::npos);
    REQUIRE(an != std::string::npos);
    CHECK(fx < an);
    CHECK(an < ex);
    CHECK(job.find("--plant '7,42@0-3'") != std::string::npos);
    CHECK(job.find("--device cpu") != std::string::npos);
    CHECK(job.find("--checkpoint-every") != std::string::npos);
    CHECK(job.find("--model-name 'olmoe fixture' --thresholds") != std::string::npos);  // not the remote dir's "model"
    CHECK(common::run_process({"sh", "-n", "-c", job}).exit_code == 0);
}

TEST_CASE("remote plan: analysis.perplexity, expert_stats and thresholds reach the remote analyze and extract flags") {
    auto l = deploy::remote_layout("/home/u", "r1", "");
    auto cfg = deploy::rehearsal_defaults();
    // Defaults: the 7-threshold sweep, neither perplexity nor expert statistics.
    std::string job = deploy::job_script(cfg, l, "/c/bin", "");
    CHECK(job.find("--thresholds '3,4,5,6,8,10,20' -- run") != std::string::npos);
    CHECK(job.find("--expert-stats") == std::string::npos);
    CHECK(job.find("--perplexity") == std::string::npos);
    cfg = deploy::parse_run_config(
        "model:\n  fixture: {family: olmoe}\ndata:\n  synthetic_tokens: {vocab: 100}\n"
        "analysis:\n  perplexity: true\n  expert_stats: true\n  thresholds: [2.5, 6, 12]\n");
    deploy::validate(cfg);
    CHECK(cfg.analysis.thresholds == std::vector<double>{2.5, 6, 12});
    job = deploy::job_script(cfg, l, "/c/bin", "");
    const auto an = job.find("--thresholds '2.5,6,12' --expert-stats -- run");
    const auto ppl = job.find(" --perplexity");
    REQUIRE(an != std::string::npos);
    REQUIRE(ppl != std::string::npos);
    CHECK(an < ppl);  // --perplexity is extract's flag: after the --
    CHECK(common::run_process({"sh", "-n", "-c", job}).exit_code == 0);
    // The keys survive the run directory's config.json (a --resume plans the same job).
    const auto back = deploy::config_from_json(deploy::config_to_json(cfg));
    CHECK(back.analysis.perplexity);
    CHECK(back.analysis.expert_stats);
    CHECK(back.analysis.thresholds == cfg.analysis.thresholds);
    // No sweep, and bad lists named by their key.
    cfg = deploy::parse_run_config("model:\n  fixture: {family: olmoe}\ndata:\n  synthetic_tokens: {vocab: 100}\nanalysis:\n  thresholds: []\n");
    CHECK(deploy::job_script(cfg, l, "/c/bin", "").find("--thresholds 'none'") != std::string::npos);
    for (const std::string bad : {"[6, 3]", "[0, 3]", "[3, 3]", "6", "[x]"}) {
        CAPTURE(bad);
        try {
            deploy::parse_run_config("model:\n  fixture: {family: olmoe}\ndata:\n  synthetic_tokens: {vocab: 100}\nanalysis:\n  thresholds: " + bad + "\n");
            FAIL("accepted");
        } catch (const common::Error & e) {
            CHECK(std::string(e.what()).find("thresholds") != std::string::npos);
        }
    }
}

TEST_CASE("pull: plots missing from the results are redrawn by the local analyze, present ones are left alone") {
    tests::TempDir dir;
    fs::create_directories(dir / "results/analysis");
    tests::write_file(dir / "results/analysis/outliers.json", "{}");
    // A stand-in analyze: records its arguments and draws one plot beside the result.
    tests::write_file(dir / "analyze", "#!/bin/sh\necho \"$@\" >> " + dir.path() + "/calls\nmkdir -p \"$(dirname \"$2\")/plots\"\n"
                                       "echo png > \"$(dirname \"$2\")/plots/outliers_heatmap.png\"\n");
    fs::permissions(dir / "analyze", fs::perms::owner_all);
    const std::string outliers = dir / "results/analysis/outliers.json";
    CHECK_FALSE(deploy::redraw_missing_plots(outliers, ""));  // no program: a warning, not a failure
    CHECK_FALSE(fs::exists(dir / "calls"));
    CHECK(deploy::redraw_missing_plots(outliers, dir / "analyze"));
    CHECK(tests::read_file(dir / "calls") == "report " + outliers + " -q\n");
    CHECK(deploy::redraw_missing_plots(outliers, dir / "analyze"));  // drawn: not run again
    CHECK(tests::read_file(dir / "calls") == "report " + outliers + " -q\n");
    // A failing analyze is a warning too.
    tests::write_file(dir / "bad", "#!/bin/sh\nexit 3\n");
    fs::permissions(dir / "bad", fs::perms::owner_all);
    fs::remove_all(dir / "results/analysis/plots");
    CHECK_FALSE(deploy::redraw_missing_plots(outliers, dir / "bad"));
}

TEST_CASE("remote plan: the job stops at the first failing program (set -e)") {
    tests::TempDir dir;
    fs::create_directories(dir / "bin");
    // Fake programs: writing the fixture fails, so the fused pass must never start.
    tests::write_file(dir / "bin/extract", "#!/bin/sh\necho \"extract $1\" >> " + dir.path() + "/calls\n[ \"$1\" = fixture ] && exit 3\nexit 0\n");
    tests::write_file(dir / "bin/analyze", "#!/bin/sh\necho analyze >> " + dir.path() + "/calls\n");
    fs::permissions(dir / "bin/extract", fs::perms::owner_all);
    fs::permissions(dir / "bin/analyze", fs::perms::owner_all);
    auto cfg = deploy::rehearsal_defaults();
    auto l = deploy::remote_layout(dir.path(), "r1", "");
    auto r = common::run_process({"sh", "-c", deploy::job_script(cfg, l, dir / "bin", "")});
    CHECK(r.exit_code == 3);
    CHECK(tests::read_file(dir / "calls") == "extract fixture\n");
    CHECK(r.out.find("job: done") == std::string::npos);
}

TEST_CASE("remote plan: a hub model on GPUs uses the fetched checkpoint and the jsonl field") {
    auto cfg = deploy::parse_run_config("model:\n  hub: Qwen/Qwen3-30B-A3B\ndata:\n  synthetic_tokens: {vocab: 10}\n");
    cfg.data.synthetic_vocab.reset();
    cfg.data.jsonl_file = "/x/docs.jsonl";
    cfg.data.text_field = "content";
    cfg.resources.gpu_count = 2;
    cfg.capture.layers = "0-3";
    auto l = deploy::remote_layout("/root", "r2", "/cache");
    std::string job = deploy::job_script(cfg, l, "/cache/b/bin", "/cache/models/Qwen--Qwen3-30B-A3B/main");
    CHECK(job.find("fixture") == std::string::npos);
    CHECK(job.find("-- run '/cache/models/Qwen--Qwen3-30B-A3B/main' --jsonl '/root/toolkit/runs/r2/input/docs.jsonl' --text-field 'content'") != std::string::npos);
    CHECK(job.find("--device auto") != std::string::npos);
    CHECK(job.find("--layers '0-3'") != std::string::npos);
    CHECK(job.find("$bin/analyze\" extract") != std::string::npos);
    CHECK(job.find("--model-name 'Qwen/Qwen3-30B-A3B'") != std::string::npos);
}

TEST_CASE("remote plan: resources.offload_gb passes --max-memory cpu=SIZE to extract run on GPUs, and nothing without it") {
    auto cfg = deploy::parse_run_config("model:\n  hub: zai-org/GLM-4.5-Air\ndata:\n  synthetic_tokens: {vocab: 10}\n"
                                        "resources:\n  gpu_count: 1\n");
    auto l = deploy::remote_layout("/root", "r3", "/cache");
    const std::string model = "/cache/models/zai-org--GLM-4.5-Air/main";
    std::string job = deploy::job_script(cfg, l, "/cache/b/bin", model);
    CHECK(job.find("--max-memory") == std::string::npos);  // offload_gb 0: extract's placement as before
    cfg.resources.offload_gb = 90;
    deploy::validate(cfg);
    job = deploy::job_script(cfg, l, "/cache/b/bin", model);
    CHECK(job.find(" --device auto --max-memory 'cpu=90GB'") != std::string::npos);
    CHECK(job.find("--max-memory") > job.find(" -- run "));  // an extract run flag, not analyze's
    CHECK(common::run_process({"sh", "-n", "-c", job}).exit_code == 0);
    // A fraction and a large value in plain decimals, as common::parse_bytes reads them.
    cfg.resources.offload_gb = 40.5;
    CHECK(deploy::job_script(cfg, l, "/cache/b/bin", model).find("--max-memory 'cpu=40.5GB'") != std::string::npos);
    cfg.resources.offload_gb = 1000000;
    CHECK(deploy::job_script(cfg, l, "/cache/b/bin", model).find("--max-memory 'cpu=1000000GB'") != std::string::npos);
    // On a CPU (validate refuses offload there; the script adds nothing either way).
    cfg.resources.gpu_count = 0;
    CHECK(deploy::job_script(cfg, l, "/cache/b/bin", model).find("--max-memory") == std::string::npos);
}

TEST_CASE("remote plan: synthetic tokens are deterministic, in range, and the right shape") {
    auto a = nlohmann::json::parse(deploy::synthetic_tokens_json(100, 3, 7, 5));
    auto b = nlohmann::json::parse(deploy::synthetic_tokens_json(100, 3, 7, 5));
    auto c = nlohmann::json::parse(deploy::synthetic_tokens_json(100, 3, 7, 6));
    CHECK(a == b);
    CHECK(a != c);
    REQUIRE(a.size() == 3);
    for (const auto & seq : a) {
        CHECK(seq.size() == 7);
        for (const auto & id : seq) CHECK((id.get<int64_t>() >= 0 && id.get<int64_t>() < 100));
    }
}

namespace {

std::string watchdog_script() { return std::string(TOOLKIT_SOURCE_DIR) + "/deploy/remote/watchdog.sh"; }

bool wait_for_file(const std::string & path, std::chrono::seconds budget) {
    auto end = std::chrono::steady_clock::now() + budget;
    while (std::chrono::steady_clock::now() < end) {
        if (fs::exists(path)) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return fs::exists(path);
}

}  // namespace

TEST_CASE("watchdog: terminates when heartbeats stop, not while they come") {
    tests::TempDir dir;
    auto l = deploy::remote_layout(dir.path(), "r", "");
    fs::create_directories(l.run_dir);
    deploy::WatchdogSettings w;
    w.action = "command";
    w.terminate_command = "touch " + common::sh_quote(dir / "terminated");
    w.heartbeat_timeout_s = 3;
    w.tick_s = 1;
    tests::write_file(l.watchdog_conf, deploy::watchdog_config(w, l));
    auto wd = common::ChildProcess::spawn({"sh", watchdog_script(), l.watchdog_conf}, {.stdout_path = dir / "wd.log"});
    // Heartbeats for ~4 s (longer than the timeout): no termination.
    for (int i = 0; i < 8; ++i) {
        tests::write_file(l.heartbeat_file, "");
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    CHECK_FALSE(fs::exists(dir / "terminated"));
    // Then silence: it must act within timeout + a tick or two.
    CHECK(wait_for_file(dir / "terminated", std::chrono::seconds(8)));
    CHECK(wd.wait_for(std::chrono::milliseconds(3000)).value_or(-1) == 0);
    CHECK(tests::read_file(dir / "wd.log").find("no heartbeat") != std::string::npos);
}

TEST_CASE("watchdog: the deadline ends the instance even with fresh heartbeats, disarm stops it") {
    tests::TempDir dir;
    auto l = deploy::remote_layout(dir.path(), "r", "");
    fs::create_directories(l.run_dir);
    deploy::WatchdogSettings w;
    w.action = "command";
    w.terminate_command = "touch " + common::sh_quote(dir / "terminated");
    w.heartbeat_timeout_s = 600;
    w.tick_s = 1;
    w.deadline_unix = static_cast<double>(std::time(nullptr)) + 2;
    tests::write_file(l.heartbeat_file, "");
    tests::write_file(l.watchdog_conf, deploy::watchdog_config(w, l));
    auto wd = common::ChildProcess::spawn({"sh", watchdog_script(), l.watchdog_conf}, {.stdout_path = dir / "wd.log"});
    CHECK(wait_for_file(dir / "terminated", std::chrono::seconds(6)));
    CHECK(tests::read_file(dir / "wd.log").find("deadline") != std::string::npos);

    fs::remove(dir / "terminated");
    w.disarmed = true;
    tests::write_file(l.watchdog_conf, deploy::watchdog_config(w, l));
    auto wd2 = common::ChildProcess::spawn({"sh", watchdog_script(), l.watchdog_conf}, {.stdout_path = dir / "wd2.log"});
    CHECK(wd2.wait_for(std::chrono::milliseconds(3000)).value_or(-1) == 0);
    CHECK_FALSE(fs::exists(dir / "terminated"));
}

namespace {

// A Hub stand-in on 127.0.0.1: serves <root>/<owner>/<name>/resolve/<rev>/<file>, answers 429 to the
// first request for any file whose name contains "flaky", requires "Authorization: Bearer <token>"
// when `token` is set, and logs each request line (with its Authorization header) to <root>.log.
struct FakeHub {
    tests::TempDir dir{"fake-hub"};
    common::ChildProcess server;
    int port = 0;
    explicit FakeHub(const std::string & token) {
        tests::write_file(dir / "server.py", R"PY(
import http.server, os, sys, time
root, token, logf = sys.argv[1], sys.argv[2], sys.argv[3]
seen = set()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(logf, "a") as f: f.write(self.path + " " + str(self.headers.get("Authorization")) + "\n")
        if token and self.headers.get("Authorization") != "Bearer " + token:
            self.send_response(401); self.end_headers(); return
        if "flaky" in self.path and self.path not in seen:
            seen.add(self.path); self.send_response(429); self.send_header("Retry-After", "1"); self.end_headers(); return
        p = os.path.join(root, self.path.lstrip("/"))
        if not os.path.isfile(p):
            self.send_response(404); self.end_headers(); return
        data = open(p, "rb").read()
        start = 0
        rng = self.headers.get("Range")  # curl -C - resumes with "bytes=N-"
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                self.send_response(416); self.end_headers(); return
        body = data[start:]
        self.send_response(206 if start else 200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        if "slow" in self.path:  # sent in pieces, so that concurrent fetches overlap
            step = max(1, len(body) // 8)
            for i in range(0, len(body), step):
                self.wfile.write(body[i:i + step]); self.wfile.flush(); time.sleep(0.1)
        else:
            self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
)PY");
        fs::create_directories(dir / "root");
        server = common::ChildProcess::spawn({"python3", dir / "server.py", dir / "root", token, dir / "requests.log"},
                                             {.stdout_path = dir / "port"});
        for (int i = 0; i < 100 && port == 0; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            std::string p = tests::read_file(dir / "port");
            if (!p.empty() && p.back() == '\n') port = std::stoi(p);
        }
        REQUIRE(port > 0);
    }
    void put(const std::string & rel, const std::string & body) {
        fs::create_directories(fs::path(dir / ("root/" + rel)).parent_path());
        tests::write_file(dir / ("root/" + rel), body);
    }
    std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port); }
};

std::string fetch_script() { return std::string(TOOLKIT_SOURCE_DIR) + "/deploy/remote/fetch_model.sh"; }

}  // namespace

TEST_CASE("fetch_model.sh: sharded checkpoint with a token, retried 429, cached re-run, token never in output") {
    const std::string token = "hf_secrettoken123";
    FakeHub hub(token);
    const std::string base = "org/model/resolve/main/";
    hub.put(base + "config.json", R"({"model_type":"llama"})");
    hub.put(base + "tokenizer.json", "{}");
    hub.put(base + "model.safetensors.index.json",
            R"({"metadata":{},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002-flaky.safetensors","c.weight":"model-00001-of-00002.safetensors"}})");
    hub.put(base + "model-00001-of-00002.safetensors", "AAAA");
    hub.put(base + "model-00002-of-00002-flaky.safetensors", "BBBB");
    tests::TempDir cache;
    common::RunOptions o;
    o.extra_env = {"HF_TOKEN=" + token, "HF_ENDPOINT=" + hub.endpoint()};
    o.timeout = std::chrono::milliseconds(60000);
    auto r = common::run_process({"sh", fetch_script(), "org/model", "main", cache.path()}, o);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string dir = cache / "models/org--model/main";
    CHECK(r.out == "model_dir=" + dir + "\n");
    CHECK(tests::read_file(dir + "/model-00001-of-00002.safetensors") == "AAAA");
    CHECK(tests::read_file(dir + "/model-00002-of-00002-flaky.safetensors") == "BBBB");
    CHECK(fs::exists(dir + "/.complete"));
    CHECK(r.err.find(token) == std::string::npos);
    CHECK(r.out.find(token) == std::string::npos);
    std::string log = tests::read_file(hub.dir / "requests.log");
    CHECK(log.find("Bearer " + token) != std::string::npos);  // the header did reach the server
    // A second run is served from the cache: no new requests.
    auto before = log.size();
    auto again = common::run_process({"sh", fetch_script(), "org/model", "main", cache.path()}, o);
    CHECK(again.exit_code == 0);
    CHECK(tests::read_file(hub.dir / "requests.log").size() == before);
}

TEST_CASE("fetch_model.sh: typed exits for a missing repo (9) and a refused token (3)") {
    FakeHub hub("right-token");
    hub.put("org/model/resolve/main/config.json", "{}");
    tests::TempDir cache;
    common::RunOptions o;
    o.timeout = std::chrono::milliseconds(60000);
    o.extra_env = {"HF_TOKEN=right-token", "HF_ENDPOINT=" + hub.endpoint()};
    auto missing = common::run_process({"sh", fetch_script(), "org/nothing", "main", cache.path()}, o);
    CHECK(missing.exit_code == 9);
    CHECK(missing.err.find("not found") != std::string::npos);
    o.extra_env = {"HF_TOKEN=wrong-token", "HF_ENDPOINT=" + hub.endpoint()};
    auto refused = common::run_process({"sh", fetch_script(), "org/model", "main", cache.path()}, o);
    CHECK(refused.exit_code == 3);
    CHECK(refused.err.find("gated or private") != std::string::npos);
    CHECK(refused.err.find("wrong-token") == std::string::npos);
}

TEST_CASE("fetch_model.sh: two runs fetching one model at once both end with the whole checkpoint") {
    // Sweep members on one host (local provider, a Slurm work dir) share the model cache. Without
    // a lock both curls resume into the same .part file and the loser's mv finds it gone.
    FakeHub hub("");
    const std::string base = "org/model/resolve/main/";
    hub.put(base + "config.json", R"({"model_type":"llama"})");
    std::string blob;
    for (int i = 0; i < 4096; ++i) blob += static_cast<char>('a' + i % 26);
    hub.put(base + "model-slow.safetensors", blob);
    hub.put(base + "model.safetensors.index.json", R"({"weight_map":{"w":"model-slow.safetensors"}})");
    tests::TempDir cache;
    std::vector<common::ChildProcess> runs;
    for (int i = 0; i < 3; ++i)
        runs.push_back(common::ChildProcess::spawn(
            {"env", "HF_ENDPOINT=" + hub.endpoint(), "sh", fetch_script(), "org/model", "main", cache.path()},
            {.stdout_path = cache / ("out" + std::to_string(i)), .stderr_path = cache / ("err" + std::to_string(i))}));
    for (int i = 0; i < 3; ++i) {
        auto rc = runs[i].wait_for(std::chrono::seconds(60));
        INFO(tests::read_file(cache / ("err" + std::to_string(i))));
        CHECK(rc.value_or(-1) == 0);
    }
    CHECK(tests::read_file(cache / "models/org--model/main/model-slow.safetensors") == blob);
}

TEST_CASE("fetch_model.sh: an index naming a shard outside the model folder is refused, nothing written there") {
    FakeHub hub("");
    const std::string base = "org/model/resolve/main/";
    hub.put(base + "config.json", "{}");
    hub.put(base + "model.safetensors.index.json", R"({"weight_map":{"w":"../../evil.safetensors"}})");
    hub.put("org/model/evil.safetensors", "EVIL");  // where curl's URL normalisation lands the request
    tests::TempDir cache;
    common::RunOptions o;
    o.timeout = std::chrono::milliseconds(60000);
    o.extra_env = {"HF_ENDPOINT=" + hub.endpoint()};
    auto r = common::run_process({"sh", fetch_script(), "org/model", "main", cache.path()}, o);
    CHECK(r.exit_code == 6);
    CHECK(r.err.find("../../evil.safetensors") != std::string::npos);
    CHECK_FALSE(fs::exists(cache / "models/evil.safetensors"));
    CHECK_FALSE(fs::exists(cache / "models/org--model/evil.safetensors"));
}

namespace {

// A new run of org/model, a tiny llama whose config.json `hub` serves, on the local provider with one
// GPU (this machine offers none: the offers step ends it, after the estimate); `yaml_tail` follows
// the resources map (indented: more resources keys; else other sections). The run directory is
// dir/run; returns the exit code.
int run_tiny_hub_model(FakeHub & hub, const tests::TempDir & dir, const std::string & yaml_tail) {
    hub.put("org/model/resolve/main/config.json",
            R"({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 128,
                "num_attention_heads": 4, "intermediate_size": 96})");
    tests::EnvGuard endpoint("HF_ENDPOINT", hub.endpoint());
    auto cfg = deploy::parse_run_config("model:\n  hub: org/model\ndata:\n  synthetic_tokens: {vocab: 128}\n"
                                        "resources:\n  providers: [local]\n  gpu_count: 1\n" + yaml_tail);
    deploy::validate(cfg);  // the layer count is not known from the config alone
    deploy::FlowOptions fo;
    fo.workspace = TOOLKIT_SOURCE_DIR;
    fo.run_dir = dir / "run";
    fo.broker.state_dir = dir / "state";
    fo.broker.ledger_path = dir / "state/ledger.sqlite";
    std::ostringstream sink;
    common::Output out(common::OutputFormat::Json, sink);
    return deploy::run_new(cfg, fo, out);
}

}  // namespace

TEST_CASE("flow: a Hub model's capture.layers past its config.json fails the estimate step, before anything is rented") {
    FakeHub hub("");
    tests::TempDir dir{"flow-layers"};
    CHECK(run_tiny_hub_model(hub, dir, "capture:\n  layers: 0-7\n") == 2);
    auto events = deploy::RunDir::open(dir / "run").journal();
    bool estimate_failed = false, offers_or_create = false;
    for (const auto & e : events) {
        if (e.step == "estimate" && e.event == "failed") {
            estimate_failed = true;
            CHECK(e.message.find("capture.layers: '0-7' names layer 7 but org/model (config.json) has 4 layers (0-3)") != std::string::npos);
        }
        offers_or_create = offers_or_create || ((e.step == "offers" || e.step == "create") && e.event == "start");
    }
    CHECK(estimate_failed);
    CHECK_FALSE(offers_or_create);
    CHECK(tests::read_file(hub.dir / "requests.log").find("/org/model/resolve/main/config.json") != std::string::npos);
}

TEST_CASE("flow: the estimate step with resources.offload_gb records the offloaded share and the stream ring in state.json") {
    FakeHub hub("");
    tests::TempDir dir{"flow-offload"};
    CHECK(run_tiny_hub_model(hub, dir, "  offload_gb: 0.0001\n") == 4);  // capacity: no GPU offer here
    auto rd = deploy::RunDir::open(dir / "run");
    const auto & s = rd.state();
    REQUIRE(s.estimate.has_value());
    CHECK(s.estimate->offload_gb == doctest::Approx(0.0001));
    // The ring: two of the model's one layer kind (norms, q/k/v/o, gate/up/down) in bf16.
    const double layer_gb = (2.0 * 64 + 4.0 * 64 * 64 + 3.0 * 64 * 96) * 2 / 1e9;
    CHECK(s.estimate->ring_gb == doctest::Approx(2 * layer_gb));
    CHECK(s.estimate->per_gpu_gb == doctest::Approx((s.estimate->weights_gb - 0.0001 + s.estimate->activations_gb) * 1.2 + 2 * layer_gb));
    CHECK(*s.min_vram_gb == 1);
    CHECK(rd.run_info()["config"]["resources"]["offload_gb"] == 0.0001);
}

TEST_CASE("remote plan: a run's job names carry its run id, a run directory from before keeps the bare names it started its jobs under") {
    const std::string id = "20260101-120000-ab12", other = "20260101-120000-cd34";
    const std::string name = deploy::remote_job_name("analysis", id, false);
    CHECK(name == "analysis-" + id);
    CHECK(name != deploy::remote_job_name("analysis", other, false));  // two runs on one host never share a job
    CHECK(deploy::remote_job_of_run(name, id));
    CHECK_FALSE(deploy::remote_job_of_run(name, other));
    CHECK_FALSE(deploy::remote_job_of_run("analysis", id));  // another run's job of the older naming, or a user's
    CHECK_FALSE(deploy::remote_job_of_run("x" + id, id));
    CHECK(deploy::remote_job_role(name, id) == "analysis");
    CHECK(deploy::remote_job_role("bootstrap", id) == "bootstrap");
    // state.json records the job under its bare role (an older run directory): the name it was started under.
    CHECK(deploy::remote_job_name("analysis", id, true) == "analysis");
    // A run id no run writes, too long for a job name with its role, is refused naming it.
    try {
        (void)deploy::remote_job_name("bootstrap", std::string(60, 'a'), false);
        FAIL("expected a refusal");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find(std::string(60, 'a')) != std::string::npos);
    }
}
