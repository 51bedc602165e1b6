#!/usr/bin/env python3
"""Lists the C++ functions longer than N lines, longest first (a dev tool for issue #17's
"split the long functions": run it before and after a split to see what moved).

    python3 scripts/long_functions.py            # functions over 150 lines, in the files git tracks
    python3 scripts/long_functions.py -n 80      # over 80 lines
    python3 scripts/long_functions.py --repo DIR # another checkout (or an unpacked `git archive`)

A function's length is from the line of its name to its closing brace, as Universal Ctags
(Debian package universal-ctags) reports them with its `end` field; a lambda counts towards the
function that holds it and is not listed on its own. Reads .h, .hpp, .cpp and .cu files; files
under tests/ are included and marked, so a test's long TEST_CASE body shows too (doctest cases are
macros, which ctags does not see as functions: those are not listed).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

SOURCE_ENDINGS = (".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh")


def tracked_sources(repo):
    if os.path.isdir(os.path.join(repo, ".git")) or os.path.isfile(os.path.join(repo, ".git")):
        out = subprocess.run(["git", "-C", repo, "ls-files", "-z"], check=True,
                             capture_output=True).stdout.decode()
        files = [f for f in out.split("\0") if f]
    else:
        files = []
        for root, dirs, names in os.walk(repo):
            dirs[:] = [d for d in dirs if not d.startswith(".") and not d.startswith("build")]
            files += [os.path.relpath(os.path.join(root, n), repo) for n in names]
    return sorted(f for f in files if f.endswith(SOURCE_ENDINGS)
                  and os.path.isfile(os.path.join(repo, f)))


def functions(repo, files):
    if not files:
        return []
    cmd = ["ctags", "--output-format=json", "--fields=+neZS", "--kinds-C++=f",
           "--langmap=C++:+.cu.cuh", "--language-force=C++", "-o", "-", "-L", "-"]
    res = subprocess.run(cmd, cwd=repo, input="\n".join(files).encode(), capture_output=True)
    if res.returncode != 0:
        sys.exit(f"long_functions: ctags failed: {res.stderr.decode().strip()}")
    found = []
    for line in res.stdout.decode().splitlines():
        tag = json.loads(line)
        if tag.get("_type") != "tag" or "end" not in tag or tag["name"].startswith("__anon"):
            continue
        scope = tag.get("scope", "")
        # Anonymous namespaces show as __anon<hash>: they add nothing a reader can use.
        scope = "::".join(p for p in scope.split("::") if not p.startswith("__anon"))
        name = f"{scope}::{tag['name']}" if scope else tag["name"]
        found.append((tag["end"] - tag["line"] + 1, name, tag["path"], tag["line"], tag["end"]))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--min-lines", type=int, default=150,
                    help="list functions longer than this many lines (default 150)")
    ap.add_argument("--repo", default=os.path.join(os.path.dirname(__file__), ".."),
                    help="the checkout to read (default: this one)")
    ap.add_argument("--no-tests", action="store_true", help="leave out files under tests/")
    args = ap.parse_args()
    if args.min_lines < 1:
        sys.exit("long_functions: --min-lines must be at least 1")
    if shutil.which("ctags") is None:
        sys.exit("long_functions: ctags not found: install Universal Ctags "
                 "(apt-get install universal-ctags)")
    repo = os.path.abspath(args.repo)
    files = tracked_sources(repo)
    if args.no_tests:
        files = [f for f in files if not f.startswith("tests/")]
    rows = [r for r in functions(repo, files) if r[0] > args.min_lines]
    rows.sort(key=lambda r: (-r[0], r[2], r[3]))
    for n, name, path, start, end in rows:
        print(f"{n:5d}  {name}  {path}:{start}-{end}")
    print(f"{len(rows)} functions over {args.min_lines} lines in {len(files)} files", file=sys.stderr)


if __name__ == "__main__":
    main()
