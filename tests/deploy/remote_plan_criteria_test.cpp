// Remote plan: the analysis job passes the outlier fractions only when the config sets values of
// its own, so a run with the defaults is labelled as the plain mode in its results, and the values
// it does pass reach analyze exactly.
#include <string>

#include "common/subprocess.h"
#include "deploy/remote_plan.h"
#include "deploy/run_config.h"

#include <doctest/doctest.h>

TEST_CASE("remote plan: the job passes --layer-fraction and --position-fraction only when the config differs from the defaults") {
    const auto l = deploy::remote_layout("/home/u", "r1", "");
    auto cfg = deploy::rehearsal_defaults();
    std::string job = deploy::job_script(cfg, l, "/c/bin", "");
    REQUIRE(job.find("\"$bin/analyze\" extract") != std::string::npos);
    CHECK(job.find("--layer-fraction") == std::string::npos);
    CHECK(job.find("--position-fraction") == std::string::npos);

    // A value of its own, even one that six significant digits would round: passed exactly.
    cfg = deploy::parse_run_config("model:\n  fixture: {family: olmoe}\ndata:\n  synthetic_tokens: {vocab: 100}\n"
                                   "analysis:\n  position_fraction: 0.0612345678\n");
    deploy::validate(cfg);
    job = deploy::job_script(cfg, l, "/c/bin", "");
    CHECK(job.find("--layer-fraction") == std::string::npos);
    CHECK(job.find("--position-fraction 0.0612345678 ") != std::string::npos);
    cfg = deploy::parse_run_config("model:\n  fixture: {family: olmoe}\ndata:\n  synthetic_tokens: {vocab: 100}\n"
                                   "analysis:\n  layer_fraction: 0.5\n");
    deploy::validate(cfg);
    job = deploy::job_script(cfg, l, "/c/bin", "");
    CHECK(job.find("--layer-fraction 0.5 ") != std::string::npos);
    CHECK(job.find("--position-fraction") == std::string::npos);
    CHECK(common::run_process({"sh", "-n", "-c", job}).exit_code == 0);
}

TEST_CASE("remote plan: the job passes analysis.threshold and analysis.thresholds exactly") {
    const auto l = deploy::remote_layout("/home/u", "r1", "");
    auto cfg = deploy::parse_run_config("model:\n  fixture: {family: olmoe}\ndata:\n  synthetic_tokens: {vocab: 100}\n"
                                        "analysis:\n  threshold: 6.00000012\n  thresholds: [4.5, 7.123456789]\n");
    deploy::validate(cfg);
    const std::string job = deploy::job_script(cfg, l, "/c/bin", "");
    CHECK(job.find("--threshold 6.00000012 ") != std::string::npos);
    CHECK(job.find("--thresholds '4.5,7.123456789'") != std::string::npos);
    CHECK(common::run_process({"sh", "-n", "-c", job}).exit_code == 0);
}
