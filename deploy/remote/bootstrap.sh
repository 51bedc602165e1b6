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
#   sh bootstrap.sh --print-torch          (the libtorch the build would use: "<Torch cmake dir> <version>")
#
# Prints "bin_dir=<folder with extract and analyze>" as its last line. POSIX sh; needs cmake, a
# C++20 compiler and ninja or make. Exit codes: 0 built or cached, 2 bad usage, 3 missing tools,
# 4 build failed, 5 timed out waiting for another bootstrap's lock.
#
# ccache, where installed, compiles through CCACHE_BASEDIR=SRC_DIR in a build folder right inside
# SRC_DIR, so the compiler sees the same relative paths as a host build in <checkout>/build made
# with CCACHE_BASEDIR=<checkout> and CCACHE_SLOPPINESS=locale: the local rehearsal (this same
# machine over loopback ssh) then reuses the host build's objects instead of compiling for minutes.
set -eu

# The libtorch the build links, resolved here and handed to CMake as Torch_DIR so the key below
# names exactly what is linked. Not "the first python3 on PATH": the tests compute the key in their
# own environment while the remote side runs under sshd's PATH, and a python3 without torch (a
# venv) or one whose torch ships no CMake files (Debian's python3-torch) must not change it. In
# order: $Torch_DIR; the torch of the first python3 (PATH, then the usual places) whose
# cmake_prefix_path has Torch/TorchConfig.cmake (pip PyTorch on GPU images); TorchConfig.cmake in
# $CMAKE_PREFIX_PATH and the system folders (Debian's libtorch-dev). Sets torch_dir (physical
# path, "" when none), torch_version and torch_prefix (the python prefix, else "").
resolve_torch() {
  torch_dir="" torch_version="" torch_prefix=""
  if [ -n "${Torch_DIR:-}" ] && [ -f "$Torch_DIR/TorchConfig.cmake" ]; then
    torch_dir=$Torch_DIR
  else
    seen=":"
    old_ifs=$IFS; IFS=:; set -f
    # shellcheck disable=SC2086  # split PATH on ':' on purpose (globbing off)
    set -- ${PATH:-} /usr/local/bin /usr/bin /opt/conda/bin
    IFS=$old_ifs; set +f
    for d in "$@"; do
      py="${d:-.}/python3"
      case "$seen" in *":$py:"*) continue ;; esac
      seen="$seen$py:"
      [ -x "$py" ] || continue
      p=$("$py" -c 'import torch.utils;print(torch.utils.cmake_prefix_path)' 2>/dev/null) || continue
      if [ -n "$p" ] && [ -f "$p/Torch/TorchConfig.cmake" ]; then torch_dir="$p/Torch" torch_prefix=$p; break; fi
    done
    if [ -z "$torch_dir" ]; then
      arch=$(uname -m)-linux-gnu
      old_ifs=$IFS; IFS=:; set -f
      # shellcheck disable=SC2086
      set -- ${CMAKE_PREFIX_PATH:-} /usr/local /usr
      IFS=$old_ifs; set +f
      for p in "$@"; do
        for c in "$p/Torch" "$p/share/cmake/Torch" "$p/lib/cmake/Torch" "$p/lib/$arch/cmake/Torch" "$p/lib64/cmake/Torch"; do
          if [ -f "$c/TorchConfig.cmake" ]; then torch_dir=$c; break 2; fi
        done
      done
    fi
  fi
  [ -n "$torch_dir" ] || return 0
  torch_dir=$(cd "$torch_dir" && pwd -P)
  torch_version=$(sed -n 's/^ *set *( *PACKAGE_VERSION *"\([^"]*\)".*/\1/p' "$torch_dir/TorchConfigVersion.cmake" 2>/dev/null | head -n 1)
}

# The cache key: what the GPU-only build compiles (the top CMake files, cmake/, common/, extractor/,
# analysis/: names and contents, so a renamed file changes it too) and the libtorch it links, by
# folder and version (a pip torch and Debian's differ in ABI; an upgrade in place changes the version).
cache_key() {
  h=$(cd "$1" && find CMakeLists.txt cmake common extractor analysis -type f \
         ! -name '*.md' ! -name '*.swp' 2>/dev/null | LC_ALL=C sort | while IFS= read -r f; do
         printf '%s\n' "$f"; sha256sum "$f"; done | sha256sum | cut -c1-16)
  printf '%s-%s\n' "$h" "$(printf '%s\n%s\n' "${torch_dir:-none}" "$torch_version" | sha256sum | cut -c1-8)"
}

