#include "broker/ledger.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <sstream>
#include <thread>

#include "broker/credentials.h"
#include "common/error.h"
#include "common/log.h"

namespace broker {

namespace {
double now_unix() { return static_cast<double>(std::time(nullptr)); }

struct Stmt {
    sqlite3_stmt * s = nullptr;
    ~Stmt() { sqlite3_finalize(s); }
};

// Several processes open one ledger at once (a sweep starts its members together). SQLite's busy
// timeout covers most lock waits, but some steps answer SQLITE_BUSY or SQLITE_LOCKED at once: the
// switch to WAL and the first schema write while another connection holds the file, a WAL snapshot
// that went stale. Those are retried here, with a growing pause, up to the busy timeout's 10 s.
constexpr auto kLockPatience = std::chrono::seconds(10);

bool is_lock_error(int rc) {
    rc &= 0xff;  // extended codes (SQLITE_BUSY_SNAPSHOT, ...) carry the primary code in the low byte
    return rc == SQLITE_BUSY || rc == SQLITE_LOCKED;
}

template <class Attempt>
int retry_while_locked(Attempt attempt) {
    const auto give_up = std::chrono::steady_clock::now() + kLockPatience;
    auto pause = std::chrono::milliseconds(2);
    for (;;) {
        const int rc = attempt();
        if (!is_lock_error(rc) || std::chrono::steady_clock::now() >= give_up) return rc;
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(100));
    }
}

// sqlite3_exec with lock errors retried; SQLITE_OK, else the code with SQLite's message in `why`.
int exec_retrying(sqlite3 * db, const std::string & sql, std::string & why) {
    char * err = nullptr;
    const int rc = retry_while_locked([&] {
        sqlite3_free(err);
        err = nullptr;
        return sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    });
    why = err ? err : "unknown";
    sqlite3_free(err);
    return rc;
}

std::string octal(mode_t mode) {
    std::ostringstream o;
    o << "0" << std::oct << (mode & 0777);
    return o.str();
}

// Makes `path` 0600: created that way when missing (`create`), fixed with a warning when it exists
// with group/other bits, warned about when it cannot be fixed (someone else's file).
void make_private_file(const std::string & path, bool create) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (fd < 0) {
        if (!create && errno == ENOENT) return;
        throw common::Error::io(path, "open the broker ledger", errno);
    }
    struct stat st {};
    if (::fstat(fd, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO))) {
        if (::fchmod(fd, 0600) == 0)
            common::log::warn(path, ": the broker ledger was mode ", octal(st.st_mode),
                              " (readable by others); made it 0600");
        else
            common::log::warn(path, ": the broker ledger is mode ", octal(st.st_mode),
                              " and could not be made 0600 (", std::strerror(errno), "); run: chmod 600 ", path);
    }
    ::close(fd);
}
}  // namespace

std::string Ledger::default_path(const std::string & state_dir) {
    const char * env = std::getenv("BROKER_LEDGER");
    if (env && *env) return env;
    return state_dir + "/broker-ledger.sqlite";
}

