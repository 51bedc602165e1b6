#!/usr/bin/env bash
# One lease of the GPU machine, batched: build the GPU tree once, check the fused kernels against
# their ATen paths, then HF parity and the benchmarks. Each phase writes its log under OUT and the
# last lines of each log are printed, so a call that is cut off still returns what it finished.
#   bench/gpu_session.sh quick   # build + GPU tests + parity of every family on small configs
#   bench/gpu_session.sh ppl     # GPU tests + perplexity parity of every family
#   bench/gpu_session.sh final   # gpt_oss real shapes in f32, perplexity parity, longer benchmarks
#   bench/gpu_session.sh shapes  # real-shape 2-layer parity (mixtral, gpt_oss) + mixtral and gpt_oss benchmarks
#   bench/gpu_session.sh new     # GPU tests + small parity of every family + the offload bench (OLMoE shape)
#   bench/gpu_session.sh newshapes     # real-shape parity and benchmarks of glm4_moe and qwen3_next
#   bench/gpu_session.sh offload_full  # full-shape offload (OFFLOAD_SHAPES, OFFLOAD_BUDGET_<shape>)
#   bench/gpu_session.sh stats   # issue 14: GPU tests (sweep kernel), per-expert counts vs HF's routers, overhead bench
#   bench/gpu_session.sh overhead    # GPU tests, perplexity + per-expert parity, the overhead bench with parts and a profile
#   bench/gpu_session.sh moe_parity  # real-shape bf16 parity with the routing-aware verdict: glm4_moe, qwen3_next, gpt_oss
#   bench/gpu_session.sh overhead2   # GPU tests and the overhead bench with parts and a profile only
#   bench/gpu_session.sh verdicts    # GPU tests and gpt_oss parity with the bf16 verdict against HF fp32
#   bench/gpu_session.sh sameroute   # real-shape bf16 parity of glm4_moe and qwen3_next (fp32 verdict, routing check)
#   bench/gpu_session.sh gptoss      # GPU tests, gpt_oss parity (small, real shapes), its bench vs HF, per-op profiles
#   bench/gpu_session.sh captures    # GPU tests, Mixtral 2-layer: --absmax vs the bare forward vs the fused accumulator
#                                    # (+ profile), the overhead bench, small parity of every family
#   bench/gpu_session.sh overhead3   # GPU tests, capture bench, the overhead bench (best of 3, parts, profile),
#                                    # the fused accumulator's profile on Mixtral's shape, the Mixtral bench (32 batches)
#   bench/gpu_session.sh mxprofile   # the fused accumulator's per-phase profile on Mixtral's real shape (2 layers)
#   bench/gpu_session.sh profiles    # per-op profiles of the real-shape glm4_moe and qwen3_next stacks (after their
#                                    # benches, HF in the same run), then the Mixtral accumulator's tally scopes
#   bench/gpu_session.sh lab         # the expert-matmul lab (bench/moe_gemm_lab.py) and the build
#   bench/gpu_session.sh perf2       # GPU tests, benches of qwen3_next, glm4_moe (default, EXTRACTOR_FUSED=all, all with
#                                    # repeated k/v) with per-op profiles, small parity (gpt_oss, glm4_moe, qwen3_next) on the
#                                    # three paths, the mixtral bench; on an H200 full-shape offload of qwen3_next (spread
#                                    # placement, prefetch 0-2, end-of-stack at 1) and glm4_moe (prefetch 0, 1)
#   bench/gpu_session.sh offload2    # on an H200: full-shape GLM-4.5-Air offload (prefetch 0, 1), then Qwen3-Next (spread
#                                    # placement at prefetch 0-2, end-of-stack at 1); the tail of perf2 on an H200
#   bench/gpu_session.sh h200        # on an H200: full-shape Qwen3-Next offload (prefetch 0 vs 1) and full-shape Mixtral-8x7B;
#                                    # then (any card) Qwen3-Next f32 real-shape parity
# BUILD_DIR (default build-gpu, inside the checkout so a warm machine keeps it between calls).
set -uo pipefail
what=${1:-quick}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/gpu-session-out}
mkdir -p "$out"
build=${BUILD_DIR:-$root/build-gpu}
# shellcheck source=bench/gpu_build.sh
source "$root/bench/gpu_build.sh"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
# The GPU tests (fused kernels vs ATen, offload, analysis kernels); their failures and summary.
gpu_tests() {
  "$build/tests/gpu/toolkit_gpu_tests" > "$out/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "ERROR|FAILED|signal|test cases" "$out/gpu_tests.log" | head -12
}
# The analysis accumulator's cost per capture and per batch against one read of the capture
# (bench/capture_kernel_bench.cpp).
capture_bench() {
  "$build/analysis/analysis_capture_bench" > "$out/capture_bench.log" 2>&1; echo "capture bench rc=$?"; cat "$out/capture_bench.log"
}
# The GPU tests, then the issue-14 overhead bench (best of 2, each addition alone, bare_ppl) and a
# per-op profile of every configuration (EXTRACTOR_PROFILE=1).
overhead_with_profile() {
  stamp "gpu tests, the accumulator's per-capture cost, then the overhead bench (best of 2) and a profile of every configuration"
  gpu_tests
  capture_bench
  PARTS=1 PROFILE=1 ANALYZE=$build/analysis/analyze EXTRACT=$exe timeout 330 bash "$root/bench/analyze_bench.sh" --overhead "$out/overhead" \
    > "$out/overhead_run.log" 2>&1
  echo "rc=$?"; grep -A1 "^profile" "$out/overhead_run.log"; tail -11 "$out/overhead_run.log"
}
# Per-op profile (EXTRACTOR_PROFILE=1) of a family's real-shape bench checkpoint (its bench ran first).
family_profile() {
  local fam=$1 w m
  w=/tmp/${fam//_/-}-bench; m=$(ls -d "$w"/*layers | head -1)
  EXTRACTOR_PROFILE=1 timeout 60 "$exe" run "$m" --tokens "$w/ids.json" --seq-len 2048 --num-sequences 16 --batch-size 2 \
    --dtype bf16 --device cuda --absmax --warmup 1 --json > /dev/null 2> "$out/${fam}_profile.log"
  echo "profile rc=$?"; grep -oE "profile.*" "$out/${fam}_profile.log" | cut -c1-1500
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
# The expert-matmul lab needs only torch: it runs on the GPU while the tree builds on the CPUs.
lab_pid=
if [[ $what == profiles || $what == h200 || $what == lab ]]; then
  python3 "$root/bench/moe_gemm_lab.py" --json-out "$out/moe_gemm_lab.json" > "$out/moe_gemm_lab.log" 2>&1 &
  lab_pid=$!
fi
stamp "build"
gpu_build "$build" "$out" extract analyze toolkit_gpu_tests analysis_capture_bench || { stamp "build failed"; exit 1; }
exe=$build/extractor/extract
if [[ -n $lab_pid ]]; then wait "$lab_pid"; echo "moe gemm lab rc=$?"; cat "$out/moe_gemm_lab.log"; fi
export PYTHONUNBUFFERED=1
if [[ $what == quick ]]; then
  stamp "gpu tests"
  gpu_tests
  stamp "parity (small configs, every family)"
  python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --plain-cpu --json-out "$out/parity_small.json" \
    > "$out/parity_small.log" 2>&1
  echo "parity rc=$?"; grep -A40 "^family " "$out/parity_small.log" | head -60
fi
if [[ $what == shapes ]]; then
  for fam in mixtral gpt_oss; do
    stamp "parity real shapes: $fam"
    timeout 240 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --real-shapes --families "$fam" \
      --json-out "$out/parity_real_$fam.json" > "$out/parity_real_$fam.log" 2>&1
    echo "parity $fam rc=$?"; grep -A10 "^family " "$out/parity_real_$fam.log" | head -14
  done
  stamp "mixtral bench"
  full=()
  # Full-shape Mixtral-8x7B needs about 100 GB on one card: only on an H200.
  [[ $(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1) -lt 120000 ]] && full=(--no-full)
  timeout 300 python3 "$root/bench/mixtral_bench.py" --extract "$exe" "${full[@]}" --json-out "$out/mixtral_bench.json" \
    > "$out/mixtral_bench.log" 2>&1
  echo "mixtral bench rc=$?"; tail -15 "$out/mixtral_bench.log"
  stamp "gpt_oss bench"
  timeout 300 python3 "$root/bench/gpt_oss_bench.py" --extract "$exe" --json-out "$out/gpt_oss_bench.json" \
    > "$out/gpt_oss_bench.log" 2>&1
  echo "gpt_oss bench rc=$?"; tail -25 "$out/gpt_oss_bench.log"
fi
if [[ $what == final ]]; then
  stamp "parity real shapes gpt_oss, f32 (a bf16 routing flip on a near-tie is gone in f32; a real mismatch is not)"
  timeout 200 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --real-shapes --families gpt_oss --dtypes f32 \
    --json-out "$out/parity_real_gpt_oss_f32.json" > "$out/parity_real_gpt_oss_f32.log" 2>&1
  echo "rc=$?"; grep -E "NOT OK|residual" "$out/parity_real_gpt_oss_f32.log" | head -8; grep -A6 "^family " "$out/parity_real_gpt_oss_f32.log"
  stamp "perplexity parity (small configs, untied then tied)"
  timeout 150 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --perplexity --families llama,qwen3,olmoe,qwen3_moe,mixtral,gpt_oss \
    --json-out "$out/parity_ppl.json" > "$out/parity_ppl.log" 2>&1
  echo "rc=$?"; grep -A40 "^family " "$out/parity_ppl.log" | head -42
  timeout 60 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --perplexity --tie-embeddings --families llama,qwen3 \
    --json-out "$out/parity_ppl_tied.json" > "$out/parity_ppl_tied.log" 2>&1
  echo "rc=$?"; grep -A12 "^family " "$out/parity_ppl_tied.log" | head -14
  stamp "benchmarks, 32 timed batches each (the first call's 4 batches were 0.1-0.2 s windows)"
  timeout 150 python3 "$root/bench/mixtral_bench.py" --extract "$exe" --no-full --iters 32 --json-out "$out/mixtral_bench32.json" \
    > "$out/mixtral_bench32.log" 2>&1
  echo "rc=$?"; tail -6 "$out/mixtral_bench32.log"
  timeout 150 python3 "$root/bench/gpt_oss_bench.py" --extract "$exe" --no-120b --iters 32 --json-out "$out/gpt_oss_bench32.json" \
    > "$out/gpt_oss_bench32.log" 2>&1
  echo "rc=$?"; tail -7 "$out/gpt_oss_bench32.log"
fi
if [[ $what == ppl ]]; then
  stamp "gpu tests"
  gpu_tests
  stamp "perplexity parity (small configs)"
  timeout 200 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --perplexity \
    --json-out "$out/parity_ppl.json" > "$out/parity_ppl.log" 2>&1
  echo "rc=$?"; grep -E "^NOT OK" "$out/parity_ppl.log" | head -12; grep -A42 "^family " "$out/parity_ppl.log" | head -44
fi
if [[ $what == stats ]]; then
  overhead_with_profile
  stamp "per-expert counts vs HF's router top-k (f32 decides; default and EXTRACTOR_FUSED=0 paths)"
  timeout 240 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --analyze "$build/analysis/analyze" \
    --expert-stats --families olmoe,qwen3_moe,mixtral,gpt_oss --json-out "$out/parity_experts.json" > "$out/parity_experts.log" 2>&1
  echo "rc=$?"; grep -E "experts:" "$out/parity_experts.log" | head -40; grep -A30 "^family " "$out/parity_experts.log" | head -32
fi
if [[ $what == new ]]; then
  # One call for the new families (#13), offload with prefetch, and the per-expert statistics (#14).
  stamp "gpu tests (kernels, offload at prefetch depths 0/1/2, analysis kernels)"
  gpu_tests
  stamp "parity, small configs, every family (fused + ATen paths)"
  timeout 300 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --json-out "$out/parity_small.json" \
    > "$out/parity_small.log" 2>&1
  echo "parity rc=$?"; grep -E "^NOT OK" "$out/parity_small.log" | head -12; grep -A40 "^family " "$out/parity_small.log" | head -44
  stamp "offload bench: OLMoE shape, 6 GiB GPU budget, prefetch 0/1/2 vs the copy bound"
  timeout 240 python3 "$root/bench/offload_bench.py" --extract "$exe" --shape olmoe --iters 6 --json-out "$out/offload_olmoe.json" \
    > "$out/offload_olmoe.log" 2>&1
  echo "rc=$?"; grep -vE "^\[|^[0-9]" "$out/offload_olmoe.log" | tail -8
fi
if [[ $what == newshapes ]]; then
  for fam in glm4_moe qwen3_next; do
    stamp "parity real shapes: $fam (bf16, fused + ATen)"
    timeout 240 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --real-shapes --families "$fam" \
      --json-out "$out/parity_real_$fam.json" > "$out/parity_real_$fam.log" 2>&1
    echo "parity $fam rc=$?"; grep -E "^NOT OK" "$out/parity_real_$fam.log" | head -6; grep -A8 "^family " "$out/parity_real_$fam.log" | head -10
  done
  stamp "glm4_moe bench (real shape, HF same run)"
  timeout 200 python3 "$root/bench/glm4_moe_bench.py" --extract "$exe" --iters 16 --json-out "$out/glm4_moe_bench.json" \
    > "$out/glm4_moe_bench.log" 2>&1
  echo "rc=$?"; tail -8 "$out/glm4_moe_bench.log"
  stamp "qwen3_next bench (real shape, HF same run)"
  timeout 200 python3 "$root/bench/qwen3_next_bench.py" --extract "$exe" --iters 16 --json-out "$out/qwen3_next_bench.json" \
    > "$out/qwen3_next_bench.log" 2>&1
  echo "rc=$?"; tail -8 "$out/qwen3_next_bench.log"
fi
if [[ $what == offload_full ]]; then
  # Full shapes with the layers that do not fit offloaded: prefetch 0 vs 1 (OFFLOAD_SHAPES, budgets
  # in OFFLOAD_BUDGET_<shape>; the H200 defaults of perf2), pending kernels included.
  : "${OFFLOAD_BUDGET_qwen3_next:=0=110GiB,cpu=100GiB}" "${OFFLOAD_BUDGET_glm4_moe:=0=128GiB,cpu=100GiB}"
  for shape in ${OFFLOAD_SHAPES:-qwen3_next glm4_moe}; do
    var=OFFLOAD_BUDGET_$shape
    stamp "offload full shape: $shape (${!var:-unset})"
    [[ -n ${!var:-} ]] || { echo "no budget for $shape"; continue; }
    EXTRACTOR_FUSED=all timeout 420 python3 "$root/bench/offload_bench.py" --extract "$exe" --shape "$shape" --no-resident --depths 0,1 \
      --batch-size 4 --iters 3 --max-memory "${!var}" --json-out "$out/offload_$shape.json" > "$out/offload_$shape.log" 2>&1
    echo "rc=$?"; grep -vE "^\[|^[0-9]" "$out/offload_$shape.log" | tail -8
  done
fi
if [[ $what == overhead ]]; then
  overhead_with_profile
  stamp "perplexity parity with the fused NLL (small configs)"
  timeout 90 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --perplexity --families llama,olmoe,gpt_oss \
    --json-out "$out/parity_ppl.json" > "$out/parity_ppl.log" 2>&1
  echo "rc=$?"; grep -E "perplexity:" "$out/parity_ppl.log" | head -12
  stamp "per-expert counts vs HF's router top-k with the fused per-expert pass"
  timeout 100 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --analyze "$build/analysis/analyze" \
    --expert-stats --families olmoe,mixtral --json-out "$out/parity_experts.json" > "$out/parity_experts.log" 2>&1
  echo "rc=$?"; grep -E "experts:" "$out/parity_experts.log" | head -12
fi
if [[ $what == overhead2 ]]; then
  overhead_with_profile
fi
if [[ $what == moe_parity ]]; then
  overhead_with_profile
  for fam in glm4_moe qwen3_next gpt_oss; do
    stamp "parity real shapes, bf16, routing-aware: $fam"
    timeout 170 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --real-shapes --families "$fam" \
      --json-out "$out/parity_real_$fam.json" > "$out/parity_real_$fam.log" 2>&1
    echo "parity $fam rc=$?"; grep -E "routing-aware|routing:" "$out/parity_real_$fam.log" | head -14
    grep -A8 "^family " "$out/parity_real_$fam.log" | head -10
  done
fi
if [[ $what == gptoss ]]; then
  # Sink attention on the flash kernel (#12): its GPU test, parity small and at real shapes, the
  # bench against HF, and a per-op profile of the packed path.
  stamp "gpu tests"
  gpu_tests
  grep -B2 -A8 "sink attention through flash" "$out/gpu_tests.log" | head -30
  stamp "parity small configs: gpt_oss (f32 and bf16, fused + ATen)"
  timeout 120 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --families gpt_oss \
    --json-out "$out/parity_small_gpt_oss.json" > "$out/parity_small_gpt_oss.log" 2>&1
  echo "rc=$?"; grep -E "^NOT OK" "$out/parity_small_gpt_oss.log" | head -6; grep -A8 "^family " "$out/parity_small_gpt_oss.log" | head -10
  stamp "parity real shapes, bf16, routing-aware: gpt_oss"
  timeout 170 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --real-shapes --families gpt_oss \
    --json-out "$out/parity_real_gpt_oss.json" > "$out/parity_real_gpt_oss.log" 2>&1
  echo "rc=$?"; grep -E "routing-aware|routing:" "$out/parity_real_gpt_oss.log" | head -8; grep -A8 "^family " "$out/parity_real_gpt_oss.log" | head -10
  stamp "gpt_oss bench, 16 timed batches, HF in the same run"
  timeout 200 python3 "$root/bench/gpt_oss_bench.py" --extract "$exe" --no-120b --iters 16 --json-out "$out/gpt_oss_bench.json" \
    > "$out/gpt_oss_bench.log" 2>&1
  echo "rc=$?"; tail -7 "$out/gpt_oss_bench.log"
  stamp "per-op profile of the packed path and of --dequantize"
  for extra in "" "--dequantize"; do
    EXTRACTOR_PROFILE=1 timeout 60 "$exe" run /tmp/gpt-oss-bench/gpt-oss-20b-2layers --tokens /tmp/gpt-oss-bench/ids.json \
      --seq-len 2048 --num-sequences 8 --batch-size 2 --dtype bf16 --device cuda --absmax --warmup 1 --json $extra \
      > /dev/null 2> "$out/gpt_oss_profile$extra.log"
    echo "rc=$? $extra"; grep -E "profile|ops:" "$out/gpt_oss_profile$extra.log" | cut -c1-900
  done
fi
if [[ $what == verdicts ]]; then
  # The flash sink attention at gpt-oss-20b's real head shapes (GPU test, numbers printed), and
  # gpt_oss bf16 parity judged against HF's fp32 forward (small configs, real shapes).
  stamp "gpu tests"
  gpu_tests
  grep -E "flash max" "$out/gpu_tests.log" | head -12
  capture_bench
  for shapes in "" "--real-shapes"; do
    stamp "parity gpt_oss $shapes (bf16 decided against HF fp32)"
    timeout 200 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --families gpt_oss $shapes \
      --json-out "$out/parity_truth_gpt_oss$shapes.json" > "$out/parity_truth_gpt_oss$shapes.log" 2>&1
    echo "rc=$?"; grep -E "vs fp32 layer|against fp32" "$out/parity_truth_gpt_oss$shapes.log" | head -16
    grep -A9 "^family " "$out/parity_truth_gpt_oss$shapes.log" | head -10
  done
fi
if [[ $what == sameroute ]]; then
  # #13: real-shape bf16 parity of glm4_moe and qwen3_next: the verdict against fp32 and the routing
  # check decide; the rows that differ with HF on extract's routing are reported (info lines).
  for fam in ${SAME_FAMILIES:-glm4_moe qwen3_next}; do
    stamp "parity real shapes, bf16, fp32 verdict and routing check: $fam"
    timeout 250 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --real-shapes --families "$fam" \
      --json-out "$out/parity_same_$fam.json" > "$out/parity_same_$fam.log" 2>&1
    echo "parity $fam rc=$?"; grep -E "same-routing( layer [0-9]|:)|routing-aware:|against fp32" "$out/parity_same_$fam.log" | head -16
    grep -E "^info .*same-routing layer_" "$out/parity_same_$fam.log" | head -12; grep -A6 "^family " "$out/parity_same_$fam.log" | head -8
  done
fi
if [[ $what == h200 ]]; then
  # H200s come rarely: the runs that need its memory go first, the f32 parity (fits an H100) last.
  if [[ $(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1) -ge 120000 ]]; then
    stamp "offload full shape: qwen3_next, prefetch 0 vs 1"
    timeout 330 python3 "$root/bench/offload_bench.py" --extract "$exe" --shape qwen3_next --no-resident --depths 0,1 \
      --batch-size 4 --iters 3 --max-memory "${OFFLOAD_BUDGET_qwen3_next:-0=110GiB,cpu=100GiB}" \
      --json-out "$out/offload_qwen3_next.json" > "$out/offload_qwen3_next.log" 2>&1
    echo "rc=$?"; grep -vE "^\[|^[0-9]" "$out/offload_qwen3_next.log" | tail -10
    stamp "full-shape Mixtral-8x7B with HF in the same run"
    timeout 220 python3 "$root/bench/mixtral_bench.py" --extract "$exe" --json-out "$out/mixtral_bench.json" \
      > "$out/mixtral_bench.log" 2>&1
    echo "rc=$?"; tail -15 "$out/mixtral_bench.log"
  else
    stamp "not an H200: the full-shape runs need about 139 GiB; only the f32 parity runs"
  fi
  stamp "parity real shapes, f32: qwen3_next (the test of its math where bf16 routing is chaotic)"
  timeout 200 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --real-shapes --families qwen3_next --dtypes f32 \
    --json-out "$out/parity_real_qwen3_next_f32.json" > "$out/parity_real_qwen3_next_f32.log" 2>&1
  echo "rc=$?"; grep -E "^NOT OK" "$out/parity_real_qwen3_next_f32.log" | head -6; grep -A6 "^family " "$out/parity_real_qwen3_next_f32.log" | head -8
fi
if [[ $what == captures ]]; then
  # What a capture costs inside a matmul-bound forward (#12, Mixtral 2 layers at real shapes): the
  # bench against HF, then the same batches with --absmax, with no sink (analyze extract --baseline)
  # and with the fused accumulator, and --absmax under EXTRACTOR_PROFILE.
  stamp "mixtral bench (2 layers, real shapes, 16 batches, HF same run)"
  timeout 150 python3 "$root/bench/mixtral_bench.py" --extract "$exe" --no-full --iters 16 --json-out "$out/mixtral_bench.json" \
    > "$out/mixtral_bench.log" 2>&1
  echo "rc=$?"; tail -6 "$out/mixtral_bench.log"
  mdir=/tmp/mixtral-bench/mixtral-8x7b-2layers
  run=(run "$mdir" --tokens /tmp/mixtral-bench/ids.json --seq-len 2048 --num-sequences 32 --batch-size 2 --dtype bf16
       --device cuda --warmup 1 --json)
  tps() { python3 -c 'import json,sys; d,_=json.JSONDecoder().raw_decode(sys.stdin.read().lstrip()); print("%.0f tokens/s, forward %.3f s" % (d["tokens_per_s"], d["forward_s"]))'; }
  for v in absmax baseline accumulator; do
    case $v in
      absmax) cmd=("$exe" "${run[@]}" --absmax) ;;
      baseline) cmd=("$build/analysis/analyze" extract -o /tmp/mx-base --no-plots --baseline -- "${run[@]}") ;;
      accumulator) cmd=("$build/analysis/analyze" extract -o /tmp/mx-acc --no-plots -- "${run[@]}") ;;
    esac
    echo "$v: $("${cmd[@]}" 2> "$out/mixtral_$v.err" | tps)"
  done
  EXTRACTOR_PROFILE=1 "$exe" "${run[@]}" --absmax > /dev/null 2> "$out/mixtral_profile.log"
  grep -E "profile" "$out/mixtral_profile.log" | cut -c1-900
  overhead_with_profile
  stamp "parity, small configs (2 x 256 tokens), every family, fused + ATen"
  timeout 200 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --json-out "$out/parity_small.json" \
    > "$out/parity_small.log" 2>&1
  echo "parity rc=$?"; grep -E "^NOT OK" "$out/parity_small.log" | head -12; grep -A40 "^family " "$out/parity_small.log" | head -44
