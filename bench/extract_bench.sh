#!/usr/bin/env bash
# Builds `extract` against the local pip PyTorch (GPU-only build) and runs the benchmark and/or
# the HF parity script. Usage: bench/extract_bench.sh [bench|parity|all|qwen3] [OUT_DIR]
# (qwen3: only the Qwen3-30B-A3B runs, one GPU and, on a two-GPU machine, split across both)
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
gpu_build "$build" "$out" extract toolkit_gpu_tests
# The fused kernels against their ATen paths first: a benchmark of wrong kernels is worthless.
if [[ -x $build/tests/gpu/toolkit_gpu_tests ]]; then
  "$build/tests/gpu/toolkit_gpu_tests" > "$out/gpu_tests.log" 2>&1 || { tail -40 "$out/gpu_tests.log"; exit 1; }
  tail -3 "$out/gpu_tests.log"
fi
exe=$build/extractor/extract
if [[ $what == parity || $what == all ]]; then
  PYTHONUNBUFFERED=1 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --plain-cpu \
    --json-out "$out/parity.json" 2>&1 | tee "$out/parity.log" || true
fi
if [[ $what == qwen3 ]]; then
  PYTHONUNBUFFERED=1 python3 "$root/bench/extract_bench.py" --extract "$exe" --qwen3-30b --qwen3-30b-only \
    --json-out "$out/bench_qwen3.json" 2>&1 | tee "$out/bench_qwen3.log"
fi
if [[ $what == bench || $what == all ]]; then
  PYTHONUNBUFFERED=1 python3 "$root/bench/extract_bench.py" --extract "$exe" --qwen3-30b \
    --json-out "$out/bench.json" 2>&1 | tee "$out/bench.log"
fi
