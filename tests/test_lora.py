"""LoRA adapters (peft) and fine-tuning without forgetting: the adapter trains alone (with the rows the run
adds), merges into the same function, saves as a small folder naming its base and refuses another base;
rehearsal mixes the asked share of MOSES into every batch; the L2-SP / EWC anchor is zero at the start and
grows as the weights move."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import molgen as mg
from molgen.config import parse_config
from molgen.datasets import load, moses_smiles
from molgen.errors import ConfigError, InputError
from molgen.models.hub import CONFIG_NAME, WEIGHTS_NAME, from_pretrained, load_adapter, resolve, save_adapter
from molgen.models.lora import LoraSpec, add_lora, merge_lora, trainable_share
from molgen.train import pretrain
from molgen.train.anchor import Anchor, fisher_diagonal
from molgen.train.freeze import FreezePolicy, apply_freeze

torch.set_num_threads(1)
SMALL = "smiles-gpt-moses-small"
LINEAR = ("c_attn", "c_proj", "c_fc")


def small():
    return mg.load_pretrained(SMALL, device="cpu")


def series_ids(model, n=4):
    return torch.as_tensor(model.tokenizer.encode_batch(moses_smiles("test")[:n]))


def random_adapter(model, seed=0, dora=False):
    """A LoRA model (r 4, alpha 8) whose B matrices are not zero (a trained adapter's stand-in); with
    ``dora`` the magnitudes moved too."""
    add_lora(model, LoraSpec(r=4, alpha=8, dora=dora))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            if "lora_magnitude" in name:
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """60 molecules of the ChEMBL series: longer than the parent's 64 tokens, so the context grows."""
    path = tmp_path_factory.mktemp("data") / "series.csv"
    load("chembl2321810")[["smiles"]].iloc[:60].to_csv(path, index=False)
    return path


def raw_config(tmp_path, data, **finetune) -> dict:
    return {
        "model_type": "gpt", "task": "finetune", "name": "ft", "run_dir": str(tmp_path / "run"), "init_from": SMALL,
        "data": {"dataset": str(data), "augment": 0.0, "val_fraction": 0.2},
        "optim": {"lr": 1e-2, "warmup_steps": 0},
        "trainer": {"max_steps": 2, "batch_size": 16, "val_every_steps": 2, "progress_bar": False},
        "finetune": finetune,
    }  # fmt: skip


# --- the policy ----------------------------------------------------------------------------------


def test_lora_policy_trains_only_the_adapters():
    model = small()
    frozen = apply_freeze(model, FreezePolicy("lora", lora=LoraSpec(r=4)))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert frozen == [] and names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert {n.split(".")[-4] for n in names} == set(LINEAR) and len(names) == 2 * 4 * 4  # A, B x 4 layers x 4 blocks
    share = trainable_share(model)
    assert share["trainable"] == 4 * 4 * (128 + 192 + 128 + 128 + 128 + 512 + 512 + 128)  # r * (in + out) per layer
    assert 0.04 < share["fraction"] < 0.05
    with pytest.raises(ConfigError, match="not linear layers"):
        apply_freeze(small(), FreezePolicy("lora", lora=LoraSpec(targets=("c_attn", "q_proj"))))


def test_lora_options_are_checked_in_the_config(tmp_path, series):
    parse_config(raw_config(tmp_path, series, freeze="lora", lora_r=4, lora_targets=["c_attn"]), "ok")
    with pytest.raises(ConfigError, match="lora_r is for freeze = 'lora', not 'none'"):
        parse_config(raw_config(tmp_path, series, lora_r=4), "ft")
    with pytest.raises(ConfigError, match="freeze = 'lora' keeps them exactly"):
        parse_config(raw_config(tmp_path, series, freeze="lora", anchor="l2sp"), "ft")
    with pytest.raises(ConfigError, match="anchor_weight and fisher_molecules need anchor"):
        parse_config(raw_config(tmp_path, series, anchor_weight=0.1), "ft")


def test_lora_run_leaves_the_base_bit_identical_and_rebuilds_the_grown_context(tmp_path, series):
    from molgen.train.gpt import build

    config = parse_config(raw_config(tmp_path, series, freeze="lora", lora_r=4), "lora")
    module, _ = build(config)
    # the context grew by interpolation: a table rebuilt from the base's, frozen with it; the
    # series' tokens are all known to the parent, so nothing is new
    assert module.first_new == {}
    trains = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert "wpe.weight" not in trains and "wte.weight" not in trains
    assert module.trainable["trainable"] == 29_696
    start = mg.load_pretrained(SMALL, device="cpu")
    start.extend_context(module.model.config.block_size, "interpolate")
    out = pretrain(config)
    meta = json.loads((out / CONFIG_NAME).read_text())
    assert meta["partial"] == "adapter" and meta["base"]["name"] == SMALL
    assert meta["positions"] == "interpolate" and meta["grown"] == {} and meta["block_size"] == start.config.block_size > 64
    assert (out / WEIGHTS_NAME).stat().st_size < 200_000  # the adapter alone, not a copy of the model
    assert not any(k.startswith("new_rows") for k in load_file(out / WEIGHTS_NAME))
    parent = load_file(resolve(SMALL) / WEIGHTS_NAME)
    adapted = load_adapter(out, device="cpu", merge=False)
    state = {k.replace(".base_layer", ""): v for k, v in adapted.state_dict().items() if "lora_" not in k}
    for name, weights in parent.items():
        if name != "wpe.weight":
            assert torch.equal(state[name], weights), f"{name} moved"
    assert torch.equal(state["wpe.weight"], start.wpe.weight)  # rebuilt from the base on loading
    assert any(v.abs().sum() > 0 for k, v in adapted.state_dict().items() if "lora_B" in k)


# --- merge, save, load ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, atol, dora", [(torch.float64, 1e-5, False), (torch.float32, 1e-4, False),
                                              (torch.float64, 1e-5, True)])  # fmt: skip
