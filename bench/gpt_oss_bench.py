#!/usr/bin/env python3
"""gpt_oss benchmark: `extract run` (MXFP4 experts kept packed, and --dequantize) against Hugging Face
transformers, measured in the same run, plus gpt-oss-120b's full shape on one GPU.

1. Real-shape 2-layer model: 2 decoder layers of openai/gpt-oss-20b's config (hidden 2880, 64 heads,
   8 kv heads, head_dim 64, 32 experts top-4 of width 2880, vocab 201088; layer 0 sliding window 128,
   layer 1 full), random weights N(0, 0.02), experts written as MXFP4 in the released layout by
   tests/parity/extract_parity.py (build + write_mxfp4_experts). Workload: 2 x 2048 tokens a batch,
   ln_attn and ln_mlp of both layers captured.
     ours:  extract --absmax --warmup 1 over --iters batches: packed experts (default), packed on the
            ATen path (EXTRACTOR_FUSED=0) and --dequantize (bf16 experts, the comparison path).
     HF:    from_pretrained(dtype=bf16, attn_implementation="eager", quantization_config=
            Mxfp4Config(dequantize=True)) on the GPU (bf16 experts: HF without MXFP4 kernels), forward
            hooks keeping every capture on the GPU, model.model(...) without lm_head, 1 warm-up + N passes.
   tokens/s, load seconds, peak GPU memory (allocator reserved; extract also device-level).
2. gpt-oss-120b full shape (36 layers, 128 experts): config.json only, `extract run --random-weights`
   (weights generated on the GPU: MXFP4 blocks uniform over all codes, scales 2^-8..2^-6, about 64 GB
   packed, no disk), 2 x 2048 tokens a batch: tokens/s, weights and peak memory on one GPU. Skip
   with --no-120b. --full-20b adds the same for gpt-oss-20b (24 layers, 32 experts).

Usage (GPU machine, transformers 5.x): python3 bench/gpt_oss_bench.py --extract build-gpu/extractor/extract
           [--work /tmp/gpt-oss-bench] [--iters 4] [--json-out gpt_oss_bench.json] [--no-120b] [--full-20b]
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import (BATCH, SEQ_LEN, family_parser, family_workload, full_shape, real_shape_checkpoint,  # noqa: E402
                      table_versus_hf, versus_hf, write_json)


def released_config(layers, experts):
    """config.json of openai/gpt-oss-20b (24 layers, 32 experts) / gpt-oss-120b (36, 128), the keys extract reads."""
    return {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "vocab_size": 201088, "hidden_size": 2880,
        "intermediate_size": 2880, "num_hidden_layers": layers, "num_attention_heads": 64, "num_key_value_heads": 8,
        "head_dim": 64, "num_local_experts": experts, "num_experts_per_tok": 4, "experts_per_token": 4,
        "max_position_embeddings": 131072, "initial_context_length": 4096, "rms_norm_eps": 1e-5,
        "sliding_window": 128, "layer_types": ["sliding_attention" if l % 2 == 0 else "full_attention" for l in range(layers)],
        "attention_bias": True, "swiglu_limit": 7.0, "hidden_act": "silu", "tie_word_embeddings": False,
        "rope_theta": 150000, "torch_dtype": "bfloat16",
        "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                         "original_max_position_embeddings": 4096, "truncate": False},
        "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
    }


def main():
    ap = family_parser("/tmp/gpt-oss-bench")
    ap.add_argument("--no-120b", action="store_true")
    ap.add_argument("--full-20b", action="store_true")
    args = ap.parse_args()
    ids, ids_path, results = family_workload(args, 201088, gpus=False)

    # 1. Real-shape 2-layer model, ours vs HF on the same MXFP4 file.
    mdir = os.path.join(args.work, "gpt-oss-20b-2layers")
    real_shape_checkpoint("gpt_oss", mdir, written="model.safetensors")
    variants = {"extract_packed": ([], None), "extract_packed_aten": ([], {"EXTRACTOR_FUSED": "0"}),
                "extract_dequantize": (["--dequantize"], None)}

    def hf_kwargs():
        from transformers import Mxfp4Config
        return dict(attn_implementation="eager", quantization_config=Mxfp4Config(dequantize=True))

    versus_hf(args.extract, mdir, ids, ids_path, args.iters, BATCH, SEQ_LEN, results,
              hf_label="hf (Mxfp4Config(dequantize=True), eager)", variants=variants, hf_kwargs=hf_kwargs)

    # 2. Full shapes from config.json alone, random packed weights made on the GPU.
    full = [] if args.no_120b else [("gpt_oss_120b", 36, 128)]
    if args.full_20b:
        full.insert(0, ("gpt_oss_20b", 24, 32))
    for name, layers, experts in full:
        full_shape(args.extract, os.path.join(args.work, name + "-config"), released_config(layers, experts), ids_path,
                   BATCH * args.iters, ["--random-weights"], results, name, f"{name} (full shape, random MXFP4 weights, packed)")

    table_versus_hf("gpt-oss-20b shape, 2 layers, 2x2048 tokens, bf16", results, names=tuple(variants))
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
