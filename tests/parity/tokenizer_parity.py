#!/usr/bin/env python3
"""Tokenizer parity: our C++ tokenizer (via the test-only `tokenize_ids` program) against Hugging Face
`tokenizers.Tokenizer.from_file(...)` on the same tokenizer.json files.

Inputs: every <dir>/<name>/tokenizer.json under --tokenizers (default .cache/tokenizers, filled by
scripts/setup.sh from tests/data/tokenizers.txt), the corpus --corpus (one case per line; a line
starting with a double quote is a JSON string literal), plus --generated N seeded random strings that
mix every Unicode category, HF's whitespace table (docs/checkpoint-formats.md#whitespace), contractions, digits, CJK,
combining marks, emoji, whitespace runs and the tokenizer's own special tokens.

Compares, per tokenizer: encode ids with add_special_tokens=True and False, and decode(encode(x)).
Prints OK / NOT OK per tokenizer and check, with the first mismatch; writes a JSON report with a
versioned header to --out. Exit status 0 only when everything matched.

  python3 tests/parity/tokenizer_parity.py --tokenize-ids build/tests/extractor/tokenizer/tokenize_ids \
      --out /tmp/parity.json --generated 3000
"""
import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile

REPORT_FORMAT = "tokenizer-parity/1"
REFERENCE_FORMAT = "tokenizer-parity-reference/1"


def read_corpus(path):
    cases = []
    with open(path, "rb") as f:
        for raw in f.read().split(b"\n"):
            line = raw.decode("utf-8")
            cases.append(json.loads(line) if line.startswith('"') else line)
    if cases and cases[-1] == "":
        cases.pop()  # the file's final newline
    return cases


HF_SPACES = [chr(c) for c in list(range(0x09, 0x0E)) + [0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B))
             + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]]
NOT_SPACES = ["\u001c", "\u001d", "\u001e", "\u001f", "\u180e", "\u200b", "\ufeff"]
POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "".join(HF_SPACES) + "".join(NOT_SPACES),
    "生活的真谛是日本語漢字かなカタカナ한국어",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "\u0300\u0301\u0302\u0303\u0308\u0327\u036f\u0483\u0591\u093c\u094d\u20d0",
    "😀👍🏽👨‍👩‍👧‍👦🇫🇷❤️🤖\u200d\ufe0f",
    "éñüßÅçøİıſKǅ",
    "²³¹¼½¾٠١٢३४५੦௧Ⅻ①⑩",
]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "'ſ"]


def random_scalar(rng):
    while True:
        cp = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0x7FF), rng.randint(0x800, 0xFFFF),
                         rng.randint(0x10000, 0x10FFFF)])
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def generate(n, specials, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.55:
                pool = rng.choice(POOLS)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
            elif r < 0.65:
                parts.append(rng.choice(CONTRACTIONS))
            elif r < 0.75:
                parts.append(rng.choice(HF_SPACES + NOT_SPACES) * rng.randint(1, 30))
            elif r < 0.85:
                parts.append("".join(random_scalar(rng) for _ in range(rng.randint(1, 4))))
            elif r < 0.92 and specials:
                parts.append(rng.choice(specials))
            else:
                parts.append(" " * rng.randint(1, 26))
        out.append("".join(parts))
    return out


def run_ours(binary, tokenizer_json, cases, mode):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c, ensure_ascii=True) + "\n")
        path = f.name
    try:
        args = [binary, tokenizer_json, path] + ({"nospecial": ["--no-special"], "decode": ["--decode"]}.get(mode, []))
        res = subprocess.run(args, capture_output=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"tokenize_ids failed ({res.returncode}): {res.stderr.decode(errors='replace')}")
        lines = res.stdout.decode("utf-8").split("\n")[: len(cases)]
        return [json.loads(x) for x in lines]
    finally:
        os.unlink(path)


def hf_reference(tok, cases):
    """HF's answers for every case: what a reference file stores, so fixes can be re-checked without HF."""
    special = [tok.encode(c, add_special_tokens=True) for c in cases]
    return {"encode_special": [e.ids for e in special],
            "tokens": [e.tokens for e in special],
            "encode_plain": [tok.encode(c, add_special_tokens=False).ids for c in cases],
            "decode": [tok.decode(e.ids) for e in special]}


