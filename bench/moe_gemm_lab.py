#!/usr/bin/env python3
"""Expert matmuls at the real shapes of Mixtral-8x7B, GLM-4.5-Air and Qwen3-Next-80B: torch's
grouped matmul (what extract's fused MoE path calls) against one cuBLAS matmul per expert (what
the group sizes read back to the host would allow), and against one dense matmul of the same
rows (the ceiling: every routed row through a single weight).

A lab, not a benchmark of record (bench/mixtral_bench.py and the family benches are): it decides
whether the expert path should switch to per-expert matmuls for few, wide experts. Routing is
uniform random top-k over 2 x 2048 tokens, as a random-weight router gives.

Usage (GPU machine): python3 bench/moe_gemm_lab.py [--json-out lab.json]
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from extract_layer_lab import bench as timed  # noqa: E402  (median of CUDA-event timings)

# name: hidden, expert width, experts, top-k (the released config.json files)
SHAPES = {
    "mixtral": (4096, 14336, 8, 2),
    "glm4_moe": (4096, 1408, 128, 8),
    "qwen3_next": (2048, 512, 512, 10),
}
TOKENS = 2 * 2048


def lab(name, H, I, E, K):
    dev, dt = "cuda", torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)
    gate_up = torch.randn(E, 2 * I, H, device=dev, dtype=dt, generator=g) * 0.02
    down = torch.randn(E, H, I, device=dev, dtype=dt, generator=g) * 0.02
    S = TOKENS * K
    expert = torch.rand(TOKENS, E, device=dev, generator=g).topk(K, -1).indices.reshape(-1)
    counts = torch.bincount(expert, minlength=E)
    offs = counts.cumsum(0).to(torch.int32)
    xs = torch.randn(S, H, device=dev, dtype=dt, generator=g)
    act = torch.randn(S, I, device=dev, dtype=dt, generator=g)
    sizes = counts.tolist()
    rows = {}

    def grouped():
        torch._grouped_mm(xs, gate_up.transpose(1, 2), offs)
        torch._grouped_mm(act, down.transpose(1, 2), offs)

    def per_expert(sync):
        c = counts.tolist() if sync else sizes  # sync: the group sizes read back first
        start = 0
        for e, n in enumerate(c):
            if n:
                F.linear(xs[start:start + n], gate_up[e])
                F.linear(act[start:start + n], down[e])
            start += n

    def per_expert_out(sync):
        # As extract would run it: outputs written into one [S,2I] / [S,H] buffer in place.
        c = counts.tolist() if sync else sizes
        gu = torch.empty(S, 2 * I, device=dev, dtype=dt)
        out = torch.empty(S, H, device=dev, dtype=dt)
        start = 0
        for e, n in enumerate(c):
            if n:
                torch.mm(xs[start:start + n], gate_up[e].t(), out=gu[start:start + n])
                torch.mm(act[start:start + n], down[e].t(), out=out[start:start + n])
            start += n

    def dense():
        F.linear(xs, gate_up[0])
        F.linear(act, down[0])

    flop = 2 * S * H * 2 * I + 2 * S * I * H
    for label, fn in [("grouped_mm", grouped), ("per-expert mm (sizes known)", lambda: per_expert(False)),
                      ("per-expert mm + size readback", lambda: per_expert(True)),
                      ("per-expert mm into buffers + readback", lambda: per_expert_out(True)),
                      ("one dense matmul (ceiling)", dense)]:
        if E > 64 and label.startswith("per-expert"):
            continue  # hundreds of tiny launches: not a candidate
        ms = timed(fn)
        rows[label] = dict(ms=ms, tflops=flop / ms / 1e9)
        print(f"{name:10s} {label:40s} {ms:8.3f} ms {flop / ms / 1e9:6.0f} TFLOP/s", flush=True)
    gu_ms = timed(lambda: torch._grouped_mm(xs, gate_up.transpose(1, 2), offs))
    dn_ms = timed(lambda: torch._grouped_mm(act, down.transpose(1, 2), offs))
    print(f"{name:10s} grouped_mm gate_up {gu_ms:.3f} ms, down {dn_ms:.3f} ms; rows per expert min/max "
          f"{min(sizes)}/{max(sizes)}", flush=True)
    rows["grouped_gate_up_ms"], rows["grouped_down_ms"] = gu_ms, dn_ms
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--json-out")
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__)
    result = {n: lab(n, *SHAPES[n]) for n in args.shapes.split(",")}
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
