// `extract fixture --family F --out DIR [--plant DIMS@LAYERS]`: write a tiny random checkpoint.
#include <nlohmann/json.hpp>

#include "extractor/cli/verbs.h"

namespace extractor::cli {

int run_fixture(const FixtureVerbOptions & opt, const common::Output & out) {
    std::vector<std::string> files = write_fixture(opt.fixture);
    out.object({{"family", opt.fixture.family}, {"out_dir", opt.fixture.out_dir}, {"files", files}});
    return 0;
}

}  // namespace extractor::cli
