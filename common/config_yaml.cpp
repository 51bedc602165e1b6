#include "common/config_yaml.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <sstream>
#include <unordered_map>

#include "common/error.h"
#include "common/program.h"
#include "common/regular_file.h"

namespace common {

namespace {

std::string location(const YAML::Mark & mark, const std::string & file) {
    if (mark.is_null()) return file;
    return file + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

// The alias's name as written at its mark ("*name"), for errors; yaml-cpp's events carry only
// the anchor's number.
std::string alias_name(const std::string & text, const YAML::Mark & mark) {
    if (mark.pos < 0 || static_cast<size_t>(mark.pos) >= text.size() || text[static_cast<size_t>(mark.pos)] != '*')
        return "*?";
    size_t end = static_cast<size_t>(mark.pos) + 1;
    while (end < text.size() && end - static_cast<size_t>(mark.pos) < 80 &&
           std::string_view(" \t\r\n,[]{}").find(text[end]) == std::string_view::npos)
        ++end;
    return text.substr(static_cast<size_t>(mark.pos), end - static_cast<size_t>(mark.pos));
}

// A first pass over the parser's events, before any node is built: measures the document as a
// walk over the built nodes would see it (aliases expanded) and refuses it past ConfigNode's
// bounds or on an alias inside its own anchor. Throws from inside the parser, which unwinds it.
class BoundsCheck final : public YAML::EventHandler {
public:
    BoundsCheck(const std::string & text, const std::string & file) : text_(text), file_(file) {}

    void OnDocumentStart(const YAML::Mark &) override {}
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark & mark, YAML::anchor_t anchor) override { leaf(mark, anchor); }
    void OnScalar(const YAML::Mark & mark, const std::string &, YAML::anchor_t anchor, const std::string &) override {
        leaf(mark, anchor);
    }
    void OnAlias(const YAML::Mark & mark, YAML::anchor_t anchor) override {
        tick();
        for (const Open & o : open_)
            if (o.anchor == anchor && anchor != YAML::NullAnchor)
                fail(mark, "alias " + alias_name(text_, mark) + " refers to a node that contains it (a cycle)");
        auto it = anchored_.find(anchor);
        // yaml-cpp refuses an undefined alias itself; an unknown number here is a parser we do not know.
        if (it == anchored_.end()) fail(mark, "alias " + alias_name(text_, mark) + " refers to no anchor");
        add(mark, it->second, "alias " + alias_name(text_, mark) + " expands");
    }
    void OnSequenceStart(const YAML::Mark & mark, const std::string &, YAML::anchor_t anchor,
                         YAML::EmitterStyle::value) override {
        start(mark, anchor);
    }
    void OnSequenceEnd() override { end(); }
    void OnMapStart(const YAML::Mark & mark, const std::string &, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
        start(mark, anchor);
    }
    void OnMapEnd() override { end(); }

private:
    struct Size {
        uint64_t nodes = 0;  // the subtree's nodes, aliases expanded
        int height = 0;      // the mappings and lists nested in it, aliases expanded (a scalar: 0)
    };
    struct Open {
        YAML::anchor_t anchor;
        Size children;       // so far
    };

    [[noreturn]] void fail(const YAML::Mark & mark, const std::string & what) const {
        throw Error::usage(location(mark, file_) + ": " + what).with("file", file_);
    }

    // A walk over a config is cheap, but one at the node bound still takes a moment: keep Ctrl-C
    // working.
    void tick() {
        if (++events_ % 4096 == 0) throw_if_interrupted();
    }

    // Places a node (or an alias's expansion) of `size` at the current position.
    void add(const YAML::Mark & mark, const Size & size, const std::string & what) {
        total_ += size.nodes;  // no overflow: each size is at most kMaxNodes, checked when it was made
        if (total_ > ConfigNode::kMaxNodes)
            fail(mark, what + " past " + std::to_string(ConfigNode::kMaxNodes) +
                           " nodes in all (an alias counts as the node it refers to, so nested aliases multiply)");
        if (open_.size() + static_cast<size_t>(size.height) > static_cast<size_t>(ConfigNode::kMaxDepth))
            fail(mark, what + " past " + std::to_string(ConfigNode::kMaxDepth) + " levels of nesting");
        if (open_.empty()) return;
        Size & parent = open_.back().children;
        parent.nodes += size.nodes;
        parent.height = std::max(parent.height, size.height);
    }

    void leaf(const YAML::Mark & mark, YAML::anchor_t anchor) {
        tick();
        add(mark, {1, 0}, "the document grows");
        if (anchor != YAML::NullAnchor) anchored_[anchor] = {1, 0};
    }

    void start(const YAML::Mark & mark, YAML::anchor_t anchor) {
        tick();
        // Refused at the opening bracket, before the parser (recursive descent; yaml-cpp's own
        // guard is at 2000 levels) goes deeper.
        if (open_.size() + 1 > static_cast<size_t>(ConfigNode::kMaxDepth))
            fail(mark, "nesting deeper than " + std::to_string(ConfigNode::kMaxDepth) + " levels");
        if (++total_ > ConfigNode::kMaxNodes)
            fail(mark, "the document has more than " + std::to_string(ConfigNode::kMaxNodes) + " nodes");
        open_.push_back({anchor, {}});
    }

    void end() {
        Open done = open_.back();
        open_.pop_back();
        Size size{done.children.nodes + 1, done.children.height + 1};
        if (done.anchor != YAML::NullAnchor) anchored_[done.anchor] = size;
        if (open_.empty()) return;
        Size & parent = open_.back().children;
        parent.nodes += size.nodes;
        parent.height = std::max(parent.height, size.height);
    }

    const std::string & text_;
    const std::string & file_;
    std::vector<Open> open_;
    std::unordered_map<YAML::anchor_t, Size> anchored_;
    uint64_t total_ = 0;
    uint64_t events_ = 0;
};

// yaml-cpp accepts duplicate keys silently (first wins); a config with two `max_price` keys is
// almost certainly a mistake, so refuse it where it happens. A key must be a scalar: every reader
// of a config looks keys up by name. The recursion is bounded by BoundsCheck (kMaxDepth, no
// cycles), which runs first.
void refuse_duplicate_keys(const YAML::Node & node, const std::string & file, uint64_t & visited) {
    if (++visited % 4096 == 0) throw_if_interrupted();
    if (node.IsMap()) {
        std::set<std::string> seen;
        for (auto it = node.begin(); it != node.end(); ++it) {
            if (!it->first.IsScalar())
                throw Error::usage(location(it->first.Mark(), file) + ": a key must be a plain value, not " +
                                   (it->first.IsMap() ? "a mapping" : it->first.IsSequence() ? "a list" : "null"))
                    .with("file", file);
            const std::string key = it->first.Scalar();
            if (!seen.insert(key).second)
                throw Error::usage(location(it->first.Mark(), file) + ": duplicate key '" + key + "'")
                    .with("file", file);
            refuse_duplicate_keys(it->second, file, visited);
        }
    } else if (node.IsSequence()) {
        for (const auto & child : node) refuse_duplicate_keys(child, file, visited);
    }
}

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); ++j)
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

}  // namespace

