// Token strings for reports (report.h load_token_text): which tokenizer.json a run's report uses,
// decided in one place for `analyze RUN_DIR`, `analyze extract` and `extract run --analyze`.
#include "analysis/report.h"

#include "common/error.h"
#include "common/log.h"

#include <filesystem>
#include <memory>

#include "extractor/tokenizer/tokenizer.h"

namespace analysis {

TokenText load_token_text(const std::string & tokenizer_path, const nlohmann::json & run_metadata) {
    std::string path = tokenizer_path;
    if (path.empty() && run_metadata.is_object() && run_metadata.contains("tokenizer") && run_metadata["tokenizer"].is_object()) {
        const nlohmann::json & t = run_metadata["tokenizer"];
        // json::value() threw a type_error ("unexpected error", exit 1) on {"path": 5}.
        if (t.contains("path") && !t["path"].is_string())
            throw common::Error::usage("run metadata: field `tokenizer.path` is not a string").with("field", "tokenizer.path");
        const std::string recorded = t.contains("path") ? t["path"].get<std::string>() : std::string();
        std::error_code ec;  // exists() without ec threw on a symlink loop or an unreadable folder
        if (!recorded.empty() && std::filesystem::exists(recorded, ec)) path = recorded;
    }
    if (path.empty()) return {};
    auto tok = std::make_shared<extractor::Tokenizer>(extractor::Tokenizer::from_file(path));
    return [tok](int64_t id) { return tok->token_text(static_cast<int32_t>(id)); };
}

}  // namespace analysis
