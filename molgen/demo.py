"""The main job on shipped defaults: the whole mission, from the pretrained models to candidates.

``molgen demo`` (and ``make demo``) runs :func:`run_demo`: the shipped models against MOSES, then
transfer to a small target set (the ``chembl2321810`` series by default, or the user's own file),
a property model on frozen features, property-guided optimisation from the fine-tuned generator,
the candidates judged against the target set, and ``report.html``.

:func:`compare_pretrained` is the distribution-learning table. Beside each model it evaluates a
sample of the MOSES test set of the same size, scored the same way: FCD depends strongly on the
number of molecules, so that row is the floor a perfect generator would reach at this ``n``.

Result folders are named after their source with anything but letters, digits, ``.``, ``_`` and
``-`` replaced by ``_`` (no spaces); :func:`short_labels` gives the short column labels of the
terminal table (``gpt``, ``gpt-small``, ``vae``, ``moses-test``) and :func:`legend` the line that
spells them out.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from molgen.errors import InputError
from molgen.files import atomic_path, write_json
from molgen.io import write_table

#: the columns of the summary table, in order (MOSES key names)
SUMMARY_KEYS = ("valid", "unique@1000", "Novelty", "FCD/Test", "SNN/Test", "Frag/Test", "Scaf/Test",
                "IntDiv", "Filters")

#: the source name (and folder) of the MOSES-test sample evaluated beside the models
REFERENCE_ROW = "moses-test"
#: the models of the distribution-learning table: the three pretrained on MOSES as it is (a conditional
#: variant such as smiles-gpt-moses-small-cond is measured against the properties it was asked for instead)
PRETRAINED = ("graph-vae-moses", "smiles-gpt-moses", "smiles-gpt-moses-small")
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
    for name in [m for m in PRETRAINED if m in shipped_models()] if models is None else models:
        out[name] = sample(load_pretrained(name), n, seed=seed)
    test = pd.Series(moses_smiles("test"))
    out[REFERENCE_ROW] = pd.DataFrame({"smiles": test.sample(n=min(n, len(test)), random_state=seed).tolist()})
    return out


def compare_pretrained(out_dir: str | Path = "results/demo", n: int = 2000, seed: int = 0,
                       models: list[str] | None = None, n_jobs: int = 2, progress: bool = True) -> pd.DataFrame:
    """Sample ``n`` molecules from each model, score them, evaluate them against MOSES.

    Args:
        out_dir: folder for ``<source>/molecules.csv`` (one row per molecule, scored),
            ``<source>/metrics.json`` and ``summary.csv``.
        n: molecules per source; FCD is only comparable between sources at the same ``n``.
        seed: sampling seed (same seed, same molecules).
        models: shipped model names or checkpoint folders (default: :data:`PRETRAINED`).

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


# --- the mission: transfer to a small target set and guide generation toward its property ------------

#: the shipped target set the demo adapts to: one ChEMBL congeneric series with a pIC50-like activity
DEFAULT_TARGET, DEFAULT_TARGET_COL = "chembl2321810", "activity"
#: the result file of the whole run (every stage's figures and settings; also what a rerun checks)
MISSION_FILE = "mission.json"
CANDIDATE_COLUMNS = ("smiles", "score", "predicted", "predicted_std", "qed", "sa", "logp", "mw", "tpsa",
                     "nearest_target", "nearest_target_similarity", "nearest_target_value", "shares_target_scaffold",
                     "step", "oracle_call")  # fmt: skip


@dataclass
class Target:
    """A target set made ready: valid molecules with a finite property, split into train and held out."""

    name: str
    column: str
    table: pd.DataFrame  # smiles (canonical), value; one row per molecule
    train: pd.DataFrame
    held_out: pd.DataFrame
    skipped: dict[str, int]


