// The one retry-delay policy: exponential backoff, capped, optionally jittered. HTTP retries
// (common/http), SSH connects (bifrost/connection) and bifrost's reconnects (client_impl.h) each
// sleep their own way (a Clock, or a plain sleep under a reconnect window), but take the delay here.
#pragma once

namespace common {

struct Backoff {
    double first_s = 0.5;   // the delay before retry 1
    double max_s = 5;       // no delay is longer (jitter included)
    // ±50 % uniformly, so that many clients failing together do not retry in lockstep.
    bool jitter = false;

    // The delay before retry `retry` (1-based): min(max_s, first_s * 2^(retry-1) [* U(0.5, 1.5)]).
    double delay_s(int retry) const;
};

}  // namespace common
