#!/usr/bin/env python3
"""The forward overhead of everything issue 14 adds, measured in one run (bench/analyze_bench.sh --overhead).

No PyTorch needed on this side: the model is written by `extract fixture` (random weights, OLMoE family; at
--size olmoe the OLMoE-1B-7B shape of bench/analyze_bench.py: 16 layers, hidden 2048, 64 experts top-8, expert
width 1024, vocab 50304, bf16, the layer-norm gains of dims 101, 777, 1500 planted x30 in layers 0-11), and the
token ids are drawn here with a fixed seed. Then, each --repeat times, in this order, with --warmup 1:
  bare:   analyze extract --baseline (a sink that takes nothing: the bare forward pass)
  stats:  analyze extract --thresholds none (the outlier statistics alone, as before issue 14)
  full:   analyze extract --expert-stats --thresholds 3,4,5,6,8,10,20 -- run ... --perplexity
--parts adds each addition alone on top of the statistics (sweep, expert stats, perplexity), to say
where the full run's time goes. Each configuration's fastest forward_s (extract's own timer around the batches) is kept; the overhead is
full / bare - 1 (target <= 15 %), and tokens/s is tokens / forward_s. Prints a table and writes --json-out.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

SIZES = {
    # OLMoE-1B-7B's shape (bench/extract_bench.py olmoe_config), with analyze_bench.py's planted dims.
    "olmoe": dict(layers=16, hidden=2048, heads=16, kv_heads=16, head_dim=128, intermediate=1024, experts=64, top_k=8,
                  vocab=50304, plant="101,777,1500@0-11x30"),
    # A CPU-sized check of the same commands.
    "small": dict(layers=2, hidden=256, heads=4, kv_heads=4, head_dim=64, intermediate=128, experts=8, top_k=2,
                  vocab=1024, plant="11,77@0-1x30"),
}
SWEEP = "3,4,5,6,8,10,20"


def run_json(cmd, env=None):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    out, _ = json.JSONDecoder().raw_decode(r.stdout.lstrip())  # extract's JSON, then analyze's table
    out["process_wall_s"] = wall
    out["stderr"] = r.stderr
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--analyze", required=True)
    ap.add_argument("--extract", required=True, help="for `extract fixture`")
    ap.add_argument("--work", default="/tmp/analyze-overhead")
    ap.add_argument("--size", choices=sorted(SIZES), default="olmoe")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--parts", action="store_true", help="also time the sweep, expert stats and perplexity one at a time")
    ap.add_argument("--profile", action="store_true",
                    help="then run every configuration once more with EXTRACTOR_PROFILE=1 (device-synchronised per-op times) "
                         "and print extract's per-op profile of each; not part of the timed figures")
    args = ap.parse_args()
    size = SIZES[args.size]
    os.makedirs(args.work, exist_ok=True)
    mdir = os.path.join(args.work, f"olmoe-{args.size}")
    if not os.path.exists(os.path.join(mdir, "config.json")):
        t0 = time.perf_counter()
        subprocess.run([args.extract, "fixture", "--family", "olmoe", "--out", mdir, "--layers", str(size["layers"]),
                        "--hidden", str(size["hidden"]), "--heads", str(size["heads"]), "--kv-heads", str(size["kv_heads"]),
                        "--head-dim", str(size["head_dim"]), "--intermediate", str(size["intermediate"]),
                        "--experts", str(size["experts"]), "--top-k", str(size["top_k"]), "--vocab", str(size["vocab"]),
                        "--dtype", args.dtype, "--plant", size["plant"], "-q"], check=True)
        print(f"fixture written in {time.perf_counter() - t0:.1f} s: {mdir}", flush=True)
    rng = random.Random(0)
    ids_path = os.path.join(args.work, "ids.json")
    with open(ids_path, "w") as f:
        json.dump([[rng.randrange(size["vocab"]) for _ in range(args.seq_len)] for _ in range(args.sequences)], f)

    extract_args = ["run", mdir, "--tokens", ids_path, "--seq-len", str(args.seq_len), "--num-sequences",
                    str(args.sequences), "--batch-size", str(args.batch_size), "--dtype", args.dtype, "--device",
                    args.device, "--json", "--warmup", "1"]
    configs = {
        "bare": (["--baseline"], []),
        "stats": (["--thresholds", "none"], []),
        "full": (["--expert-stats", "--thresholds", SWEEP], ["--perplexity"]),
    }
    if args.parts:
        # Each addition alone on top of the statistics, to say where the full run's time goes; and
        # bare_ppl: the bare forward plus the final norm, lm_head and token NLL, i.e. what a causal LM's
        # own forward computes (HF's model(ids, labels=ids)): the full run's overhead over it is what
        # the statistics add to a forward that already yields perplexity.
        configs.update({"bare_ppl": (["--baseline"], ["--perplexity"]),
                        "sweep": (["--thresholds", SWEEP], []),
                        "experts": (["--expert-stats", "--thresholds", "none"], []),
                        "ppl": (["--thresholds", "none"], ["--perplexity"])})
    def run_config(name, out_name, env=None):
        """One `analyze extract` run of configuration `name` into work/out_name: extract's JSON."""
        analyze_flags, extract_flags = configs[name]
        return run_json([args.analyze, "extract", "-o", os.path.join(args.work, out_name), "--no-plots", *analyze_flags,
                         "--", *extract_args, *extract_flags], env=env)

    runs = {name: [] for name in configs}
    # stderr is kept for --profile only; the timed runs' JSON stays small
    for rep in range(args.repeat):
        for name in configs:
            r = run_config(name, f"{name}-{rep}")
            r.pop("stderr", None)
            runs[name].append(r)
            print(f"{name:<6} run {rep}: forward {r['forward_s']:.3f} s, {r['tokens_per_s']:.0f} tokens/s", flush=True)
    best = {name: min(rs, key=lambda r: r["forward_s"]) for name, rs in runs.items()}
    profiles = {}
    if args.profile:
        for name in configs:
            r = run_config(name, f"{name}-profile", env=dict(os.environ, EXTRACTOR_PROFILE="1"))
            line = next((l for l in r["stderr"].splitlines() if "profile (device-synchronised" in l), "no profile line")
            profiles[name] = dict(forward_s=r["forward_s"], profile=line)
            print(f"profile {name}: forward {r['forward_s']:.3f} s (synchronised per op)\n  {line}", flush=True)
    # The full run's report must hold what it claims to measure (never a vacuous timing).
    with open(os.path.join(args.work, f"full-{args.repeat - 1}", "outliers.json")) as f:
        full_result = json.load(f)
    missing = [k for k in ("threshold_sweep", "experts", "perplexity") if k not in full_result]
    if missing:
        raise RuntimeError(f"the full run's outliers.json lacks {missing}")
    bare = best["bare"]["forward_s"]
    results = dict(size=args.size, device=args.device, dtype=args.dtype, sequences=args.sequences, seq_len=args.seq_len,
                   batch_size=args.batch_size, repeat=args.repeat,
                   forward_s={n: [r["forward_s"] for r in rs] for n, rs in runs.items()},
                   best_forward_s={n: r["forward_s"] for n, r in best.items()},
                   tokens_per_s={n: r["tokens_per_s"] for n, r in best.items()},
                   overhead={n: best[n]["forward_s"] / bare - 1.0 for n in best if n != "bare"},
                   full_outliers_by_threshold={m: [row["num_outliers"] for row in rows]
                                               for m, rows in full_result["threshold_sweep"]["modes"].items()},
                   perplexity=full_result["perplexity"]["overall"].get("perplexity"), profiles=profiles)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)
    print(f"\n{args.size} shape, {args.sequences} x {args.seq_len} tokens, batch {args.batch_size}, {args.device} {args.dtype}, "
          f"best of {args.repeat}")
    print("| configuration | forward s | tokens/s | overhead vs bare | target |")
    print("|---|---:|---:|---:|---|")
    print(f"| bare forward (--baseline) | {bare:.3f} | {results['tokens_per_s']['bare']:.0f} | | |")
    print(f"| outlier statistics only | {best['stats']['forward_s']:.3f} | {results['tokens_per_s']['stats']:.0f} | "
          f"+{100 * results['overhead']['stats']:.1f} % | |")
    print(f"| + perplexity + expert stats + {len(SWEEP.split(','))}-threshold sweep | {best['full']['forward_s']:.3f} | "
          f"{results['tokens_per_s']['full']:.0f} | +{100 * results['overhead']['full']:.1f} % | <= +15 % |")
    parts = {"bare_ppl": "bare forward + lm_head and token NLL, no statistics",
             "sweep": f"statistics + {len(SWEEP.split(','))}-threshold sweep", "experts": "statistics + expert stats",
             "ppl": "statistics + perplexity"}
    for name, label in parts.items():
        if name in best:
            print(f"| {label} (--parts) | {best[name]['forward_s']:.3f} | {results['tokens_per_s'][name]:.0f} | "
                  f"+{100 * results['overhead'][name]:.1f} % | |")
    if "bare_ppl" in best:
        over = best["full"]["forward_s"] / best["bare_ppl"]["forward_s"] - 1.0
        results["overhead_full_vs_bare_ppl"] = over
        print(f"full run vs the bare forward with lm_head + NLL: +{100 * over:.1f} %")
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
