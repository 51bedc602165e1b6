// pull against a real sshd: recursive mirror verified by SHA-256, skipping unchanged files,
// resuming partial downloads, and refusing names that would escape the destination.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "bifrost/manifest.h"
#include "common/error.h"
#include "tests/bifrost/remote_fixture.h"

namespace fs = std::filesystem;

TEST_CASE("pull: a remote directory is mirrored and verified, a second pull fetches nothing") {
    tests::RemoteFixture remote;
    std::string binary;
    for (int i = 0; i < 300000; ++i) binary += static_cast<char>((i * 7919) & 0xff);
    tests::spit(remote.home() + "/run/results/metrics.json", "{\"ppl\": 5.1}\n");
    tests::spit(remote.home() + "/run/results/deep/acts.bin", binary);
    tests::spit(remote.home() + "/run/results/name with space's.txt", "odd name\n");
    ::chmod((remote.home() + "/run/results/metrics.json").c_str(), 0640);
    fs::create_symlink("metrics.json", remote.home() + "/run/results/latest.json");
    auto client = remote.client();
    const std::string dst = remote.local() + "/results";
    auto stats = client.pull("~/run/results", dst);
    CHECK(stats.files_total == 4);
    CHECK(stats.files_fetched == 4);
    CHECK(tests::slurp(dst + "/metrics.json") == "{\"ppl\": 5.1}\n");
    CHECK(tests::slurp(dst + "/deep/acts.bin") == binary);
    CHECK(tests::slurp(dst + "/name with space's.txt") == "odd name\n");
    CHECK(fs::read_symlink(dst + "/latest.json") == "metrics.json");
    CHECK((fs::status(dst + "/metrics.json").permissions() & fs::perms::others_read) == fs::perms::none);
    auto again = client.pull("~/run/results", dst);
    CHECK(again.bytes_fetched == 0);
    // A single file.
    client.pull("~/run/results/deep/acts.bin", remote.local() + "/one");
    CHECK(tests::slurp(remote.local() + "/one/acts.bin") == binary);
    try {
        client.pull("~/does/not/exist", remote.local() + "/x");
        FAIL("expected not_found");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::NotFound);
    }
}

TEST_CASE("pull: an interrupted download resumes from its partial file, a corrupt partial is replaced") {
    tests::RemoteFixture remote;
    std::string data(2 << 20, '\0');
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + 7);
    tests::spit(remote.home() + "/out/a.bin", data);
    tests::spit(remote.home() + "/out/b.bin", data);
    const std::string dst = remote.local() + "/out";
    tests::spit(dst + "/a.bin.bifrost-part", data.substr(0, data.size() / 3));        // a good prefix
    tests::spit(dst + "/b.bin.bifrost-part", std::string(data.size() / 2, 'X'));     // garbage
    auto client = remote.client();
    auto stats = client.pull("~/out", dst);
    CHECK(stats.files_resumed >= 1);
    CHECK(tests::slurp(dst + "/a.bin") == data);
    CHECK(tests::slurp(dst + "/b.bin") == data);
    CHECK(stats.bytes_fetched < 2 * data.size() + data.size() / 2 + 1);
    CHECK_FALSE(fs::exists(dst + "/a.bin.bifrost-part"));
    CHECK_FALSE(fs::exists(dst + "/b.bin.bifrost-part"));
}

// A symlink that leads out of the destination is not created, with a warning, and everything else
// is pulled. One absolute link (a venv's python) used to abort the whole pull with nothing written.
TEST_CASE("pull: a symlink pointing outside the pulled directory is skipped with a warning, everything else arrives") {
    tests::RemoteFixture remote;
    tests::spit(remote.home() + "/out/ok.txt", "fine\n");
    fs::create_symlink("/etc/passwd", remote.home() + "/out/evil");
    fs::create_symlink("../../../../etc", remote.home() + "/out/up");
    fs::create_symlink("ok.txt", remote.home() + "/out/good");
    auto client = remote.client();
    const std::string dst = remote.local() + "/out";
    auto stats = client.pull("~/out", dst);
    CHECK(stats.links_refused == std::vector<std::string>{"evil -> /etc/passwd", "up -> ../../../../etc"});
    CHECK(tests::slurp(dst + "/ok.txt") == "fine\n");
    CHECK(fs::read_symlink(dst + "/good") == "ok.txt");
    CHECK_FALSE(fs::exists(fs::symlink_status(dst + "/evil")));
    CHECK_FALSE(fs::exists(fs::symlink_status(dst + "/up")));
    // The program exits 0, warns of each, and lists them in its JSON.
    fs::remove_all(dst);
    auto r = remote.cli({"--json", "--persist", "0", "pull", remote.target(), "~/out", dst});
    CHECK(r.code == 0);
    CHECK(r.err.find("not creating symlink evil -> /etc/passwd") != std::string::npos);
    CHECK(nlohmann::json::parse(r.out)["links_refused"] == nlohmann::json{"evil -> /etc/passwd", "up -> ../../../../etc"});
    CHECK(tests::slurp(dst + "/ok.txt") == "fine\n");
}

