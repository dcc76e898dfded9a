"""Scaffold-constrained generation: validity, uniqueness and the share containing the scaffold, per model.

    python scripts/bench_scaffold.py --n 1000 --out results/bench_scaffold.json
"""

from __future__ import annotations

import argparse
import platform
import time

import molgen as mg
from molgen.chem import canonicalize
from molgen.files import write_json

SCAFFOLDS = {
    "benzamide, two [*]": "c1ccc([*])cc1C(=O)N[*]",
    "piperazine, any H": "C1CNCCN1",
    "chembl2321810 core": "c1ccc(Oc2ccccc2)cc1S(=O)(=O)N[*]",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["smiles-gpt-moses-small", "graph-vae-moses"])
    parser.add_argument("--out", default="results/bench_scaffold.json")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        model = mg.load_pretrained(name, device="cpu")
        for label, scaffold in SCAFFOLDS.items():
            t0 = time.perf_counter()
            df = mg.sample(model, args.n, seed=args.seed, scaffold=scaffold)
            valid = df[df.valid]
            row = {"model": name, "scaffold": label, "smiles": scaffold, "n": len(df),
                   "valid": round(float(df.valid.mean()), 3),
                   "unique": round(len({canonicalize(s) for s in valid.smiles}) / len(df), 3),
                   "contains_scaffold": round(float(df.contains_scaffold.mean()), 3),
                   "contains_of_valid": round(float(valid.contains_scaffold.mean()), 3) if len(valid) else 0.0,
                   "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            print(row, flush=True)
            rows.append(row)
    write_json(args.out, {"machine": platform.platform(), "processor": platform.processor(), "molgen": mg.__version__,
                          "seed": args.seed, "results": rows}, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