Ledger::Ledger(const std::string & path) : path_(path) {
    const std::string dir = std::filesystem::path(path).parent_path().string();
    struct stat dst {};
    if (!dir.empty() && ::stat(dir.c_str(), &dst) == 0) {
        if (dst.st_mode & (S_IRWXG | S_IRWXO))
            common::log::warn(dir, ": the broker ledger's directory is mode ", octal(dst.st_mode),
                              " (open to group/others); run: chmod 700 ", dir);
    } else {
        create_private_directories(dir);
    }
    // SQLite creates the -wal and -shm files with the database's own mode, so a 0600 database keeps
    // its companions private; ones left by an older version are fixed here as well.
    make_private_file(path, true);
    make_private_file(path + "-wal", false);
    make_private_file(path + "-shm", false);
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
        SQLITE_OK) {
        std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
        sqlite3_close(db_);
        db_ = nullptr;
        throw common::Error(common::ErrorKind::Usage, path + ": cannot open the broker ledger: " + why).with("file", path);
    }
    // Several broker processes may run at once (create in one terminal, sweep in another).
    sqlite3_busy_timeout(db_, static_cast<int>(std::chrono::milliseconds(kLockPatience).count()));
    exec("PRAGMA journal_mode=WAL");  // persistent: later opens find the file in WAL already
    exec("CREATE TABLE IF NOT EXISTS instances ("
         " name TEXT PRIMARY KEY, provider TEXT NOT NULL, instance_id TEXT NOT NULL DEFAULT '',"
         " run_id TEXT NOT NULL DEFAULT '', deadline_unix INTEGER NOT NULL DEFAULT 0,"
         " offer_id TEXT NOT NULL DEFAULT '', price_usd_per_hour REAL NOT NULL DEFAULT 0,"
         " state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',"
         " created_unix REAL NOT NULL, updated_unix REAL NOT NULL, ssh_key TEXT NOT NULL DEFAULT '')");
    // Ledgers written before ssh_key existed get the column (an empty key means "not recorded").
    bool has_ssh_key = false;
    {
        Stmt st;
        if (sqlite3_prepare_v2(db_, "PRAGMA table_info(instances)", -1, &st.s, nullptr) == SQLITE_OK)
            while (sqlite3_step(st.s) == SQLITE_ROW) {
                const unsigned char * name = sqlite3_column_text(st.s, 1);
                if (name && std::string(reinterpret_cast<const char *>(name)) == "ssh_key") has_ssh_key = true;
            }
    }
    if (!has_ssh_key) {
        std::string why;
        const int rc = exec_retrying(db_, "ALTER TABLE instances ADD COLUMN ssh_key TEXT NOT NULL DEFAULT ''", why);
        // Another broker process may have added it between our look and our ALTER.
        if (rc != SQLITE_OK && why.find("duplicate column") == std::string::npos)
            throw common::Error(common::ErrorKind::Internal, path_ + ": ledger: " + why).with("file", path_);
    }
}

Ledger::~Ledger() {
    if (db_) sqlite3_close(db_);
}

void Ledger::exec(const std::string & sql) {
    std::string why;
    if (exec_retrying(db_, sql, why) != SQLITE_OK)
        throw common::Error(common::ErrorKind::Internal, path_ + ": ledger: " + why).with("file", path_);
}

void Ledger::update(const std::string & sql, const std::vector<std::string> & args) {
    Stmt st;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st.s, nullptr) != SQLITE_OK)
        throw common::Error(common::ErrorKind::Internal, path_ + ": ledger: " + sqlite3_errmsg(db_));
    for (size_t i = 0; i < args.size(); ++i)
        sqlite3_bind_text(st.s, static_cast<int>(i + 1), args[i].c_str(), -1, SQLITE_TRANSIENT);
    std::string why;
    const int rc = retry_while_locked([&] {
        const int step = sqlite3_step(st.s);
        if (step != SQLITE_DONE) {
            why = sqlite3_errmsg(db_);
            sqlite3_reset(st.s);  // a retried statement starts again (its bindings are kept)
        }
        return step;
    });
    if (rc != SQLITE_DONE)
        throw common::Error(common::ErrorKind::Internal, path_ + ": ledger write failed: " + why).with("file", path_);
}

void Ledger::record_intent(const LedgerEntry & e) {
    update("INSERT INTO instances (name, provider, instance_id, run_id, deadline_unix, offer_id, price_usd_per_hour,"
           " state, detail, created_unix, updated_unix, ssh_key) VALUES (?1, ?2, '', ?3, ?4, ?5, ?6, 'intent', '', ?7, ?7, ?8)"
           " ON CONFLICT(name) DO UPDATE SET provider=?2, run_id=?3, deadline_unix=?4, offer_id=?5,"
           " price_usd_per_hour=?6, state='intent', updated_unix=?7, ssh_key=?8",
           {e.name, e.provider, e.run_id, std::to_string(e.deadline_unix), e.offer_id,
            std::to_string(e.price_usd_per_hour), std::to_string(now_unix()), e.ssh_key});
}

void Ledger::record_created(const std::string & name, const std::string & id) {
    update("UPDATE instances SET instance_id=?2, state='created', updated_unix=?3 WHERE name=?1",
           {name, id, std::to_string(now_unix())});
}

