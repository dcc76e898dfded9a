"""Benchmark guided generation on the PMO protocol; writes JSON and a markdown table.

    python scripts/bench_guidance.py                                  # 20 tasks x prior/rl/latent, 10,000 calls, 1 seed
    python scripts/bench_guidance.py --seeds 3 --resume                # the same line again after a kill: missing runs only
    python scripts/bench_guidance.py --tasks qed,celecoxib_rediscovery --budget 2000 --seeds 1
    python scripts/bench_guidance.py --methods latent --seeds 0,1,2 --out results/bench_guidance_latent.json
    python scripts/bench_guidance.py --tasks solubility_gp --budget 2000 --out results/bench_guidance_property.json
    python scripts/bench_guidance.py --methods rl --out results/pmo/rl.json &         # one method per core ...
    python scripts/bench_guidance.py --methods prior,latent --out results/pmo/prior_latent.json
    python scripts/bench_guidance.py --merge results/pmo/rl.json results/pmo/prior_latent.json  # ... one table

The protocol of PMO (Gao et al. 2022, "Sample efficiency matters", NeurIPS Datasets and
Benchmarks; github.com/wenhao-gao/mol_opt): each run gets a budget of oracle calls (distinct valid
molecules scored; repeats and invalid molecules are free) on one task of
:mod:`molgen.guide.pmo`, and is judged by the area under its top-10 curve (mol_opt's ``top_auc``:
the top-10 mean every 100 calls, trapezoids, extended flat to the budget, divided by the budget),
plus the top-1/10/100 means at the end, the distinct Bemis-Murcko scaffolds of the top 100, their
internal diversity (mean pairwise Tanimoto distance on Morgan radius-2 2,048-bit fingerprints, as
TDC's ``Diversity`` evaluator that mol_opt logs) and the wall time.

Methods, each against the same oracle accounting:

- ``prior``: sampling smiles-gpt-moses-small until the budget is spent: the random-sampling floor;
- ``rl``: :func:`molgen.guide.rl.optimize` (REINVENT with Augmented Hill-Climb, the shipped defaults
  of ``scripts/configs/optimize_qed.toml``) from smiles-gpt-moses-small;
- ``latent``: :func:`molgen.guide.latent.optimize_latent` (CMA-ES in graph-vae-moses's latent space).

The markdown table sets REINVENT's PMO figure beside ours on every task (PMO paper, Table 3,
REINVENT row, mean of 5 seeds at 10,000 calls), their sum over the same tasks (at most 20 here:
drd2, gsk3b and jnk3 need TDC's pickled classifiers; REINVENT's 20-task sum is 11.588, its 23-task
sum 14.196) and on how many tasks each method is above REINVENT.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from bench_metrics import machine  # noqa: E402  (same folder)

#: REINVENT's AUC top-10 on each PMO task: PMO paper (Gao et al. 2022, NeurIPS Datasets and Benchmarks),
#: Table 3, REINVENT (SMILES) row, mean of 5 runs at 10,000 calls; the same figures as reproduced in
#: f-RAG (Lee et al. 2024, NeurIPS, Table 1, "results for other baselines are taken from Gao et al.")
REINVENT_PMO = {
    "albuterol_similarity": 0.882, "amlodipine_mpo": 0.635, "celecoxib_rediscovery": 0.710, "deco_hop": 0.666,
    "drd2": 0.945, "fexofenadine_mpo": 0.784, "gsk3b": 0.865, "isomers_c7h8n2o2": 0.852,
    "isomers_c9h10n2o2pf2cl": 0.642, "jnk3": 0.783, "median1": 0.356, "median2": 0.276,
    "mestranol_similarity": 0.618, "osimertinib_mpo": 0.837, "perindopril_mpo": 0.537, "qed": 0.941,
    "ranolazine_mpo": 0.760, "scaffold_hop": 0.560, "sitagliptin_mpo": 0.021, "thiothixene_rediscovery": 0.534,
    "troglitazone_rediscovery": 0.441, "valsartan_smarts": 0.178, "zaleplon_mpo": 0.358,
}  # fmt: skip
REINVENT_PMO_SUM = 14.196  # the paper's sum over its 23 tasks
#: tasks on a molecular formula: ours follow GuacaMol's IsomerScoringFunction (element counts with
#: hydrogens, the molecule's total atom count); TDC's Isomer_scoring, behind PMO's figures, takes the
#: total from the SMILES text (hydrogens left out, ring digits read as counts), so these four are not
#: like-for-like with REINVENT's figures (random molecules already score 0.3-0.5 on our sitagliptin_mpo)
FORMULA_TASKS = ("isomers_c7h8n2o2", "isomers_c9h10n2o2pf2cl", "sitagliptin_mpo", "zaleplon_mpo")
PRIOR_MODEL = "smiles-gpt-moses-small"


def sample_until_spent(model, oracle, seed: int, options=None) -> tuple[list[str], list[float]]:
    """Draw batches of 256 from ``model`` and score the new valid molecules until the oracle's budget
    is spent (or 20 batches in a row bring nothing new); ``options(oracle)`` gives each batch's extra
    :func:`molgen.sample.sample` arguments. Returns the scored molecules and scores in call order."""
    from molgen.sample import sample

    batch, dry, start = 256, 0, 0
    while not oracle.exhausted and dry < 20:
        extra = options(oracle) if options else {}
        table = sample(model, batch, seed=seed, batch_size=batch, workers=1, start_batch=start, **extra)
        start += 1
        before = oracle.calls_used
        fresh = [s for s in dict.fromkeys(table.loc[table["valid"], "smiles"]) if s not in oracle.cache]
        if fresh:
            oracle(fresh)  # the first new molecules within the budget are scored, in sampling order
        dry = dry + 1 if oracle.calls_used == before else 0
    history = oracle.history()
    return history["smiles"].tolist(), history["score"].tolist()


def run_prior(objective_path: Path, budget: int, seed: int, out: Path) -> tuple[list[str], list[float]]:
    """Sample the prior until the budget is spent: the random-sampling floor."""
    from molgen import load_pretrained
    from molgen.guide import Oracle

    return sample_until_spent(load_pretrained(PRIOR_MODEL, device="auto"), Oracle(str(objective_path), budget), seed)


def _from_log(result) -> tuple[list[str], list[float]]:
    mols = result.molecules.sort_values("oracle_call")
    return mols["smiles"].tolist(), mols["score"].tolist()


def run_rl(objective_path: Path, budget: int, seed: int, out: Path, settings: dict | None = None) -> tuple[list[str], list[float]]:
    """``settings``: keys of an optimize TOML (``--rl-config``) over the shipped defaults."""
    from molgen.guide.rl import optimize

    cfg = {"prior": PRIOR_MODEL, **(settings or {}), "objective": str(objective_path), "budget": budget,
           "out": str(out), "seed": seed, "checkpoint_every": 10_000}  # fmt: skip
    return _from_log(optimize(cfg, log=None))


def run_latent(objective_path: Path, budget: int, seed: int, out: Path) -> tuple[list[str], list[float]]:
    from molgen.guide.latent import optimize_latent

    return _from_log(optimize_latent({"method": "latent", "objective": str(objective_path), "budget": budget,
                                      "out": str(out), "seed": seed}, log=None))  # fmt: skip


COND_MODEL = "smiles-gpt-moses-small-cond"


def run_conditional(objective_path: Path, budget: int, seed: int, out: Path) -> tuple[list[str], list[float]]:
    """Conditional sampling steered by the best molecules so far: the first batch free (no property
    given), then every row of a batch asks for the logP, QED, TPSA and MW of one of the 16 best scored
    molecules (drawn at random), each moved by a quarter of its training-set sd. The oracle is a black
    box; only those four properties can be steered."""
    from molgen import load_pretrained
    from molgen.data import property_values
    from molgen.guide import Oracle

    model = load_pretrained(COND_MODEL, device="auto")
    names, sd = list(model.config.condition["names"]), np.asarray(model.config.condition["std"])
    rng, known = np.random.default_rng(seed), {}

    def toward_the_best(oracle) -> dict:
        history = oracle.history()
        if not len(history):
            return {}
        top = history.sort_values("score", ascending=False, kind="stable")["smiles"].head(16).tolist()
        new = [m for m in top if m not in known]
        known.update(zip(new, property_values(new, names), strict=True))
        rows = np.stack([known[top[i]] for i in rng.integers(0, len(top), 256)])
        rows = rows + rng.normal(0, 0.25, rows.shape) * sd
        return {"condition": {name: rows[:, i] for i, name in enumerate(names)}}

    return sample_until_spent(model, Oracle(str(objective_path), budget), seed, toward_the_best)


METHODS = {"prior": run_prior, "rl": run_rl, "latent": run_latent, "conditional": run_conditional}


def summarise(smiles: list[str], scores: list[float], budget: int, seconds: float) -> dict:
    """PMO's figures of one run from its molecules and scores in call order."""
    from rdkit import DataStructs

    from molgen.chem import morgan_fp, scaffold
    from molgen.guide.pmo import top_auc

    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    order = np.argsort(-s, kind="stable")
    top100 = [smiles[i] for i in order[:100]]
    fps = [morgan_fp(m, 2, 2048) for m in top100]
    dists = [1 - x for i in range(1, len(fps)) for x in DataStructs.BulkTanimotoSimilarity(fps[i], fps[:i])]

    def top(k: int) -> float:
        return round(float(s[order[:k]].mean()), 4) if len(s) else 0.0

    return {"auc_top10": round(top_auc(s, 10, budget), 4), "auc_top1": round(top_auc(s, 1, budget), 4),
            "auc_top100": round(top_auc(s, 100, budget), 4), "top1": top(1), "top10": top(10), "top100": top(100),
            "scaffolds_top100": len({scaffold(m) or "" for m in top100}),
            "diversity_top100": round(float(np.mean(dists)), 4) if dists else None,
            "calls": int(len(s)), "seconds": round(seconds, 1), "best": top100[0] if top100 else None}  # fmt: skip


