#!/usr/bin/env python3
"""Derives tokenizer.json variants from the real files in .cache/tokenizers, for parity runs against HF
on features no npm package ships:

  neox_like   GPT-2 vocab/merges with GPT-NeoX/OLMoE's pipeline: NFC normalizer, ByteLevel pre-tokenizer,
              and OLMo-tok's added tokens: runs of 24..2 spaces (normalized, not special) and
              |||EMAIL_ADDRESS||| / |||PHONE_NUMBER||| / |||IP_ADDRESS|||, plus <|padding|> (special).
  flags       GPT-2 with added tokens that use every flag: <mask> (lstrip, rstrip, single_word, special,
              not normalized), [NORM] (normalized, lstrip), word (single_word, normalized), ʼbr (rstrip),
              Lowercase normalizer; merges rewritten in the legacy "a b" string format.
  prefix_tpl  GPT-2 with ByteLevel add_prefix_space=true and a TemplateProcessing post-processor that
              adds <|endoftext|> before and after the sequence (BOS/EOS path).
  qwen3_legacy Qwen3 with its ["a","b"] merges rewritten as "a b" strings (both formats, same ids).

  python3 tests/parity/make_tokenizer_variants.py [.cache/tokenizers]
"""
import json
import os
import sys


def load(d, name):
    with open(os.path.join(d, name, "tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)


def save(d, name, obj):
    os.makedirs(os.path.join(d, name), exist_ok=True)
    with open(os.path.join(d, name, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


def added(i, content, special=False, normalized=True, lstrip=False, rstrip=False, single_word=False):
    return {"id": i, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": normalized, "special": special}


def to_pairs(merges):
    return [m.split(" ", 1) if isinstance(m, str) else m for m in merges]


def to_strings(merges):
    return [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in merges]


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else ".cache/tokenizers"
    gpt2 = load(d, "gpt2")
    n = len(gpt2["model"]["vocab"])  # 50257; <|endoftext|> is 50256

    neox = json.loads(json.dumps(gpt2))
    neox["normalizer"] = {"type": "NFC"}
    neox["model"]["merges"] = to_pairs(neox["model"]["merges"])
    extra = [added(n + k, " " * (24 - k)) for k in range(23)]  # 24..2 spaces
    extra += [added(n + 23 + k, s) for k, s in enumerate(["|||EMAIL_ADDRESS|||", "|||PHONE_NUMBER|||", "|||IP_ADDRESS|||"])]
    extra.append(added(n + 26, "<|padding|>", special=True, normalized=False))
    neox["added_tokens"] = gpt2["added_tokens"] + extra
    save(d, "neox_like", neox)

    flags = json.loads(json.dumps(gpt2))
    flags["normalizer"] = {"type": "Lowercase"}
    flags["model"]["merges"] = to_strings(flags["model"]["merges"])
    flags["added_tokens"] = gpt2["added_tokens"] + [
        added(n, "<mask>", special=True, normalized=False, lstrip=True, rstrip=True, single_word=True),
        added(n + 1, "[norm]", normalized=True, lstrip=True),
        added(n + 2, "word", normalized=True, single_word=True),
        added(n + 3, "\u02bcbr", normalized=False, rstrip=True),
    ]
    save(d, "flags", flags)

    tpl = json.loads(json.dumps(gpt2))
    tpl["pre_tokenizer"]["add_prefix_space"] = True
    tpl["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [n - 1], "tokens": ["<|endoftext|>"]}},
    }
    save(d, "prefix_tpl", tpl)

    qwen = load(d, "qwen3")
    qwen["model"]["merges"] = to_strings(qwen["model"]["merges"])
    save(d, "qwen3_legacy", qwen)


if __name__ == "__main__":
    main()
