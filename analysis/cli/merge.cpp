// analyze merge A B ... -o C: combine statistics files (batches, reruns of other sequences, parallel
// workers) into one, without a model. Merging is associative, so the order of inputs only affects
// which file's metadata is kept.
#include "analysis/cli/verbs.h"

#include "analysis/stats_file.h"
#include "common/error.h"

#include <nlohmann/json.hpp>

namespace analysis::cli {

int run_merge(const MergeOptions & o, const common::Output & out) {
    if (o.inputs.size() < 2) throw common::Error::usage("merge: give at least two statistics files");
    if (o.output.empty()) throw common::Error::usage("merge: give the output file with -o");
    Statistics merged = load_statistics(o.inputs[0]);
    std::string name = o.inputs[0];
    for (size_t i = 1; i < o.inputs.size(); ++i) {
        merge_into(merged, load_statistics(o.inputs[i]), name, o.inputs[i]);
        name = "the merge of the files before " + o.inputs[i];
    }
    save_statistics(merged, o.output);
    out.object({{"output", o.output},
                {"inputs", o.inputs.size()},
                {"sequences", merged.sequences},
                {"tokens", merged.tokens},
                {"sites", merged.sites.size()}});
    return 0;
}

}  // namespace analysis::cli
