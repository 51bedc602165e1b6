// The real deploy/remote/bootstrap.sh on small stand-ins: its cache key names the libtorch the build
// links whatever python3 comes first on PATH (the tests compute the key in their environment, the
// remote side runs under sshd's), and its build goes through ccache with the source tree as base
// folder, one level inside it, so a rehearsal on this machine can reuse a host build's objects.
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "tests/support/processes_at_once.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

namespace fs = std::filesystem;

namespace {

std::string bootstrap_script() { return std::string(TOOLKIT_SOURCE_DIR) + "/deploy/remote/bootstrap.sh"; }

void write_exe(const std::string & path, const std::string & text) {
    fs::create_directories(fs::path(path).parent_path());
    tests::write_file(path, text);
    fs::permissions(path, fs::perms::owner_all);
}

// A source tree with the folders the key hashes; with `buildable`, CMake targets named like the
// real ones (extract in extractor/, analyze in analysis/).
void write_tree(const std::string & src, bool buildable) {
    fs::create_directories(src + "/common");
    tests::write_file(src + "/common/a.cpp", "int a() { return 1; }\n");
    if (!buildable) {
        tests::write_file(src + "/CMakeLists.txt", "# not built\n");
        return;
    }
    tests::write_file(src + "/CMakeLists.txt",
                      "cmake_minimum_required(VERSION 3.18)\nproject(stand_in CXX)\nadd_subdirectory(extractor)\nadd_subdirectory(analysis)\n");
    tests::write_file(src + "/common/a.h", "#pragma once\n#define STAND_IN_VERSION \"stand-in 1.0\"\n");
    for (const auto & [dir, name] : {std::pair{"extractor", "extract"}, std::pair{"analysis", "analyze"}}) {
        fs::create_directories(src + "/" + dir);
        // Includes from the tree's root, like the real parts (an absolute -I the base folder rewrites).
        tests::write_file(src + "/" + dir + "/CMakeLists.txt",
                          std::string("add_executable(") + name + " main.cpp)\ntarget_include_directories(" + name + " PRIVATE ${CMAKE_SOURCE_DIR})\n");
        tests::write_file(src + "/" + dir + "/main.cpp",
                          "#include <cstdio>\n#include \"common/a.h\"\nint main() { std::puts(STAND_IN_VERSION); }\n");
    }
}

// Runs bootstrap.sh with exactly these variables changed (PATH, HOME, ...); Torch_DIR and
// CMAKE_PREFIX_PATH are cleared unless given, so the caller's environment does not leak in.
common::ProcessResult bootstrap(const std::vector<std::string> & args, std::vector<std::string> env) {
    env.insert(env.begin(), {"Torch_DIR=", "CMAKE_PREFIX_PATH=", "BOOTSTRAP_SYSROOT="});
    common::RunOptions o;
    o.extra_env = env;
    o.timeout = std::chrono::milliseconds(240 * 1000);
    std::vector<std::string> argv{"/bin/sh", bootstrap_script()};
    argv.insert(argv.end(), args.begin(), args.end());
    return common::run_process(argv, o);
}

std::string first_line(const std::string & s) { return s.substr(0, s.find('\n')); }

// Stand-in python3 programs: one without torch (a venv), one whose torch has no CMake files
// (Debian's python3-torch: libtorch-dev holds them), and one with a pip-like torch.
struct Pythons {
    tests::TempDir dir{"bootstrap-py"};
    std::string no_torch = dir / "venv/bin";
    std::string no_cmake = dir / "debian/bin";
    std::string pip = dir / "pip/bin";
    std::string pip_torch = dir / "pip/lib/torch/share/cmake/Torch";
    Pythons() {
        write_exe(no_torch + "/python3", "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n");
        write_exe(no_cmake + "/python3", "#!/bin/sh\necho " + dir / "debian/dist-packages/torch/share/cmake" + "\n");
        write_exe(pip + "/python3", "#!/bin/sh\necho " + dir / "pip/lib/torch/share/cmake" + "\n");
        fs::create_directories(pip_torch);
        tests::write_file(pip_torch + "/TorchConfig.cmake", "# stand-in\n");
        set_pip_version("9.9.1");
    }
    void set_pip_version(const std::string & v) {
        tests::write_file(pip_torch + "/TorchConfigVersion.cmake", "set(PACKAGE_VERSION \"" + v + "\")\n");
    }
};

const char * kSystemPath = "/usr/local/bin:/usr/bin:/bin";

}  // namespace

