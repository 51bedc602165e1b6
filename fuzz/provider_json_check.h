// The property fuzz/provider_json_fuzz.cpp checks, as a function the ordinary broker tests call too
// (tests/broker/parsers_test.cpp replays tests/fuzz_regressions/provider_json/ through it).
//
// Input: byte 0 picks one of the functions that take a server body (all four clouds' offer,
// instance, list-page, envelope and create-answer parsers), byte 1 its parameters (GPU count, cloud,
// spot, HTTP status), the rest is the body. The body goes through parse_body() exactly as a real
// answer does, then through the chosen parser, then through what the CLI does with the result
// (filter, sort, rows as JSON, the ssh command line).
//
// Property: for any input, each step either returns or throws common::Error whose message is
// valid UTF-8 and — when it is about the body — is of kind Network and names the provider
// (context "provider"); nothing else is thrown, nothing crashes, hangs or trips a sanitizer; every
// offer that comes out is usable (1..1024 GPUs, finite non-negative prices), and every row and
// message serialises to JSON (valid UTF-8). Returns "" when the property holds, else what broke.
#pragma once

#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "broker/instance.h"
#include "broker/offer.h"
#include "broker/providers/json_api.h"
#include "broker/providers/providers.h"
#include "common/error.h"

namespace fuzz_provider_json {

inline constexpr int kTargets = 18;

// Errors about a server body: Network, naming the provider. The error envelopes the providers define
// (RunPod errors[], Lambda {"error": ...}) may carry any kind their tables map to, still naming it.
inline std::string check_error(const common::Error & e, const std::string & provider, bool any_kind) {
    try {
        (void)nlohmann::json(e.message()).dump();
    } catch (const std::exception &) {
        return "error message is not valid UTF-8: " + e.message().substr(0, 80);
    }
    if (!any_kind && e.kind() != common::ErrorKind::Network)
        return "body error of kind " + std::string(common::kind_name(e.kind())) + ": " + e.message();
    bool named = false;
    for (const auto & [k, v] : e.context()) named |= k == "provider" && v == provider;
    if (!named) return "error does not name provider " + provider + ": " + e.message();
    return "";
}

inline std::string check_offers(const std::vector<broker::Offer> & offers) {
    for (const auto & o : offers) {
        if (!broker::providers::usable_offer(o)) return "an unusable offer came out: " + o.offer_id;
        (void)broker::offer_to_json(o).dump();  // throws on invalid UTF-8
    }
    broker::OfferFilter f;
    f.gpu = "h100";
    f.region = "us";
    f.min_vram_gb = 40;
    (void)broker::filter_offers(offers, f);
    auto sorted = offers;
    for (auto key : {broker::SortKey::Price, broker::SortKey::PricePerGpu, broker::SortKey::Vram, broker::SortKey::Value})
        broker::sort_offers(sorted, key);
    return "";
}

inline std::string check_instance(const broker::Instance & i) {
    (void)broker::instance_to_json(i, 1.7e9).dump();
    (void)broker::ssh_command(i, "/k");
    (void)broker::parse_instance_name(i.name);
    if (i.ssh && (i.ssh->port < 1 || i.ssh->port > 65535)) return "ssh port out of range";
    return "";
}

inline std::string check_instances(const std::vector<broker::Instance> & list) {
    for (const auto & i : list)
        if (auto why = check_instance(i); !why.empty()) return why;
    return "";
}

inline std::string run_one(std::string_view input) {
    using namespace broker::providers;
    if (input.size() < 2) return "";
    const int target = static_cast<unsigned char>(input[0]) % kTargets;
    const unsigned char flags = static_cast<unsigned char>(input[1]);
    const std::string body(input.substr(2));
    static const char * const kProvider[kTargets] = {
        "runpod", "runpod", "runpod", "runpod", "vast", "vast", "vast", "vast", "lambda", "lambda",
        "lambda", "lambda", "lambda", "primeintellect", "primeintellect", "primeintellect", "primeintellect", "vast"};
    const std::string provider = kProvider[target];
    bool envelope = false;  // errors from an error envelope may be of any kind
    try {
        nlohmann::json doc = parse_body(provider, "fuzz", body, 200);
        switch (target) {
        case 0: {  // RunPod search: envelope, then offers for a count/cloud/spot
            envelope = true;
            auto data = runpod_graphql_data(doc, "search offers");
            envelope = false;
            return check_offers(runpod_parse_offers(data, 1 + flags % 8, flags & 0x10, flags & 0x20));
        }
        case 1: {  // RunPod pod
            envelope = true;
            auto data = runpod_graphql_data(doc, "get");
            envelope = false;
            if (!data.contains("pod") || data["pod"].is_null()) return "";
            return check_instance(runpod_parse_pod(data["pod"]));
        }
        case 2: {  // RunPod myself.pods
            envelope = true;
            auto data = runpod_graphql_data(doc, "list pods");
            envelope = false;
            return check_instances(runpod_parse_pods(data));
        }
        case 3: {  // RunPod errors[] classification on its own
            envelope = true;
            throw runpod_graphql_error(doc.is_object() && doc.contains("errors") ? doc["errors"] : doc, "fuzz");
        }
        case 4: return check_offers(vast_parse_offers(doc, flags & 1, flags >> 1));
        case 5: {
            auto i = vast_parse_show(doc);
            return i ? check_instance(*i) : "";
        }
        case 6: {
            std::string token;
            bool empty_page = false;
            return check_instances(vast_parse_list_page(doc, token, empty_page));
        }
        case 7: {
            auto a = vast_parse_create(doc);
            (void)nlohmann::json(a.reason).dump();
            return a.contract < 0 ? "negative contract" : "";
        }
        case 8:
        case 9:
        case 10:
        case 11:
        case 12: {  // Lambda: the envelope at some status, then one payload parser
            static const long kStatus[] = {200, 200, 400, 404, 429, 500, 201, 403};
            envelope = true;
            auto data = lambda_data(kStatus[flags % 8], doc, body, "fuzz");
            envelope = false;
            if (target == 8) return check_offers(lambda_parse_offers(data));
            if (target == 9) return check_instances(lambda_parse_instances(data));
            if (target == 10) return check_instance(lambda_parse_instance(data));
            if (target == 11) {
                std::string id = lambda_parse_launch(data);
                (void)nlohmann::json(id).dump();
                return "";
            }
            (void)nlohmann::json(lambda_find_key(data, "ssh-ed25519 AAAA")).dump();
            return "";
        }
        case 13: {
            auto offers = prime_parse_offers(doc);
            (void)prime_total_count(doc, "totalCount");
            return check_offers(offers);
        }
        case 14: return check_instance(prime_parse_pod(doc));
        case 15: {
            size_t page = 0;
            auto list = prime_parse_pods_page(doc, page);
            (void)prime_total_count(doc, "total_count");
            return check_instances(list);
        }
        case 16: {
            auto e = prime_parse_ssh(doc);
            if (e && (e->port < 1 || e->port > 65535)) return "ssh port out of range";
            return "";
        }
        default: return "";  // 17: parse_body alone (above)
        }
    } catch (const common::Error & e) {
        return check_error(e, provider, envelope);
    } catch (const std::exception & e) {
        return std::string("not a common::Error: ") + e.what();
    } catch (...) {
        return "not a common::Error (unknown exception)";
    }
}

}  // namespace fuzz_provider_json