#: tasks built on a fitted PropertyModel (not PMO's): name -> objective TOML, ``{model}`` the model's folder
PROPERTY_TASKS = {
    # predicted aqueous solubility (GP on graph-vae-moses layer-pooled features, fitted on all of
    # `solubility`), 0.5 at logS -2, with QED so that the optimum is a drug-like soluble molecule,
    # not the smallest one
    "solubility_gp": """description = "predicted logS (GP on graph-vae-moses:layers, all of solubility) and QED"

[[component]]
kind = "property_model"
path = "{model}"
name = "logS"
weight = 1.0
transform = {{ type = "sigmoid", low = -4.0, high = 0.0, k = 0.5 }}

[[component]]
kind = "qed"
weight = 1.0
""",
}


def property_model(work: Path) -> Path:
    """The solubility GP of ``solubility_gp``, fitted once and kept in ``work``."""
    folder = work / "solubility_gp_model"
    if not (folder / "config.json").exists():
        import molgen as mg
        from molgen.transfer import PropertyModel

        PropertyModel("graph-vae-moses:layers", head="gp").fit(mg.datasets.load("solubility"), target="logS").save(folder)
    return folder


def one_run(task: str, method: str, seed: int, budget: int, work: Path) -> dict:
    folder = work / f"{task}-{method}-{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    objective = folder / "objective.toml"
    if task in PROPERTY_TASKS:
        objective.write_text(PROPERTY_TASKS[task].format(model=property_model(work).resolve()))
    else:
        objective.write_text(f'description = "PMO {task}"\n\n[[component]]\nkind = "pmo"\ntask = "{task}"\n')
    t0 = time.perf_counter()
    smiles, scores = METHODS[method](objective, budget, seed, folder / "run")
    return {"task": task, "method": method, "seed": seed,
            **summarise(smiles, scores, budget, time.perf_counter() - t0)}  # fmt: skip


