#!/usr/bin/env python3
"""Qwen3-Next benchmark: `extract run` against Hugging Face transformers, measured in the same run,
on 4 real-shape layers of Qwen3-Next-80B-A3B; optionally the full shape with offload.

1. Real-shape 4-layer model: 4 decoder layers of Qwen/Qwen3-Next-80B-A3B-Instruct's config (three
   gated-DeltaNet linear-attention layers, then one full-attention layer; hidden 2048, 512 experts
   top-10 of width 512 plus a shared expert, vocab 151936), random weights in bf16, written by
   tests/parity/extract_parity.py (build, real_shapes=True; 7.2 B parameters, 14.3 GB). Workload:
   2 x 2048 tokens a batch, ln_attn and ln_mlp of every layer.
     ours:  extract --absmax --warmup 1 over --iters batches: the default path (fused kernels where
            built) and the ATen path (EXTRACTOR_FUSED=0).
     HF:    from_pretrained(dtype=bf16, device_map="cuda"), forward hooks, model.model(...) without
            lm_head, 1 warm-up + N passes (bench/benchlib.py hf_bench). HF's linear attention
            takes flash-linear-attention / causal-conv1d kernels where installed and its torch
            fallback otherwise (hf_linear_attention_fast_path says so where transformers reports it).
   tokens/s, load seconds, peak GPU memory.
2. --full: Qwen3-Next-80B-A3B at full shape (48 layers, 79.7 B parameters, 159 GB of bf16 weights
   loaded) from config.json alone with --random-weights; it does not fit one GPU, so --full-max-memory
   is required (e.g. "0=120GiB,cpu=100GiB" on one H200: the layers past the GPU budget are offloaded).

Usage (GPU machine, transformers 5.x):
  python3 bench/qwen3_next_bench.py --extract build-gpu/extractor/extract [--work /tmp/qwen3-next-bench]
          [--iters 4] [--json-out qwen3_next_bench.json] [--full --full-max-memory 0=120GiB,cpu=100GiB]
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "parity"))
sys.path.insert(0, HERE)
import extract_parity as parity  # noqa: E402  (REAL_SHAPES)
import benchlib  # noqa: E402
from benchlib import (BATCH, SEQ_LEN, family_parser, family_workload, full_shape, real_shape_checkpoint,  # noqa: E402
                      table_versus_hf, versus_hf, write_json)


def released_config():
    """config.json of Qwen/Qwen3-Next-80B-A3B-Instruct (the keys extract reads): REAL_SHAPES' entry
    with all 48 layers."""
    return benchlib.released_config(parity.REAL_SHAPES["qwen3_next"], num_hidden_layers=48, model_type="qwen3_next",
                                    architectures=["Qwen3NextForCausalLM"], hidden_act="silu", torch_dtype="bfloat16")


def main():
    ap = family_parser("/tmp/qwen3-next-bench")
    ap.add_argument("--full", action="store_true", help="also run the full 48-layer shape (needs --full-max-memory)")
    ap.add_argument("--full-max-memory", default=None, help="--max-memory for the full-shape run, e.g. 0=120GiB,cpu=100GiB")
    args = ap.parse_args()
    if args.full and not args.full_max_memory:
        ap.error("--full: Qwen3-Next-80B is 159 GB in bf16 and fits no single GPU; give --full-max-memory")
    ids, ids_path, results = family_workload(args, parity.REAL_SHAPES["qwen3_next"]["vocab_size"])
    # transformers 5.17 has no module-level is_fast_path_available (older 5.x did): say what is known.
    from transformers.models.qwen3_next import modeling_qwen3_next as qn
    results["hf_linear_attention_fast_path"] = str(getattr(qn, "is_fast_path_available", "not reported by this transformers"))

    # 1. Real-shape 4-layer model, ours vs HF on the same files.
    mdir = os.path.join(args.work, "qwen3-next-80b-a3b-4layers")
    real_shape_checkpoint("qwen3_next", mdir)
    versus_hf(args.extract, mdir, ids, ids_path, args.iters, BATCH, SEQ_LEN, results,
              hf_label=f"hf (linear attention fast path: {results['hf_linear_attention_fast_path']})")

    # 2. Full shape from config.json alone, random weights, offloaded past the GPU budget.
    if args.full:
        full_shape(args.extract, os.path.join(args.work, "qwen3-next-80b-a3b-config"), released_config(), ids_path,
                   BATCH * args.iters, ["--random-weights", "--max-memory", args.full_max_memory], results, "qwen3_next_80b_full",
                   f"qwen3_next_80b_full (48 layers, random weights, {results['device']})")

    table_versus_hf("Qwen3-Next-80B-A3B shape, 4 layers, 2x2048 tokens, bf16", results)
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
