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
            GPU, model.model(...) without lm_head, 1 warm-up + N passes (bench/benchlib.py hf_bench).
   tokens/s, load seconds, peak GPU memory (allocator reserved; extract also device-level).
2. Mixtral-8x7B full shape (32 layers, 46.7 B parameters, 93.1 GB of bf16 weights loaded): config.json
   only, `extract run --random-weights` (weights generated on the GPU, no disk), 2 x 2048 tokens a
   batch: tokens/s, weights and peak memory. Needs one GPU with about 100 GB (an H200); skip with
   --no-full, or give --full-max-memory (e.g. "0=76GiB,1=76GiB") to split it over GPUs.

Usage (GPU machine, transformers 5.x): python3 bench/mixtral_bench.py --extract build-gpu/extractor/extract
           [--work /tmp/mixtral-bench] [--iters 4] [--json-out mixtral_bench.json] [--no-full]
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import (BATCH, SEQ_LEN, family_parser, family_workload, full_shape, real_shape_checkpoint,  # noqa: E402
                      table_versus_hf, versus_hf, write_json)


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
    ap = family_parser("/tmp/mixtral-bench")
    ap.add_argument("--no-full", action="store_true", help="skip the full-shape Mixtral-8x7B run")
    ap.add_argument("--full-max-memory", default=None, help="--max-memory for the full-shape run (default: one GPU)")
    args = ap.parse_args()
    ids, ids_path, results = family_workload(args, 32000)

    # 1. Real-shape 2-layer model, ours vs HF on the same files.
    mdir = os.path.join(args.work, "mixtral-8x7b-2layers")
    real_shape_checkpoint("mixtral", mdir)
    versus_hf(args.extract, mdir, ids, ids_path, args.iters, BATCH, SEQ_LEN, results)

    # 2. Full shape from config.json alone, random weights made on the GPU.
    if not args.no_full:
        extra = ["--random-weights"] + (["--max-memory", args.full_max_memory] if args.full_max_memory else [])
        full_shape(args.extract, os.path.join(args.work, "mixtral-8x7b-config"), released_config(), ids_path, BATCH * args.iters,
                   extra, results, "mixtral_8x7b_full", f"mixtral_8x7b_full (32 layers, random weights, {results['device']})")

    table_versus_hf("Mixtral-8x7B shape, 2 layers, 2x2048 tokens, bf16", results)
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