TEST_CASE("pull: a hostile server's '..' and absolute names are refused before anything is written") {
    tests::TempDir bin("bifrost-hostile");
    std::string hash = bifrost::sha256_hex("owned");
    tests::spit(bin / "list.sh",
                "#!/bin/sh\n"
                "cat > /dev/null\n"
                "printf 'S\\0005 644 ./../escaped\\000H\\000" + hash + "  ./../escaped\\000L\\000'\n");
    ::chmod((bin / "list.sh").c_str(), 0755);
    tests::RemoteFixture remote({"ForceCommand " + (bin / "list.sh")});
    auto client = remote.client();
    const std::string dst = remote.local() + "/a/b";
    try {
        client.pull("~/anything", dst);
        FAIL("expected a refusal");
    } catch (const common::Error & e) {
        CHECK(e.message().find("refusing remote name './../escaped'") != std::string::npos);
    }
    CHECK_FALSE(fs::exists(remote.local() + "/a/escaped"));
    CHECK_FALSE(fs::exists(dst));
}

// A file still being written used to fail the whole pull: its bytes were streamed to its current
// end, past the size listed with its hash, so the hash never matched, and the pull stopped there.
// Now each file is read up to its listed size (a log only appended to matches), and a file
// rewritten since the listing is skipped with a warning while every other file is still pulled;
// the pull then fails naming it.
TEST_CASE("pull: files written during the pull: an appended one arrives as listed, a rewritten one is skipped, the rest arrive") {
    tests::RemoteFixture remote;
    std::string big(1 << 20, 'a');
    tests::spit(remote.home() + "/out/a.bin", big);
    tests::spit(remote.home() + "/out/b.log", "line 1\n");
    tests::spit(remote.home() + "/out/c.dat", "version 1\n");
    tests::spit(remote.home() + "/out/d.txt", "last\n");
    auto client = remote.client();
    bool written = false;
    bifrost::PullOptions o;
    o.progress = [&](uint64_t done, uint64_t) {
        if (written || done < 1000) return;  // a.bin, the first file, is arriving: the listing is done
        written = true;
        std::ofstream(remote.home() + "/out/b.log", std::ios::app) << "line 2\n";
        std::ofstream(remote.home() + "/out/c.dat", std::ios::trunc) << "version 2\n";
    };
    const std::string dst = remote.local() + "/out";
    std::string message;
    try {
        client.pull("~/out", dst, o);
        FAIL("expected the rewritten file to be reported");
    } catch (const common::Error & e) {
        message = e.message();
        CHECK(e.kind() == common::ErrorKind::RemoteFailed);
    }
    CHECK(written);
    CHECK(message.find("1 of 4 files changed while being pulled and were skipped (c.dat)") != std::string::npos);
    CHECK(tests::slurp(dst + "/a.bin") == big);
    CHECK(tests::slurp(dst + "/b.log") == "line 1\n");
    CHECK_FALSE(fs::exists(dst + "/c.dat"));
    CHECK_FALSE(fs::exists(dst + "/c.dat.bifrost-part"));
    CHECK(tests::slurp(dst + "/d.txt") == "last\n");
    // Once the files are complete, a second pull brings them.
    auto again = client.pull("~/out", dst);
    CHECK(tests::slurp(dst + "/b.log") == "line 1\nline 2\n");
    CHECK(tests::slurp(dst + "/c.dat") == "version 2\n");
}

// The check was textual: with d -> ., "d/.." looks like "." but the system resolves it from where d
// leads, the directory above. So e -> d/.. and up2 -> e/.. escaped the destination. Links are now
// resolved through the other pulled links.
TEST_CASE("pull: a chain of links that climbs out through another link is refused") {
    tests::RemoteFixture remote;
    tests::spit(remote.home() + "/out/ok.txt", "fine\n");
    fs::create_symlink(".", remote.home() + "/out/d");
    fs::create_symlink("d/..", remote.home() + "/out/e");
    fs::create_symlink("e/..", remote.home() + "/out/up2");
    auto client = remote.client();
    const std::string dst = remote.local() + "/x/out";
    auto stats = client.pull("~/out", dst);
    CHECK(stats.links_refused == std::vector<std::string>{"e -> d/..", "up2 -> e/.."});
    CHECK_FALSE(fs::exists(fs::symlink_status(dst + "/e")));
    CHECK_FALSE(fs::exists(fs::symlink_status(dst + "/up2")));
    CHECK(tests::slurp(dst + "/ok.txt") == "fine\n");
    // Links through links that stay inside are fine: sub/l -> ../d/sub/f is sub/f.
    fs::remove(remote.home() + "/out/e");
    fs::remove(remote.home() + "/out/up2");
    tests::spit(remote.home() + "/out/sub/f", "f\n");
    fs::create_symlink("../d/sub/f", remote.home() + "/out/sub/l");
    fs::create_symlink("d/sub/..", remote.home() + "/out/back");
    client.pull("~/out", dst);
    CHECK(tests::slurp(dst + "/sub/l") == "f\n");
    CHECK(fs::equivalent(dst + "/back", dst));
}

