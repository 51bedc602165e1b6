#!/usr/bin/env python3
"""Stateful emulator of one GPU cloud's API on 127.0.0.1, for the broker's tests.

  python3 tests/emulators/emulator.py --provider {runpod|vast|lambda|primeintellect|hf_datasets} \
      --port-file PATH [--api-key KEY] [--latency-ms N] [--seed N]

Binds 127.0.0.1 on a free port, writes the port to PATH (via PATH.tmp + rename) once listening,
and serves until SIGTERM/SIGINT. See README.md in this folder for the paths, the control API
(/_emulator/...) and the fault kinds.
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ inside the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import core  # noqa: E402


def provider_class(name):
    if name == "runpod":
        from runpod import RunPod
        return RunPod
    if name == "vast":
        from vast import Vast
        return Vast
    if name == "lambda":
        from lambda_cloud import Lambda
        return Lambda
    if name == "primeintellect":
        from primeintellect import PrimeIntellect
        return PrimeIntellect
    if name == "hf_datasets":  # not a cloud: the Hub's dataset viewer (deploy's data.hub_rows)
        from hf_datasets import HfDatasets
        return HfDatasets
    raise SystemExit("emulator: unknown provider %r" % name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--provider", required=True, choices=["runpod", "vast", "lambda", "primeintellect", "hf_datasets"])
    ap.add_argument("--port-file", required=True, help="where to write the bound port")
    ap.add_argument("--api-key", default=None, help="the only key accepted (default: any non-empty key)")
    ap.add_argument("--latency-ms", type=int, default=0, help="delay before every provider-API answer")
    ap.add_argument("--seed", type=int, default=0, help="seed for ids and per-host variation")
    args = ap.parse_args()
    emu = core.Emulator(provider_class(args.provider), api_key=args.api_key,
                        latency_ms=args.latency_ms, seed=args.seed)
    core.serve_forever(emu, args.port_file)


if __name__ == "__main__":
    main()
