"""Benchmark frozen-feature extraction (molgen.transfer.embed) and property-model fitting; writes JSON.

    python scripts/bench_transfer.py                    # 4,000 MOSES test molecules per feature model
    python scripts/bench_transfer.py --n 1000 --out results/bench_transfer.json

Goals (transfer issue): embedding >= 2,000 molecules/s with the graph-VAE encoder and >= 1,000/s with
the GPT on 2 CPU cores. Each figure is the median of --repeats runs on a fresh cache (embed caches by
canonical SMILES, so a second call on the same molecules would measure a dictionary lookup).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench_metrics import machine  # noqa: E402  (same folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="graph-vae-moses,smiles-gpt-moses-small,smiles-gpt-moses,ecfp")
    ap.add_argument("--out", type=Path, default=Path("results/bench_transfer.json"))
    args = ap.parse_args()

    import torch

    import molgen.transfer as tr
    from molgen.datasets import moses_smiles

    torch.set_num_threads(2)
    smiles = moses_smiles("test")[: args.n]
    result = {"machine": machine(), "n": args.n, "threads": torch.get_num_threads(), "embed": {}}
    for name in args.models.split(","):
        tr.embed(name, smiles[:64])  # load the model and warm up outside the clock
        runs = []
        for _ in range(args.repeats):
            tr._CACHE.clear()
            t0 = time.perf_counter()
            X = tr.embed(name, smiles)  # noqa: N806
            runs.append(time.perf_counter() - t0)
        sec = statistics.median(runs)
        result["embed"][name] = {"mol_per_s": round(args.n / sec, 1), "seconds": [round(r, 3) for r in runs],
                                 "dim": int(X.shape[1])}
        print(f"{name}: {args.n / sec:,.0f} molecules/s ({X.shape[1]} features)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["embed"], indent=2))


if __name__ == "__main__":
    main()
