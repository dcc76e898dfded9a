"""Checkpoint folders: save -> load gives identical logits; configs that do not fit fail clearly."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import molgen as mg
from molgen.errors import ConfigError
from molgen.models.gpt import GPTConfig, SmilesGPT
from molgen.models.hub import (
    from_pretrained,
    load_partial,
    load_state_into,
    save_partial,
    save_pretrained,
    shipped_models,
)
from molgen.tokenize import SmilesTokenizer

torch.set_num_threads(1)


@pytest.fixture()
def saved(tmp_path, real_smiles):
    tok = SmilesTokenizer.from_smiles(real_smiles)
    torch.manual_seed(0)
    model = SmilesGPT(GPTConfig(vocab_size=len(tok), n_layer=2, n_head=2, n_embd=32, block_size=64)).eval()
    model.tokenizer = tok
    prov = {"data": {"name": "unit", "sha256": "0" * 64}, "seed": 0, "steps": 3, "tokens_seen": 10, "parent": None}
    folder = save_pretrained(model, tmp_path / "ckpt", prov)
    return model, folder


def test_save_then_load_gives_identical_logits(saved, real_smiles):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "vocab.json"]
    loaded = mg.load_pretrained(folder, device="cpu")
    ids = torch.as_tensor(model.tokenizer.encode_batch(real_smiles))
    assert torch.equal(loaded(ids)[0], model(ids)[0])
    assert loaded.tokenizer == model.tokenizer
    assert loaded.lm_head.weight is loaded.wte.weight  # tying survives the round trip
    assert loaded.provenance["steps"] == 3 and loaded.provenance["data"]["sha256"] == "0" * 64


def test_config_json_records_type_version_and_provenance(saved):
    meta = json.loads((saved[1] / "config.json").read_text())
    assert meta["model_type"] == "gpt" and meta["molgen_version"] == mg.__version__
    assert meta["config"]["n_embd"] == 32 and meta["provenance"]["tokens_seen"] == 10


def _edit_config(folder, fn):
    path = folder / "config.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["config"].update(n_layers=2), r"unknown keys \['n_layers'\]"),
        (lambda m: m.update(model_type="transformer"), "unknown model_type 'transformer'"),
        (lambda m: m["config"].update(n_embd=64), "does not fit the model"),
        (lambda m: m["config"].update(vocab_size=99), "vocab_size=99"),
        (lambda m: m.pop("config"), "lacks config"),
    ],
)
def test_config_that_does_not_fit_the_code_is_a_clear_error(saved, edit, message):
    folder = saved[1]
    _edit_config(folder, edit)
    with pytest.raises(ConfigError, match=message):
        from_pretrained(folder)


def test_wrong_model_type_for_the_caller(saved):
    with pytest.raises(ConfigError, match="not 'graph_vae'"):
        from_pretrained(saved[1], model_type="graph_vae")


def test_unknown_name_lists_the_shipped_models(tmp_path):
    with pytest.raises(ConfigError, match="shipped models"):
        from_pretrained("no-such-model")
    with pytest.raises(ConfigError, match="has no config.json"):
        from_pretrained(tmp_path)


def test_weights_are_safetensors_not_pickle(saved):
    raw = (saved[1] / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")  # safetensors: header length, JSON header, tensors
    header = json.loads(raw[8 : 8 + header_len])
    assert "blocks.0.attn.c_attn.weight" in header and header["__metadata__"]["model_type"] == "gpt"


@pytest.mark.parametrize("zipped", [True, False], ids=["torch.save", "bare-pickle"])
def test_a_pickled_weights_file_is_refused_not_unpickled(saved, zipped, monkeypatch):
    model, folder = saved
    torch.save(model.state_dict(), folder / "model.safetensors", _use_new_zipfile_serialization=zipped)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("molgen unpickled a weights file")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(ConfigError, match="is a pickle .*never unpickles"):
        from_pretrained(folder)
    with pytest.raises(ConfigError, match="is a pickle"):
        load_state_into(model, folder)


SHIPPED = ["graph-vae-moses", "smiles-gpt-moses", "smiles-gpt-moses-small", "smiles-gpt-moses-small-cond"]


def test_shipped_checkpoints_are_small_and_loadable():
    assert shipped_models() == SHIPPED
    for name in shipped_models():
        folder = from_pretrained(name, device="cpu").checkpoint_dir
        for f in folder.iterdir():
            assert f.stat().st_size < 16 * 2**20, f


def test_each_shipped_card_describes_the_weights_beside_it():
    """The card's step count is the one in config.json: weights are never shipped under a stale card."""
    assert shipped_models() == SHIPPED
    for name in shipped_models():
        folder = from_pretrained(name, device="cpu").checkpoint_dir
        steps = json.loads((folder / "config.json").read_text())["provenance"]["steps"]
        card = (folder / "README.md").read_text()
        assert f"{steps:,}" in card, f"{name}: card does not mention step {steps:,}"


