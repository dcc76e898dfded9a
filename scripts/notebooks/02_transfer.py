"""Source of notebooks/02_transfer.ipynb: transfer to a small data set (aqueous solubility).

Built by scripts/make_notebooks.py (see its docstring for the parameters cell)."""

CELLS = [
    ("md", """
        # Transfer to a small data set

        A medicinal chemist rarely has more than a few hundred measured molecules. This notebook asks
        whether the models pretrained on MOSES help there, on aqueous solubility (logS, Huuskonen's
        1,282 molecules): frozen features of the graph-VAE and the SMILES GPT next to ECFP fingerprints,
        in scikit-learn and in molgen's `PropertyModel` (ridge, or a Gaussian process that also says how
        sure it is), and then fine-tuning the graph-VAE's encoder against training the same network
        from scratch (`mg.experiment`). Every comparison uses a scaffold split: test molecules never
        share a Bemis-Murcko scaffold with training ones, as for a new chemical series.

        The budgets below keep a run to a few minutes on a laptop CPU; raise them for real numbers.
    """),
    ("parameters", """
        N_TRAIN = 200  # training molecules drawn from outside the test set
        SIZES = (25, 50, 100, 200)  # training sizes of the experiment's learning curve
        SEEDS = (0, 1)  # draws of training molecules per size (the test set stays fixed)
    """),
    ("code", """
        import tempfile
        import warnings
        from pathlib import Path

        import matplotlib.pyplot as plt
        import numpy as np
        import pandas as pd

        import molgen as mg
        from molgen.experiment import scaffold_split

        warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook bars want ipywidgets

        sol = mg.datasets.load("solubility")
        sol = sol[sol.valid].assign(smiles=lambda d: [mg.chem.canonicalize(s) for s in d.smiles])
        table = sol.groupby("smiles", as_index=False, sort=False)["logS"].mean()  # duplicates averaged
        # the SMILES GPT's vocabulary is MOSES's (C, N, O, S, F, Cl, Br, H): it cannot read iodides,
        # tin, ... (NaN rows). Compare the features on the molecules every model reads, and say so.
        readable = ~np.isnan(mg.transfer.embed("smiles-gpt-moses-small", table.smiles)).any(axis=1)
        readable &= ~np.isnan(mg.transfer.embed("graph-vae-moses", table.smiles)).any(axis=1)
        print(f"left out {int((~readable).sum())} molecules a pretrained model cannot read, e.g. "
              f"{table.smiles[~readable].head(3).tolist()}")
        table = table[readable].reset_index(drop=True)
        is_test = scaffold_split(table.smiles.tolist(), test_fraction=0.2, seed=0)
        test, pool = table[is_test].reset_index(drop=True), table[~is_test].reset_index(drop=True)
        train = pool.sample(n=N_TRAIN, random_state=0).reset_index(drop=True)

        scaffolds = {s: mg.chem.scaffold(s) for s in table.smiles}
        shared = {scaffolds[s] for s in pool.smiles} & {scaffolds[s] for s in test.smiles} - {""}
        print(f"{len(table)} distinct molecules: {len(pool)} outside the test set, {len(test)} in it; "
              f"training on {len(train)}")
        print(f"scaffolds shared by train and test: {len(shared)}")
    """),
    ("md", """
        ## Frozen features

        `mg.transfer.embed(model, smiles)` reads each molecule with a pretrained model and returns one
        vector per molecule: the graph-VAE's posterior mean, the GPT's pooled hidden state, or ECFP4 bits
        (`"ecfp"`). A molecule a model cannot read gets a NaN row, never a silent drop. Vectors are cached
        per process by canonical SMILES and weights, so asking twice costs nothing.
    """),
    ("code", """
        features = {}
        for name in ("graph-vae-moses", "smiles-gpt-moses-small", "ecfp"):
            features[name] = mg.transfer.embed(name, train.smiles)
            unreadable = int(np.isnan(features[name]).any(axis=1).sum())
            print(f"{name} features: {features[name].shape}, unreadable molecules: {unreadable}")
    """),
    ("md", """
        ## In a scikit-learn pipeline

        `mg.transfer.Embedder(name)` is the same thing as a scikit-learn transformer. It holds the model's
        name, not its weights, so `clone`, `GridSearchCV` and `FeatureUnion` treat it like any other step;
        here it sits next to ECFP, and the two are joined.
    """),
    ("code", """
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import FeatureUnion, make_pipeline
        from sklearn.preprocessing import StandardScaler

        Embedder = mg.transfer.Embedder
        alphas = np.logspace(-2, 4, 13)
        pipelines = {
            "ECFP4 + ridge": make_pipeline(Embedder("ecfp"), RidgeCV(alphas=alphas)),
            "graph-VAE + ridge": make_pipeline(Embedder("graph-vae-moses"), StandardScaler(), RidgeCV(alphas=alphas)),
            "GPT-small + ridge": make_pipeline(Embedder("smiles-gpt-moses-small"), StandardScaler(),
                                               RidgeCV(alphas=alphas)),
            "graph-VAE | ECFP4 + ridge": make_pipeline(
                FeatureUnion([("vae", Embedder("graph-vae-moses")), ("ecfp", Embedder("ecfp"))]),
                StandardScaler(), RidgeCV(alphas=alphas)),
        }
        rows = []
        for label, pipe in pipelines.items():
            pipe.fit(train.smiles, train.logS)
            err = pipe.predict(test.smiles) - test.logS
            rows.append({"pipeline": label, "test RMSE": np.sqrt(np.mean(err**2)), "test MAE": np.mean(np.abs(err))})
        pd.DataFrame(rows).round(3)
    """),
    ("md", """
        On a few hundred molecules a linear model on 2,048 sparse fingerprint bits has little to go on,
        and in the joined features, once scaled, those bits outnumber the graph-VAE's 56 dimensions; the
        pretrained models' dense vectors carry what MOSES taught them about molecules. Fingerprints do
        better under a random forest, as in the experiment below.
    """),
    ("md", """
        ## PropertyModel: a mean and how sure it is

        `mg.transfer.PropertyModel(features, head)` fits a head on frozen features and predicts `mean`
        and `std`. Only the Gaussian process (`head="gp"`) has a `std`; calibration asks whether it means
        what it says: about 68 % of the test molecules should lie within one standard deviation of the
        prediction and about 95 % within two. `report_` counts what `fit` skipped (no target, unreadable,
        duplicates averaged).
    """),
    ("code", """
        ridge = mg.transfer.PropertyModel("graph-vae-moses", head="ridge").fit(train, target="logS")
        gp = mg.transfer.PropertyModel("graph-vae-moses", head="gp").fit(train, target="logS")
        print("fit report:", gp.report_)
        pred = gp.predict(test.smiles.tolist()).assign(logS=test.logS.to_numpy())
        err = pred["mean"] - pred.logS
        for label, model in (("ridge", ridge), ("GP", gp)):
            e = model(test.smiles) - test.logS
            print(f"{label}: test RMSE {np.sqrt(np.mean(e**2)):.3f} logS")
        within1 = np.mean(np.abs(err) <= pred["std"])
        within2 = np.mean(np.abs(err) <= 2 * pred["std"])
        print(f"GP within 1 sd: {within1:.0%} (68% if calibrated); within 2 sd: {within2:.0%} (95%)")
        pred.head()
    """),
    ("code", """
        from scipy.stats import halfnorm

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        ax1.errorbar(pred.logS, pred["mean"], yerr=pred["std"], fmt="o", ms=3, alpha=0.5, elinewidth=0.8)
        lim = [pred.logS.min() - 0.5, pred.logS.max() + 0.5]
        ax1.plot(lim, lim, "k--", lw=1)
        ax1.set(xlabel="measured logS", ylabel="GP prediction (± 1 sd)", title="Held-out scaffolds")
        z = np.sort(np.abs(err) / pred["std"])
        ax2.plot(z, np.arange(1, len(z) + 1) / len(z), label="GP on the test set")
        grid = np.linspace(0, z.max(), 100)
        ax2.plot(grid, halfnorm.cdf(grid), "k--", label="calibrated (|error| / sd half-normal)")
        ax2.set(xlabel="|error| / predicted sd", ylabel="fraction of test molecules", title="Calibration")
        ax2.legend()
        fig.tight_layout()
    """),
    ("md", """
        ## Frozen, fine-tuned or from scratch: the transfer experiment

        `mg.experiment.experiment` fixes the same kind of scaffold split and, for each training size and
        seed, fits every method on the same molecules: ECFP + random forest (the classic baseline), frozen
        graph-VAE features under ridge and GP heads, the graph-VAE's encoder architecture trained from
        scratch with an MLP head (`gnn-scratch+mlp`), and the shipped encoder fine-tuned end to end with
        an MLP head (`graph-vae-moses-finetuned+mlp`). It writes `results.csv`, `results.md`,
        `learning_curve.png` and every split's molecules to `out`. `molgen experiment transfer --dataset
        solubility` is the same from the shell; the README has the full-size table.
    """),
    ("code", """
        out = Path(tempfile.mkdtemp()) / "transfer"
        methods = ("ecfp+rf", "graph-vae-moses+ridge", "graph-vae-moses+gp", "gnn-scratch+mlp",
                   "graph-vae-moses-finetuned+mlp")
        results = mg.experiment.experiment(dataset="solubility", sizes=SIZES, seeds=SEEDS, methods=methods,
                                           out=out, progress=False)
        print(f"{len(results)} fits, {results.method.nunique()} methods; files: {sorted(p.name for p in out.iterdir())}")
        (results.groupby(["method", "size"])["rmse"].mean().unstack("size").round(3)
         .rename_axis(columns="test RMSE by training size"))
    """),
    ("code", """
        from IPython.display import Image

        Image(filename=out / "learning_curve.png")  # drawn by the experiment: mean ± sd over seeds
    """),
    ("md", """
        With the molecules written in `out/splits/`, any other model can be scored on exactly the same
        splits. A fitted `PropertyModel` saves as safetensors + JSON (`model.save(folder)`,
        `PropertyModel.load(folder)`) and is a plain `smiles -> values` call, so it can be a component of
        a guided-design objective (notebook 03).
    """),
]
