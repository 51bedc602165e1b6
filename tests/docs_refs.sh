#!/usr/bin/env bash
# Fails when a file of the repository cites a document that a clone does not have.
#
# The facts the code relies on live in docs/ (docs/README.md); a citation names a repo path such as
# `docs/model-math.md#rope` or `(docs/providers.md, "Traps")`. What this refuses, per line:
#   - the names of the old outside reference files (model-spec.md, providers-api.md, style-anchors.md,
#     predecessor.md), and outlier-method.md / build-notes.md unless written as docs/<name> (inside
#     docs/ a bare name is a relative link to the file beside it);
#   - paths into the sibling checkout that held those files (its shared/ folder, its reference/
#     subfolder, or the absolute /work path to it); the patterns below are bracketed so that this
#     file does not match itself;
#   - a section sign, except after a public standard ("RFC 4254 §6.10", "Unicode §3.9"): a bare
#     "§2.5" cites a document by number that the reader cannot open;
#   - "<reference name> section N" spelled out;
# and every citation into docs/ must resolve (the file, its #anchor, or its quoted section name).
# Files checked: tracked and untracked-but-not-ignored files (what a commit would hold), text only;
# outside a git checkout, every file except build*/ and dot-directories.
#
# Usage: tests/docs_refs.sh [REPO_ROOT]    (registered with ctest by tests/CMakeLists.txt)
# Exit 0 when clean; 1 with one line per hit ("path:line: why: text") otherwise.
set -euo pipefail

root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
cd "$root"
self="tests/docs_refs.sh"

list_files() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard
    else
        find . -path './build*' -prune -o -path './.*' -prune -o -type f -print0 | sed -z 's#^\./##'
    fi
}

# Candidate lines (cheap first pass over every file), then the exact rules in awk.
names='model-spec|providers-api|outlier-method|build-notes|style-anchors|predecessor'
candidates="($names)\\.md|($names)[[:space:]]+(§|section)|\\.\\./shar[e]d|shar[e]d/referenc[e]|/work/shar[e]d|§"

hits="$(
    list_files |
        while IFS= read -r -d '' f; do
            [ "$f" = "$self" ] && continue
            [ -f "$f" ] && printf '%s\0' "$f"
        done |
        xargs -0 -r grep -nIHE -- "$candidates" 2>/dev/null |
        awk -v names="$names" '
        {
            # grep -H -n: path:line:text (paths have no colon in this repository)
            path = $0; sub(/:.*/, "", path)
            rest = substr($0, length(path) + 2)
            line = rest; sub(/:.*/, "", line)
            text = substr(rest, length(line) + 2)
            why = ""
            t = text
            if (t ~ /(model-spec|providers-api|style-anchors|predecessor)\.md/) why = "names a document outside the repository"
            if (why == "" && path !~ /^docs\//) {
                u = t; gsub(/docs\/(outlier-method|build-notes)\.md/, "", u)
                if (u ~ /(outlier-method|build-notes)\.md/) why = "names a reference file without its docs/ path"
            }
            if (why == "" && t ~ /\.\.\/shared|shared\/reference|\/work\/shared/) why = "points outside the clone"
            if (why == "" && t ~ ("(" names ")[ \t]+section")) why = "cites an outside document by section"
            if (why == "") {
                u = t
                gsub(/RFC ?[0-9]+ §[0-9][0-9.]*/, "", u)
                gsub(/Unicode §[0-9][0-9.]*/, "", u)
                if (u ~ /§/) why = "section sign citing a document the reader cannot open"
            }
            if (why != "") {
                if (length(text) > 160) text = substr(text, 1, 157) "..."
                print path ":" line ": " why ": " text
            }
        }'
)"

