"""The transfer experiment: does starting from the pretrained models pay on a small data set?

``molgen experiment transfer --dataset solubility`` (``experiment(...)`` here) fixes a test set on
a scaffold split (whole Bemis-Murcko scaffolds go to the test set, so test molecules are never
near-copies of training ones), then for each training size and seed draws that many training
molecules from the rest and fits every method on them:

- ``ecfp+rf``: Morgan fingerprints (radius 2, 2,048 bits) and a random forest, the classic baseline;
- ``ecfp+ridge``, ``ecfp+gp``: the same fingerprints under the heads the pretrained features get;
- ``<model>+<head>``: frozen features of a pretrained model (:func:`molgen.transfer.embed`) under
  each head of :class:`molgen.transfer.PropertyModel`;
- ``gnn-scratch+mlp``: the graph-VAE encoder's architecture freshly initialised with a
  :class:`~molgen.models.heads.PropertyHead`, trained end to end (the no-pretraining control);
- ``graph-vae-moses-finetuned+mlp``: the shipped encoder (a copy) and a head trained end to end,
  the encoder at a tenth of the head's learning rate. Both through :func:`fit_end_to_end`.

It writes ``results.csv`` (one row per method x size x seed: ``rmse``, ``mae``, ``r2``,
``spearman``, for heads with a std ``within_1sd`` / ``within_2sd``, ``seconds``; for the end-to-end
methods ``epochs``, ``best_epoch`` and ``not_encodable``, the training molecules skipped), the exact
molecules of every split (``splits/<size>_<seed>.csv``, so anyone can run another model on the
same split), ``results.md`` (mean ± sd over seeds) and ``learning_curve.png``.

The generation task (``tasks=("generation",)``, :mod:`molgen.experiment_generation`) uses the same
fixed test set and training draws: the pretrained generator, the same architecture from scratch and
the generator fine-tuned under each freeze policy, judged against the test molecules; its rows join
``results.csv`` (a ``task`` column tells them apart), ``results.md`` gets a generation section and
``learning_curve_generation.png`` plots FCD to the held-out molecules against N.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from molgen import chem
from molgen.errors import InputError
from molgen.files import atomic_path, write_json

__all__ = ["experiment", "scaffold_split", "fit_end_to_end", "EndToEnd", "METHODS", "DEFAULT_METHODS", "TASKS"]

TASKS = ("property", "generation")

METHODS = ("ecfp+rf", "ecfp+ridge", "ecfp+gp",
           "graph-vae-moses+ridge", "graph-vae-moses+gp", "graph-vae-moses+mlp",
           "graph-vae-moses:layers+ridge", "graph-vae-moses:layers+gp",
           "smiles-gpt-moses-small+ridge", "smiles-gpt-moses-small+gp",
           "smiles-gpt-moses+ridge", "smiles-gpt-moses+gp",
           "gnn-scratch+mlp", "graph-vae-moses-finetuned+mlp")  # fmt: skip
#: end-to-end methods: features name -> (base model whose encoder is used, pretrained weights?, encoder lr)
_END_TO_END = {"gnn-scratch": ("graph-vae-moses", False, 1e-3),
               "graph-vae-moses-finetuned": ("graph-vae-moses", True, 1e-4)}  # fmt: skip
DEFAULT_METHODS = ("ecfp+rf", "ecfp+gp", "graph-vae-moses+ridge", "graph-vae-moses+gp", "graph-vae-moses:layers+gp",
                   "smiles-gpt-moses+ridge", "smiles-gpt-moses+gp")  # fmt: skip


def scaffold_split(smiles: Sequence[str], test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """A boolean test mask that holds whole scaffolds, about ``test_fraction`` of the molecules.

    Scaffold groups are shuffled with ``seed`` and taken into the test set while they fit, so the
    test set mixes rare and common scaffolds (sorting by size, as some splitters do, would put only
    singletons in the test set); a group too large to fit stays in training.
    """
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(smiles):
        groups.setdefault(chem.scaffold(s) or f"acyclic-or-invalid-{i}", []).append(i)
    keys = list(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    test = np.zeros(len(smiles), dtype=bool)
    want = int(round(test_fraction * len(smiles)))
    for k in order:  # a group that would overfill the test set stays in training (benzene's, say)
        if test.sum() + len(groups[keys[k]]) <= want:
            test[groups[keys[k]]] = True
    return test


def _metrics(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    ok = np.isfinite(mean)
    y, mean, std = y[ok], mean[ok], std[ok]
    err = mean - y
    out = {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))),
           "r2": float(1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2)),
           "spearman": float(spearmanr(mean, y).statistic), "n_test": int(ok.sum())}  # fmt: skip
    if np.isfinite(std).all() and len(std):
        out["within_1sd"] = float(np.mean(np.abs(err) <= std))
        out["within_2sd"] = float(np.mean(np.abs(err) <= 2 * std))
    return out


class EndToEnd:
    """A graph encoder and a :class:`~molgen.models.heads.PropertyHead` trained together (see
    :func:`fit_end_to_end`); ``predict(smiles)`` gives values in the target's units, NaN where
    the encoder cannot read a molecule. ``encoder``/``head`` hold the best validation weights;
    ``report_`` the counts and the epochs."""

    def __init__(self, encoder, head, y_mean: float, y_std: float, report: dict):
        self.encoder, self.head, self.y_mean, self.y_std, self.report_ = encoder, head, y_mean, y_std, report

    def _forward(self, batch):
        mu, _ = self.encoder(batch.x, batch.edge_index, batch.edge_attr, batch.batch, len(batch.ptr) - 1)
        return self.head(mu).squeeze(-1)

    def predict(self, smiles: Sequence[str], batch_size: int = 256) -> np.ndarray:
        import torch
        from torch_geometric.data import Batch

        graphs, rows = _graphs(smiles)
        out = np.full(len(smiles), np.nan)
        self.encoder.eval()
        self.head.eval()
        with torch.no_grad():
            for i in range(0, len(rows), batch_size):
                pred = self._forward(Batch.from_data_list(graphs[i : i + batch_size]))
                out[rows[i : i + batch_size]] = pred.double().numpy() * self.y_std + self.y_mean
        return out


def _graphs(smiles: Sequence[str]) -> tuple[list, np.ndarray]:
    """The PyG graphs of the molecules the graph encoder can read, and their rows."""
    from molgen.featurize import mol_to_graph

    graphs, rows = [], []
    for i, s in enumerate(smiles):
        try:
            graphs.append(mol_to_graph(s))
            rows.append(i)
        except InputError:
            pass
    return graphs, np.asarray(rows, dtype=int)


def fit_end_to_end(encoder, smiles: Sequence[str], y, seed: int = 0, lr: float = 1e-3,
                   encoder_lr: float | None = None, weight_decay: float = 1e-2, max_epochs: int = 120,
                   patience: int = 20, batch_size: int = 32, val_fraction: float = 0.15, min_val: int = 3,
                   hidden: int = 128, dropout: float = 0.1, threads: int = 1) -> EndToEnd:  # fmt: skip
    """Train a graph encoder (a ``GraphEncoder``: graphs -> posterior mean) and a new MLP head
    together, on the CPU: the one training loop of the end-to-end methods.

    Targets are standardised on the training part; ``val_fraction`` of the readable molecules
    (at least ``min_val``, drawn with ``seed``) are held out for early stopping on their MSE
    (``patience`` epochs without improvement, at most ``max_epochs``), and the best epoch's weights
    are kept. AdamW, the encoder at ``encoder_lr`` (default ``lr``), the head at ``lr``. The
    ``encoder`` is trained in place: pass a copy of a shared model. Molecules the encoder cannot
    read are skipped and counted in ``report_["not_encodable"]``. ``threads``: PyTorch's intra-op
    threads while training (restored afterwards); one is 10-20x faster than two on two cores that
    another job shares (9.5 s against 131 s at N = 200), and these graphs are too small to split.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _fit_end_to_end(encoder, smiles, y, seed, lr, encoder_lr, weight_decay, max_epochs, patience,
                               batch_size, val_fraction, min_val, hidden, dropout)  # fmt: skip
    finally:
        torch.set_num_threads(before)


