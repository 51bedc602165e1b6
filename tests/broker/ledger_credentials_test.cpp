// The ledger (intent before create, outcome after) and credentials (env over file, 0600 enforced,
// keys redacted everywhere).
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

#include "broker/credentials.h"
#include "broker/ledger.h"
#include "common/error.h"
#include "common/log.h"
#include "tests/support/processes_at_once.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>

using namespace broker;

TEST_CASE("ledger: intent is recorded before the outcome and survives reopening") {
    tests::TempDir dir;
    std::string path = dir / "state/ledger.sqlite";
    {
        Ledger l(path);
        LedgerEntry e;
        e.name = "tk-r1-main-dl100";
        e.provider = "runpod";
        e.run_id = "r1";
        e.deadline_unix = 100;
        e.offer_id = "X/secure/1";
        e.price_usd_per_hour = 2.5;
        l.record_intent(e);
        auto open = l.open_entries();
        REQUIRE(open.size() == 1);
        CHECK(open[0].state == "intent");
        CHECK(open[0].instance_id.empty());
    }
    Ledger l(path);  // a crash here would leave the intent: sweep finds the instance by name
    l.record_created("tk-r1-main-dl100", "pod-1");
    auto found = l.find_instance("runpod", "pod-1");
    REQUIRE(found);
    CHECK(found->state == "created");
    CHECK(found->deadline_unix == 100);
    l.record_terminated("runpod", "pod-1");
    CHECK(l.open_entries().empty());
    CHECK(l.all().size() == 1);
    CHECK(l.find_by_id("pod-1").size() == 1);
}

TEST_CASE("ledger: a failed attempt is closed, not left open") {
    tests::TempDir dir;
    Ledger l(dir / "l.sqlite");
    LedgerEntry e;
    e.name = "tk-r2-main-dl100";
    e.provider = "vast";
    l.record_intent(e);
    l.record_failed(e.name, "capacity");
    CHECK(l.open_entries().empty());
    CHECK(l.all()[0].detail == "capacity");
}

TEST_CASE("credentials: a config file readable by others is refused") {
    tests::TempDir dir;
    std::string path = dir / "broker.yaml";
    tests::write_file(path, "runpod:\n  api_key: \"rp-secret-123\"\n");
    ::chmod(path.c_str(), 0644);
    try {
        load_config(path);
        FAIL("expected refusal");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Auth);
        CHECK(e.message().find("chmod 600") != std::string::npos);
    }
    ::chmod(path.c_str(), 0600);
    auto cfg = load_config(path);
    CHECK(cfg.providers.at("runpod").api_key == "rp-secret-123");
}

TEST_CASE("credentials: environment overrides the file, keys are redacted from logs") {
    tests::TempDir dir;
    std::string path = dir / "broker.yaml";
    BrokerConfig cfg;
    cfg.providers["vast"] = {"file-key-abcdef", "http://127.0.0.1:1", ""};
    write_config(path, cfg);
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    auto loaded = load_config(path);
    {
        tests::EnvGuard g("VAST_API_KEY", std::nullopt);
        auto s = resolve_provider(loaded, "vast", "VAST_API_KEY", "VAST_BASE_URL");
        CHECK(s.api_key == "file-key-abcdef");
        CHECK(s.base_url == "http://127.0.0.1:1");
    }
    tests::EnvGuard g("VAST_API_KEY", std::string("env-key-123456"));
    auto s = resolve_provider(loaded, "vast", "VAST_API_KEY", "VAST_BASE_URL");
    CHECK(s.api_key == "env-key-123456");
    CHECK(common::log::redact("bad key env-key-123456 and file-key-abcdef") == "bad key [REDACTED] and [REDACTED]");
}

TEST_CASE("credentials: unknown keys in the config file are refused with file:line") {
    tests::TempDir dir;
    std::string path = dir / "broker.yaml";
    tests::write_file(path, "runpod:\n  apikey: x\n");
    ::chmod(path.c_str(), 0600);
    try {
        load_config(path);
        FAIL("expected an error");
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        CHECK(e.message().find("broker.yaml:2") != std::string::npos);
    }
}

namespace {
mode_t mode_of(const std::string & path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 0777;
}
// The ordinary umask, whatever the test runner set: the point is that the ledger does not rely on it.
struct Umask {
    mode_t old;
    explicit Umask(mode_t m) : old(::umask(m)) {}
    ~Umask() { ::umask(old); }
};
}  // namespace

