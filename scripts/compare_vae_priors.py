"""How the graph-VAE's sampling prior changes what it generates: one fitted Gaussian against
Gaussian mixtures of several sizes, all fitted to the same MOSES training encodings.

    python scripts/compare_vae_priors.py [CHECKPOINT] --components 1,10,20,40 --fit 100000 -n 10000

For each number of components it fits the prior with ``GraphVAE.fit_prior`` (posterior means of a
seeded sample of ``--fit`` MOSES training molecules, encoded once), draws ``-n`` molecules with
``mg.sample(vae, ...)`` (seed 0, greedy, the checkpoint's ring rules) and scores them with
``molgen.metrics.evaluate`` against MOSES. Writes ``results/compare_vae_priors.json`` (``--out``) and
prints a markdown table. FCD depends on n: compare rows of one run only. The checkpoint on disk is
not changed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import molgen as mg
from molgen.datasets import moses_sample
from molgen.metrics import evaluate
from molgen.models.graph_vae import GraphVAE

KEYS = ("valid", "unique@10000", "Novelty", "FCD/Test", "SNN/Test", "Frag/Test", "Scaf/Test", "IntDiv", "Filters")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", default="graph-vae-moses")
    ap.add_argument("--components", default="1,10,20,40")
    ap.add_argument("--fit", type=int, default=20_000, help="MOSES training molecules the priors are fitted to")
    ap.add_argument("-n", type=int, default=10_000, help="molecules sampled per prior")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("results/compare_vae_priors.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    vae = GraphVAE.from_pretrained(args.checkpoint, device="cpu")
    picked = moses_sample("train", args.fit, args.seed)
    rows = {}
    for k in (int(c) for c in args.components.split(",")):
        t0 = time.perf_counter()
        info = vae.fit_prior(picked, components=k, seed=args.seed)
        t1 = time.perf_counter()
        samples = mg.sample(vae, args.n, seed=args.seed)
        t2 = time.perf_counter()
        metrics = evaluate(samples, n_jobs=2, device="cpu")
        rows[k] = {"prior": info, "fit_s": round(t1 - t0, 1), "sample_s": round(t2 - t1, 1),
                   **{key: metrics[key] for key in KEYS}}  # fmt: skip
        print(k, json.dumps(rows[k]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "fit": args.fit, "n": args.n,
                                    "seed": args.seed, "rows": rows}, indent=1))  # fmt: skip
    print(f"\n| components | {' | '.join(KEYS)} |\n|---|{'---|' * len(KEYS)}")
    for k, r in rows.items():
        print(f"| {k} | " + " | ".join(f"{r[key]:.3f}" for key in KEYS) + " |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
