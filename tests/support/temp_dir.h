// Test helpers: a temporary directory removed at scope exit (kept when TOOLKIT_KEEP_TEST_DIRS=1,
// for post-mortems), and an environment-variable guard that restores the old value.
#pragma once

#include <optional>
#include <string>

namespace tests {

class TempDir {
public:
    explicit TempDir(const std::string & prefix = "toolkit-test");
    ~TempDir();
    TempDir(const TempDir &) = delete;
    TempDir & operator=(const TempDir &) = delete;
    const std::string & path() const { return path_; }
    std::string operator/(const std::string & name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

class EnvGuard {
public:
    EnvGuard(std::string name, const std::optional<std::string> & value);  // nullopt: unset
    ~EnvGuard();

private:
    std::string name_;
    std::optional<std::string> old_;
};

std::string read_file(const std::string & path);
void write_file(const std::string & path, const std::string & text);

}  // namespace tests
