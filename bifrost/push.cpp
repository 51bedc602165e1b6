// push: incremental, atomic mirror of a local tree into a remote directory.
//
// 1. One round trip reads the remote manifest (<dir>/.bifrost-manifest) and, if a previous push was
//    interrupted after its upload completed, first finishes it by re-running its commit script.
// 2. Local files are compared by SHA-256 (cached locally by size/mtime/inode, so an unchanged tree
//    is not re-read); only new or changed files travel, as one tar stream on one channel.
// 3. The stream lands in <dir>/.bifrost-staging; only once it is complete (marker `ready`) does the
//    commit script rename each file into place (rename(2): each file is old or new, never partial),
//    delete what the old manifest had and the new one lacks, then replace the manifest. An
//    interrupted commit is re-run by the next push (step 1); an interrupted upload is discarded.
// Only files bifrost itself pushed are ever deleted (they are in the old manifest).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <map>
#include <set>

#include "bifrost/bifrost.h"
#include "bifrost/client_impl.h"
#include "bifrost/manifest.h"
#include "bifrost/shell.h"
#include "bifrost/tar.h"
#include "common/error.h"
#include "common/log.h"

namespace fs = std::filesystem;

namespace bifrost {

using common::Error;
using common::ErrorKind;

namespace {

constexpr const char * kStaging = ".bifrost-staging";

bool safe_relative(const std::string & p) {
    if (p.empty() || p[0] == '/') return false;
    size_t start = 0;
    while (start <= p.size()) {
        size_t end = p.find('/', start);
        if (end == std::string::npos) end = p.size();
        std::string part = p.substr(start, end - start);
        if (part.empty() || part == "." || part == "..") return false;
        start = end + 1;
    }
    return true;
}

std::string parent_of(const std::string & p) {
    auto slash = p.rfind('/');
    return slash == std::string::npos ? std::string() : p.substr(0, slash);
}

// The commit script: deletions, renames from staging, leftover check, manifest. It is idempotent,
// so re-running it after an interruption completes the push. Whole new directories (a first push,
// a new subtree) move with one rename each, batched into one mv per parent: forks, not bytes,
// dominate on a busy remote. `had` holds every directory that held a file of the old manifest.
std::string commit_script(const std::vector<std::string> & changed, const std::vector<std::string> & deleted,
                          const std::set<std::string> & had) {
    // ok stays 1 while every rename succeeds; only then is the (3-fork) leftover scan skipped.
    std::string s = "S=.bifrost-staging\nok=1\n";
    constexpr size_t kBatch = 200;
    for (size_t i = 0; i < deleted.size(); i += kBatch) {
        s += "rm -f --";
        for (size_t j = i; j < std::min(deleted.size(), i + kBatch); ++j) s += " " + sh_quote(deleted[j]);
        s += "\n";
    }
    std::set<std::string> emptied;
    for (const auto & d : deleted)
        if (auto p = parent_of(d); !p.empty()) emptied.insert(p);
    for (const auto & d : emptied) s += "rmdir -p -- " + sh_quote(d) + " 2>/dev/null\n";

    // The topmost directory of each changed file's path that the old manifest never used.
    std::map<std::string, std::set<std::string>> new_dirs_by_parent;
    std::map<std::string, std::vector<std::string>> files_by_dir;
    for (const auto & c : changed) {
        std::string top;
        size_t at = 0;
        while ((at = c.find('/', at)) != std::string::npos) {
            std::string dir = c.substr(0, at++);
            if (!had.count(dir)) {
                top = dir;
                break;
            }
        }
        if (top.empty()) files_by_dir[parent_of(c)].push_back(c);
        else new_dirs_by_parent[parent_of(top)].insert(top);
    }
    std::set<std::string> parents;
    for (const auto & [parent, dirs] : new_dirs_by_parent)
        if (!parent.empty()) parents.insert(parent);
    for (const auto & [dir, files] : files_by_dir)
        if (!dir.empty()) parents.insert(dir);
    if (!parents.empty()) {
        s += "mkdir -p --";
        for (const auto & p : parents) s += " " + sh_quote(p);
        s += " || exit 95\n";
    }
    if (!new_dirs_by_parent.empty())
        // A directory that appeared remotely meanwhile (not ours) is merged file by file instead.
        s += "merge_tree() { (cd \"$S/files/$1\" 2>/dev/null && find . ! -type d) | while IFS= read -r f; do\n"
             "  mkdir -p -- \"$(dirname -- \"$1/$f\")\" && mv -f -- \"$S/files/$1/$f\" \"$1/$f\"; done; }\n";
    // In batches like the other mv and rm calls: one mv of every new directory of a parent hit the
    // argument-size limit ("Argument list too long") with thousands of siblings, and growing "$@"
    // one word at a time is quadratic in dash.
    for (const auto & [parent, dirs] : new_dirs_by_parent) {
        const std::vector<std::string> list(dirs.begin(), dirs.end());
        for (size_t i = 0; i < list.size(); i += kBatch) {
            s += "set --\nfor d in";
            for (size_t j = i; j < std::min(list.size(), i + kBatch); ++j) s += " " + sh_quote(list[j]);
            s += "; do if [ -e \"$d\" ] || [ -L \"$d\" ]; then merge_tree \"$d\"; "
                 "elif [ -e \"$S/files/$d\" ]; then set -- \"$@\" \"$S/files/$d\"; fi; done\n"
                 "[ $# -eq 0 ] || mv -f -- \"$@\" " + (parent.empty() ? std::string("./") : sh_quote(parent + "/")) + " || ok=0\n";
        }
    }
    for (const auto & [dir, files] : files_by_dir) {
        for (size_t i = 0; i < files.size(); i += kBatch) {
            // Missing sources (already moved by an interrupted run) make mv complain; the leftover
            // check below is what decides success.
            s += "mv -f --";
            for (size_t j = i; j < std::min(files.size(), i + kBatch); ++j) s += " \"$S\"/files/" + sh_quote(files[j]);
            s += " " + (dir.empty() ? std::string("./") : sh_quote(dir + "/")) + " 2>/dev/null || ok=0\n";
        }
    }
    s += "if [ $ok = 0 ] && [ -d \"$S/files\" ] && [ -n \"$(find \"$S/files\" ! -type d | head -n 1)\" ]; then\n"
         "  echo \"bifrost: push: could not move every file into place: $(find \"$S/files\" ! -type d | head -n 3)\" >&2; exit 95\n"
         "fi\n"
         "mv -f \"$S/manifest.new\" .bifrost-manifest || exit 95\n"
         "rm -rf \"$S\"\n";
    return s;
}

// Step 1's script: creates the directory if needed, rolls forward a push whose upload had
// completed, and answers the directory's real path, "clean", "completed" or "discarded", then the
// manifest. A commit that fails again here failed for a reason of its own, not an interruption
// (nothing interrupts this run of it): re-running it on every push would fail every push for
// ever, so its staging is discarded (its reason on stderr) and this push sends what is still
// needed. Discarding is safe: files it already moved are not in the manifest yet, so they are
// compared and sent again.
std::string remote_state_script(const std::string & dir_expr) {
    return "D=" + dir_expr + "\n"
           "{ [ -d \"$D\" ] || mkdir -p -- \"$D\"; } && cd -- \"$D\" || exit 97\n"
           "r=clean\n"
           "if [ -f .bifrost-staging/ready ]; then\n"
           "  if e=$(sh .bifrost-staging/commit.sh 2>&1 >/dev/null); then r=completed\n"
           "  else printf '%s\\n' \"$e\" | head -c 2000 >&2; rm -rf .bifrost-staging; r=discarded; fi\n"
           "fi\n"
           "pwd -P; echo \"$r\"; [ -f .bifrost-manifest ] && exec cat .bifrost-manifest; exit 0\n";
}

// The reply to remote_state_script: fills stats.remote_dir and completed_interrupted_push and
// returns the remote manifest.
Manifest parse_remote_state(const std::string & state, const std::string & err, const std::string & label,
                            const std::string & remote_dir, PushStats & stats) {
    size_t nl1 = state.find('\n');
    size_t nl2 = nl1 == std::string::npos ? std::string::npos : state.find('\n', nl1 + 1);
    if (nl2 == std::string::npos) throw Error(ErrorKind::RemoteFailed, label + ": push: unexpected reply reading " + remote_dir);
    stats.remote_dir = state.substr(0, nl1);
    const std::string outcome = state.substr(nl1 + 1, nl2 - nl1 - 1);
    stats.completed_interrupted_push = outcome == "completed";
    if (stats.completed_interrupted_push) common::log::info("push: completed an interrupted earlier push to ", stats.remote_dir);
    if (outcome == "discarded") {
        std::string why = err;
        while (!why.empty() && why.back() == '\n') why.pop_back();
        common::log::warn("push: an earlier push to ", stats.remote_dir, " could not be completed (",
                          why.empty() ? "its commit failed" : why,
                          "); its upload was discarded and this push sends what is still needed");
    }
    return parse_manifest(std::string_view(state).substr(nl2 + 1));
}

// Step 2: what travels (new or changed by hash, mode or type; a file is hashed only when the cache
// has no hash and the remote has one of the same size) and which files of the old manifest go.
struct Transfer {
    std::vector<FileEntry *> to_send;
    std::vector<std::string> deleted;
};

Transfer plan_transfer(std::vector<FileEntry> & local, const Manifest & remote, HashCache & cache, const fs::path & root,
                       PushStats & stats) {
    Transfer t;
    std::set<std::string> local_paths;
    for (auto & e : local) {
        local_paths.insert(e.path);
        stats.files_total++;
        stats.bytes_total += e.size;
        auto it = remote.find(e.path);
        if (e.type == 'f' && e.hash.empty()) {
            if (auto h = cache.lookup(e)) e.hash = *h;
            else if (it != remote.end() && it->second.size == e.size && it->second.type == 'f')
                e.hash = sha256_file(root.string() + "/" + e.path);
        }
        bool same = it != remote.end() && !e.hash.empty() && it->second.hash == e.hash && it->second.mode == e.mode &&
                    it->second.type == e.type;
        if (!same) t.to_send.push_back(&e);
    }
    for (const auto & [path, e] : remote)
        if (!local_paths.count(path) && safe_relative(path)) t.deleted.push_back(path);
    stats.files_deleted = t.deleted.size();
    return t;
}

// The manifest.new the stream ends with, built once every file has been sent: a file's hash is the
// one of the bytes actually sent (a file that changed mid-send is recorded as sent, and warned of).
std::string next_manifest(TarStream & tar, const std::vector<FileEntry *> & to_send, const std::vector<FileEntry> & local,
                          const Manifest & remote) {
    Manifest next;
    size_t file_index = 0;
    for (FileEntry * e : to_send) {
        if (e->type != 'f') continue;
        if (tar.vanished()[file_index]) {
            ++file_index;
            continue;
        }
        const std::string & sent = tar.sent_hashes()[file_index];
        if (tar.changed_while_sent()[file_index] || (!e->hash.empty() && e->hash != sent))
            common::log::warn("push: ", e->path, " changed while it was being sent; the next push sends it again");
        else
            e->hash = sent;
        ++file_index;
    }
    for (auto & e : local) {
        FileEntry m = e;
        auto it = remote.find(e.path);
        if (m.hash.empty() && it != remote.end()) m.hash = it->second.hash;
        next[e.path] = m;
    }
    file_index = 0;
    for (FileEntry * e : to_send) {
        if (e->type != 'f') continue;
        if (tar.vanished()[file_index++]) {
            // Not sent: the remote keeps what it had (the next push deletes it, since it is gone
            // here), and a new file never arrived.
            if (auto it = remote.find(e->path); it != remote.end()) next[e->path] = it->second;
            else next.erase(e->path);
            continue;
        }
        next[e->path].hash = tar.sent_hashes()[file_index - 1];
    }
    return format_manifest(next);
}

// Step 3's stream: the changed files under files/, manifest.new (deferred to the end) and the
// commit script. Returns the file bytes it will send. The deferred manifest refers to tar, to_send,
// local and remote, which must outlive the stream.
uint64_t fill_stream(TarStream & tar, const fs::path & root, const Transfer & t, const std::vector<FileEntry> & local,
                     const Manifest & remote) {
    uint64_t bytes_to_send = 0;
    std::vector<std::string> changed;
    for (FileEntry * e : t.to_send) {
        changed.push_back(e->path);
        if (e->type == 'l') {
            tar.add_symlink("files/" + e->path, e->link_target, e->mtime_ns / 1000000000);
        } else {
            tar.add_file("files/" + e->path, root.string() + "/" + e->path, e->mode, e->size, e->mtime_ns / 1000000000);
            bytes_to_send += e->size;
        }
    }
    tar.add_deferred("manifest.new", [&tar, &t, &local, &remote]() { return next_manifest(tar, t.to_send, local, remote); },
                     0600);
    std::set<std::string> had;
    for (const auto & [path, e] : remote)
        for (size_t at = 0; (at = path.find('/', at)) != std::string::npos; ++at) had.insert(path.substr(0, at));
    tar.add_data("commit.sh", commit_script(changed, t.deleted, had), 0600);
    return bytes_to_send;
}

// Streams tar into staging and commits it, on one channel.
void upload_and_commit(Client::Impl & impl, const std::string & dir_expr, TarStream & tar, uint64_t bytes_to_send,
                       const PushOptions & options, const std::string & label, const PushStats & stats) {
    Prologue p = make_prologue("D=" + dir_expr + "\n"
                               "cd -- \"$D\" || exit 97\n"
                               "{ [ ! -e .bifrost-staging ] || rm -rf .bifrost-staging; } && mkdir .bifrost-staging || exit 97\n"
                               "tar -x -o -f - -C .bifrost-staging || exit 96\n"
                               "[ -f .bifrost-staging/commit.sh ] || { echo 'bifrost: push: upload incomplete' >&2; exit 96; }\n"
                               ": > .bifrost-staging/ready\n"
                               // Sourced, not run: one process fewer (its `exit` ends this shell, as intended).
                               ". .bifrost-staging/commit.sh\n");
    RemoteCommand rc;
    rc.command = p.command;
    rc.stdin_data = p.stdin_block;
    rc.stdin_source = [&](std::string & chunk) {
        bool more = tar.next(chunk);
        if (options.progress) options.progress(tar.file_bytes_sent(), bytes_to_send);
        return more;
    };
    std::string err;
    rc.on_stderr = [&](std::string_view d) { err.append(d); };
    int status = impl.run(rc);
    if (status != 0) {
        while (!err.empty() && err.back() == '\n') err.pop_back();
        throw Error(ErrorKind::RemoteFailed, label + ": push to " + stats.remote_dir + " failed (exit " +
                                                 std::to_string(status) + ")" + (err.empty() ? "" : ": " + err) +
                                                 "; the remote tree is unchanged or partly renamed file by file; push again to complete it")
            .with("host", label);
    }
}

// Remembers the hashes of what is now remote (not those of files that changed while sent).
void remember_hashes(HashCache & cache, const std::vector<FileEntry *> & to_send, const TarStream & tar,
                     const std::vector<FileEntry> & local) {
    for (size_t i = 0, f = 0; i < to_send.size(); ++i) {
        if (to_send[i]->type != 'f') continue;
        if (!tar.changed_while_sent()[f] && !tar.vanished()[f]) cache.store(*to_send[i]);
        ++f;
    }
    for (const auto & e : local)
        if (!e.hash.empty()) cache.store(e);
    cache.save();
}

}  // namespace

PushStats Client::push(const std::string & local_dir, const PushOptions & options) {
    std::error_code ec;
    fs::path root = fs::canonical(local_dir, ec);
    if (ec || !fs::is_directory(root)) throw Error::not_found("local directory " + local_dir, "not a directory");
    std::string remote_dir = options.remote_dir;
    if (remote_dir.empty()) remote_dir = "~/workspace/" + root.filename().string();
    const std::string dir_expr = remote_path_expr(remote_dir);
    const std::string label = impl_->t().label();

    // The local walk runs while the remote answers (it only reads local files; the transport
    // stays on this thread).
    auto scanned = std::async(std::launch::async, [&] {
        return std::make_pair(scan_tree(root.string(), {options.include_git, options.excludes}),
                              std::make_unique<HashCache>(hash_cache_path(root.string())));
    });
    Client::Impl::Captured state;
    try {
        state = impl_->run_script(remote_state_script(dir_expr));
        if (state.status != 0) {
            while (!state.err.empty() && state.err.back() == '\n') state.err.pop_back();
            throw Error(ErrorKind::RemoteFailed, label + ": push: reading the remote manifest of " + remote_dir + " failed (exit " +
                                                     std::to_string(state.status) + ")" +
                                                     (state.err.empty() ? "" : ": " + state.err))
                .with("host", label);
        }
    } catch (...) {
        scanned.wait();
        throw;
    }
    auto [local, cache_ptr] = scanned.get();
    HashCache & cache = *cache_ptr;
    PushStats stats;
    const Manifest remote = parse_remote_state(state.out, state.err, label, remote_dir, stats);

    const Transfer t = plan_transfer(local, remote, cache, root, stats);
    if (t.to_send.empty() && t.deleted.empty()) {
        for (const auto & e : local) cache.store(e);
        cache.save();
        return stats;
    }
    TarStream tar;
    const uint64_t bytes_to_send = fill_stream(tar, root, t, local, remote);
    upload_and_commit(*impl_, dir_expr, tar, bytes_to_send, options, label, stats);
    stats.files_sent = t.to_send.size() - static_cast<uint64_t>(std::count(tar.vanished().begin(), tar.vanished().end(), true));
    stats.bytes_sent = tar.file_bytes_sent();
    remember_hashes(cache, t.to_send, tar, local);
    return stats;
}

}  // namespace bifrost