def load_target(data, target_col: str, smiles_col: str | None = None, n_train: int | None = None,
                seed: int = 0) -> Target:  # fmt: skip
    """Read a target set (a named data set, a molecule file or a DataFrame) for the mission.

    Rows without a readable molecule or a finite ``target_col`` value are skipped and counted;
    duplicate molecules are merged, their values averaged (counted). ``n_train`` molecules (default:
    100, or 80 % of a smaller set) are drawn, seeded, to learn from; the rest are held out to judge
    the fine-tuned generator and the property model.
    """
    from molgen import chem
    from molgen.data import target_split
    from molgen.io import read_table

    name = str(data) if not isinstance(data, pd.DataFrame) else "table"
    if isinstance(data, pd.DataFrame):
        df = data.rename(columns={smiles_col: "smiles"}) if smiles_col else data
    elif Path(str(data)).exists():
        df = read_table(data, smiles_col=smiles_col)
    else:
        from molgen import datasets

        if str(data) not in datasets.list()["name"].tolist():
            raise InputError(f"{data}: neither a file nor a data set name ({', '.join(datasets.list()['name'])})")
        df = datasets.load(str(data))
    if "smiles" not in df.columns:
        raise InputError(f"{name}: no 'smiles' column (give --smiles-col); columns: {', '.join(map(str, df.columns))}")
    if target_col not in df.columns:
        raise InputError(f"{name}: no column {target_col!r} (give --target-col); columns: "
                         f"{', '.join(map(str, df.columns))}")  # fmt: skip
    values = pd.to_numeric(df[target_col], errors="coerce").to_numpy(dtype=float)
    canon = [chem.canonicalize(s) if isinstance(s, str) else None for s in df["smiles"]]
    finite = np.isfinite(values)
    readable = np.array([c is not None for c in canon], dtype=bool)
    skipped = {"unreadable_molecule": int((~readable).sum()), "no_finite_value": int((readable & ~finite).sum())}
    table = pd.DataFrame({"smiles": np.asarray(canon, dtype=object)[readable & finite],
                          "value": values[readable & finite]})  # fmt: skip
    merged = table.groupby("smiles", sort=False, as_index=False)["value"].mean()
    skipped["duplicates_averaged"] = len(table) - len(merged)
    if len(merged) < 10:
        raise InputError(f"{name}: only {len(merged)} usable molecules with a {target_col} value ({skipped}); "
                         "the mission needs at least 10")  # fmt: skip
    n_train = n_train if n_train is not None else min(100, int(0.8 * len(merged)))
    train, held = target_split(len(merged), n_train, seed)
    return Target(name, target_col, merged, merged.iloc[train].reset_index(drop=True),
                  merged.iloc[held].reset_index(drop=True), skipped)


def _objective_toml(target: Target, higher_is_better: bool) -> str:
    """The demo's objective: the predicted property (twice the weight), QED, easy synthesis, no alerts.

    The property's window runs from the training set's median to its best value plus half a
    standard deviation, so that the optimiser is rewarded for going past the best known molecules.
    """
    v = target.train["value"]
    lo, hi = (v.median(), v.max() + 0.5 * v.std()) if higher_is_better else (v.min() - 0.5 * v.std(), v.median())
    kind = "sigmoid" if higher_is_better else "reverse_sigmoid"
    return f"""# Written by molgen demo: edit it and rerun `molgen optimize` with an optimize TOML that names it.
description = "predicted {target.column} ({'higher' if higher_is_better else 'lower'} is better), QED, easy synthesis, no PAINS/Brenk alerts"
aggregate = "geometric"

[[component]]
kind = "property_model"
path = "property_model"          # fitted on the training molecules from frozen graph-VAE features
name = "predicted"
weight = 2.0
transform = {{ type = "{kind}", low = {lo:.3f}, high = {hi:.3f}, k = 0.5 }}

[[component]]
kind = "qed"
weight = 1.0

[[component]]
kind = "sa"
weight = 1.0
transform = {{ type = "reverse_sigmoid", low = 2.5, high = 5.5, k = 0.5 }}

[[component]]
kind = "alerts"
sets = ["pains", "brenk"]
weight = 1.0
"""


