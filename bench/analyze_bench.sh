#!/usr/bin/env bash
# Builds `analyze` (GPU-only build, with the extractor, against the local pip PyTorch) and runs
# bench/analyze_bench.py. Usage: bench/analyze_bench.sh [OUT_DIR]
# Needs: python3 with torch + transformers + safetensors, cmake, ninja, a CUDA GPU (nvcc for the
# fused kernels); the build's other needs: bench/gpu_build.sh.
set -euo pipefail
out=${1:-${OUT:-/tmp/analyze-bench-out}}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-/tmp/build-analyze}
# shellcheck source=bench/gpu_build.sh
source "$root/bench/gpu_build.sh"
gpu_build "$build" "$out" analyze
PYTHONUNBUFFERED=1 python3 "$root/bench/analyze_bench.py" --analyze "$build/analysis/analyze" \
  --json-out "$out/bench.json" 2>&1 | tee "$out/bench.log"