TEST_CASE("bootstrap.sh: the cache key does not depend on which python3 comes first on PATH") {
    tests::TempDir dir{"bootstrap-key"};
    write_tree(dir / "src", false);
    Pythons py;
    auto key = [&](const std::string & path) {
        auto r = bootstrap({"--print-key", dir / "src"}, {"PATH=" + path});
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
        return first_line(r.out);
    };
    const std::string sys = key(kSystemPath);
    CHECK(!sys.empty());
    // A venv's python3 without torch, or Debian's python3-torch without CMake files, first on PATH:
    // the build links the same libtorch, so the key stays.
    CHECK(key(py.no_torch + ":" + kSystemPath) == sys);
    CHECK(key(py.no_cmake + ":" + kSystemPath) == sys);
    CHECK(key(py.no_torch + ":" + py.no_cmake + ":" + kSystemPath) == sys);
    // A pip torch is another libtorch: another key, the same whether or not a torch-less python3
    // comes before it.
    const std::string pip = key(py.pip + ":" + kSystemPath);
    CHECK(pip != sys);
    CHECK(key(py.no_torch + ":" + py.pip + ":" + kSystemPath) == pip);
    CHECK(key(py.no_cmake + ":" + py.pip + ":" + kSystemPath) == pip);
    // The source hash part is shared; only the torch part differs.
    CHECK(pip.substr(0, pip.find('-')) == sys.substr(0, sys.find('-')));
    auto t = bootstrap({"--print-torch"}, {"PATH=" + py.no_torch + ":" + py.pip + ":" + kSystemPath});
    CHECK(first_line(t.out) == fs::canonical(py.pip_torch).string() + " 9.9.1");
    // An upgrade in place (same folder, new version) is another libtorch too.
    py.set_pip_version("9.9.2");
    CHECK(key(py.pip + ":" + kSystemPath) != pip);
    // Torch_DIR names it outright.
    auto r = bootstrap({"--print-torch"}, {"PATH=" + std::string(kSystemPath), "Torch_DIR=" + py.pip_torch});
    CHECK(first_line(r.out) == fs::canonical(py.pip_torch).string() + " 9.9.2");
}