def _fit_property(target: Target, out: Path, features: str, head: str, seed: int) -> dict:
    """Fit on the training molecules, judge on the held-out ones; the judged model is the one that guides.

    (A refit on every target molecule would guide with a model nobody judged, and the Gaussian
    process's fit grows with the cube of the molecules: minutes at a thousand on two cores.)
    """
    from scipy.stats import spearmanr

    from molgen.transfer import PropertyModel

    model = PropertyModel(features, head=head, seed=seed).fit(target.train, target="value")
    pred = model.predict(target.held_out["smiles"].tolist())
    ok = pred["mean"].notna().to_numpy()
    y, m, s = target.held_out["value"].to_numpy()[ok], pred["mean"].to_numpy()[ok], pred["std"].to_numpy()[ok]
    model.save(out)
    return {"features": features, "head": head, "n_train": int(model.report_["used"]), "n_held_out": int(ok.sum()),
            "held_out_not_encodable": int((~ok).sum()),
            "skipped": {k: v for k, v in model.report_.items() if k not in ("rows", "used")},
            "rmse": float(np.sqrt(np.mean((m - y) ** 2))), "mae": float(np.mean(np.abs(m - y))),
            "spearman": float(spearmanr(m, y).statistic) if len(y) > 2 else math.nan,
            "within_1sd": float(np.mean(np.abs(m - y) <= s)) if np.isfinite(s).all() else math.nan,
            "baseline_rmse": float(np.sqrt(np.mean((y - target.train["value"].mean()) ** 2)))}  # fmt: skip


def _candidates(molecules: pd.DataFrame, target: Target, model_dir: Path, top: int, n_jobs: int) -> pd.DataFrame:
    """The best distinct molecules of an optimisation, scored, with their nearest target molecule.

    Kept: valid, score > 0, no structural alert, not one of the target molecules. Ranked by score.
    """
    from rdkit import DataStructs

    from molgen import chem
    from molgen.score import score
    from molgen.transfer import PropertyModel

    alerts = molecules["alerts"] if "alerts" in molecules else 0
    keep = molecules[(molecules["score"] > 0) & (alerts == 0) & ~molecules["smiles"].isin(set(target.table["smiles"]))]
    keep = keep.sort_values(["score", "oracle_call"], ascending=[False, True]).drop_duplicates("smiles").head(top)
    keep = keep.reset_index(drop=True)
    if keep.empty:
        return pd.DataFrame(columns=list(CANDIDATE_COLUMNS))
    scored = score(keep["smiles"].tolist(), properties=["qed", "sa", "logp", "mw", "tpsa"], n_jobs=n_jobs,
                   progress=False)  # fmt: skip
    pred = PropertyModel.load(model_dir).predict(keep["smiles"].tolist())
    ref = chem.morgan_fps(target.table["smiles"])
    held_scaffolds = {chem.scaffold(s) for s in target.table["smiles"]} - {None}
    nearest, sims, values = [], [], []
    for fp in chem.morgan_fps(keep["smiles"]):
        sim = np.asarray(DataStructs.BulkTanimotoSimilarity(fp, ref))
        j = int(sim.argmax())
        nearest.append(target.table["smiles"].iloc[j])
        sims.append(float(sim[j]))
        values.append(float(target.table["value"].iloc[j]))
    out = pd.DataFrame({"smiles": keep["smiles"], "score": keep["score"], "predicted": pred["mean"].to_numpy(),
                        "predicted_std": pred["std"].to_numpy(),
                        **{p: scored[p].to_numpy() for p in ("qed", "sa", "logp", "mw", "tpsa")},
                        "nearest_target": nearest, "nearest_target_similarity": sims, "nearest_target_value": values,
                        "shares_target_scaffold": [chem.scaffold(s) in held_scaffolds for s in keep["smiles"]],
                        "step": keep["step"], "oracle_call": keep["oracle_call"]})  # fmt: skip
    return out[list(CANDIDATE_COLUMNS)]


