"""One self-contained HTML page of a run folder: tables, molecule grids, distributions, curves.

``molgen report RUN_DIR`` (``mg.report(run_dir)``) looks at what the folder holds and renders a
section for each kind it finds; it never needs the network (no CDN, no web fonts): molecules are
inline SVG, plots base64 PNG, so the one file can be mailed or archived. What it recognises:

- a demo run (``molgen demo``): ``mission.json`` (the stages' figures), ``candidates.csv`` and
  ``predicted.csv``: the mission's tables, the candidates as a grid, the predicted-property shift;
  ``summary.csv`` and source folders with ``metrics.json`` and a scored
  ``molecules.csv``: the metrics table (one column per source), grids of the best molecules by QED,
  and property histograms of each source against the ``moses-test`` reference sample;
- a transfer experiment (``molgen experiment transfer``): ``results.csv`` (+ ``experiment.json``,
  ``learning_curve.png``): test RMSE, mean ± sd by method and training size, and the curve;
- an optimisation log: ``optimize.csv``, or a ``molecules.csv`` with an ``oracle_call`` column
  (``oracle_call, smiles, score, ...``): best and top-10 mean score against oracle calls, the best molecules;
- training logs: Lightning ``metrics.csv`` files anywhere below the folder (``logs/version_*/``).

Tables are looked for in the folder itself and its immediate sub-folders; training logs at any depth.
Every piece of text from a file is escaped. A ``scaffold`` (SMARTS or SMILES) is highlighted in the grids.
"""

from __future__ import annotations

import base64
import datetime
import heapq
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from molgen import callable_module
from molgen.errors import InputError
from molgen.files import atomic_path

__all__ = ["report", "find"]

