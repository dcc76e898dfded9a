"""The main job on shipped defaults: sample from every shipped model, score, evaluate, write results.

``molgen demo`` (and ``make demo``) runs :func:`run_demo`. Beside each model it evaluates a sample of
the MOSES test set of the same size, scored the same way: FCD depends strongly on the number of
molecules, so that row is the floor a perfect generator would reach at this ``n``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from molgen.io import write_table

#: the columns of the summary table, in order (MOSES key names)
SUMMARY_KEYS = ("valid", "unique@1000", "Novelty", "FCD/Test", "SNN/Test", "Frag/Test", "Scaf/Test",
                "IntDiv", "Filters")

REFERENCE_ROW = "moses-test sample"


def _sources(n: int, seed: int, models: list[str] | None) -> dict[str, pd.DataFrame]:
    """Molecules per source: each shipped model's samples, and the MOSES-test reference sample."""
    from molgen.datasets import moses_smiles
    from molgen.models import load_pretrained
    from molgen.models.hub import shipped_models

    out: dict[str, pd.DataFrame] = {}
    for name in shipped_models() if models is None else models:
        out[name] = load_pretrained(name).sample(n, seed=seed)
    test = pd.Series(moses_smiles("test"))
    out[REFERENCE_ROW] = pd.DataFrame({"smiles": test.sample(n=min(n, len(test)), random_state=seed).tolist()})
    return out


def run_demo(out_dir: str | Path = "results/demo", n: int = 2000, seed: int = 0,
             models: list[str] | None = None, n_jobs: int = 2, progress: bool = True) -> pd.DataFrame:
    """Sample ``n`` molecules from each model, score them, evaluate them against MOSES.

    Args:
        out_dir: folder for ``<source>/molecules.csv`` (one row per molecule, scored),
            ``<source>/metrics.json`` and ``summary.csv``.
        n: molecules per source; FCD is only comparable between sources at the same ``n``.
        seed: sampling seed (same seed, same molecules).
        models: shipped model names or checkpoint folders (default: every shipped model).

    Returns:
        The summary table: one row per source, MOSES metric columns, plus ``n`` and ``seconds``.
    """
    from molgen.metrics import evaluate
    from molgen.score import score

    out_dir = Path(out_dir)
    rows = []
    for source, molecules in _sources(n, seed, models).items():
        start = time.perf_counter()
        scored = score(molecules, n_jobs=n_jobs, progress=progress)
        metrics = evaluate(scored["smiles"].tolist(), n_jobs=n_jobs, seed=seed, progress=progress)
        folder = out_dir / source.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        write_table(scored, folder / "molecules.csv")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        rows.append({"source": source, "n": len(scored), **{k: metrics.get(k) for k in SUMMARY_KEYS},
                     # plain means for the chemist; the MOSES keys QED/logP are Wasserstein distances
                     "mean QED": scored["qed"].mean(), "mean SA": scored["sa"].mean(),
                     "seconds": round(time.perf_counter() - start, 1)})
    summary = pd.DataFrame(rows)
    summary.to_csv(out_dir / "summary.csv", index=False)
    return summary