fi
if [[ $what == overhead3 ]]; then
  stamp "gpu tests, capture bench, overhead bench (best of 3)"
  gpu_tests
  capture_bench
  REPEAT=3 PARTS=1 PROFILE=1 ANALYZE=$build/analysis/analyze EXTRACT=$exe timeout 330 bash "$root/bench/analyze_bench.sh" --overhead "$out/overhead" \
    > "$out/overhead_run.log" 2>&1
  echo "rc=$?"; grep -A1 "^profile" "$out/overhead_run.log"; tail -11 "$out/overhead_run.log"
  stamp "mixtral bench (2 layers, real shapes, 32 batches, HF same run)"
  timeout 200 python3 "$root/bench/mixtral_bench.py" --extract "$exe" --no-full --iters 32 --json-out "$out/mixtral_bench.json" \
    > "$out/mixtral_bench.log" 2>&1
  echo "rc=$?"; tail -6 "$out/mixtral_bench.log"
  run=(run /tmp/mixtral-bench/mixtral-8x7b-2layers --tokens /tmp/mixtral-bench/ids.json --seq-len 2048 --num-sequences 32
       --batch-size 2 --dtype bf16 --device cuda --warmup 1 --json)
  for v in baseline accumulator; do
    extra=(); [[ $v == baseline ]] && extra=(--baseline)
    EXTRACTOR_PROFILE=1 "$build/analysis/analyze" extract -o "/tmp/mx-$v" --no-plots "${extra[@]}" -- "${run[@]}" > /dev/null 2> "$out/mixtral_$v.profile"
    echo "$v rc=$?"; grep -E "profile" "$out/mixtral_$v.profile" | cut -c1-900
  done
  command -v nsys ncu || echo "no nsys/ncu"
