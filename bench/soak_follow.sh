#!/usr/bin/env bash
# The long soak of issue #11 (tests/bifrost/follow_test.cpp, "soak: long ..."): on a throw-away
# sshd on 127.0.0.1, a detached job prints a line every 100 ms for SOAK_S seconds (default 7200);
# deploy's follow loop (bifrost::Client::follow_job: one channel per 2 s poll, heartbeat touched)
# follows it; a `bifrost exec` goes through the control master every second; sshd is killed and
# restarted once half way. It passes when the log arrives byte for byte (no line lost or repeated)
# and no poll or exec failed. CI runs the short version ("soak: 5,000 channels ...") on every build.
#
#   bash bench/soak_follow.sh [BUILD_DIR]       # SOAK_S=600 for a 10-minute run
#
# The binaries are copied first, so rebuilding the tree during a soak of hours does not touch it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$repo/build}"
soak_s="${SOAK_S:-7200}"
for bin in "$build/tests/bifrost/bifrost_tests" "$build/bifrost/bifrost"; do
  [ -x "$bin" ] || { echo "soak_follow: $bin not built; run: ninja -C $build bifrost bifrost_tests" >&2; exit 2; }
done
work="$(mktemp -d /tmp/soak-follow-XXXXXX)"
cp "$build/tests/bifrost/bifrost_tests" "$build/bifrost/bifrost" "$work/"
echo "soak_follow: ${soak_s} s; binaries and log in $work" >&2
cd "$work"
BIFROST_SOAK_S="$soak_s" BIFROST_SOAK_EXE="$work/bifrost" \
  ./bifrost_tests -tc='soak: long*' --no-skip 2>&1 | grep -v 'pinned host key' | tee "$work/soak.log"
