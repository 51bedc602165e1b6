#include "bifrost/manifest.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "bifrost/ignore.h"
#include "common/error.h"
#include "common/log.h"

namespace bifrost {

using common::Error;

namespace {

void walk(const std::string & root, const std::string & dir, IgnoreSet & rules, const ScanOptions & options,
          std::vector<FileEntry> & out) {
    size_t mark = rules.size();
    std::string abs = dir.empty() ? root : root + "/" + dir;
    DIR * d = ::opendir(abs.c_str());
    if (!d) throw Error::io(abs, "read directory", errno);
    std::vector<std::string> names;
    bool has_ignore_file = false;
    while (dirent * ent = ::readdir(d)) {
        std::string name = ent->d_name;
        if (name == "." || name == "..") continue;
        if (name == ".gitignore" || name == ".bifrostignore") has_ignore_file = true;
        names.push_back(name);
    }
    ::closedir(d);
    if (has_ignore_file) rules.load_dir(root, dir);
    for (const auto & name : names) {
        std::string rel = dir.empty() ? name : dir + "/" + name;
        if (name.find('\n') != std::string::npos) {
            common::log::warn("push: skipping ", abs, "/", name, ": file names with a newline are not supported");
            continue;
        }
        if (dir.empty() && (name == ".bifrost-staging" || name == ".bifrost-manifest")) continue;
        if (!options.include_git && name == ".git") continue;
        struct stat st {};
        std::string full = abs + "/" + name;
        if (::lstat(full.c_str(), &st) != 0) {
            if (errno == ENOENT) continue;  // vanished while we walked
            throw Error::io(full, "stat", errno);
        }
        bool is_dir = S_ISDIR(st.st_mode);
        if (rules.ignored(rel, is_dir)) continue;
        if (is_dir) {
            walk(root, rel, rules, options, out);
            continue;
        }
        FileEntry e;
        e.path = rel;
        e.mode = st.st_mode & 07777;
        e.size = static_cast<uint64_t>(st.st_size);
        e.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
        e.inode = st.st_ino;
        if (S_ISLNK(st.st_mode)) {
            e.type = 'l';
            char buf[4096];
            ssize_t n = ::readlink(full.c_str(), buf, sizeof buf);
            if (n < 0) throw Error::io(full, "read symlink", errno);
            e.link_target.assign(buf, static_cast<size_t>(n));
            e.hash = sha256_hex(e.link_target);
            e.mode = 0777;
            e.size = 0;
        } else if (!S_ISREG(st.st_mode)) {
            common::log::debug("push: skipping special file ", full);
            continue;
        }
        out.push_back(std::move(e));
    }
    rules.truncate(mark);
}

}  // namespace

std::vector<FileEntry> scan_tree(const std::string & root, const ScanOptions & options) {
    struct stat st {};
    if (::stat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw Error::not_found("local directory " + root, "not a directory");
    IgnoreSet rules;
    std::string extra;
    for (const auto & p : options.excludes) extra += p + "\n";
    rules.add(parse_ignore(extra, ""));
    std::vector<FileEntry> out;
    walk(root, "", rules, options, out);
    return out;
}

std::string format_manifest(const Manifest & manifest) {
    std::string out;
    char head[128];
    for (const auto & [path, e] : manifest) {
        std::snprintf(head, sizeof head, " %llu %o %c ", static_cast<unsigned long long>(e.size), e.mode, e.type);
        out += e.hash;
        out += head;
        out += path;
        out += '\n';
    }
    return out;
}

Manifest parse_manifest(std::string_view text) {
    Manifest m;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t end = text.find('\n', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string line(text.substr(pos, end - pos));
        pos = end + 1;
        std::istringstream in(line);
        FileEntry e;
        std::string mode;
        if (!(in >> e.hash >> e.size >> mode >> e.type)) continue;
        e.mode = static_cast<unsigned>(std::strtoul(mode.c_str(), nullptr, 8));
        in.get();
        std::getline(in, e.path);
        if (e.path.empty()) continue;
        m[e.path] = e;
    }
    return m;
}

HashCache::HashCache(std::string path) : path_(std::move(path)) {
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream s(line);
        Row r;
        std::string p;
        if (!(s >> r.size >> r.mtime_ns >> r.inode >> r.hash)) continue;
        s.get();
        std::getline(s, p);
        if (!p.empty()) rows_[p] = r;
    }
}

std::optional<std::string> HashCache::lookup(const FileEntry & e) const {
    auto it = rows_.find(e.path);
    if (it == rows_.end()) return std::nullopt;
    const Row & r = it->second;
    if (r.size != e.size || r.mtime_ns != e.mtime_ns || r.inode != e.inode) return std::nullopt;
    return r.hash;
}

void HashCache::store(const FileEntry & e) {
    if (e.type != 'f' || e.hash.empty()) return;
    auto it = rows_.find(e.path);
    if (it != rows_.end() && it->second.size == e.size && it->second.mtime_ns == e.mtime_ns &&
        it->second.inode == e.inode && it->second.hash == e.hash)
        return;
    rows_[e.path] = Row{e.size, e.mtime_ns, e.inode, e.hash};
    dirty_ = true;
}

void HashCache::save() const {
    if (!dirty_) return;
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path_).parent_path(), ec);
    std::string tmp = path_ + ".tmp" + std::to_string(::getpid());
    {
        std::ofstream out(tmp, std::ios::trunc);
        if (!out) return;
        for (const auto & [p, r] : rows_) out << r.size << ' ' << r.mtime_ns << ' ' << r.inode << ' ' << r.hash << ' ' << p << '\n';
        if (!out) return;
    }
    std::filesystem::rename(tmp, path_, ec);
}

std::string hash_cache_path(const std::string & abs_root) {
    const char * xdg = std::getenv("XDG_CACHE_HOME");
    const char * home = std::getenv("HOME");
    std::string base = xdg && *xdg ? std::string(xdg) : std::string(home ? home : "/tmp") + "/.cache";
    return base + "/bifrost/hashes/" + sha256_hex(abs_root).substr(0, 32);
}

}  // namespace bifrost
