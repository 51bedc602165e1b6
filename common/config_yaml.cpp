#include "common/config_yaml.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "common/error.h"

namespace common {

namespace {

std::string location(const YAML::Mark & mark, const std::string & file) {
    if (mark.is_null()) return file;
    return file + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

// yaml-cpp accepts duplicate keys silently (first wins); a config with two `max_price` keys is
// almost certainly a mistake, so refuse it where it happens.
void refuse_duplicate_keys(const YAML::Node & node, const std::string & file) {
    if (node.IsMap()) {
        std::set<std::string> seen;
        for (auto it = node.begin(); it != node.end(); ++it) {
            const std::string key = it->first.Scalar();
            if (!seen.insert(key).second)
                throw Error::usage(location(it->first.Mark(), file) + ": duplicate key '" + key + "'")
                    .with("file", file);
            refuse_duplicate_keys(it->second, file);
        }
    } else if (node.IsSequence()) {
        for (const auto & child : node) refuse_duplicate_keys(child, file);
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
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::ParserException & e) {
        throw Error::usage(location(e.mark, name) + ": invalid YAML: " + e.msg).with("file", name);
    }
    if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
    refuse_duplicate_keys(root, name);
    return ConfigNode(std::make_unique<YAML::Node>(root), name, "");
}

ConfigNode ConfigNode::load_file(const std::string & path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error::not_found(path, "cannot open config file").with("file", path);
    std::ostringstream text;
    text << in.rdbuf();
    return load_string(text.str(), path);
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