// A local write failure (a full disk; here a file-size limit, which fails write(2) with EFBIG the
// same way) used to be remembered while the rest of the file and every other file were still
// downloaded, then reported as a usage error (exit 2). Now the transfer stops at the first failed
// write and the error is the I/O error, naming the file.
TEST_CASE("pull: a local write failure stops the transfer at once and is reported as an I/O error naming the file") {
    tests::RemoteFixture remote;
    std::string data(8 << 20, 'z');
    tests::spit(remote.home() + "/big/a.bin", data);
    tests::spit(remote.home() + "/big/b.bin", data);
    auto client = remote.client();
    uint64_t most = 0;
    bifrost::PullOptions o;
    o.progress = [&](uint64_t done, uint64_t) { most = std::max(most, done); };
    const std::string dst = remote.local() + "/big";
    fs::create_directories(dst);
    auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
    rlimit old_limit{};
    ::getrlimit(RLIMIT_FSIZE, &old_limit);
    rlimit small = old_limit;
    small.rlim_cur = 1 << 20;
    ::setrlimit(RLIMIT_FSIZE, &small);
    std::string message;
    common::ErrorKind kind = common::ErrorKind::Usage;
    try {
        client.pull("~/big", dst, o);
    } catch (const common::Error & e) {
        message = e.message();
        kind = e.kind();
    }
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    ::signal(SIGXFSZ, old_handler);
    CHECK(message.find(dst + "/a.bin.bifrost-part: write: File too large") != std::string::npos);
    CHECK(kind != common::ErrorKind::Usage);
    CHECK(most < (3u << 20));  // stopped near the limit, not after 16 MiB
    CHECK_FALSE(fs::exists(dst + "/b.bin"));
    // The partial file stays, and the next pull (with room) resumes it.
    auto stats = client.pull("~/big", dst);
    CHECK(stats.files_resumed == 1);
    CHECK(tests::slurp(dst + "/a.bin") == data);
}

// pull listed checksums with `sha256sum -z`, which coreutils before 8.30 (Ubuntu 18.04) lacks: the
// listing failed with a find error. Without -z each file is hashed from stdin; without sha256sum
// at all the error says what is missing. The remote's PATH is set through ~/.bashrc, which bash
// started by sshd reads (Debian builds it so).
TEST_CASE("pull: works with a sha256sum without -z, and says so when there is no sha256sum") {
    tests::RemoteFixture remote;
    const std::string old_bin = remote.home() + "/old-coreutils";
    tests::spit(old_bin + "/sha256sum",
                "#!/bin/sh\n"
                "for a in \"$@\"; do case \"$a\" in -z|--zero) echo \"sha256sum: invalid option -- 'z'\" >&2; exit 1;; esac; done\n"
                "exec /usr/bin/sha256sum \"$@\"\n");
    ::chmod((old_bin + "/sha256sum").c_str(), 0755);
    tests::spit(remote.home() + "/.bashrc", "export PATH=" + old_bin + ":$PATH\n");
    auto client = remote.client();
    std::string which;
    client.exec(bifrost::Command::args({"sh", "-c", "command -v sha256sum"}), {}, [&](std::string_view d) { which.append(d); }, {});
    if (which != old_bin + "/sha256sum\n") {
        MESSAGE("the remote login shell did not read ~/.bashrc (not Debian's bash?): not exercised");
        return;
    }
    tests::spit(remote.home() + "/res/a.txt", "alpha\n");
    tests::spit(remote.home() + "/res/odd name\\with 'quotes'.txt", "beta\n");
    const std::string dst = remote.local() + "/res";
    auto stats = client.pull("~/res", dst);
    CHECK(stats.files_fetched == 2);
    CHECK(tests::slurp(dst + "/a.txt") == "alpha\n");
    CHECK(tests::slurp(dst + "/odd name\\with 'quotes'.txt") == "beta\n");
    // No sha256sum at all: only the tools the listing needs besides it.
    const std::string bare = remote.home() + "/bare-bin";
    fs::create_directories(bare);
    for (const char * tool : {"sh", "find", "stat", "readlink", "dirname", "basename", "cat"}) {
        const std::string path = std::string("/usr/bin/") + tool;
        fs::create_symlink(fs::exists(path) ? path : std::string("/bin/") + tool, bare + "/" + tool);
    }
    tests::spit(remote.home() + "/.bashrc", "export PATH=" + bare + "\n");
    try {
        client.pull("~/res", remote.local() + "/res2");
        FAIL("expected a clear error");
    } catch (const common::Error & e) {
        CHECK(e.message().find("pull needs sha256sum (GNU coreutils) on the remote") != std::string::npos);
    }
}
