// The host-memory probe (extractor/host_memory.h): /proc/meminfo, cgroup v1/v2 and
// /proc/self/cgroup parsed as hostile text; the probe over fixture trees; the refusal's message;
// and what a plan's host-resident part comes to (model.h host_memory_need), CPU and offloaded.
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include "common/error.h"
#include "extractor/host_memory.h"
#include "extractor/model.h"
#include "tests/extractor/test_util.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {

constexpr uint64_t kKiB = 1024, kMiB = kKiB * 1024, kGiB = kMiB * 1024;

// What /proc/meminfo looks like, with MemAvailable as given (a line, or nothing).
std::string meminfo_with(const std::string & available_line) {
    return "MemTotal:       24683784 kB\n"
           "MemFree:         1183212 kB\n" +
           available_line +
           "Buffers:          512000 kB\n"
           "Cached:         20000000 kB\n"
           "SwapTotal:             0 kB\n";
}

void mkdirs(const std::string & path) { std::filesystem::create_directories(path); }

// The message of the common::Error f throws ("" when it throws none), and its kind.
std::pair<std::string, common::ErrorKind> error_of(const std::function<void()> & f) {
    try {
        f();
    } catch (const common::Error & e) {
        return {e.message(), e.kind()};
    }
    return {"", common::ErrorKind::Internal};
}

}  // namespace

TEST_CASE("host memory: MemAvailable is read in kB from meminfo, and garbage, duplicates or overflow are not believed") {
    CHECK(parse_meminfo_bytes(meminfo_with("MemAvailable:   24208984 kB\n"), "MemAvailable") == uint64_t(24208984) * kKiB);
    CHECK(parse_meminfo_bytes(meminfo_with("MemAvailable:\t0 kB\n"), "MemAvailable") == uint64_t(0));
    CHECK(parse_meminfo_bytes("MemTotal: 9 kB\nMemAvailable: 7 kB", "MemAvailable") == 7 * kKiB);  // no final newline
    CHECK(parse_meminfo_bytes(meminfo_with(""), "MemAvailable") == std::nullopt);                // pre-3.14 kernel
    CHECK(parse_meminfo_bytes("", "MemAvailable") == std::nullopt);
    // A longer key that starts the same is another key.
    CHECK(parse_meminfo_bytes(meminfo_with("MemAvailableX:  5 kB\n"), "MemAvailable") == std::nullopt);
    CHECK(parse_meminfo_bytes(meminfo_with(" MemAvailable:  5 kB\n"), "MemAvailable") == std::nullopt);
    for (const char * bad : {"MemAvailable: 12a kB\n", "MemAvailable: -5 kB\n", "MemAvailable: 5 MB\n", "MemAvailable: 5\n",
                             "MemAvailable: kB\n", "MemAvailable: 1.5 kB\n", "MemAvailable: 5 kB extra\n", "MemAvailable: 0x10 kB\n",
                             "MemAvailable: +5 kB\n", "MemAvailable: 5 kb\n"}) {
        INFO(std::string(bad));
        CHECK(parse_meminfo_bytes(meminfo_with(bad), "MemAvailable") == std::nullopt);
    }
    // Two MemAvailable lines: which one is the kernel's? Neither is believed.
    CHECK(parse_meminfo_bytes(meminfo_with("MemAvailable: 5 kB\nMemAvailable: 6 kB\n"), "MemAvailable") == std::nullopt);
    // The largest kB count whose bytes fit 64 bits, and the first that does not.
    CHECK(parse_meminfo_bytes("MemAvailable: 18014398509481983 kB\n", "MemAvailable") == uint64_t(18014398509481983) * 1024);
    CHECK(parse_meminfo_bytes("MemAvailable: 18014398509481984 kB\n", "MemAvailable") == std::nullopt);
    CHECK(parse_meminfo_bytes("MemAvailable: 18446744073709551616 kB\n", "MemAvailable") == std::nullopt);  // 2^64
    CHECK(parse_meminfo_bytes("MemAvailable: 99999999999999999999999999 kB\n", "MemAvailable") == std::nullopt);
    // A NUL inside the text does not end the parse early or crash it.
    const char with_nul[] = "MemFree: 1 kB\n\0\nMemAvailable: 3 kB\n";
    CHECK(parse_meminfo_bytes(std::string(with_nul, sizeof with_nul - 1), "MemAvailable") == 3 * kKiB);
}

