// gitignore semantics (checked against git's documented behaviour for each pattern form).
#include <doctest/doctest.h>

#include "bifrost/ignore.h"

using bifrost::glob_match;
using bifrost::IgnoreSet;
using bifrost::parse_ignore;

namespace {
IgnoreSet rules(const std::string & text, const std::string & base = "") {
    IgnoreSet s;
    s.add(parse_ignore(text, base));
    return s;
}
}  // namespace

TEST_CASE("ignore: glob wildcards stop at '/', ** crosses directories") {
    CHECK(glob_match("*.py", "a.py"));
    CHECK_FALSE(glob_match("*.py", "d/a.py"));
    CHECK(glob_match("a?c", "abc"));
    CHECK_FALSE(glob_match("a?c", "a/c"));
    CHECK(glob_match("[a-c]x", "bx"));
    CHECK_FALSE(glob_match("[!a-c]x", "bx"));
    CHECK(glob_match("**/foo", "foo"));
    CHECK(glob_match("**/foo", "a/b/foo"));
    CHECK(glob_match("a/**/b", "a/b"));
    CHECK(glob_match("a/**/b", "a/x/y/b"));
    CHECK(glob_match("abc/**", "abc/x/y"));
    CHECK_FALSE(glob_match("abc/**", "abc"));
    CHECK(glob_match("\\*lit", "*lit"));
    CHECK_FALSE(glob_match("\\*lit", "xlit"));
}

TEST_CASE("ignore: unanchored patterns match the name at any depth, anchored ones from their file's dir") {
    auto s = rules("*.log\n/build\ndocs/tmp\n");
    CHECK(s.ignored("x.log", false));
    CHECK(s.ignored("a/b/x.log", false));
    CHECK(s.ignored("build", true));
    CHECK_FALSE(s.ignored("src/build", true));
    CHECK(s.ignored("docs/tmp", true));
    CHECK_FALSE(s.ignored("x/docs/tmp", true));
    // A nested .gitignore's anchored pattern is relative to its own directory.
    auto nested = rules("/out\n*.tmp\n", "sub");
    CHECK(nested.ignored("sub/out", true));
    CHECK_FALSE(nested.ignored("out", true));
    CHECK(nested.ignored("sub/deep/x.tmp", false));
    CHECK_FALSE(nested.ignored("x.tmp", false));
}

TEST_CASE("ignore: negation re-includes, last match wins, directory-only patterns skip files") {
    auto s = rules("*.ckpt\n!keep.ckpt\ncache/\n# comment\n\\#hash\n\\!bang\ntrailing   \n");
    CHECK(s.ignored("model.ckpt", false));
    CHECK_FALSE(s.ignored("keep.ckpt", false));
    CHECK(s.ignored("cache", true));
    CHECK_FALSE(s.ignored("cache", false));  // a file named cache is not a directory
    CHECK(s.ignored("#hash", false));
    CHECK(s.ignored("!bang", false));
    CHECK(s.ignored("trailing", false));
    auto order = rules("!a.txt\n*.txt\n");
    CHECK(order.ignored("a.txt", false));  // the later rule wins
}