def test_merged_model_gives_the_logits_of_base_plus_adapter(dtype, atol, dora):
    # in float32 the two orders of the same sums round apart by up to ~2e-5 on logits of ~10 (this
    # adapter is stronger than a trained one); in float64 the merge is exact to far below 1e-5
    model = random_adapter(small(), dora=dora).to(dtype)
    ids = series_ids(model, 8)
    with torch.no_grad():
        unmerged = model(ids)[0]
        base = small().to(dtype)(ids)[0]
        merged = merge_lora(model)(ids)[0]
    assert not torch.allclose(unmerged, base, atol=1e-3)  # the adapter does something
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=atol)
    assert not any("lora" in n for n, _ in model.named_parameters())
    fresh = small().to(dtype)
    fresh.load_state_dict(model.state_dict())  # an ordinary SmilesGPT again
    torch.testing.assert_close(fresh(ids)[0], merged, rtol=0, atol=0)


def test_adapter_folder_loads_on_its_base_and_refuses_another(tmp_path):
    model = random_adapter(small())
    model.tokenizer = small().tokenizer
    ids = series_ids(model)
    with torch.no_grad():
        expected = model(ids)[0]
    folder = save_adapter(model, tmp_path / "adapter", SMALL, LoraSpec(r=4, alpha=8))
    loaded = mg.load_pretrained(str(folder), device="cpu")  # resolves the base by name and sha256, merged
    assert type(loaded).__name__ == "SmilesGPT" and loaded.adapter["merged"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], expected, rtol=0, atol=1e-4)
    assert len(mg.sample(loaded, 8, seed=0, workers=1)) == 8
    with pytest.raises(InputError, match="fits only the weights it was trained on") as err:
        load_adapter(folder, base="smiles-gpt-moses", device="cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not an adapter folder"):
        load_adapter(resolve(SMALL), device="cpu")


# --- rehearsal -----------------------------------------------------------------------------------


def test_rehearsal_mixes_the_asked_share_of_moses_into_every_batch(tmp_path, series):
    from molgen.train.gpt import GPTDataModule, RehearsalBatches

    config = parse_config(raw_config(tmp_path, series, rehearsal=0.25), "reh")
    tokenizer = small().tokenizer
    dm = GPTDataModule(config, tokenizer)
    n_target = len(dm.train_ids)
    pool = {tokenizer.decode(r) for r in dm.rehearsal_ids}
    target = {tokenizer.decode(r) for r in dm.train_ids}
    batches = list(dm.train_dataloader())
    seen = 0
    for batch in batches:
        smiles = [tokenizer.decode(r.numpy()) for r in batch]
        moses = sum(s in pool for s in smiles)
        assert moses + sum(s in target for s in smiles) == len(smiles)
        if len(batch) == 16:
            assert moses == 4  # a quarter
        seen += len(batch) - moses
    assert seen == n_target  # every target row once an epoch
    assert dm.info["rehearsal"]["fraction"] == 0.25
    sampler = RehearsalBatches(90, 1000, 32, 0.2, torch.Generator().manual_seed(0))
    sizes = [(sum(i < 90 for i in b), sum(i >= 90 for i in b)) for b in sampler]
    assert sizes[:3] == [(26, 6)] * 3 and sizes[3] == (12, 3) and len(sampler) == 4


