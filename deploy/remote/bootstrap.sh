#!/bin/sh
# Remote bootstrap for deploy_and_analyze: build `extract` and `analyze` on the instance, against
# the instance's own libtorch (pip PyTorch on a GPU image, Debian's libtorch-dev on the local
# rehearsal), with the GPU-only CMake build. The build is cached by a hash of the sources it
# compiles, so a second run with the same sources skips it (and concurrent runs share one build:
# the first takes a lock, the others wait for it).
#
#   sh bootstrap.sh SRC_DIR CACHE_DIR
#   sh bootstrap.sh --print-key SRC_DIR     (the cache key only; the tests seed the cache with it)
#
# Prints "bin_dir=<folder with extract and analyze>" as its last line. POSIX sh; needs cmake, a
# C++20 compiler and ninja or make. Exit codes: 0 built or cached, 2 bad usage, 3 missing tools,
# 4 build failed, 5 timed out waiting for another bootstrap's lock.
set -eu

# The cache key: what the GPU-only build compiles (the top CMake files, cmake/, common/, extractor/,
# analysis/: names and contents, so a renamed file changes it too) and the libtorch it links (a pip
# torch and Debian's differ in ABI).
cache_key() {
  h=$(cd "$1" && find CMakeLists.txt cmake common extractor analysis -type f \
         ! -name '*.md' ! -name '*.swp' 2>/dev/null | LC_ALL=C sort | while IFS= read -r f; do
         printf '%s\n' "$f"; sha256sum "$f"; done | sha256sum | cut -c1-16)
  printf '%s-%s\n' "$h" "$(printf '%s' "${torch_prefix:-debian}" | sha256sum | cut -c1-8)"
}

torch_prefix=""
if command -v python3 >/dev/null 2>&1; then
  torch_prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
fi

if [ "${1:-}" = "--print-key" ]; then
  cache_key "${2:?usage: bootstrap.sh --print-key SRC_DIR}"
  exit 0
fi

src=${1:?usage: bootstrap.sh SRC_DIR CACHE_DIR}
cache=${2:?usage: bootstrap.sh SRC_DIR CACHE_DIR}
[ -f "$src/CMakeLists.txt" ] || { echo "bootstrap: $src: no CMakeLists.txt (was the workspace pushed?)" >&2; exit 2; }
mkdir -p "$cache"

# Build prerequisites: cloud PyTorch images ship a compiler and CMake at most, not the header
# libraries the GPU-only build needs (PCRE2 and utf8proc for the tokenizer, CLI11, nlohmann_json).
# Install what is missing from the distribution (Debian/Ubuntu), once; a machine without apt-get
# must already have them. BOOTSTRAP_SYSROOT points at unpacked -dev packages instead (machines
# without network, e.g. the GPU parity box).
if [ -n "${BOOTSTRAP_SYSROOT:-}" ]; then
  export PKG_CONFIG_SYSROOT_DIR="$BOOTSTRAP_SYSROOT"
  export PKG_CONFIG_PATH="$BOOTSTRAP_SYSROOT/usr/lib/x86_64-linux-gnu/pkgconfig:$BOOTSTRAP_SYSROOT/usr/share/pkgconfig"
  export CMAKE_PREFIX_PATH="$BOOTSTRAP_SYSROOT/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi
has_header() {
  for dir in /usr/include /usr/local/include ${BOOTSTRAP_SYSROOT:+"$BOOTSTRAP_SYSROOT/usr/include"}; do
    [ -f "$dir/$1" ] && return 0
  done
  return 1
}
have_prereqs() {
  command -v cmake >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 && command -v pkg-config >/dev/null 2>&1 &&
    pkg-config --exists libpcre2-8 libutf8proc 2>/dev/null && has_header CLI/CLI.hpp && has_header nlohmann/json.hpp
}
if ! have_prereqs; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "bootstrap: installing build prerequisites with apt-get" >&2
    pkgs="cmake ninja-build g++ pkg-config libpcre2-dev libutf8proc-dev libcli11-dev nlohmann-json3-dev"
    # shellcheck disable=SC2086  # $sudo and $pkgs are word lists on purpose
    if ! { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs; } >&2; then
      echo "bootstrap: apt-get could not install: $pkgs" >&2; exit 3
    fi
  fi
  have_prereqs || { echo "bootstrap: missing build prerequisites (cmake, a C++ compiler, pkg-config, and the headers of PCRE2, utf8proc, CLI11, nlohmann_json); install them or use an image that has them" >&2; exit 3; }
fi
for tool in cmake sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bootstrap: $tool not found on the instance; install it (apt-get install -y $tool) or use an image that has it" >&2; exit 3; }
done

key=$(cache_key "$src")
build="$cache/build-$key"

if [ -f "$build/.complete" ]; then
  echo "bootstrap: cached build $key (sources unchanged)" >&2
  echo "bin_dir=$build/bin"
  exit 0
fi

# One builder at a time per key; mkdir is atomic. A stale lock (its owner died) is taken over.
lock="$build.lock"
waited=0
while ! mkdir "$lock" 2>/dev/null; do
  owner=$(cat "$lock/pid" 2>/dev/null || echo "")
  if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
    echo "bootstrap: taking over the lock of a dead builder ($owner)" >&2
    rm -rf "$lock"
    continue
  fi
  if [ -f "$build/.complete" ]; then break; fi
  [ "$waited" -lt 3600 ] || { echo "bootstrap: waited 1h for another build of $key; giving up" >&2; exit 5; }
  sleep 2; waited=$((waited + 2))
done
if [ -f "$build/.complete" ]; then
  rmdir "$lock" 2>/dev/null || true
  echo "bin_dir=$build/bin"
  exit 0
fi
echo $$ > "$lock/pid"
trap 'rm -rf "$lock"' EXIT INT TERM

generator=""
if command -v ninja >/dev/null 2>&1; then generator="-G Ninja"; fi
# The fused CUDA kernels need nvcc; CUDA images keep it in /usr/local/cuda/bin, often off PATH.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ] && [ -z "${CUDACXX:-}" ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
launcher=""
if command -v ccache >/dev/null 2>&1; then launcher="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"; fi
jobs=$(nproc 2>/dev/null || echo 2)

echo "bootstrap: building extract and analyze ($key) with $jobs jobs; torch: ${torch_prefix:-Debian libtorch}" >&2
rm -rf "$build/tree"
mkdir -p "$build/tree" "$build/bin"
# shellcheck disable=SC2086  # generator/launcher are intentionally word-split (empty or one option)
if ! cmake -S "$src" -B "$build/tree" $generator $launcher -DCMAKE_BUILD_TYPE=Release -DTOOLKIT_GPU_ONLY=ON -DTOOLKIT_BUILD_TESTS=OFF \
       ${torch_prefix:+-DCMAKE_PREFIX_PATH="$torch_prefix${CMAKE_PREFIX_PATH:+;$CMAKE_PREFIX_PATH}"} >&2; then
  echo "bootstrap: cmake configure failed (see above)" >&2; exit 4
fi
if ! cmake --build "$build/tree" --target extract analyze -j "$jobs" >&2; then
  echo "bootstrap: build failed (see above)" >&2; exit 4
fi
cp "$build/tree/extractor/extract" "$build/tree/analysis/analyze" "$build/bin/"
"$build/bin/extract" --version >&2
touch "$build/.complete"
echo "bin_dir=$build/bin"