# Citations into docs/ must resolve: the file exists, a #anchor is a heading's GitHub slug (or an
# explicit <a id="...">) of that file, and a quoted section name (`docs/x.md, "Traps"` or
# `docs/x.md, RunPod "Offers"`) is the text of one of its headings.
anchors="$(
    for d in docs/*.md; do
        [ -f "$d" ] || continue
        awk -v doc="$d" '
            /^```/ { fence = !fence; next }
            fence { next }
            /^#+ / {
                h = $0; sub(/^#+ +/, "", h); sub(/ +#*$/, "", h)
                print doc "\theading\t" h
                s = tolower(h); gsub(/[^a-z0-9 _-]/, "", s); gsub(/ /, "-", s)
                print doc "\tanchor\t" s
            }
            {
                line = $0
                while (match(line, /<a id="[^"]+"/)) {
                    print doc "\tanchor\t" substr(line, RSTART + 7, RLENGTH - 8)
                    line = substr(line, RSTART + RLENGTH)
                }
            }' "$d"
    done
)"
cites="$(
    list_files |
        while IFS= read -r -d '' f; do
            [ "$f" = "$self" ] && continue
            [ -f "$f" ] && printf '%s\0' "$f"
        done |
        xargs -0 -r grep -onIHE -- 'docs/[A-Za-z0-9_-]+\.md(#[A-Za-z0-9_-]+|, ([A-Za-z.]+ )?"[^"]+")?|\]\((\.\./)*docs/[A-Za-z0-9_-]+\.md[^)]*\)|\]\([A-Za-z0-9_-]+\.md(#[A-Za-z0-9_-]+)?\)|\]\(#[A-Za-z0-9_-]+\)' 2>/dev/null || true
)"
bad_cites="$(
    printf '%s\n' "$cites" | awk -v anchors="$anchors" '
        BEGIN {
            n = split(anchors, rows, "\n")
            for (i = 1; i <= n; i++) {
                split(rows[i], c, "\t")
                have[c[1]] = 1
                if (c[2] == "anchor") anchor[c[1] "#" c[3]] = 1
                else heading[c[1] "|" c[3]] = 1
            }
        }
        $0 == "" { next }
        {
            path = $0; sub(/:.*/, "", path)
            rest = substr($0, length(path) + 2)
            line = rest; sub(/:.*/, "", line)
            cite = substr(rest, length(line) + 2)
            dir = path; if (dir ~ /\//) sub(/\/[^\/]*$/, "", dir); else dir = "."
            doc = ""; frag = ""; quoted = ""
            if (cite ~ /^\]\(#/) {                       # [x](#anchor) inside a document
                if (path !~ /^docs\/.*\.md$/) next
                doc = path; frag = cite; sub(/^\]\(#/, "", frag); sub(/\)$/, "", frag)
            } else if (cite ~ /^\]\([A-Za-z0-9_-]+\.md/) {  # [x](other.md#anchor) beside it
                if (path !~ /^docs\//) next
                t = cite; sub(/^\]\(/, "", t); sub(/\)$/, "", t)
                doc = "docs/" t; sub(/#.*/, "", doc)
                if (t ~ /#/) { frag = t; sub(/^[^#]*#/, "", frag) }
            } else {
                t = cite; sub(/^\]\((\.\.\/)*/, "", t); sub(/\)$/, "", t)
                doc = t; sub(/\.md.*/, ".md", doc)
                if (t ~ /\.md#/) { frag = t; sub(/^[^#]*#/, "", frag) }
                if (t ~ /\.md, /) { quoted = t; sub(/^[^"]*"/, "", quoted); sub(/"$/, "", quoted) }
            }
            why = ""
            if (!(doc in have)) why = doc " does not exist"
            else if (frag != "" && !((doc "#" frag) in anchor)) why = doc " has no anchor #" frag
            else if (quoted != "" && !((doc "|" quoted) in heading)) why = doc " has no heading \"" quoted "\""
            if (why != "") print path ":" line ": broken docs citation (" why "): " cite
        }'
)"
if [ -n "$bad_cites" ]; then
    hits="${hits:+$hits
}$bad_cites"
fi

if [ -n "$hits" ]; then
    printf '%s\n' "$hits"
    printf 'docs_refs: %d problem(s): cite docs/ (docs/README.md), never a document outside the repository\n' \
        "$(printf '%s\n' "$hits" | wc -l)" >&2
    exit 1
fi
echo "docs_refs: no reference points outside the repository"
