#!/usr/bin/env bash
# Fails when deploy's code (comments aside) names a provider: deploy asks broker what a provider can do
# (broker::ProviderCaps, SelfEnd, self_end_request) and never branches on, spells or builds requests
# for a particular cloud (issue #17). The names come from broker's own table (broker/registry.cpp),
# plus the clouds' usual spellings. Names that are ordinary words ("local", "lambda") count only
# as a quoted literal or a shell case label. One exception: the default container image
# `runpod/pytorch:<tag>` is a Docker Hub reference used on every provider, not a provider choice.
#
# Files checked: deploy/**.{cpp,h,sh} (the README may describe providers). Tracked and
# untracked-but-not-ignored files, as a commit would hold them.
# Usage: tests/deploy/no_provider_names.sh [REPO_ROOT]   (registered with ctest: deploy_names_no_provider)
# Exit 0 when clean; 1 with one line per hit ("path:line: text") otherwise.
set -euo pipefail
root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
cd "$root"

names=$(sed -nE 's/^[[:space:]]*\{"([a-z0-9-]+)",.*/\1/p' broker/registry.cpp)
[ -n "$names" ] || { echo "no provider names found in broker/registry.cpp" >&2; exit 2; }
words='runpod|vast\.ai|lambda[[:space:]]+(cloud|labs)|prime[[:space:]]*intellect'
literals=''
for n in $names; do
    case "$n" in
        local|lambda) ;;                       # ordinary words: literals only
        *) words="$words|${n//./\\.}" ;;
    esac
    literals="$literals|\"$n\"|'$n'|^[[:space:]]*$n\\)"
done
pattern="(^|[^A-Za-z0-9_])($words)([^A-Za-z0-9_]|\$)${literals}"

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    files=$(git ls-files --cached --others --exclude-standard -- deploy | grep -E '\.(cpp|h|sh)$' || true)
else
    files=$(find deploy -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.sh' \))
fi
hits=""
for f in $files; do
    [ -f "$f" ] || continue
    # Comments may mention a provider (an example, a docs section name); code may not. Comments are
    # blanked first (line numbers kept): C++ from //, shell from a # that starts a word.
    case "$f" in
        *.sh) strip='s/(^|[[:space:]])#.*$/\1/' ;;
        *) strip='s#//.*$##' ;;
    esac
    h=$(sed -E "$strip" "$f" | grep -nIiE "$pattern" | grep -vE 'runpod/pytorch:' || true)
    [ -z "$h" ] || hits="$hits$(printf '%s\n' "$h" | sed "s#^#$f:#")"$'\n'
done
if [ -n "$hits" ]; then
    printf '%s' "$hits"
    echo "deploy names a provider above: ask broker's capabilities instead (broker/provider.h)" >&2
    exit 1
fi
