#!/usr/bin/env bash
# Benchmark (not a test): `broker search` over the four emulated clouds, each answering 300 ms late.
# Providers are queried concurrently, so the whole search should take about as long as the slowest
# provider alone. Prints each provider's time alone, the slowest, the all-four time and the ratio;
# target: all-four <= 1.3 x slowest. Uses the median of REPEAT runs of each.
#   bench/broker_search.sh [BUILD_DIR]   (default build-broker, else build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-}
if [[ -z "$build" ]]; then
  for d in "$root/build-broker" "$root/build"; do [[ -x "$d/broker/broker" ]] && build=$d && break; done
fi
broker="$build/broker/broker"
[[ -x "$broker" ]] || { echo "broker_search: no broker binary under ${build:-build}; build the 'broker' target first" >&2; exit 2; }
latency_ms=${LATENCY_MS:-300}
repeat=${REPEAT:-5}
key=bench-key-0123456789
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

declare -A url
for p in runpod vast lambda primeintellect; do
  python3 "$root/tests/emulators/emulator.py" --provider "$p" --port-file "$tmp/$p.port" --api-key "$key" \
    --latency-ms "$latency_ms" 2>"$tmp/$p.log" &
  pids+=($!)
done
for p in runpod vast lambda primeintellect; do
  for _ in $(seq 100); do [[ -s "$tmp/$p.port" ]] && break; sleep 0.1; done
  [[ -s "$tmp/$p.port" ]] || { echo "broker_search: emulator $p did not start: $(cat "$tmp/$p.log")" >&2; exit 1; }
  url[$p]="http://127.0.0.1:$(cat "$tmp/$p.port")"
done

export BROKER_CONFIG="$tmp/none.yaml" BROKER_STATE_DIR="$tmp/state"
export RUNPOD_API_KEY=$key VAST_API_KEY=$key LAMBDA_API_KEY=$key PRIME_API_KEY=$key
export RUNPOD_BASE_URL=${url[runpod]} VAST_BASE_URL=${url[vast]} LAMBDA_BASE_URL=${url[lambda]} PRIME_BASE_URL=${url[primeintellect]}

# Median wall seconds of `broker search ARGS...` over $repeat runs.
time_search() {
  local times=()
  for _ in $(seq "$repeat"); do
    local t0 t1
    t0=$(date +%s.%N)
    "$broker" --json search --limit 0 "$@" >"$tmp/out.json" 2>"$tmp/err.txt" || { echo "broker search $* failed: $(cat "$tmp/err.txt")" >&2; exit 1; }
    t1=$(date +%s.%N)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

echo "broker search, each emulated provider answering ${latency_ms} ms late (median of $repeat runs)"
slowest=0
slowest_name=""
for p in runpod vast lambda primeintellect; do
  t=$(time_search --provider "$p")
  n=$(python3 -c "import json,sys; print(len(json.load(open('$tmp/out.json'))))")
  printf '  %-15s %6.3f s  (%d offers)\n' "$p" "$t" "$n"
  if awk -v a="$t" -v b="$slowest" 'BEGIN { exit !(a > b) }'; then slowest=$t; slowest_name=$p; fi
done
all=$(time_search)
n=$(python3 -c "import json,sys; print(len(json.load(open('$tmp/out.json'))))")
ratio=$(awk -v a="$all" -v b="$slowest" 'BEGIN { print a / b }')
printf '  %-15s %6.3f s  (%d offers)\n' "all four" "$all" "$n"
printf 'slowest provider alone: %s %.3f s; all four together: %.3f s; ratio %.2f (target <= 1.30)\n' \
  "$slowest_name" "$slowest" "$all" "$ratio"
if awk -v r="$ratio" 'BEGIN { exit !(r <= 1.3) }'; then echo "PASS"; else echo "OVER TARGET"; fi