fi
if [[ $what == profiles ]]; then
  # Where the forward's time goes on the two families short of 1.5x HF (#13), and what the token
  # tallies cost on Mixtral's shape (the tally's own scopes: table growth, scatter).
  for fam in glm4_moe qwen3_next; do
    stamp "$fam bench (real shape, HF same run), then its per-op profile"
    timeout 170 python3 "$root/bench/${fam}_bench.py" --extract "$exe" --iters 16 --json-out "$out/${fam}_bench.json" \
      > "$out/${fam}_bench.log" 2>&1
    echo "rc=$?"; tail -5 "$out/${fam}_bench.log"
    family_profile "$fam"
  done
  stamp "mixtral bench (2 layers, real shapes, 16 batches, HF same run), grouped vs per-expert expert matmuls"
  BENCH_VARIANTS='{"extract_per_expert": {"EXTRACTOR_EXPERT_MATMULS": "per_expert"}}' timeout 170 \
    python3 "$root/bench/mixtral_bench.py" --extract "$exe" --no-full --iters 16 --json-out "$out/mixtral_bench.json" \
    > "$out/mixtral_bench.log" 2>&1
  echo "rc=$?"; tail -7 "$out/mixtral_bench.log"
  [[ ${TALLY:-0} == 1 ]] && MX_VARIANTS="default notally" what=mxprofile
