"""Conditional generation: a condition added to a pretrained GPT, raw property values by name,
and the conditions the training batches carry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import molgen as mg
from molgen.config import parse_config
from molgen.data import CONDITION_PROPERTIES, property_values
from molgen.errors import ConfigError, InputError
from molgen.models.gpt import GPTConfig, SmilesGPT, condition_rows
from molgen.models.hub import from_pretrained, save_pretrained
from molgen.tokenize import SmilesTokenizer

torch.set_num_threads(1)

NAMES, MEAN, STD = ["logp", "tpsa"], [2.0, 60.0], [0.5, 20.0]


@pytest.fixture(scope="module")
def tok(real_smiles):
    return SmilesTokenizer.from_smiles(real_smiles)


def tiny(tok, condition: bool = False, partial: bool = True, random_proj: bool = False) -> SmilesGPT:
    torch.manual_seed(0)
    model = SmilesGPT(GPTConfig(vocab_size=len(tok), n_layer=2, n_head=2, n_embd=32, block_size=64))
    model.tokenizer = tok
    if condition:
        model.add_condition(NAMES, MEAN, STD, partial=partial)
        if random_proj:  # a trained condition's stand-in: the condition changes the logits
            torch.nn.init.normal_(model.cond_proj.weight, std=0.5)
    return model.eval()


def test_a_zero_initialised_condition_leaves_the_parents_logits_unchanged_and_learns(tok, real_smiles):
    parent = tiny(tok)
    child = tiny(tok, condition=True)
    ids = torch.as_tensor(tok.encode_batch(real_smiles))
    before, _ = parent(ids)
    for values in ({"logp": 5.0, "tpsa": 10.0}, {"tpsa": 140.0}, None):
        cond = torch.as_tensor(condition_rows(values, len(ids), child.config))
        after, _ = child(ids, condition=cond)
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert child.wpe.num_embeddings == parent.wpe.num_embeddings  # no position moved
    # the zero projection still gets a gradient: through the <bos> state every token attends to
    child.train()
    cond = torch.as_tensor(condition_rows({"logp": 4.0, "tpsa": 30.0}, len(ids), child.config))
    _, loss = child(ids[:, :-1], ids[:, 1:], condition=cond)
    loss.backward()
    assert child.cond_proj.weight.grad.abs().sum() > 0


def test_raw_values_by_name_are_standardised_with_the_models_stored_statistics(tok, real_smiles, tmp_path, monkeypatch):
    model = tiny(tok, condition=True, random_proj=True)
    rows = condition_rows({"logp": 3.0, "tpsa": [40.0, 100.0]}, 2, model.config)
    np.testing.assert_allclose(rows, [[2.0, -1.0, 1, 1], [2.0, 2.0, 1, 1]])
    np.testing.assert_allclose(condition_rows({"tpsa": 70.0}, 1, model.config), [[0.0, 0.5, 0, 1]])
    # the statistics travel with the checkpoint: a reloaded model maps the same raw values the same way
    save_pretrained(model, tmp_path / "cond")
    again = from_pretrained(tmp_path / "cond", device="cpu")
    assert again.config.condition == model.config.condition
    a = mg.sample(model, 48, seed=1, workers=1, condition={"logp": 3.0, "tpsa": 40.0})
    b = mg.sample(again, 48, seed=1, workers=1, condition=[3.0, 40.0])  # all properties in order, raw
    pd.testing.assert_frame_equal(a, b)
    other = mg.sample(again, 48, seed=1, workers=1, condition={"logp": 0.0, "tpsa": 140.0})
    assert not other["smiles"].equals(a["smiles"])
    # what reaches the network is the standardised row, in sampling and in scoring
    seen = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda *a, **k: seen.append(a[4]) or generate(*a, **k))
    mg.sample(model, 6, workers=1, condition={"logp": 3.0, "tpsa": 40.0})
    by_hand = torch.tensor([[2.0, -1.0, 1.0, 1.0]]).expand(6, -1)
    torch.testing.assert_close(seen[0], by_hand)
    ids = torch.as_tensor(tok.encode_batch(real_smiles))
    np.testing.assert_allclose(model.log_likelihood(real_smiles, condition={"logp": 3.0, "tpsa": 40.0}),
                               model.sequence_log_prob(ids, by_hand[:1].expand(len(ids), -1)).detach().numpy(), rtol=1e-5)  # fmt: skip


def test_unknown_and_missing_names_are_refused_naming_the_models_conditions(tok):
    model = tiny(tok, condition=True)
    with pytest.raises(InputError, match=r"conditioned on logp, tpsa; it has no condition 'qed'"):
        mg.sample(model, 4, workers=1, condition={"logp": 2.0, "qed": 0.8})
    with pytest.raises(InputError, match=r"condition 'logp' must be a number or 4 numbers"):
        mg.sample(model, 4, workers=1, condition={"logp": "high"})
    with pytest.raises(InputError, match=r"condition 'tpsa' must be finite"):
        mg.sample(model, 4, workers=1, condition={"tpsa": float("nan")})
    strict = tiny(tok, condition=True, partial=False)
    with pytest.raises(InputError, match=r"needs every one of its conditions \(logp, tpsa\); tpsa is missing"):
        mg.sample(strict, 4, workers=1, condition={"logp": 2.0})
    with pytest.raises(InputError, match=r"needs every one of its conditions"):
        mg.sample(strict, 4, workers=1)
    with pytest.raises(InputError, match="unconditional; do not pass condition"):
        mg.sample(tiny(tok), 4, workers=1, condition={"logp": 2.0})
    with pytest.raises(Exception, match="conditional already"):
        model.add_condition(["qed"], [0.5], [0.1])


def test_the_condition_properties_are_molgen_scores_columns(real_smiles):
    values = property_values(real_smiles, list(CONDITION_PROPERTIES))
    scores = mg.score(real_smiles, properties=list(CONDITION_PROPERTIES))
    np.testing.assert_allclose(values, scores[list(CONDITION_PROPERTIES)].to_numpy(float), rtol=1e-6)
    assert np.isnan(property_values(["C1CC", "CCO"], ["logp"])[0]).all()
    with pytest.raises(InputError, match="unknown property 'clogp'; known: logp, qed, tpsa, mw"):
        property_values(["CCO"], ["clogp"])


def _tiny_config(tmp_path, **condition) -> dict:
    return {"model_type": "gpt", "task": "finetune", "name": "cond", "run_dir": str(tmp_path / "run"),
            "init_from": "smiles-gpt-moses-small", "data": {"dataset": "moses", "val_size": 16},
            "finetune": {"n_train": 40}, "condition": {"properties": ["logp", "tpsa"], **condition},
            "trainer": {"max_steps": 1, "batch_size": 8, "progress_bar": False}}  # fmt: skip


def test_training_batches_carry_each_molecules_standardised_properties(tmp_path):
    from molgen.train.gpt import build

    module, data = build(parse_config(_tiny_config(tmp_path, drop=0.0), "cond.toml"))
    model = module.model
    assert model.config.condition["names"] == ["logp", "tpsa"] and not model.config.condition["partial"]
    assert module.trainable["trainable"] == module.trainable["total"]  # the projection trains
    for loader in (data.train_dataloader(), data.val_dataloader()):
        ids, cond = next(iter(loader))
        assert cond.shape == (len(ids), 4) and (cond[:, 2:] == 1).all()
        smiles = model.tokenizer.decode_batch(ids.numpy())
        raw = property_values(smiles, ["logp", "tpsa"])
        np.testing.assert_allclose(cond[:, :2].numpy(), condition_rows(dict(zip(["logp", "tpsa"], raw.T, strict=True)),
                                                                       len(ids), model.config)[:, :2], rtol=1e-5)  # fmt: skip
    # the seeded 40 MOSES molecules define the statistics the model stores
    np.testing.assert_allclose(model.config.condition["mean"], np.nanmean(data.train_values, 0))
    loss, _ = module.step_loss((ids, cond))
    assert torch.isfinite(loss)


def test_condition_dropout_hides_properties_at_the_configured_rate(tmp_path):
    from molgen.train.gpt import build

    _, data = build(parse_config(_tiny_config(tmp_path, drop=0.5), "cond.toml"))
    assert data.condition["partial"]
    ds = data.train_dataloader().dataset
    items = np.stack([ds[i][1] for _ in range(25) for i in range(len(ds))])
    values, flags = items[:, :2], items[:, 2:]
    assert 0.4 < flags.mean() < 0.6 and set(np.unique(flags)) == {0.0, 1.0}
    assert (values[flags == 0] == 0).all() and (values[flags == 1] != 0).all()


def test_conditions_that_do_not_fit_the_run_are_config_errors(tmp_path):
    raw = _tiny_config(tmp_path)
    with pytest.raises(ConfigError, match=r"condition\.properties: a property is named twice"):
        parse_config({**raw, "condition": {"properties": ["logp", "logp"]}}, "bad.toml")
    with pytest.raises(ConfigError, match=r"cannot be combined with finetune\.freeze = 'lora'"):
        parse_config({**raw, "finetune": {"n_train": 40, "freeze": "lora"}}, "bad.toml")


def test_generate_takes_conditions_by_name_and_refuses_bad_ones(tok, tmp_path):
    from molgen.cli import app

    model = tiny(tok, condition=True, random_proj=True)
    save_pretrained(model, tmp_path / "cond")
    out = tmp_path / "out.csv"
    run = CliRunner().invoke(app, ["generate", "-m", str(tmp_path / "cond"), "-n", "32", "-o", str(out), "--workers", "1",
                                   "--condition", "logp=3", "--condition", "tpsa=40"])  # fmt: skip
    assert run.exit_code == 0, run.output
    pd.testing.assert_series_equal(pd.read_csv(out, keep_default_na=False)["smiles"],
                                   mg.sample(model, 32, workers=1, condition={"logp": 3.0, "tpsa": 40.0})["smiles"])  # fmt: skip
    for bad, message in ((["--condition", "qed=0.8"], "it has no condition 'qed'"),
                         (["--condition", "logp"], "write NAME=VALUE"),
                         (["--condition", "logp=1", "--condition", "logp=2"], "given twice")):  # fmt: skip
        run = CliRunner().invoke(app, ["generate", "-m", str(tmp_path / "cond"), "-n", "8", "-o", str(tmp_path / "x.csv"), *bad])
        assert run.exit_code == 2 and message in " ".join(run.output.split()), run.output
        assert not (tmp_path / "x.csv").exists()


def test_a_column_of_the_data_file_is_a_condition_a_missing_value_left_out(tmp_path, real_smiles):
    # e.g. a PropertyModel's prediction written by molgen predict: any numeric column conditions
    from molgen.chem import canonicalize
    from molgen.train.gpt import build

    mols = list(dict.fromkeys(real_smiles))[:40]
    pred = np.linspace(-4.0, 1.0, len(mols))
    pred[::4] = np.nan  # 10 rows: more than the validation's 8, so some train
    path = tmp_path / "series.csv"
    pd.DataFrame({"smiles": mols, "logS_pred": pred}).to_csv(path, index=False)
    raw = {**_tiny_config(tmp_path, drop=0.0, properties=["logp", "logS_pred"]), "data": {"dataset": str(path), "val_fraction": 0.2}}
    raw["finetune"] = {}
    module, data = build(parse_config(raw, "cond.toml"))
    assert module.model.config.condition["names"] == ["logp", "logS_pred"]
    by_smiles = dict(zip((canonicalize(m) for m in mols), pred, strict=True))
    for ids, values in ((data.train_ids, data.train_values), (data.val_ids, data.val_values)):
        rows = [canonicalize(s) for s in module.model.tokenizer.decode_batch(np.asarray(ids))]
        np.testing.assert_allclose(values[:, 1], [by_smiles[r] for r in rows])  # NaN where the file has none
        np.testing.assert_allclose(values[:, 0], property_values(rows, ["logp"])[:, 0], rtol=1e-6)
    assert data.info["condition"]["missing"]["logS_pred"] == int(np.isnan(data.train_values[:, 1]).sum())
    ds = data.train_dataloader().dataset
    row = int(np.flatnonzero(np.isnan(data.train_values[:, 1]))[0])  # a molecule without a value trains with
    assert ds[row][1][3] == 0.0 and ds[row][1][2] == 1.0  # that property not given, the other given
    with pytest.raises(ConfigError, match=r"'logS_pred': not an RDKit property .* MOSES has no other columns"):
        parse_config(_tiny_config(tmp_path, properties=["logS_pred"]), "bad.toml")
    with pytest.raises(InputError, match=r"no column 'pIC50' for \[condition\] properties; columns: \['smiles', 'logS_pred'"):
        build(parse_config({**raw, "condition": {"properties": ["pIC50"]}}, "bad.toml"))
