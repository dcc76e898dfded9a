"""How well a conditional GPT hits the property values it is asked for (issue 18, item 4).

For each target (one property at a value, inside the training range and outside it, and one
pair), ``--n`` molecules are sampled with ``condition={property: value}``; the table reports the
mean absolute error between the requested and the achieved property over the valid molecules
(RDKit, :mod:`molgen.score`'s definitions), the achieved mean and sd, validity, uniqueness (of the
valid) and novelty against MOSES train (of the unique valid). The floor is the unconditional
parent: its samples' error to the same target, what no conditioning at all gives.

The protocol follows MolGPT's property-conditioned MOSES experiments (Bagal et al. 2021, J. Chem.
Inf. Model. 62, 2064: single-property targets such as logP 2.0 / 4.0 and TPSA 40 / 80, one model
sampled per value, the error between target and achieved value over the valid molecules); their
figures are not quoted here because no source for them was at hand.

    python scripts/bench_conditional.py --model runs/finetune-gpt-conditional/export --n 1000 \\
        --out results/conditional

writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import molgen as mg
from molgen.chem import canonicalize_many
from molgen.data import property_values
from molgen.datasets import moses_sample
from molgen.files import atomic_path, write_json
from molgen.metrics import novelty
from molgen.metrics.reference import moses_train_hashes

#: (target, in the training range?) with the range read as MOSES train's 1st-99th percentile
TARGETS = [{"logp": v} for v in (1.0, 2.0, 3.0, 4.0, 6.0)] + [{"tpsa": v} for v in (40.0, 60.0, 80.0, 100.0, 150.0)] \
    + [{"qed": v} for v in (0.6, 0.8)] + [{"logp": 3.0, "tpsa": 60.0}]  # fmt: skip


def training_range(names: list[str], n: int = 20_000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Each property's 1st and 99th percentile on a seeded ``n`` of MOSES train."""
    values = property_values(moses_sample("train", n, seed), names)
    return {k: (float(np.nanpercentile(values[:, i], 1)), float(np.nanpercentile(values[:, i], 99)))
            for i, k in enumerate(names)}  # fmt: skip


def judge(smiles: list[str], valid: np.ndarray, target: dict[str, float], train_hashes) -> dict:
    """MAE per targeted property over the valid molecules, with validity, uniqueness, novelty."""
    ok = [s for s, v in zip(smiles, valid, strict=True) if v]
    canon = [c for c in canonicalize_many(ok, isomeric=False) if c]
    unique = sorted(set(canon))
    row = {"valid": float(np.mean(valid)), "unique": len(unique) / max(len(canon), 1),
           "novel": novelty(unique, train_hashes) if unique else float("nan")}  # fmt: skip
    got = property_values(ok, list(target)) if ok else np.zeros((0, len(target)))
    for i, (k, v) in enumerate(target.items()):
        achieved = got[:, i][np.isfinite(got[:, i])]
        row[f"mae_{k}"] = float(np.mean(np.abs(achieved - v))) if len(achieved) else float("nan")
        row[f"mean_{k}"] = float(np.mean(achieved)) if len(achieved) else float("nan")
        row[f"sd_{k}"] = float(np.std(achieved)) if len(achieved) else float("nan")
    return row


def label(target: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in target.items())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the conditional model (name or folder)")
    ap.add_argument("--parent", default="smiles-gpt-moses-small", help="the unconditional floor")
    ap.add_argument("--n", type=int, default=1000, help="molecules sampled per target")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/conditional", help="OUT.json and OUT.md")
    args = ap.parse_args(argv)

    model = mg.load_pretrained(args.model, device="cpu")
    names = list(model.config.condition["names"])
    targets = [t for t in TARGETS if set(t) <= set(names)]
    ranges = training_range(names)
    hashes = moses_train_hashes()
    t0 = time.perf_counter()
    floor = mg.sample(args.parent, args.n, seed=args.seed)
    free = mg.sample(model, args.n, seed=args.seed)  # the conditional model with no property given
    rows = []
    for target in targets:
        df = mg.sample(model, args.n, seed=args.seed, condition=target)
        row = {"target": label(target), "inside": all(ranges[k][0] <= v <= ranges[k][1] for k, v in target.items()),
               **judge(df["smiles"].tolist(), df["valid"].to_numpy(), target, hashes)}  # fmt: skip
        for name, ref in (("parent", floor), ("no_condition", free)):
            base = judge(ref["smiles"].tolist(), ref["valid"].to_numpy(), target, hashes)
            row.update({f"{name}_mae_{k}": base[f"mae_{k}"] for k in target})
        rows.append(row)
        print(row, flush=True)
    result = {"model": args.model, "parent": args.parent, "n": args.n, "seed": args.seed,
              "training_range_p1_p99": ranges, "rows": rows, "seconds": round(time.perf_counter() - t0, 1),
              "parent_sample": judge(floor["smiles"].tolist(), floor["valid"].to_numpy(), {}, hashes)}  # fmt: skip
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [f"Conditional sampling of `{result['model']}`, {result['n']:,} molecules per target (seed {result['seed']}); "
             f"MAE over the valid molecules; floor: the unconditional `{result['parent']}`.", "",
             "| target | range | MAE | parent MAE | no-condition MAE | achieved mean ± sd | valid | unique | novel |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        props = [k[4:] for k in r if k.startswith("mae_")]
        cells = {key: ", ".join(f"{r[key.format(k)]:.3g}" for k in props)
                 for key in ("mae_{}", "parent_mae_{}", "no_condition_mae_{}")}  # fmt: skip
        spread = ", ".join(f"{r['mean_' + k]:.3g} ± {r['sd_' + k]:.2g}" for k in props)
        lines.append(f"| {r['target']} | {'inside' if r['inside'] else 'outside'} | {cells['mae_{}']} "
                     f"| {cells['parent_mae_{}']} | {cells['no_condition_mae_{}']} | {spread} "
                     f"| {r['valid']:.3f} | {r['unique']:.3f} | {r['novel']:.3f} |")  # fmt: skip
    ranges = ", ".join(f"{k} {lo:.3g} to {hi:.3g}" for k, (lo, hi) in result["training_range_p1_p99"].items())
    lines += ["", f"Training range (MOSES train 1st-99th percentile): {ranges}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
