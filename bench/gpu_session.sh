#!/usr/bin/env bash
# One lease of the GPU machine, batched: build the GPU tree once, check the fused kernels against
# their ATen paths, then HF parity and the benchmarks. Each phase writes its log under OUT and the
# last lines of each log are printed, so a call that is cut off still returns what it finished.
#   bench/gpu_session.sh quick   # build + GPU tests + parity of every family on small configs
#   bench/gpu_session.sh ppl     # GPU tests + perplexity parity of every family
#   bench/gpu_session.sh final   # gpt_oss real shapes in f32, perplexity parity, longer benchmarks
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
if [[ $what == final ]]; then
  stamp "parity real shapes gpt_oss, f32 (a bf16 routing flip on a near-tie is gone in f32; a real mismatch is not)"
  timeout 200 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --real-shapes --families gpt_oss --dtypes f32 \
    --json-out "$out/parity_real_gpt_oss_f32.json" > "$out/parity_real_gpt_oss_f32.log" 2>&1
  echo "rc=$?"; grep -E "NOT OK|residual" "$out/parity_real_gpt_oss_f32.log" | head -8; grep -A6 "^family " "$out/parity_real_gpt_oss_f32.log"
  stamp "perplexity parity (small configs, untied then tied)"
  timeout 150 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --perplexity --families llama,qwen3,olmoe,qwen3_moe,mixtral,gpt_oss \
    --json-out "$out/parity_ppl.json" > "$out/parity_ppl.log" 2>&1
  echo "rc=$?"; grep -A40 "^family " "$out/parity_ppl.log" | head -42
  timeout 60 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --perplexity --tie-embeddings --families llama,qwen3 \
    --json-out "$out/parity_ppl_tied.json" > "$out/parity_ppl_tied.log" 2>&1
  echo "rc=$?"; grep -A12 "^family " "$out/parity_ppl_tied.log" | head -14
  stamp "benchmarks, 32 timed batches each (the first call's 4 batches were 0.1-0.2 s windows)"
  timeout 150 python3 "$root/bench/mixtral_bench.py" --extract "$exe" --no-full --iters 32 --json-out "$out/mixtral_bench32.json" \
    > "$out/mixtral_bench32.log" 2>&1
  echo "rc=$?"; tail -6 "$out/mixtral_bench32.log"
  timeout 150 python3 "$root/bench/gpt_oss_bench.py" --extract "$exe" --no-120b --iters 32 --json-out "$out/gpt_oss_bench32.json" \
    > "$out/gpt_oss_bench32.log" 2>&1
  echo "rc=$?"; tail -7 "$out/gpt_oss_bench32.log"
fi
if [[ $what == ppl ]]; then
  stamp "gpu tests"
  "$build/tests/gpu/toolkit_gpu_tests" > "$out/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "ERROR|test cases" "$out/gpu_tests.log" | head -8
  stamp "perplexity parity (small configs)"
  timeout 200 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --perplexity \
    --json-out "$out/parity_ppl.json" > "$out/parity_ppl.log" 2>&1
  echo "rc=$?"; grep -E "^NOT OK" "$out/parity_ppl.log" | head -12; grep -A42 "^family " "$out/parity_ppl.log" | head -44
fi
stamp "done"
