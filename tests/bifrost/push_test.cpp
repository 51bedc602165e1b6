// push against a real sshd: first push, incremental push, deletions, ignore rules, and the two
// interruption points (upload cut by killing sshd; commit cut halfway through its renames).
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>

#include "bifrost/manifest.h"
#include "common/error.h"
#include "tests/bifrost/remote_fixture.h"

namespace fs = std::filesystem;

namespace {

// Every regular file and symlink under root (relative path -> content or "->target").
std::map<std::string, std::string> tree(const std::string & root) {
    std::map<std::string, std::string> out;
    if (!fs::exists(root)) return out;
    for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
        std::string rel = it->path().lexically_relative(root).string();
        if (rel == ".bifrost-manifest" || rel == ".bifrost-staging") {
            if (it->is_directory()) it.disable_recursion_pending();
            continue;
        }
        if (it->is_symlink()) out[rel] = "->" + fs::read_symlink(it->path()).string();
        else if (it->is_regular_file()) out[rel] = tests::slurp(it->path());
    }
    return out;
}

bifrost::PushOptions to(const std::string & dir) {
    bifrost::PushOptions o;
    o.remote_dir = dir;
    return o;
}

}  // namespace

TEST_CASE("push: first push mirrors the tree, honouring .gitignore, .bifrostignore and excluding .git") {
    tests::RemoteFixture remote;
    const std::string src = remote.local() + "/proj";
    tests::spit(src + "/train.py", "print('hi')\n");
    tests::spit(src + "/pkg/model.py", "x = 1\n");
    tests::spit(src + "/pkg/deep/data.csv", "a,b\n");
    tests::spit(src + "/run.sh", "#!/bin/sh\necho run\n");
    ::chmod((src + "/run.sh").c_str(), 0755);
    tests::spit(src + "/.git/HEAD", "ref: refs/heads/main\n");
    tests::spit(src + "/.gitignore", "*.ckpt\n!keep.ckpt\n/out/\n__pycache__/\n");
    tests::spit(src + "/pkg/.gitignore", "/local_only.txt\n");
    tests::spit(src + "/pkg/local_only.txt", "no\n");
    tests::spit(src + "/local_only.txt", "yes: the nested rule is anchored to pkg/\n");
    tests::spit(src + "/.bifrostignore", "secrets.env\n");
    tests::spit(src + "/secrets.env", "HF_TOKEN=x\n");
    tests::spit(src + "/model.ckpt", "big\n");
    tests::spit(src + "/keep.ckpt", "small\n");
    tests::spit(src + "/out/result.json", "{}\n");
    tests::spit(src + "/pkg/__pycache__/m.pyc", "bytecode\n");
    fs::create_symlink("train.py", src + "/latest.py");

    auto client = remote.client();
    auto stats = client.push(src, to("~/work/proj"));
    const std::string dst = remote.home() + "/work/proj";
    CHECK(stats.remote_dir == dst);
    std::map<std::string, std::string> expected = {
        {".gitignore", "*.ckpt\n!keep.ckpt\n/out/\n__pycache__/\n"},
        {".bifrostignore", "secrets.env\n"},
        {"train.py", "print('hi')\n"},
        {"pkg/model.py", "x = 1\n"},
        {"pkg/.gitignore", "/local_only.txt\n"},
        {"pkg/deep/data.csv", "a,b\n"},
        {"run.sh", "#!/bin/sh\necho run\n"},
        {"local_only.txt", "yes: the nested rule is anchored to pkg/\n"},
        {"keep.ckpt", "small\n"},
        {"latest.py", "->train.py"},
    };
    auto got = tree(dst);
    for (const auto & [k, v] : got) CHECK_MESSAGE(expected.count(k), "unexpected remote file " << k);
    for (const auto & [k, v] : expected) CHECK_MESSAGE(got[k] == v, "remote file " << k);
    CHECK(stats.files_sent == expected.size());
    CHECK((fs::status(dst + "/run.sh").permissions() & fs::perms::owner_exec) != fs::perms::none);
    CHECK(fs::exists(dst + "/.bifrost-manifest"));
    CHECK_FALSE(fs::exists(dst + "/.bifrost-staging"));
}

