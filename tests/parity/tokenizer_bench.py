#!/usr/bin/env python3
"""Encode speed: our tokenizer (tokenize_ids --bench, one thread) against HF tokenizers'
`Tokenizer.encode` (one thread: RAYON_NUM_THREADS=1) on the same text and tokenizer.json, in the same
run. Prints tokens/s for both (cold cache = first run, warm = best of the rest) and the ratio.

  python3 tests/parity/tokenizer_bench.py --tokenize-ids build/tests/extractor/tokenizer/tokenize_ids \
      --text big.txt .cache/tokenizers/qwen3/tokenizer.json [more tokenizer.json ...]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenize-ids", required=True)
    ap.add_argument("--text", required=True, help="a large UTF-8 text file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-hf", action="store_true", help="time only ours (no HF tokenizers installed)")
    ap.add_argument("tokenizer_json", nargs="+")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    with open(args.text, encoding="utf-8", errors="replace", newline="") as f:  # keep \r as is, like ours
        text = f.read()
    rows = []
    for path in args.tokenizer_json:
        pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
        res = subprocess.run(pin + [args.tokenize_ids, path, args.text, "--bench", "--repeat", str(args.repeat)],
                             capture_output=True, check=True)
        ours = json.loads(res.stdout)
        row = {"tokenizer": path, "bytes": ours["bytes"], "tokens": ours["tokens"],
               "ours_cold_tokens_per_s": ours["runs"][0]["tokens_per_s"],
               "ours_warm_tokens_per_s": max(r["tokens_per_s"] for r in ours["runs"][1:] or ours["runs"])}
        if not args.no_hf:
            import tokenizers
            tok = tokenizers.Tokenizer.from_file(path)
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                n = len(tok.encode(text, add_special_tokens=False).ids)
                times.append(time.perf_counter() - t0)
            row["hf_tokens"] = n
            row["hf_cold_tokens_per_s"] = n / times[0]
            row["hf_warm_tokens_per_s"] = n / min(times[1:] or times)
            row["ratio_warm_ours_over_hf"] = row["ours_warm_tokens_per_s"] / row["hf_warm_tokens_per_s"]
        rows.append(row)
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
