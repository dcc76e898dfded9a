"""Generative fine-tuning: freeze policies freeze exactly what they say, early stopping stops and exports
the best weights, a longer context keeps the old scores and samples past 64 tokens, and a fine-tuned
checkpoint round-trips through save/load, molgen finetune and molgen generate."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import molgen as mg
from molgen.config import parse_config
from molgen.datasets import load, moses_smiles
from molgen.errors import ConfigError
from molgen.finetune import SAMPLES
from molgen.models.hub import WEIGHTS_NAME, from_pretrained, resolve, save_pretrained
from molgen.train import pretrain
from molgen.train.freeze import FreezePolicy, apply_freeze

torch.set_num_threads(1)
SMALL = "smiles-gpt-moses-small"


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def moses_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "moses60.csv"
    pd.DataFrame({"smiles": moses_smiles("test")[:60]}).to_csv(path, index=False)
    return path


def finetune_raw(tmp_path, data, freeze="none", k=None, **trainer) -> dict:
    return {
        "model_type": "gpt", "task": "finetune", "name": "ft", "run_dir": str(tmp_path / "run"), "init_from": SMALL,
        "data": {"dataset": str(data), "augment": 0.0, "val_fraction": 0.2},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "trainer": {"max_steps": 2, "batch_size": 16, "val_every_steps": 1, "progress_bar": False, **trainer},
        "finetune": {"freeze": freeze, "k": k},
    }  # fmt: skip


# --- freeze policies ------------------------------------------------------------------------------


def test_each_policy_sets_requires_grad_on_exactly_its_parts():
    gpt = lambda: mg.load_pretrained(SMALL, device="cpu").train()  # noqa: E731
    model = gpt()
    everything = trainable(model)
    assert apply_freeze(model, "none") == [] and trainable(model) == everything
    model = gpt()
    apply_freeze(model, FreezePolicy("first_k", 2))
    assert trainable(model) == {n for n in everything if not n.startswith(("blocks.0.", "blocks.1."))}
    assert not model.blocks[1].training and model.blocks[2].training
    model = gpt()
    apply_freeze(model, "head_only")  # the output layer is the token embedding (tied): both train, with ln_f
    assert trainable(model) == {"wte.weight", "ln_f.weight", "ln_f.bias"}
    assert model.lm_head.weight is model.wte.weight
    with pytest.raises(ConfigError, match="does not apply to a gpt"):
        apply_freeze(gpt(), "encoder")
    with pytest.raises(ConfigError, match="k = 5, but the model has 4 layers"):
        apply_freeze(gpt(), "first_k:5")
    vae = mg.load_pretrained("graph-vae-moses", device="cpu")
    apply_freeze(vae, "encoder")
    assert trainable(vae) and not any(n.startswith("encoder.") for n in trainable(vae))
    assert all(n.startswith("decoder.") for n in trainable(vae))
    with pytest.raises(ConfigError, match="does not apply to a graph_vae"):
        apply_freeze(mg.load_pretrained("graph-vae-moses", device="cpu"), "head_only")


def test_policy_errors_are_config_errors(tmp_path, moses_file):
    with pytest.raises(ConfigError, match="needs k >= 1"):
        parse_config(finetune_raw(tmp_path, moses_file, "first_k"), "ft.toml")
    with pytest.raises(ConfigError, match="ft.toml: k = 2 is for freeze = 'first_k'"):
        parse_config(finetune_raw(tmp_path, moses_file, "head_only", k=2), "ft.toml")
    raw = finetune_raw(tmp_path, moses_file, "head_only")
    del raw["init_from"], raw["task"]
    with pytest.raises(ConfigError, match="keeps a parent's layers: it needs init_from"):
        parse_config(raw, "ft.toml")


@pytest.mark.parametrize("freeze, k, frozen", [("first_k", 2, ("blocks.0.", "blocks.1.")),
                                               ("head_only", None, ("blocks.", "wpe."))])  # fmt: skip
def test_frozen_weights_are_bit_identical_after_training_and_stay_in_eval_mode(tmp_path, moses_file, freeze, k, frozen):
    from molgen.train.gpt import build

    config = parse_config({**finetune_raw(tmp_path, moses_file, freeze, k), "finetune": {"freeze": freeze, "k": k, "dropout": 0.1}}, "ft")
    module, _ = build(config)
    module.train()  # what Lightning does at the start and after each validation
    assert all(not m.training for m in module.frozen) and module.model.ln_f.training
    assert module.model.blocks[-1].attn.dropout == 0.1 and module.model.config.dropout == 0.1
    out = pretrain(config)
    parent = load_file(resolve(SMALL) / WEIGHTS_NAME)
    child = load_file(out / WEIGHTS_NAME)
    for name, weights in parent.items():
        same = torch.equal(weights, child[name])
        assert same == name.startswith(frozen), f"{name}: {'unchanged' if same else 'changed'} under {freeze}"
    assert from_pretrained(out, device="cpu").provenance["finetune"]["freeze"] == str(FreezePolicy(freeze, k))


def test_graph_vae_encoder_policy_keeps_the_encoder_bit_identical(tmp_path, moses_file):
    raw = finetune_raw(tmp_path, moses_file, "encoder")
    raw.update(model_type="graph_vae", init_from="graph-vae-moses")
    meta = json.loads((resolve("graph-vae-moses") / "config.json").read_text())["config"]
    raw["model"] = {k: meta[k] for k in ("latent", "hidden", "enc_layers", "dec_hidden", "dec_layers", "window", "max_atoms")}
    raw["data"] = {"dataset": str(moses_file)}
    out = pretrain(parse_config(raw, "vae"))
    parent, child = load_file(resolve("graph-vae-moses") / WEIGHTS_NAME), load_file(out / WEIGHTS_NAME)
    changed = {n for n in child if n in parent and not torch.equal(parent[n], child[n])}
    assert changed and not any(n.startswith("encoder.") for n in changed)


# --- early stopping ------------------------------------------------------------------------------


def test_early_stopping_stops_and_exports_the_best_validation(tmp_path, moses_file):
    raw = finetune_raw(tmp_path, moses_file, max_steps=40, patience=2)
    raw["optim"] = {"lr": 0.05, "min_lr": 0.05, "warmup_steps": 0}  # far too high: validation loss climbs
    out = pretrain(parse_config(raw, "es"))
    prov = from_pretrained(out, device="cpu").provenance
    stop = prov["early_stopping"]
    assert stop["last_step"] < 40 and stop["last_step"] >= stop["best_step"] + 2
    assert prov["validation"]["step"] == stop["best_step"]
    final = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == stop["last_step"]
    exported = load_file(out / WEIGHTS_NAME)
    assert not torch.equal(exported["blocks.0.mlp.c_fc.weight"], final["state_dict"]["model.blocks.0.mlp.c_fc.weight"])


# --- a longer context ----------------------------------------------------------------------------


def test_extended_context_keeps_old_scores_and_samples_past_64_tokens():
    model = mg.load_pretrained(SMALL, device="cpu")
    moses = moses_smiles("test")[:64]
    before = model.log_likelihood(moses)
    parent = model.wpe.weight.detach().clone()
    model.extend_context(96)
    np.testing.assert_array_equal(model.log_likelihood(moses), before)
    rows = model.wpe.weight.detach()
    assert torch.equal(rows[:64], parent)  # the parent's rows bit for bit
    assert torch.equal(rows[64:], parent[32:].mean(0).expand(32, -1))  # new rows: the later learnt rows' mean
    assert model.config.block_size == 96 and model.wpe.num_embeddings == 96
    tok = model.tokenizer
    series = [tok.tokens(s) for s in load("chembl2321810", nrows=200)["smiles"]]
    long = next(t for t in series if len(t) >= 75 and all(x in tok.stoi for x in t))
    prefix = torch.tensor([tok.stoi[t] for t in long[:62]])  # a real molecule cut mid-way, past 63 tokens with <bos>
    ids, _, done = model.generate(32, generator=torch.Generator().manual_seed(0), prefix=prefix)
    assert int((ids != model.config.pad_id).sum(1).max()) > 64  # rows run past the old context
    again, _, _ = model.generate(32, generator=torch.Generator().manual_seed(0), prefix=prefix, use_cache=False)
    assert torch.equal(ids, again)  # the key/value cache agrees with full recomputation at the new length
    df = mg.sample(model, 32, seed=1, workers=1, prefix="".join(long[:62]))  # the grammar's path, as users sample
    assert len(df) == 32 and df["valid"].any()
    with pytest.raises(ConfigError, match="cannot shrink"):
        model.extend_context(80)


def test_interpolated_context_stretches_the_learnt_rows():
    from molgen.models.gpt import learnt_positions

    model = mg.load_pretrained(SMALL, device="cpu")
    parent = model.wpe.weight.detach().clone()
    k = learnt_positions(parent)
    assert k == 59  # rows 59-63 only decayed in pretraining (norm 0.03 against a median 0.55)
    model.extend_context(96, "interpolate")
    rows = model.wpe.weight.detach()
    assert rows.shape == (96, parent.size(1))
    torch.testing.assert_close(rows[0], parent[0])  # the ends stay where they were
    torch.testing.assert_close(rows[95], parent[k - 1])
    at = 19 * (k - 1) / 95  # position 19 of 96 sits at 11.6 of the 59 learnt rows
    torch.testing.assert_close(rows[19], parent[11] + (at - 11) * (parent[12] - parent[11]))
    assert torch.cdist(rows, rows).add(torch.eye(96) * 1e9).min() > 0.01  # every position its own vector
    assert model.config.block_size == 96
    df = mg.sample(model, 64, seed=0, workers=1)
    assert df["valid"].mean() > 0.8  # still a chemical language model before any fine-tuning
    with pytest.raises(ConfigError, match="positions must be one of"):
        model.extend_context(128, "tile")


# --- the whole fine-tune: library, CLI, checkpoint ------------------------------------------------


def test_finetune_cli_extends_the_context_and_its_checkpoint_round_trips(tmp_path):
    from typer.testing import CliRunner

    from molgen.cli import app

    target = tmp_path / "series.csv"
    load("chembl2321810")[["smiles"]].iloc[:60].to_csv(target, index=False)
    config = tmp_path / "ft.toml"
    config.write_text(f"""model_type = "gpt"