TEST_CASE("bootstrap.sh: builds through ccache with the source tree as base folder, one level inside it") {
    tests::TempDir dir{"bootstrap-ccache"};
    write_tree(dir / "src", true);
    // A ccache stand-in that records where and how each compile ran, then compiles.
    write_exe(dir / "tools/ccache", "#!/bin/sh\n"
                                    "case \"$1\" in -k) echo \"$HOME/ccache-of-the-account\"; exit 0 ;; --show-log-stats) exit 0 ;; esac\n"
                                    "printf '%s|%s|%s|%s|%s\\n' \"$PWD\" \"${CCACHE_BASEDIR:-}\" \"${CCACHE_DIR:-}\" \"${CCACHE_NOHASHDIR:-}\" "
                                    "\"${CCACHE_SLOPPINESS:-}\" >> " +
                                        dir / "compiles" + "\nexec \"$@\"\n");
    // The local provider's ssh session sets HOME to the instance's folder; the account's ccache is
    // found through the passwd database instead.
    fs::create_directories(dir / "instance-home");
    const passwd * pw = ::getpwuid(::getuid());
    REQUIRE(pw != nullptr);
    const std::string account_home = pw->pw_dir;
    auto r = bootstrap({dir / "src", dir / "cache"}, {"PATH=" + dir / "tools" + ":" + kSystemPath, "HOME=" + dir / "instance-home",
                                                      "CCACHE_DIR=", "CCACHE_BASEDIR=", "CCACHE_NOHASHDIR=", "CCACHE_SLOPPINESS="});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string last = r.out.substr(r.out.rfind("bin_dir="));
    std::string bin = last.substr(8, last.find('\n') - 8);
    CHECK(common::run_process({bin + "/extract"}).out == "stand-in 1.0\n");
    std::string compiles = tests::read_file(dir / "compiles");
    REQUIRE(!compiles.empty());
    const std::string src = fs::canonical(dir / "src").string();
    size_t lines = 0;
    for (size_t start = 0; start < compiles.size();) {
        size_t end = compiles.find('\n', start);
        std::string line = compiles.substr(start, end - start);
        start = end + 1;
        ++lines;
        CAPTURE(line);
        std::vector<std::string> f;
        for (size_t s = 0;;) {
            size_t bar = line.find('|', s);
            f.push_back(line.substr(s, bar == std::string::npos ? std::string::npos : bar - s));
            if (bar == std::string::npos) break;
            s = bar + 1;
        }
        REQUIRE(f.size() == 5);
        // Compiled in <src>/build-bootstrap-<key>: "../extractor/main.cpp" relative to it, as from <checkout>/build.
        CHECK(fs::path(f[0]).parent_path().string() == src);
        CHECK(fs::path(f[0]).filename().string().rfind("build-bootstrap-", 0) == 0);
        CHECK(f[1] == src);
        if (account_home != dir / "instance-home") CHECK(f[2] == account_home + "/ccache-of-the-account");
        CHECK(f[3] == "1");
        CHECK(f[4] == "locale");  // an ssh session's locale differs from the host shell's
    }
    CHECK(lines == 2);
    // The build folder is gone once the binaries are in the cache; a second run is a cache hit.
    for (const auto & e : fs::directory_iterator(dir / "src")) CHECK(e.path().filename().string().rfind("build", 0) != 0);
    auto again = bootstrap({dir / "src", dir / "cache"}, {"PATH=" + dir / "tools" + ":" + kSystemPath});
    CHECK(again.err.find("cached build") != std::string::npos);
}