def test_tagged_rehearsal_marks_the_moses_rows_and_the_child_writes_the_target_by_default(tmp_path, series):
    from molgen.finetune import _rehearsal_tag
    from molgen.train.gpt import build

    config = parse_config(raw_config(tmp_path, series, rehearsal=0.25, rehearsal_tag=True), "tag")
    module, dm = build(config)
    assert module.model.config.condition["names"] == ["moses"] and module.model.config.condition["partial"]
    tokenizer = module.model.tokenizer
    pool = {tokenizer.decode(r) for r in dm.rehearsal_ids}
    for ids, cond in dm.train_dataloader():
        moses = torch.tensor([tokenizer.decode(r.numpy()) in pool for r in ids])
        assert moses.any() and torch.equal(cond[moses], torch.ones(int(moses.sum()), 2))  # value 1, given
        assert torch.equal(cond[~moses], torch.zeros(int((~moses).sum()), 2))  # the target's rows: not given
    ids, cond = next(iter(dm.val_dataloader()))
    assert not cond.any()  # validation is the target's: tag unset
    # the tag starts as nothing (zero projection): the parent's logits with and without it
    model = module.model.eval()
    x = torch.as_tensor(tokenizer.encode_batch(["CCO", "c1ccccc1"]), dtype=torch.long)
    on, off = torch.tensor([[1.0, 1.0]] * 2), torch.zeros(2, 2)
    torch.testing.assert_close(model(x, condition=on)[0], model(x, condition=off)[0])
    out = pretrain(config)
    child = mg.load_pretrained(out, device="cpu")
    assert _rehearsal_tag(child) == {"moses": 1.0}
    plain, asked = mg.sample(child, 16, seed=0, workers=1), mg.sample(child, 16, seed=0, workers=1, condition={"moses": 1})
    assert len(plain) == len(asked) == 16 and plain["valid"].any() and asked["valid"].any()
    with pytest.raises(ConfigError, match="rehearsal_tag marks the rehearsal rows"):
        parse_config(raw_config(tmp_path, series, rehearsal_tag=True), "tag")
    with pytest.raises(ConfigError, match="rehearsal_tag cannot be combined with finetune.anchor"):
        parse_config(raw_config(tmp_path, series, rehearsal=0.2, rehearsal_tag=True, anchor="l2sp"), "tag")


# --- anchors -------------------------------------------------------------------------------------


def test_l2sp_is_zero_at_the_start_and_grows_as_weights_move():
    model = small()
    anchor = Anchor(model, {"wpe.weight": 60}, weight=0.5)
    assert float(anchor.penalty(model)) == 0.0
    with torch.no_grad():
        model.blocks[0].mlp.c_fc.weight += 0.01
        model.wpe.weight[60:] += 5.0  # rows fine-tuning added are free
    n = model.blocks[0].mlp.c_fc.weight.numel()
    assert float(anchor.penalty(model)) == pytest.approx(0.5 * 0.5 * n * 0.01**2, rel=1e-3)
    with torch.no_grad():
        model.blocks[0].mlp.c_fc.weight += 0.01
    assert float(anchor.penalty(model)) == pytest.approx(0.5 * 0.5 * n * 0.02**2, rel=1e-3)
    loss = anchor.penalty(model)
    loss.backward()
    assert model.blocks[0].mlp.c_fc.weight.grad.abs().sum() > 0 and model.blocks[1].mlp.c_fc.weight.grad.abs().sum() == 0


def test_ewc_weights_the_pull_by_the_parents_fisher():
    model = small()
    ids = torch.as_tensor(model.tokenizer.encode_batch(moses_smiles("train")[:16]))
    fisher = fisher_diagonal(model, ids, model.config.pad_id)
    values = torch.cat([f.flatten() for f in fisher.values()])
    assert values.mean().item() == pytest.approx(1.0, rel=1e-4) and (values >= 0).all() and values.std() > 0.5
    assert all(p.grad is None for p in model.parameters())
    anchor = Anchor(model, fisher=fisher, weight=1.0)
    assert float(anchor.penalty(model)) == 0.0
    with torch.no_grad():
        model.ln_f.weight += 0.1
    expected = 0.5 * float(fisher["ln_f.weight"].sum()) * 0.01
    assert float(anchor.penalty(model)) == pytest.approx(expected, rel=1e-3)


def test_anchor_trains_through_the_task(tmp_path, series):
    raw = raw_config(tmp_path, series, anchor="l2sp", anchor_weight=1.0, rehearsal=0.2)
    raw["trainer"]["log_every_steps"] = 1
    out = pretrain(parse_config(raw, "a"))
    logs = pd.concat(pd.read_csv(p) for p in (tmp_path / "run" / "logs").rglob("metrics.csv"))
    assert "anchor" in logs.columns
    prov = from_pretrained(out, device="cpu").provenance["finetune"]
    assert prov["anchor"] == {"kind": "l2sp", "weight": 1.0} and prov["rehearsal"] == 0.2
    assert prov["trainable"]["fraction"] == 1.0
