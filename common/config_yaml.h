// YAML configuration reading with errors a person can act on: every error names file:line:column
// and the dotted key path, unknown keys are refused (with a "did you mean"), duplicate keys are
// refused, and scalars are converted strictly (no YAML 1.1 surprises: `on` is not a bool, `010` is
// not octal 8). Host side only (yaml-cpp is not part of the GPU-only build).
//
// Every file is treated as hostile before yaml-cpp builds a node: it must be a regular file of at
// most kMaxBytes, nest at most kMaxDepth deep, and expand to at most kMaxNodes nodes, where an
// alias counts as the whole node it refers to (yaml-cpp shares the aliased node instead of copying
// it, so the tree stays small, but every walk over it visits each reference again: 7 levels of
// nine aliases each are 9^7 visits from a 350-byte file). An alias inside the node it refers to
// (`a: &x [*x]`, a cycle) is refused outright. Violations are usage errors at file:line:column.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace YAML { class Node; }

namespace common {

class ConfigNode {
public:
    // Configs are hand-written and a few KiB; these leave room for generated host lists (~10k
    // hosts) while bounding a hostile file's cost: yaml-cpp 0.7 builds ~50-100k nodes a second
    // here, so the node bound, not the size, keeps a load under a second or so.
    static constexpr uint64_t kMaxBytes = 1u << 20;   // file size, checked before parsing
    static constexpr int kMaxDepth = 64;              // nesting, aliases counted as expanded
    static constexpr uint64_t kMaxNodes = 1u << 16;   // nodes, aliases counted as expanded

    // Throws common::Error: NotFound for a missing file, Usage with file:line for bad YAML or a
    // bound above exceeded (and for a path that is not a regular file), Interrupted on Ctrl-C.
    static ConfigNode load_file(const std::string & path);
    static ConfigNode load_string(const std::string & text, const std::string & name = "<string>");

    ConfigNode(const ConfigNode &);
    ConfigNode & operator=(const ConfigNode &);
    ~ConfigNode();

    const std::string & file() const { return file_; }
    const std::string & path() const { return path_; }  // "resources.gpu", "" for the root
    std::string where() const;                           // "run.yaml:12:3"

    bool is_map() const;
    bool is_sequence() const;
    bool is_scalar() const;
    bool is_null() const;

    // Map access. at() refuses a missing key with the map's location; find() returns nullopt.
    bool has(std::string_view key) const;
    ConfigNode at(std::string_view key) const;
    std::optional<ConfigNode> find(std::string_view key) const;
    std::vector<std::string> keys() const;
    // Every (key, value) in file order: one pass, where at() per key searches the map each time.
    std::vector<std::pair<std::string, ConfigNode>> entries() const;
    // Refuses any key not in `allowed`, naming file:line of the offending key.
    void check_keys(std::initializer_list<std::string_view> allowed) const;
    void check_keys(const std::vector<std::string> & allowed) const;

    // Sequence access; a scalar is NOT silently treated as a one-element list.
    std::vector<ConfigNode> elements() const;

    // Strict scalar conversions; a type error names file:line, key path, expected type and value.
    std::string as_string() const;
    int64_t as_int() const;
    double as_double() const;
    bool as_bool() const;  // true/false only
    std::vector<std::string> as_string_list() const;

    // Convenience for optional keys: the default when the key is absent or null.
    std::string get_string(std::string_view key, const std::string & fallback) const;
    int64_t get_int(std::string_view key, int64_t fallback) const;
    double get_double(std::string_view key, double fallback) const;
    bool get_bool(std::string_view key, bool fallback) const;

    // A usage error located at this node: "<file>:<line>:<col>: <path>: <message>".
    [[noreturn]] void fail(const std::string & message) const;

private:
    ConfigNode(std::unique_ptr<YAML::Node> node, std::string file, std::string path);
    std::string child_path(std::string_view key) const;

    std::unique_ptr<YAML::Node> node_;
    std::string file_;
    std::string path_;
};

}  // namespace common
