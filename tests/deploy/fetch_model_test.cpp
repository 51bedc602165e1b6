// fetch_model.sh keeps a file only whole: against a Hub stand-in that cuts its answers short (the
// Hub's redirect declaring the LFS size in X-Linked-Size, a CDN that sends less), and with a curl that
// fails after writing part of the body while printing the status it got. A short file is never
// renamed into place and .complete is never written; the part stays for the next run to resume.
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;

namespace {

std::string fetch_script() { return std::string(TOOLKIT_SOURCE_DIR) + "/deploy/remote/fetch_model.sh"; }

// The Hub as fetch_model.sh meets it: /<repo>/resolve/<rev>/<file> answers a file under <root>
// directly (config.json and other small files), or, for a name ending .safetensors, with a 302 to
// /cdn/<same path> carrying X-Linked-Size (the LFS size; `linked_size` in control.json overrides it,
// as a lying or stale server would). /cdn/ serves byte ranges (curl -C - sends "bytes=N-"). control.json
// (read at each request): "cut": how many /cdn/ answers are cut short, each after "cut_bytes" bytes,
// "cut_mode": "short" (a consistent, short answer: Content-Length or Content-Range of what is sent)
// or "close" (the full length declared, the connection closed early); "total": a Content-Range total
// to declare instead of the true one; "ignore_range_start": answer 416 "bytes */<size>" to a range
// from this offset on; "ignore_ranges": answer every range request with 200 and the whole file. The
// redirect also carries X-Linked-Etag (the file's sha256, as the Hub's does). Requests are logged to
// requests.log.
struct CuttingHub {
    tests::TempDir dir{"cutting-hub"};
    common::ChildProcess server;
    int port = 0;
    CuttingHub() {
        tests::write_file(dir / "server.py", R"PY(
import hashlib, http.server, json, os, sys
root, logf, ctl = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def control(self):
        try: return json.load(open(ctl))
        except Exception: return {}
    def do_HEAD(self):
        self.head_only = True
        self.do_GET()
    def do_GET(self):
        head = getattr(self, "head_only", False)
        self.head_only = False
        with open(logf, "a") as f: f.write(("HEAD " if head else "") + self.path + " " + str(self.headers.get("Range")) + "\n")
        c = self.control()
        cdn = self.path.startswith("/cdn/")
        rel = self.path[5:] if cdn else self.path.lstrip("/")
        p = os.path.join(root, rel)
        if not os.path.isfile(p):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        data = open(p, "rb").read()
        if not cdn and rel.endswith(".safetensors"):
            self.send_response(302)
            self.send_header("Location", "/cdn/" + rel)
            self.send_header("X-Linked-Size", str(c.get("linked_size", len(data))))
            self.send_header("X-Linked-Etag", '"%s"' % hashlib.sha256(data).hexdigest())
            self.send_header("Content-Length", "0"); self.end_headers(); return
        start = 0
        rng = self.headers.get("Range")
        if rng and c.get("ignore_ranges"): rng = None  # a server that cannot resume: 200, whole body
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data) or start >= c.get("ignore_range_start", 1 << 62):
                self.send_response(416); self.send_header("Content-Range", "bytes */%d" % len(data))
                self.send_header("Content-Length", "0"); self.end_headers(); return
        body = data[start:]
        total = c.get("total", len(data))
        if head:  # the headers a GET would send, no body, nothing cut
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers(); return
        cut = cdn and c.get("cut", 0) > 0
        if cut:
            c["cut"] -= 1
            json.dump(c, open(ctl, "w"))
        sent = body[:c.get("cut_bytes", 65536)] if cut else body
        declared = sent if cut and c.get("cut_mode") == "short" else body
        self.send_response(206 if start else 200)
        if start: self.send_header("Content-Range", "bytes %d-%d/%d" % (start, start + len(declared) - 1, total))
        self.send_header("Content-Length", str(len(declared)))
        if cut and c.get("cut_mode") != "short": self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(sent); self.wfile.flush()
        if cut and c.get("cut_mode") != "short": self.close_connection = True
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
)PY");
        fs::create_directories(dir / "root");
        control(nlohmann::json::object());
        server = common::ChildProcess::spawn({"python3", dir / "server.py", dir / "root", dir / "requests.log", dir / "control.json"},
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
    void control(const nlohmann::json & c) { tests::write_file(dir / "control.json", c.dump()); }
    std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port); }
};

std::string blob(size_t n) {
    std::string b;
    b.reserve(n);
    for (size_t i = 0; i < n; ++i) b += static_cast<char>('a' + (i * 7 + i / 26) % 26);
    return b;
}

