// The streaming tar writer, checked by extracting its output with the system tar (what the remote
// side runs): long names (pax), symlinks, modes, deferred entries and the hashes of sent bytes.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>

#include "bifrost/manifest.h"
#include "bifrost/tar.h"
#include "common/subprocess.h"
#include "tests/bifrost/remote_fixture.h"

TEST_CASE("tar: system tar extracts what TarStream writes, including long names and symlinks") {
    tests::TempDir src, dst;
    std::string long_name = std::string(120, 'd') + "/" + std::string(150, 'f') + ".txt";
    tests::spit(src / "a.txt", "hello");
    tests::spit(src / "big.bin", std::string(3 << 20, 'z'));
    ::chmod((src / "a.txt").c_str(), 0755);
    bifrost::TarStream tar;
    tar.add_file("files/a.txt", src / "a.txt", 0755, 5, 1700000000);
    tar.add_file("files/big.bin", src / "big.bin", 0644, 3 << 20, 1700000000);
    tar.add_file("files/" + long_name, src / "a.txt", 0644, 5, 1700000000);
    tar.add_symlink("files/link", "a.txt");
    tar.add_deferred("manifest.new", [&] { return "sent " + tar.sent_hashes()[0]; }, 0600);
    std::string archive;
    while (tar.next(archive)) {
    }
    common::RunOptions ro;
    ro.stdin_data = archive;
    auto r = common::run_process({"tar", "-x", "-o", "-f", "-", "-C", dst.path()}, ro);
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    CHECK(tests::slurp(dst / "files/a.txt") == "hello");
    CHECK(tests::slurp(dst / "files/big.bin") == std::string(3 << 20, 'z'));
    CHECK(tests::slurp(dst / ("files/" + long_name)) == "hello");
    CHECK(std::filesystem::read_symlink(dst / "files/link") == "a.txt");
    CHECK((std::filesystem::status(dst / "files/a.txt").permissions() & std::filesystem::perms::owner_exec) != std::filesystem::perms::none);
    CHECK(tests::slurp(dst / "manifest.new") == "sent " + bifrost::sha256_hex("hello"));
    CHECK(tar.sent_hashes()[1] == bifrost::sha256_hex(std::string(3 << 20, 'z')));
    CHECK_FALSE(tar.changed_while_sent()[0]);
}

TEST_CASE("tar: a file that shrank after scanning is padded and flagged, keeping the archive valid") {
    tests::TempDir src, dst;
    tests::spit(src / "f", "short");
    bifrost::TarStream tar;
    tar.add_file("f", src / "f", 0644, 100, 0);  // scanned at 100 bytes, now 5
    std::string archive;
    while (tar.next(archive)) {
    }
    CHECK(tar.changed_while_sent()[0]);
    common::RunOptions ro;
    ro.stdin_data = archive;
    CHECK(common::run_process({"tar", "-x", "-o", "-f", "-", "-C", dst.path()}, ro).exit_code == 0);
    CHECK(tests::slurp(dst / "f").size() == 100);
}