#: properties shown as histograms, with their axis labels (score.py column names)
PROPERTIES = {"qed": "QED", "sa": "SA score", "logp": "logP", "mw": "MW (Da)", "tpsa": "TPSA (Å²)"}
#: the source folder of the reference sample in a demo run (molgen.demo.REFERENCE_ROW)
REFERENCE = "moses-test"
_PNG = b"\x89PNG\r\n\x1a\n"
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
 max-width:1100px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.meta{color:#666;font-size:.9em} table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right} th:first-child,td:first-child{text-align:left}
tr:nth-child(even){background:#f6f6f6} th{background:#eee} .note{color:#555;font-size:.88em}
img,svg{max-width:100%;height:auto} code{background:#f2f2f2;padding:0 .25em}
details{margin:.3em 0 1em} summary{cursor:pointer;color:#345;font-size:.9em}
"""
# marks how many images failed to decode, so a headless browser can check the page (tests/test_report.py)
_SCRIPT = """window.addEventListener('load',function(){var im=Array.prototype.slice.call(document.images);
document.body.dataset.images=im.length;document.body.dataset.brokenImages=
im.filter(function(i){return !i.complete||i.naturalWidth===0;}).length;});"""


# --- what the folder holds ------------------------------------------------------------------------


def _has_column(path: Path, column: str) -> bool:
    try:
        return column in pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError):
        return False


def find(run_dir: str | Path) -> dict[str, list[Path]]:
    """What :func:`report` would render: kind -> files (``sources`` are folders, the rest files)."""
    run_dir = Path(run_dir)
    folders = [run_dir, *sorted(p for p in run_dir.iterdir() if p.is_dir())]
    found: dict[str, list[Path]] = {"mission": [], "summary": [], "sources": [], "transfer": [], "optimize": [], "training": []}
    for folder in folders:
        mols = folder / "molecules.csv"
        optimising = mols.is_file() and _has_column(mols, "oracle_call")
        if (folder / "metrics.json").is_file() or (mols.is_file() and not optimising):
            found["sources"].append(folder)
        found["optimize"] += [mols] if optimising else []
        found["optimize"] += [p for p in [folder / "optimize.csv"] if p.is_file()]
        found["transfer"] += [p for p in [folder / "results.csv"] if p.is_file()]
    found["summary"] = [p for p in [run_dir / "summary.csv"] if p.is_file()]
    found["mission"] = [p for p in [run_dir / "mission.json"] if p.is_file()]
    found["training"] = sorted(p for p in run_dir.rglob("metrics.csv") if _has_column(p, "step"))
    return {k: v for k, v in found.items() if v}


# --- small HTML pieces ----------------------------------------------------------------------------


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (bool, np.bool_, str)):
        return str(v)
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer() and abs(v) >= 100):
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}" if abs(v) >= 10 else f"{v:.3f}"


def _table(header: list, rows: list[list], bold: set[tuple[int, int]] = frozenset()) -> str:
    """An HTML table; every cell escaped (numbers formatted by :func:`_fmt`); ``bold`` holds (row, col)."""
    def cell(i, j, v):
        text = _e(v if isinstance(v, str) else _fmt(v))
        return f"<td><b>{text}</b></td>" if (i, j) in bold else f"<td>{text}</td>"

    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(i, j, v) for j, v in enumerate(r)) + "</tr>" for i, r in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(data: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (3.6, 2.8)):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend to pick

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows))
    return fig, np.atleast_1d(fig.subplots(nrows, ncols)).ravel()


def _fig_png(fig, alt: str) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return _png(buf.getvalue(), alt)


# --- molecules ------------------------------------------------------------------------------------


def _query(scaffold: str | None):
    if not scaffold:
        return None
    from rdkit import Chem

    from molgen.chem import quiet

    with quiet():
        query = Chem.MolFromSmiles(scaffold) or Chem.MolFromSmarts(scaffold)
    if query is None:
        raise InputError(f"--scaffold {scaffold!r} is neither SMILES nor SMARTS that RDKit can read")
    return query


def _highlight(mol, query) -> tuple[list[int], list[int]]:
    """Atoms and bonds of every match of ``query`` in ``mol``."""
    if query is None:
        return [], []
    atoms = sorted({a for match in mol.GetSubstructMatches(query) for a in match})
    keep = set(atoms)
    bonds = [b.GetIdx() for b in mol.GetBonds() if b.GetBeginAtomIdx() in keep and b.GetEndAtomIdx() in keep]
    return atoms, bonds


def _grid(table: pd.DataFrame, by: str, legend, query, top: int = 12) -> str:
    """Inline SVG grid of the ``top`` unique valid molecules by column ``by`` (highest first),
    and their SMILES and scores in a folded table to copy from."""
    from rdkit.Chem import Draw

    from molgen.chem import to_mol

    rows = table.dropna(subset=[by]).sort_values(by, ascending=False, kind="stable")
    mols, picked = [], []
    for row in rows.drop_duplicates("smiles").to_dict("records"):
        mol = to_mol(row["smiles"])
        if mol is not None:
            mols.append(mol)
            picked.append(row)
        if len(mols) == top:
            break
    if not mols:
        return '<p class="note">no valid molecules to draw</p>'
    options = Draw.MolDrawOptions()
    options.drawMolsSameScale = False  # each molecule fills its cell: a salt or a small one stays readable
    options.legendFontSize = 18
    highlights = [_highlight(m, query) for m in mols]
    svg = Draw.MolsToGridImage(mols, molsPerRow=4, subImgSize=(260, 220), legends=[legend(r) for r in picked],
                               useSVG=True, drawOptions=options, highlightAtomLists=[h[0] for h in highlights],
                               highlightBondLists=[h[1] for h in highlights])
    svg = getattr(svg, "data", svg)  # IPython's console patch returns an SVG object
    shown = (by, "predicted", "predicted_std", "nearest_target_similarity", "oracle_call", *PROPERTIES)
    cols = ["smiles", *dict.fromkeys(c for c in shown if c in table and c != "smiles")]
    smiles_table = _table(cols, [[r[c] if c != "smiles" else str(r[c]) for c in cols] for r in picked])
    return (f'<div class="grid">{svg[svg.index("<svg"):]}</div>'
            f"<details><summary>SMILES and scores</summary>{smiles_table}</details>")


def _score_legend(row: dict) -> str:
    return "   ".join(f"{name} {row[col]:.2f}" for col, name in (("qed", "QED"), ("sa", "SA"))
                      if col in row and row[col] == row[col])


# --- sections -------------------------------------------------------------------------------------


def _read_sources(folders: list[Path], summary: pd.DataFrame | None) -> dict[str, dict]:
    """Source name -> {"metrics": dict, "molecules": DataFrame | None}, in the summary's order."""
    out = {}
    for folder in folders:
        metrics_file, mols_file = folder / "metrics.json", folder / "molecules.csv"
        out[folder.name] = {"metrics": json.loads(metrics_file.read_text()) if metrics_file.is_file() else {},
                            "molecules": pd.read_csv(mols_file) if mols_file.is_file() else None}
    if summary is not None and "source" in summary:
        from molgen.demo import folder_name

        order = [folder_name(s) for s in summary["source"].astype(str)]
        out = dict(sorted(out.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    return out


def _metrics_section(sources: dict[str, dict], summary: pd.DataFrame | None) -> str:
    names = list(sources)
    keys = [k for s in sources.values() for k in s["metrics"] if k != "caveats"]
    keys = list(dict.fromkeys(keys))
    rows = [[k, *(sources[n]["metrics"].get(k) for n in names)] for k in keys]
    if summary is not None and "source" in summary:
        from molgen.demo import folder_name

        by_name = {folder_name(str(r["source"])): r for r in summary.to_dict("records")}
        rows += [[k, *(by_name.get(n, {}).get(k) for n in names)] for k in summary.columns
                 if k not in keys and k != "source"]
    caveats = [f"{n}: {c}" for n in names for c in sources[n]["metrics"].get("caveats", [])]
    notes = "".join(f"<li>{_e(c)}</li>" for c in caveats)
    return ("<h2 id=\"metrics\">Metrics</h2>" + _table(["metric", *names], rows)
            + '<p class="note">MOSES definitions; <code>/Test</code> against the MOSES test set. The rows '
              "logP, SA, QED and weight are Wasserstein distances to the test set (lower is closer); "
              f"the mean rows are plain means. <code>{REFERENCE}</code> is a test-set sample of the same size, "
              "the floor a perfect generator would reach.</p>" + (f"<ul class=\"note\">{notes}</ul>" if notes else ""))


def _grids_section(sources: dict[str, dict], query, top: int) -> str:
    parts = ['<h2 id="molecules">Best molecules by QED</h2>']
    for name, src in sources.items():
        table = src["molecules"]
        if table is None or "qed" not in table or "smiles" not in table:
            continue
        parts.append(f"<h3>{_e(name)}</h3>" + _grid(table, "qed", _score_legend, query, top))
    return "".join(parts) if len(parts) > 1 else ""


def _distributions_section(sources: dict[str, dict]) -> str:
    tables = {n: s["molecules"] for n, s in sources.items() if s["molecules"] is not None}
    props = [p for p in PROPERTIES if any(p in t for t in tables.values())]
    if not props:
        return ""
    fig, axes = _figure(3, math.ceil(len(props) / 3))
    for ax, prop in zip(axes, props, strict=False):
        values = {n: pd.to_numeric(t[prop], errors="coerce").dropna().to_numpy() for n, t in tables.items() if prop in t}
        pooled = np.concatenate([v for v in values.values() if len(v)] or [np.zeros(1)])
        bins = np.linspace(*np.percentile(pooled, [0.5, 99.5]) + np.array([-1e-9, 1e-9]), 31)
        for name, v in values.items():
            style = (dict(histtype="stepfilled", color="0.6", alpha=0.5) if name == REFERENCE
                     else dict(histtype="step", linewidth=1.6))
            ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, density=True, label=name, **style)
        ax.set_xlabel(PROPERTIES[prop])
        ax.set_yticks([])
    axes[0].legend(fontsize=7)
    for ax in axes[len(props):]:
        ax.set_visible(False)
    return ('<h2 id="distributions">Property distributions</h2>' + _fig_png(fig, "property histograms")
            + f'<p class="note">Densities; grey: the {REFERENCE} reference sample. Values beyond the 0.5–99.5 '
              "percentiles are piled into the end bins.</p>")


def _mission_section(run_dir: Path, state: dict, query, top: int) -> str:
    """The demo's stages: target set, fine-tuning before/after, property model, guidance, candidates."""
    st = state.get("stages", {})
    parts = ['<h2 id="mission">The mission: from the pretrained models to candidates</h2>']
    tgt, ft, fit = st.get("target"), st.get("finetune"), st.get("property_model")
    opt, cand = st.get("optimize"), st.get("candidates")
    if tgt:
        skipped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in tgt.get("skipped", {}).items() if v) or "none"
        parts.append(f"<p>Target set <code>{_e(tgt['name'])}</code>, property <code>{_e(tgt['column'])}</code>: "
                     f"{tgt['n']:,} molecules, {tgt['n_train']:,} to learn from (seeded), {tgt['n_held_out']:,} "
                     f"held out to judge. Rows skipped: {_e(skipped)}."
                     + (f" Common substructure (highlighted): <code>{_e(tgt['scaffold'])}</code>." if tgt.get("scaffold") else "")
                     + "</p>")
    stage_rows = [[name, f"{v.get('seconds', math.nan):.0f} s"] for name, v in st.items() if isinstance(v, dict)]
    if ft:
        parts.append(f"<h3>Fine-tuning the generator ({ft['steps']} steps)</h3>"
                     + _table(["figure", "parent", "fine-tuned"], [[k, ft["before"].get(k), ft["after"].get(k)]
                                                                    for k in ft["before"]])
                     + '<p class="note">Against the held-out target molecules: FCD, SNN, scaffold share; novelty '
                       "against the training molecules; held-out NLL in nats per token over the molecules both "
                       "models can read.</p>")
    if fit:
        parts.append(f"<h3>Property model: frozen {_e(fit['features'])} features + {_e(fit['head'])}</h3>"
                     + _table(["held-out figure", "value"],
                              [["RMSE", fit["rmse"]], ["RMSE of the training mean (no model)", fit["baseline_rmse"]],
                               ["MAE", fit["mae"]], ["Spearman", fit["spearman"]],
                               ["within ±1 sd", fit["within_1sd"]], ["molecules judged", fit["n_held_out"]]])
                     + f'<p class="note">Fitted on the {fit["n_train"]} training molecules, judged on the held-out '
                       "ones; the same model scores the optimisation.</p>")
    if opt:
        parts.append(f"<p>Optimisation: {opt['calls']:,} oracle calls ({_e(opt['stopped'])}); best score "
                     f"{_fmt(opt['best'])}, top-10 mean {_fmt(opt['top10_mean'])}. Curve below.</p>")
    if cand:
        parts.append(_shift_part(run_dir, cand))
        parts.append(_candidates_part(run_dir, cand, query, top))
    parts.append("<h3>Stage times</h3>" + _table(["stage", "time"], stage_rows))
    return "".join(parts)


def _shift_part(run_dir: Path, cand: dict) -> str:
    rows = [[r["set"], r["n"], r["mean"], r["median"], r["q75"], r["max"]] for r in cand.get("shift", [])]
    html_ = ("<h3>Where guidance moved the molecules</h3>"
             + _table(["set", "n", "mean", "median", "75th pct", "max"], rows))
    path = run_dir / "predicted.csv"
    if path.is_file():
        values = pd.read_csv(path)
        fig, (ax,) = _figure(1, size=(7, 3.4))
        finite = values["value"].replace([np.inf, -np.inf], np.nan).dropna()
        if len(finite):
            bins = np.linspace(finite.min() - 1e-9, finite.max() + 1e-9, 31)
            for i, (name, part) in enumerate(values.groupby("set", sort=False)):
                style = (dict(histtype="stepfilled", color="0.6", alpha=0.5) if i == 0
                         else dict(histtype="step", linewidth=1.6))
                ax.hist(part["value"].dropna(), bins=bins, density=True, label=name, **style)
            ax.set_xlabel("property (measured for the target set, predicted for the others)")
            ax.set_yticks([])
            ax.legend(fontsize=7)
            html_ += _fig_png(fig, "predicted property shift")
    return html_ + ('<p class="note">Predictions of the property model; far from its training molecules they are '
                    "extrapolations (see <code>predicted_std</code> in candidates.csv).</p>")


def _candidates_part(run_dir: Path, cand: dict, query, top: int) -> str:
    path = run_dir / "candidates.csv"
    if not path.is_file():
        return ""
    table = pd.read_csv(path)
    figures = [[k.replace("_", " "), v] for k, v in cand.items() if k not in ("shift", "seconds") and not isinstance(v, dict)]

    def legend(r: dict) -> str:
        std = f"±{r['predicted_std']:.1f}" if r.get("predicted_std") == r.get("predicted_std") else ""
        return f"pred {r['predicted']:.2f}{std}  QED {r['qed']:.2f}  sim {r['nearest_target_similarity']:.2f}"

    return (f"<h3>Candidates ({len(table)} in <code>candidates.csv</code>)</h3>" + _table(["figure", "value"], figures)
            + _grid(table, "score", legend, query, top)
            + '<p class="note">New molecules (none of the target set), no PAINS/Brenk alert, ranked by the objective\'s '
              "score; <i>pred</i>: predicted property ± sd, <i>sim</i>: Tanimoto similarity (Morgan, r 2) to the "
              "nearest target molecule.</p>")


def _mean_sd(row) -> str:
    return _fmt(row.mean) + (f" ± {_fmt(row.std)}" if math.isfinite(row.std) else "")  # one seed: no sd


def _transfer_section(path: Path, k: int) -> str:
    results = pd.read_csv(path)
    meta_file = path.parent / "experiment.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    tasks = results["task"] if "task" in results else pd.Series("property", index=results.index)
    parts = [f'<h2 id="transfer-{k}">Transfer experiment: {_e(meta.get("target", path.parent.name))}</h2>'
             f'<p class="note">{_e(path.parent)} — {_e(meta.get("summary", ""))}</p>']
    prop = results[tasks == "property"]
    if len(prop) and "rmse" in prop:
        parts.append("<p>Property prediction: test RMSE (mean ± sd over seeds) by training-set size; the best mean "
                     "per size in bold.</p>" + _by_method_and_size(prop, "rmse", lower_is_better=True)
                     + _png_file(path.parent / "learning_curve.png", "learning curve"))
    gen = results[tasks == "generation"]
    if len(gen) and "fcd" in gen:
        parts.append("<p>Generation: FCD of each model's samples to the held-out target molecules (mean ± sd over "
                     "seeds; lower is closer), by training-set size; the best mean per size in bold. Validity beside it.</p>"
                     + _by_method_and_size(gen, "fcd", lower_is_better=True)
                     + ("<p>Validity:</p>" + _by_method_and_size(gen, "valid", lower_is_better=False) if "valid" in gen else "")
                     + _png_file(path.parent / "learning_curve_generation.png", "generation learning curve"))
    return "".join(parts)


def _by_method_and_size(results: pd.DataFrame, metric: str, lower_is_better: bool) -> str:
    """A method x size table of ``metric`` (mean ± sd over seeds), the best mean of each size in bold."""
    agg = results.groupby(["method", "size"])[metric].agg(["mean", "std"]).reset_index()
    sizes = sorted(agg["size"].unique(), key=lambda s: (not str(s).isdigit(), int(s) if str(s).isdigit() else 0))
    methods = list(dict.fromkeys(agg["method"]))
    cell = {(r.method, r.size): r for r in agg.itertuples()}
    rows = [[m, *(_mean_sd(cell[m, s]) if (m, s) in cell else "–" for s in sizes)] for m in methods]
    pick = min if lower_is_better else max
    best = {(methods.index(pick((m for m in methods if (m, s) in cell), key=lambda m: cell[m, s].mean)), j + 1)
            for j, s in enumerate(sizes)}
    return _table(["method", *map(str, sizes)], rows, best)


def _png_file(path: Path, alt: str) -> str:
    image = path.read_bytes() if path.is_file() else b""
    return _png(image, alt) if image.startswith(_PNG) else ""


def _running_top_mean(scores: np.ndarray, k: int = 10) -> np.ndarray:
    """Mean of the ``k`` best scores seen so far, after each call (NaN until ``k`` are seen)."""
    heap, total, out = [], 0.0, np.full(len(scores), np.nan)
    for i, s in enumerate(scores):
        if s != s:
            pass
        elif len(heap) < k:
            heapq.heappush(heap, s)
            total += s
        elif s > heap[0]:
            total += s - heapq.heapreplace(heap, s)
        out[i] = total / k if len(heap) == k else np.nan
    return out


def _optimize_section(path: Path, k: int, query, top: int) -> str:
    table = pd.read_csv(path)
    if not {"oracle_call", "score"} <= set(table.columns):
        return f'<h2 id="optimize-{k}">Optimisation</h2><p class="note">{_e(path)}: no oracle_call/score columns</p>'
    table = table.sort_values("oracle_call", kind="stable")
    scores = pd.to_numeric(table["score"], errors="coerce").to_numpy(float)
    fig, (ax,) = _figure(1, size=(7, 3.6))
    ax.plot(table["oracle_call"], pd.Series(scores).cummax(), label="best")
    ax.plot(table["oracle_call"], _running_top_mean(scores), label="top-10 mean")
    ax.set_xlabel("oracle calls")
    ax.set_ylabel("score")
    ax.legend(fontsize=8)
    grid = _grid(table, "score", lambda r: f"score {r['score']:.3g}   call {r['oracle_call']}", query, top)
    return (f'<h2 id="optimize-{k}">Optimisation: {_e(path.parent.name)}/{_e(path.name)}</h2>'
            + _fig_png(fig, "optimisation curve") + "<h3>Best molecules by score</h3>" + grid)


def _training_section(paths: list[Path], run_dir: Path) -> str:
    parts = ['<h2 id="training">Training curves</h2>']
    for path in paths:
        log = pd.read_csv(path)
        cols = [c for c in log.select_dtypes("number").columns if c not in ("epoch", "step") and log[c].notna().any()]
        if not cols:
            continue
        fig, axes = _figure(min(len(cols), 3), math.ceil(len(cols) / 3), size=(3.6, 2.6))
        for ax, col in zip(axes, cols, strict=False):
            part = log[["step", col]].dropna()
            ax.plot(part["step"], part[col], marker="." if len(part) < 30 else None)
            ax.set_title(col, fontsize=9)
            ax.set_xlabel("step")
        for ax in axes[len(cols):]:
            ax.set_visible(False)
        parts.append(f"<h3>{_e(path.relative_to(run_dir))}</h3>" + _fig_png(fig, f"training curves {path.parent.name}"))
    return "".join(parts) if len(parts) > 1 else ""


# --- the page -------------------------------------------------------------------------------------


def _contents(found: dict[str, list[Path]], run_dir: Path, scaffold: str | None) -> str:
    labels = {"mission": "the mission (molgen demo)", "summary": "demo summary", "sources": "molecule sources", "transfer": "transfer experiments",
              "optimize": "optimisation logs", "training": "training logs"}
    items = "".join(f"<li>{_e(labels[k])}: " + ", ".join(f"<code>{_e(p.relative_to(run_dir))}</code>"
                                                       for p in v) + "</li>" for k, v in found.items())
    note = f"<p>Highlighted substructure: <code>{_e(scaffold)}</code></p>" if scaffold else ""
    return f"<p>Found in the folder:</p><ul>{items}</ul>{note}"


def report(run_dir: str | Path, out: str | Path | None = None, scaffold: str | None = None, top: int = 12) -> Path:
    """Write one self-contained HTML page (no network needed) of what ``run_dir`` holds.

    Args:
        run_dir: a run folder: a demo run, a transfer experiment, an optimisation or training run.
        out: the HTML file (default ``run_dir/report.html``), written atomically.
        scaffold: SMARTS or SMILES of a substructure to highlight in the molecule grids.
        top: molecules per grid.

    Returns:
        The path of the page.
    """
    from molgen import __version__

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such folder (give a run folder such as results/demo)")
    found = find(run_dir)
    if not found:
        raise InputError(f"{run_dir}: nothing to report (no summary.csv, metrics.json, molecules.csv, results.csv, "
                         "optimize.csv or Lightning metrics.csv in it or its sub-folders)")
    query = _query(scaffold)
    summary = pd.read_csv(found["summary"][0]) if "summary" in found else None
    sources = _read_sources(found.get("sources", []), summary)
    body = [_contents(found, run_dir, scaffold)]
    if "mission" in found:
        body.append(_mission_section(run_dir, json.loads(found["mission"][0].read_text()), query, top))
    if sources:
        body += [_metrics_section(sources, summary), _grids_section(sources, query, top),
                 _distributions_section(sources)]
    body += [_transfer_section(p, k) for k, p in enumerate(found.get("transfer", []))]
    body += [_optimize_section(p, k, query, top) for k, p in enumerate(found.get("optimize", []))]
    body.append(_training_section(found.get("training", []), run_dir))
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>molgen report: {_e(run_dir.name)}'
            f"</title><style>{_CSS}</style><script>{_SCRIPT}</script></head><body>"
            f'<h1>molgen report: {_e(run_dir.name)}</h1><p class="meta">{_e(run_dir.resolve())} · {stamp} · '
            f"molgen {_e(__version__)}</p>" + "".join(body) + "</body></html>\n")
    out = Path(out) if out is not None else run_dir / "report.html"
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


callable_module(__name__)  # mg.report(run_dir) calls report() though importing this module rebinds the name
