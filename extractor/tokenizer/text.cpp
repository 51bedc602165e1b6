// Text helpers: UTF-8 repair, normalisation through utf8proc, the GPT-2 byte map, and the PCRE2
// wrapper. The whitespace rewrite is the one documented fix that makes PCRE2 (UTF|UCP) agree with
// HF's Oniguruma on `\s` (PCRE2 counts U+180E as space; HF does not; docs/checkpoint-formats.md#whitespace).
#include "extractor/tokenizer/text.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#ifndef TOOLKIT_TOKENIZER_NO_NFC
#include <utf8proc.h>
#endif

#include <cstdlib>
#include <stdexcept>

namespace extractor::text {

// ---------------------------------------------------------------------------------------------
// UTF-8

namespace {
// Length of the valid UTF-8 sequence starting at s[i], or 0 when ill-formed; `consumed` is then the
// maximal subpart (at least 1) to replace by one U+FFFD (Unicode §3.9, "U+FFFD substitution").
std::size_t utf8_sequence(std::string_view s, std::size_t i, std::size_t & consumed) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) return consumed = 1;
    std::size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) need = 1;
    else if (b0 == 0xE0) need = 2, lo = 0xA0;
    else if (b0 >= 0xE1 && b0 <= 0xEC) need = 2;
    else if (b0 == 0xED) need = 2, hi = 0x9F;
    else if (b0 >= 0xEE && b0 <= 0xEF) need = 2;
    else if (b0 == 0xF0) need = 3, lo = 0x90;
    else if (b0 >= 0xF1 && b0 <= 0xF3) need = 3;
    else if (b0 == 0xF4) need = 3, hi = 0x8F;
    else {
        consumed = 1;
        return 0;
    }
    std::size_t k = 1;
    for (; k <= need; ++k) {
        if (i + k >= s.size()) break;
        const auto b = static_cast<unsigned char>(s[i + k]);
        if (b < lo || b > hi) break;
        lo = 0x80, hi = 0xBF;  // only the second byte has the narrowed range
    }
    if (k == need + 1) return consumed = need + 1;
    consumed = k;
    return 0;
}
}  // namespace

bool repair_utf8(std::string_view in, std::string & out) {
    std::size_t i = 0, consumed = 0;
    while (i < in.size() && utf8_sequence(in, i, consumed) != 0) i += consumed;
    if (i == in.size()) return true;
    out.assign(in.substr(0, i));
    while (i < in.size()) {
        if (utf8_sequence(in, i, consumed) != 0) out.append(in.substr(i, consumed));
        else out.append("\xEF\xBF\xBD");
        i += consumed;
    }
    return false;
}

char32_t next_code_point(std::string_view s, std::size_t & i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
        ++i;
        return b0;
    }
    int n = b0 >= 0xF0 ? 3 : b0 >= 0xE0 ? 2 : 1;
    char32_t cp = b0 & (0x3F >> n);
    ++i;
    for (int k = 0; k < n && i < s.size(); ++k, ++i) cp = (cp << 6) | (static_cast<unsigned char>(s[i]) & 0x3F);
    return cp;
}

void append_utf8(std::string & out, char32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

bool is_hf_whitespace(char32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

// ---------------------------------------------------------------------------------------------
// Normalisation

namespace {
bool is_ascii(std::string_view s) {
    for (char c : s)
        if (static_cast<unsigned char>(c) >= 0x80) return false;
    return true;
}
}  // namespace

bool normalization_available() {
#ifdef TOOLKIT_TOKENIZER_NO_NFC
    return false;
#else
    return true;
#endif
}

std::string normalize(std::string_view s, NormalForm form) {
    if (is_ascii(s)) return std::string(s);  // ASCII is invariant under all four forms
#ifdef TOOLKIT_TOKENIZER_NO_NFC
    (void)form;
    return std::string(s);
#else
    int options = UTF8PROC_STABLE;
    switch (form) {
        case NormalForm::NFC: options |= UTF8PROC_COMPOSE; break;
        case NormalForm::NFD: options |= UTF8PROC_DECOMPOSE; break;
        case NormalForm::NFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
        case NormalForm::NFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    }
    utf8proc_uint8_t * dst = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t *>(s.data()),
                                            static_cast<utf8proc_ssize_t>(s.size()), &dst,
                                            static_cast<utf8proc_option_t>(options));
    if (n < 0) {
        // Only reachable for invalid UTF-8, which encode() repairs beforehand.
        throw std::runtime_error(std::string("utf8proc: ") + utf8proc_errmsg(n));
    }
    std::string out(reinterpret_cast<const char *>(dst), static_cast<std::size_t>(n));
    std::free(dst);
    return out;
#endif
}

std::string lowercase(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        char32_t cp = next_code_point(s, i);
#ifdef TOOLKIT_TOKENIZER_NO_NFC
        if (cp >= 'A' && cp <= 'Z') cp += 32;
#else
        if (cp == 0x130) {  // the one unconditional 1:2 lowercase mapping (SpecialCasing.txt), as Rust does
            out += "i\xCC\x87";
            continue;
        }
        cp = static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp)));
