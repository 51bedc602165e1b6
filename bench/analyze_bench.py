#!/usr/bin/env python3
"""Benchmark the analysis (`analyze extract`, fused on the GPU) against the predecessor's method, in one run.

Model: random weights in OLMoE-1B-7B's shape (16 layers, hidden 2048, 64 experts top-8, expert width 1024,
vocab 50304; config from bench/extract_bench.py), written as bf16 safetensors shards, with the layer-norm gains of
a few dims planted (x30 in layers 0-11) so that outlier features exist and both sides have real hits to count.
Inputs: 16 sequences x 2048 random token ids, the same for both sides.

  overhead:    forward time of `analyze extract` (streaming statistics as an extra sink, on the GPU) over the
               same command with --baseline (a sink that takes nothing: the bare forward pass). Both with
               --warmup 1; extract's forward_s. Target <= 10 %.
  end to end:  wall time of one `analyze extract -o DIR -- run MODEL ...` process (load, extract, analyse, write
               statistics + outliers.json + report.md; plots when gnuplot is there) vs the predecessor's method
               reproduced: HF transformers model loaded once, per sequence (batch 1) a forward pass with hooks on
               input_layernorm / post_attention_layernorm whose outputs are cast to bf16, copied to the CPU and
               torch.save'd one .pt per site (run_*/layer_{i}_{site}_activations.pt + metadata.json), then its
               per-batch analysis (docs/outlier-method.md, "Per-sequence analysis": torch.load each site,
               |x| >= 6, torch.where and a Python loop over hits, systematic criteria) and the run dir deleted;
               results aggregated as in "Aggregation" there. Target >= 20x faster.
  parity:      the predecessor-mode outlier count of ours vs the reproduction's count on the same inputs (the two
               forward passes are different bf16 implementations, so values right at the threshold may differ).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import write_json  # noqa: E402
from extract_bench import olmoe_config, write_olmoe_weights  # noqa: E402  (the extractor benchmark's OLMoE shape and writer)

PLANT_DIMS = (101, 777, 1500)
PLANT_LAYERS = range(0, 12)
PLANT_GAIN = 30.0


# ---- the predecessor's method (docs/outlier-method.md, "Predecessor mode"), reproduced with plain HF hooks ----

def predecessor_analyze_batch(run_dir, layers, threshold=6.0, min_layer=0.25, min_seq=0.06):
    layer_stats = {}
    feature_outliers = defaultdict(list)
    seq_len = None
    for i in layers:
        for kind in ("ln_attn", "ln_mlp"):
            name = f"layer_{i}_{kind}"
            x = torch.load(os.path.join(run_dir, f"{name}_activations.pt"))
            if seq_len is None:
                seq_len = x.shape[1]
            mask = x.abs() >= threshold
            n = int(mask.sum())
            layer_stats[name] = dict(num_outliers=n, max_magnitude=float(x.abs().max()),
                                     outlier_percentage=100.0 * n / x.numel(), shape=list(x.shape))
            b_idx, s_idx, h_idx = torch.where(mask)
            for b, s, h in zip(b_idx, s_idx, h_idx):
                feature_outliers[h.item()].append(dict(layer=name, seq_pos=s.item(), value=x[b, s, h].item()))
    total_layers = len(layer_stats)
    systematic = []
    for h, occ in feature_outliers.items():
        layers_aff = {o["layer"] for o in occ}
        positions = {o["seq_pos"] for o in occ}
        lp, sp = len(layers_aff) / total_layers, len(positions) / seq_len
        if lp >= min_layer and sp >= min_seq:
            systematic.append(dict(feature_dim=h, layer_percentage=lp, seq_percentage=sp,
                                   max_magnitude=max(abs(o["value"]) for o in occ), total_occurrences=len(occ),
                                   layers_affected=sorted(layers_aff), example_values=[o["value"] for o in occ[:5]]))
    systematic.sort(key=lambda d: d["max_magnitude"], reverse=True)
    return dict(systematic_outliers=systematic, total_outlier_features=len(feature_outliers), layer_stats=layer_stats)


def predecessor_run(model_dir, ids, work):
    from transformers import AutoModelForCausalLM
    t_start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda")
    model.eval()
    model.config.use_cache = False
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t_start
    layers = list(range(len(model.model.layers)))
    captured = {}

    def hook(name):
        def fn(module, inputs, output):
            captured[name] = output.detach().to(torch.bfloat16).cpu()  # as the predecessor: bf16 on the CPU
        return fn

    for i, layer in enumerate(model.model.layers):
        layer.input_layernorm.register_forward_hook(hook(f"layer_{i}_ln_attn"))
        layer.post_attention_layernorm.register_forward_hook(hook(f"layer_{i}_ln_mlp"))
    extract_s = analyze_s = 0.0
    all_systematic, batch_results = [], []
    for seq in range(ids.shape[0]):
        t0 = time.perf_counter()
        run_dir = os.path.join(work, f"run_{seq:03d}")
        os.makedirs(run_dir, exist_ok=True)
        with torch.inference_mode():
            model(input_ids=ids[seq:seq + 1].cuda())
        saved = []
        for name, t in captured.items():
            path = os.path.join(run_dir, f"{name}_activations.pt")
            torch.save(t, path)
            saved.append(path)
        captured.clear()
        with open(os.path.join(run_dir, "metadata.json"), "w") as f:
            json.dump(dict(model_name=model_dir, num_sequences=1, layers_extracted=layers, saved_files=saved), f)
        t1 = time.perf_counter()
        res = predecessor_analyze_batch(run_dir, layers)
        shutil.rmtree(run_dir)
        t2 = time.perf_counter()
        extract_s += t1 - t0
        analyze_s += t2 - t1
        all_systematic += res["systematic_outliers"]
        batch_results.append(dict(batch_id=seq, systematic_outliers=len(res["systematic_outliers"]),
                                  total_outlier_features=res["total_outlier_features"]))
    top = {}
    for o in all_systematic:
        d = top.setdefault(o["feature_dim"], dict(feature_dim=o["feature_dim"], max_magnitude=0.0, occurrences=0))
        d["max_magnitude"] = max(d["max_magnitude"], o["max_magnitude"])
        d["occurrences"] += 1
    final = dict(analysis_summary=dict(total_batches=ids.shape[0], total_systematic_outliers=len(all_systematic)),
                 top_features=sorted(top.values(), key=lambda d: -d["max_magnitude"]),
                 all_systematic_outliers=all_systematic, batch_results=batch_results)
    with open(os.path.join(work, "final_analysis_results.json"), "w") as f:
        json.dump(final, f)
    total_s = time.perf_counter() - t_start
    n = len(all_systematic)
    mean_layer = 100 * sum(o["layer_percentage"] for o in all_systematic) / n if n else 0.0
    mean_seq = 100 * sum(o["seq_percentage"] for o in all_systematic) / n if n else 0.0
    del model
    torch.cuda.empty_cache()
    return dict(load_s=load_s, extract_s=extract_s, analyze_s=analyze_s, total_s=total_s, num_outliers=n,
                unique_dims=sorted(top), mean_layer_pct=mean_layer, mean_seq_pct=mean_seq)


# ---- ours ----

def analyze_extract(exe, model_dir, ids_path, seqs, batch, seq_len, out_dir, extra_analyze=(), extra_extract=()):
    cmd = [exe, "extract", "-o", out_dir, *extra_analyze, "--", "run", model_dir, "--tokens", ids_path,
           "--seq-len", str(seq_len), "--num-sequences", str(seqs), "--batch-size", str(batch), "--dtype", "bf16",
           "--device", "cuda", "--json", *extra_extract]
    # stderr is read line by line and each line stamped with the seconds since launch: the timeline
    # says where the end-to-end time goes (start-up, load, first batch, forward, analysis, report).
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout = []
    reader = threading.Thread(target=lambda: stdout.append(p.stdout.read()))
    reader.start()
    timeline = []
    for line in p.stderr:  # text mode: a progress bar's \r redraws arrive as lines of their own
        line = line.rstrip()[:160]
        if not line:
            continue
        stamp = round(time.perf_counter() - t0, 3)
        if timeline and timeline[-1][1][:24] == line[:24]:
            timeline[-1] = (stamp, line)  # a redraw of the same bar: keep when it last moved
        else:
            timeline.append((stamp, line))
    p.wait()
    reader.join()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"analyze extract failed ({p.returncode}): {timeline[-20:]}")
    extract_json, _ = json.JSONDecoder().raw_decode(stdout[0].lstrip())  # extract's JSON, then analyze's table
    extract_json["process_wall_s"] = wall
    extract_json["timeline"] = timeline
    return extract_json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--analyze", required=True, help="the analyze program (built with the extractor)")
    ap.add_argument("--work", default="/tmp/analyze-bench")
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=4, help="ours; the predecessor always ran batch 1")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    mdir = os.path.join(args.work, "olmoe-shape-planted")
    os.makedirs(mdir, exist_ok=True)
    import transformers
    results = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, transformers=transformers.__version__,
                   sequences=args.sequences, seq_len=args.seq_len, planted_dims=list(PLANT_DIMS))
    t0 = time.perf_counter()
    cfg = olmoe_config(mdir)
    results["file_bytes"] = write_olmoe_weights(mdir, cfg, plant=(PLANT_DIMS, PLANT_LAYERS, PLANT_GAIN))
    results["write_s"] = time.perf_counter() - t0
    print(f"wrote {results['file_bytes'] / 1e9:.2f} GB in {results['write_s']:.1f} s", flush=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (args.sequences, args.seq_len), generator=g)
    ids_path = os.path.join(args.work, "ids.json")
    with open(ids_path, "w") as f:
        json.dump(ids.tolist(), f)

    # The predecessor first (it also warms the page cache for both sides' loads).
    pred = predecessor_run(mdir, ids, os.path.join(args.work, "predecessor"))
    results["predecessor"] = pred
    print("predecessor:", json.dumps(pred), flush=True)

    common = (args.analyze, mdir, ids_path, args.sequences, args.batch_size, args.seq_len)
    ours_dir = os.path.join(args.work, "ours")
    results["ours_end_to_end"] = analyze_extract(*common, ours_dir)
    with open(os.path.join(ours_dir, "outliers.json")) as f:
        ours_result = json.load(f)
    results["baseline"] = analyze_extract(*common, os.path.join(args.work, "baseline"), ["--baseline"], ["--warmup", "1"])
    results["fused"] = analyze_extract(*common, os.path.join(args.work, "fused"), [], ["--warmup", "1"])

    e2e, base, fused = results["ours_end_to_end"], results["baseline"], results["fused"]
    summary = ours_result["modes"]["predecessor"]["summary"]
    ours_dims = sorted(f["dim"] for f in ours_result["modes"]["predecessor"]["features"])
    ratios = dict(stats_overhead=fused["forward_s"] / base["forward_s"] - 1.0,
                  end_to_end_speedup=pred["total_s"] / e2e["process_wall_s"])
    results["ratios"] = ratios
    results["parity"] = dict(ours_num_outliers=summary["num_outliers"], predecessor_num_outliers=pred["num_outliers"],
                             ours_dims=ours_dims, predecessor_dims=pred["unique_dims"],
                             ours_mean_layer_pct=summary["mean_layer_pct"], predecessor_mean_layer_pct=pred["mean_layer_pct"],
                             ours_mean_position_pct=summary["mean_position_pct"], predecessor_mean_seq_pct=pred["mean_seq_pct"])
    print("\nend-to-end timeline (s since launch):")
    for t, line in e2e["timeline"]:
        print(f"  {t:7.3f}  {line}")
    print(f"  {e2e['process_wall_s']:7.3f}  (exit)")
    print("\n| metric | ours | peer | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| forward s, {args.sequences}x{args.seq_len} (fused statistics vs bare forward) | {fused['forward_s']:.3f} | "
          f"{base['forward_s']:.3f} | +{100 * ratios['stats_overhead']:.1f} % | <= +10 % |")
    print(f"| end to end s (load, extract, analyse, report) vs predecessor method | {e2e['process_wall_s']:.1f} | "
          f"{pred['total_s']:.1f} (load {pred['load_s']:.1f}, extract+save {pred['extract_s']:.1f}, "
          f"analysis {pred['analyze_s']:.1f}) | {ratios['end_to_end_speedup']:.1f}x faster | >= 20x |")
    print(f"| predecessor-mode outliers (sequence, dim) | {summary['num_outliers']} (dims {ours_dims}) | "
          f"{pred['num_outliers']} (dims {pred['unique_dims']}) | | planted {list(PLANT_DIMS)} |")
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