fi
[[ ${PERF2_SHORT:-0} == 1 ]] && export BENCH_NO_ATEN=1
if [[ $what == perf2 ]]; then
  # The pending fast paths (EXTRACTOR_FUSED=all: fused norms, conv and partial-rotary q/k pass, GQA
  # without repeated k/v) and the chunk-major delta rule: kernel tests, then the benches of the
  # validated default, of all, and of all with k/v repeated (HF same run), small parity of the
  # families they touch on all three paths.
  stamp "gpu tests"
  gpu_tests
  for fam in qwen3_next glm4_moe; do
    stamp "$fam bench (real shape, HF same run)"
    BENCH_VARIANTS='{"extract_all": {"EXTRACTOR_FUSED": "all"}, "extract_all_repeat_kv": {"EXTRACTOR_FUSED": "all", "EXTRACTOR_SDPA_GQA": "0"}}' timeout 200 \
      python3 "$root/bench/${fam}_bench.py" --extract "$exe" --iters 32 --json-out "$out/${fam}_bench.json" > "$out/${fam}_bench.log" 2>&1
    echo "rc=$?"; tail -6 "$out/${fam}_bench.log"
    [[ ${PERF2_SHORT:-0} == 1 ]] && continue
    EXTRACTOR_FUSED=all family_profile "$fam"
  done
  stamp "parity, small configs: gpt_oss, glm4_moe, qwen3_next (validated, all, ATen)"
  timeout 200 python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --families ${PARITY_FAMILIES:-gpt_oss,glm4_moe,qwen3_next} \
    --json-out "$out/parity_small.json" > "$out/parity_small.log" 2>&1
  echo "parity rc=$?"; grep -E "^NOT OK" "$out/parity_small.log" | head -6; grep -A12 "^family " "$out/parity_small.log" | head -14
  # PERF2_SHORT=1 (a short lease): the two family benches (no ATen run) and the parity only.
  [[ ${PERF2_SHORT:-0} == 1 ]] && what=done