TEST_CASE("push: an incremental push sends only changed files and mirrors deletions of pushed files only") {
    tests::RemoteFixture remote;
    const std::string src = remote.local() + "/p";
    for (int i = 0; i < 20; ++i) tests::spit(src + "/d" + std::to_string(i % 4) + "/f" + std::to_string(i), "v1-" + std::to_string(i));
    auto client = remote.client();
    auto first = client.push(src, to("~/p"));
    CHECK(first.files_sent == 20);
    const std::string dst = remote.home() + "/p";
    tests::spit(dst + "/results/written-by-a-job.txt", "keep me");  // not ours: never deleted

    auto again = client.push(src, to("~/p"));
    CHECK(again.files_sent == 0);
    CHECK(again.files_deleted == 0);

    tests::spit(src + "/d1/f5", "v2-5");
    tests::spit(src + "/new/file", "new");
    tests::spit(src + "/results/summary.txt", "merged into a directory bifrost did not create");
    fs::remove(src + "/d2/f6");
    fs::remove_all(src + "/d3");
    auto inc = client.push(src, to("~/p"));
    CHECK(inc.files_sent == 3);
    CHECK(inc.files_deleted == 1 + 5);
    auto remote_tree = tree(dst);
    auto local_tree = tree(src);
    local_tree["results/written-by-a-job.txt"] = "keep me";
    CHECK(remote_tree == local_tree);
    CHECK_FALSE(fs::exists(dst + "/d3"));  // emptied directories are removed too

    // A fresh local clone (no hash cache, new mtimes) sends nothing when contents match.
    fs::remove_all(remote.state_dir.path() + "/cache");
    auto cold = client.push(src, to("~/p"));
    CHECK(cold.files_sent == 0);
}

TEST_CASE("push: sshd killed mid-upload leaves every remote file old, the next push completes") {
    tests::RemoteFixture remote;
    const std::string src = remote.local() + "/p";
    auto content = [](int i, const std::string & v) { return v + std::string(200000, static_cast<char>('a' + i % 26)); };
    for (int i = 0; i < 60; ++i) tests::spit(src + "/d" + std::to_string(i % 5) + "/f" + std::to_string(i), content(i, "v1"));
    const std::string dst = remote.home() + "/p";
    {
        auto client = remote.client();
        client.push(src, to("~/p"));
    }
    for (int i = 0; i < 60; ++i) tests::spit(src + "/d" + std::to_string(i % 5) + "/f" + std::to_string(i), content(i, "v2"));
    {
        auto client = remote.client();
        auto o = to("~/p");
        bool killed = false;
        o.progress = [&](uint64_t sent, uint64_t total) {
            if (!killed && sent > total / 2) {
                killed = true;
                remote.sshd->server().kill_hard();
            }
        };
        CHECK_THROWS_AS(client.push(src, o), common::Error);
        CHECK(killed);
    }
    for (int i = 0; i < 60; ++i) {
        std::string rel = "d" + std::to_string(i % 5) + "/f" + std::to_string(i);
        CHECK(tests::slurp(dst + "/" + rel) == content(i, "v1"));
    }
    remote.sshd->server().restart();
    auto client = remote.client();
    auto stats = client.push(src, to("~/p"));
    CHECK(stats.files_sent == 60);
    CHECK(tree(dst) == tree(src));
    CHECK_FALSE(fs::exists(dst + "/.bifrost-staging"));
}

TEST_CASE("push: a commit cut off halfway leaves each file old or new, and the next push finishes it") {
    // A fake `mv` first in the remote PATH kills the commit script after its first batch of renames.
    tests::TempDir fakebin("bifrost-fakebin");
    tests::spit(fakebin / "mv",
                "#!/bin/sh\n"
                "if [ -f \"$HOME/break-mv\" ]; then\n"
                "  n=$(cat \"$HOME/break-mv\")\n"
                "  if [ \"$n\" -le 0 ]; then rm -f \"$HOME/break-mv\"; kill -9 $PPID; exit 1; fi\n"
                "  echo $((n - 1)) > \"$HOME/break-mv\"\n"
                "fi\n"
                "exec /bin/mv \"$@\"\n");
    ::chmod((fakebin / "mv").c_str(), 0755);
    tests::RemoteFixture remote({"SetEnv PATH=" + fakebin.path() + ":/usr/local/bin:/usr/bin:/bin"});
    const std::string src = remote.local() + "/p";
    for (int i = 0; i < 12; ++i) tests::spit(src + "/d" + std::to_string(i % 3) + "/f" + std::to_string(i), "old" + std::to_string(i));
    auto client = remote.client();
    client.push(src, to("~/p"));
    for (int i = 0; i < 12; ++i) tests::spit(src + "/d" + std::to_string(i % 3) + "/f" + std::to_string(i), "new" + std::to_string(i));
    tests::spit(remote.home() + "/break-mv", "1");
    CHECK_THROWS_AS(client.push(src, to("~/p")), common::Error);
    const std::string dst = remote.home() + "/p";
    int old_count = 0, new_count = 0;
    for (int i = 0; i < 12; ++i) {
        std::string got = tests::slurp(dst + "/d" + std::to_string(i % 3) + "/f" + std::to_string(i));
        if (got == "old" + std::to_string(i)) ++old_count;
        else if (got == "new" + std::to_string(i)) ++new_count;
        else FAIL("file " << i << " is neither old nor new: " << got);
    }
    CHECK(old_count > 0);
    CHECK(new_count > 0);
    auto stats = client.push(src, to("~/p"));
    CHECK(stats.completed_interrupted_push);
    CHECK(stats.files_sent == 0);  // the staged files were already there: finishing needed no upload
    CHECK(tree(dst) == tree(src));
}

