#!/usr/bin/env python3
"""Mixtral benchmark: `extract run` against Hugging Face transformers, measured in the same run, plus
Mixtral-8x7B's full shape on one GPU.

1. Real-shape 2-layer model: 2 decoder layers of mistralai/Mixtral-8x7B-v0.1's config (hidden 4096,
   32 heads, 8 kv heads, 8 experts top-2 of width 14336, vocab 32000; no sliding window), random
   weights N(0, 0.02) in bf16, written by tests/parity/extract_parity.py (build, real_shapes=True;
   3.2 B parameters, 6.4 GB). Workload: 2 x 2048 tokens a batch, ln_attn and ln_mlp of both layers.
     ours:  extract --absmax --warmup 1 over --iters batches: the default path (fused kernels where
            built) and the ATen path (EXTRACTOR_FUSED=0).
     HF:    from_pretrained(dtype=bf16, device_map="cuda"), forward hooks keeping every capture on the
            GPU, model.model(...) without lm_head, 1 warm-up + N passes (bench/extract_bench.py hf_bench).
   tokens/s, load seconds, peak GPU memory (allocator reserved; extract also device-level).
2. Mixtral-8x7B full shape (32 layers, 46.7 B parameters, 93.1 GB of bf16 weights loaded): config.json
   only, `extract run --random-weights` (weights generated on the GPU, no disk), 2 x 2048 tokens a
   batch: tokens/s, weights and peak memory. Needs one GPU with about 100 GB (an H200); skip with
   --no-full, or give --full-max-memory (e.g. "0=76GiB,1=76GiB") to split it over GPUs.

Usage (GPU machine, transformers 5.x): python3 bench/mixtral_bench.py --extract build-gpu/extractor/extract
           [--work /tmp/mixtral-bench] [--iters 4] [--json-out mixtral_bench.json] [--no-full]
"""
import argparse
import gc
import glob
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "parity"))
sys.path.insert(0, HERE)
import extract_parity as parity  # noqa: E402  (build, REAL_SHAPES)
from extract_bench import extract_bench, hf_bench, show  # noqa: E402



def released_config():
    """config.json of mistralai/Mixtral-8x7B-v0.1 (the keys extract reads)."""
    return {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 32768, "rms_norm_eps": 1e-5,
        "rope_theta": 1e6, "sliding_window": None, "hidden_act": "silu", "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--extract", required=True)
    ap.add_argument("--work", default="/tmp/mixtral-bench")
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--no-full", action="store_true", help="skip the full-shape Mixtral-8x7B run")
    ap.add_argument("--full-max-memory", default=None, help="--max-memory for the full-shape run (default: one GPU)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    batch, seq_len = 2, 2048
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 32000, (batch * (args.iters + 1), seq_len), generator=g)
    ids_path = os.path.join(args.work, "ids.json")
    with open(ids_path, "w") as f:
        json.dump(ids.tolist(), f)
    results = dict(device=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(), torch=torch.__version__)

    # 1. Real-shape 2-layer model, ours vs HF on the same files.
    mdir = os.path.join(args.work, "mixtral-8x7b-2layers")
    if not glob.glob(os.path.join(mdir, "*.safetensors")):
        parity.build("mixtral", mdir, seed=11, real_shapes=True, device="cuda")
    gc.collect()
    torch.cuda.empty_cache()
    seqs = batch * args.iters
    variants = {"extract": ([], None), "extract_aten": ([], {"EXTRACTOR_FUSED": "0"})}
    for name, (extra, env) in variants.items():
        try:
            results[name] = extract_bench(args.extract, mdir, ids_path, seqs, batch, seq_len, extra, env)
        except Exception as e:
            results[name] = dict(error=str(e))
        show(name, results[name])
    try:
        results["hf"] = hf_bench(mdir, ids[:batch], args.iters)
    except Exception as e:
        results["hf"] = dict(error=str(e))
    show("hf", results["hf"])

    # 2. Full shape from config.json alone, random weights made on the GPU.
    if not args.no_full:
        d = os.path.join(args.work, "mixtral-8x7b-config")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(released_config(), f, indent=2)
        extra = ["--random-weights"] + (["--max-memory", args.full_max_memory] if args.full_max_memory else [])
        try:
            results["mixtral_8x7b_full"] = extract_bench(args.extract, d, ids_path, seqs, batch, seq_len, extra)
        except Exception as e:
            results["mixtral_8x7b_full"] = dict(error=str(e))
        show(f"mixtral_8x7b_full (32 layers, random weights, {results['device']})", results["mixtral_8x7b_full"])

    ex, hf = results.get("extract", {}), results.get("hf", {})
    if "tokens_per_s" in ex and "tokens_per_s" in hf:
        print("\n| Mixtral-8x7B shape, 2 layers, 2x2048 tokens, bf16 | tokens/s | vs HF |")
        print("|---|---|---|")
        for name in ("extract", "extract_aten", "hf"):
            r = results.get(name, {})
            if "tokens_per_s" in r:
                print(f"| {name} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / hf['tokens_per_s']:.2f}x |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