def _shift(sets: dict[str, list[str]], model_dir: Path, target: Target) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predicted property per set of molecules (mean, quartiles, best): where guidance moved the samples.

    The sets: the target's training molecules (their measured values), the parent generator's and the
    fine-tuned generator's valid samples, the candidates (predicted values).

    Returns the summary (one row per set, the target's measured values first) and the values
    (``set, smiles, value``, one row per molecule).
    """
    from molgen.transfer import PropertyModel

    model = PropertyModel.load(model_dir)
    label = "target (measured)"
    values = [pd.DataFrame({"set": label, "smiles": target.train["smiles"], "value": target.train["value"]})]
    for name, smiles in sets.items():
        if smiles:
            values.append(pd.DataFrame({"set": name, "smiles": smiles, "value": model.predict(smiles)["mean"].to_numpy()}))
    table = pd.concat(values, ignore_index=True)
    rows = [{"set": name, "n": len(part), **_quartiles(part["value"].to_numpy(float))}
            for name, part in table.groupby("set", sort=False)]  # fmt: skip
    return pd.DataFrame(rows), table


def _quartiles(v: np.ndarray) -> dict:
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": math.nan, "q25": math.nan, "median": math.nan, "q75": math.nan, "max": math.nan}
    q = np.percentile(v, [25, 50, 75])
    return {"mean": float(v.mean()), "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2]), "max": float(v.max())}


@dataclass
class DemoSettings:
    """What a demo run does; a rerun into the same folder continues it only with the same settings."""

    data: str = DEFAULT_TARGET
    target_col: str = DEFAULT_TARGET_COL
    smiles_col: str | None = None
    higher_is_better: bool = True
    n_train: int | None = None
    base: str = "smiles-gpt-moses-small"
    finetune_steps: int = 150
    features: str = "graph-vae-moses"
    head: str = "gp"
    budget: int = 2000
    candidates: int = 100
    n: int = 2000  # molecules per pretrained model in the distribution-learning table; 0 leaves it out
    eval_samples: int = 500
    seed: int = 0


STAGES = ("pretrained", "target", "finetune", "property_model", "optimize", "candidates", "report")


def run_demo(out_dir: str | Path = "results/demo", settings: DemoSettings | None = None, n_jobs: int = 2,
             progress: bool = True, overwrite: bool = False, log: Callable[[str], None] | None = print,
             **overrides) -> dict:  # fmt: skip
    """The whole mission on shipped defaults (``molgen demo``, ``make demo``).

    1. ``pretrained``: the distribution-learning table of the shipped models against MOSES
       (:func:`compare_pretrained`; ``n=0`` leaves it out).
    2. ``target``: read the target set (:func:`load_target`): a seeded training split and the rest held out.
    3. ``finetune``: fine-tune ``base`` on the training molecules (:func:`molgen.finetune.finetune`),
       measured before and after against the held-out molecules.
    4. ``property_model``: a property model on frozen graph-VAE features (Gaussian process: a mean and
       a std) fitted on the training molecules and judged on the held-out ones.
    5. ``optimize``: reinforcement learning from the fine-tuned generator (:func:`molgen.guide.rl.optimize`)
       toward the objective written to ``objective.toml``: the predicted property, QED, SA, no alerts,
       within ``budget`` oracle calls.
    6. ``candidates``: the best distinct new molecules, scored, each with its nearest target molecule
       (``candidates.csv``), judged against the target set; the predicted property of the target set,
       the parent's, the fine-tuned model's and the candidates' samples side by side.
    7. ``report``: ``report.html`` (:func:`molgen.report.report`).

    ``mission.json`` holds every stage's figures. A rerun into the same folder with the same settings
    keeps the finished stages and continues (an interrupted optimisation resumes); other settings are
    refused unless ``overwrite``.

    Args:
        settings: a :class:`DemoSettings`; keyword ``overrides`` change single fields (``budget=500``).
        log: called with one line per stage; ``None`` for silence.
    """
    import dataclasses

    settings = dataclasses.replace(settings or DemoSettings(), **overrides)
    out = Path(out_dir)
    say = log or (lambda _line: None)
    state = _open_run(out, settings, overwrite)
    total = time.perf_counter()

    def stage(name: str, fn: Callable[[], dict | None], what: str) -> None:
        k = STAGES.index(name) + 1
        if name in state["stages"]:
            say(f"[{k}/{len(STAGES)}] {what}: done in an earlier run, kept")
            return
        say(f"[{k}/{len(STAGES)}] {what}")
        start = time.perf_counter()
        figures = fn() or {}
        state["stages"][name] = {**figures, "seconds": round(time.perf_counter() - start, 1)}
        write_json(out / MISSION_FILE, state)

    if settings.n:
        stage("pretrained", lambda: {"summary": compare_pretrained(
            out, n=settings.n, seed=settings.seed, n_jobs=n_jobs, progress=progress).to_dict("records")},
            f"the shipped models against MOSES ({settings.n:,} molecules each)")  # fmt: skip
    target = load_target(settings.data, settings.target_col, settings.smiles_col, settings.n_train, settings.seed)
    stage("target", lambda: _write_target(out, target), f"target set {target.name} ({target.column})")
    stage("finetune", lambda: _finetune(out, target, settings),
          f"fine-tuning {settings.base} on {len(target.train)} target molecules")
    stage("property_model", lambda: _fit_property(target, out / "property_model", settings.features, settings.head,
                                                 settings.seed),  # fmt: skip
          f"property model: frozen {settings.features} features + {settings.head}")
    stage("optimize", lambda: _optimize(out, target, settings, log),
          f"optimisation from the fine-tuned generator ({settings.budget:,} oracle calls)")
    stage("candidates", lambda: _judge(out, target, settings, n_jobs),
          f"candidates: the best {settings.candidates} new molecules, judged against the target set")
    stage("report", lambda: {"path": str(_report(out, target))}, "report")
    state["seconds"] = round(time.perf_counter() - total, 1)
    write_json(out / MISSION_FILE, state)
    say(f"done: {out / 'candidates.csv'} and {out / 'report.html'}")
    return state


def _open_run(out: Path, settings: DemoSettings, overwrite: bool) -> dict:
    """The run's state: a fresh one, or the earlier run in ``out`` when its settings are the same."""
    import dataclasses
    import shutil

    wanted = dataclasses.asdict(settings)
    path = out / MISSION_FILE
    ours = [out / p for p in ("target", "finetune", "property_model", "optimize", "candidates.csv", "objective.toml")]
    if path.is_file() and not overwrite:
        state = json.loads(path.read_text())
        if state.get("settings") != wanted:
            diff = sorted(k for k in wanted if state.get("settings", {}).get(k) != wanted[k])
            raise InputError(f"{out} holds a demo run with other settings ({', '.join(diff)}): choose another "
                             "--out, or --overwrite to replace it")  # fmt: skip
        for name in ("finetune", "property_model"):  # a stage cut short is redone from its start
            if name not in state["stages"] and (out / name).exists():
                shutil.rmtree(out / name)
        return state
    there = [p for p in ours if p.exists()]
    if there and not overwrite:
        raise InputError(f"{out} already holds {', '.join(p.name for p in there)} but no {MISSION_FILE}: choose "
                         "another --out, or --overwrite to replace them")  # fmt: skip
    for p in there:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    from molgen import __version__

    state = {"molgen": __version__, "settings": wanted, "stages": {}}
    write_json(path, state)
    return state


def _write_target(out: Path, target: Target) -> dict:
    folder = out / "target"
    folder.mkdir(parents=True, exist_ok=True)
    for part, table in (("train", target.train), ("held_out", target.held_out)):
        write_table(table.rename(columns={"value": target.column}), folder / f"{part}.csv")
    return {"name": target.name, "column": target.column, "n": len(target.table), "n_train": len(target.train),
            "n_held_out": len(target.held_out), "skipped": target.skipped,
            "scaffold": target_scaffold(target.train["smiles"].tolist())}  # fmt: skip


def target_scaffold(smiles: list[str], timeout: int = 10) -> str | None:
    """The maximum common substructure of a series (SMARTS; RDKit FMCS), for highlighting in grids;
    ``None`` when the molecules share fewer than 6 atoms."""
    from rdkit import Chem
    from rdkit.Chem import rdFMCS

    from molgen import chem

    mols = [m for m in (chem.to_mol(s) for s in smiles) if m is not None]
    if len(mols) < 2:
        return None
    found = rdFMCS.FindMCS(mols, timeout=timeout, threshold=0.8, ringMatchesRingOnly=True, completeRingsOnly=True)
    if found.numAtoms < 6:
        return None
    # as SMILES, read from the first molecule that holds it: shorter to read than the query's SMARTS
    query = Chem.MolFromSmarts(found.smartsString)
    for mol in mols:
        match = mol.GetSubstructMatch(query)
        if match:
            return Chem.MolFragmentToSmiles(mol, atomsToUse=list(match), canonical=True)
    return found.smartsString


def _finetune(out: Path, target: Target, s: DemoSettings) -> dict:
    from molgen.finetune import finetune

    # the whole set in target order with n_train: finetune() draws the same training rows (same seed)
    _, report = finetune(s.base, target.table[["smiles"]], n_train=len(target.train), max_steps=s.finetune_steps,
                         out=out / "finetune", eval_samples=s.eval_samples, lr=5e-4, val_every_steps=15,
                         patience=4, seed=s.seed)  # fmt: skip
    keys = ("valid", "unique", "novel_target", "FCD", "SNN", "scaffold_share", "IntDiv", "held_out_nll_common")
    return {"export": report["export"], "steps": report["steps"], "context": report["context"],
            "before": {k: report["before"].get(k) for k in keys}, "after": {k: report["after"].get(k) for k in keys}}


def _optimize(out: Path, target: Target, s: DemoSettings, log) -> dict:
    from molgen.guide.rl import optimize

    objective = out / "objective.toml"
    if not objective.is_file():
        with atomic_path(objective) as tmp:
            tmp.write_text(_objective_toml(target, s.higher_is_better))
    config = {"prior": str(out / "finetune" / "export"), "objective": str(objective), "budget": s.budget,
              "out": str(out / "optimize"), "batch_size": 64, "seed": s.seed}  # fmt: skip
    resume = (out / "optimize" / "optimize.csv").is_file()
    result = optimize(config, resume=resume, log=log)
    top = result.top(10)
    return {"calls": result.calls_used, "stopped": result.stop_reason, "best": float(top["score"].max()),
            "top10_mean": float(top["score"].mean())}  # fmt: skip


def _judge(out: Path, target: Target, s: DemoSettings, n_jobs: int) -> dict:
    """candidates.csv, their figures against the target set, and the predicted-property shift."""
    from molgen.finetune import SAMPLES
    from molgen.metrics import evaluate
    from molgen.models import load_pretrained
    from molgen.sample import sample

    molecules = pd.read_csv(out / "optimize" / "optimize.csv")
    cands = _candidates(molecules, target, out / "property_model", s.candidates, n_jobs)
    write_table(cands, out / "candidates.csv")
    figures: dict = {"n": len(cands)}
    if len(cands) >= 2:
        m = evaluate(cands["smiles"].tolist(), reference=target.held_out["smiles"].tolist(), train=None, extra=False,
                     n_jobs=n_jobs, progress=False)  # fmt: skip
        figures.update({"SNN_to_held_out": m["SNN/Test"], "Scaf_to_held_out": m["Scaf/Test"], "IntDiv": m["IntDiv"],
                        "shares_target_scaffold": float(cands["shares_target_scaffold"].mean()),
                        "mean_nearest_similarity": float(cands["nearest_target_similarity"].mean()),
                        "mean_qed": float(cands["qed"].mean()), "mean_sa": float(cands["sa"].mean())})  # fmt: skip
    # the samples the fine-tuning report measured (same models, number and seed); drawn again only for a
    # fine-tuning run from before finetune() kept them
    samples = {}
    for label, model in (("parent", s.base), ("fine-tuned", str(out / "finetune" / "export"))):
        kept = out / "finetune" / SAMPLES[label]
        samples[label] = pd.read_csv(kept) if kept.is_file() else sample(load_pretrained(model), s.eval_samples, seed=s.seed)
    sets = {"parent samples": _valid(samples["parent"]), "fine-tuned samples": _valid(samples["fine-tuned"]),
            "candidates": cands["smiles"].tolist()}
    shift, predicted = _shift(sets, out / "property_model", target)
    with atomic_path(out / "property_shift.csv") as tmp:
        shift.to_csv(tmp, index=False)
    with atomic_path(out / "predicted.csv") as tmp:  # one row per molecule and set: the report's histogram
        predicted.to_csv(tmp, index=False)
    figures["shift"] = shift.to_dict("records")
    return figures


def _valid(samples: pd.DataFrame) -> list[str]:
    return samples.loc[samples["valid"], "smiles"].tolist()


def _report(out: Path, target: Target) -> Path:
    from molgen.report import report

    state = json.loads((out / MISSION_FILE).read_text())
    return report(out, scaffold=state["stages"].get("target", {}).get("scaffold"))