fi
if [[ $what == perf2 ]]; then
  stamp "mixtral bench (2 layers, real shapes, 48 batches, HF same run)"
  BENCH_VARIANTS='{"extract_all": {"EXTRACTOR_FUSED": "all"}, "extract_again": {}, "extract_all_again": {"EXTRACTOR_FUSED": "all"}}' timeout 200 \
    python3 "$root/bench/mixtral_bench.py" --extract "$exe" --no-full --iters 48 --json-out "$out/mixtral_bench.json" \
    > "$out/mixtral_bench.log" 2>&1
  echo "rc=$?"; tail -8 "$out/mixtral_bench.log"
  [[ $(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1) -ge 120000 ]] && what=offload2
fi
if [[ $what == offload2 ]]; then
  # Full shapes. On an H200: GLM-4.5-Air in bf16 is ~199 GiB: ~120 GiB of layers stay on the card,
  # the rest is pinned on the host (the machine has 128 GiB of RAM), prefetch off and on. Then
  # Qwen3-Next with the streamed layers spread (prefetch 0, 1, 2) and at the end (prefetch 1). On an
  # H100 (80 GB) GLM would need ~120 GiB pinned of the host's 128: Qwen3-Next only, with a budget
  # that fits the card (OFFLOAD_BUDGET_qwen3_next).
  gpu_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  # OFFLOAD2_GPU_TESTS=1: the GPU tests and the accumulator's per-capture cost first (a kernel change
  # that has not run on a GPU yet).
  if [[ ${OFFLOAD2_GPU_TESTS:-0} == 1 ]]; then
    stamp "gpu tests and the accumulator's per-capture cost"
    gpu_tests
    capture_bench
  fi
  if [[ $gpu_mib -ge 120000 ]]; then
    stamp "offload full shape: glm4_moe, prefetch 0 and 1"
    timeout ${OFFLOAD_TIMEOUT_glm4_moe:-240} python3 "$root/bench/offload_bench.py" --extract "$exe" --shape glm4_moe --no-resident \
      --depths 0,1 --tail-depths "" --batch-size 4 --iters 3 --max-memory "${OFFLOAD_BUDGET_glm4_moe:-0=128GiB,cpu=100GiB}" \
      --json-out "$out/offload_glm4_moe.json" > "$out/offload_glm4_moe.log" 2>&1
    echo "rc=$?"; grep -E "^prefetch|host-to-device" "$out/offload_glm4_moe.log"; tail -3 "$out/offload_glm4_moe.log"
  else
    : "${OFFLOAD_BUDGET_qwen3_next:=0=66GiB,cpu=100GiB}"
    # OFFLOAD_GLM_LAYERS=N on an H100: GLM-4.5-Air's layers at full shape, N of its 46, so that about
    # as much is streamed as the whole model streams on an H200 but the pinned part fits the host.
    if [[ -n ${OFFLOAD_GLM_LAYERS:-} ]]; then
      stamp "offload full layer shape: glm4_moe, $OFFLOAD_GLM_LAYERS layers, prefetch 0 and 1"
      timeout ${OFFLOAD_TIMEOUT_glm4_moe:-240} python3 "$root/bench/offload_bench.py" --extract "$exe" --shape glm4_moe \
        --layers "$OFFLOAD_GLM_LAYERS" --no-resident --depths 0,1 --tail-depths "" --batch-size 4 --iters 3 \
        --max-memory "${OFFLOAD_BUDGET_glm4_moe:-0=64GiB,cpu=90GiB}" \
        --json-out "$out/offload_glm4_moe.json" > "$out/offload_glm4_moe.log" 2>&1
      echo "rc=$?"; grep -E "^prefetch|host-to-device" "$out/offload_glm4_moe.log"; tail -3 "$out/offload_glm4_moe.log"
    fi
  fi
  stamp "offload full shape: qwen3_next, streamed layers spread (prefetch 0, 1, 2) and at the end (prefetch 1)"
  # What is left of OFFLOAD2_DEADLINE (s from the start), at most 240 s.
  qn_left=$(( ${OFFLOAD2_DEADLINE:-560} - ($(date +%s) - t0) ))
  (( qn_left > ${OFFLOAD_TIMEOUT_qwen3_next:-240} )) && qn_left=${OFFLOAD_TIMEOUT_qwen3_next:-240}
  (( qn_left < 1 )) && qn_left=1
  timeout $qn_left python3 "$root/bench/offload_bench.py" --extract "$exe" --shape qwen3_next --no-resident \
    --depths ${OFFLOAD_DEPTHS:-0,1,2} --tail-depths "${OFFLOAD_TAIL_DEPTHS-1}" \
    --batch-size 4 --iters 3 --max-memory "${OFFLOAD_BUDGET_qwen3_next:-0=110GiB,cpu=100GiB}" \
    --json-out "$out/offload_qwen3_next.json" > "$out/offload_qwen3_next.log" 2>&1
  echo "rc=$?"; grep -E "^prefetch|host-to-device" "$out/offload_qwen3_next.log"; tail -3 "$out/offload_qwen3_next.log"
  # What time is left (OFFLOAD2_DEADLINE s from the start): real-shape bf16 parity on the default
  # path and the ATen path, one family at a time.
  for fam in ${OFFLOAD2_PARITY:-}; do
    left=$(( ${OFFLOAD2_DEADLINE:-540} - ($(date +%s) - t0) ))
    [[ $left -ge 100 ]] || { stamp "no time left for the $fam parity"; break; }
    stamp "parity real shapes, bf16: $fam (${left} s left)"
    timeout $left python3 "$root/tests/parity/extract_parity.py" --extract "$exe" --real-shapes --no-pending --families "$fam" \
      --json-out "$out/parity_real_$fam.json" > "$out/parity_real_$fam.log" 2>&1
    echo "parity $fam rc=$?"; grep -E "routing-aware:|against fp32" "$out/parity_real_$fam.log" | head -6; grep -A6 "^family " "$out/parity_real_$fam.log" | head -8
  done
