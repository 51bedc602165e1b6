// Helpers shared by the extractor tests: a sink that keeps copies of what it sees, a fixture
// + token file in a temp dir, and a guard against a test hanging on a FIFO.
#pragma once

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "extractor/capture.h"
#include "extractor/cli/cli.h"
#include "extractor/extract.h"
#include "extractor/fixture_writer.h"
#include "tests/support/temp_dir.h"

namespace tests {

struct CollectSink : extractor::CaptureSink {
    std::set<std::pair<extractor::Site, int>> want;  // empty: everything
    std::map<std::pair<extractor::Site, int>, at::Tensor> got;
    int batches = 0;
    bool wants(extractor::Site s, int l) const override { return want.empty() || want.count({s, l}); }
    void begin_batch(const extractor::BatchInfo &) override { ++batches; }
    void on_capture(extractor::Site s, int l, const at::Tensor & x) override {
        auto it = got.find({s, l});
        got[{s, l}] = it == got.end() ? x.clone() : at::cat({it->second, x}, 0);
    }
    void end_batch() override {}
};

inline std::string write_ids(const std::string & path, int n, int vocab) {
    std::ofstream out(path);
    out << "[";
    for (int i = 0; i < n; ++i) out << (i ? "," : "") << (i * 7 + 3) % vocab;
    out << "]";
    return path;
}

// Runs the extractor on CPU in f32 over 2 sequences of 12 tokens, collecting every capture.
inline CollectSink run_collect(const std::string & model_dir, const std::string & ids, std::vector<int> layers = {},
                               std::vector<extractor::Site> sites = {extractor::Site::LnAttn, extractor::Site::LnMlp},
                               const std::string & dtype = "f32") {
    extractor::ExtractOptions o;
    o.model_dir = model_dir;
    o.load.device = "cpu";
    o.load.dtype = extractor::parse_dtype(dtype);
    o.load.show_progress = false;
    o.input.tokens_file = ids;
    o.input.seq_len = 12;
    o.input.num_sequences = 2;
    o.input.batch_size = 1;
    CollectSink sink;
    for (int l = 0; l < 64; ++l)
        if (layers.empty() || std::find(layers.begin(), layers.end(), l) != layers.end())
            for (auto s : sites) sink.want.insert({s, l});
    o.layers = std::move(layers);
    o.sites = std::move(sites);
    (void)extractor::run_extraction(o, {&sink});
    return sink;
}

}  // namespace tests

namespace tests {

// Runs f (which should refuse `fifo` without opening it for reading) on a thread. If f is still
// running after 2 s it is blocked in open(): the writing end is opened here so that f returns and
// the test fails instead of hanging. Returns whether f finished in time.
inline bool finishes_without_blocking_on(const std::string & fifo, const std::function<void()> & f) {
    auto pending = std::async(std::launch::async, f);
    if (pending.wait_for(std::chrono::seconds(2)) == std::future_status::ready) {
        pending.get();
        return true;
    }
    int w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
    if (w >= 0) ::close(w);
    pending.wait();
    return false;
}

// extract_main in-process with stdout captured (errors and logs go to stderr, left alone).
inline std::pair<int, std::string> extract_cli(std::vector<std::string> args, const std::string & capture_path) {
    args.insert(args.begin(), "extract");
    std::vector<char *> argv;
    for (auto & a : args) argv.push_back(a.data());
    std::cout.flush();
    std::fflush(nullptr);
    const int saved = ::dup(STDOUT_FILENO);
    const int fd = ::open(capture_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, STDOUT_FILENO);
    ::close(fd);
    const int code = extractor::cli::extract_main(static_cast<int>(argv.size()), argv.data());
    std::cout.flush();
    std::fflush(nullptr);
    ::dup2(saved, STDOUT_FILENO);
    ::close(saved);
    return {code, tests::read_file(capture_path)};
}

}  // namespace tests
