// Quoting a value for POSIX sh: the one quoter every part uses when a value (a path, an id, a
// user's argument) goes into shell text, so that no value can become code.
#pragma once

#include <string>
#include <string_view>

namespace common {

// 'text', with each ' written as '\'' (close the quote, an escaped quote, reopen): the result is one
// word to sh whatever the bytes, newlines and $ included.
inline std::string sh_quote(std::string_view text) {
    std::string out = "'";
    for (char c : text) {
        if (c == '\'') out += "'\\''";
        else out += c;
    }
    return out + "'";
}

}  // namespace common
