"""Scaffold-constrained RL against scaffold-constrained sampling at the same budget; JSON + markdown.

    python scripts/bench_optimize_scaffold.py                        # the config's budget (1,000), seed 0
    python scripts/bench_optimize_scaffold.py --budget 300 --out results/bench_optimize_scaffold.json

Both arms build every molecule on the scaffold of ``scripts/configs/optimize_scaffold_qed.toml``
(a benzamide, ``c1ccc([*])cc1C(=O)N[*]``) from smiles-gpt-moses-small and spend the same budget of
oracle calls (distinct valid molecules scored) on its objective (QED):

- ``sampling``: ``mg.sample(prior, n, scaffold=...)`` batch after batch, each new valid molecule
  scored in sampling order until the budget is spent: the floor;
- ``rl``: :func:`molgen.guide.rl.optimize` with the config as it is (REINVENT / Augmented Hill-Climb
  with the scaffold, the loss on the sampled tokens only).

Figures as ``bench_guidance.py`` computes them (best, top-10 and top-100 means, PMO's top-10 AUC,
distinct Bemis-Murcko scaffolds and internal diversity of the top 100), the mean score of every
molecule paid for, and the fraction of the scored molecules that contain the scaffold (RDKit substructure match without its ``[*]``).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from bench_guidance import sample_until_spent, summarise  # noqa: E402  (same folder)
from bench_metrics import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "optimize_scaffold_qed.toml"


def run_sampling(cfg, budget: int) -> tuple[list[str], list[float]]:
    """Scaffold-constrained sampling of the prior, scored until the budget is spent (or 20 dry batches)."""
    from molgen import load_pretrained
    from molgen.guide import Oracle

    model = load_pretrained(cfg.prior, device=cfg.device)
    return sample_until_spent(model, Oracle(str(cfg.objective), budget), cfg.seed, lambda _: {"scaffold": cfg.scaffold})


def run_rl(cfg, budget: int, out: Path) -> tuple[list[str], list[float]]:
    from molgen.guide.rl import optimize

    result = optimize(cfg.model_copy(update={"budget": budget, "out": out}), log=None)
    mols = result.molecules.sort_values("oracle_call")
    return mols["smiles"].tolist(), mols["score"].tolist()


def main() -> None:
    from molgen.files import atomic_path, write_json
    from molgen.guide.rl import OptimizeConfig
    from molgen.models.scaffold import contains_scaffold

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--budget", type=int, default=None, help="default: the config's")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_optimize_scaffold"))
    ap.add_argument("--out", type=Path, default=Path("results/bench_optimize_scaffold.json"))
    args = ap.parse_args()
    cfg = OptimizeConfig.from_toml(args.config)
    budget = args.budget or cfg.budget
    shutil.rmtree(args.work, ignore_errors=True)
    rows = []
    for method in ("sampling", "rl"):
        t0 = time.perf_counter()
        smiles, scores = run_sampling(cfg, budget) if method == "sampling" else run_rl(cfg, budget, args.work / "rl")
        row = {"method": method, **summarise(smiles, scores, budget, time.perf_counter() - t0)}
        row["mean_score"] = round(sum(scores) / max(1, len(scores)), 4)  # of every molecule paid for
        row["contains_scaffold"] = round(sum(contains_scaffold(smiles, cfg.scaffold)) / max(1, len(smiles)), 4)
        rows.append(row)
        print(row, flush=True)
    result = {"config": str(args.config), "scaffold": cfg.scaffold, "objective": str(cfg.objective),
              "prior": cfg.prior, "budget": budget, "seed": cfg.seed, "machine": machine(), "runs": rows}  # fmt: skip
    write_json(args.out, result)
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result) + "\n")
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = [f"QED, scaffold `{result['scaffold']}`, {result['budget']:,} oracle calls, seed {result['seed']}, "
             f"{result['prior']}:", "",
             "| method | best | top-10 mean | top-100 mean | mean (all calls) | AUC top-10 | scaffolds (top 100) "
             "| diversity (top 100) | contains scaffold | seconds |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["runs"]:
        lines.append(f"| {r['method']} | {r['top1']:.3f} | {r['top10']:.3f} | {r['top100']:.3f} | {r['mean_score']:.3f} "
                     f"| {r['auc_top10']:.3f} "
                     f"| {r['scaffolds_top100']} | {r['diversity_top100']:.3f} | {r['contains_scaffold']:.3f} "
                     f"| {r['seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
