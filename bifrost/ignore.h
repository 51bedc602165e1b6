// gitignore semantics for push: patterns from .gitignore and .bifrostignore in every directory
// (each applies to its own subtree; .bifrostignore after .gitignore, so it can re-include), plus
// the caller's extra patterns at the root. Supported: comments, \# and \! escapes, trailing-space
// trimming, ! negation (last match wins), dir-only patterns (trailing /), anchoring (a / at the
// start or in the middle), *, ?, [a-z] / [!a-z] classes, and ** (leading **/, trailing /**, a/**/b).
// As in git, nothing inside an excluded directory can be re-included (we never descend into it).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace bifrost {

// Glob match of one pattern against a slash-separated path ('*' and '?' stop at '/', '**' does not).
bool glob_match(std::string_view pattern, std::string_view path);

struct IgnoreRule {
    std::string base;      // directory of the file that holds the rule, relative to the root ("" = root)
    std::string pattern;   // without '!', trailing '/' or the leading '/'
    bool negated = false;
    bool dir_only = false;
    bool anchored = false;
};

// Parses one ignore file's text; returns its rules (base set to `base`).
std::vector<IgnoreRule> parse_ignore(std::string_view text, const std::string & base);

class IgnoreSet {
public:
    void add(std::vector<IgnoreRule> rules);
    // Loads <root>/<dir>/.gitignore and .bifrostignore when present.
    void load_dir(const std::string & root, const std::string & dir);
    // path is relative to the root. Last matching rule decides.
    bool ignored(std::string_view path, bool is_dir) const;
    size_t size() const { return rules_.size(); }
    void truncate(size_t n) { rules_.resize(n); }

private:
    std::vector<IgnoreRule> rules_;
};

}  // namespace bifrost
