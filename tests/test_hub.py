"""Checkpoint folders: save -> load gives identical logits; configs that do not fit fail clearly."""

from __future__ import annotations

import json

import pytest
import torch

import molgen as mg
from molgen.errors import ConfigError
from molgen.models.gpt import GPTConfig, SmilesGPT
from molgen.models.hub import from_pretrained, save_pretrained, shipped_models
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
    head = (saved[1] / "model.safetensors").read_bytes()[:16]
    assert not head.startswith(b"\x80")  # pickle protocol marker
    header_len = int.from_bytes(head[:8], "little")
    header = json.loads((saved[1] / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert "blocks.0.attn.c_attn.weight" in header and header["__metadata__"]["model_type"] == "gpt"


def test_shipped_checkpoints_are_small_and_loadable():
    for name in shipped_models():
        folder = from_pretrained(name, device="cpu").checkpoint_dir
        for f in folder.iterdir():
            assert f.stat().st_size < 16 * 2**20, f


def test_each_shipped_card_describes_the_weights_beside_it():
    """The card's step count is the one in config.json: weights are never shipped under a stale card."""
    for name in shipped_models():
        folder = from_pretrained(name, device="cpu").checkpoint_dir
        steps = json.loads((folder / "config.json").read_text())["provenance"]["steps"]
        card = (folder / "README.md").read_text()
        assert f"{steps:,}" in card, f"{name}: card does not mention step {steps:,}"