# -- partial states: a head that names its base by weights sha256 --------------------------------


@pytest.fixture(scope="module")
def vae():
    return from_pretrained("graph-vae-moses", device="cpu")


def _head(vae):
    from molgen.models.heads import PropertyHead, PropertyHeadConfig

    torch.manual_seed(0)
    return PropertyHead(PropertyHeadConfig(in_dim=vae.embed_dim, out_dim=2, hidden=32))


def test_a_property_head_round_trips_and_finds_its_shipped_base(tmp_path, vae, real_smiles):
    from molgen.cache import sha256_file
    from molgen.models.heads import PropertyHead

    head = _head(vae).eval()
    folder = save_partial(head, tmp_path / "logp-head", base=vae, kind="head", provenance={"target": "logP"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((folder / "config.json").read_text())
    shipped_sha = sha256_file(vae.checkpoint_dir / "model.safetensors")
    assert meta["partial"] == "head" and meta["class"] == "molgen.models.heads.PropertyHead"
    assert meta["base"] == {"name": "graph-vae-moses", "model_type": "graph_vae", "shipped": True,
                            "weights_sha256": shipped_sha}
    assert meta["config"]["out_dim"] == 2 and meta["provenance"]["target"] == "logP"
    x = vae.embed(real_smiles)
    for base in (None, "graph-vae-moses", vae):
        loaded, base_model = load_partial(folder, base=base, device="cpu")
        assert isinstance(loaded, PropertyHead) and not loaded.training
        assert type(base_model).__name__ == "GraphVAE"
        torch.testing.assert_close(loaded(x), head(x), atol=0, rtol=0)
    with pytest.raises(ConfigError, match="partial state .*load_partial"):
        from_pretrained(folder)


def test_a_head_on_other_weights_is_refused(tmp_path, vae):
    folder = save_partial(_head(vae), tmp_path / "head", base="graph-vae-moses")
    with pytest.raises(ConfigError, match="fits only the weights it was trained on"):
        load_partial(folder, base="smiles-gpt-moses")
    other = from_pretrained("graph-vae-moses", device="cpu")
    with torch.no_grad():
        other.encoder.mu.bias.add_(0.1)  # fine-tuned, say
    with pytest.raises(ConfigError, match="differ from .*model.safetensors"):
        load_partial(folder, base=other)
    with pytest.raises(ConfigError, match="differ from"):
        save_partial(_head(vae), tmp_path / "head2", base=other)
    save_pretrained(other, tmp_path / "tuned")
    with pytest.raises(ConfigError, match="fits only the weights it was trained on"):
        load_partial(folder, base=tmp_path / "tuned")
    # a head saved on a local checkpoint finds it by its folder; a changed file there is refused
    local = save_partial(_head(vae), tmp_path / "head3", base=tmp_path / "tuned")
    assert load_partial(local, device="cpu")[1].checkpoint_dir == tmp_path / "tuned"
    save_pretrained(vae, tmp_path / "tuned")
    with pytest.raises(ConfigError, match="fits only the weights"):
        load_partial(local)


def test_partial_states_need_a_named_base_and_safetensors(tmp_path, vae):
    fresh = copy.deepcopy(vae)
    del fresh.checkpoint_dir
    with pytest.raises(ConfigError, match="not loaded from a checkpoint folder"):
        save_partial(_head(vae), tmp_path / "h", base=fresh)
    with pytest.raises(ConfigError, match="kind must be one of head, adapter"):
        save_partial(_head(vae), tmp_path / "h", base=vae, kind="decoder")
    folder = save_partial(_head(vae), tmp_path / "h", base=vae)
    torch.save(_head(vae).state_dict(), folder / "model.safetensors")
    with pytest.raises(ConfigError, match="is a pickle"):
        load_partial(folder)
    with pytest.raises(ConfigError, match="not a partial state"):
        load_partial(vae.checkpoint_dir)
