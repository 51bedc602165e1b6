// The extract CLI end to end (in-process): fixture -> inspect -> run, exit codes, --json, help.
#include <ATen/ATen.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "extractor/cli/cli.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace {

struct Result {
    int code;
    std::string out, err;
};

// Captures a file descriptor (1 or 2) into a file for the duration of a call: errors and logs are
// written with stdio (common/log, report_error), results with iostreams, so redirecting the
// iostream buffers alone would miss the errors.
class FdCapture {
public:
    FdCapture(int fd, std::string path) : fd_(fd), path_(std::move(path)) {
        std::cout.flush();
        std::fflush(nullptr);
        saved_ = ::dup(fd_);
        int f = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ::dup2(f, fd_);
        ::close(f);
    }
    std::string finish() {
        std::cout.flush();
        std::fflush(nullptr);
        ::dup2(saved_, fd_);
        ::close(saved_);
        return tests::read_file(path_);
    }

private:
    int fd_, saved_ = -1;
    std::string path_;
};

Result run(std::vector<std::string> args) {
    args.insert(args.begin(), "extract");
    std::vector<char *> argv;
    for (auto & a : args) argv.push_back(a.data());
    tests::TempDir capture_dir;
    FdCapture out(STDOUT_FILENO, capture_dir / "out"), err(STDERR_FILENO, capture_dir / "err");
    int code = extractor::cli::extract_main(static_cast<int>(argv.size()), argv.data());
    std::string out_text = out.finish(), err_text = err.finish();
    return {code, out_text, err_text};
}

}  // namespace

TEST_CASE("cli: fixture, inspect --json and run --json work end to end, bad input gives documented exit codes") {
    tests::TempDir dir;
    Result f = run({"fixture", "--family", "qwen3_moe", "--out", dir / "m", "--layers", "3", "--plant", "5@0-1", "--json"});
    REQUIRE(f.code == 0);
    Result i = run({"inspect", dir / "m", "--json"});
    REQUIRE(i.code == 0);
    auto ij = nlohmann::json::parse(i.out);
    CHECK(ij["model_type"] == "qwen3_moe");
    CHECK(ij["layers"] == 3);
    CHECK(ij["params_active"].get<uint64_t>() < ij["params_total"].get<uint64_t>());
    tests::write_file(dir / "ids.txt", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16");
    Result r = run({"run", dir / "m", "--tokens", dir / "ids.txt", "--seq-len", "8", "--device", "cpu", "--dtype", "f32",
                    "--layers", "0-1", "--out", dir / "out", "--absmax", "--json", "-q"});
    INFO(r.err);
    REQUIRE(r.code == 0);
    auto rj = nlohmann::json::parse(r.out);
    CHECK(rj["tokens"] == 16);
    CHECK(rj["layers"] == 2);
    CHECK(rj["absmax"][0]["max_dim"] == 5);
    auto meta = nlohmann::json::parse(tests::read_file(dir / "out/metadata.json"));
    CHECK(meta["shapes"]["layer_1_ln_mlp"] == nlohmann::json({1, 8, 64}));
    CHECK(meta["sequences"] == 2);

    CHECK(run({"run", dir / "m", "--tokens", dir / "ids.txt", "--dtype", "f8", "--absmax"}).code == 2);
    CHECK(run({"run", dir / "m", "--tokens", dir / "ids.txt", "--seq-len", "8"}).code == 2);  // no sink
    CHECK(run({"run", dir / "nope", "--tokens", dir / "ids.txt", "--absmax"}).code == 9);
    CHECK(run({"frobnicate"}).code == 2);
    Result e = run({"run", dir / "m", "--tokens", dir / "ids.txt", "--layers", "7", "--absmax", "--json"});
    CHECK(e.code == 2);
    CHECK(nlohmann::json::parse(e.err)["error"]["kind"] == "usage");
}

TEST_CASE("cli: a read that stops ends the load with a timeout naming the file and tensor") {
    tests::TempDir dir;
    REQUIRE(run({"fixture", "--family", "llama", "--out", dir / "m", "--layers", "2", "--json"}).code == 0);
    tests::write_file(dir / "ids.txt", "1 2 3 4 5 6 7 8");
    // The reader of this tensor stops as a read from a hung network filesystem would.
    tests::EnvGuard stall("EXTRACTOR_FAULT_STALL_TENSOR", std::string("model.layers.1.mlp.down_proj.weight"));
    const auto t0 = std::chrono::steady_clock::now();
    Result r = run({"run", dir / "m", "--tokens", dir / "ids.txt", "--seq-len", "8", "--device", "cpu", "--absmax",
                    "--load-stall-timeout", "0.5", "--json", "-q"});
    const double took_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(r.err);
    CHECK(r.code == 7);
    auto e = nlohmann::json::parse(r.err)["error"];
    CHECK(e["kind"] == "timeout");
    const std::string msg = e["message"];
    CHECK(msg.find("stalled") != std::string::npos);
    CHECK(msg.find("model.layers.1.mlp.down_proj.weight") != std::string::npos);
    CHECK(msg.find("model.safetensors") != std::string::npos);
    CHECK(took_s < 5.0);  // the watchdog, not the stalled reader (which sleeps 1.5 s), ends it
}

TEST_CASE("cli: every verb has help with examples") {
    for (const char * verb : {"run", "inspect", "fixture"}) {
        Result h = run({verb, "--help"});
        INFO(verb);
        CHECK(h.code == 0);
        CHECK(h.out.find("Examples:") != std::string::npos);
    }
}