ConfigNode::ConfigNode(std::unique_ptr<YAML::Node> node, std::string file, std::string path)
    : node_(std::move(node)), file_(std::move(file)), path_(std::move(path)) {}

ConfigNode::ConfigNode(const ConfigNode & other)
    : node_(std::make_unique<YAML::Node>(*other.node_)), file_(other.file_), path_(other.path_) {}

ConfigNode & ConfigNode::operator=(const ConfigNode & other) {
    if (this != &other) {
        // reset() rebinds; plain assignment would write through to the shared node (yaml-cpp
        // nodes have reference semantics).
        node_ = std::make_unique<YAML::Node>(*other.node_);
        file_ = other.file_;
        path_ = other.path_;
    }
    return *this;
}

ConfigNode::~ConfigNode() = default;

ConfigNode ConfigNode::load_string(const std::string & text, const std::string & name) {
    if (text.size() > kMaxBytes)
        throw Error::usage(name + ": " + std::to_string(text.size()) + " bytes, more than the " +
                           std::to_string(kMaxBytes) + " allowed for a config file")
            .with("file", name);
    YAML::Node root;
    try {
        // Two parses of at most kMaxBytes: the first only measures (no nodes), the second builds.
        std::istringstream in(text);
        YAML::Parser parser(in);
        BoundsCheck bounds(text, name);
        parser.HandleNextDocument(bounds);
        root = YAML::Load(text);
    } catch (const YAML::ParserException & e) {
        throw Error::usage(location(e.mark, name) + ": invalid YAML: " + e.msg).with("file", name);
    }
    if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
    uint64_t visited = 0;
    refuse_duplicate_keys(root, name, visited);
    return ConfigNode(std::make_unique<YAML::Node>(root), name, "");
}

ConfigNode ConfigNode::load_file(const std::string & path) {
    return load_string(read_regular_file(path, kMaxBytes, "config file"), path);
}

std::string ConfigNode::where() const { return location(node_->Mark(), file_); }

bool ConfigNode::is_map() const { return node_->IsMap(); }
bool ConfigNode::is_sequence() const { return node_->IsSequence(); }
bool ConfigNode::is_scalar() const { return node_->IsScalar(); }
bool ConfigNode::is_null() const { return !node_->IsDefined() || node_->IsNull(); }

void ConfigNode::fail(const std::string & message) const {
    std::string subject = path_.empty() ? "" : path_ + ": ";
    throw Error::usage(where() + ": " + subject + message).with("file", file_);
}