common::ProcessResult fetch(const CuttingHub & hub, const tests::TempDir & cache, const std::vector<std::string> & extra_env = {}) {
    common::RunOptions o;
    o.extra_env = {"HF_ENDPOINT=" + hub.endpoint()};
    o.extra_env.insert(o.extra_env.end(), extra_env.begin(), extra_env.end());
    o.timeout = std::chrono::milliseconds(120000);
    return common::run_process({"sh", fetch_script(), "org/model", "main", cache.path()}, o);
}

constexpr size_t kSize = 1 << 20;

}  // namespace

TEST_CASE("fetch_model.sh: an answer cut short with a consistent length is kept as .part, never renamed or marked complete, and resumed next run") {
    CuttingHub hub;
    const std::string base = "org/model/resolve/main/";
    const std::string weights = blob(kSize);
    hub.put(base + "config.json", R"({"model_type":"llama"})");
    hub.put(base + "model.safetensors", weights);
    // Every CDN answer ends after 64 KiB and says so (Content-Length 65536): curl sees a clean,
    // whole response; only the Hub's X-Linked-Size tells the file is 1 MiB.
    hub.control({{"cut", 1000}, {"cut_bytes", 65536}, {"cut_mode", "short"}});
    tests::TempDir cache;
    const std::string dir = cache / "models/org--model/main";
    auto r = fetch(hub, cache);
    INFO(r.err);
    CHECK(r.exit_code == 6);
    CHECK(r.err.find("got 65536 of 1048576 bytes") != std::string::npos);
    CHECK_FALSE(fs::exists(dir + "/model.safetensors"));
    CHECK_FALSE(fs::exists(dir + "/.complete"));
    REQUIRE(fs::exists(dir + "/model.safetensors.part"));
    CHECK(fs::file_size(dir + "/model.safetensors.part") == 65536);
    CHECK(r.out.find("model_dir=") == std::string::npos);

    // A resumed answer (206) cut the same way: its Content-Range total is what the short part is
    // compared with when no X-Linked-Size is there either.
    hub.control({{"cut", 1}, {"cut_bytes", 65536}, {"cut_mode", "short"}, {"linked_size", "not a number"}});
    auto again = fetch(hub, cache);
    INFO(again.err);
    CHECK(again.exit_code == 6);
    CHECK(again.err.find("got 131072 of 1048576 bytes") != std::string::npos);
    CHECK_FALSE(fs::exists(dir + "/.complete"));
    CHECK(fs::file_size(dir + "/model.safetensors.part") == 131072);
    CHECK(tests::read_file(hub.dir / "requests.log").find("/cdn/" + base + "model.safetensors bytes=65536-") != std::string::npos);

    // The server whole again: the next run resumes from 128 KiB and ends with the whole file.
    hub.control(nlohmann::json::object());
    auto whole = fetch(hub, cache);
    INFO(whole.err);
    CHECK(whole.exit_code == 0);
    CHECK(tests::read_file(dir + "/model.safetensors") == weights);
    CHECK(fs::exists(dir + "/.complete"));
    CHECK_FALSE(fs::exists(dir + "/model.safetensors.part"));
    CHECK(tests::read_file(hub.dir / "requests.log").find("/cdn/" + base + "model.safetensors bytes=131072-") != std::string::npos);
}

TEST_CASE("fetch_model.sh: a shard whose size disagrees with the Hub's X-Linked-Size is refused, and the other shards stay") {
    CuttingHub hub;
    const std::string base = "org/model/resolve/main/";
    hub.put(base + "config.json", "{}");
    hub.put(base + "model.safetensors.index.json", R"({"weight_map":{"a":"model-1.safetensors","b":"model-2.safetensors"}})");
    hub.put(base + "model-1.safetensors", blob(1000));
    hub.put(base + "model-2.safetensors", blob(2000));
    hub.control({{"linked_size", 2000}});  // model-1 declared 2000 but 1000 bytes served
    tests::TempDir cache;
    const std::string dir = cache / "models/org--model/main";
    auto r = fetch(hub, cache);
    INFO(r.err);
    CHECK(r.exit_code == 6);
    CHECK(r.err.find("model-1.safetensors: got 1000 of 2000 bytes") != std::string::npos);
    CHECK_FALSE(fs::exists(dir + "/model-1.safetensors"));
    CHECK_FALSE(fs::exists(dir + "/.complete"));
}

