#!/usr/bin/env bash
# Builds `extract` against the local pip PyTorch (GPU-only build) and runs the benchmark and/or
# the HF parity script. Usage: bench/extract_bench.sh [bench|parity|all] [OUT_DIR]
# Needs: python3 with torch + transformers + safetensors, cmake, ninja, a CUDA GPU; PCRE2 and
# utf8proc headers (set SYSROOT=/path to an unpacked Debian sysroot if they are not installed).
set -euo pipefail
what=${1:-all}
out=${2:-${OUT:-/tmp/extract-bench-out}}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-/tmp/build-extract}
prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
if [[ -n "${SYSROOT:-}" ]]; then
  export PKG_CONFIG_SYSROOT_DIR=$SYSROOT
  export PKG_CONFIG_PATH=$SYSROOT/usr/lib/x86_64-linux-gnu/pkgconfig:$SYSROOT/usr/share/pkgconfig
  export LD_LIBRARY_PATH=$SYSROOT/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  prefix="$prefix;$SYSROOT/usr"
  command -v pkg-config >/dev/null || export PKG_CONFIG=$SYSROOT/usr/bin/pkgconf PATH=$SYSROOT/usr/bin:$PATH
fi
if [[ ! -x $build/extractor/extract ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTOOLKIT_GPU_ONLY=ON \
    -DCMAKE_PREFIX_PATH="$prefix" ${PKG_CONFIG:+-DPKG_CONFIG_EXECUTABLE=$PKG_CONFIG} > "$out/cmake.log" 2>&1 || { tail -40 "$out/cmake.log"; exit 1; }
  ninja -C "$build" -j"$(nproc)" extract > "$out/build.log" 2>&1 || { grep -E "error|FAILED" -A5 "$out/build.log" | head -80; exit 1; }
fi
exe=$build/extractor/extract
if [[ $what == parity || $what == all ]]; then
  PYTHONUNBUFFERED=1 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --plain-cpu \
    --json-out "$out/parity.json" 2>&1 | tee "$out/parity.log" || true
fi
if [[ $what == bench || $what == all ]]; then
  PYTHONUNBUFFERED=1 python3 "$root/bench/extract_bench.py" --extract "$exe" --qwen3-30b \
    --json-out "$out/bench.json" 2>&1 | tee "$out/bench.log"
fi