#endif
        append_utf8(out, cp);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Byte map (GPT-2 bytes_to_unicode; docs/checkpoint-formats.md#byte-map)

namespace {
struct ByteMap {
    std::array<std::string, 256> to_visible;
    std::array<int, 0x144> from_visible{};  // visible chars are all below U+0144
    ByteMap() {
        from_visible.fill(-1);
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            const bool same = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const char32_t cp = same ? static_cast<char32_t>(b) : static_cast<char32_t>(0x100 + n++);
            append_utf8(to_visible[b], cp);
            from_visible[cp] = b;
        }
    }
};
const ByteMap & byte_map() {
    static const ByteMap map;
    return map;
}
}  // namespace

const std::array<std::string, 256> & byte_to_visible() { return byte_map().to_visible; }

int visible_to_byte(char32_t cp) {
    const auto & m = byte_map().from_visible;
    return cp < m.size() ? m[cp] : -1;
}

// ---------------------------------------------------------------------------------------------
// Regex

namespace {
constexpr const char * kHfSpaceClass =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

// Per-thread match state: PCRE2 match data and a JIT stack larger than the 32 KiB default, so long
// whitespace runs against `\s+(?!\S)` cannot overflow it. A JIT stack must not be shared by threads.
struct MatchState {
    pcre2_match_data * data = nullptr;
    pcre2_match_context * context = nullptr;
    pcre2_jit_stack * jit_stack = nullptr;
    MatchState() {
        data = pcre2_match_data_create(1, nullptr);
        context = pcre2_match_context_create(nullptr);
        jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
        if (context && jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
    ~MatchState() {
        pcre2_match_data_free(data);
        pcre2_match_context_free(context);
        if (jit_stack) pcre2_jit_stack_free(jit_stack);
    }
};
MatchState & match_state() {
    thread_local MatchState state;
    return state;
}
}  // namespace

struct Regex::Impl {
    pcre2_code * code = nullptr;
    ~Impl() { pcre2_code_free(code); }
};

std::string Regex::rewrite_whitespace(const std::string & pattern) {
    std::string out;
    out.reserve(pattern.size() + 64);
    bool in_class = false;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        const char c = pattern[i];
        if (c == '\\' && i + 1 < pattern.size()) {
            const char e = pattern[i + 1];
            ++i;
            if (e == 's') {
                out += in_class ? std::string(kHfSpaceClass) : "[" + std::string(kHfSpaceClass) + "]";
            } else if (e == 'S' && !in_class) {
                out += "[^" + std::string(kHfSpaceClass) + "]";
            } else {
                // `\S` inside a class has no PCRE2 equivalent without class subtraction; it keeps
                // PCRE2's UCP meaning (differs from HF on U+180E only). No known tokenizer uses it.
                out += '\\';
                out += e;
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            out += c;
            // A ']' right after '[' or '[^' is a literal member, not the end of the class.
            if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
            if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
            continue;
        }
        if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
            // POSIX class [:alpha:] inside a bracket expression: copy through its closing ":]".
            const std::size_t end = pattern.find(":]", i + 2);
            if (end != std::string::npos) {
                out.append(pattern, i, end + 2 - i);
                i = end + 1;
                continue;
            }
        }
        if (in_class && c == ']') in_class = false;
        out += c;
    }
    return out;
}

std::string Regex::escape(std::string_view literal) {
    std::string out;
    for (char c : literal) {
        if (std::string_view("\\^$.|?*+()[]{}-/#&~ ").find(c) != std::string_view::npos) out += '\\';
        out += c;
    }
    return out;
}

Regex::Regex(const std::string & pattern, bool hf_compatible) : impl_(std::make_unique<Impl>()) {
    const std::string p = hf_compatible ? rewrite_whitespace(pattern) : pattern;
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(), PCRE2_UTF | PCRE2_UCP, &err,
                                &err_offset, nullptr);
    if (!impl_->code) {
        PCRE2_UCHAR buf[256];
        pcre2_get_error_message(err, buf, sizeof buf);
        throw std::invalid_argument("regex does not compile at offset " + std::to_string(err_offset) + ": " +
                                    reinterpret_cast<const char *>(buf));
    }
    pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);  // no JIT: the interpreter runs it, slower
}

Regex::~Regex() = default;

void Regex::find_all(std::string_view s, std::vector<std::pair<std::size_t, std::size_t>> & out) const {
    MatchState & st = match_state();
    std::size_t pos = 0;
    while (pos <= s.size()) {
        const int rc = pcre2_match(impl_->code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos,
                                   PCRE2_NO_UTF_CHECK, st.data, st.context);
        if (rc == PCRE2_ERROR_NOMATCH) return;
        if (rc < 0) {
            PCRE2_UCHAR buf[256];
            pcre2_get_error_message(rc, buf, sizeof buf);
            throw std::runtime_error(std::string("regex match failed: ") + reinterpret_cast<const char *>(buf));
        }
        const PCRE2_SIZE * ov = pcre2_get_ovector_pointer(st.data);
        const std::size_t start = ov[0], end = ov[1];
        if (end > start) {
            out.emplace_back(start, end);
            pos = end;
        } else {
            if (start >= s.size()) return;
            std::size_t next = start;
            next_code_point(s, next);
            pos = next;
        }
    }
}

bool Regex::matches_at_start(std::string_view s) const {
    MatchState & st = match_state();
    const int rc = pcre2_match(impl_->code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0,
                               PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, st.data, st.context);
    return rc >= 0;
}

}  // namespace extractor::text