// The new directories of one parent moved with one mv: with many siblings its argument list passed
// the kernel's limit ("Argument list too long"), the commit failed, and every later push re-ran the
// same commit script and failed too. The remote's limit is made small here: bash started by sshd
// reads ~/.bashrc (Debian builds it so), and a 256 KiB stack gives the 128 KiB minimum for
// arguments; 600 directories with 200-character names pass it in one mv.
TEST_CASE("push: many new sibling directories move in batches within the argument-size limit") {
    tests::RemoteFixture remote;
    tests::spit(remote.home() + "/.bashrc", "ulimit -s 256\n");
    auto client = remote.client();
    std::string limit;
    client.exec(bifrost::Command::args({"sh", "-c", "ulimit -s"}), {}, [&](std::string_view d) { limit.append(d); }, {});
    if (limit != "256\n")
        MESSAGE("the remote login shell did not read ~/.bashrc (not Debian's bash?): the argument limit stays large");
    const std::string src = remote.local() + "/many";
    const std::string pad(200, 'x');
    for (int i = 0; i < 600; ++i) tests::spit(src + "/d" + std::to_string(i) + pad + "/f.txt", std::to_string(i));
    auto stats = client.push(src, to("~/many"));
    CHECK(stats.files_sent == 600);
    CHECK(tree(remote.home() + "/many") == tree(src));
    CHECK_FALSE(fs::exists(remote.home() + "/many/.bifrost-staging"));
}

// A rolled-forward commit that fails again failed for a reason of its own: its upload is discarded
// with a warning naming the reason and this push goes on, instead of every push failing for ever.
TEST_CASE("push: an earlier commit that keeps failing is discarded with its reason, and the push goes on") {
    tests::RemoteFixture remote;
    const std::string src = remote.local() + "/p";
    tests::spit(src + "/a.txt", "a1");
    auto client = remote.client();
    client.push(src, to("~/p"));
    // What an earlier push left: a complete upload whose commit script fails every time.
    tests::spit(remote.home() + "/p/.bifrost-staging/commit.sh", "echo 'mv: Argument list too long' >&2; exit 95\n");
    tests::spit(remote.home() + "/p/.bifrost-staging/ready", "");
    tests::spit(src + "/a.txt", "a2");
    tests::spit(src + "/b.txt", "b");
    auto r = remote.cli({"--persist", "0", "push", remote.target(), src, "--to", "~/p"});
    CHECK(r.code == 0);
    CHECK(r.err.find("could not be completed (mv: Argument list too long)") != std::string::npos);
    CHECK(tree(remote.home() + "/p") == tree(src));
    CHECK_FALSE(fs::exists(remote.home() + "/p/.bifrost-staging"));
}

// A file deleted after the scan and before its turn in the stream (an editor's temporary file, a
// rotated log) failed the whole push ("open for push: No such file"). It is now left out with a
// warning, the other files arrive, and the manifest does not claim it.
TEST_CASE("push: a file deleted between the scan and its turn is skipped, the rest arrive") {
    tests::RemoteFixture remote;
    const std::string src = remote.local() + "/gone";
    const std::string chunk(1 << 20, 'q');  // each file fills several stream chunks
    for (int i = 0; i < 5; ++i) tests::spit(src + "/f" + std::to_string(i) + ".bin", chunk + std::to_string(i));
    // The victim is the last file the stream will reach (the scan's order is the stream's).
    const std::string victim = bifrost::scan_tree(src, {}).back().path;
    auto client = remote.client();
    bool deleted = false;
    bifrost::PushOptions o = to("~/gone");
    o.progress = [&](uint64_t sent, uint64_t) {
        if (!deleted && sent > 0) deleted = fs::remove(src + "/" + victim);
    };
    auto stats = client.push(src, o);
    CHECK(deleted);
    CHECK(stats.files_sent == 4);
    CHECK(tree(remote.home() + "/gone") == tree(src));
    CHECK(tests::slurp(remote.home() + "/gone/.bifrost-manifest").find(victim) == std::string::npos);
    // The next push has nothing to do.
    auto again = client.push(src, to("~/gone"));
    CHECK(again.files_sent == 0);
    CHECK(again.files_deleted == 0);
}
