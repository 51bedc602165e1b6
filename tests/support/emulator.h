// Test launcher for the provider API emulators (tests/emulators/emulator.py): starts one emulator
// on 127.0.0.1 for the lifetime of the object and drives its control API (/_emulator/...).
// The control client is a plain POSIX-socket HTTP/1.1 client, so emulator tests never depend on the
// broker's own HTTP code. See tests/emulators/README.md for the paths, faults and state shapes.
//
//   tests::Emulator vast("vast", {.api_key = "k"});
//   vast.configure({{"ssh_port", sshd.port()}, {"boot_polls", 1}});
//   vast.inject({{"kind", "http_status"}, {"status", 429}, {"retry_after_s", 1}, {"count", 2}});
//   auto r = tests::http_call(vast.port(), "GET", "/api/v0/instances/", "", {{"Authorization", "Bearer k"}});
//   CHECK(vast.state()["requests"].size() == 1);
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/subprocess.h"

namespace tests {

class TempDir;

struct EmulatorOptions {
    std::string api_key;           // the only key the emulator accepts; empty: any non-empty key
    int latency_ms = 0;            // delay before every provider-API answer (not the control API)
    int seed = 0;                  // ids and per-host variation
    std::chrono::milliseconds start_timeout{15000};
};

class Emulator {
public:
    // provider: "runpod" | "vast" | "lambda" | "primeintellect" | "hf_datasets" (the Hub's dataset viewer). Throws common::Error (with the
    // emulator's stderr) when it does not come up before the deadline.
    explicit Emulator(std::string provider, EmulatorOptions options = {});
    ~Emulator();
    Emulator(const Emulator &) = delete;
    Emulator & operator=(const Emulator &) = delete;

    std::string base_url() const;  // "http://127.0.0.1:PORT"
    int port() const { return port_; }
    const std::string & provider() const { return provider_; }

    nlohmann::json state();                          // GET /_emulator/state
    void configure(const nlohmann::json & config);   // POST /_emulator/config
    void inject(const nlohmann::json & fault);       // one fault object, or {"faults": [...]}
    void reset();                                    // POST /_emulator/reset
    std::string log_text() const;                    // the emulator's stderr so far

private:
    nlohmann::json control(const std::string & method, const std::string & path, const nlohmann::json * body);

    std::string provider_;
    std::unique_ptr<TempDir> dir_;
    common::ChildProcess process_;
    int port_ = 0;
};

struct HttpReply {
    int status = 0;
    std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
    std::string body;
    std::string header(const std::string & name) const;       // "" when absent
    nlohmann::json json() const;                               // throws on a non-JSON body
};

// One HTTP/1.1 request to 127.0.0.1:port with "Connection: close"; reads the whole answer.
// Throws std::runtime_error when the connection fails or closes without an answer (the
// emulator's drop_connection fault), or after `timeout`.
HttpReply http_call(int port, const std::string & method, const std::string & target, const std::string & body = {},
                    const std::vector<std::pair<std::string, std::string>> & headers = {},
                    std::chrono::milliseconds timeout = std::chrono::milliseconds(20000));

}  // namespace tests