# BOOTSTRAP_SYSROOT points at unpacked -dev packages (machines without network, e.g. the GPU parity
# box); set up before the torch is resolved, since the key depends on it.
if [ -n "${BOOTSTRAP_SYSROOT:-}" ]; then
  export PKG_CONFIG_SYSROOT_DIR="$BOOTSTRAP_SYSROOT"
  export PKG_CONFIG_PATH="$BOOTSTRAP_SYSROOT/usr/lib/x86_64-linux-gnu/pkgconfig:$BOOTSTRAP_SYSROOT/usr/share/pkgconfig"
  export CMAKE_PREFIX_PATH="$BOOTSTRAP_SYSROOT/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi

resolve_torch
case "${1:-}" in
  --print-key)
    cache_key "${2:?usage: bootstrap.sh --print-key SRC_DIR}"
    exit 0 ;;
  --print-torch)
    printf '%s %s\n' "${torch_dir:-none}" "${torch_version:-unknown}"
    exit 0 ;;
esac

src=${1:?usage: bootstrap.sh SRC_DIR CACHE_DIR}
cache=${2:?usage: bootstrap.sh SRC_DIR CACHE_DIR}
[ -f "$src/CMakeLists.txt" ] || { echo "bootstrap: $src: no CMakeLists.txt (was the workspace pushed?)" >&2; exit 2; }
src=$(cd "$src" && pwd -P)  # physical, as CMake and ccache's base_dir compare it
mkdir -p "$cache"

# Build prerequisites: cloud PyTorch images ship a compiler and CMake at most, not the header
# libraries the GPU-only build needs (PCRE2 and utf8proc for the tokenizer, CLI11, nlohmann_json).
# Install what is missing from the distribution (Debian/Ubuntu), once; a machine without apt-get
# must already have them (or BOOTSTRAP_SYSROOT, above).
has_header() {
  for dir in /usr/include /usr/local/include ${BOOTSTRAP_SYSROOT:+"$BOOTSTRAP_SYSROOT/usr/include"}; do
    [ -f "$dir/$1" ] && return 0
  done
  return 1
}
have_prereqs() {
  command -v cmake >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 && command -v pkg-config >/dev/null 2>&1 &&
    pkg-config --exists libpcre2-8 libutf8proc 2>/dev/null && has_header CLI/CLI.hpp && has_header nlohmann/json.hpp &&
    has_header openssl/evp.h
}
if ! have_prereqs; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "bootstrap: installing build prerequisites with apt-get" >&2
    pkgs="cmake ninja-build g++ pkg-config libpcre2-dev libutf8proc-dev libcli11-dev nlohmann-json3-dev libssl-dev"
    # shellcheck disable=SC2086  # $sudo and $pkgs are word lists on purpose
    if ! { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs; } >&2; then
      echo "bootstrap: apt-get could not install: $pkgs" >&2; exit 3
    fi
  fi
  have_prereqs || { echo "bootstrap: missing build prerequisites (cmake, a C++ compiler, pkg-config, and the headers of PCRE2, utf8proc, CLI11, nlohmann_json, OpenSSL); install them or use an image that has them" >&2; exit 3; }
fi
for tool in cmake sha256sum flock; do
  pkg=$tool; [ "$tool" = flock ] && pkg=util-linux
  command -v "$tool" >/dev/null 2>&1 || { echo "bootstrap: $tool not found on the instance; install it (apt-get install -y $pkg) or use an image that has it" >&2; exit 3; }
done

key=$(cache_key "$src")
build="$cache/build-$key"

if [ -f "$build/.complete" ]; then
  echo "bootstrap: cached build $key (sources unchanged)" >&2
  echo "bin_dir=$build/bin"
  exit 0
fi

# One builder at a time per key, under flock(1). The kernel drops the lock when its holder dies,
# however it dies, so there is no stale lock to judge and take over (a pid file and a takeover
# would let two waiters of a dead builder both take it over and build into the same folder).
# A waiter re-checks .complete once it holds the lock: the builder it waited for has usually
# finished the job.
exec 9>"$build.lock"
if ! flock -n 9; then
  echo "bootstrap: another bootstrap is building $key; waiting for it (at most 1h)" >&2
  flock -w "${BOOTSTRAP_LOCK_WAIT_S:-3600}" 9 || { echo "bootstrap: waited ${BOOTSTRAP_LOCK_WAIT_S:-3600} s for another build of $key; giving up" >&2; exit 5; }
