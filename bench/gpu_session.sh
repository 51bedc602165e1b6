#!/usr/bin/env bash
# One lease of the GPU machine, batched: build the GPU tree once, check the fused kernels against
# their ATen paths, then HF parity and the benchmarks. Each phase writes its log under OUT and the
# last lines of each log are printed, so a call that is cut off still returns what it finished.
#   bench/gpu_session.sh quick   # build + GPU tests + parity of every family on small configs
#   bench/gpu_session.sh shapes  # real-shape 2-layer parity (mixtral, gpt_oss) + mixtral and gpt_oss benchmarks
# BUILD_DIR (default build-gpu, inside the checkout so a warm machine keeps it between calls).
set -uo pipefail
what=${1:-quick}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/gpu-session-out}
mkdir -p "$out"
build=${BUILD_DIR:-$root/build-gpu}
# shellcheck source=bench/gpu_build.sh
source "$root/bench/gpu_build.sh"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
stamp "build"
gpu_build "$build" "$out" extract analyze toolkit_gpu_tests || { stamp "build failed"; exit 1; }
exe=$build/extractor/extract
export PYTHONUNBUFFERED=1
if [[ $what == quick ]]; then
  stamp "gpu tests"
  "$build/tests/gpu/toolkit_gpu_tests" > "$out/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; tail -3 "$out/gpu_tests.log"
  stamp "parity (small configs, every family)"
  python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --plain-cpu --json-out "$out/parity_small.json" \
    > "$out/parity_small.log" 2>&1
  echo "parity rc=$?"; grep -A40 "^family " "$out/parity_small.log" | head -60
fi
if [[ $what == shapes ]]; then
  for fam in mixtral gpt_oss; do
    stamp "parity real shapes: $fam"
    timeout 240 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --real-shapes --families "$fam" \
      --json-out "$out/parity_real_$fam.json" > "$out/parity_real_$fam.log" 2>&1
    echo "parity $fam rc=$?"; grep -A10 "^family " "$out/parity_real_$fam.log" | head -14
  done
  stamp "mixtral bench"
  full=()
  # Full-shape Mixtral-8x7B needs about 100 GB on one card: only on an H200.
  [[ $(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1) -lt 120000 ]] && full=(--no-full)
  timeout 300 python3 "$root/bench/mixtral_bench.py" --extract "$exe" "${full[@]}" --json-out "$out/mixtral_bench.json" \
    > "$out/mixtral_bench.log" 2>&1
  echo "mixtral bench rc=$?"; tail -15 "$out/mixtral_bench.log"
  stamp "gpt_oss bench"
  timeout 300 python3 "$root/bench/gpt_oss_bench.py" --extract "$exe" --json-out "$out/gpt_oss_bench.json" \
    > "$out/gpt_oss_bench.log" 2>&1
  echo "gpt_oss bench rc=$?"; tail -25 "$out/gpt_oss_bench.log"
fi
stamp "done"
