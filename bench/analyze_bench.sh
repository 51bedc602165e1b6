#!/usr/bin/env bash
# Builds `analyze` (GPU-only build, with the extractor, against the local pip PyTorch) and runs
# bench/analyze_bench.py. Usage: bench/analyze_bench.sh [OUT_DIR]
# Needs: python3 with torch + transformers + safetensors, cmake, ninja, a CUDA GPU (nvcc for the
# fused kernels); the build's other needs: bench/gpu_build.sh.
#
# --overhead [OUT_DIR]: the forward overhead of perplexity + expert stats + the 7-threshold sweep
# against the bare forward, in the same run (bench/analyze_overhead.py; no Python torch needed).
# Environment: SIZE=olmoe|small (default olmoe), DEVICE (cuda), SEQUENCES (16), SEQ_LEN (2048),
# BATCH (4), REPEAT (2), PARTS=1 (--parts), PROFILE=1 (--profile); ANALYZE and EXTRACT name built binaries to skip the build (e.g. a CPU
# check: SIZE=small DEVICE=cpu SEQUENCES=4 SEQ_LEN=64 ANALYZE=build/analysis/analyze
# EXTRACT=build/extractor/extract bench/analyze_bench.sh --overhead /tmp/ovh).
set -euo pipefail
overhead=0
if [[ ${1:-} == --overhead ]]; then
  overhead=1
  shift
fi
out=${1:-${OUT:-/tmp/analyze-bench-out}}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-/tmp/build-analyze}
if (( overhead )); then
  if [[ -z ${ANALYZE:-} || -z ${EXTRACT:-} ]]; then
    # shellcheck source=bench/gpu_build.sh
    source "$root/bench/gpu_build.sh"
    gpu_build "$build" "$out" analyze extract
    ANALYZE=$build/analysis/analyze EXTRACT=$build/extractor/extract
  fi
  PYTHONUNBUFFERED=1 python3 "$root/bench/analyze_overhead.py" --analyze "$ANALYZE" --extract "$EXTRACT" \
    --work "$out/work" --size "${SIZE:-olmoe}" --device "${DEVICE:-cuda}" --sequences "${SEQUENCES:-16}" \
    --seq-len "${SEQ_LEN:-2048}" --batch-size "${BATCH:-4}" --repeat "${REPEAT:-2}" \
    ${PARTS:+--parts} ${PROFILE:+--profile} --json-out "$out/overhead.json" 2>&1 | tee "$out/overhead.log"
  exit "${PIPESTATUS[0]}"
fi
# shellcheck source=bench/gpu_build.sh
source "$root/bench/gpu_build.sh"
gpu_build "$build" "$out" analyze
PYTHONUNBUFFERED=1 python3 "$root/bench/analyze_bench.py" --analyze "$build/analysis/analyze" \
  --json-out "$out/bench.json" 2>&1 | tee "$out/bench.log"