fi
if [ -f "$build/.complete" ]; then
  echo "bootstrap: cached build $key (built by a concurrent bootstrap)" >&2
  echo "bin_dir=$build/bin"
  exit 0
fi

generator=""
if command -v ninja >/dev/null 2>&1; then generator="-G Ninja"; fi
# The fused CUDA kernels need nvcc; CUDA images keep it in /usr/local/cuda/bin, often off PATH.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ] && [ -z "${CUDACXX:-}" ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
# The build folder sits right inside the source tree, one level deep like a host build in
# <checkout>/build, so with CCACHE_BASEDIR=<source tree> both hand the compiler the same relative
# paths and share ccache entries (Release has no -g, so the folder's own name is not hashed;
# CCACHE_NOHASHDIR keeps it so if flags ever add it). Its name starts with "build", which the
# checkout's .gitignore (and so the workspace push) leaves out.
tree="$src/build-bootstrap-$key"
launcher=""
if command -v ccache >/dev/null 2>&1; then
  launcher="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
  # ccache hashes LANG/LC_* unless told not to, and an ssh session rarely has the host shell's
  # locale: sloppiness "locale" leaves them out (the host build needs the same setting to match).
  # This build's own hit/miss counts go to a stats log (the account's counters are left alone).
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$src}" CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}" CCACHE_STATSLOG="$build/ccache-stats.log"
  case ",${CCACHE_SLOPPINESS:-}," in *,locale,*) ;; *) export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:+$CCACHE_SLOPPINESS,}locale" ;; esac
  # The local rehearsal's ssh session has HOME set to the instance's own folder, which would hide
  # the account's ccache (and every object the host build put there): use the account's home from
  # the passwd database to find it. On a cloud instance that is the same folder as $HOME.
  if [ -z "${CCACHE_DIR:-}" ] && command -v getent >/dev/null 2>&1; then
    account_home=$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f6)
    if [ -n "$account_home" ] && [ "$account_home" != "${HOME:-}" ] && [ -d "$account_home" ]; then
      ccache_dir=$(HOME="$account_home" ccache -k cache_dir 2>/dev/null || true)
      if [ -n "$ccache_dir" ]; then export CCACHE_DIR="$ccache_dir"; fi
    fi
  fi
fi
jobs=$(nproc 2>/dev/null || echo 2)

ccache_note="not installed"
if [ -n "$launcher" ]; then ccache_note="${CCACHE_DIR:-its default folder}, base $CCACHE_BASEDIR"; fi
echo "bootstrap: building extract and analyze ($key) with $jobs jobs; torch: ${torch_dir:-not found} ${torch_version}; ccache: $ccache_note" >&2
rm -rf "$tree"
mkdir -p "$tree" "$build/bin"
# shellcheck disable=SC2086  # generator/launcher are intentionally word-split (empty or one option)
if ! cmake -S "$src" -B "$tree" $generator $launcher -DCMAKE_BUILD_TYPE=Release -DTOOLKIT_GPU_ONLY=ON -DTOOLKIT_BUILD_TESTS=OFF \
       ${torch_dir:+-DTorch_DIR="$torch_dir"} \
       ${torch_prefix:+-DCMAKE_PREFIX_PATH="$torch_prefix${CMAKE_PREFIX_PATH:+;$CMAKE_PREFIX_PATH}"} >&2; then
  echo "bootstrap: cmake configure failed (see above)" >&2; exit 4
fi
if ! cmake --build "$tree" --target extract analyze -j "$jobs" >&2; then
  echo "bootstrap: build failed (see above; the build folder $tree is kept)" >&2; exit 4
fi
cp "$tree/extractor/extract" "$tree/analysis/analyze" "$build/bin/"
"$build/bin/extract" --version >&2
if [ -n "$launcher" ]; then
  echo "bootstrap: ccache for this build:" >&2
  ccache --show-log-stats >&2 2>/dev/null || true
fi
# The binaries live in the cache now; the objects, where ccache is, in ccache.
rm -rf "$tree"
touch "$build/.complete"
echo "bin_dir=$build/bin"