TEST_CASE("host memory: cgroup values are a byte count or max, v1's huge number is no limit, anything else is garbage") {
    auto v = parse_cgroup_value("max\n");
    REQUIRE(v);
    CHECK(v->unlimited);
    v = parse_cgroup_value("1073741824\n");
    REQUIRE(v);
    CHECK_FALSE(v->unlimited);
    CHECK(v->bytes == kGiB);
    v = parse_cgroup_value("0");
    REQUIRE(v);
    CHECK_FALSE(v->unlimited);
    CHECK(v->bytes == 0);
    // cgroup v1 writes PAGE_COUNTER_MAX pages for "no limit"; 2^62 and up is no machine's memory.
    v = parse_cgroup_value("9223372036854771712\n");
    REQUIRE(v);
    CHECK(v->unlimited);
    v = parse_cgroup_value("18446744073709551615\n");  // 2^64 - 1
    REQUIRE(v);
    CHECK(v->unlimited);
    v = parse_cgroup_value("4611686018427387903\n");  // 2^62 - 1: still a number
    REQUIRE(v);
    CHECK_FALSE(v->unlimited);
    for (const char * bad : {"", "\n", "max max\n", "12 34\n", "-1\n", "1e9\n", "1\n2\n", "18446744073709551616\n", "MAX\n",
                             " 5\n", "5 \n", "0x10\n", "4GiB\n", "123456789012345678901234567890\n"}) {
        INFO("'" << bad << "'");
        CHECK(parse_cgroup_value(bad) == std::nullopt);
    }
}

TEST_CASE("host memory: memory.stat keys are matched whole and a duplicated or garbled value is not believed") {
    const std::string stat = "anon 1000\nfile 9000\nactive_file 4096\ninactive_file 8192\ntotal_inactive_file 65536\n";
    CHECK(parse_cgroup_stat(stat, "active_file") == uint64_t(4096));
    CHECK(parse_cgroup_stat(stat, "inactive_file") == uint64_t(8192));        // not total_inactive_file's line
    CHECK(parse_cgroup_stat(stat, "total_inactive_file") == uint64_t(65536));
    CHECK(parse_cgroup_stat(stat, "file") == uint64_t(9000));                  // not active_file's
    CHECK(parse_cgroup_stat(stat, "shmem") == std::nullopt);
    CHECK(parse_cgroup_stat("active_file 1\nactive_file 2\n", "active_file") == std::nullopt);
    CHECK(parse_cgroup_stat("active_file lots\n", "active_file") == std::nullopt);
    CHECK(parse_cgroup_stat("active_file -1\n", "active_file") == std::nullopt);
    CHECK(parse_cgroup_stat("active_file 18446744073709551616\n", "active_file") == std::nullopt);
    CHECK(parse_cgroup_stat("active_file 18446744073709551615\n", "active_file") == UINT64_MAX);
}

