#!/usr/bin/env bash
# bifrost against OpenSSH tools on loopback, in the same run, on the same throw-away sshd:
#   push of a 5,000-file / 100 MB tree   vs  rsync -a over ssh        (target: ratio <= 1.0)
#   re-push with no change               vs  rsync (no change)        (target: <= 0.3 s)
#   re-push after one file changed       vs  rsync (one change)       (target: <= 0.5 s)
#   bifrost exec TARGET true (reused)    vs  ssh TARGET true          (target: ratio <= 0.5)
# Each figure is the median of RUNS runs (default 3; exec: 10). Needs rsync (apt-get install rsync).
#
#   bash bench/bifrost_bench.sh [BUILD_DIR]      # default build dir: build
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$repo/build}"
bifrost_bin="$build/bifrost/bifrost"
runs="${RUNS:-3}"
[ -x "$bifrost_bin" ] || { echo "bifrost_bench: $bifrost_bin not built; run: ninja -C $build bifrost" >&2; exit 2; }
command -v rsync >/dev/null || { echo "bifrost_bench: rsync missing; run: apt-get install -y rsync" >&2; exit 2; }

work="$(mktemp -d /tmp/bifrost-bench-XXXXXX)"
chmod 0700 "$work"
sshd_pid=""
cleanup() {
  [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null || true
  wait "$sshd_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- a throw-away sshd on 127.0.0.1 (docs/build-notes.md, "sshd for tests") ---
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
mkdir -p "$work/home" "$work/state/run" && chmod 0700 "$work/state/run"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
user="$(id -un)"
cat > "$work/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port $port
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
MaxSessions 64
MaxStartups 64:30:128
SetEnv HOME=$work/home
CFG
[ "$(id -u)" = 0 ] && mkdir -p -m0755 /run/sshd
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2> "$work/sshd.log" &
sshd_pid=$!
for _ in $(seq 50); do grep -q "Server listening" "$work/sshd.log" && break; sleep 0.1; done
grep -q "Server listening" "$work/sshd.log" || { cat "$work/sshd.log" >&2; exit 1; }

target="$user@127.0.0.1:$port"
export BIFROST_KNOWN_HOSTS="$work/state/known_hosts" XDG_CACHE_HOME="$work/state/cache" XDG_RUNTIME_DIR="$work/state/run"
bf() { "$bifrost_bin" -q --key "$work/client_key" --persist 60 "$@"; }
ssh_opts=(-i "$work/client_key" -p "$port" -o BatchMode=yes -o UserKnownHostsFile="$work/known_hosts_openssh"
          -o StrictHostKeyChecking=accept-new -o ControlMaster=no -o ControlPath=none)
ssh_cmd="ssh ${ssh_opts[*]}"
ssh "${ssh_opts[@]}" "$user@127.0.0.1" true  # pin for OpenSSH too

# --- the tree: 5,000 files, 100 MB, incompressible, 50 directories ---
src="$work/src"
python3 - "$src" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(5000):
    d = os.path.join(root, f"d{i % 50:02d}", f"s{i % 7}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
        f.write(os.urandom(20000))
PY
echo "tree: $(find "$src" -type f | wc -l) files, $(du -sb "$src" | cut -f1) bytes"

now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
time_ms() { local s; s=$(now_ms); "$@" >/dev/null || { echo "bifrost_bench: failed: $*" >&2; exit 1; }; echo $(( $(now_ms) - s )); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
report() { printf '%-44s bifrost %6s ms   %-22s %6s ms   ratio %s\n' "$1" "$2" "$3" "$4" "$(ratio "$2" "$4")"; }

# 1. first push (cold: includes connecting; bifrost's control master is started by it)
bf_first=(); rs_first=()
for r in $(seq "$runs"); do
  "$bifrost_bin" -q --key "$work/client_key" exec "$target" -- rm -rf "$work/home/bf$r" "$work/home/rs$r" || true
  rm -rf "$XDG_CACHE_HOME"; pkill_master=$(ls "$XDG_RUNTIME_DIR"/bifrost/*.sock 2>/dev/null || true); rm -f $pkill_master
  bf_first+=("$(time_ms bf push "$target" "$src" --to "~/bf$r")")
  rs_first+=("$(time_ms rsync -a -e "$ssh_cmd" "$src/" "$user@127.0.0.1:$work/home/rs$r/")")
done
bf1=$(printf '%s\n' "${bf_first[@]}" | median); rs1=$(printf '%s\n' "${rs_first[@]}" | median)
report "push 5,000 files / 100 MB (first)" "$bf1" "rsync -a over ssh" "$rs1"

# 2. re-push, no change (bifrost through its warm control master; rsync as it always runs)
bf_none=(); rs_none=()
for r in $(seq "$runs"); do
  bf_none+=("$(time_ms bf push "$target" "$src" --to "~/bf1")")
  rs_none+=("$(time_ms rsync -a -e "$ssh_cmd" "$src/" "$user@127.0.0.1:$work/home/rs1/")")
done
bf2=$(printf '%s\n' "${bf_none[@]}" | median); rs2=$(printf '%s\n' "${rs_none[@]}" | median)
report "re-push, no change (target <= 300 ms)" "$bf2" "rsync, no change" "$rs2"

# 3. re-push after one file changed
bf_one=(); rs_one=()
for r in $(seq "$runs"); do
  head -c 20000 /dev/urandom > "$src/d07/s3/f00357.bin"
  bf_one+=("$(time_ms bf push "$target" "$src" --to "~/bf1")")
  rs_one+=("$(time_ms rsync -a -e "$ssh_cmd" "$src/" "$user@127.0.0.1:$work/home/rs1/")")
done
bf3=$(printf '%s\n' "${bf_one[@]}" | median); rs3=$(printf '%s\n' "${rs_one[@]}" | median)
report "re-push, one file changed (target <= 500 ms)" "$bf3" "rsync, one change" "$rs3"
cmp "$src/d07/s3/f00357.bin" "$work/home/bf1/d07/s3/f00357.bin" || { echo "bifrost_bench: pushed file differs" >&2; exit 1; }

# 4. exec true on a reused connection vs a fresh ssh
bf exec "$target" -- true >/dev/null
bf_exec=(); ssh_exec=()
for r in $(seq 10); do
  bf_exec+=("$(time_ms bf exec "$target" -- true)")
  ssh_exec+=("$(time_ms ssh "${ssh_opts[@]}" "$user@127.0.0.1" true)")
done 2>/dev/null
bf4=$(printf '%s\n' "${bf_exec[@]}" | median); ss4=$(printf '%s\n' "${ssh_exec[@]}" | median)
report "exec true, reused connection (ratio <= 0.5)" "$bf4" "ssh TARGET true" "$ss4"

echo "targets: first push ratio $(ratio "$bf1" "$rs1") (<= 1.0), no-change $bf2 ms (<= 300), one-change $bf3 ms (<= 500), exec ratio $(ratio "$bf4" "$ss4") (<= 0.5)"
