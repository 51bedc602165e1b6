// Safetensors reader/writer: round trips, and every header violation the reference reader
// rejects gives an error naming the file (and the tensor where there is one).
#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "extractor/checkpoint/safetensors.h"
#include "extractor/checkpoint/sharded.h"
#include "tests/extractor/test_util.h"
#include "fuzz/safetensors_check.h"
#include "tests/support/temp_dir.h"
#include "tests/support/error_of.h"

#include <doctest/doctest.h>

using namespace extractor;

namespace {

std::string raw_file(const std::string & header, size_t data_bytes) {
    std::string out(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
    return out + header + std::string(data_bytes, '\0');
}

using tests::error_of;

}  // namespace

TEST_CASE("safetensors: write then read round-trips names, dtypes, shapes, values and metadata") {
    tests::TempDir dir;
    const std::string path = dir / "t.safetensors";
    at::Tensor a = at::arange(12, at::kFloat).reshape({3, 4});
    at::Tensor b = at::arange(5, at::kFloat).to(at::kBFloat16);
    at::Tensor c = at::tensor({1, 2, 3}, at::kLong);
    at::Tensor s = at::scalar_tensor(7.5, at::kHalf);  // rank 0
    write_safetensors(path, {{"a", a}, {"b", b}, {"c", c}, {"s", s}}, {{"format", "pt"}, {"who", "test"}});
    SafetensorsFile f = SafetensorsFile::open(path);
    CHECK(f.names() == std::vector<std::string>{"a", "b", "c", "s"});
    CHECK(f.info("b").dtype == "BF16");
    CHECK(f.info("a").shape == std::vector<int64_t>{3, 4});
    CHECK(f.info("s").shape.empty());
    CHECK(at::equal(f.load("a"), a));
    CHECK(at::equal(f.load("b"), b));
    CHECK(at::equal(f.load("c"), c));
    CHECK(f.load("s").item<double>() == 7.5);
    CHECK(f.metadata()["who"] == "test");
    // The buffer starts 8-byte aligned (writers pad the header with spaces).
    CHECK(f.info("a").file_offset % 8 == 0);
    CHECK(error_of([&] { f.info("nope"); }).find("tensor nope") != std::string::npos);
}

TEST_CASE("safetensors: each malformed header is refused with the file and tensor named") {
    tests::TempDir dir;
    auto check = [&](const std::string & name, const std::string & bytes, const std::string & expect) {
        const std::string path = dir / name;
        tests::write_file(path, bytes);
        std::string msg = error_of([&] { SafetensorsFile::open(path); });
        INFO(name << ": " << msg);
        CHECK(msg.find(path) != std::string::npos);
        CHECK(msg.find(expect) != std::string::npos);
    };
    const std::string ok = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    check("short", std::string(5, '\0'), "8-byte header length");
    check("huge", raw_file(ok, 8).replace(0, 8, std::string("\xff\xff\xff\xff\xff\x00\x00\x00", 8)), "exceeds");
    check("notjson", raw_file("{not json", 0), "JSON");
    check("truncated", raw_file(ok, 4), "truncated");
    check("trailing", raw_file(ok, 12), "after the last tensor");
    check("dtype", raw_file(R"({"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8), "tensor w: unsupported dtype Q7");
    check("size", raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "tensor w: data_offsets span 8 bytes");
    check("hole", raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "tensor w: hole");
    check("overlap", raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
          "overlaps");
    check("negative", raw_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "tensor w: shape entries");
    check("meta", raw_file(R"({"__metadata__":{"k":1},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8), "__metadata__");
}

TEST_CASE("safetensors: committed fuzz regression inputs are refused or parsed, never crash") {
    namespace fs = std::filesystem;
    const fs::path dir = EXTRACTOR_FUZZ_REGRESSIONS_DIR;
    int seen = 0;
    if (fs::exists(dir))
        for (const auto & e : fs::directory_iterator(dir)) {
            std::string bytes = tests::read_file(e.path().string());
            CAPTURE(e.path().string());
            try {
                const auto h = parse_safetensors_header(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), bytes.size(),
                                                        e.path().string());
                CHECK(fuzz_checks::safetensors_header_ok(h, bytes.size()));  // the fuzz target's property, not just "no crash"
            } catch (const common::Error &) {
            }
            ++seen;
        }
    MESSAGE("replayed " << seen << " regression inputs");
    CHECK(seen >= 1);
}

TEST_CASE("checkpoint: a sharded index maps every tensor to its shard, and a tensor missing from its shard is named") {
    tests::TempDir dir;
    write_safetensors(dir / "model-00001-of-00002.safetensors", {{"x", at::zeros({2})}});
    write_safetensors(dir / "model-00002-of-00002.safetensors", {{"y", at::ones({3})}});
    tests::write_file(dir / "model.safetensors.index.json",
                      R"({"metadata":{"total_size":20},"weight_map":{"x":"model-00001-of-00002.safetensors","y":"model-00002-of-00002.safetensors"}})");
    Checkpoint ck = Checkpoint::open(dir.path());
    CHECK(ck.files().size() == 2);
    CHECK(ck.view("y").sum().item<float>() == 3.0f);
    CHECK(ck.total_bytes() == 20);
    tests::write_file(dir / "model.safetensors.index.json",
                      R"({"weight_map":{"x":"model-00001-of-00002.safetensors","z":"model-00002-of-00002.safetensors"}})");
    std::string msg = error_of([&] { Checkpoint::open(dir.path()); });
    CHECK(msg.find("model-00002-of-00002.safetensors: tensor z") != std::string::npos);
}

// --- hostile paths and indexes (issue #11)

namespace {
struct Refusal {
    common::ErrorKind kind = common::ErrorKind::Internal;
    std::string message = "<no error>";
};
Refusal open_error(const std::string & dir) {
    try {
        (void)Checkpoint::open(dir);
    } catch (const common::Error & e) {
        return {e.kind(), e.message()};
    }
    return {};
}
}  // namespace

TEST_CASE("checkpoint: weights that are a directory, a symlink loop, a dangling link or a FIFO are refused by name") {
    namespace fs = std::filesystem;
    tests::TempDir dir;
    SUBCASE("directory") {  // before: mmap failed, "No such device", exit 1
        fs::create_directory(dir / "model.safetensors");
        Refusal r = open_error(dir.path());
        CHECK(r.kind == common::ErrorKind::Usage);
        CHECK(r.message == dir / "model.safetensors: is a directory, not a regular file (expected a safetensors file)");
    }
    SUBCASE("symlink loop") {  // before: std::filesystem threw from exists(), exit 1
        fs::create_symlink(dir / "b", dir / "a");
        fs::create_symlink(dir / "a", dir / "b");
        fs::create_symlink(dir / "a", dir / "model.safetensors");
        Refusal r = open_error(dir.path());
        CHECK(r.kind == common::ErrorKind::Usage);
        CHECK(r.message == dir / "model.safetensors: too many levels of symbolic links (a symlink loop?)");
    }
    SUBCASE("dangling symlink") {
        fs::create_symlink(dir / "gone.safetensors", dir / "model.safetensors");
        Refusal r = open_error(dir.path());
        CHECK(r.kind == common::ErrorKind::NotFound);
        CHECK(r.message.find(dir / "model.safetensors: not found") == 0);
    }
    SUBCASE("FIFO") {  // before: open() waited for a writer forever, outside the load watchdog
        const std::string fifo = dir / "model.safetensors";
        REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
        Refusal r;
        CHECK(tests::finishes_without_blocking_on(fifo, [&] { r = open_error(dir.path()); }));
        CHECK(r.kind == common::ErrorKind::Usage);
        CHECK(r.message == fifo + ": is a FIFO (named pipe), not a regular file (expected a safetensors file)");
    }
    SUBCASE("FIFO as the index") {
        const std::string fifo = dir / "model.safetensors.index.json";
        REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
        Refusal r;
        CHECK(tests::finishes_without_blocking_on(fifo, [&] { r = open_error(dir.path()); }));
        CHECK(r.message == fifo + ": is a FIFO (named pipe), not a regular file (expected a safetensors index)");
    }
}

TEST_CASE("checkpoint: an index entry naming no file inside the directory, or a missing shard, is refused by name") {
    tests::TempDir dir;
    write_safetensors(dir / "s.safetensors", {{"x", at::zeros({2})}});
    const std::string index = dir / "model.safetensors.index.json";
    auto with_map = [&](const std::string & weight_map) {
        tests::write_file(index, R"({"weight_map":)" + weight_map + "}");
        return open_error(dir.path());
    };
    for (const std::string & bad : std::vector<std::string>{"..", ".", "", "sub/s.safetensors", std::string("s\0x", 3)}) {
        nlohmann::json wm = {{"x", bad}};
        Refusal r = with_map(wm.dump());
        INFO(r.message);
        CHECK(r.kind == common::ErrorKind::Usage);  // before: "..", "." and "" opened the directory: exit 1
        CHECK(r.message.find(index + ": weight_map entry \"x\" names " + nlohmann::json(bad).dump() +
                             ", not a file name inside the checkpoint directory") == 0);
    }
    Refusal r = with_map(R"({"x":"s.safetensors","y":"gone.safetensors"})");
    CHECK(r.kind == common::ErrorKind::NotFound);
    CHECK(r.message.find(dir / "gone.safetensors: not found") == 0);
    CHECK(r.message.find("model.safetensors.index.json") != std::string::npos);
    r = with_map(R"({"":"s.safetensors"})");
    CHECK(r.message.find("weight_map entry \"\": a tensor name must have 1 to 1024 bytes") != std::string::npos);
    r = with_map(R"(["x"])");
    CHECK(r.message == index + ": no weight_map object");
    tests::write_file(index, "[1]");
    CHECK(open_error(dir.path()).message == index + ": not a JSON object");
}

TEST_CASE("checkpoint: committed index fuzz regression inputs are refused or parsed, never crash") {
    namespace fs = std::filesystem;
    int seen = 0;
    for (const auto & e : fs::directory_iterator(SAFETENSORS_INDEX_FUZZ_REGRESSIONS_DIR)) {
        const std::string text = tests::read_file(e.path().string());
        try {
            for (const auto & [name, file] : parse_safetensors_index(text, e.path().string())) {
                CHECK(!name.empty());
                CHECK(file.find('/') == std::string::npos);
                CHECK(file != "..");
            }
        } catch (const common::Error & err) {
            CHECK(err.kind() == common::ErrorKind::Usage);
        }
        ++seen;
    }
    MESSAGE("replayed " << seen << " regression inputs");
    CHECK(seen >= 1);
}

TEST_CASE("safetensors: a shard truncated while mapped ends with exit 2 naming the file, not a bare SIGBUS") {
    tests::TempDir dir;
    const std::string path = dir / "shrinks.safetensors";
    write_safetensors(path, {{"w", at::ones({64, 1024}, at::kFloat)}});  // 256 KiB of data: many pages
    const std::string err_path = dir / "stderr";
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // The child maps the file, another writer cuts it to its header, and the child reads on.
        const int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ::dup2(fd, STDERR_FILENO);
        SafetensorsFile f = SafetensorsFile::open(path);
        const at::Tensor w = f.view("w");
        if (::truncate(path.c_str(), static_cast<off_t>(f.info("w").file_offset)) != 0) ::_exit(90);
        const auto * bytes = static_cast<const volatile uint8_t *>(w.data_ptr());
        unsigned sum = 0;
        for (int64_t i = 0; i < w.numel() * 4; i += 4096) sum += bytes[i];
        ::_exit(sum == 12345 ? 91 : 92);  // not reached: the first page past the end faults
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));  // killed by SIGBUS before the guard
    CHECK(WEXITSTATUS(status) == 2);
    std::ifstream in(err_path);
    const std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(err.find(path) != std::string::npos);
    CHECK(err.find("shrank while it was being read") != std::string::npos);
}