fi
if [[ $what == mxprofile ]]; then
  stamp "mixtral real-shape checkpoint, then analyze extract profiles (bare, default, no token tallies, no sweep)"
  mdir=/tmp/mixtral-bench/mixtral-8x7b-2layers
  python3 -c "
import json, sys, torch
sys.path.insert(0, '$root/bench')
from benchlib import real_shape_checkpoint
real_shape_checkpoint('mixtral', '$mdir')
g = torch.Generator().manual_seed(7)
json.dump(torch.randint(0, 32000, (34, 2048), generator=g).tolist(), open('/tmp/mixtral-bench/ids.json', 'w'))" > "$out/mx_fixture.log" 2>&1
  echo "fixture rc=$?"
  run=(run "$mdir" --tokens /tmp/mixtral-bench/ids.json --seq-len 2048 --num-sequences 32 --batch-size 2 --dtype bf16 --device cuda --warmup 1 --json)
  for v in ${MX_VARIANTS:-baseline default notally nosweep}; do
    case $v in
      baseline) extra=(--baseline) ;; default) extra=() ;; notally) extra=(--token-dims 0) ;; nosweep) extra=(--thresholds none) ;;
    esac
    "$build/analysis/analyze" extract -o "/tmp/mx-$v" --no-plots "${extra[@]}" -- "${run[@]}" > "$out/mx_$v.out" 2> "$out/mx_$v.err"
    echo "$v rc=$? $(tr -d '\n ' < "$out/mx_$v.out" | grep -o '"forward_s":[0-9.]*' | head -1)"
    EXTRACTOR_PROFILE=1 "$build/analysis/analyze" extract -o "/tmp/mx-$v-p" --no-plots "${extra[@]}" -- "${run[@]}" > /dev/null 2> "$out/mx_$v.profile"
    echo "$v rc=$?"; grep -oE "profile.*" "$out/mx_$v.profile" | cut -c1-1200
  done
  python3 -c "
import json; d = json.load(open('/tmp/mx-default/outliers.json'))
print({k: d[k] for k in list(d)[:6] if not isinstance(d[k], (list, dict))})" 2>&1 | head -5
fi
stamp "done"
