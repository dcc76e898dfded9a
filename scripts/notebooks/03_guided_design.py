"""Source of notebooks/03_guided_design.ipynb: property-guided design with an objective and RL.

Built by scripts/make_notebooks.py (see its docstring for the parameters cell)."""

CELLS = [
    ("md", """
        # Property-guided design

        Say what a good molecule is, as an objective: components (QED, synthetic accessibility, a logP
        window, structural alerts), each mapped to a desirability in [0, 1], combined by a weighted
        geometric mean. Then let reinforcement learning bend the SMILES GPT toward it (REINVENT with
        Augmented Hill-Climb, `molgen.guide.rl`), within a hard budget of oracle calls: every distinct
        valid molecule scored costs one call. Last, look at what came out: the optimisation curve, the
        trade-off between two properties with its Pareto front, and the best molecules.

        The budget below keeps the run to a few minutes on a laptop CPU; real runs use thousands of calls
        (`molgen optimize --config scripts/configs/optimize_qed.toml`).
    """),
    ("parameters", """
        BUDGET = 640  # oracle calls: distinct valid molecules scored
        BATCH_SIZE = 64  # molecules sampled per RL step
    """),
    ("md", """
        ## The objective

        An objective is a TOML file (REINVENT 4's scoring section, flattened); the same text as a Python
        string works for a notebook. `Objective.from_toml` checks every component before anything is
        sampled and refuses a bad one naming its line and field. Scoring returns each component's raw
        value (`qed`, `sa`, ...) and its desirability (`qed_d`, ...), and the overall `score`.
    """),
    ("code", """
        import tempfile
        import warnings
        from pathlib import Path

        import matplotlib.pyplot as plt
        import numpy as np
        from rdkit import Chem
        from rdkit.Chem import Draw

        import molgen as mg
        from molgen.guide.rl import optimize

        warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook bars want ipywidgets

        OBJECTIVE = '''
        description = "drug-like: QED, easy to make, logP 1-4, no PAINS or Brenk alerts"
        aggregate = "geometric"

        [[component]]
        kind = "qed"
        weight = 2.0

        [[component]]
        kind = "sa"  # 1 (easy) .. 10 (hard): 0.5 desirability at SA 4
        transform = { type = "reverse_sigmoid", low = 2.5, high = 5.5, k = 0.5 }

        [[component]]
        kind = "logp"  # a window: 0.5 at 1 and at 4, close to 1 between
        transform = { type = "double_sigmoid", low = 1.0, high = 4.0, coef_div = 3.0, coef_si = 10.0, coef_se = 10.0 }

        [[component]]
        kind = "alerts"  # how many of the sets flag the molecule; desirability 1 only for none
        sets = ["pains", "brenk"]
        '''
        work = Path(tempfile.mkdtemp())
        (work / "objective.toml").write_text(OBJECTIVE)
        objective = mg.guide.Objective.from_toml(work / "objective.toml")
        drugs = {"aspirin": "CC(=O)Oc1ccccc1C(=O)O", "paracetamol": "CC(=O)Nc1ccc(O)cc1",
                 "celecoxib": "Cc1ccc(-c2cc(C(F)(F)F)nn2-c2ccc(S(N)(=O)=O)cc2)cc1",
                 "imatinib": "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1"}
        objective(list(drugs.values())).set_index(np.array(list(drugs))).round(3)
    """),
    ("md", """
        ## Reinforcement learning against the prior

        The agent starts as a copy of the prior (`smiles-gpt-moses-small`) and is trained to raise
        `log P_prior(x) + sigma * score(x)`, so it stays on chemistry the prior knows while it moves toward
        the objective. A scaffold diversity filter gives no reward to a scaffold's 26th molecule, and the
        run stops when the budget is spent. It writes `optimize.csv` (every scored molecule, in call
        order), `steps.csv`, checkpoints and the final agent to `out`; `resume=True` continues a killed
        run without scoring any molecule twice.

        Read the curve with the budget in mind: ten steps of 64 molecules hardly move the agent, so the
        batch mean stays near the prior's and the best molecules are mostly the prior's own good draws.
        The agent's shift shows over thousands of calls (the README has such runs).
    """),
    ("code", """
        result = optimize({"prior": "smiles-gpt-moses-small", "objective": str(work / "objective.toml"),
                           "budget": BUDGET, "batch_size": BATCH_SIZE, "out": str(work / "run"), "seed": 0,
                           "device": "cpu"})
        molecules = result.molecules
        print(f"{result.calls_used} molecules scored; best score: {molecules.score.max():.3f}")
    """),
    ("code", """
        steps = result.steps
        fig, ax = plt.subplots(figsize=(6.4, 4))
        ax.plot(steps.calls_used, steps.mean_score, "o-", label="batch mean")
        ax.plot(steps.calls_used, steps.top10_mean, "s-", label="top-10 so far")
        ax.plot(steps.calls_used, steps.best, "^-", label="best so far")
        ax.set(xlabel="oracle calls", ylabel="score", title="Optimisation curve", ylim=(0, 1.02))
        ax.legend()
        fig.tight_layout()
        steps[["step", "calls_used", "valid", "unique", "mean_score", "top10_mean", "best", "scaffolds"]].round(3)
    """),
    ("md", """
        ## The trade-off: QED against synthetic accessibility

        A single score hides trade-offs. A molecule is on the Pareto front when no other molecule is at
        least as good on both properties and better on one (here: higher QED and lower SA). The front is
        the menu a chemist picks from.
    """),
    ("code", """
        def pareto_front(maximise: np.ndarray) -> np.ndarray:
            \"\"\"True for the rows that no other row dominates (every column maximised).\"\"\"
            on_front = np.ones(len(maximise), dtype=bool)
            for i, row in enumerate(maximise):
                dominated = np.all(maximise >= row, axis=1) & np.any(maximise > row, axis=1)
                on_front[i] = not dominated.any()
            return on_front


        valid = molecules.dropna(subset=["qed", "sa"]).reset_index(drop=True)
        front = pareto_front(np.column_stack([valid.qed, -valid.sa]))
        print(f"Pareto front: {front.sum()} of {len(valid)} molecules")

        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        points = ax.scatter(valid.sa, valid.qed, c=valid.step, s=12, cmap="viridis", alpha=0.7)
        edge = valid[front].sort_values("sa")
        ax.step(edge.sa, edge.qed, where="post", color="crimson", lw=1.2)
        ax.scatter(edge.sa, edge.qed, s=40, facecolors="none", edgecolors="crimson", label="Pareto front")
        fig.colorbar(points, label="RL step")
        ax.set(xlabel="SA score (lower: easier to make)", ylabel="QED", title="Scored molecules")
        ax.legend(loc="lower right")
        fig.tight_layout()
        valid[front].sort_values("sa")[["smiles", "qed", "sa", "logp", "score", "step"]].round(3)
    """),
    ("md", """
        ## The best molecules

        The top of `optimize.csv` by score, drawn with RDKit. `molgen report RUN_DIR` writes the same
        curve and grids into one HTML page.
    """),
    ("code", """
        top = result.top(12)
        Draw.MolsToGridImage([Chem.MolFromSmiles(s) for s in top.smiles], molsPerRow=4, subImgSize=(220, 180),
                             legends=[f"score {s:.2f}  QED {q:.2f}  SA {a:.1f}"
                                      for s, q, a in zip(top.score, top.qed, top.sa, strict=True)])
    """),
]