std::string ConfigNode::child_path(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

bool ConfigNode::has(std::string_view key) const {
    if (!node_->IsMap()) return false;
    const YAML::Node & n = *node_;
    return static_cast<bool>(n[std::string(key)]);
}

std::optional<ConfigNode> ConfigNode::find(std::string_view key) const {
    if (!node_->IsMap()) {
        if (is_null()) return std::nullopt;
        fail("expected a mapping (key: value), got " + std::string(node_->IsSequence() ? "a list" : "a scalar"));
    }
    const YAML::Node & n = *node_;
    YAML::Node child = n[std::string(key)];
    if (!child) return std::nullopt;
    return ConfigNode(std::make_unique<YAML::Node>(child), file_, child_path(key));
}

ConfigNode ConfigNode::at(std::string_view key) const {
    auto child = find(key);
    if (!child) fail("missing required key '" + std::string(key) + "'");
    return *child;
}

std::vector<std::string> ConfigNode::keys() const {
    std::vector<std::string> out;
    if (!node_->IsMap()) return out;
    for (auto it = node_->begin(); it != node_->end(); ++it) out.push_back(it->first.Scalar());
    return out;
}

std::vector<std::pair<std::string, ConfigNode>> ConfigNode::entries() const {
    std::vector<std::pair<std::string, ConfigNode>> out;
    if (!node_->IsMap()) return out;
    for (auto it = node_->begin(); it != node_->end(); ++it) {
        std::string key = it->first.Scalar();
        ConfigNode child(std::make_unique<YAML::Node>(it->second), file_, child_path(key));
        out.emplace_back(std::move(key), std::move(child));
    }
    return out;
}

void ConfigNode::check_keys(std::initializer_list<std::string_view> allowed) const {
    check_keys(std::vector<std::string>(allowed.begin(), allowed.end()));
}

void ConfigNode::check_keys(const std::vector<std::string> & allowed) const {
    if (is_null()) return;
    if (!node_->IsMap()) fail("expected a mapping (key: value)");
    for (auto it = node_->begin(); it != node_->end(); ++it) {
        const std::string key = it->first.Scalar();
        if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
        std::string hint;
        size_t best = 3;
        for (const auto & a : allowed) {
            size_t d = edit_distance(key, a);
            if (d < best) {
                best = d;
                hint = a;
            }
        }
        std::string msg = location(it->first.Mark(), file_) + ": " + (path_.empty() ? "" : path_ + ": ") +
                          "unknown key '" + key + "'";
        if (!hint.empty()) msg += " (did you mean '" + hint + "'?)";
        else {
            msg += " (allowed: ";
            for (size_t i = 0; i < allowed.size(); ++i) msg += (i ? ", " : "") + allowed[i];
            msg += ")";
        }
        throw Error::usage(msg).with("file", file_);
    }
}

std::vector<ConfigNode> ConfigNode::elements() const {
    std::vector<ConfigNode> out;
    if (is_null()) return out;
    if (!node_->IsSequence()) fail("expected a list");
    size_t i = 0;
    for (const auto & child : *node_)
        out.push_back(ConfigNode(std::make_unique<YAML::Node>(child), file_,
                                 path_ + "[" + std::to_string(i++) + "]"));
    return out;
}

std::string ConfigNode::as_string() const {
    if (!node_->IsScalar()) fail("expected a string");
    return node_->Scalar();
}

int64_t ConfigNode::as_int() const {
    if (!node_->IsScalar()) fail("expected an integer");
    const std::string & s = node_->Scalar();
    int64_t value = 0;
    const char * begin = s.data();
    const char * end = s.data() + s.size();
    if (begin != end && *begin == '+') ++begin;
    auto [ptr, ec] = std::from_chars(begin, end, value);
    bool leading_zero = (end - begin) > 1 && begin[0] == '0';
    if (ec != std::errc() || ptr != end || leading_zero) fail("expected an integer, got '" + s + "'");
    return value;
}

double ConfigNode::as_double() const {
    if (!node_->IsScalar()) fail("expected a number");
    const std::string & s = node_->Scalar();
    char * end = nullptr;
    double value = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(value))
        fail("expected a number, got '" + s + "'");
    return value;
}

bool ConfigNode::as_bool() const {
    if (!node_->IsScalar()) fail("expected true or false");
    const std::string & s = node_->Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
    fail("expected true or false, got '" + s + "'");
}

std::vector<std::string> ConfigNode::as_string_list() const {
    std::vector<std::string> out;
    for (const auto & e : elements()) out.push_back(e.as_string());
    return out;
}

std::string ConfigNode::get_string(std::string_view key, const std::string & fallback) const {
    auto c = find(key);
    return c && !c->is_null() ? c->as_string() : fallback;
}
int64_t ConfigNode::get_int(std::string_view key, int64_t fallback) const {
    auto c = find(key);
    return c && !c->is_null() ? c->as_int() : fallback;
}
double ConfigNode::get_double(std::string_view key, double fallback) const {
    auto c = find(key);
    return c && !c->is_null() ? c->as_double() : fallback;
}
bool ConfigNode::get_bool(std::string_view key, bool fallback) const {
    auto c = find(key);
    return c && !c->is_null() ? c->as_bool() : fallback;
}

}  // namespace common