TEST_CASE("host memory: the process's cgroup path is taken from its own line and must stay inside the hierarchy") {
    const std::string v1 = "9:name=systemd:/\n5:devices:/\n4:memory:/process_api/b8b0\n1:cpu:/\n0::/\n";
    CHECK(parse_self_cgroup_path(v1, false) == std::string("/process_api/b8b0"));
    CHECK(parse_self_cgroup_path(v1, true) == std::string("/"));
    CHECK(parse_self_cgroup_path("0::/user.slice/user-1000.slice/session-2.scope\n", true) ==
          std::string("/user.slice/user-1000.slice/session-2.scope"));
    CHECK(parse_self_cgroup_path("0::/user.slice\n", false) == std::nullopt);  // no memory controller line
    CHECK(parse_self_cgroup_path("7:cpu,memory,pids:/docker/abc\n", false) == std::string("/docker/abc"));
    CHECK(parse_self_cgroup_path("7:memoryx:/a\n", false) == std::nullopt);
    CHECK(parse_self_cgroup_path("0::/a:b\n", true) == std::string("/a:b"));  // the path may hold ':'
    CHECK(parse_self_cgroup_path("", true) == std::nullopt);
    CHECK(parse_self_cgroup_path("garbage without colons\n", true) == std::nullopt);
    // Paths that would leave the cgroup root, or are not absolute plain components.
    for (const char * bad : {"0::/../../etc\n", "0::/a/../../b\n", "0::relative\n", "0::\n", "0::/a//b\n", "0::/./a\n",
                             "0::/a/\n"}) {
        INFO(std::string(bad));
        CHECK(parse_self_cgroup_path(bad, true) == std::nullopt);
    }
    CHECK(parse_self_cgroup_path("0::/a\n0::/b\n", true) == std::nullopt);  // two lines: neither
    std::string deep = "0::";
    for (int i = 0; i < 65; ++i) deep += "/d";
    CHECK(parse_self_cgroup_path(deep, true) == std::nullopt);
    CHECK(parse_self_cgroup_path("0::/" + std::string(5000, 'x'), true) == std::nullopt);
}

