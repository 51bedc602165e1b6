// data.hub_rows end to end: deploy_and_analyze on the local provider (the rehearsal's instance, a
// real sshd on this machine) with its text taken from the dataset viewer emulator
// (tests/emulators/hf_datasets.py). The model is a fixture checkpoint written here with a tiny
// byte-level tokenizer beside it, pushed as a local checkpoint, so extract tokenizes the fetched
// text on the "instance" as it would FineWeb-Edu's on a cloud.
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "common/subprocess.h"
#include "tests/deploy/e2e_support.h"
#include "tests/support/emulator.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;
using namespace tests::e2e;

namespace {

// A tiny OLMoE fixture (vocabulary 128) and a byte-level BPE tokenizer.json covering what the
// emulator's documents hold: lower-case letters, and the space (byte-level 'Ġ'). Ids stay below 128.
std::string write_model(const TestDir & env) {
    const std::string model = env.dir / "model";
    auto r = common::run_process({EXTRACT_BIN, "fixture", "--family", "olmoe", "--out", model, "--layers", "2", "--hidden", "64", "--seed",
                                  "1", "--plant", "7@0-1"},
                                 run_opts());
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    nlohmann::json vocab = nlohmann::json::object();
    for (char c = 'a'; c <= 'z'; ++c) vocab[std::string(1, c)] = c - 'a';
    vocab["\xC4\xA0"] = 26;
    vocab["th"] = 27;
    nlohmann::json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    nlohmann::json tok = {{"version", "1.0"}, {"added_tokens", nlohmann::json::array()}, {"normalizer", nullptr},
                          {"pre_tokenizer", bl}, {"post_processor", bl}, {"decoder", bl},
                          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                                     {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                                     {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                                     {"vocab", vocab}, {"merges", {"t h"}}}}};
    tests::write_file(model + "/tokenizer.json", tok.dump());
    return model;
}

std::string config(const TestDir & env, const std::string & model) {
    const std::string path = env.dir / "hub.yaml";
    tests::write_file(path, "name: hubrows\n"
                            "model: {path: " + model + ", dtype: f32}\n"
                            "data:\n"
                            "  hub_rows: {dataset: HuggingFaceFW/fineweb-edu, config: default, split: train, field: text}\n"
                            "  num_sequences: 4\n  sequence_length: 64\n  batch_size: 2\n  overlap: 32\n"
                            "resources: {providers: [local], gpu_count: 0, disk_gb: 1}\n"
                            "policy: {on_success: terminate, on_failure: terminate, max_duration: 1h, heartbeat_timeout: 2m}\n");
    return path;
}

std::vector<std::string> args(const TestDir & env, const std::string & cfg) {
    std::vector<std::string> a{DEPLOY_BIN, "--config", cfg, "--output-dir", env.dir / "runs"};
    for (const auto & s : env.state_args()) a.push_back(s);
    return a;
}

common::RunOptions opts(const TestDir & env, const tests::Emulator & viewer) {
    auto o = run_opts();
    o.extra_env.push_back("HF_DATASETS_SERVER_URL=" + viewer.base_url());
    o.extra_env.push_back("XDG_CACHE_HOME=" + env.dir / "xdg");
    return o;
}

std::string only_run_dir(const TestDir & env) {
    std::string found;
    if (fs::exists(env.dir / "runs"))
        for (const auto & e : fs::directory_iterator(env.dir / "runs")) found = e.path().string();
    return found;
}

// Rows [0, n) of the default split as `viewer` serves them, joined with one space (read directly,
// not through the code under test).
std::string served_text(const tests::Emulator & viewer, int n) {
    std::string out;
    for (int offset = 0; offset < n; offset += 100) {
        auto reply = tests::http_call(viewer.port(), "GET",
                                      "/rows?dataset=HuggingFaceFW%2Ffineweb-edu&config=default&split=train&offset=" + std::to_string(offset) +
                                          "&length=100");
        const auto answer = reply.json();
        for (const auto & r : answer["rows"])
            if (r["row_idx"].get<int>() < n) out += (out.empty() ? "" : " ") + r["row"]["text"].get<std::string>();
    }
    return out;
}

// The steps of the run's journal in the order they started.
std::vector<std::string> steps_started(const std::string & run) {
    std::vector<std::string> out;
    std::istringstream in(tests::read_file(run + "/journal.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_object() && j.value("event", "") == "start") out.push_back(j.value("step", ""));
    }
    return out;
}

}  // namespace

TEST_CASE("e2e hub rows: the rehearsal flow reads its text from the dataset viewer before renting, pushes it, and keeps where it came from") {
    TestDir env("deploy-e2e-hub");
    tests::Emulator viewer("hf_datasets");
    const std::string model = write_model(env);
    auto r = common::run_process(args(env, config(env, model)), opts(env, viewer));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const std::string run = only_run_dir(env);
    REQUIRE_FALSE(run.empty());
    // The data step first, before anything is asked of a provider.
    const auto steps = steps_started(run);
    REQUIRE_FALSE(steps.empty());
    CHECK(steps.front() == "data");
    CHECK(std::find(steps.begin(), steps.end(), "create") > std::find(steps.begin(), steps.end(), "data"));
    // 64 + 3 x 32 = 160 tokens, 1280 bytes: the first page holds them.
    const auto record = json_file(run + "/data/hub_rows.json");
    CHECK(record["tokens_needed"] == 160);
    CHECK(record["target_bytes"] == 1280);
    CHECK(record["dataset"] == "HuggingFaceFW/fineweb-edu");
    const std::string text = tests::read_file(run + "/data/hub_rows.txt");
    CHECK(record["sha256"] == common::sha256_hex(text));
    CHECK(text.size() >= 1280);
    // Pushed as the run's input, as it was fetched.
    CHECK(tests::read_file(run + "/payload/hub_rows.txt") == text);
    // The record travels home with the results, and the summary names it.
    CHECK(json_file(run + "/results/data_source.json") == record);
    CHECK(fs::exists(run + "/results/analysis/outliers.json"));
    CHECK(r.out.find("data: HuggingFaceFW/fineweb-edu (config default, split train): first " + std::to_string(record["rows"].get<int>()) + " rows") !=
          std::string::npos);
    CHECK(r.err.find("data: HuggingFaceFW/fineweb-edu (config default, split train): rows 0..") != std::string::npos);
    CHECK(local_instances(env) == 0);
    CHECK(viewer.state()["requests"].size() == 1);
    CHECK(record["endpoint"] == viewer.base_url());
    CHECK(record["from_cache"] == false);

    // The same config against another viewer (another HF_DATASETS_SERVER_URL) with the same row
    // cache: its own rows are fetched, never the first viewer's served under its name.
    tests::Emulator other("hf_datasets");
    other.configure({{"splits", {{{"dataset", "HuggingFaceFW/fineweb-edu"}, {"config", "default"}, {"split", "train"}, {"num_rows", 1000},
                                  {"doc_bytes", 100}}}}});
    fs::remove_all(env.dir / "runs");
    auto second = common::run_process(args(env, config(env, model)), opts(env, other));
    INFO(second.err);
    REQUIRE(second.exit_code == 0);
    const std::string run2 = only_run_dir(env);
    const auto record2 = json_file(run2 + "/data/hub_rows.json");
    CHECK(record2["endpoint"] == other.base_url());
    CHECK(record2["from_cache"] == false);
    CHECK(other.state()["requests"].size() == 1);
    CHECK(second.err.find("from the row cache") == std::string::npos);
    const std::string text2 = tests::read_file(run2 + "/data/hub_rows.txt");
    CHECK(text2 == served_text(other, record2["rows"].get<int>()));
    CHECK(text2 != text);
    CHECK(tests::read_file(run2 + "/payload/hub_rows.txt") == text2);
    CHECK(local_instances(env) == 0);

    // A split too short for the run: refused at the data step (exit 2), nothing rented, no request
    // to the cloud side at all; the row cache of the first run is keyed by its own split.
    viewer.reset();
    viewer.configure({{"splits", {{{"dataset", "HuggingFaceFW/fineweb-edu"}, {"config", "default"}, {"split", "train"}, {"num_rows", 3},
                                   {"doc_bytes", 100}}}}});
    fs::remove_all(env.dir / "runs");
    fs::remove_all(env.dir / "xdg");
    auto short_split = common::run_process(args(env, config(env, model)), opts(env, viewer));
    INFO(short_split.err);
    CHECK(short_split.exit_code == 2);
    CHECK(short_split.err.find("ends after 3 rows holding") != std::string::npos);
    const std::string failed = only_run_dir(env);
    REQUIRE_FALSE(failed.empty());
    CHECK(journal_has(failed, "data", "failed"));
    CHECK_FALSE(journal_has(failed, "offers", "start"));
    CHECK_FALSE(journal_has(failed, "create", "start"));
    CHECK(local_instances(env) == 0);
}