def _fit_end_to_end(encoder, smiles, y, seed, lr, encoder_lr, weight_decay, max_epochs, patience, batch_size,
                    val_fraction, min_val, hidden, dropout) -> EndToEnd:  # fmt: skip
    import copy

    import torch
    from torch_geometric.data import Batch

    from molgen.models.heads import PropertyHead, PropertyHeadConfig

    y = np.asarray(y, dtype=float)
    graphs, rows = _graphs(smiles)
    y = y[rows]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(graphs))
    n_val = max(min_val, int(round(val_fraction * len(graphs))))
    if len(graphs) - n_val < 2:
        raise InputError(f"only {len(graphs)} molecules the graph encoder can read: too few to train and validate")
    val_idx, fit_idx = order[:n_val], order[n_val:]
    y_mean, y_std = float(y[fit_idx].mean()), float(y[fit_idx].std() or 1.0)
    target = torch.tensor((y - y_mean) / y_std, dtype=torch.float32)
    torch.manual_seed(seed)  # the head's initial weights and dropout
    head = PropertyHead(PropertyHeadConfig(in_dim=encoder.mu.out_features, hidden=hidden, dropout=dropout))
    model = EndToEnd(encoder, head, y_mean, y_std, {})
    opt = torch.optim.AdamW([{"params": encoder.parameters(), "lr": lr if encoder_lr is None else encoder_lr},
                             {"params": head.parameters(), "lr": lr}], weight_decay=weight_decay)  # fmt: skip
    val_batch, val_y = Batch.from_data_list([graphs[i] for i in val_idx]), target[val_idx]
    gen = np.random.default_rng(seed + 1)
    best, best_epoch, state, epoch = float("inf"), 0, None, 0
    for epoch in range(1, max_epochs + 1):
        encoder.train()
        head.train()
        perm = fit_idx[gen.permutation(len(fit_idx))]
        for i in range(0, len(perm), batch_size):
            part = perm[i : i + batch_size]
            if len(part) < 2 and len(perm) > 2:  # a lone last molecule: a noisy step, skip it
                continue
            loss = torch.nn.functional.mse_loss(model._forward(Batch.from_data_list([graphs[j] for j in part])),
                                                target[part])  # fmt: skip
            opt.zero_grad()
            loss.backward()
            opt.step()
        encoder.eval()
        head.eval()
        with torch.no_grad():
            val = float(torch.nn.functional.mse_loss(model._forward(val_batch), val_y))
        if val < best - 1e-4:
            best, best_epoch = val, epoch
            state = copy.deepcopy((encoder.state_dict(), head.state_dict()))
        elif epoch - best_epoch >= patience:
            break
    encoder.load_state_dict(state[0])
    head.load_state_dict(state[1])
    model.report_ = {"rows": len(smiles), "not_encodable": len(smiles) - len(graphs), "train": len(fit_idx),
                     "val": n_val, "epochs": epoch, "best_epoch": best_epoch, "best_val_mse": best}  # fmt: skip
    return model


