#!/usr/bin/env python3
"""Where one OLMoE-1B-7B-shaped layer spends its time: HF transformers' layer against the aten op
sequence `extract` issued before its fused CUDA kernels (v0 in bench/NOTES-extract-perf.md: bf16
index_add combine, MoE in 4096-token chunks), op by op and as variants. It is the record of how the
kernels were chosen; the kernels themselves are measured by bench/extract_bench.py and checked by
tests/gpu.

Not a benchmark of record (bench/extract_bench.py is): a lab that times candidate changes in one
device call, so each change to ops.cpp is predicted and checked here first. Method and the log
of outcomes: bench/NOTES-extract-perf.md.

Shape: 4 x 2048 tokens, hidden 2048, 16 heads x 128, 64 experts top-8, expert width 1024, bf16.
Prints a table of medians (CUDA events, 20 repeats after warm-up); writes kernel tables to --out.
"""
import argparse
import inspect
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

B, T, H, NH, D, E, K, I = 4, 2048, 2048, 16, 128, 64, 8, 1024
dev, dt = "cuda", torch.bfloat16
N = B * T


def bench(fn, reps=20, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def rn(*shape, scale=0.02):
    return torch.randn(*shape, device=dev, dtype=dt) * scale


# ---- the extractor's op sequence before the fused kernels (extractor/ops.cpp at v0) ----

def rms_norm(x, w, eps):
    x32 = x.float()
    var = x32.pow(2).mean(-1, keepdim=True)
    return w * (x32 * torch.rsqrt(var + eps)).to(x.dtype)


def rms_norm_fused(x, w, eps):
    return F.rms_norm(x, (x.size(-1),), w, eps)


def rope_tables():
    inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    pos = torch.arange(T, device=dev, dtype=torch.float32)
    fr = pos[:, None] * inv.to(dev)[None, :]
    emb = torch.cat([fr, fr], -1)
    return emb.cos().to(dt), emb.sin().to(dt)


def apply_rope(x, cos, sin):
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def attention(a, w, cos, sin, fused_qkv=False, norm=rms_norm):
    if fused_qkv:
        q, k, v = F.linear(a, w["qkv"]).split(H, -1)
    else:
        q, k, v = F.linear(a, w["q"]), F.linear(a, w["k"]), F.linear(a, w["v"])
    q = norm(q, w["qn"], 1e-5)
    k = norm(k, w["kn"], 1e-5)
    q = q.view(B, T, NH, D)
    k = k.view(B, T, NH, D)
    v = v.view(B, T, NH, D)
    q = apply_rope(q.transpose(1, 2), cos, sin)
    k = apply_rope(k.transpose(1, 2), cos, sin)
    v = v.transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(o.transpose(1, 2).reshape(B, T, H), w["o"])


def moe_tokens(x, w, combine="index_add"):
    n = x.size(0)
    logits = F.linear(x, w["router"])
    probs = torch.softmax(logits, -1, dtype=torch.float32)
    top_w, top_i = torch.topk(probs, K, -1)
    expert_of_slot = top_i.reshape(-1)
    token_of_slot = torch.arange(n, device=dev).unsqueeze(1).expand(n, K).reshape(-1)
    perm = torch.sort(expert_of_slot, stable=True)[1]
    token_sorted = token_of_slot.index_select(0, perm)
    weight_sorted = top_w.reshape(-1).index_select(0, perm)
    xs = x.index_select(0, token_sorted)
    counts = torch.histc(expert_of_slot.float(), E, 0, E - 1)
    offs = counts.cumsum(0).to(torch.int32)
    gu = torch._grouped_mm(xs, w["gate_up"].transpose(1, 2), offs)
    act = F.silu(gu[:, :I]) * gu[:, I:]
    out = torch._grouped_mm(act, w["down"].transpose(1, 2), offs)
    out.mul_(weight_sorted.unsqueeze(-1))
    if combine == "gather":
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=dev)
        return out.index_select(0, inv).view(n, K, H).sum(1)
    y = torch.zeros(n, H, device=dev, dtype=dt)
    y.index_add_(0, token_sorted, out)
    return y