def aggregate(runs: list[dict], tasks: list[str], methods: list[str]) -> dict:
    """Mean and standard deviation over seeds of each task x method, and each method's sum over tasks."""
    out: dict = {}
    for method in methods:
        per_task = {}
        for task in tasks:
            rows = [r for r in runs if r["task"] == task and r["method"] == method]
            if not rows:
                continue
            per_task[task] = {k: _mean_std([r[k] for r in rows]) for k in
                              ("auc_top10", "top1", "top10", "top100", "scaffolds_top100", "diversity_top100", "seconds")}
        seeds = sorted({r["seed"] for r in runs if r["method"] == method})
        sums = [sum(r["auc_top10"] for r in runs if r["method"] == method and r["seed"] == sd) for sd in seeds]
        out[method] = {"tasks": per_task, "sum_auc_top10": _mean_std(sums)}
    return out


def _mean_std(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def markdown(result: dict) -> str:
    agg, tasks, methods = result["aggregate"], result["tasks"], result["methods"]
    n_seeds, budget = len(result["seeds"]), result["budget"]

    def cell(d: dict) -> str:
        if d["mean"] is None:
            return "–"
        return f"{d['mean']:.3f} ± {d['std']:.3f}" if n_seeds > 1 else f"{d['mean']:.3f}"

    lines = [f"AUC top-10 (PMO, mol_opt's top_auc) at a budget of {budget:,} oracle calls, {n_seeds} seed(s); "
             "REINVENT: PMO paper (Gao et al. 2022) Table 3, 10,000 calls, 5 seeds.", "",
             "| task | " + " | ".join(methods) + " | REINVENT (PMO) |", "|---|" + "---:|" * (len(methods) + 1)]
    for task in tasks:
        ours = [cell(agg[m]["tasks"][task]["auc_top10"]) if task in agg[m]["tasks"] else "–" for m in methods]
        ref = f"{REINVENT_PMO[task]:.3f}" if task in REINVENT_PMO else ""
        lines.append(f"| {task} | " + " | ".join(ours) + f" | {ref} |")
    compared = [t for t in tasks if t in REINVENT_PMO]
    ref_sum = sum(REINVENT_PMO[t] for t in compared)
    lines.append(f"| sum ({len(tasks)} tasks) | " + " | ".join(cell(agg[m]["sum_auc_top10"]) for m in methods)
                 + f" | {ref_sum:.3f} ({len(compared)} tasks; {REINVENT_PMO_SUM:.3f} over 23) |")
    alike = [t for t in compared if t not in FORMULA_TASKS]
    if len(alike) < len(compared):
        sums = [f"{sum(agg[m]['tasks'][t]['auc_top10']['mean'] for t in alike if t in agg[m]['tasks']):.3f}" for m in methods]
        lines.append(f"| sum without the formula tasks ({len(alike)}) | " + " | ".join(sums)
                     + f" | {sum(REINVENT_PMO[t] for t in alike):.3f} |")
    for label, subset in (("tasks above REINVENT", compared), ("... without the formula tasks", alike)):
        wins = []
        for m in methods:
            done = [t for t in subset if t in agg[m]["tasks"]]
            wins.append(f"{sum(agg[m]['tasks'][t]['auc_top10']['mean'] > REINVENT_PMO[t] for t in done)}/{len(done)}")
        lines.append(f"| {label} | " + " | ".join(wins) + " | |")
    scaf = []
    for m in methods:
        done = [d for d in agg[m]["tasks"].values() if d["scaffolds_top100"]["mean"] is not None]
        scaf.append(f"{sum(d['scaffolds_top100']['mean'] >= 30 for d in done)}/{len(done)}")
    lines.append("| tasks with >= 30 scaffolds in the top 100 | " + " | ".join(scaf) + " | |")
    lines += ["", f"Formula tasks ({', '.join(FORMULA_TASKS)}): ours follow GuacaMol's IsomerScoringFunction; TDC's, "
              "behind PMO's figures, counts the total atoms from the SMILES text, so those rows are not like-for-like."]
    lines += ["", "At the end of each run (mean over seeds): top-1 / top-10 / top-100 means, distinct Bemis-Murcko "
              "scaffolds and internal diversity of the top 100, wall time.", "",
              "| task | method | top-1 | top-10 | top-100 | scaffolds | diversity | seconds |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for task in tasks:
        for m in methods:
            d = agg[m]["tasks"].get(task)
            if d is None:
                continue
            div = d["diversity_top100"]["mean"]
            lines.append(f"| {task} | {m} | {d['top1']['mean']:.3f} | {d['top10']['mean']:.3f} | {d['top100']['mean']:.3f} | "
                         f"{d['scaffolds_top100']['mean']:.0f} | {'–' if div is None else f'{div:.3f}'} | {d['seconds']['mean']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from molgen.guide.pmo import TASKS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS),
                    help="comma-separated PMO tasks (molgen.guide.pmo.TASKS), or solubility_gp (a PropertyModel objective)")
    ap.add_argument("--methods", default="prior,rl,latent")
    ap.add_argument("--seeds", default="1", help="a count (3 = seeds 0, 1, 2) or a list (0,5,7; one seed: 2,)")
    ap.add_argument("--budget", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=Path("results/bench_guidance.json"))
    ap.add_argument("--work", type=Path, default=None, help="run folders (default: next to --out)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the runs already in --out (same budget) and run only the missing task/method/seed")
    ap.add_argument("--rl-config", type=Path, default=None, metavar="TOML",
                    help="rl's settings from an optimize TOML (e.g. scripts/configs/optimize_pmo.toml; its prior, "
                    "objective, budget, out and seed are the benchmark's) instead of the shipped defaults")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                    help="run nothing: join the runs of these result files (same budget; e.g. one per method, "
                    "run side by side on separate cores) into --out and its markdown table")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.out, list(TASKS))
        return

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    known = [*TASKS, *PROPERTY_TASKS]
    bad = [t for t in tasks if t not in known] + [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown task or method: {', '.join(bad)} (tasks: {', '.join(known)}; methods: {', '.join(METHODS)})")
    rl_settings = {}
    if args.rl_config:
        import tomllib

        rl_settings = {k: v for k, v in tomllib.loads(args.rl_config.read_text()).items()
                       if k not in ("objective", "budget", "out", "seed", "method")}  # fmt: skip
        METHODS["rl"] = functools.partial(run_rl, settings=rl_settings)
    seeds = list(range(int(args.seeds))) if "," not in args.seeds else [int(s) for s in args.seeds.split(",") if s]
    if not seeds:
        raise SystemExit(f"--seeds {args.seeds}: no seeds; give a count (1 = seed 0) or a list (1,2 or 5,)")
    work = args.work or args.out.with_suffix("").with_name(args.out.stem + "_runs")

    import torch

    from molgen.files import write_json

    torch.set_num_threads(1)
    result = {"machine": machine(), "budget": args.budget, "tasks": tasks, "methods": methods, "seeds": seeds,
              "threads": torch.get_num_threads(), "reinvent_pmo": REINVENT_PMO, "reinvent_pmo_sum_23": REINVENT_PMO_SUM,
              "rl_settings": rl_settings, "runs": []}  # fmt: skip
    done = {}
    if args.resume and args.out.exists():
        import json

        before = json.loads(args.out.read_text())
        if before.get("budget") != args.budget:
            raise SystemExit(f"--resume: {args.out} holds runs at a budget of {before.get('budget')}, not {args.budget}")
        if "rl" in methods and before.get("rl_settings", {}) != rl_settings:
            raise SystemExit(f"--resume: {args.out} holds rl runs with other settings ({before.get('rl_settings', {})}); "
                             "give the same --rl-config or another --out")
        done = {(r["task"], r["method"], r["seed"]): r for r in before.get("runs", [])}
    for task in tasks:
        for method in methods:
            for seed in seeds:
                if (task, method, seed) in done:
                    result["runs"].append(done[(task, method, seed)])
                    continue
                run = one_run(task, method, seed, args.budget, work)
                result["runs"].append(run)
                print(f"{task:26s} {method:7s} seed {seed}: AUC top-10 {run['auc_top10']:.3f}  top-1 {run['top1']:.3f}  "
                      f"top-10 {run['top10']:.3f}  scaffolds {run['scaffolds_top100']}  {run['calls']:,} calls  "
                      f"{run['seconds']:.0f} s", flush=True)
                result["aggregate"] = aggregate(result["runs"], tasks, methods)
                write_json(args.out, result)  # after every run: a long benchmark keeps what it has
    finish(result, args.out)


def finish(result: dict, out: Path) -> None:
    """Aggregate, write ``out`` and its markdown table, print the table."""
    from molgen.files import atomic_path, write_json

    result["aggregate"] = aggregate(result["runs"], result["tasks"], result["methods"])
    write_json(out, result)
    with atomic_path(out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(markdown(result))
    print(markdown(result))


def merge(files: list[Path], out: Path, order: list[str]) -> None:
    """Join the runs of several result files (one budget) into one; a task/method/seed in two files is refused."""
    import json

    parts = [json.loads(f.read_text()) for f in files]
    budgets = {p["budget"] for p in parts}
    if len(budgets) != 1:
        raise SystemExit(f"--merge: the files hold different budgets ({', '.join(map(str, sorted(budgets)))})")
    settings = {json.dumps(p.get("rl_settings", {}), sort_keys=True) for p in parts if any(r["method"] == "rl" for r in p["runs"])}
    if len(settings) > 1:
        raise SystemExit(f"--merge: the files' rl runs used different settings ({'; '.join(sorted(settings))})")
    runs, seen = [], {}
    for f, part in zip(files, parts, strict=True):
        for r in part["runs"]:
            key = (r["task"], r["method"], r["seed"])
            if key in seen:
                raise SystemExit(f"--merge: {'/'.join(map(str, key))} is in both {seen[key]} and {f}")
            seen[key] = f
            runs.append(r)
    tasks = sorted({r["task"] for r in runs}, key=lambda t: (order.index(t) if t in order else len(order), t))
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    result = {**parts[0], "tasks": tasks, "methods": methods, "seeds": sorted({r["seed"] for r in runs}),
              "runs": runs, "merged_from": [str(f) for f in files],
              "rl_settings": json.loads(settings.pop()) if settings else {}}  # fmt: skip
    finish(result, out)


if __name__ == "__main__":
    main()
