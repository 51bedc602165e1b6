"""What the GPU benchmarks share: running `extract run` and Hugging Face transformers on the same
checkpoint and workload (extract_bench, hf_bench), one line per result (show), writing the results
(write_json), and the per-family benches' common shape (glm4_moe, qwen3_next, mixtral, gpt_oss):
their command line (family_parser), workload (family_workload), real-shape checkpoint
(real_shape_checkpoint), a released config.json (released_config), ours-vs-HF runs and table (versus_hf, table_versus_hf) and full-shape runs
from config.json alone (full_shape). Imported from the scripts' own folder (they put it on sys.path).
"""
import argparse
import gc
import glob
import json
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
GiB = 1 << 30
# The per-family benches' workload: 2 sequences of 2048 tokens a batch.
BATCH, SEQ_LEN = 2, 2048
# versus_hf's default variants: name -> (extra arguments, environment): the default path (fused
# kernels where built) and the ATen path.
EXTRACT_VARIANTS = {"extract": ([], None), "extract_aten": ([], {"EXTRACTOR_FUSED": "0"})}
# More variants from the environment, for a lab run of one knob inside a bench: a JSON object of
# name -> environment, e.g. BENCH_VARIANTS='{"extract_per_expert": {"EXTRACTOR_EXPERT_MATMULS": "per_expert"}}'.
EXTRACT_VARIANTS.update({name: ([], env) for name, env in json.loads(os.environ.get("BENCH_VARIANTS", "{}")).items()})
if os.environ.get("BENCH_NO_ATEN") == "1":  # a short lease: the fused path and the extra variants only
    del EXTRACT_VARIANTS["extract_aten"]


def write_json(path, results, indent=2):
    """results as JSON to path (--json-out); nothing without a path."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=indent)


def hf_bench(model_dir, ids, iters, **load_kwargs):
    """HF forward with capture hooks, timed as extract_bench; load_kwargs go to from_pretrained
    (gpt_oss_bench passes eager attention and Mxfp4Config(dequantize=True))."""
    from transformers import AutoModelForCausalLM
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda", **load_kwargs)
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    model.eval()
    caps = []
    for layer in model.model.layers:
        layer.input_layernorm.register_forward_hook(lambda m, i, o: caps.append(o))
        layer.post_attention_layernorm.register_forward_hook(lambda m, i, o: caps.append(o))
    ids = ids.cuda()
    with torch.inference_mode():
        model.model(input_ids=ids)
        caps.clear()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            model.model(input_ids=ids)
            caps.clear()  # keep only one batch of captures alive, as a streaming consumer would
        torch.cuda.synchronize()
        fwd_s = time.perf_counter() - t0
    res = dict(load_s=load_s, tokens_per_s=ids.numel() * iters / fwd_s, peak_reserved_bytes=torch.cuda.max_memory_reserved(),
               peak_allocated_bytes=torch.cuda.max_memory_allocated(), experts_implementation=str(
                   getattr(model.config, "_experts_implementation", "?")),
               attn_implementation=str(getattr(model.config, "_attn_implementation", "?")))
    experts = getattr(getattr(model.model.layers[0], "mlp", None), "experts", None)
    if experts is not None and hasattr(experts, "gate_up_proj"):
        res["experts_dtype"] = str(experts.gate_up_proj.dtype)
    del model, caps
    gc.collect()
    torch.cuda.empty_cache()
    return res


def show(name, r):
    if "error" in r:
        print(f"{name}: failed: {r['error'][-800:]}", flush=True)
        return
    mem = r.get("allocator_reserved_bytes_peak", r.get("peak_reserved_bytes", 0)) / GiB
    extra = ""
    if "gpu_used_bytes_peak" in r:
        extra = f", device-level peak {(r['gpu_used_bytes_peak'] - r.get('gpu_used_bytes_baseline', 0)) / GiB:.2f} GiB"
    w = f", weights {r['weights_bytes'] / GiB:.2f} GiB" if "weights_bytes" in r else ""
    print(f"{name}: {r['tokens_per_s']:.0f} tokens/s, load {r['load_s']:.2f} s{w}, allocator reserved peak {mem:.2f} GiB{extra}",
          flush=True)


def extract_bench(exe, model_dir, ids_path, seqs, batch, seq_len, extra, env=None):
    cmd = [exe, "run", model_dir, "--tokens", ids_path, "--seq-len", str(seq_len), "--num-sequences", str(seqs),
           "--batch-size", str(batch), "--dtype", "bf16", "--device", "cuda", "--absmax", "--warmup", "1", "--json"] + extra
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    wall = time.perf_counter() - t0
    sys.stderr.write(r.stderr[-3000:])
    if r.returncode != 0:
        raise RuntimeError(f"extract failed ({r.returncode}): {r.stderr[-2000:]}")
    out = json.loads(r.stdout)
    out.pop("absmax", None)
    out["process_wall_s"] = wall
    return out


def family_parser(work):
    """The per-family benches' command line: --extract, --work (default `work`), --iters, --json-out;
    each bench adds its own options after these."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--extract", required=True)
    ap.add_argument("--work", default=work)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--json-out", default=None)
    return ap


