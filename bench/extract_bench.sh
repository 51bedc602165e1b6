#!/usr/bin/env bash
# Builds `extract` against the local pip PyTorch (GPU-only build) and runs the benchmark and/or
# the HF parity script. Usage: bench/extract_bench.sh [bench|parity|all] [OUT_DIR]
# Needs: python3 with torch + transformers + safetensors, cmake, ninja, a CUDA GPU (nvcc for the
# fused kernels); the build's other needs: bench/gpu_build.sh.
set -euo pipefail
what=${1:-all}
out=${2:-${OUT:-/tmp/extract-bench-out}}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-/tmp/build-extract}
# shellcheck source=bench/gpu_build.sh
source "$root/bench/gpu_build.sh"
gpu_build "$build" "$out" extract
exe=$build/extractor/extract
if [[ $what == parity || $what == all ]]; then
  PYTHONUNBUFFERED=1 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --plain-cpu \
    --json-out "$out/parity.json" 2>&1 | tee "$out/parity.log" || true
fi
if [[ $what == bench || $what == all ]]; then
  PYTHONUNBUFFERED=1 python3 "$root/bench/extract_bench.py" --extract "$exe" --qwen3-30b \
    --json-out "$out/bench.json" 2>&1 | tee "$out/bench.log"
fi
