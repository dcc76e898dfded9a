"""Source of notebooks/05_pipeline.ipynb: molgen inside a pipeline (pandas, scikit-learn, SDF, DeepChem).

Built by scripts/make_notebooks.py (see its docstring for the parameters cell)."""

CELLS = [
    ("md", """
        # molgen inside a pipeline

        molgen takes and gives the things a cheminformatics pipeline already passes around: pandas
        DataFrames, scikit-learn estimators, SDF files, DeepChem datasets. This notebook shows each
        boundary: scoring a table keeps the user's own columns, a pretrained model is one more
        transformer in a `Pipeline` searched by `GridSearchCV`, SDF goes in and out with its fields,
        and DeepChem datasets convert both ways when DeepChem is installed.
    """),
    ("parameters", """
        N = 300  # solubility molecules for the grid search and the SDF round trip
    """),
    ("code", """
        import tempfile
        import warnings
        from pathlib import Path

        import numpy as np
        import pandas as pd

        import molgen as mg

        warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook bars want ipywidgets

        work = Path(tempfile.mkdtemp())
    """),
    ("md", """
        ## pandas in, pandas out

        `mg.score(df)` reads the `smiles` column and keeps every other column after the scores, in the
        same row order and index. A row whose SMILES RDKit cannot read stays, with `valid=False` and empty
        scores, so a join back to the source never loses a compound.
    """),
    ("code", """
        compounds = pd.DataFrame({
            "compound_id": ["MG-001", "MG-002", "MG-003", "MG-004", "MG-005"],
            "smiles": ["CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC(=O)Nc1c(C)cccc1C", "c1ccccc1C(=O)O", "C1CC(", "CCOC(=O)C1=CCCN(C)C1"],
            "project": ["analgesics", "anaesthetics", "fragments", "typo", "fragments"],
            "measured": [1.2, 0.4, np.nan, 3.3, 2.0],
        }).set_index("compound_id", drop=False)
        scored = mg.score(compounds, properties=["qed", "sa", "logp", "mw", "pains", "brenk"])
        kept = [c for c in compounds.columns if c in scored.columns and c != "smiles"]
        print(f"kept columns: {kept}")
        print(f"invalid rows kept: {int((~scored.valid).sum())}; index unchanged: {scored.index.equals(compounds.index)}")
        scored
    """),
    ("md", """
        ## A pretrained model as a scikit-learn step

        `mg.transfer.Embedder(model)` turns SMILES into feature vectors (`"ecfp"`, `"graph-vae-moses"`,
        `"smiles-gpt-moses-small"`, `"smiles-gpt-moses"`). It holds the model's name, not its weights, so
        `GridSearchCV` can clone it and search over *which* model to use like any other hyperparameter.
        The folds group molecules by Bemis-Murcko scaffold (`GroupKFold`), so validation molecules never
        share a scaffold with the training ones. The GPTs cannot read iodine or tin (MOSES has none):
        those molecules are left out, and counted, before the search.
    """),
    ("code", """
        from sklearn.linear_model import Ridge
        from sklearn.model_selection import GridSearchCV, GroupKFold
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        sol = mg.datasets.load("solubility")
        sol = sol[sol.valid].sample(n=N, random_state=0).reset_index(drop=True)
        readable = ~np.isnan(mg.transfer.embed("smiles-gpt-moses-small", sol.smiles)).any(axis=1)
        print(f"left out {int((~readable).sum())} of {len(sol)} molecules the SMILES GPT cannot read")
        data = sol[readable].reset_index(drop=True)
        groups = [mg.chem.scaffold(s) or s for s in data.smiles]  # acyclic molecules: one group each

        pipe = Pipeline([("embed", mg.transfer.Embedder("ecfp")), ("scale", StandardScaler()), ("ridge", Ridge())])
        search = GridSearchCV(pipe, {"embed__model": ["ecfp", "graph-vae-moses", "smiles-gpt-moses-small"],
                                     "ridge__alpha": [1.0, 10.0, 100.0, 1000.0]},
                              cv=GroupKFold(n_splits=3), scoring="neg_root_mean_squared_error")
        search.fit(data.smiles, data.logS, groups=groups)
        print(f"best: {search.best_params_}, cross-validated RMSE {-search.best_score_:.3f} logS")
        (pd.DataFrame(search.cv_results_)
         .assign(rmse=lambda d: -d.mean_test_score)
         .pivot_table(index="param_embed__model", columns="param_ridge__alpha", values="rmse")
         .round(3))
    """),
    ("md", """
        The fitted search is an ordinary estimator: `search.predict(smiles)` embeds new molecules with
        the chosen model and predicts. For a property model that saves without pickle and also gives a
        standard deviation, use `mg.transfer.PropertyModel` (notebook 02).
    """),
    ("code", """
        new = ["CC(C)Cc1ccc(C(C)C(=O)O)cc1", "OCC(O)CO", "c1ccc2ccccc2c1"]
        pd.DataFrame({"smiles": new, "predicted logS": search.predict(new).round(2)})
    """),
    ("md", """
        ## SDF in and out

        `mg.io.write_table` writes CSV, TSV, SMI, SDF or Parquet by the file's suffix (atomically: an
        interrupted write leaves an existing file as it was), with every column as an SDF property;
        `mg.io.read_table` reads any of them back into the same columns, flagging unreadable records
        instead of dropping them. `mg.io.sdf_molblocks` gives the records' molblocks (coordinates kept).
    """),
    ("code", """
        table = mg.score(sol[["smiles", "name", "logS"]], properties=["qed", "logp"])
        sdf = work / "solubility_scored.sdf"
        mg.io.write_table(table, sdf)
        back = mg.io.read_table(sdf)
        same = all(c in back.columns for c in table.columns)
        print(f"SDF round trip: {len(back)} rows, columns kept: {same}; {len(mg.io.sdf_molblocks(sdf))} molblocks")
        print("logS equal after the round trip:", np.allclose(back.logS.to_numpy(float), table.logS.to_numpy(float)))
        back.head()
    """),
    ("md", """
        ## DeepChem

        `mg.io.deepchem_arrays(df, targets)` gives the `(X, y, w, ids)` arrays of a DeepChem
        `NumpyDataset` without needing DeepChem (missing labels become weight 0, `ids` are the SMILES);
        `mg.io.to_deepchem` builds the dataset itself and `mg.io.from_deepchem` turns a DeepChem dataset
        (MolNet's included) back into a molgen table. The last two need `pip install 'molgen[deepchem]'`.
    """),
    ("code", """
        X, y, w, ids = mg.io.deepchem_arrays(data, ["logS"], X="morgan")
        print(f"DeepChem arrays: X {X.shape}, y {y.shape}, w {w.shape}, ids {ids.shape}")
        try:
            import deepchem  # noqa: F401
        except ImportError:
            print("DeepChem is not installed here: pip install 'molgen[deepchem]' for mg.io.to_deepchem / "
                  "from_deepchem; deepchem_arrays above needs only NumPy")
        else:
            dataset = mg.io.to_deepchem(data, ["logS"])
            again = mg.io.from_deepchem(dataset)
            print(f"to_deepchem: {type(dataset).__name__} with {len(dataset)} molecules; "
                  f"from_deepchem: {len(again)} rows, logS equal: {np.allclose(again.logS, data.logS)}")
    """),
]
