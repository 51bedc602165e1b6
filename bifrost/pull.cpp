// pull: recursive download, verified by SHA-256 and resumable. One listing round trip returns
// size, mode and sha256sum for every remote file (coreutils only: find, stat, sha256sum, readlink);
// every name is checked before anything is written, so a hostile or broken server cannot make us
// write outside LOCAL (.. and absolute names refuse the pull; symlinks leading out are skipped). Each file streams
// into NAME.bifrost-part (appending from its current size after an interruption), is verified
// against the remote hash, and is renamed into place. Files already present with the right hash
// are skipped.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <map>
#include <set>

#include "bifrost/bifrost.h"
#include "bifrost/client_impl.h"
#include "bifrost/manifest.h"
#include "bifrost/shell.h"
#include "common/error.h"
#include "common/log.h"

namespace fs = std::filesystem;

namespace bifrost {

using common::Error;
using common::ErrorKind;

namespace {

constexpr int kNoSuchPath = 92;
constexpr int kNoSha256sum = 94;

struct RemoteFile {
    uint64_t size = 0;
    unsigned mode = 0644;
    std::string hash;
    bool is_link = false;
    std::string link_target;
};

// "./a/b" -> "a/b"; refuses anything that could leave the root.
std::string checked_name(const std::string & raw, const std::string & label) {
    auto refuse = [&](const std::string & why) {
        return Error(ErrorKind::RemoteFailed, label + ": pull: refusing remote name '" + raw + "': " + why +
                                                  "; nothing was written");
    };
    if (raw.rfind("./", 0) != 0) throw refuse("not relative to the pulled directory");
    std::string p = raw.substr(2);
    if (p.empty()) throw refuse("empty name");
    size_t start = 0;
    while (start <= p.size()) {
        size_t end = p.find('/', start);
        if (end == std::string::npos) end = p.size();
        std::string part = p.substr(start, end - start);
        if (part.empty() || part == "." || part == "..") throw refuse("it would escape the destination");
        start = end + 1;
    }
    const std::string suffix = ".bifrost-part";
    if (p.size() >= suffix.size() && p.compare(p.size() - suffix.size(), suffix.size(), suffix) == 0)
        throw refuse("it collides with bifrost's partial-download suffix");
    return p;
}

std::vector<std::string> split_path(const std::string & p) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (start <= p.size()) {
        size_t end = p.find('/', start);
        if (end == std::string::npos) end = p.size();
        parts.push_back(p.substr(start, end - start));
        start = end + 1;
    }
    return parts;
}

std::string join_path(const std::vector<std::string> & parts) {
    std::string out;
    for (const auto & p : parts) out += (out.empty() ? "" : "/") + p;
    return out;
}

// True when the symlink `link_path` -> `target` leads to a place inside the pulled directory once
// it is resolved as the system will resolve it after the pull. Not only lexically: ".." after a
// component that is itself one of the pulled links climbs from where that link leads (with
// d -> ., e -> d/.. is the directory above, though "d/.." looks like "."), so a link component
// that more components follow is replaced by its own target. ".." after a component the listing
// does not show to be a real directory is refused: what it names locally is unknown.
bool link_stays_inside(const std::string & link_path, const std::string & target,
                       const std::map<std::string, std::string> & links, const std::set<std::string> & real_dirs) {
    if (target.empty() || target[0] == '/') return false;
    std::vector<std::string> at = split_path(link_path);
    at.pop_back();  // the link's own directory
    std::vector<std::string> todo = split_path(target);
    std::reverse(todo.begin(), todo.end());  // a stack: the next component last
    int expansions = 0;
    while (!todo.empty()) {
        std::string part = todo.back();
        todo.pop_back();
        if (part.empty() || part == ".") continue;
        if (part == "..") {
            if (at.empty() || !real_dirs.count(join_path(at))) return false;
            at.pop_back();
            continue;
        }
        at.push_back(part);
        const std::string here = join_path(at);
        auto link = links.find(here);
        bool more = false;
        for (const auto & rest : todo) more |= !rest.empty() && rest != ".";
        if (link == links.end() || !more) continue;
        // The system follows this link before the components after it: so do we.
        if (++expansions > 40 || link->second.empty() || link->second[0] == '/') return false;
        at.pop_back();
        std::vector<std::string> inner = split_path(link->second);
        for (auto it = inner.rbegin(); it != inner.rend(); ++it) todo.push_back(*it);
    }
    return true;
}

// Creates the parent directories of rel under root, refusing symlinks on the way.
void make_parents(const std::string & root, const std::string & rel) {
    std::string path = root;
    size_t start = 0;
    for (;;) {
        size_t slash = rel.find('/', start);
        if (slash == std::string::npos) return;
        path += "/" + rel.substr(start, slash - start);
        start = slash + 1;
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0) {
            if (S_ISLNK(st.st_mode) || !S_ISDIR(st.st_mode))
                throw Error::usage("local path " + path + " is a symlink or not a directory; refusing to write through it");
            continue;
        }
        if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw Error::io(path, "create directory", errno);
    }
}

