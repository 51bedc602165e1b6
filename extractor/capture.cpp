// Capture contract implementation (capture.h): site names and the fan-out Tap.
#include "extractor/capture.h"

#include "common/error.h"
#include "extractor/ops.h"

namespace extractor {

std::string_view site_name(Site site) {
    switch (site) {
    case Site::LnAttn: return "ln_attn";
    case Site::LnMlp: return "ln_mlp";
    case Site::Residual: return "residual";
    }
    return "?";
}

Site parse_site(std::string_view name) {
    for (Site s : {Site::LnAttn, Site::LnMlp, Site::Residual})
        if (site_name(s) == name) return s;
    throw common::Error::usage("unknown capture site \"" + std::string(name) + "\" (sites: ln_attn, ln_mlp, residual)");
}

bool Tap::wants(Site site, int layer) const {
    for (const CaptureSink * s : sinks_)
        if (s->wants(site, layer)) return true;
    return false;
}

// Each fan-out is a ProfileScope (EXTRACTOR_PROFILE=1), so a profile says what the sinks cost
// beside the forward's own ops (an expert sink's time is also inside its layer's "moe").
void Tap::begin_batch(const BatchInfo & batch) {
    ops::ProfileScope profile("sinks.begin_batch");
    for (CaptureSink * s : sinks_) s->begin_batch(batch);
}

void Tap::operator()(Site site, int layer, const at::Tensor & x) {
    ops::ProfileScope profile("sinks.capture");
    for (CaptureSink * s : sinks_)
        if (s->wants(site, layer)) s->on_capture(site, layer, x);
}

void Tap::end_batch() {
    ops::ProfileScope profile("sinks.end_batch");
    for (CaptureSink * s : sinks_) s->end_batch();
}

void Tap::on_token_nll(const at::Tensor & nll) {
    ops::ProfileScope profile("sinks.token_nll");
    for (CaptureSink * s : sinks_) s->on_token_nll(nll);
}

ExpertObserver Tap::experts(int layer) {
    std::vector<CaptureSink *> wanting;
    for (CaptureSink * s : sinks_)
        if (s->wants_experts(layer)) wanting.push_back(s);
    if (wanting.empty()) return {};
    return [wanting, layer](const ExpertCapture & c) {
        ops::ProfileScope profile("sinks.experts");
        for (CaptureSink * s : wanting) s->on_experts(layer, c);
    };
}

void Tap::warm_up(const at::Tensor & example) {
    for (CaptureSink * s : sinks_) s->warm_up(example);
}

}  // namespace extractor
