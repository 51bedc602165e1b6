// model_type -> family. Adding a family: config keys -> weight table -> forward -> this table ->
// fixture writer entry -> CPU tests (they iterate this table) -> GPU parity entry -> README line.
#include "common/error.h"
#include "extractor/families/family.h"

namespace extractor {

const Family & llama_family();
const Family & qwen2_family();
const Family & qwen3_family();
const Family & olmoe_family();
const Family & qwen3_moe_family();
const Family & mixtral_family();
const Family & gpt_oss_family();
const Family & qwen3_next_family();
const Family & glm4_moe_family();

std::vector<const Family *> all_families() {
    return {&llama_family(), &qwen2_family(), &qwen3_family(), &olmoe_family(), &qwen3_moe_family(),
            &mixtral_family(), &gpt_oss_family(), &glm4_moe_family(), &qwen3_next_family()};
}

const Family & find_family(std::string_view model_type) {
    std::string supported;
    for (const Family * f : all_families()) {
        if (f->name() == model_type) return *f;
        supported += (supported.empty() ? "" : ", ") + std::string(f->name());
    }
    throw common::Error::usage("model_type \"" + std::string(model_type) + "\" is not supported (supported: " +
                               supported + ")");
}

}  // namespace extractor