TEST_CASE("fetch_model.sh: a part longer than the file (416 with its size) is removed and nothing is marked complete") {
    CuttingHub hub;
    const std::string base = "org/model/resolve/main/";
    hub.put(base + "config.json", "{}");
    hub.put(base + "model.safetensors", blob(1000));
    tests::TempDir cache;
    const std::string dir = cache / "models/org--model/main";
    fs::create_directories(dir);
    tests::write_file(dir + "/model.safetensors.part", blob(1500));
    // Its record says it is of this very file (the Hub's sha256 of blob(1000)): only the size tells.
    const std::string served = hub.dir / ("root/" + base + "model.safetensors");
    auto sha = common::run_process({"sh", "-c", "sha256sum < \"$0\" | cut -c1-64", served}, common::RunOptions{});
    REQUIRE(sha.out.size() == 65);
    tests::write_file(dir + "/model.safetensors.part.etag", sha.out);
    auto r = fetch(hub, cache);
    INFO(r.err);
    CHECK(r.exit_code == 6);
    CHECK(r.err.find("holds 1500 bytes but the file has 1000") != std::string::npos);
    CHECK_FALSE(fs::exists(dir + "/model.safetensors"));
    CHECK_FALSE(fs::exists(dir + "/model.safetensors.part"));
    CHECK_FALSE(fs::exists(dir + "/.complete"));
    // Run again: fetched anew, whole.
    auto again = fetch(hub, cache);
    CHECK(again.exit_code == 0);
    CHECK(tests::read_file(dir + "/model.safetensors") == blob(1000));
}

TEST_CASE("fetch_model.sh: curl failing after part of the body while printing 200 keeps the part and exits 6") {
    // The reviewer's case, without curl's 8 retries 5 s apart: a curl that writes 64 KiB of the
    // file, prints the status it got (-w) and exits 18 (partial file), as the real one does once its
    // retries are spent against a server that closes every answer early.
    tests::TempDir bin("fake-curl");
    tests::write_file(bin / "curl", R"SH(#!/bin/sh
out=
while [ $# -gt 0 ]; do
  case "$1" in -o) out=$2; shift ;; esac
  shift
done
head -c 65536 /dev/zero >> "$out"
printf 200
echo "curl: (18) transfer closed with 983040 bytes remaining to read" >&2
exit 18
)SH");
    fs::permissions(bin / "curl", fs::perms::owner_all);
    CuttingHub hub;  // not reached: the fake curl answers
    tests::TempDir cache;
    const std::string dir = cache / "models/org--model/main";
    auto r = fetch(hub, cache, {"PATH=" + bin.path() + ":" + std::string(std::getenv("PATH"))});
    INFO(r.err);
    CHECK(r.exit_code == 6);
    CHECK(r.err.find("config.json: download failed after retries (curl exit 18, HTTP 200)") != std::string::npos);
    CHECK(r.err.find("transfer closed") != std::string::npos);
    CHECK(fs::exists(dir + "/config.json.part"));
    CHECK_FALSE(fs::exists(dir + "/config.json"));
    CHECK_FALSE(fs::exists(dir + "/.complete"));
}

TEST_CASE("fetch_model.sh: against a server that closes every answer early, real curl ends with exit 6 and no .complete") {
    // The full length declared (Content-Length 1 MiB), 64 KiB sent, the connection closed: curl
    // exits 18 after its retries (8, 5 s apart: this case takes about 45 s).
    CuttingHub hub;
    const std::string base = "org/model/resolve/main/";
    hub.put(base + "config.json", "{}");
    hub.put(base + "model.safetensors", blob(kSize));
    hub.control({{"cut", 1000}, {"cut_bytes", 65536}, {"cut_mode", "close"}});
    tests::TempDir cache;
    const std::string dir = cache / "models/org--model/main";
    auto r = fetch(hub, cache);
    INFO(r.err);
    CHECK(r.exit_code == 6);
    CHECK(r.err.find("model.safetensors: download failed after retries (curl exit 18") != std::string::npos);
    CHECK_FALSE(fs::exists(dir + "/model.safetensors"));
    CHECK_FALSE(fs::exists(dir + "/.complete"));
    REQUIRE(fs::exists(dir + "/model.safetensors.part"));
    CHECK(fs::file_size(dir + "/model.safetensors.part") < kSize);
}

