"""Conditioning a GPT on a fitted PropertyModel's prediction, and how well the samples hit the asked value.

The chain a chemist would run by hand:

1. a PropertyModel (GP on ``graph-vae-moses:layers``) fitted on all of ``solubility`` (``molgen fit-property``);
2. its predicted logS written beside ``--n-train`` seeded MOSES train molecules (``molgen predict``);
3. smiles-gpt-moses-small fine-tuned with ``[condition] properties = ["logS"]`` on that file (a column of
   the data file is a condition like RDKit's logP);
4. ``--n`` molecules sampled at each target logS (``condition={"logS": t}``), their logS predicted by the
   same PropertyModel: the mean absolute error between asked and predicted, the predicted mean, validity
   and uniqueness; the floor is the unconditional parent's samples, judged against the same targets.

    python scripts/bench_conditional_property.py --out results/conditional_property    # JSON + markdown

Every stage is kept in ``--work`` and reused on a second run (delete the folder to start over).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_guidance import property_model  # noqa: E402  (same folder)

TARGETS = (-6.0, -5.0, -4.0, -3.0, -2.0, -1.0)


def training_file(work: Path, model, n: int, seed: int) -> Path:
    from molgen.datasets import moses_sample

    path = work / "moses_logS.csv"
    if not path.exists():
        smiles = moses_sample("train", n, seed)
        pd.DataFrame({"smiles": smiles, "logS": model.predict(smiles)["mean"].to_numpy()}).to_csv(path, index=False)
    return path


def finetune(work: Path, data: Path, steps: int, seed: int) -> Path:
    from molgen.config import parse_config
    from molgen.train import pretrain

    export = work / "run" / "export"
    if not (export / "config.json").exists():
        raw = {"model_type": "gpt", "task": "finetune", "name": "conditional-logS", "run_dir": str(work / "run"),
               "init_from": "smiles-gpt-moses-small",
               "data": {"dataset": str(data), "val_fraction": 0.05, "augment": 0.0},
               "condition": {"properties": ["logS"], "drop": 0.3},
               "optim": {"lr": 2e-3, "min_lr": 2e-4, "weight_decay": 0.1, "warmup_steps": 30},
               "trainer": {"max_steps": steps, "batch_size": 128, "val_every_steps": max(1, steps // 4),
                           "log_every_steps": max(1, steps // 8), "progress_bar": False, "seed": seed}}  # fmt: skip
        pretrain(parse_config(raw, "conditional-logS"))
    return export


def judge(smiles: list[str], model, target: float | None, targets) -> dict:
    from molgen.chem import canonicalize_many

    canon = [c for c in canonicalize_many(smiles) if c]
    unique = list(dict.fromkeys(canon))
    pred = model.predict(unique)["mean"].to_numpy()
    pred = pred[np.isfinite(pred)]
    out = {"valid": len(canon) / len(smiles), "unique": len(unique) / max(len(canon), 1),
           "predicted_mean": float(pred.mean()), "predicted_sd": float(pred.std())}  # fmt: skip
    if target is not None:
        out["mae"] = float(np.abs(pred - target).mean())
    else:
        out["mae_by_target"] = {str(t): float(np.abs(pred - t).mean()) for t in targets}
    return out


def markdown(result: dict) -> str:
    floor = result["parent"]["mae_by_target"]
    lines = [f"smiles-gpt-moses-small fine-tuned on {result['n_train']:,} MOSES train molecules with the logS a GP "
             f"(graph-vae-moses:layers, all of `solubility`) predicts for them, {result['steps']} steps; "
             f"{result['n']:,} samples per target, judged by the same GP.", "",
             "| asked logS | MAE (predicted vs asked) | parent's MAE (floor) | predicted mean ± sd | valid | unique |",
             "|---:|---:|---:|---|---:|---:|"]  # fmt: skip
    for t in result["targets"]:
        r = result["conditional"][str(t)]
        lines.append(f"| {t:g} | {r['mae']:.2f} | {floor[str(t)]:.2f} | {r['predicted_mean']:.2f} ± {r['predicted_sd']:.2f} | "
                     f"{r['valid']:.3f} | {r['unique']:.3f} |")  # fmt: skip
    p = result["parent"]
    lines += ["", f"Parent (unconditional): predicted logS {p['predicted_mean']:.2f} ± {p['predicted_sd']:.2f}, valid "
              f"{p['valid']:.3f}. Training molecules' predicted logS: {result['train_logS_mean']:.2f} ± "
              f"{result['train_logS_sd']:.2f}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--n", type=int, default=500, help="molecules sampled per target")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("results/conditional_property_work"))
    ap.add_argument("--out", type=Path, default=Path("results/conditional_property"))
    args = ap.parse_args()

    import torch

    import molgen as mg
    from molgen.files import atomic_path, write_json
    from molgen.transfer import PropertyModel

    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = PropertyModel.load(property_model(args.work))  # the GP of bench_guidance's solubility_gp task
    data = training_file(args.work, model, args.n_train, args.seed)
    export = finetune(args.work, data, args.steps, args.seed)
    child, parent = mg.load_pretrained(export, device="cpu"), mg.load_pretrained("smiles-gpt-moses-small", device="cpu")
    train_logS = pd.read_csv(data)["logS"].to_numpy()
    result = {"n_train": args.n_train, "steps": args.steps, "n": args.n, "seed": args.seed, "targets": list(TARGETS),
              "train_logS_mean": float(np.nanmean(train_logS)), "train_logS_sd": float(np.nanstd(train_logS)),
              "parent": judge(mg.sample(parent, args.n, seed=args.seed, workers=1)["smiles"].tolist(), model, None, TARGETS),
              "conditional": {}}  # fmt: skip
    for t in TARGETS:
        drawn = mg.sample(child, args.n, seed=args.seed, workers=1, condition={"logS": t})["smiles"].tolist()
        result["conditional"][str(t)] = judge(drawn, model, t, TARGETS)
        print(f"logS {t:g}: MAE {result['conditional'][str(t)]['mae']:.2f} (parent {result['parent']['mae_by_target'][str(t)]:.2f})", flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.out.with_suffix(".json"), result)
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