TEST_CASE("safetensors: element count x element size past 2^64 is refused, not wrapped to a 0-byte tensor") {
    // I64 [2^61] is 2^64 bytes, which wrapped to 0: with data_offsets [8,8] it was accepted as empty.
    auto header = [](const std::string & dtype, const std::string & shape) {
        return R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":")" + dtype + R"(","shape":)" + shape +
               R"(,"data_offsets":[8,8]}})";
    };
    auto parse = [](const std::string & bytes) {
        return parse_safetensors_header(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), bytes.size(), "w.safetensors");
    };
    for (const auto & [dtype, shape] : std::vector<std::pair<std::string, std::string>>{
             {"I64", "[2305843009213693952]"}, {"F32", "[4611686018427387904]"}, {"I32", "[2,2305843009213693952]"},
             {"F64", "[1073741824,1073741824,2]"}}) {
        CAPTURE(dtype + " " + shape);
        const std::string msg = error_of([&] { parse(raw_file(header(dtype, shape), 8)); });
        CHECK(msg.find("w.safetensors") != std::string::npos);
        CHECK(msg.find("tensor w") != std::string::npos);
        CHECK(msg.find("more than 2^64 bytes") != std::string::npos);
    }
    // A zero dim makes a real empty tensor whatever the other dims are; it passes, and the fuzz
    // property (exact bytes in 128 bits) agrees.
    const std::string empty = raw_file(header("I64", "[4611686018427387904,0]"), 8);
    const auto h = parse(empty);
    CHECK(h.tensors.size() == 2);
    CHECK(fuzz_checks::safetensors_header_ok(h, empty.size()));
    // The property itself catches a wrapped size: the parsed header of the regression input, had
    // the parser accepted it, would say 0 bytes for 2^64.
    extractor::TensorInfo t;
    t.dtype = "I64";
    t.shape = {int64_t{1} << 61};
    uint64_t bytes = 0;
    CHECK_FALSE(fuzz_checks::exact_tensor_bytes(t, bytes));
}
