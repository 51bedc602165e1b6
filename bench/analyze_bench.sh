#!/usr/bin/env bash
# Builds `analyze` (GPU-only build, with the extractor, against the local pip PyTorch) and runs
# bench/analyze_bench.py. Usage: bench/analyze_bench.sh [OUT_DIR]
# Needs: python3 with torch + transformers + safetensors, cmake, ninja, a CUDA GPU; CLI11,
# nlohmann_json, PCRE2 and utf8proc headers: from the system, or unpacked from the Debian packages
# in .debs/ and .debs-analysis/ (carried to the device) into $SYSROOT.
set -euo pipefail
out=${1:-${OUT:-/tmp/analyze-bench-out}}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-/tmp/build-analyze}
prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
if [[ -z "${SYSROOT:-}" ]] && ls "$root"/.debs*/*.deb >/dev/null 2>&1 &&
   { [[ ! -f /usr/include/CLI/CLI.hpp ]] || ! pkg-config --exists libpcre2-8 libutf8proc 2>/dev/null; }; then
  SYSROOT=/tmp/analyze-sysroot
  mkdir -p "$SYSROOT"
  for f in "$root"/.debs*/*.deb; do dpkg-deb -x "$f" "$SYSROOT"; done
fi
if [[ -n "${SYSROOT:-}" ]]; then
  export PKG_CONFIG_SYSROOT_DIR=$SYSROOT
  export PKG_CONFIG_PATH=$SYSROOT/usr/lib/x86_64-linux-gnu/pkgconfig:$SYSROOT/usr/share/pkgconfig
  export LD_LIBRARY_PATH=$SYSROOT/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  prefix="$prefix;$SYSROOT/usr"
  command -v pkg-config >/dev/null || export PKG_CONFIG=$SYSROOT/usr/bin/pkgconf PATH=$SYSROOT/usr/bin:$PATH
fi
if [[ ! -x $build/analysis/analyze ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTOOLKIT_GPU_ONLY=ON \
    -DCMAKE_PREFIX_PATH="$prefix" ${PKG_CONFIG:+-DPKG_CONFIG_EXECUTABLE=$PKG_CONFIG} > "$out/cmake.log" 2>&1 || { tail -40 "$out/cmake.log"; exit 1; }
  ninja -C "$build" -j"$(nproc)" analyze > "$out/build.log" 2>&1 || { grep -E "error|FAILED" -A5 "$out/build.log" | head -80; exit 1; }
fi
PYTHONUNBUFFERED=1 python3 "$root/bench/analyze_bench.py" --analyze "$build/analysis/analyze" \
  --json-out "$out/bench.json" 2>&1 | tee "$out/bench.log"