TEST_CASE("host memory: the probe takes the smallest of MemAvailable and every cgroup level up from the process's own") {
    tests::TempDir dir;
    HostMemoryPaths paths;
    paths.meminfo = dir / "meminfo";
    paths.cgroup_root = dir / "cg";
    paths.self_cgroup = dir / "self_cgroup";
    tests::write_file(paths.meminfo, meminfo_with("MemAvailable:   8388608 kB\n"));  // 8 GiB

    SUBCASE("cgroup v2: the parent's limit binds, less what is in use, page cache excepted") {
        mkdirs(dir / "cg/a/b");
        tests::write_file(dir / "cg/cgroup.controllers", "cpu memory\n");
        tests::write_file(dir / "cg/a/memory.max", std::to_string(4 * kGiB) + "\n");
        tests::write_file(dir / "cg/a/memory.current", std::to_string(3 * kGiB) + "\n");
        tests::write_file(dir / "cg/a/memory.stat",
                          "anon 1\nactive_file " + std::to_string(512 * kMiB) + "\ninactive_file " + std::to_string(512 * kMiB) + "\n");
        tests::write_file(dir / "cg/a/b/memory.max", "max\n");
        tests::write_file(dir / "cg/a/b/memory.current", "1\n");
        tests::write_file(paths.self_cgroup, "0::/a/b\n");
        const HostMemory m = probe_host_memory(paths);
        REQUIRE(m.available);
        CHECK(*m.available == 2 * kGiB);  // 4 GiB - (3 GiB - 1 GiB of file pages)
        REQUIRE(m.sources.size() == 2);
        CHECK(m.sources[0].find("MemAvailable 8.0 GiB") != std::string::npos);
        CHECK(m.sources[1].find("cgroup v2 " + dir.path() + "/cg/a: memory.max 4.0 GiB") != std::string::npos);
        CHECK(m.notes.empty());
        // More in use than the limit (it happens briefly): no room, not a wrapped-around number.
        tests::write_file(dir / "cg/a/memory.current", std::to_string(9 * kGiB) + "\n");
        CHECK(probe_host_memory(paths).available == uint64_t(0));
    }
    SUBCASE("cgroup v1: the memory controller's levels, total_* page cache counted") {
        mkdirs(dir / "cg/memory/docker/abc");
        tests::write_file(dir / "cg/memory/memory.limit_in_bytes", "9223372036854771712\n");
        tests::write_file(dir / "cg/memory/docker/abc/memory.limit_in_bytes", std::to_string(2 * kGiB) + "\n");
        tests::write_file(dir / "cg/memory/docker/abc/memory.usage_in_bytes", std::to_string(kGiB) + "\n");
        tests::write_file(dir / "cg/memory/docker/abc/memory.stat",
                          "active_file 0\ninactive_file 0\ntotal_active_file " + std::to_string(256 * kMiB) +
                              "\ntotal_inactive_file " + std::to_string(256 * kMiB) + "\n");
        tests::write_file(paths.self_cgroup, "4:memory:/docker/abc\n0::/\n");
        const HostMemory m = probe_host_memory(paths);
        REQUIRE(m.available);
        CHECK(*m.available == 2 * kGiB - 512 * kMiB);
        CHECK(m.sources.back().find("cgroup v1 " + dir.path() + "/cg/memory/docker/abc") != std::string::npos);
    }
    SUBCASE("a container that sees its own group as the root: levels not under the root are skipped") {
        mkdirs(dir / "cg");
        tests::write_file(dir / "cg/cgroup.controllers", "memory\n");
        tests::write_file(dir / "cg/memory.max", std::to_string(kGiB) + "\n");
        tests::write_file(dir / "cg/memory.current", "0\n");
        tests::write_file(paths.self_cgroup, "0::/kubepods/pod1/ctr\n");
        CHECK(probe_host_memory(paths).available == kGiB);
    }
    SUBCASE("garbage in a limit skips that level and says so; an unreadable usage counts the whole limit") {
        mkdirs(dir / "cg/a");
        tests::write_file(dir / "cg/cgroup.controllers", "memory\n");
        tests::write_file(dir / "cg/a/memory.max", "lots\n");
        tests::write_file(dir / "cg/memory.max", std::to_string(3 * kGiB) + "\n");
        tests::write_file(dir / "cg/memory.current", "-7\n");
        tests::write_file(paths.self_cgroup, "0::/a\n");
        const HostMemory m = probe_host_memory(paths);
        CHECK(m.available == 3 * kGiB);
        REQUIRE(m.notes.size() == 2);
        CHECK(m.notes[0].find(dir.path() + "/cg/a/memory.max: not a byte count") != std::string::npos);
        CHECK(m.notes[1].find(dir.path() + "/cg/memory.current: missing or not a byte count") != std::string::npos);
    }
    SUBCASE("a hostile self-cgroup path is not followed out of the root") {
        mkdirs(dir / "cg");
        mkdirs(dir / "outside");
        tests::write_file(dir / "cg/cgroup.controllers", "memory\n");
        tests::write_file(dir / "outside/memory.max", "1\n");  // would refuse everything if it were read
        tests::write_file(paths.self_cgroup, "0::/../outside\n");
        CHECK(probe_host_memory(paths).available == 8 * kGiB);
    }
    SUBCASE("nothing readable: unknown; a garbled meminfo is named") {
        tests::write_file(paths.meminfo, "MemAvailable: plenty\n");
        paths.cgroup_root = dir / "none";
        const HostMemory m = probe_host_memory(paths);
        CHECK_FALSE(m.available);
        REQUIRE(m.notes.size() == 1);
        CHECK(m.notes[0].find(paths.meminfo) != std::string::npos);
        paths.meminfo = dir / "missing";
        CHECK(probe_host_memory(paths).notes.empty());  // absent is not an error: the source is just not used
    }
    SUBCASE("a FIFO, a directory or an oversized file in place of meminfo is refused without blocking") {
        REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
        paths.meminfo = dir / "fifo";
        paths.cgroup_root = dir / "none";
        HostMemory m;
        CHECK(tests::finishes_without_blocking_on(paths.meminfo, [&] { m = probe_host_memory(paths); }));
        CHECK_FALSE(m.available);
        REQUIRE(m.notes.size() == 1);
        CHECK(m.notes[0].find("FIFO") != std::string::npos);
        paths.meminfo = dir.path();
        CHECK(probe_host_memory(paths).notes.size() == 1);
        tests::write_file(dir / "big", meminfo_with("MemAvailable: 5 kB\n") + std::string(70 * 1024, '#'));
        paths.meminfo = dir / "big";
        const HostMemory big = probe_host_memory(paths);
        CHECK_FALSE(big.available);
        REQUIRE(big.notes.size() == 1);
        CHECK(big.notes[0].find("more than the 65536 allowed") != std::string::npos);
    }
}

