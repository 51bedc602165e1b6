// The local ledger (SQLite): the intent is recorded BEFORE every create and the outcome after, so a
// crash between the provider's answer and our record leaves a row naming the instance we may have
// paid for; `broker sweep` reconciles those rows with the providers' own listings.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace broker {

struct LedgerEntry {
    std::string name;  // the instance name we asked for (unique)
    std::string provider;
    std::string instance_id;  // empty while only the intent exists
    std::string run_id;
    long long deadline_unix = 0;
    std::string offer_id;
    double price_usd_per_hour = 0;
    std::string state;  // intent | created | failed | terminated
    std::string detail;
    std::string ssh_key;  // absolute path of the private key the create injected ("" when unknown)
    double created_unix = 0;
    double updated_unix = 0;
};

class Ledger {
public:
    // $BROKER_LEDGER, else <state_dir>/broker-ledger.sqlite.
    static std::string default_path(const std::string & state_dir);
    // The ledger names every instance that may bill, with the key that opens it: the file (and its
    // SQLite -wal/-shm companions) is made 0600 — an existing one with other bits is fixed, with a
    // warning — and a directory created for it is 0700. An existing directory that group or others
    // can enter is only warned about: it may be shared (a --ledger in /tmp), so it is not ours to chmod.
    explicit Ledger(const std::string & path);
    ~Ledger();
    Ledger(const Ledger &) = delete;
    Ledger & operator=(const Ledger &) = delete;

    void record_intent(const LedgerEntry & entry);  // state = intent
    void record_created(const std::string & name, const std::string & instance_id);
    void record_failed(const std::string & name, const std::string & detail);
    void record_terminated(const std::string & provider, const std::string & instance_id);
    // An instance found on a provider that the ledger did not know (e.g. created from another machine).
    void adopt(const LedgerEntry & entry);
    std::vector<LedgerEntry> open_entries() const;  // intent or created
    std::vector<LedgerEntry> all() const;
    std::optional<LedgerEntry> find_instance(const std::string & provider, const std::string & instance_id) const;
    std::vector<LedgerEntry> find_by_id(const std::string & instance_id) const;
    std::optional<LedgerEntry> find_by_name(const std::string & name) const;
    const std::string & path() const { return path_; }

private:
    void exec(const std::string & sql);
    std::vector<LedgerEntry> query(const std::string & where, const std::vector<std::string> & args) const;
    void update(const std::string & sql, const std::vector<std::string> & args);

    std::string path_;
    sqlite3 * db_ = nullptr;
};

}  // namespace broker
