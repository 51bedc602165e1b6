#!/usr/bin/env python3
"""Offload benchmark: layers that do not fit the GPU budget live in pinned host memory and are copied
in every batch (extractor/offload.h). Measures `extract run --offload-prefetch D` for D = 0 (each layer
copied when it runs: every copy exposed), 1 and 2 (copies run ahead on a second stream), in the same
run (streamed layers spread through the stack, as placement does; --tail-depths also runs depths
with them kept at the end), against two peers:

  resident:   the same model with no offload (when it fits the GPU): the compute-only speed;
  copy bound: what the PCIe copy alone allows: tokens per batch / (bytes streamed per batch / the
              host-to-device rate measured here with torch: a 1 GiB pinned tensor copied to the GPU,
              best of 5). Prefetch should bring offloaded throughput to >= 0.8x of this bound.

Per depth: tokens/s, the copy time extract measured (CUDA events on its copy stream), the part the
GPU waited for (exposed), hidden = 1 - exposed / copy, and throughput / copy bound.

Models: random weights generated on the GPU from config.json alone (--random-weights); offloaded
layers are drawn on the GPU and copied to pinned memory.
  --shape olmoe            OLMoE-1B-7B's shape (16 layers, 13 GiB in bf16); default budget 0=6GiB
  --shape glm4_moe         GLM-4.5-Air's full shape (the parity script's REAL_SHAPES entry, 46 layers)
  --shape qwen3_next       Qwen3-Next-80B-A3B's full shape (REAL_SHAPES, 48 layers)
  --shape mixtral          Mixtral-8x7B's full shape (32 layers)
  --layers N               fewer decoder layers of the same shape (a machine too small for the whole model)
Give --max-memory to set the GPU budget and the pinned allowance (e.g. "0=100GiB,cpu=100GiB").

Usage (GPU machine): python3 bench/offload_bench.py --extract build-gpu/extractor/extract --shape olmoe
          [--max-memory 0=6GiB,cpu=20GiB] [--batch-size 4] [--iters 4] [--json-out offload.json]
"""
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "parity"))
sys.path.insert(0, HERE)
from benchlib import extract_bench, write_json  # noqa: E402
from extract_bench import olmoe_config  # noqa: E402

GiB = 1 << 30
# Decoder layers of the released models (config.json num_hidden_layers); REAL_SHAPES holds 2-4.
FULL_LAYERS = {"glm4_moe": 46, "qwen3_next": 48, "mixtral": 32, "gpt_oss": 36}
DEFAULT_BUDGET = {"olmoe": "0=6GiB,cpu=24GiB"}


def write_config(shape, out_dir, layers=None):
    os.makedirs(out_dir, exist_ok=True)
    if shape == "olmoe":
        olmoe_config(out_dir)
        return
    import extract_parity as parity  # needs transformers (GPU image)
    from transformers import AutoConfig
    kw = dict(parity.REAL_SHAPES[shape])
    n = layers or FULL_LAYERS[shape]
    kw["num_hidden_layers"] = n
    if "layer_types" in kw:  # the released pattern repeats: tile the 2-4 layer pattern
        pattern = list(kw["layer_types"])
        kw["layer_types"] = [pattern[i % len(pattern)] for i in range(n)]
    kw.pop("model_type", None)
    cfg = AutoConfig.for_model(shape, **kw)
    cfg.dtype = torch.bfloat16
    cfg.save_pretrained(out_dir)