TEST_CASE("host memory: a need larger than what is available is refused naming model, need, availability and the override") {
    HostNeed need;
    need.model = "/models/big (llama)";
    need.what = "a CPU run";
    need.bytes = 3 * kGiB;
    need.breakdown = "weights in bf16: 2.5 GiB; working set: 0.5 GiB";
    need.advice = "free memory";
    HostMemory mem;
    mem.available = 2 * kGiB;
    mem.sources = {"MemAvailable 2.0 GiB (/proc/meminfo)"};
    const auto [msg, kind] = error_of([&] { require_host_memory(need, mem); });
    CHECK(kind == common::ErrorKind::Capacity);
    CHECK(msg.find("/models/big (llama): a CPU run needs about 3.0 GiB of host memory (weights in bf16: 2.5 GiB") != std::string::npos);
    CHECK(msg.find("only 2.0 GiB is available to this process (MemAvailable 2.0 GiB (/proc/meminfo))") != std::string::npos);
    CHECK(msg.find("free memory, or pass --no-host-memory-check") != std::string::npos);
    mem.available = 3 * kGiB;  // exactly enough
    CHECK(error_of([&] { require_host_memory(need, mem); }).first.empty());
    mem.available.reset();     // unknown: a warning, not a refusal
    CHECK(error_of([&] { require_host_memory(need, mem); }).first.empty());
}

TEST_CASE("host memory: a plan's host part is the whole CPU run, or an offloaded run's pinned layers plus the loader's staging") {
    tests::TempDir dir;
    FixtureOptions fx;
    fx.family = "llama";
    fx.out_dir = dir / "m";
    fx.layers = 4;
    write_fixture(fx);
    LoadOptions lo;
    lo.device = "cpu";
    lo.dtype = at::kFloat;
    lo.batch = 2;
    lo.seq_len = 16;
    lo.threads = 2;
    lo.host_memory_check = false;
    Model m = plan_model(fx.out_dir, lo);
    auto cpu = host_memory_need(m, lo);
    REQUIRE(cpu);
    CHECK(cpu->bytes == m.estimate.total_bytes + m.estimate.activation_bytes);
    CHECK(cpu->model == fx.out_dir + " (llama)");
    CHECK(cpu->breakdown.find("weights in f32, all experts counted: ") != std::string::npos);
    CHECK(cpu->breakdown.find("a batch of 2 x 16 tokens") != std::string::npos);
    CHECK(cpu->advice.find("--dtype bf16") != std::string::npos);

    // The same plan as a CUDA run with layers 2 and 3 offloaded (a placement a GPU machine makes;
    // built by hand here, where there is no GPU).
    const c10::Device gpu(c10::kCUDA, 0);
    m.placement.embed_device = gpu;
    m.placement.compute.assign(4, gpu);
    m.placement.home = {gpu, gpu, c10::Device(c10::kCPU), c10::Device(c10::kCPU)};
    auto off = host_memory_need(m, lo);
    REQUIRE(off);
    CHECK(off->what == "the 2 offloaded layers (pinned host memory)");
    // Staging: the two largest tensors (--load-threads 2) as stored (bf16 unless config.json says
    // float32), each rounded up to a power of two.
    uint64_t largest[2] = {0, 0};
    for (const WeightSpec & s : m.plan.sources) {
        uint64_t n = 1;
        for (int64_t d : s.shape) n *= static_cast<uint64_t>(d);
        uint64_t b = n * (m.cfg.checkpoint_dtype == "float32" ? 4 : 2), p = 1;
        while (p < b) p <<= 1;
        if (p > largest[0]) {
            largest[1] = largest[0];
            largest[0] = p;
        } else if (p > largest[1]) {
            largest[1] = p;
        }
    }
    CHECK(off->bytes == m.estimate.layer_bytes[2] + m.estimate.layer_bytes[3] + largest[0] + largest[1]);
    CHECK(off->breakdown.find("2 tensors at a time") != std::string::npos);
    // Every layer on the GPU: nothing but staging on the host, not checked.
    m.placement.home.assign(4, gpu);
    CHECK_FALSE(host_memory_need(m, lo));
}