uint64_t file_size_nofollow(const std::string & path, bool & is_regular) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        is_regular = false;
        return 0;
    }
    is_regular = S_ISREG(st.st_mode);
    return static_cast<uint64_t>(st.st_size);
}

// Which directory the listing is relative to, and which names it covers: a directory's contents,
// or one file (or link) as ./NAME from its parent. The fetch commands start with it too, so the
// names they use are the listing's.
std::string listing_prelude(const std::string & remote_expr) {
    return "R=" + remote_expr + "\n"
           "if [ -d \"$R\" ]; then cd -- \"$R\" || exit 92; set -- .\n"
           "elif [ -e \"$R\" ] || [ -L \"$R\" ]; then cd -- \"$(dirname -- \"$R\")\" || exit 92; set -- ./\"$(basename -- \"$R\")\"\n"
           "else echo 'no such file or directory' >&2; exit " + std::to_string(kNoSuchPath) + "; fi\n";
}

// One round trip: sizes and modes (S), sha256sums (H), links and their targets (L), each section
// a run of NUL-terminated records after its letter. `sha256sum -z` (NUL-terminated lines, so any
// file name survives) needs coreutils >= 8.30 (Ubuntu 18.04 has 8.28): without it each file is
// hashed from stdin, which prints no name to escape, one process per file.
std::string listing_script(const std::string & prelude) {
    return "command -v sha256sum > /dev/null 2>&1 || { echo 'sha256sum not found' >&2; exit " +
           std::to_string(kNoSha256sum) + "; }\n" + prelude +
           "printf 'S\\0'; find \"$@\" -type f -exec stat --printf '%s %a %n\\0' -- {} + || exit 93\n"
           "printf 'H\\0'\n"
           "if sha256sum -z /dev/null > /dev/null 2>&1; then find \"$@\" -type f -exec sha256sum -z -- {} + || exit 93\n"
           "else find \"$@\" -type f -exec sh -c 'for f do h=$(sha256sum < \"$f\") || exit 1; printf \"%s  %s\\0\" \"${h%% *}\" \"$f\"; done' sh {} + || exit 93\n"
           "fi\n"
           "printf 'L\\0'; find \"$@\" -type l -exec sh -c 'for l do printf \"%s\\0%s\\0\" \"$l\" \"$(readlink -- \"$l\")\"; done' sh {} + || exit 93\n";
}

std::vector<std::string> nul_records(const std::string & out) {
    std::vector<std::string> records;
    for (size_t start = 0; start < out.size();) {
        size_t end = out.find('\0', start);
        if (end == std::string::npos) end = out.size();
        records.push_back(out.substr(start, end - start));
        start = end + 1;
    }
    return records;
}

// bifrost's own bookkeeping in a pushed directory is not part of the results.
bool is_bookkeeping(const std::string & name) {
    return name == "./.bifrost-manifest" || name.rfind("./.bifrost-staging/", 0) == 0;
}

