#!/usr/bin/env bash
# Builds the GPU-only tree (extract, analyze, the fused CUDA kernels and their tests) against the
# local pip PyTorch; sourced by the GPU benchmarks, or run directly:
#   bench/gpu_build.sh BUILD_DIR LOG_DIR TARGET...
# CLI11, nlohmann_json, PCRE2, utf8proc and OpenSSL's libcrypto (SHA-256, common/sha256.h) come from
# the system, or are unpacked from the Debian packages in .debs*/ (carried to an offline GPU machine:
# libssl-dev and libssl3 among them, from `apt-get download libssl-dev libssl3`) into a sysroot.
# Exports TOOLKIT_GPU_BUILD.
gpu_build() {
  local build=$1 logs=$2
  shift 2
  local root prefix
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  mkdir -p "$logs"
  if [[ -z "${SYSROOT:-}" ]] && ls "$root"/.debs*/*.deb >/dev/null 2>&1 &&
     { [[ ! -f /usr/include/CLI/CLI.hpp ]] || [[ ! -f /usr/include/openssl/evp.h ]] ||
       ! pkg-config --exists libpcre2-8 libutf8proc 2>/dev/null; }; then
    SYSROOT=/tmp/toolkit-sysroot
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
  if [[ ! -f $build/build.ninja ]]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTOOLKIT_GPU_ONLY=ON \
      -DCMAKE_PREFIX_PATH="$prefix" ${PKG_CONFIG:+-DPKG_CONFIG_EXECUTABLE=$PKG_CONFIG} > "$logs/cmake.log" 2>&1 ||
      { tail -40 "$logs/cmake.log"; return 1; }
  fi
  grep -h "fused CUDA kernels" "$logs/cmake.log" || true
  ninja -C "$build" -j"$(nproc)" "$@" > "$logs/build.log" 2>&1 ||
    { grep -E "error|FAILED" -A5 "$logs/build.log" | head -80; return 1; }
  export TOOLKIT_GPU_BUILD=$build
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  gpu_build "$@"
fi
