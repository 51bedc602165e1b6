// What a call throws, for tests that check error messages: the message of the common::Error `f`
// throws, or "<no error>" when it returns normally (so a CHECK on the message fails readably).
#pragma once

#include <functional>
#include <string>

#include "common/error.h"

namespace tests {

inline std::string error_of(const std::function<void()> & f) {
    try {
        f();
    } catch (const common::Error & e) {
        return e.message();
    }
    return "<no error>";
}

}  // namespace tests
