#!/usr/bin/env bash
# The GPU check of deploy_and_analyze's remote half, on a GPU machine with a pip PyTorch: the real
# deploy/remote/bootstrap.sh (GPU-only build of extract + analyze against that torch, then a second
# call that must hit the source-hash cache), then the fused job on a random-weight model of
# OLMoE-1B-7B's shape (16 sequences x 2048 tokens, both sites of every layer), timed step by step.
#   bench/deploy_remote_check.sh [OUT_DIR]
# Offline machines: Debian -dev packages in .debs*/ are unpacked into a sysroot that bootstrap.sh
# uses through BOOTSTRAP_SYSROOT (a cloud instance installs them with apt-get instead).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-/tmp/deploy-remote-check}}
mkdir -p "$out"
work=$(mktemp -d)
if ls "$root"/.debs*/*.deb >/dev/null 2>&1; then
  export BOOTSTRAP_SYSROOT=$work/sysroot
  for f in "$root"/.debs*/*.deb; do dpkg-deb -x "$f" "$BOOTSTRAP_SYSROOT"; done
  export LD_LIBRARY_PATH=$BOOTSTRAP_SYSROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  command -v pkg-config >/dev/null || export PATH=$BOOTSTRAP_SYSROOT/usr/bin:$PATH
fi
now() { date +%s.%N; }
step() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%-30s %8.1f s\n", n, b - a }' | tee -a "$out/steps.txt"; }

t0=$(now); sh "$root/deploy/remote/bootstrap.sh" "$root" "$work/cache" > "$out/bootstrap1.log" 2>&1; t1=$(now)
step "bootstrap (build)" "$t0" "$t1"
sh "$root/deploy/remote/bootstrap.sh" "$root" "$work/cache" > "$out/bootstrap2.log" 2>&1; t2=$(now)
step "bootstrap (cached re-run)" "$t1" "$t2"
bin=$(tail -n 1 "$out/bootstrap2.log" | sed 's/^bin_dir=//')
grep -q "cached build" "$out/bootstrap2.log" || { echo "second bootstrap did not hit the cache" >&2; exit 1; }

python3 - "$work" "$root/bench" <<'PY'
import json, sys, random
sys.path.insert(0, sys.argv[2])
from extract_bench import olmoe_config  # the benchmarks' OLMoE-1B-7B shape
olmoe_config(sys.argv[1] + "/olmoe-shape")
rng = random.Random(0)
json.dump([rng.randrange(50304) for _ in range(16 * 2048)], open(sys.argv[1] + "/ids.json", "w"))
PY
t3=$(now)
"$bin/extract" --json run "$work/olmoe-shape" --random-weights --tokens "$work/ids.json" --seq-len 2048 \
  --num-sequences 16 --batch-size 4 --device cuda --dtype bf16 --analyze "$out/analysis" > "$out/extract_analyze.json" 2> "$out/extract_analyze.log"
t4=$(now)
step "extract --analyze (fused)" "$t3" "$t4"
"$bin/analyze" --json extract -o "$work/analysis2" -- run "$work/olmoe-shape" --random-weights --tokens "$work/ids.json" \
  --seq-len 2048 --num-sequences 16 --batch-size 4 --device cuda --dtype bf16 > "$out/analyze_extract.json" 2> "$out/analyze_extract.log"
t5=$(now)
step "analyze extract (deploy job)" "$t4" "$t5"
python3 - "$out/extract_analyze.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("load_s %.2f  forward_s %.2f  tokens %d  tokens/s %.0f  peak GPU %.2f GiB  weights %.2f GiB" % (
    r["load_s"], r["forward_s"], r["tokens"], r["tokens_per_s"], r["gpu_used_bytes_peak"] / 2**30, r["weights_bytes"] / 2**30))
print("analysis:", json.dumps(r["analysis"]["modes"]))
PY
rm -rf "$work"
