// The retry-delay policy (common/backoff.h) that HTTP, SSH connects and bifrost's reconnects share.
#include "common/backoff.h"

#include <doctest/doctest.h>

TEST_CASE("backoff: doubles from the first delay up to the cap") {
    const common::Backoff b{0.5, 5.0};
    CHECK(b.delay_s(1) == 0.5);
    CHECK(b.delay_s(2) == 1.0);
    CHECK(b.delay_s(3) == 2.0);
    CHECK(b.delay_s(4) == 4.0);
    CHECK(b.delay_s(5) == 5.0);
    CHECK(b.delay_s(1000) == 5.0);  // no overflow to inf or nan far out
    CHECK(b.delay_s(0) == 0.5);     // before the first retry counts as the first
    CHECK(common::Backoff{0.5, 8.0}.delay_s(5) == 8.0);
}

TEST_CASE("backoff: jitter stays within half and one and a half times the delay, and under the cap") {
    const common::Backoff b{0.5, 20.0, /*jitter=*/true};
    bool varied = false;
    double first = b.delay_s(3);
    for (int i = 0; i < 200; ++i) {
        double d = b.delay_s(3);  // 2 s nominal
        CHECK(d >= 1.0);
        CHECK(d <= 3.0);
        varied |= d != first;
        CHECK(b.delay_s(10) <= 20.0);  // 256 s nominal, jittered, capped
    }
    CHECK(varied);
}