TEST_CASE("bootstrap.sh: builds without ccache where it is not installed") {
    tests::TempDir dir{"bootstrap-noccache"};
    write_tree(dir / "src", true);
    // PATH: every program of /usr/bin but ccache (/bin is /usr/bin on merged-/usr systems).
    fs::create_directories(dir / "bin");
    for (const auto & e : fs::directory_iterator("/usr/bin"))
        if (e.path().filename() != "ccache") fs::create_symlink(e.path(), dir / ("bin/" + e.path().filename().string()));
    auto r = bootstrap({dir / "src", dir / "cache"}, {"PATH=" + dir / "bin"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.err.find("ccache: not installed") != std::string::npos);
    std::string last = r.out.substr(r.out.rfind("bin_dir="));
    CHECK(common::run_process({last.substr(8, last.find('\n') - 8) + "/analyze"}).out == "stand-in 1.0\n");
}

TEST_CASE("bootstrap.sh: a build on this machine reuses the objects of a host build in <checkout>/build through the real ccache") {
    if (common::run_process({"sh", "-c", "command -v ccache && command -v ninja"}).exit_code != 0) {
        MESSAGE("ccache or ninja is not installed (the host build is a Ninja build); nothing to share");
        return;
    }
    tests::TempDir dir{"bootstrap-share"};
    write_tree(dir / "checkout", true);
    const std::string checkout = fs::canonical(dir / "checkout").string();
    // A host build in <checkout>/build with the two settings the sharing needs (CCACHE_BASEDIR, and
    // sloppiness locale: the shell that runs it has a locale, an ssh session does not).
    common::RunOptions host;
    host.extra_env = {"CCACHE_DIR=" + dir / "ccache", "CCACHE_BASEDIR=" + checkout, "CCACHE_SLOPPINESS=locale", "LANG=C.UTF-8",
                      "CCACHE_NOHASHDIR="};
    host.timeout = std::chrono::milliseconds(240 * 1000);
    auto cfg = common::run_process({"cmake", "-S", checkout, "-B", checkout + "/build", "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                                    "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"}, host);
    REQUIRE(cfg.exit_code == 0);
    REQUIRE(common::run_process({"cmake", "--build", checkout + "/build"}, host).exit_code == 0);
    REQUIRE(common::run_process({"ccache", "--zero-stats"}, host).exit_code == 0);
    // The rehearsal's remote side: the same sources pushed elsewhere, an ssh session without the locale.
    fs::create_directories(dir / "instance/home/toolkit");
    fs::copy(dir / "checkout", dir / "instance/home/toolkit/src", fs::copy_options::recursive);
    fs::remove_all(dir / "instance/home/toolkit/src/build");
    auto r = bootstrap({dir / "instance/home/toolkit/src", dir / "cache"},
                       {"PATH=" + std::string(kSystemPath), "HOME=" + dir / "instance/home", "CCACHE_DIR=" + dir / "ccache", "LANG=",
                        "CCACHE_BASEDIR=", "CCACHE_SLOPPINESS=", "CCACHE_NOHASHDIR="});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    // Both compiles came from the host build's objects (the counters of this test's own ccache folder).
    auto stats = common::run_process({"ccache", "--print-stats"}, host).out;
    auto counter = [&](const std::string & name) {
        auto at = stats.find("\n" + name + "\t");
        return at == std::string::npos ? -1 : std::stoi(stats.substr(at + name.size() + 2));
    };
    CHECK(counter("direct_cache_hit") + counter("preprocessed_cache_hit") == 2);
    CHECK(counter("cache_miss") == 0);
}

// A sweep's members on one host (the local rehearsal, a Slurm work dir) bootstrap the same sources
// at once: one builds, the others wait and reuse its build. When the builder dies mid-build, one
// waiter, not several, builds in its place (a pid-file lock taken over by two waiters of a dead
// builder let both build into the same folder).
TEST_CASE("bootstrap.sh: concurrent bootstraps build once, and once more when the builder dies") {
    tests::TempDir dir{"bootstrap-concurrent"};
    write_tree(dir / "src", true);
    // A cmake in front of the real one that logs each configure; with a kill file present, the first
    // configure kills its bootstrap (the builder dies holding the lock) after the others queue up.
    const std::string log = dir / "configures.log";
    const std::string kill_file = dir / "kill-first-builder";
    write_exe(dir / "bin/cmake",
              "#!/bin/sh\n"
              "case \"$*\" in *--build*) ;; *)\n"
              "  echo $PPID >> '" + log + "'\n"
              "  sleep 2\n"
              "  if [ -f '" + kill_file + "' ]; then rm -f '" + kill_file + "'; kill -9 $PPID; exit 1; fi ;;\n"
              "esac\n"
              "exec /usr/bin/cmake \"$@\"\n");
    auto configures = [&] {
        auto text = fs::exists(log) ? tests::read_file(log) : std::string();
        return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
    };
    // Runs n bootstraps released together; returns how many did not print the shared bin_dir.
    auto run_together = [&](int n) {
        return tests::run_processes_at_once(n, [&](int k) {
            auto r = bootstrap({dir / "src", dir / "cache"}, {"PATH=" + dir / "bin" + ":" + kSystemPath});
            tests::write_file(dir / ("out-" + std::to_string(k)), r.out + r.err);
            if (r.exit_code != 0 || r.out.find("bin_dir=") == std::string::npos)
                throw std::runtime_error("exit " + std::to_string(r.exit_code) + ": " + r.err);
        });
    };

    SUBCASE("three at once: one configure, all three get the build") {
        CHECK(run_together(3) == 0);
        CHECK(configures() == 1);
    }
    SUBCASE("the builder dies holding the lock: exactly one of the waiters builds") {
        tests::write_file(kill_file, "");
        // The first of the eight to configure is killed: the other seven succeed.
        CHECK(run_together(8) == 1);
        CHECK(configures() == 2);
        CHECK_FALSE(fs::exists(kill_file));
    }
    // Either way, a later bootstrap finds the build complete.
    auto r = bootstrap({dir / "src", dir / "cache"}, {"PATH=" + dir / "bin" + ":" + kSystemPath});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.err.find("cached build") != std::string::npos);
}