task = "finetune"
name = "ft"
run_dir = "{tmp_path / 'run'}"
init_from = "{SMALL}"
[data]
dataset = "{target}"
val_fraction = 0.2
[trainer]
max_steps = 3
batch_size = 8
val_every_steps = 3
progress_bar = false
[finetune]
n_train = 30
eval_samples = 12
forgetting_molecules = 40
""")
    result = CliRunner().invoke(app, ["finetune", "--config", str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    piped = pd.read_csv(io.StringIO(result.stdout))  # not a terminal: only the before/after table, as CSV, on stdout
    assert list(piped.columns) == ["figure", "before", "after"] and "FCD" in set(piped["figure"])
    assert (report["n_train"], report["n_held_out"]) == (30, 30)
    assert report["context"]["from"] == 64 and report["context"]["to"] > 64 and report["context"]["rows_longer"] > 0
    for side in ("before", "after"):
        assert {"valid", "unique", "novel_moses", "novel_target", "FCD", "SNN", "scaffold_share", "IntDiv"} <= set(report[side])
    assert report["before"]["held_out_unreadable"] > report["after"]["held_out_unreadable"]
    for side in ("before", "after"):  # forgetting: what the parent could do on MOSES
        assert report[side]["moses_FCD"] > 0 and 0 < report[side]["moses_nll"] < 3 and report[side]["moses_unreadable"] == 0
    assert report["forgetting"]["moses_nll"] == pytest.approx(report["after"]["moses_nll"] - report["before"]["moses_nll"])
    assert set(report["forgetting"]) == {"valid", "moses_FCD", "moses_nll"} and report["forgetting_molecules"] == 40
    assert report["trainable"]["fraction"] == 1.0 and report["freeze"] == "none"
    kept = {side: pd.read_csv(tmp_path / "run" / name) for side, name in SAMPLES.items()}  # the samples measured
    assert len(kept["parent"]) == len(kept["fine-tuned"]) == 12
    assert kept["parent"]["valid"].mean() == pytest.approx(report["before"]["valid"])
    assert kept["fine-tuned"]["valid"].mean() == pytest.approx(report["after"]["valid"])
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| scaffold_share |" in md and "| moses_FCD |" in md and "Forgetting (after - before" in md
    export = tmp_path / "run" / "export"
    model = from_pretrained(export, device="cpu")
    assert model.config.block_size == report["context"]["to"] and model.provenance["data"]["n_molecules"] == 24
    again = from_pretrained(save_pretrained(model, tmp_path / "copy"), device="cpu")
    ids = torch.as_tensor(model.tokenizer.encode_batch(load("chembl2321810")["smiles"].iloc[:4].tolist()))
    torch.testing.assert_close(again(ids)[0], model(ids)[0], rtol=0, atol=0)
    result = CliRunner().invoke(app, ["generate", "-m", str(export), "-n", "8", "-o", str(tmp_path / "gen.csv"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "gen.csv")) == 8


def test_new_tokens_start_from_a_related_known_token():
    from molgen.train.gpt import relate_new_tokens, related_token

    model = mg.load_pretrained(SMALL, device="cpu")
    tok, old = model.tokenizer, model.config.vocab_size
    expected = {"I": "Br", "[C@@H]": "C", "[se]": "s", "[Se]": "S", "%10": "6", "[Na+]": None}
    assert {t: related_token(t, tok.stoi) for t in expected} == expected
    for t in expected:  # as bare tokens (extend() would spell "[C@@H]" alone as a Kekulé molecule)
        tok.stoi[t] = len(tok.itos)
        tok.itos.append(t)
    model.resize_vocab(len(tok))
    chosen = relate_new_tokens(model, tok, old)
    assert chosen == {t: s for t, s in expected.items() if s}
    w = model.wte.weight
    assert torch.equal(w[tok.stoi["I"]], w[tok.stoi["Br"]]) and torch.equal(w[tok.stoi["[Na+]"]], w[:old].mean(0))


# --- property-guided fine-tuning ------------------------------------------------------------------


def test_property_weights_favour_better_values_by_rank_or_softmax():
    from molgen.data import property_weights
    from molgen.errors import InputError

    y = np.array([5.0, 7.0, 6.0, 7.0, 4.0])
    w = property_weights(y, k=0.1)
    assert w.sum() == pytest.approx(1) and w[1] == w[3] > w[2] > w[0] > w[4]  # ties share their mean rank
    ranks = np.array([3, 0.5, 2, 0.5, 4])  # from the best, 0-based; kN = 0.5 (Tripp et al. 2020)
    np.testing.assert_allclose(w, (1 / (0.5 + ranks)) / np.sum(1 / (0.5 + ranks)))
    low = property_weights(y, "min")
    assert np.argmax(low) == 4 and np.argmin(low) in (1, 3)
    assert property_weights(y, k=100).std() < property_weights(y, k=0.01).std()  # large k tends to uniform
    soft = property_weights(y, scheme="softmax", temperature=0.5)
    assert soft[1] == soft[3] > soft[2] and soft.sum() == pytest.approx(1)
    with pytest.raises(InputError, match="1 missing or infinite of 3"):
        property_weights([1.0, np.nan, 2.0])


def test_weight_by_draws_the_better_molecules_more_often(tmp_path):
    from molgen.errors import InputError
    from molgen.train.gpt import build

    series = load("chembl2321810").sample(80, random_state=0)[["smiles", "activity"]]  # activity 4.6 to 9.2
    data = tmp_path / "series.csv"
    series.to_csv(data, index=False)
    raw = finetune_raw(tmp_path, data)
    raw["finetune"] = {"weight_by": "activity", "weight_k": 0.02}
    _, dm = build(parse_config(raw, "w"))
    measured = {mg.chem.canonicalize(s): v for s, v in zip(series.smiles, series.activity, strict=True)}
    rows = [mg.chem.canonicalize(s) for s in dm.tokenizer.decode_batch(np.asarray(dm.train_ids))]
    uniform = np.mean([measured[s] for s in rows])
    drawn = []
    for _ in range(5):
        for batch in dm.train_dataloader():
            drawn += [measured[mg.chem.canonicalize(s)] for s in dm.tokenizer.decode_batch(batch.numpy())]
    assert len(drawn) == 5 * len(rows)  # an epoch is as many draws as training rows
    info = dm.info["weights"]
    assert info["mean"] == pytest.approx(uniform) and info["weighted_mean"] > uniform + 1
    assert np.mean(drawn) == pytest.approx(info["weighted_mean"], abs=0.25)  # the loader draws as the weights say
    assert info["top_decile_share"] > 0.3
    raw["finetune"] = {"weight_scheme": "softmax"}
    with pytest.raises(ConfigError, match="weight_scheme needs weight_by"):
        parse_config(raw, "w")
    raw["finetune"] = {"weight_by": "pIC50"}
    with pytest.raises(InputError, match="no column 'pIC50' for finetune.weight_by"):
        build(parse_config(raw, "w"))
    in_training = [mg.chem.canonicalize(s) for s in series.smiles].index(rows[0])
    series.assign(activity=series.activity.where(series.index != series.index[in_training])).to_csv(data, index=False)
    raw["finetune"] = {"weight_by": "activity"}
    with pytest.raises(InputError, match=f"1 of {len(rows)} training molecules have no finite 'activity'"):
        build(parse_config(raw, "w"))


def test_property_guided_finetune_reports_the_predicted_property_before_and_after(tmp_path):
    from molgen.finetune import finetune

    series = load("chembl2321810").sample(60, random_state=0)[["smiles", "activity"]]
    _, report = finetune(SMALL, series, n_train=30, max_steps=3, out=tmp_path / "run", val_every_steps=3,
                         eval_samples=16, forgetting_molecules=0, weight_by="activity", seed=0)  # fmt: skip
    assert report["weights"]["by"] == "activity" and report["weights"]["weighted_mean"] > report["weights"]["mean"]
    pm = report["property_model"]
    assert pm["head"] == "gp" and pm["fitted_on"] == 30 and pm["held_out_n"] == 30 and pm["held_out_rmse"] > 0
    for side in ("before", "after"):
        r = report[side]
        assert r["property_q25"] <= r["property_median"] <= r["property_q75"] and np.isfinite(r["property_mean"])
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| property_median |" in md and "drawn by activity (rank, max" in md and "fitted to the 30 training" in md


def test_iterated_finetuning_trains_on_its_best_samples_by_the_property_model(tmp_path):
    from molgen.finetune import finetune

    series = load("chembl2321810").sample(60, random_state=1)[["smiles", "activity"]]
    model, report = finetune(SMALL, series, n_train=30, max_steps=2, out=tmp_path / "run", val_every_steps=2,
                             eval_samples=16, forgetting_molecules=0, weight_by="activity", iterate=1,
                             iterate_samples=60, iterate_top=0.25, seed=0)  # fmt: skip
    (r,) = report["rounds"]
    assert r["round"] == 1 and 10 <= r["kept"] < r["new_valid"] <= 60
    assert r["kept_predicted_mean"] > r["samples_predicted_mean"]  # the best by the GP, not any
    top = pd.read_csv(tmp_path / "run" / "round-1" / "top.csv")
    assert len(top) == r["kept"] and (np.diff(top.predicted) <= 0).all()  # best first
    assert report["export"] == r["export"] and from_pretrained(r["export"], device="cpu").provenance["parent"]
    assert "Round 1:" in (tmp_path / "run" / "report.md").read_text()
    with pytest.raises(ConfigError, match="iterate ranks the model's samples by a property model"):
        parse_config({**finetune_raw(tmp_path, "x.csv"), "finetune": {"iterate": 2}}, "it")