// The listing's records as checked names (every one refused before anything is written when it
// could leave the destination) with size, mode, hash or link target; every file has a checksum.
// Symlinks that lead out of the destination are left out, "NAME -> TARGET" in refused_links.
std::map<std::string, RemoteFile> parse_listing(const std::string & out, const std::string & label,
                                                std::vector<std::string> & refused_links) {
    std::map<std::string, RemoteFile> files;
    char section = 0;
    const std::vector<std::string> records = nul_records(out);
    for (size_t i = 0; i < records.size(); ++i) {
        const std::string & rec = records[i];
        if (rec == "S" || rec == "H" || rec == "L") {
            section = rec[0];
            continue;
        }
        if (is_bookkeeping(rec) && section == 'L') {
            ++i;
            continue;
        }
        if (section == 'S' || section == 'H') {
            auto sp = section == 'S' ? rec.find(' ', rec.find(' ') + 1) : std::string::npos;
            std::string nm = section == 'S' ? (sp == std::string::npos ? "" : rec.substr(sp + 1)) : (rec.size() > 66 ? rec.substr(66) : "");
            if (is_bookkeeping(nm)) continue;
        }
        if (section == 'S') {
            auto s1 = rec.find(' ');
            auto s2 = s1 == std::string::npos ? s1 : rec.find(' ', s1 + 1);
            if (s2 == std::string::npos) throw Error(ErrorKind::RemoteFailed, label + ": pull: malformed listing");
            RemoteFile & f = files[checked_name(rec.substr(s2 + 1), label)];
            f.size = std::strtoull(rec.c_str(), nullptr, 10);
            f.mode = static_cast<unsigned>(std::strtoul(rec.substr(s1 + 1, s2 - s1 - 1).c_str(), nullptr, 8)) & 0777;
        } else if (section == 'H') {
            if (rec.size() < 66) throw Error(ErrorKind::RemoteFailed, label + ": pull: malformed checksum line");
            files[checked_name(rec.substr(66), label)].hash = rec.substr(0, 64);
        } else if (section == 'L') {
            if (i + 1 >= records.size()) throw Error(ErrorKind::RemoteFailed, label + ": pull: malformed link listing");
            std::string name = checked_name(rec, label);
            RemoteFile & f = files[name];
            f.is_link = true;
            f.link_target = records[++i];
        }
    }
    // Links are checked once all are known: one may lead through another.
    std::map<std::string, std::string> links;
    std::set<std::string> real_dirs;
    for (const auto & [name, f] : files) {
        if (f.is_link) links[name] = f.link_target;
        for (size_t at = name.find('/'); at != std::string::npos; at = name.find('/', at + 1)) real_dirs.insert(name.substr(0, at));
    }
    for (const auto & [name, target] : links) real_dirs.erase(name);
    // A link that leads out is not created, and the rest of the pull goes on: results often hold
    // an absolute link or two (a venv's python, a dataset cache), and refusing the whole pull for
    // them left the user with nothing. Each one is warned of and listed in PullStats.
    for (const auto & [name, target] : links)
        if (!link_stays_inside(name, target, links, real_dirs)) {
            common::log::warn("pull: not creating symlink ", name, " -> ", target, ": it points outside the pulled directory");
            refused_links.push_back(name + " -> " + target);
            files.erase(name);
        }
    for (const auto & [name, f] : files)
        if (!f.is_link && f.hash.size() != 64)
            throw Error(ErrorKind::RemoteFailed, label + ": pull: no checksum for " + name + " (is sha256sum installed?)");
    return files;
}

// LOCAL, or when empty the remote path's last component ("." for the home directory).
std::string pull_root(const std::string & remote_path, const std::string & local_dir) {
    if (!local_dir.empty()) return local_dir;
    std::string base = remote_path;
    while (base.size() > 1 && base.back() == '/') base.pop_back();
    base = base.substr(base.rfind('/') == std::string::npos ? 0 : base.rfind('/') + 1);
    return base.empty() || base == "~" ? "." : base;
}

// One pull's state across its files.
struct PullRun {
    Client::Impl & impl;
    const std::string & label;
    const std::string & prelude;
    const PullOptions & options;
    PullStats stats;
    uint64_t bytes_total = 0;
    uint64_t bytes_done = 0;
    std::vector<std::string> failed;  // files skipped after a second checksum mismatch
};

// Appends bytes [offset, size) of the remote file `name` to the part file (fsynced); throws on a
// local write error or a non-zero remote exit. The part file stays when the connection fails or the
// disk is full: the next pull resumes from its size. The first local write error ends the transfer
// at once (the exception leaves the transport's run, which closes the channel): downloading the
// rest of a file, and then of every other file, into a full disk only wasted time.
void append_remote_tail(PullRun & run, const std::string & name, const std::string & part, uint64_t offset, uint64_t size) {
    int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) throw Error::io(part, "open", errno);
    // Names are relative to the directory the prelude changes into. Only up to the listed size:
    // a file still being appended to (a log) then matches the hash listed with that size, where
    // streaming to its current end never did.
    Prologue p = make_prologue(run.prelude + "tail -c +" + std::to_string(offset + 1) + " -- ./" + sh_quote(name) +
                               " | head -c " + std::to_string(size - offset) + "\n");
    RemoteCommand rc;
    rc.command = p.command;
    rc.stdin_data = p.stdin_block;
    std::string err;
    rc.on_stdout = [&](std::string_view d) {
        size_t off = 0;
        while (off < d.size()) {
            ssize_t n = ::write(fd, d.data() + off, d.size() - off);
            if (n < 0) {
                if (errno == EINTR) continue;
                throw Error::io(part, "write", errno);
            }
            off += static_cast<size_t>(n);
        }
        run.bytes_done += d.size();
        run.stats.bytes_fetched += d.size();
        if (run.options.progress) run.options.progress(run.bytes_done, run.bytes_total);
    };
    rc.on_stderr = [&](std::string_view d) { err.append(d); };
    int status;
    try {
        status = run.impl.run(rc);
    } catch (...) {
        ::close(fd);
        throw;
    }
    if (::fsync(fd) != 0) {
        const int e = errno;
        ::close(fd);
        throw Error::io(part, "fsync", e);
    }
    ::close(fd);
    if (status != 0)
        throw Error(ErrorKind::RemoteFailed, run.label + ": pull: reading " + name + " failed (exit " +
                                                 std::to_string(status) + "): " + err);
}