def _end_to_end(features: str, train: pd.DataFrame, test: pd.DataFrame, seed: int):
    import copy

    import torch

    from molgen.models.graph_vae import GraphVAE
    from molgen.transfer import _load

    base, pretrained, encoder_lr = _END_TO_END[features]
    shipped = _load(base)  # the process's shared copy: never trained here
    if pretrained:
        encoder = copy.deepcopy(shipped.encoder).cpu()
    else:
        torch.manual_seed(seed)
        encoder = GraphVAE(copy.deepcopy(shipped.config)).encoder
    model = fit_end_to_end(encoder, train.smiles.tolist(), train.y.to_numpy(), seed=seed, encoder_lr=encoder_lr)
    info = {k: model.report_[k] for k in ("epochs", "best_epoch", "not_encodable")}
    return model.predict(test.smiles.tolist()), np.full(len(test), np.nan), info


def _fit_predict(method: str, train: pd.DataFrame, test: pd.DataFrame, seed: int):
    from molgen.transfer import PropertyModel, embed

    features, head = method.rsplit("+", 1)
    if features in _END_TO_END:
        return _end_to_end(features, train, test, seed)
    if head == "rf":
        from sklearn.ensemble import RandomForestRegressor

        X = embed(features, train.smiles.tolist())  # noqa: N806
        rf = RandomForestRegressor(n_estimators=300, random_state=seed, n_jobs=1).fit(X, train.y)
        return rf.predict(embed(features, test.smiles.tolist())), np.full(len(test), np.nan), {}
    model = PropertyModel(features, head, seed=seed).fit((train.smiles.tolist(), train.y.to_numpy()))
    pred = model.predict(test.smiles.tolist())
    return pred["mean"].to_numpy(), pred["std"].to_numpy(), {}


