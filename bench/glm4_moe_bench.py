#!/usr/bin/env python3
"""GLM-4.5-Air benchmark: `extract run` against Hugging Face transformers, measured in the same run,
on 3 real-shape layers of GLM-4.5-Air; optionally the full shape with offload.

1. Real-shape 3-layer model: layers 0-2 of zai-org/GLM-4.5-Air's config (layer 0 dense of width
   10944, layers 1-2 MoE: 128 experts top-8 of width 1408 plus the shared expert, sigmoid router;
   hidden 4096, 96 heads of 128 with half rotated, 8 kv heads; vocab 151552), random weights
   N(0, 0.02) in bf16, written by tests/parity/extract_parity.py (build, real_shapes=True; 6.2 B
   parameters, 12.3 GB). Workload: 2 x 2048 tokens a batch, ln_attn and ln_mlp of every layer.
     ours:  extract --absmax --warmup 1 over --iters batches: the default path (fused kernels where
            built) and the ATen path (EXTRACTOR_FUSED=0).
     HF:    from_pretrained(dtype=bf16, device_map="cuda"), forward hooks, model.model(...) without
            lm_head, 1 warm-up + N passes (bench/benchlib.py hf_bench).
   tokens/s, load seconds, peak GPU memory.
2. --full: GLM-4.5-Air at full shape (46 layers, 106.9 B parameters, 212.5 GB of bf16 weights
   loaded) from config.json alone with --random-weights; it fits no single GPU, so --full-max-memory
   is required (e.g. "0=130GiB,cpu=100GiB" on one H200: the layers past the GPU budget are offloaded
   to pinned host memory).

Usage (GPU machine, transformers 5.x):
  python3 bench/glm4_moe_bench.py --extract build-gpu/extractor/extract [--work /tmp/glm4-moe-bench]
          [--iters 4] [--json-out glm4_moe_bench.json] [--full --full-max-memory 0=130GiB,cpu=100GiB]
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
    """config.json of zai-org/GLM-4.5-Air (the keys extract reads): REAL_SHAPES' entry with all 46
    layers and the multi-token-prediction layer it declares (not run)."""
    return benchlib.released_config(parity.REAL_SHAPES["glm4_moe"], num_hidden_layers=46, num_nextn_predict_layers=1,
                                    model_type="glm4_moe", architectures=["Glm4MoeForCausalLM"], hidden_act="silu",
                                    torch_dtype="bfloat16")


def main():
    ap = family_parser("/tmp/glm4-moe-bench")
    ap.add_argument("--full", action="store_true", help="also run the full 46-layer shape (needs --full-max-memory)")
    ap.add_argument("--full-max-memory", default=None, help="--max-memory for the full-shape run, e.g. 0=130GiB,cpu=100GiB")
    args = ap.parse_args()
    if args.full and not args.full_max_memory:
        ap.error("--full: GLM-4.5-Air is 212 GB in bf16 and fits no single GPU; give --full-max-memory")
    ids, ids_path, results = family_workload(args, parity.REAL_SHAPES["glm4_moe"]["vocab_size"])

    # 1. Real-shape 3-layer model (dense + MoE), ours vs HF on the same files.
    mdir = os.path.join(args.work, "glm-4.5-air-3layers")
    real_shape_checkpoint("glm4_moe", mdir)
    versus_hf(args.extract, mdir, ids, ids_path, args.iters, BATCH, SEQ_LEN, results)

    # 2. Full shape from config.json alone, random weights, offloaded past the GPU budget.
    if args.full:
        full_shape(args.extract, os.path.join(args.work, "glm-4.5-air-config"), released_config(), ids_path, BATCH * args.iters,
                   ["--random-weights", "--max-memory", args.full_max_memory], results, "glm45_air_full",
                   f"glm45_air_full (46 layers, random weights, {results['device']})")

    table_versus_hf("GLM-4.5-Air shape, 3 layers, 2x2048 tokens, bf16", results)
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
