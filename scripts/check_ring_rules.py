"""How many real molecules the graph-VAE's ring rules forbid, checked against RDKit's rings.

    python scripts/check_ring_rules.py [--model graph-vae-moses] [-n 20000] [--out results/ring_rules.json]

A seeded sample of MOSES training molecules is walked through the decoder with each molecule's
own choices forced (``GraphVAE.blocked``): once with the model's rules (``max_ring``,
``ring_rules``) and once with none. Beside it, RDKit's smallest rings say which molecules break the
rules (a ring above ``max_ring`` atoms, two rings sharing three or more atoms, a 3- or 4-membered
ring sharing a bond or holding a double or triple bond of the Kekulé form the decoder writes). The two counts should agree molecule for molecule; with no rules, nothing
should be blocked (the valence masks, window and size limit allow every MOSES molecule).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rdkit import Chem


def breaks_rules(smiles: str, max_ring: int, ring_rules: bool) -> bool:
    """The rules on RDKit's smallest set of smallest rings."""
    mol = Chem.MolFromSmiles(smiles)
    Chem.Kekulize(mol, clearAromaticFlags=True)
    info = mol.GetRingInfo()
    rings = [set(r) for r in info.AtomRings()]
    pairs = [(a, b) for n, a in enumerate(rings) for b in rings[n + 1 :]]
    fused = any(len(a & b) >= 3 or (len(a & b) == 2 and min(len(a), len(b)) <= 4) for a, b in pairs)
    unsaturated = any(len(r) <= 4 and any(mol.GetBondWithIdx(b).GetBondTypeAsDouble() > 1 for b in r)
                      for r in info.BondRings())  # fmt: skip
    return (ring_rules and (fused or unsaturated)) or (max_ring > 0 and max(map(len, rings), default=0) > max_ring)


def main() -> None:
    import torch

    from molgen.datasets import moses_sample
    from molgen.models.graph_vae import GraphVAE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="graph-vae-moses")
    ap.add_argument("-n", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("results/ring_rules.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = GraphVAE.from_pretrained(args.model, device="cpu")
    picked = moses_sample("train", args.n, args.seed)
    t0 = time.perf_counter()
    blocked = model.blocked(picked)
    seconds = time.perf_counter() - t0
    free = model.blocked(picked, max_ring=0, ring_rules=False)
    rdkit = np.array([breaks_rules(s, model.config.max_ring, model.config.ring_rules) for s in picked])
    report = {
        "model": args.model,
        "n": args.n,
        "seed": args.seed,
        "max_ring": model.config.max_ring,
        "ring_rules": model.config.ring_rules,
        "blocked": int(blocked.sum()),
        "blocked_fraction": round(float(blocked.mean()), 5),
        "rdkit_rings_break_rules": int(rdkit.sum()),
        "disagreements": [s for s, a, b in zip(picked, blocked, rdkit, strict=True) if a != b][:20],
        "blocked_without_rules": int(free.sum()),
        "examples": [s for s, b in zip(picked, blocked, strict=True) if b][:10],
        "seconds": round(seconds, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