def compare(name, ref, binary, path, cases):
    results = {}
    checks = {
        "encode_special": (ref["encode_special"], run_ours(binary, path, cases, "special")),
        "encode_plain": (ref["encode_plain"], run_ours(binary, path, cases, "nospecial")),
        "decode": (ref["decode"], run_ours(binary, path, cases, "decode")),
    }
    for check, (theirs, ours) in checks.items():
        same = sum(1 for a, b in zip(theirs, ours) if a == b)
        entry = {"cases": len(cases), "identical": same, "first_mismatch": None}
        for i, (a, b) in enumerate(zip(theirs, ours)):
            if a != b:
                entry["first_mismatch"] = {"index": i, "text": cases[i], "hf": a, "ours": b,
                                           "hf_tokens": ref["tokens"][i] if check != "decode" else None}
                break
        status = "OK" if same == len(cases) and len(ours) == len(cases) else "NOT OK"
        print(f"{status:6} {name:10} {check:15} {same}/{len(cases)} identical")
        if entry["first_mismatch"]:
            m = entry["first_mismatch"]
            print(f"       first mismatch #{m['index']}: text={m['text']!r}\n         hf  ={m['hf']}\n         ours={m['ours']}")
        results[check] = entry
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenize-ids", required=True, help="path of the built tokenize_ids program")
    ap.add_argument("--tokenizers", default=".cache/tokenizers", help="folder of <name>/tokenizer.json")
    ap.add_argument("--corpus", default=os.path.join(os.path.dirname(__file__), "corpus_multilingual.txt"))
    ap.add_argument("--generated", type=int, default=2000, help="random strings per tokenizer (seeded)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", help="JSON report path")
    ap.add_argument("--save-reference", help="write HF's answers (cases and outputs) to this .json.gz")
    ap.add_argument("--reference", help="compare against a saved .json.gz instead of running HF tokenizers")
    args = ap.parse_args()

    saved = None
    if args.reference:
        with gzip.open(args.reference, "rt", encoding="utf-8") as f:
            saved = json.load(f)
        if saved.get("format") != REFERENCE_FORMAT:
            print(f"{args.reference}: format {saved.get('format')!r}, expected {REFERENCE_FORMAT!r}; regenerate it "
                  "with --save-reference on a machine that has HF tokenizers", file=sys.stderr)
            return 2
        version = saved["tokenizers_version"]
    else:
        import tokenizers  # imported late so --help and --reference work without it
        version = tokenizers.__version__
    to_save = {"format": REFERENCE_FORMAT, "tokenizers_version": version, "tokenizers": {}}

    corpus = read_corpus(args.corpus)
    report = {"format": REPORT_FORMAT, "tokenizers_version": version, "corpus": args.corpus,
              "corpus_cases": len(corpus), "generated": args.generated, "seed": args.seed, "results": {}}
    all_ok = True
    names = sorted(d for d in os.listdir(args.tokenizers) if os.path.isfile(os.path.join(args.tokenizers, d, "tokenizer.json")))
    if not names:
        print(f"no tokenizers under {args.tokenizers}; run scripts/setup.sh (fetch_tokenizers) first", file=sys.stderr)
        return 2
    for name in names:
        path = os.path.join(args.tokenizers, name, "tokenizer.json")
        if saved is not None:
            if name not in saved["tokenizers"]:
                print(f"SKIP   {name:10} not in the reference file")
                continue
            cases, ref = saved["tokenizers"][name]["cases"], saved["tokenizers"][name]["hf"]
        else:
            tok = tokenizers.Tokenizer.from_file(path)
            specials = sorted(t.content for t in tok.get_added_tokens_decoder().values())[:40]
            cases = corpus + generate(args.generated, specials, args.seed)
            ref = hf_reference(tok, cases)
            to_save["tokenizers"][name] = {"cases": cases, "hf": ref}
        res = compare(name, ref, args.tokenize_ids, path, cases)
        report["results"][name] = res
        all_ok = all_ok and all(r["identical"] == r["cases"] for r in res.values())
    if args.save_reference:
        with gzip.open(args.save_reference, "wt", encoding="utf-8") as f:
            json.dump(to_save, f, ensure_ascii=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, ensure_ascii=True, indent=1)
    print("ALL OK" if all_ok else "MISMATCHES FOUND")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