void Ledger::record_failed(const std::string & name, const std::string & detail) {
    update("UPDATE instances SET state='failed', detail=?2, updated_unix=?3 WHERE name=?1",
           {name, detail, std::to_string(now_unix())});
}

void Ledger::record_terminated(const std::string & provider, const std::string & id) {
    update("UPDATE instances SET state='terminated', updated_unix=?3 WHERE provider=?1 AND instance_id=?2",
           {provider, id, std::to_string(now_unix())});
}

void Ledger::adopt(const LedgerEntry & e) {
    update("INSERT INTO instances (name, provider, instance_id, run_id, deadline_unix, offer_id, price_usd_per_hour,"
           " state, detail, created_unix, updated_unix) VALUES (?1, ?2, ?3, ?4, ?5, '', ?6, 'created', 'adopted', ?7, ?7)"
           " ON CONFLICT(name) DO UPDATE SET instance_id=?3, state='created', updated_unix=?7",
           {e.name, e.provider, e.instance_id, e.run_id, std::to_string(e.deadline_unix),
            std::to_string(e.price_usd_per_hour), std::to_string(now_unix())});
}

std::vector<LedgerEntry> Ledger::query(const std::string & where, const std::vector<std::string> & args) const {
    std::string sql = "SELECT name, provider, instance_id, run_id, deadline_unix, offer_id, price_usd_per_hour, state,"
                      " detail, created_unix, updated_unix, ssh_key FROM instances " + where + " ORDER BY created_unix";
    Stmt st;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st.s, nullptr) != SQLITE_OK)
        throw common::Error(common::ErrorKind::Internal, path_ + ": ledger: " + sqlite3_errmsg(db_));
    for (size_t i = 0; i < args.size(); ++i)
        sqlite3_bind_text(st.s, static_cast<int>(i + 1), args[i].c_str(), -1, SQLITE_TRANSIENT);
    std::vector<LedgerEntry> out;
    auto text = [&](int c) {
        const unsigned char * t = sqlite3_column_text(st.s, c);
        return t ? std::string(reinterpret_cast<const char *>(t)) : std::string();
    };
    auto row = [&] {
        LedgerEntry e;
        e.name = text(0);
        e.provider = text(1);
        e.instance_id = text(2);
        e.run_id = text(3);
        e.deadline_unix = sqlite3_column_int64(st.s, 4);
        e.offer_id = text(5);
        e.price_usd_per_hour = sqlite3_column_double(st.s, 6);
        e.state = text(7);
        e.detail = text(8);
        e.created_unix = sqlite3_column_double(st.s, 9);
        e.updated_unix = sqlite3_column_double(st.s, 10);
        e.ssh_key = text(11);
        return e;
    };
    // A read refused for a lock is retried from the start; any other error is thrown, never taken
    // for the end of the rows (an empty open_entries() would tell a sweep that nothing bills).
    std::string why;
    const int rc = retry_while_locked([&] {
        out.clear();
        int step;
        while ((step = sqlite3_step(st.s)) == SQLITE_ROW) out.push_back(row());
        if (step != SQLITE_DONE) {
            why = sqlite3_errmsg(db_);
            sqlite3_reset(st.s);
        }
        return step;
    });
    if (rc != SQLITE_DONE)
        throw common::Error(common::ErrorKind::Internal, path_ + ": ledger read failed: " + why).with("file", path_);
    return out;
}

std::vector<LedgerEntry> Ledger::open_entries() const { return query("WHERE state IN ('intent', 'created')", {}); }
std::vector<LedgerEntry> Ledger::all() const { return query("", {}); }

std::optional<LedgerEntry> Ledger::find_instance(const std::string & provider, const std::string & id) const {
    auto v = query("WHERE provider=?1 AND instance_id=?2", {provider, id});
    if (v.empty()) return std::nullopt;
    return v.back();
}

std::optional<LedgerEntry> Ledger::find_by_name(const std::string & name) const {
    auto v = query("WHERE name=?1", {name});
    if (v.empty()) return std::nullopt;
    return v.front();
}

std::vector<LedgerEntry> Ledger::find_by_id(const std::string & id) const { return query("WHERE instance_id=?1", {id}); }

}  // namespace broker
