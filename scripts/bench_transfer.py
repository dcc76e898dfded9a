"""Benchmark frozen-feature extraction (molgen.transfer.embed) and property-model fitting; writes JSON.

    python scripts/bench_transfer.py                    # 4,000 MOSES test molecules per feature model
    python scripts/bench_transfer.py --n 1000 --out results/bench_transfer.json

Goals (transfer issue): embedding >= 2,000 molecules/s with the graph-VAE encoder and >= 1,000/s with
the GPT on 2 CPU cores. Each figure is the median of --repeats runs on a fresh cache (embed caches by
canonical SMILES, so a second call on the same molecules would measure a dictionary lookup).

Fine-tuning (``--finetune``, default both shipped GPTs; ``--finetune ""`` skips it): each GPT on a seeded 500
molecules of chembl2321810 (50 of them for validation; the context grows 64 -> 96 as it must for this
series) with ``molgen.finetune.run_config``'s defaults (lr 3e-4, batch 32, validation every 20 steps,
patience 5), trained to its early stop; the wall time of training alone, without the before/after report.
Goals: under 2 minutes for smiles-gpt-moses-small, under 5 for smiles-gpt-moses.
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
    ap.add_argument("--finetune", default="smiles-gpt-moses-small,smiles-gpt-moses")
    ap.add_argument("--finetune-molecules", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads (and embedding workers)")
    ap.add_argument("--out", type=Path, default=Path("results/bench_transfer.json"))
    args = ap.parse_args()

    import torch

    import molgen.transfer as tr
    from molgen.datasets import moses_smiles

    torch.set_num_threads(args.threads)
    smiles = moses_smiles("test")[: args.n]
    result = {"machine": machine(), "n": args.n, "threads": torch.get_num_threads(), "embed": {}}
    for name in filter(None, args.models.split(",")):
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
    result["finetune"] = {name: finetune_time(name, args.finetune_molecules) for name in filter(None, args.finetune.split(","))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("embed", "finetune")}, indent=2))


def finetune_time(base: str, n: int) -> dict:
    """Seconds to fine-tune ``base`` on ``n`` molecules of chembl2321810 to its early stop (training only)."""
    import tempfile

    from molgen.finetune import run_config
    from molgen.models.hub import read_config
    from molgen.train import pretrain

    with tempfile.TemporaryDirectory() as tmp:
        config = run_config(base, "chembl2321810", Path(tmp) / "run", n_train=n, max_steps=2000)
        t0 = time.perf_counter()
        export = pretrain(config)
        sec = time.perf_counter() - t0
        prov = read_config(export)["provenance"]
    stop = prov.get("early_stopping") or {}
    out = {"seconds": round(sec, 1), "molecules": n, "steps": prov["steps"], "best_step": stop.get("best_step"),
           "stopped_early": prov["steps"] < 2000, "context": (prov.get("finetune") or {}).get("context")}
    print(f"fine-tuning {base} on {n} molecules: {sec:.0f} s, {out['steps']} steps (best {out['best_step']})", flush=True)
    return out


if __name__ == "__main__":
    main()
