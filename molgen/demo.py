"""The main job on shipped defaults: sample from every shipped model, score, evaluate, write results.

``molgen demo`` (and ``make demo``) runs :func:`run_demo`. Beside each model it evaluates a sample of
the MOSES test set of the same size, scored the same way: FCD depends strongly on the number of
molecules, so that row is the floor a perfect generator would reach at this ``n``.

Result folders are named after their source with anything but letters, digits, ``.``, ``_`` and
``-`` replaced by ``_`` (no spaces); :func:`short_labels` gives the short column labels of the
terminal table (``gpt``, ``gpt-small``, ``vae``, ``moses-test``) and :func:`legend` the line that
spells them out.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd

from molgen.files import atomic_path, write_json
from molgen.io import write_table

#: the columns of the summary table, in order (MOSES key names)
SUMMARY_KEYS = ("valid", "unique@1000", "Novelty", "FCD/Test", "SNN/Test", "Frag/Test", "Scaf/Test",
                "IntDiv", "Filters")

#: the source name (and folder) of the MOSES-test sample evaluated beside the models
REFERENCE_ROW = "moses-test"
# words every shipped model name shares or that only say what kind of model it is
_GENERIC_WORDS = ("smiles", "graph", "moses")


def folder_name(source: str) -> str:
    """The result folder of a source: its name with no spaces, slashes or other odd characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("_") or "source"


def short_labels(sources) -> dict[str, str]:
    """Short column labels: ``smiles-gpt-moses-small`` -> ``gpt-small``, ``graph-vae-moses`` -> ``vae``.

    A checkpoint folder gives its last part; a label that would be empty or repeat another keeps the
    full name.
    """
    out: dict[str, str] = {}
    for source in sources:
        name = Path(source).name or source
        words = [w for w in re.split(r"[-_ ]+", name) if w.lower() not in _GENERIC_WORDS]
        label = source if source == REFERENCE_ROW else "-".join(words) or name
        out[source] = name if label in out.values() else label
    return out


def legend(labels: dict[str, str]) -> str:
    """One line that says what each short label stands for."""
    full = {s: "MOSES test sample (the floor at this n)" if s == REFERENCE_ROW else s
            for s in labels}
    return "; ".join(f"{label} = {full[s]}" for s, label in labels.items())


def _sources(n: int, seed: int, models: list[str] | None) -> dict[str, pd.DataFrame]:
    """Molecules per source: each shipped model's samples, and the MOSES-test reference sample."""
    from molgen.datasets import moses_smiles
    from molgen.models import load_pretrained
    from molgen.models.hub import shipped_models
    from molgen.sample import sample

    out: dict[str, pd.DataFrame] = {}
    for name in shipped_models() if models is None else models:
        out[name] = sample(load_pretrained(name), n, seed=seed)
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
        folder = out_dir / folder_name(source)
        folder.mkdir(parents=True, exist_ok=True)
        write_table(scored, folder / "molecules.csv")
        write_json(folder / "metrics.json", metrics)  # strict JSON: null where a metric is undefined
        renamed = scored.attrs.get("renamed", {})  # a sample's own column of a score's name stays
        rows.append({"source": source, "n": len(scored), **{k: metrics.get(k) for k in SUMMARY_KEYS},
                     # plain means for the chemist; the MOSES keys QED/logP are Wasserstein distances
                     "mean QED": scored[renamed.get("qed", "qed")].mean(),
                     "mean SA": scored[renamed.get("sa", "sa")].mean(),
                     "seconds": round(time.perf_counter() - start, 1)})
    summary = pd.DataFrame(rows)
    with atomic_path(out_dir / "summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    return summary