// A part cut short, then resumed: returns the cache dir's model folder with a 64 KiB part in it.
static std::string leave_part(CuttingHub & hub, const tests::TempDir & cache, const std::string & weights) {
    const std::string base = "org/model/resolve/main/";
    hub.put(base + "config.json", R"({"model_type":"llama"})");
    hub.put(base + "model.safetensors", weights);
    hub.control({{"cut", 1}, {"cut_bytes", 65536}, {"cut_mode", "short"}});
    auto r = fetch(hub, cache);
    INFO(r.err);
    REQUIRE(r.exit_code == 6);
    const std::string dir = cache / "models/org--model/main";
    REQUIRE(fs::file_size(dir + "/model.safetensors.part") == 65536);
    REQUIRE(fs::exists(dir + "/model.safetensors.part.etag"));
    return dir;
}

TEST_CASE("fetch_model.sh: a part whose file changed on the Hub (another entity tag) is fetched anew, never spliced") {
    CuttingHub hub;
    tests::TempDir cache;
    const std::string dir = leave_part(hub, cache, blob(kSize));
    // `main` moved: a new blob of the same size. Resuming would append its tail to the old head, a
    // file of the right size that is neither; the Hub's X-Linked-Etag (its sha256) tells them apart.
    std::string changed = blob(kSize);
    for (size_t i = 0; i < changed.size(); i += 4096) changed[i] = 'Z';
    hub.put("org/model/resolve/main/model.safetensors", changed);
    hub.control(nlohmann::json::object());
    auto r = fetch(hub, cache);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.err.find("the file changed on the Hub since (entity tag") != std::string::npos);
    CHECK(tests::read_file(dir + "/model.safetensors") == changed);
    CHECK(fs::exists(dir + "/.complete"));
    CHECK_FALSE(fs::exists(dir + "/model.safetensors.part.etag"));
}

TEST_CASE("fetch_model.sh: a part the server cannot resume (it ignores byte ranges: curl exit 33) is dropped and fetched whole") {
    CuttingHub hub;
    tests::TempDir cache;
    const std::string weights = blob(kSize);
    const std::string dir = leave_part(hub, cache, weights);
    hub.control({{"ignore_ranges", true}});
    auto r = fetch(hub, cache);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.err.find("the server cannot resume it") != std::string::npos);
    CHECK(tests::read_file(dir + "/model.safetensors") == weights);
    CHECK(fs::exists(dir + "/.complete"));
}

TEST_CASE("fetch_model.sh: a part with no record of its file's version (left by a killed transfer of an older script) is fetched anew, never resumed") {
    CuttingHub hub;
    tests::TempDir cache;
    const std::string dir = leave_part(hub, cache, blob(kSize));
    // The file moved on, and nothing says which version the part holds: resuming could splice.
    std::filesystem::remove(dir + "/model.safetensors.part.etag");
    std::string changed = blob(kSize);
    for (size_t i = 0; i < changed.size(); i += 4096) changed[i] = 'Y';
    hub.put("org/model/resolve/main/model.safetensors", changed);
    hub.control(nlohmann::json::object());
    auto r = fetch(hub, cache);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.err.find("no record of which version of the file it holds") != std::string::npos);
    CHECK(tests::read_file(dir + "/model.safetensors") == changed);
}

TEST_CASE("fetch_model.sh: the version a part holds is recorded before its transfer, so a transfer killed midway leaves it") {
    CuttingHub hub;
    tests::TempDir cache;
    const std::string base = "org/model/resolve/main/";
    hub.put(base + "config.json", R"({"model_type":"llama"})");
    hub.put(base + "model.safetensors", blob(kSize));
    // curl that SIGKILLs itself on the weights' transfer, after the script's HEAD: nothing of the
    // transfer's answer is ever read by the script.
    tests::TempDir bin;
    tests::write_file(bin / "curl",
                      "#!/bin/sh\n"
                      "case \" $* \" in *\" -I \"*) exec /usr/bin/curl \"$@\";; esac\n"
                      "case \"$* \" in *\"/model.safetensors.part \"*) printf 'partial' > \"$(dirname \"$0\")/../p\"; kill -KILL $$;; esac\n"
                      "exec /usr/bin/curl \"$@\"\n");
    std::filesystem::permissions(bin / "curl", std::filesystem::perms::owner_all);
    auto r = fetch(hub, cache, {"PATH=" + bin.path() + ":" + std::string(std::getenv("PATH"))});
    INFO(r.err);
    CHECK(r.exit_code != 0);
    const std::string dir = cache / "models/org--model/main";
    REQUIRE(std::filesystem::exists(dir + "/model.safetensors.part.etag"));
    CHECK(tests::read_file(dir + "/model.safetensors.part.etag").size() == 65);  // a sha256 in hex, a newline
}