// Brings one regular file into place: skipped when present with the right hash, else streamed
// into NAME.bifrost-part (resumed from its size), verified and renamed; a checksum mismatch is
// downloaded once more from the start. A second mismatch (the file was rewritten since it was
// listed) skips the file with a warning and records it in run.failed: one file still being written
// must not cost every other file of the pull.
void fetch_file(PullRun & run, const std::string & root, const std::string & name, const RemoteFile & f) {
    make_parents(root, name);
    std::string final_path = root + "/" + name;
    bool regular = false;
    uint64_t have = file_size_nofollow(final_path, regular);
    if (regular && have == f.size && sha256_file(final_path) == f.hash) {
        run.bytes_done += f.size;
        return;
    }
    std::string part = final_path + ".bifrost-part";
    for (int attempt = 0; attempt < 2; ++attempt) {
        bool part_regular = false;
        uint64_t offset = file_size_nofollow(part, part_regular);
        if (!part_regular || offset > f.size) {
            ::unlink(part.c_str());
            offset = 0;
        }
        if (offset > 0) run.stats.files_resumed++;
        append_remote_tail(run, name, part, offset, f.size);
        if (sha256_file(part) == f.hash) {
            ::chmod(part.c_str(), f.mode);
            if (::rename(part.c_str(), final_path.c_str()) != 0) throw Error::io(final_path, "rename into place", errno);
            run.stats.files_fetched++;
            return;
        }
        ::unlink(part.c_str());
        if (attempt == 1) {
            common::log::warn("pull: ", name, ": checksum mismatch after a full download (is it still being written?); "
                              "skipped, the other files are still pulled");
            run.failed.push_back(name);
            return;
        }
        common::log::warn("pull: ", name, ": checksum mismatch; downloading it again from the start");
    }
}

// Links last, once every file they may point at is in place.
void make_link(PullRun & run, const std::string & root, const std::string & name, const RemoteFile & f) {
    make_parents(root, name);
    std::string path = root + "/" + name;
    ::unlink(path.c_str());
    if (::symlink(f.link_target.c_str(), path.c_str()) != 0) throw Error::io(path, "create symlink", errno);
    run.stats.files_fetched++;
}

}  // namespace

PullStats Client::pull(const std::string & remote_path, const std::string & local_dir, const PullOptions & options) {
    const std::string label = impl_->t().label();
    const std::string prelude = listing_prelude(remote_path_expr(remote_path));
    auto c = impl_->run_script(listing_script(prelude));
    if (c.status == kNoSuchPath) throw Error::not_found("remote path " + remote_path, "on " + label);
    if (c.status == kNoSha256sum)
        throw Error(ErrorKind::RemoteFailed, label + ": pull needs sha256sum (GNU coreutils) on the remote to verify "
                                                     "what it fetches, and it is not there; install coreutils")
            .with("host", label);
    if (c.status != 0)
        throw Error(ErrorKind::RemoteFailed, label + ": pull: listing " + remote_path + " failed (exit " +
                                                 std::to_string(c.status) + "): " + c.err);
    std::vector<std::string> refused_links;
    const std::map<std::string, RemoteFile> files = parse_listing(c.out, label, refused_links);

    const std::string root = pull_root(remote_path, local_dir);
    fs::create_directories(root);
    PullRun run{*impl_, label, prelude, options, {}};
    run.stats.links_refused = refused_links;
    for (const auto & [name, f] : files) run.bytes_total += f.size;
    for (const auto & [name, f] : files) {
        run.stats.files_total++;
        if (!f.is_link) fetch_file(run, root, name, f);
    }
    for (const auto & [name, f] : files)
        if (f.is_link) make_link(run, root, name, f);
    if (!run.failed.empty()) {
        std::string names;
        for (size_t i = 0; i < run.failed.size() && i < 20; ++i) names += (i ? ", " : "") + run.failed[i];
        if (run.failed.size() > 20) names += ", ...";
        throw Error(ErrorKind::RemoteFailed, label + ": pull: " + std::to_string(run.failed.size()) + " of " +
                                                 std::to_string(run.stats.files_total) +
                                                 " files changed while being pulled and were skipped (" + names +
                                                 "); every other file is in place; pull again once they are complete")
            .with("host", label);
    }
    return run.stats;
}

}  // namespace bifrost