def released_config(real_shape, **keys):
    """A released model's config.json from its tests/parity REAL_SHAPES entry: `keys` added (all
    layers, model_type, ...) and rope_parameters given as config.json has them (rope_theta,
    partial_rotary_factor)."""
    c = dict(real_shape, **keys)
    rope = c.pop("rope_parameters")
    c.update(rope_theta=rope["rope_theta"], partial_rotary_factor=rope["partial_rotary_factor"])
    return c


def family_workload(args, vocab, gpus=True):
    """Makes args.work and writes ids.json there: (iters + 1) batches of BATCH x SEQ_LEN token ids
    below vocab (seed 7). Returns (ids, ids_path, results), results starting with the device, the
    GPU count (where gpus) and the torch version."""
    os.makedirs(args.work, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (BATCH * (args.iters + 1), SEQ_LEN), generator=g)
    ids_path = os.path.join(args.work, "ids.json")
    with open(ids_path, "w") as f:
        json.dump(ids.tolist(), f)
    if gpus:
        results = dict(device=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(), torch=torch.__version__)
    else:
        results = dict(device=torch.cuda.get_device_name(0), torch=torch.__version__)
    return ids, ids_path, results


def real_shape_checkpoint(family, model_dir, written="*.safetensors"):
    """tests/parity/extract_parity.py's real-shape checkpoint of family in model_dir (built on the GPU
    unless a file matching `written` is there), then the GPU memory it used handed back."""
    if not glob.glob(os.path.join(model_dir, written)):
        sys.path.insert(0, os.path.join(HERE, "..", "tests", "parity"))
        import extract_parity as parity  # needs transformers (GPU image)
        parity.build(family, model_dir, seed=11, real_shapes=True, device="cuda")
    gc.collect()
    torch.cuda.empty_cache()


def versus_hf(exe, model_dir, ids, ids_path, iters, batch, seq_len, results, hf_label="hf", variants=None, hf_kwargs=None):
    """The per-family benches' comparison on one checkpoint: extract in each of `variants` (name ->
    (extra arguments, environment); EXTRACT_VARIANTS by default), then HF (hf_bench) on the same
    files and the first batch of ids, with the from_pretrained keyword arguments hf_kwargs() returns
    (called inside the try, so a failed import is HF's error); each result (or its error) goes into
    results and is shown."""
    for name, (extra, env) in (variants or EXTRACT_VARIANTS).items():
        try:
            results[name] = extract_bench(exe, model_dir, ids_path, batch * iters, batch, seq_len, extra, env)
        except Exception as e:
            results[name] = dict(error=str(e))
        show(name, results[name])
    try:
        results["hf"] = hf_bench(model_dir, ids[:batch], iters, **(hf_kwargs() if hf_kwargs else {}))
    except Exception as e:
        results["hf"] = dict(error=str(e))
    show(hf_label, results["hf"])


def table_versus_hf(title, results, names=tuple(EXTRACT_VARIANTS)):
    """Markdown rows of tokens/s and the ratio to HF for versus_hf's results, one per name and HF's
    (nothing unless the first name and HF both have a figure)."""
    hf = results.get("hf", {})
    if "tokens_per_s" not in results.get(names[0], {}) or "tokens_per_s" not in hf:
        return
    print(f"\n| {title} | tokens/s | vs HF |")
    print("|---|---|---|")
    for name in tuple(names) + ("hf",):
        r = results.get(name, {})
        if "tokens_per_s" in r:
            print(f"| {name} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / hf['tokens_per_s']:.2f}x |")


def full_shape(exe, config_dir, config, ids_path, seqs, extra, results, name, label):
    """A full-shape run from config.json alone (written into config_dir): extract with `extra`
    (--random-weights, ...) over seqs sequences of the workload; its result (or error) goes into
    results[name] and is shown as `label`."""
    os.makedirs(config_dir, exist_ok=True)
    with open(os.path.join(config_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    try:
        results[name] = extract_bench(exe, config_dir, ids_path, seqs, BATCH, SEQ_LEN, extra)
    except Exception as e:
        results[name] = dict(error=str(e))
    show(label, results[name])