def _load(dataset: str | None, data, smiles_col: str, target: str | None,
          need_target: bool = True) -> tuple[pd.DataFrame, str | None, str]:  # fmt: skip
    from molgen import datasets, io

    if dataset is not None:
        df = datasets.load(dataset)
        info = datasets.info(dataset)
        target = target or (info.targets[0] if info.targets else None)
        label = dataset
    elif isinstance(data, pd.DataFrame):
        df, label = data, "table"
    elif data is not None:
        df, label = io.read_table(data, smiles_col=None if smiles_col == "smiles" else smiles_col), Path(data).stem
        smiles_col = "smiles"
    else:
        raise InputError("give a dataset name or data (a file or a DataFrame)")
    if smiles_col not in df.columns:
        raise InputError(f"no {smiles_col!r} column; columns: {list(df.columns)}")
    has_target = target is not None and target in df.columns
    if not has_target and need_target:
        raise InputError(f"target column {target!r} not found; columns: {list(df.columns)}")
    y = pd.to_numeric(df[target], errors="coerce") if has_target else pd.Series(0.0, index=df.index)
    canon = [chem.canonicalize(s) if isinstance(s, str) else None for s in df[smiles_col]]
    table = pd.DataFrame({"smiles": canon, "y": y.to_numpy()})
    bad = table.smiles.isna() | ~np.isfinite(table.y)
    if not has_target:
        return (table[~bad].drop_duplicates("smiles").reset_index(drop=True), None,
                f"{label}: {len(df):,} rows, {int(bad.sum()):,} without a molecule, "
                f"{len(set(table.smiles[~bad])):,} distinct molecules (no property column)")  # fmt: skip
    table = table[~bad].groupby("smiles", sort=False, as_index=False)["y"].mean()
    return table, target, f"{label}: {len(df):,} rows, {int(bad.sum()):,} without a molecule or a finite {target}, " \
                          f"{len(table):,} distinct molecules"


def experiment(dataset: str | None = None, data=None, target: str | None = None, smiles_col: str = "smiles",
               sizes: Sequence[int | str] = (25, 50, 100, 200, 500, "all"), seeds: Sequence[int] = (0, 1, 2),
               methods: Sequence[str] | None = None, out: str | os.PathLike | None = None,
               test_fraction: float = 0.2, progress: bool = True, tasks: Sequence[str] | None = None,
               generator: str = "smiles-gpt-moses-small", eval_samples: int = 1000, steps: int = 150,
               forgetting_molecules: int = 2000) -> pd.DataFrame:  # fmt: skip
    """Transfer against no transfer on a scaffold split: property prediction from pretrained features
    against fingerprint baselines, and generation from a fine-tuned generator against the pretrained
    one and the same architecture from scratch.

    Args:
        dataset: a named data set (``molgen datasets``), or ``data``: a file or DataFrame.
        target: the property column (a named data set's first target by default); generation alone
            needs none.
        sizes: training-set sizes; ``"all"`` takes every non-test molecule. Sizes larger than
            the pool are skipped and said so.
        seeds: one run per seed and size (which training molecules are drawn; the test set is fixed).
        methods: from :data:`METHODS` (property) and
            :data:`~molgen.experiment_generation.GEN_METHODS` (generation); ``None``: each task's defaults
            (:data:`DEFAULT_METHODS`, every generation method).
        out: folder for ``results.csv``, ``results.md``, ``learning_curve*.png``, ``splits/``.
        tasks: ``"property"``, ``"generation"`` or both; ``None``: both when the data has the property
            column, generation alone when it has none.
        generator, eval_samples, steps, forgetting_molecules: generation: the pretrained GPT, the
            molecules sampled from each model, the training steps of each fine-tuned or scratch model
            (early stopping may stop sooner), the MOSES test molecules scored for forgetting (0: none).

    Returns:
        The results table (also written to ``out``, after every training set, so an interrupted run
        keeps what it finished).
    """
    from molgen.experiment_generation import GEN_METHODS, generation_rows

    if tasks is not None:
        stray = [t for t in tasks if t not in TASKS]
        if stray or not tasks:
            raise InputError(f"unknown tasks {stray or list(tasks)}; choose from {list(TASKS)}")
    unknown = [m for m in methods or () if m not in METHODS and m not in GEN_METHODS]
    if unknown:
        raise InputError(f"unknown methods {unknown}; choose from {list(METHODS)} (property) or "
                         f"{list(GEN_METHODS)} (generation)")  # fmt: skip
    chosen = {"property": [m for m in methods if m in METHODS] if methods is not None else list(DEFAULT_METHODS),
              "generation": [m for m in methods if m in GEN_METHODS] if methods is not None else list(GEN_METHODS)}
    if tasks is None:  # the tasks the methods name; property only where the data has its column
        tasks = [t for t in TASKS if chosen[t]]
        table, target, summary = _load(dataset, data, smiles_col, target, need_target=tasks == ["property"] or target is not None)
        tasks = [t for t in tasks if t == "generation" or target is not None]
    else:
        table, target, summary = _load(dataset, data, smiles_col, target, need_target="property" in tasks)
    chosen = {t: chosen[t] for t in tasks}
    idle = [t for t, m in chosen.items() if not m]
    if idle:
        raise InputError(f"no method of the {idle[0]} task among the methods {list(methods)}")
    test_mask = scaffold_split(table.smiles.tolist(), test_fraction, seed=0)
    test, pool = table[test_mask].reset_index(drop=True), table[~test_mask].reset_index(drop=True)
    if len(test) < 10 or len(pool) < 10:
        raise InputError(f"too few molecules for a split: {summary}")
    plan = []
    for size in sizes:
        n = len(pool) if size == "all" else int(size)
        if n > len(pool):
            print(f"size {n} skipped: only {len(pool)} molecules outside the test set")
            continue
        plan.extend((n, size == "all", seed) for seed in (seeds if n < len(pool) else seeds[:1]))
    out = Path(out) if out is not None else None
    moses = None
    if "generation" in chosen and forgetting_molecules:
        from molgen.datasets import moses_sample

        moses = moses_sample("test", forgetting_molecules, 0)
    rows = []
    from molgen.parallel import progress_bar

    total = len(plan) * sum(len(m) for m in chosen.values())
    with progress_bar(progress, "transfer experiment", total) as advance:
        for n, is_all, seed in plan:
            train = pool.sample(n=n, random_state=seed) if not is_all else pool
            if out is not None:
                split = pd.concat([train.assign(set="train"), test.assign(set="test")])
                split = split.rename(columns={"y": target}) if target is not None else split.drop(columns="y")
                with atomic_path(out / "splits" / f"{n}_{seed}.csv") as tmp:
                    split.to_csv(tmp, index=False)
            for method in chosen.get("property", ()):
                t0 = time.perf_counter()
                with warnings.catch_warnings():  # a GP at its bounds on 25 molecules is a result, not news
                    warnings.simplefilter("ignore")
                    mean, std, info = _fit_predict(method, train, test, seed)
                rows.append({"task": "property", "method": method, "size": n, "seed": seed,
                             **_metrics(test.y.to_numpy(), mean, std), "seconds": round(time.perf_counter() - t0, 2),
                             **info})  # fmt: skip
                advance(1)
            if "generation" in chosen:
                rows += generation_rows(train.smiles.tolist(), test.smiles.tolist(), n, seed, chosen["generation"],
                                        generator, steps, eval_samples, moses, advance=advance)  # fmt: skip
            if out is not None:
                _write(pd.DataFrame(rows), out, target, summary, test_fraction, len(test))
    return pd.DataFrame(rows)


