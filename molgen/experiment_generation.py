"""The generation task of the transfer experiment: does starting from a pretrained generator pay?

For a training size N and seed (the molecules the property task draws, :mod:`molgen.experiment`),
each method below yields a generator, which is judged by :func:`molgen.finetune.assess` against the
experiment's fixed held-out molecules:

- ``pretrained``: the parent (``smiles-gpt-moses-small`` by default) as it is;
- ``scratch``: the parent's architecture with fresh weights trained on the N molecules only, through
  the same training task, steps budget and early stopping (:func:`molgen.finetune.run_config` with
  ``scratch=True``), the no-pretraining control;
- ``finetune-<policy>``: the parent fine-tuned on the N molecules under a freeze policy
  (:class:`~molgen.train.freeze.FreezePolicy`: ``none``, ``head_only``, ``first_k:2``, ``lora``);
  ``finetune-none+rehearsal`` mixes a fifth of MOSES train into every batch (against forgetting).

One row per method x size x seed with plain metric names: ``valid``, ``unique``, ``novel_moses``,
``novel_target`` (absent from the N training molecules), ``fcd``, ``snn``, ``scaffold_share`` (to the
held-out molecules), ``intdiv``, the forgetting pair ``moses_fcd`` / ``moses_nll`` (the samples' FCD
to MOSES test, the NLL per token of seeded MOSES test molecules), ``trainable_fraction``, ``steps``,
``best_step``, ``seconds``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["GEN_METHODS", "GenMethod", "DEFAULT_GENERATOR", "generation_rows", "COLUMNS", "markdown"]

DEFAULT_GENERATOR = "smiles-gpt-moses-small"


@dataclass(frozen=True)
class GenMethod:
    """How a method gets its generator: ``policy`` (a FreezePolicy string or object) at ``lr``,
    ``rehearsal`` share; ``scratch`` trains the parent's architecture from random weights;
    ``train=False`` takes the parent as it is."""

    policy: object = "none"
    lr: float = 5e-4
    rehearsal: float = 0.0
    scratch: bool = False
    train: bool = True


def _lora():
    from molgen.models.lora import LoraSpec
    from molgen.train.freeze import FreezePolicy

    return FreezePolicy("lora", lora=LoraSpec(r=5, alpha=16))


#: learning rates as in scripts/configs/finetune_gpt_chembl2321810*.toml (full: 5e-4; LoRA r 5 alpha 16:
#: 1e-2, adapters start at zero); the few weights of head_only take a larger step; a model from
#: random weights takes pretraining's
GEN_METHODS: dict[str, GenMethod | Callable[[], GenMethod]] = {
    "pretrained": GenMethod(train=False),
    "scratch": GenMethod(lr=2e-3, scratch=True),
    "finetune-none": GenMethod("none"),
    "finetune-head_only": GenMethod("head_only", lr=2e-3),
    "finetune-first_k:2": GenMethod("first_k:2"),
    "finetune-lora": lambda: GenMethod(_lora(), lr=1e-2),
    "finetune-none+rehearsal": GenMethod("none", rehearsal=0.2),
}
COLUMNS = ("valid", "unique", "novel_moses", "novel_target", "fcd", "snn", "scaffold_share", "intdiv",
           "moses_fcd", "moses_nll", "held_out_nll", "trainable_fraction", "steps", "best_step")  # fmt: skip
_FROM_ASSESS = {"valid": "valid", "unique": "unique", "novel_moses": "novel_moses", "novel_target": "novel_target",
                "FCD": "fcd", "SNN": "snn", "scaffold_share": "scaffold_share", "IntDiv": "intdiv",
                "moses_FCD": "moses_fcd", "moses_nll": "moses_nll", "held_out_nll": "held_out_nll"}  # fmt: skip


def _method(name: str) -> GenMethod:
    m = GEN_METHODS[name]
    return m() if callable(m) else m


def generation_rows(train: Sequence[str], test: Sequence[str], size: int, seed: int, methods: Sequence[str],
                    generator: str = DEFAULT_GENERATOR, steps: int = 150, eval_samples: int = 1000,
                    moses: list[str] | None = None, batch_size: int = 32, advance=None) -> list[dict]:  # fmt: skip
    """One result row per method for one training set (``train``, N molecules) against the held-out
    ``test`` molecules; ``moses`` (MOSES test molecules) adds the forgetting figures. Each trained
    model lives in a temporary run folder, removed afterwards."""
    from molgen.models import load_pretrained

    rows = []
    for name in methods:
        t0 = time.perf_counter()
        method = _method(name)
        if method.train:
            model = _trained(method, train, generator, steps, batch_size, seed)
        else:
            model = load_pretrained(generator, device="cpu")
        rows.append({"task": "generation", "method": name, "size": size, "seed": seed,
                     **_judged(model, method, train, test, eval_samples, seed, moses),
                     "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip
        if advance is not None:
            advance(1)
    return rows


def _trained(method: GenMethod, train: Sequence[str], generator: str, steps: int, batch_size: int, seed: int):
    from molgen.finetune import run_config
    from molgen.models import load_pretrained
    from molgen.train import pretrain

    with tempfile.TemporaryDirectory(prefix="molgen-generation-") as folder:
        source = Path(folder) / "train.csv"
        pd.DataFrame({"smiles": list(train)}).to_csv(source, index=False)
        config = run_config(generator, str(source), Path(folder) / "run", method.policy, scratch=method.scratch,
                            max_steps=steps, lr=method.lr, patience=4, val_every_steps=max(1, steps // 10),
                            batch_size=batch_size, rehearsal=method.rehearsal, seed=seed)  # fmt: skip
        return load_pretrained(pretrain(config), device="cpu")  # a LoRA adapter comes merged into its base


def _judged(model, method: GenMethod, train, test, eval_samples: int, seed: int, moses) -> dict:
    from molgen.finetune import assess

    figures = assess(model, list(train), list(test), eval_samples, seed, moses)
    row = {plain: figures.get(key, np.nan) for key, plain in _FROM_ASSESS.items()}
    prov = getattr(model, "provenance", {}) or {}
    share = (prov.get("finetune") or {}).get("trainable")
    row["trainable_fraction"] = (0.0 if not method.train else 1.0 if method.scratch
                                 else share["fraction"] if share else np.nan)  # fmt: skip
    stop = prov.get("early_stopping") or {}
    row["steps"] = prov.get("steps", 0) if method.train else 0
    row["best_step"] = stop.get("best_step", row["steps"])
    return row


def markdown(results: pd.DataFrame) -> list[str]:
    """The generation rows as Markdown: FCD to the held-out molecules by size (mean ± sd over seeds),
    then every metric per method and size."""
    gen = results[results["task"] == "generation"]
    if gen.empty:
        return []
    order = list(dict.fromkeys(gen["method"]))
    agg = gen.groupby(["method", "size"])["fcd"].agg(["mean", "std"]).reset_index()
    cells = {(m, s): f"{a:.2f} ± {b:.2f}" if np.isfinite(b) else f"{a:.2f}"
             for m, s, a, b in agg.itertuples(index=False)}  # fmt: skip
    sizes = sorted(gen["size"].unique())
    lines = ["", "## Generation", "", "FCD to the held-out molecules (mean ± sd over seeds; lower is closer), by "
             "training size:", "", "| method | " + " | ".join(map(str, sizes)) + " |", "|---|" + "---|" * len(sizes)]  # fmt: skip
    lines += [f"| {m} | " + " | ".join(cells.get((m, s), "") for s in sizes) + " |" for m in order]
    shown = [c for c in ("valid", "unique", "novel_moses", "novel_target", "fcd", "snn", "scaffold_share", "intdiv",
                         "moses_fcd", "moses_nll", "trainable_fraction", "seconds") if c in gen.columns]  # fmt: skip
    mean = gen.groupby(["size", "method"], sort=False)[shown].mean().reset_index()
    mean["_order"] = mean["method"].map(order.index)
    lines += ["", "Every figure (mean over seeds):", "", "| size | method | " + " | ".join(shown) + " |",
              "|---|---|" + "---|" * len(shown)]  # fmt: skip
    for r in mean.sort_values(["size", "_order"]).itertuples(index=False):
        d = r._asdict()
        lines.append(f"| {d['size']} | {d['method']} | " + " | ".join(_fmt(d[c], c) for c in shown) + " |")
    return lines


def _fmt(v, column: str) -> str:
    if not np.isfinite(v):
        return "–"
    return f"{v:.1f}" if column == "seconds" else f"{v:.2f}" if column in ("fcd", "moses_fcd") else f"{v:.3f}"