def h2d_rate():
    """Host-to-device bytes/s from pinned memory, best of 5 copies of 1 GiB."""
    src = torch.empty(GiB, dtype=torch.uint8).pin_memory()
    dst = torch.empty(GiB, dtype=torch.uint8, device="cuda")
    best = 0.0
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        best = max(best, GiB / (time.perf_counter() - t0))
    del src, dst
    torch.cuda.empty_cache()
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--extract", required=True)
    ap.add_argument("--shape", default="olmoe", choices=["olmoe"] + sorted(FULL_LAYERS))
    ap.add_argument("--max-memory", default=None, help="GPU budget + pinned allowance, e.g. 0=100GiB,cpu=100GiB")
    ap.add_argument("--work", default="/tmp/offload-bench")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--iters", type=int, default=4, help="timed batches")
    ap.add_argument("--depths", default="0,1,2")
    ap.add_argument("--no-resident", action="store_true", help="skip the run without offload (model too large)")
    ap.add_argument("--tail-depths", default="", help="depths also run with the streamed layers kept at the end "
                    "(EXTRACTOR_OFFLOAD_SPREAD=0), the placement before they were spread")
    ap.add_argument("--layers", type=int, default=None,
                    help="decoder layers (default: the released model's); fewer keeps every layer's full shape "
                         "but fits a smaller machine, e.g. GLM-4.5-Air's streamed layers on an 80 GB card")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    budget = args.max_memory or DEFAULT_BUDGET.get(args.shape)
    if not budget:
        ap.error(f"--max-memory is needed for --shape {args.shape}")

    mdir = os.path.join(args.work, args.shape)
    write_config(args.shape, mdir, args.layers)
    with open(os.path.join(mdir, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    seqs = args.batch_size * args.iters
    g = torch.Generator().manual_seed(0)
    ids_path = os.path.join(args.work, "ids.json")
    with open(ids_path, "w") as f:
        json.dump(torch.randint(0, vocab, (seqs, args.seq_len), generator=g).tolist(), f)

    results = {"shape": args.shape, "layers": args.layers or FULL_LAYERS.get(args.shape), "max_memory": budget, "batch_size": args.batch_size, "seq_len": args.seq_len,
               "iters": args.iters, "gpu": torch.cuda.get_device_name(0)}
    rate = h2d_rate()
    results["h2d_bytes_per_s"] = rate
    print(f"{results['gpu']}: host-to-device {rate / 1e9:.1f} GB/s (pinned, 1 GiB, best of 5)", flush=True)

    base = ["--random-weights"]
    if not args.no_resident:
        try:
            r = extract_bench(args.extract, mdir, ids_path, seqs, args.batch_size, args.seq_len, base)
            results["resident"] = r
            print(f"resident: {r['tokens_per_s']:.0f} tokens/s, weights {r['weights_bytes'] / GiB:.1f} GiB", flush=True)
        except Exception as e:  # the model may not fit; the offloaded runs are the point
            results["resident"] = dict(error=str(e)[-800:])
            print(f"resident: failed ({str(e)[-300:]})", flush=True)
    tokens_per_batch = args.batch_size * args.seq_len
    runs = [(int(x), False) for x in args.depths.split(",")]
    runs += [(int(x), True) for x in args.tail_depths.split(",") if x]
    for d, tail in runs:
        name = f"prefetch_{d}" + ("_tail" if tail else "")
        extra = base + ["--max-memory", budget, "--offload-prefetch", str(d)]
        env = {"EXTRACTOR_OFFLOAD_SPREAD": "0"} if tail else None
        try:
            try:
                r = extract_bench(args.extract, mdir, ids_path, seqs, args.batch_size, args.seq_len, extra, env=env)
            except RuntimeError as e:
                # extract's host-memory check (exit 4) is an estimate made before loading; a GPU lease
                # is too scarce to lose to it. Record its verdict and measure anyway.
                if "extract failed (4)" not in str(e) or "--no-host-memory-check" not in str(e):
                    raise
                results.setdefault("host_memory_refusals", {})[name] = str(e)[-1500:]
                print(f"{name}: the host-memory check refused; measuring with --no-host-memory-check", flush=True)
                r = extract_bench(args.extract, mdir, ids_path, seqs, args.batch_size, args.seq_len,
                                  extra + ["--no-host-memory-check"], env=env)
        except Exception as e:
            results[name] = dict(error=str(e)[-800:])
            print(f"{name}: failed ({str(e)[-300:]})", flush=True)
            continue
        o = r.get("offload") or {}
        batches = max(1, r["tokens"] // tokens_per_batch)
        per_batch = o.get("bytes_streamed", 0) / batches
        bound = tokens_per_batch / (per_batch / rate) if per_batch else float("inf")
        r["copy_bound_tokens_per_s"] = bound
        r["of_copy_bound"] = r["tokens_per_s"] / bound if per_batch else None
        results[name] = r
        print(f"{name}: {r['tokens_per_s']:.0f} tokens/s; {o.get('layers_streamed', 0) // batches} layers "
              f"({per_batch / GiB:.2f} GiB) streamed a batch at {o.get('copy_gb_per_s', 0):.1f} GB/s; copy "
              f"{o.get('copy_s', 0):.2f} s, exposed {o.get('exposed_wait_s', 0):.2f} s, hidden "
              f"{100 * o.get('hidden_fraction', 0):.0f}%; copy bound {bound:.0f} tokens/s, "
              f"ratio {r['of_copy_bound'] or 0:.2f}", flush=True)
    write_json(args.json_out, results, indent=1)


if __name__ == "__main__":
    main()