def _write(results: pd.DataFrame, out: Path, target: str | None, summary: str, test_fraction: float, n_test: int) -> None:
    from molgen.experiment_generation import markdown as generation_markdown

    with atomic_path(out / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    lines = [f"# Transfer experiment: {target or summary.split(':')[0]}", "", summary + f"; scaffold split, fixed test "
             f"set of {n_test} molecules ({test_fraction:.0%})."]  # fmt: skip
    prop = results[results["task"] == "property"]
    if not prop.empty:
        agg = prop.groupby(["method", "size"])["rmse"].agg(["mean", "std"]).reset_index()
        wide = agg.assign(cell=[f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}" for m, s in zip(agg["mean"], agg["std"], strict=True)])
        wide = wide.pivot(index="method", columns="size", values="cell")
        lines += ["", "Test RMSE (mean ± sd over seeds), by training size:", "",
                  "| method | " + " | ".join(str(c) for c in wide.columns) + " |",
                  "|---|" + "---|" * len(wide.columns)]  # fmt: skip
        lines += ["| " + m + " | " + " | ".join(str(v) if isinstance(v, str) else "" for v in row) + " |"
                  for m, row in wide.iterrows()]
        _plot(agg, out / "learning_curve.png", f"test RMSE ({target})", "Transfer vs. baselines, scaffold split")
    gen = results[results["task"] == "generation"]
    if not gen.empty:
        lines += generation_markdown(results)
        agg = gen.groupby(["method", "size"], sort=False)["fcd"].agg(["mean", "std"]).reset_index()
        _plot(agg, out / "learning_curve_generation.png", "FCD to the held-out molecules",
              "Generation: pretrained, scratch and fine-tuned")  # fmt: skip
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_json(out / "experiment.json", {"target": target, "summary": summary, "n_test": n_test,
                                         "test_fraction": test_fraction})


def _plot(agg: pd.DataFrame, path: Path, ylabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, part in agg.groupby("method", sort=False):
        ax.errorbar(part["size"], part["mean"], yerr=part["std"].fillna(0), marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("training molecules")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
