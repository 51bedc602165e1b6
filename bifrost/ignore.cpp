#include "bifrost/ignore.h"

#include <fstream>
#include <sstream>

namespace bifrost {

namespace {

// Matches a [...] class at p (p points at '['); advances p past it. Returns -1 if the class is
// unterminated (then '[' is literal), else 1/0 for match.
int match_class(std::string_view & p, char c) {
    size_t i = 1;
    bool negate = false;
    if (i < p.size() && (p[i] == '!' || p[i] == '^')) {
        negate = true;
        ++i;
    }
    bool matched = false;
    bool first = true;
    while (i < p.size() && (p[i] != ']' || first)) {
        first = false;
        char lo = p[i];
        if (lo == '\\' && i + 1 < p.size()) lo = p[++i];
        char hi = lo;
        if (i + 2 < p.size() && p[i + 1] == '-' && p[i + 2] != ']') {
            hi = p[i + 2];
            if (hi == '\\' && i + 3 < p.size()) {
                hi = p[i + 3];
                ++i;
            }
            i += 2;
        }
        if (c >= lo && c <= hi) matched = true;
        ++i;
    }
    if (i >= p.size()) return -1;
    p = p.substr(i + 1);
    return matched != negate ? 1 : 0;
}

}  // namespace

bool glob_match(std::string_view p, std::string_view s) {
    while (!p.empty()) {
        if (p.size() >= 2 && p[0] == '*' && p[1] == '*') {
            std::string_view rest = p.substr(2);
            while (rest.size() >= 2 && rest[0] == '*' && rest[1] == '*') rest = rest.substr(2);
            if (!rest.empty() && rest[0] == '/') {
                // "**/": zero or more whole directories.
                std::string_view after = rest.substr(1);
                if (glob_match(after, s)) return true;
                for (size_t i = 0; i < s.size(); ++i)
                    if (s[i] == '/' && glob_match(after, s.substr(i + 1))) return true;
                return false;
            }
            for (size_t i = 0; i <= s.size(); ++i)
                if (glob_match(rest, s.substr(i))) return true;
            return false;
        }
        char c = p[0];
        if (c == '*') {
            std::string_view rest = p.substr(1);
            for (size_t i = 0; i <= s.size(); ++i) {
                if (glob_match(rest, s.substr(i))) return true;
                if (i < s.size() && s[i] == '/') return false;
            }
            return false;
        }
        if (s.empty()) return false;
        if (c == '?') {
            if (s[0] == '/') return false;
            p = p.substr(1);
            s = s.substr(1);
            continue;
        }
        if (c == '[') {
            if (s[0] == '/') return false;
            std::string_view q = p;
            int r = match_class(q, s[0]);
            if (r >= 0) {
                if (r == 0) return false;
                p = q;
                s = s.substr(1);
                continue;
            }
        }
        if (c == '\\' && p.size() > 1) {
            p = p.substr(1);
            c = p[0];
        }
        if (c != s[0]) return false;
        p = p.substr(1);
        s = s.substr(1);
    }
    return s.empty();
}

std::vector<IgnoreRule> parse_ignore(std::string_view text, const std::string & base) {
    std::vector<IgnoreRule> rules;
    std::istringstream in{std::string(text)};
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty() || line[0] == '#') continue;
        // Trailing spaces are trimmed unless escaped with a backslash.
        while (!line.empty() && line.back() == ' ' && !(line.size() >= 2 && line[line.size() - 2] == '\\'))
            line.pop_back();
        if (line.empty()) continue;
        IgnoreRule r;
        r.base = base;
        if (line[0] == '!') {
            r.negated = true;
            line = line.substr(1);
        } else if (line[0] == '\\' && line.size() > 1 && (line[1] == '!' || line[1] == '#')) {
            line = line.substr(1);
        }
        if (!line.empty() && line.back() == '/') {
            r.dir_only = true;
            while (!line.empty() && line.back() == '/') line.pop_back();
        }
        if (line.empty()) continue;
        if (line.find('/') != std::string::npos) r.anchored = true;
        if (line[0] == '/') line = line.substr(1);
        r.pattern = line;
        rules.push_back(std::move(r));
    }
    return rules;
}

void IgnoreSet::add(std::vector<IgnoreRule> rules) {
    for (auto & r : rules) rules_.push_back(std::move(r));
}

void IgnoreSet::load_dir(const std::string & root, const std::string & dir) {
    for (const char * name : {".gitignore", ".bifrostignore"}) {
        std::string path = root + "/" + (dir.empty() ? "" : dir + "/") + name;
        std::ifstream in(path);
        if (!in) continue;
        std::stringstream ss;
        ss << in.rdbuf();
        add(parse_ignore(ss.str(), dir));
    }
}

bool IgnoreSet::ignored(std::string_view path, bool is_dir) const {
    bool result = false;
    for (const auto & r : rules_) {
        if (r.dir_only && !is_dir) continue;
        std::string_view rel = path;
        if (!r.base.empty()) {
            if (rel.size() <= r.base.size() || rel.substr(0, r.base.size()) != r.base || rel[r.base.size()] != '/')
                continue;
            rel = rel.substr(r.base.size() + 1);
        }
        bool m;
        if (r.anchored) {
            m = glob_match(r.pattern, rel);
        } else {
            auto slash = rel.rfind('/');
            m = glob_match(r.pattern, slash == std::string_view::npos ? rel : rel.substr(slash + 1));
        }
        if (m) result = !r.negated;
    }
    return result;
}

}  // namespace bifrost
