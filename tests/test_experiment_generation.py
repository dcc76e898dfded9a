"""The generation task of the transfer experiment: rows and files with the right columns beside the
property task's, a scratch control that really starts from random weights of the parent's shape, and
(slow) every method end to end at a tiny size."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from molgen.errors import InputError
from molgen.experiment import experiment
from molgen.experiment_generation import COLUMNS, GEN_METHODS, GenMethod

torch.set_num_threads(1)
SMALL = "smiles-gpt-moses-small"
TINY = {"eval_samples": 24, "forgetting_molecules": 30, "progress": False}


def test_generation_rows_join_the_property_rows_in_one_results_table(tmp_path, monkeypatch):
    # a stand-in for a trained method: the parent again under another name (no training, real judging)
    monkeypatch.setitem(GEN_METHODS, "parent-again", GenMethod(train=False))
    results = experiment("freesolv", target="expt", sizes=(20,), seeds=(0,),
                         methods=("ecfp+ridge", "pretrained", "parent-again"), out=tmp_path, **TINY)  # fmt: skip
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table.task) == ["property", "generation", "generation"] and len(results) == 3
    gen = table[table.task == "generation"]
    assert set(COLUMNS) | {"method", "size", "seed", "seconds"} <= set(gen.columns)
    assert (gen[["size", "seed"]].to_numpy() == [20, 0]).all() and gen.rmse.isna().all()
    assert table.loc[table.task == "property", "fcd"].isna().all() and table.rmse.notna().sum() == 1
    row = gen.iloc[0]
    assert 0.5 < row.valid <= 1 and row.fcd > 0 and 0 < row.snn < 1 and 0 < row.intdiv < 1
    assert row.moses_fcd > 0 and 0 < row.moses_nll < 3 and row.trainable_fraction == 0 and row.steps == 0
    assert gen.fcd.nunique() == 1  # the same parent, seed and test set: the same figures
    md = (tmp_path / "results.md").read_text()
    assert "| ecfp+ridge |" in md and "## Generation" in md and "| 20 | parent-again |" in md
    for png in ("learning_curve.png", "learning_curve_generation.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    split = pd.read_csv(tmp_path / "splits" / "20_0.csv")
    assert (split.set == "train").sum() == 20 and not set(split.smiles[split.set == "train"]) & set(split.smiles[split.set == "test"])


def test_generation_needs_no_property_column_and_bad_choices_are_one_line_errors(tmp_path):
    from molgen.datasets import load

    smiles = tmp_path / "series.csv"
    load("chembl2321810")[["smiles"]].iloc[:80].to_csv(smiles, index=False)
    results = experiment(data=smiles, sizes=(20,), seeds=(0,), methods=("ecfp+rf", "pretrained"), **TINY)
    assert list(results.task) == ["generation"]  # no property column: the property task is left out
    with pytest.raises(InputError, match="target column 'pIC50' not found"):
        experiment(data=smiles, target="pIC50", sizes=(20,), methods=("pretrained",), **TINY)
    with pytest.raises(InputError, match="unknown tasks"):
        experiment("freesolv", tasks=("generate",))
    with pytest.raises(InputError, match="unknown methods.*finetune-lora"):
        experiment("freesolv", methods=("finetune-everything",))
    with pytest.raises(InputError, match="no method of the generation task"):
        experiment("freesolv", tasks=("generation",), methods=("ecfp+rf",))


def test_the_scratch_control_has_the_parents_shape_and_random_weights(tmp_path):
    from molgen.datasets import load
    from molgen.finetune import run_config
    from molgen.models.hub import WEIGHTS_NAME, read_config, resolve
    from molgen.train.gpt import build

    source = tmp_path / "train.csv"
    load("chembl2321810")[["smiles"]].iloc[:40].to_csv(source, index=False)
    config = run_config(SMALL, str(source), tmp_path / "run", scratch=True, max_steps=2)
    assert config.task == "pretrain" and config.init_from is None and config.data.kekule is True
    module, _ = build(config)
    parent = read_config(resolve(SMALL))["config"]
    shape = module.model.config
    assert (shape.n_layer, shape.n_head, shape.n_embd, shape.n_kv_head) == tuple(parent[k] for k in ("n_layer", "n_head", "n_embd", "n_kv_head"))
    assert shape.block_size > parent["block_size"]  # fitted to the series, as fine-tuning grows the parent's
    weights = load_file(resolve(SMALL) / WEIGHTS_NAME)
    mine = module.model.state_dict()
    same = [n for n, w in weights.items() if n in mine and mine[n].shape == w.shape and torch.allclose(mine[n], w)]
    assert all(n.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight", "bias")) for n in same), same  # only the inits of ones and zeros
    assert not torch.allclose(mine["blocks.0.attn.c_attn.weight"], weights["blocks.0.attn.c_attn.weight"])
    with pytest.raises(InputError, match="policy 'none' only"):
        run_config(SMALL, str(source), tmp_path / "run2", "lora", scratch=True)


@pytest.mark.slow
def test_every_generation_method_runs_end_to_end_at_a_tiny_size(tmp_path):
    from typer.testing import CliRunner

    from molgen.cli import app

    run = CliRunner().invoke(app, ["experiment", "transfer", "--dataset", "chembl2321810", "--tasks", "generation",
                                   "--sizes", "20", "--seeds", "1", "--steps", "3", "--eval-samples", "16",
                                   "--forgetting-molecules", "30", "--out", str(tmp_path)])  # fmt: skip
    assert run.exit_code == 0, run.output
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table.method) == list(GEN_METHODS) and (table.task == "generation").all()
    by = table.set_index("method")
    assert by.loc["pretrained", "steps"] == 0 and (by.drop(index="pretrained").steps == 3).all()
    assert by.loc["scratch", "trainable_fraction"] == 1 and by.loc["finetune-none", "trainable_fraction"] == 1
    assert 0 < by.loc["finetune-lora", "trainable_fraction"] < 0.1
    assert by.loc["finetune-head_only", "trainable_fraction"] < by.loc["finetune-first_k:2", "trainable_fraction"] < 1
    assert table.fcd.notna().all() and table.moses_nll.notna().all() and (table.valid > 0).all()
    assert "finetune-none+rehearsal" in (tmp_path / "results.md").read_text()