TEST_CASE("ledger: the file is 0600 and the directories created for it 0700, whatever the umask") {
    Umask u(022);
    tests::TempDir dir;
    const std::string path = dir / "state/toolkit/ledger.sqlite";
    {
        Ledger l(path);
        LedgerEntry e;
        e.name = "tk-m1-main-dl100";
        e.provider = "vast";
        l.record_intent(e);
    }
    CHECK(mode_of(path) == 0600);
    CHECK(mode_of(dir / "state") == 0700);
    CHECK(mode_of(dir / "state/toolkit") == 0700);
    if (::access((path + "-wal").c_str(), F_OK) == 0) CHECK(mode_of(path + "-wal") == 0600);
    if (::access((path + "-shm").c_str(), F_OK) == 0) CHECK(mode_of(path + "-shm") == 0600);
}

TEST_CASE("ledger: an existing ledger with group/other bits is made 0600 on open, companions too") {
    Umask u(022);
    tests::TempDir dir;
    const std::string path = dir / "ledger.sqlite";
    { Ledger l(path); }
    ::chmod(path.c_str(), 0644);
    tests::write_file(path + "-wal", "");  // as an older version left it
    ::chmod((path + "-wal").c_str(), 0644);
    Ledger l(path);
    CHECK(mode_of(path) == 0600);
    CHECK(mode_of(path + "-wal") == 0600);
    // An existing directory is not ours to chmod (it may be shared): left as it was, only warned about.
    CHECK(mode_of(dir.path()) == 0700);
}

TEST_CASE("ledger: the private key a create used is recorded, older ledgers gain the column") {
    tests::TempDir dir;
    const std::string path = dir / "old.sqlite";
    {
        // The schema before ssh_key existed, with one row.
        sqlite3 * db = nullptr;
        REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
        REQUIRE(sqlite3_exec(db,
                             "CREATE TABLE instances (name TEXT PRIMARY KEY, provider TEXT NOT NULL, instance_id TEXT NOT "
                             "NULL DEFAULT '', run_id TEXT NOT NULL DEFAULT '', deadline_unix INTEGER NOT NULL DEFAULT 0, "
                             "offer_id TEXT NOT NULL DEFAULT '', price_usd_per_hour REAL NOT NULL DEFAULT 0, state TEXT NOT "
                             "NULL, detail TEXT NOT NULL DEFAULT '', created_unix REAL NOT NULL, updated_unix REAL NOT NULL);"
                             "INSERT INTO instances (name, provider, instance_id, state, created_unix, updated_unix) VALUES "
                             "('tk-old-main-dl1', 'vast', '5', 'created', 1, 1);",
                             nullptr, nullptr, nullptr) == SQLITE_OK);
        sqlite3_close(db);
    }
    Ledger l(path);
    auto old = l.find_instance("vast", "5");
    REQUIRE(old);
    CHECK(old->ssh_key.empty());  // not recorded then: callers fall back to the default key
    LedgerEntry e;
    e.name = "tk-new-main-dl1";
    e.provider = "runpod";
    e.ssh_key = "/home/u/.ssh/run_key";
    l.record_intent(e);
    l.record_created(e.name, "pod-9");
    auto got = l.find_instance("runpod", "pod-9");
    REQUIRE(got);
    CHECK(got->ssh_key == "/home/u/.ssh/run_key");
    Ledger again(path);  // reopening does not add the column twice
    CHECK(again.find_instance("runpod", "pod-9")->ssh_key == "/home/u/.ssh/run_key");
}

TEST_CASE("ledger: many processes opening a new ledger at once all record their instance") {
    // A sweep starts its members together, and each opens the same fresh ledger: creating the table
    // and switching it to WAL race, and SQLite answers some of those steps "database is locked"
    // without waiting on the busy timeout. Every process must still record its intent.
    constexpr int kProcs = 8, kRounds = 12;
    for (int round = 0; round < kRounds; ++round) {
        tests::TempDir dir;
        const std::string path = dir / "state/ledger.sqlite";
        const int failed = tests::run_processes_at_once(kProcs, [&](int i) {
            Ledger l(path);
            LedgerEntry e;
            e.name = "tk-m" + std::to_string(i);
            e.provider = "local";
            l.record_intent(e);
            l.record_created(e.name, "id-" + std::to_string(i));
        });
        CHECK_MESSAGE(failed == 0, "round ", round, ": ", failed, " of ", kProcs, " processes failed");
        CHECK(Ledger(path).open_entries().size() == kProcs);
    }
}