def moe(m, w, chunk_rows=32768, combine="index_add"):
    x = m.reshape(-1, H)
    chunk = N if chunk_rows <= 0 else max(1, chunk_rows // K)
    if N <= chunk:
        return moe_tokens(x, w, combine).view(m.shape)
    return torch.cat([moe_tokens(x[s:s + chunk], w, combine) for s in range(0, N, chunk)], 0).view(m.shape)


def layer(h, w, cos, sin, sink, **kw):
    norm = kw.get("norm", rms_norm)
    a = norm(h, w["ln1"], 1e-5)
    sink(a)
    h = h + attention(a, w, cos, sin, kw.get("fused_qkv", False), norm)
    m = norm(h, w["ln2"], 1e-5)
    sink(m)
    return h + moe(m, w, kw.get("chunk_rows", 32768), kw.get("combine", "index_add"))


class AbsmaxSink:
    """Mirror of extractor/sinks/absmax_sink.cpp (the bench's sink)."""

    def __init__(self):
        self.m, self.c = None, None

    def __call__(self, x):
        flat = x.reshape(-1, x.size(-1)).abs()
        m = flat.max(0)[0].float()
        c = (flat >= 6).sum()
        self.m = m if self.m is None else torch.maximum(self.m, m)
        self.c = c if self.c is None else self.c + c


def kernel_table(fn, path, label):
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90)
    with open(path, "a") as f:
        f.write(f"\n===== {label} =====\n{table}\n")
    # GPU busy time = sum of kernel times; the gap to wall time is idle (launch-bound) time.
    busy_us = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA)
    return busy_us / 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/lab"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    rows = []

    def add(name, ms, note=""):
        rows.append((name, ms, note))
        print(f"{name:55s} {ms:8.3f} ms  {note}", flush=True)

    # ceilings
    big = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    big2 = torch.empty_like(big)
    ms = bench(lambda: big2.copy_(big))
    add("ceiling: 1 GiB d2d copy", ms, f"{2 * (1 << 30) / ms / 1e6:.0f} GB/s (read+write)")
    del big, big2
    a_, b_ = rn(8192, 8192, scale=1), rn(8192, 8192, scale=1)
    ms = bench(lambda: a_ @ b_)
    add("ceiling: bf16 8192^3 matmul", ms, f"{2 * 8192 ** 3 / ms / 1e9:.0f} TFLOP/s")
    del a_, b_

    w = dict(q=rn(H, H), k=rn(H, H), v=rn(H, H), o=rn(H, H), qn=1 + rn(H), kn=1 + rn(H), ln1=1 + rn(H), ln2=1 + rn(H),
             router=rn(E, H), gate_up=rn(E, 2 * I, H), down=rn(E, H, I))
    w["qkv"] = torch.cat([w["q"], w["k"], w["v"]], 0)
    cos, sin = rope_tables()
    h = rn(B, T, H, scale=1.0)
    x = rn(N, H, scale=1.0)

    # single ops
    add("rms_norm (extract: 6 kernels, HF rounding)", bench(lambda: rms_norm(h, w["ln1"], 1e-5)))
    add("rms_norm (F.rms_norm fused)", bench(lambda: rms_norm_fused(h, w["ln1"], 1e-5)))
    r1, r2 = rms_norm(h, w["ln1"], 1e-5), rms_norm_fused(h, w["ln1"], 1e-5)
    add("rms_norm fused vs HF rounding: max |diff| / elements differing", 0.0,
        f"{(r1.float() - r2.float()).abs().max().item():.3e} / {(r1 != r2).float().mean().item():.4f}")
    add("q,k,v: three linears", bench(lambda: (F.linear(h, w["q"]), F.linear(h, w["k"]), F.linear(h, w["v"]))))
    add("q,k,v: one fused linear", bench(lambda: F.linear(h, w["qkv"]).split(H, -1)))
    q = rn(B, NH, T, D, scale=1)
    add("apply_rope on q", bench(lambda: apply_rope(q, cos, sin)))
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for be in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel([be]):
                ms = bench(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))
            add(f"sdpa causal {be.name}", ms, f"{4 * B * NH * T * T * D / 2 / ms / 1e9:.0f} TFLOP/s")
        except Exception as e:
            add(f"sdpa causal {be.name}", float("nan"), str(e)[:80])
    ms = bench(lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True))
    add("sdpa causal default choice", ms)
    a_attn = rn(B, T, H, scale=1)
    add("attention block (extract)", bench(lambda: attention(a_attn, w, cos, sin)))
    add("attention block, fused qkv", bench(lambda: attention(a_attn, w, cos, sin, True)))
    try:
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            add("attention block, fused qkv + cudnn sdpa", bench(lambda: attention(a_attn, w, cos, sin, True)))
    except Exception as e:
        add("attention block, fused qkv + cudnn sdpa", float("nan"), str(e)[:80])

    # MoE
    S = N * K
    xs = rn(S, H, scale=1)
    offs = (torch.arange(1, E + 1, device=dev) * (S // E)).to(torch.int32)
    ms = bench(lambda: torch._grouped_mm(xs, w["gate_up"].transpose(1, 2), offs))
    add("grouped_mm gate_up alone (S=65536, balanced)", ms, f"{2 * S * H * 2 * I / ms / 1e9:.0f} TFLOP/s")
    act = rn(S, I, scale=1)
    ms = bench(lambda: torch._grouped_mm(act, w["down"].transpose(1, 2), offs))
    add("grouped_mm down alone", ms, f"{2 * S * I * H / ms / 1e9:.0f} TFLOP/s")
    add("moe (extract: chunk 4096 tokens, index_add)", bench(lambda: moe(x.view(B, T, H), w)))
    add("moe no chunk, index_add", bench(lambda: moe(x.view(B, T, H), w, 0)))
    add("moe chunk 4096, gather combine", bench(lambda: moe(x.view(B, T, H), w, 32768, "gather")))
    add("moe no chunk, gather combine", bench(lambda: moe(x.view(B, T, H), w, 0, "gather")))
    ya, yb = moe(x.view(B, T, H), w), moe(x.view(B, T, H), w, 0, "gather")
    add("moe gather vs index_add: rel err", 0.0, f"{((ya.float() - yb.float()).norm() / ya.float().norm()).item():.3e}")

    # whole layer
    sink = AbsmaxSink()
    add("layer (extract as built)", bench(lambda: layer(h, w, cos, sin, sink)))
    add("layer, fused qkv + no chunk + gather", bench(lambda: layer(h, w, cos, sin, sink, fused_qkv=True, chunk_rows=0, combine="gather")))
    add("layer, + F.rms_norm", bench(lambda: layer(h, w, cos, sin, sink, fused_qkv=True, chunk_rows=0, combine="gather", norm=rms_norm_fused)))
    busy = kernel_table(lambda: layer(h, w, cos, sin, sink), os.path.join(args.out, "kernels.txt"), "extract layer")
    add("layer (extract): sum of kernel times", busy)

    # HF's own layer (transformers installed on the device)
    try:
        import transformers
        from transformers import OlmoeConfig
        from transformers.models.olmoe import modeling_olmoe as mo
        with open(os.path.join(args.out, "hf_source.txt"), "w") as f:
            f.write(f"transformers {transformers.__version__}\n")
            for obj in (mo.OlmoeSparseMoeBlock, getattr(mo, "OlmoeExperts", None), mo.OlmoeRMSNorm, mo.OlmoeAttention):
                if obj is not None:
                    f.write(inspect.getsource(obj) + "\n")
            try:
                from transformers.integrations import moe as imoe
                f.write(inspect.getsource(imoe))
            except Exception as e:
                f.write(f"no integrations.moe: {e}\n")
        cfg = OlmoeConfig(vocab_size=1024, hidden_size=H, intermediate_size=I, num_hidden_layers=1, num_attention_heads=NH,
                          num_key_value_heads=NH, num_experts=E, num_experts_per_tok=K, norm_topk_prob=False,
                          max_position_embeddings=4096, rms_norm_eps=1e-5)
        cfg._attn_implementation = "sdpa"
        torch.set_default_dtype(dt)
        with torch.device(dev):
            model = mo.OlmoeModel(cfg).to(dt).eval()
        torch.set_default_dtype(torch.float32)
        print("HF experts implementation:", getattr(model.config, "_experts_implementation", "?"), flush=True)
        caps = []
        for lyr in model.layers:
            lyr.input_layernorm.register_forward_hook(lambda m_, i_, o_: caps.append(o_))
            lyr.post_attention_layernorm.register_forward_hook(lambda m_, i_, o_: caps.append(o_))
        hl = model.layers[0]
        pos = torch.arange(T, device=dev).unsqueeze(0).expand(B, T)
        pe = model.rotary_emb(h, pos)
        with torch.inference_mode():
            def hf_layer():
                caps.clear()
                return hl(h, position_embeddings=pe, attention_mask=None, position_ids=pos)
            add("layer (HF transformers, hooks)", bench(hf_layer))
            busy = kernel_table(hf_layer, os.path.join(args.out, "kernels.txt"), "HF layer")
            add("layer (HF): sum of kernel times", busy)
    except Exception as e:
        import traceback
        traceback.print_exc()
        add("HF layer", float("nan"), str(e)[:100])

    with open(os.path.join(args.out, "lab.json"), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, rows=rows), f, indent=1)
    print("\n| what | ms | note |\n|---|---|---|")
    for name, ms, note in rows:
        print(f"| {name} | {ms:.3f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
