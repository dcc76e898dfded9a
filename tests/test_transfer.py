"""Transfer on real molecules: frozen features, property models, their files, the CLI, bad input."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import molgen as mg
from molgen.cli import app
from molgen.datasets import moses_smiles
from molgen.errors import ConfigError, InputError
from molgen.transfer import Embedder, PropertyModel, embed, feature_id


@pytest.fixture(scope="module")
def solubility():
    df = mg.datasets.load("solubility")
    return df[df.split == "train"].head(240).reset_index(drop=True), df[df.split == "test"].reset_index(drop=True)


def rmse(pred, y) -> float:
    return float(np.sqrt(np.nanmean((np.asarray(pred) - np.asarray(y)) ** 2)))


@pytest.mark.parametrize("head", ["ridge", "mlp", "gp"])
def test_a_property_model_beats_the_mean_and_round_trips_through_its_files(solubility, tmp_path, head):
    train, test = solubility
    model = PropertyModel("ecfp", head).fit(train, target="logS")
    pred = model.predict(test.smiles.tolist())
    assert list(pred.columns) == ["smiles", "mean", "std"] and len(pred) == len(test)
    assert rmse(pred["mean"], test.logS) < 0.8 * rmse(np.full(len(test), train.logS.mean()), test.logS)
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["head"] == head
    again = PropertyModel.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict(test.smiles.tolist()[:30])["mean"], pred["mean"][:30], rtol=1e-6)
    np.testing.assert_allclose(again(test.smiles.tolist()[:5]), pred["mean"][:5], rtol=1e-6)  # smiles -> scores
    if head == "gp":
        assert (pred["std"] > 0).all()
    else:
        assert pred["std"].isna().all()


def test_the_gp_is_less_sure_far_from_its_training_set(solubility):
    train, _ = solubility
    gp = PropertyModel("ecfp", "gp").fit(train, target="logS")
    near, far = gp.predict([train.smiles[0], "FC(F)(F)C(F)(F)C(F)(F)C(F)(F)S(=O)(=O)[O-].[Na+]"])["std"]
    assert far > 1.5 * near


def test_bad_rows_are_counted_not_fatal_and_not_silent():
    smiles = ["CCO", "CCCO", "CCCCO", "CCCCCO", "c1ccccc1O", "c1ccccc1N", "CCO", "not a molecule", "CCN", "CCCN"]
    values = [0.1, 0.2, 0.3, 0.4, "n/a", np.inf, 0.3, 1.0, 0.5, None]
    model = PropertyModel("ecfp", "ridge").fit((smiles, values))
    assert model.report_ == {"rows": 10, "no_finite_target": 3, "invalid_smiles": 1, "duplicates_averaged": 1,
                             "not_encodable": 0, "used": 5}
    with pytest.raises(InputError, match="only 2 usable molecules"):
        PropertyModel("ecfp").fit((["CCO", "CCN", "xx"], [1, 2, 3]))
    with pytest.raises(InputError, match="target column 'logP' not found"):
        PropertyModel("ecfp").fit(pd.DataFrame({"smiles": ["CCO"], "logS": [1.0]}), target="logP")
    with pytest.raises(InputError, match="head must be one of"):
        PropertyModel("ecfp", "forest")
    pred = model.predict(["CCO", "nonsense"])
    assert np.isfinite(pred["mean"][0]) and np.isnan(pred["mean"][1])  # an unreadable molecule is NaN, kept


def test_a_model_refuses_other_weights_than_it_was_fitted_on(solubility, tmp_path):
    train, _ = solubility
    PropertyModel("ecfp").fit(train, target="logS").save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["feature_id"] = "0" * 64
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="fitted on other weights"):
        PropertyModel.load(tmp_path / "m")
    with pytest.raises(ConfigError, match="not a saved PropertyModel"):
        PropertyModel.load(tmp_path)


def test_the_embedder_sits_in_a_scikit_learn_pipeline_and_travels_by_name(solubility):
    from sklearn.base import clone
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    train, test = solubility
    pipe = make_pipeline(Embedder("ecfp"), Ridge(alpha=10.0)).fit(train.smiles, train.logS)
    assert rmse(pipe.predict(test.smiles), test.logS) < rmse(np.full(len(test), train.logS.mean()), test.logS)
    copy = pickle.loads(pickle.dumps(clone(pipe).fit(train.smiles, train.logS)))
    np.testing.assert_allclose(copy.predict(test.smiles[:10]), pipe.predict(test.smiles[:10]))
    assert len(pickle.dumps(Embedder("graph-vae-moses"))) < 500  # a name, never weights
    X = embed("ecfp", ["CCO", "CCO", "junk"])  # noqa: N806
    assert X.shape == (3, 2048) and (X[0] == X[1]).all() and np.isnan(X[2]).all()
    with pytest.raises(InputError, match="not one string"):
        embed("ecfp", "CCO")


def test_rdkit_mols_are_molecules_too():
    from rdkit import Chem

    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    for features in ("ecfp", "graph-vae-moses"):
        np.testing.assert_array_equal(embed(features, mols), embed(features, smiles))
    pm = PropertyModel("ecfp", head="ridge").fit(pd.DataFrame({"smiles": [*smiles, "CCN", "CCCl"], "y": [1.0, 2, 3, 4, 5]}), target="y")
    from_mols = pm.predict(mols)
    assert from_mols["smiles"].tolist() == ["CCO", "Oc1ccccc1", "CC(=O)Nc1ccc(O)cc1"] and from_mols["mean"].notna().all()
    np.testing.assert_allclose(from_mols["mean"], pm.predict(smiles)["mean"])


def test_worker_processes_give_the_same_vectors_and_rows():
    import molgen.transfer as tr

    smiles = moses_smiles("test")[:2_000]
    smiles[5], smiles[1_500] = "not a smiles", "CC[Pt]Cl"  # one per worker's share
    for features in ("ecfp", "graph-vae-moses"):
        tr._CACHE.clear()
        one = embed(features, smiles, workers=1)
        tr._CACHE.clear()
        two = embed(features, smiles, workers=2)  # two forked processes, 1,000 molecules each
        np.testing.assert_array_equal(np.isnan(two).any(1), np.isnan(one).any(1))
        np.testing.assert_allclose(two, one, atol=1e-5)
    assert np.isnan(one[[5, 1_500]]).all() and not np.isnan(np.delete(one, [5, 1_500], 0)).any()
    with pytest.raises(InputError, match="workers must be"):
        embed("ecfp", smiles[:3], workers=0)


def test_the_embedder_names_the_molecules_it_cannot_read():
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    smiles = ["CCO", "CCI", "c1ccccc1[Sn](C)(C)C", "CCN"]  # iodine and tin: outside the GPT's vocabulary
    with pytest.raises(InputError, match=r"cannot read 2 of 4 molecules \(rows 1 \('CCI'\), 2 "):
        Embedder("smiles-gpt-moses-small").fit(smiles).transform(smiles)
    X = make_pipeline(Embedder("smiles-gpt-moses-small", unreadable="nan"), SimpleImputer()).fit_transform(smiles)  # noqa: N806
    assert X.shape == (4, 128) and np.isfinite(X).all()
    with pytest.raises(InputError, match="unreadable must be"):
        Embedder("ecfp", unreadable="skip").fit(smiles)


def test_fit_property_and_predict_on_the_command_line(solubility, tmp_path):
    train, test = solubility
    train[["smiles", "logS"]].to_csv(tmp_path / "train.csv", index=False)
    test[["smiles", "logS"]].head(20).to_csv(tmp_path / "test.csv", index=False)
    run = CliRunner().invoke(app, ["fit-property", str(tmp_path / "train.csv"), "--target", "logS", "--features",
                                   "ecfp", "--head", "gp", "-o", str(tmp_path / "model")])
    assert run.exit_code == 0, run.output
    assert "240 molecules of 240 rows" in " ".join(run.output.split())
    again = CliRunner().invoke(app, ["fit-property", str(tmp_path / "train.csv"), "--target", "logS", "-o",
                                     str(tmp_path / "model")])
    assert again.exit_code == 2 and "--force" in again.output  # a saved model is not replaced by accident
    run = CliRunner().invoke(app, ["predict", str(tmp_path / "model"), str(tmp_path / "test.csv"), "-o",
                                   str(tmp_path / "pred.csv")])
    assert run.exit_code == 0, run.output
    out = pd.read_csv(tmp_path / "pred.csv")
    assert {"logS", "predicted_logS", "predicted_logS_std"} <= set(out.columns) and len(out) == 20
    assert rmse(out.predicted_logS, out.logS) < 1.5


def test_the_scaffold_split_keeps_whole_scaffolds_on_one_side():
    from molgen.experiment import scaffold_split

    smiles = mg.datasets.load("freesolv").smiles.tolist()
    test = scaffold_split(smiles, 0.2, seed=0)
    assert 0.18 < test.mean() <= 0.2
    scaf = [mg.chem.scaffold(s) for s in smiles]
    test_scafs = {s for s, t in zip(scaf, test, strict=True) if t and s}
    assert not any(s in test_scafs for s, t in zip(scaf, test, strict=True) if not t)
    assert (scaffold_split(smiles, 0.2, seed=0) == test).all()


def test_the_experiment_runs_end_to_end_at_a_tiny_size(tmp_path):
    from molgen.experiment import experiment

    run = CliRunner().invoke(app, ["experiment", "transfer", "--dataset", "freesolv", "--target-col", "expt",
                                   "--sizes", "20,40", "--seeds", "2", "--methods", "ecfp+rf,ecfp+ridge",
                                   "--out", str(tmp_path)])
    assert run.exit_code == 0, run.output
    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == 2 * 2 * 2 and set(results.method) == {"ecfp+rf", "ecfp+ridge"}
    from io import StringIO  # piped: stdout is results.csv's rows, nothing else

    pd.testing.assert_frame_equal(pd.read_csv(StringIO(run.stdout)), results, check_dtype=False)
    assert {"rmse", "mae", "r2", "spearman", "seconds", "size", "seed"} <= set(results.columns)
    assert (results.rmse > 0).all() and results.r2.max() > 0  # 40 molecules already teach something
    splits = {p.name: pd.read_csv(p) for p in (tmp_path / "splits").iterdir()}
    assert sorted(splits) == ["20_0.csv", "20_1.csv", "40_0.csv", "40_1.csv"]
    tests = [set(df.smiles[df.set == "test"]) for df in splits.values()]
    assert all(t == tests[0] for t in tests)  # one fixed test set
    assert (splits["40_1.csv"].set == "train").sum() == 40 and not set(splits["40_1.csv"].smiles[splits["40_1.csv"].set == "train"]) & tests[0]
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| ecfp+rf |" in (tmp_path / "results.md").read_text()
    with pytest.raises(InputError, match="unknown methods"):
        experiment("freesolv", methods=("ecfp+svm",))


def test_the_new_modules_are_reachable_from_mg():
    import molgen.guide

    assert mg.transfer.PropertyModel is PropertyModel and mg.guide is molgen.guide
    assert callable(mg.experiment.experiment) and callable(mg.finetune.finetune)


def test_the_end_to_end_gnns_beat_the_mean_and_fine_tune_a_copy_of_the_shipped_encoder(tmp_path):
    import copy

    from molgen.experiment import experiment, fit_end_to_end
    from molgen.models import state_sha256
    from molgen.transfer import _load

    shipped = _load("graph-vae-moses")  # the process's shared copy, which fine-tuning must not touch
    before = state_sha256(shipped)
    methods = ("gnn-scratch+mlp", "graph-vae-moses-finetuned+mlp")
    results = experiment("solubility", sizes=(30,), seeds=(0,), methods=methods, out=tmp_path, progress=False)
    split = pd.read_csv(tmp_path / "splits" / "30_0.csv")
    train, test = split[split.set == "train"], split[split.set == "test"]
    mean_rmse = rmse(np.full(len(test), train.logS.mean()), test.logS)
    assert set(results.method) == set(methods) and (results.rmse < mean_rmse).all(), (results, mean_rmse)
    assert (results.not_encodable == 0).all() and (results.best_epoch >= 1).all()
    assert state_sha256(shipped) == before

    smiles = train.smiles.tolist()[:20] + ["not a molecule", "[U]"]
    model = fit_end_to_end(copy.deepcopy(shipped.encoder), smiles, list(train.logS[:20]) + [0.0, 0.0],
                           encoder_lr=1e-4, max_epochs=3, patience=3)  # fmt: skip
    assert model.report_["not_encodable"] == 2 and model.report_["val"] == 3
    tuned, original = model.encoder.state_dict(), shipped.encoder.state_dict()
    assert any(not torch.equal(tuned[k], original[k]) for k in original)
    assert state_sha256(shipped) == before
    pred = model.predict(smiles)
    assert np.isnan(pred[-2:]).all() and np.isfinite(pred[:-2]).all()


def test_layer_pooled_graph_vae_features_are_their_own_extractor(tmp_path, solubility):
    train, test = solubility
    smiles = ["CCO", "c1ccccc1O", "junk"]
    X = embed("graph-vae-moses:layers", smiles)  # noqa: N806
    assert X.shape == (3, 1280) and np.isfinite(X[:2]).all() and np.isnan(X[2]).all()
    assert feature_id("graph-vae-moses:layers") == feature_id("graph-vae-moses") + ":layers"
    pm = PropertyModel("graph-vae-moses:layers", head="ridge").fit(train.head(60), target="logS")
    pm.save(tmp_path / "m")
    np.testing.assert_allclose(PropertyModel.load(tmp_path / "m").predict(test.smiles[:5])["mean"],
                               pm.predict(test.smiles[:5])["mean"])  # fmt: skip
    with pytest.raises(InputError, match="reads a graph-VAE's layers; SmilesGPT has none"):
        embed("smiles-gpt-moses-small:layers", ["CCO"])
