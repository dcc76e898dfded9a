"""GraphVAE: validity by construction, exact reconstruction after overfitting, save/load, training."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdkit import Chem
from torch_geometric.data import Batch

import molgen as mg
from molgen.errors import ConfigError, InputError
from molgen.featurize import mol_to_graph
from molgen.models.graph_decoder import dense_targets
from molgen.models.graph_vae import GraphVAE, GraphVAEConfig

TINY = dict(latent=16, hidden=64, enc_layers=3, dec_hidden=128, dec_layers=1)


def _flat(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles), isomericSmiles=False)


def _sanitises(smiles: str | None) -> bool:
    return smiles is not None and Chem.MolFromSmiles(smiles) is not None


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def untrained() -> GraphVAE:
    torch.manual_seed(0)
    return GraphVAE(GraphVAEConfig(**TINY)).eval()


@pytest.fixture(scope="module")
def overfitted(real_smiles) -> GraphVAE:
    """A tiny model trained on the 20 shared molecules until it reconstructs all of them."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GraphVAE(GraphVAEConfig(**TINY))
    batch = Batch.from_data_list([mol_to_graph(s) for s in real_smiles])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    target = [_flat(s) for s in real_smiles]
    for step in range(600):
        model.train()
        loss = model(batch, beta=0.0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 49 and model.decode(model.encode(real_smiles)) == target:
            break
    return model.eval()


def test_overfits_twenty_molecules_to_exact_reconstruction(overfitted, real_smiles):
    assert overfitted.decode(overfitted.encode(real_smiles)) == [_flat(s) for s in real_smiles]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.0, 1.0, 3.0, 30.0]),
    temp=st.sampled_from([0.0, 1.0, 2.0]),
)
def test_random_latents_always_decode_to_valid_molecules(untrained, overfitted, seed, scale, temp):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(32, TINY["latent"], generator=gen) * scale
    for model in (untrained, overfitted):
        out = model.decode(z, temperature=temp, seed=seed)
        assert len(out) == 32 and all(_sanitises(s) for s in out)


def test_sample_is_seeded_and_valid(overfitted):
    a = mg.sample(overfitted, 64, seed=3, batch_size=32)
    b = mg.sample(overfitted, 64, seed=3, batch_size=32)
    assert list(a.columns[:2]) == ["smiles", "valid"]
    assert a.valid.all() and a.smiles.equals(b.smiles)
    assert not a.smiles.equals(mg.sample(overfitted, 64, seed=4, batch_size=32).smiles)
    # whole batches in worker processes, or a run continued at its third batch: the same molecules
    hot = mg.sample(overfitted, 64, seed=3, batch_size=16, temperature=1.0)
    assert hot.equals(mg.sample(overfitted, 64, seed=3, batch_size=16, temperature=1.0, workers=2))
    assert hot.smiles.iloc[32:].tolist() == mg.sample(overfitted, 32, seed=3, batch_size=16, temperature=1.0, start_batch=2).smiles.tolist()


def test_teacher_forcing_scores_what_generation_produces(overfitted, real_smiles):
    """The training loss is the likelihood of the sampling process: greedy decodes of the
    training set are its argmax, so their per-molecule NLL is small."""
    batch = Batch.from_data_list([mol_to_graph(s) for s in real_smiles])
    with torch.no_grad():
        mu, _ = overfitted.encode_graphs(batch)
        nll = overfitted.recon_loss(mu, batch)
    assert nll.shape == (20,) and float(nll.max()) < 2.0


def test_save_load_gives_identical_outputs(overfitted, real_smiles, tmp_path):
    overfitted.save_pretrained(tmp_path / "ckpt", provenance={"data": "test"})
    loaded = GraphVAE.from_pretrained(tmp_path / "ckpt", device="cpu")
    torch.testing.assert_close(loaded.encode(real_smiles), overfitted.encode(real_smiles), rtol=0, atol=0)
    pd.testing.assert_frame_equal(mg.sample(loaded, 32, seed=1), mg.sample(overfitted, 32, seed=1))
    assert loaded.provenance == {"data": "test"}


def test_interpolate_and_neighbours(overfitted, real_smiles):
    a, b = real_smiles[0], real_smiles[9]
    path = overfitted.interpolate(a, b, steps=6)
    assert len(path) == 6 and path.valid.all()
    assert path.smiles.iloc[0] == _flat(a) and path.smiles.iloc[-1] == _flat(b)
    assert path.input.iloc[0] == a and path.input.iloc[-1] == b and path.input.iloc[1:-1].isna().all()
    assert path.reconstructed.iloc[0] and path.reconstructed.iloc[-1] and path.reconstructed.iloc[1:-1].isna().all()
    near = overfitted.neighbours(a, radius=0.5, n=8)
    assert len(near) <= 8 and near.valid.all() and near.smiles.is_unique and _flat(a) not in set(near.smiles)
    assert list(near.columns) == ["smiles", "radius", "count", "valid"] and (near["count"] >= 1).all()
    assert len(near) == 8 or "note" in near.attrs


@pytest.fixture(scope="module")
def shipped():
    import molgen as mg

    return mg.load_pretrained("graph-vae-moses", device="cpu")


ASPIRIN, PARACETAMOL = "CC(=O)Oc1ccccc1C(=O)O", "CC(=O)Nc1ccc(O)cc1"


def test_interpolate_shows_the_inputs_beside_their_reconstructions(shipped):
    path = shipped.interpolate(ASPIRIN, PARACETAMOL, steps=6)
    assert list(path.columns) == ["smiles", "alpha", "valid", "input", "reconstructed"]
    assert path.input.iloc[0] == ASPIRIN and path.input.iloc[-1] == PARACETAMOL
    for row, source in ((0, ASPIRIN), (-1, PARACETAMOL)):
        assert path.reconstructed.iloc[row] == (path.smiles.iloc[row] == _flat(source))
    assert path.reconstructed.iloc[1:-1].isna().all()


def test_neighbours_are_distinct_molecules_on_the_shipped_model(shipped):
    """At radius 0.5 every point around aspirin decodes to one molecule; neighbours draws further
    out until it has 8 different ones, and says how far and how often."""
    near = shipped.neighbours(ASPIRIN, radius=0.5, n=8, seed=0)
    canonical = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in near.smiles]
    assert len(near) == 8 and len(set(canonical)) == 8 and near.valid.all()
    assert _flat(ASPIRIN) not in canonical
    assert near.radius.iloc[0] == 0.5 and near.radius.is_monotonic_increasing and near["count"].sum() <= near.attrs["draws"]
    assert "note" not in near.attrs
    again = shipped.neighbours(ASPIRIN, radius=0.5, n=8, seed=0)
    pd.testing.assert_frame_equal(near, again)  # seeded
    few = shipped.neighbours(ASPIRIN, radius=0.5, n=8, seed=0, max_draws=40)
    assert len(few) < 8 and "found" in few.attrs["note"] and few.attrs["draws"] == 40


def test_bond_outside_window_is_rejected():
    g = mol_to_graph("CC(C)(C)C")  # the centre's third neighbour sits 3 places after it in BFS order
    batch = Batch.from_data_list([g])
    dense_targets(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.ptr, window=12)
    with pytest.raises(ValueError, match="more than the window"):
        dense_targets(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.ptr, window=1)


def test_pretrain_and_resume_through_the_shared_trainer(tmp_path, real_smiles, monkeypatch):
    from molgen.config import parse_config
    from molgen.train import pretrain

    monkeypatch.setenv("MOLGEN_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "mols.csv"
    pd.DataFrame({"smiles": real_smiles * 5}).to_csv(data, index=False)
    raw = {
        "model_type": "graph_vae",
        "name": "tiny",
        "run_dir": str(tmp_path / "run"),
        "data": {"dataset": str(data), "val_size": 10},
        "model": {**TINY, "kl_anneal_steps": 4, "free_bits": 0.1},
        "optim": {"warmup_steps": 1},
        "trainer": {
            "max_steps": 4,
            "batch_size": 16,
            "val_every_steps": 2,
            "progress_bar": False,
            "num_threads": 1,
        },
    }
    export = pretrain(parse_config(raw))
    model = GraphVAE.from_pretrained(export, device="cpu")
    assert model.provenance["steps"] == 4 and model.provenance["data"]["n_train"] == 90
    assert mg.sample(model, 16, seed=0).valid.all()
    raw["trainer"]["max_steps"] = 6
    export = pretrain(parse_config(raw), resume=True)
    parent = GraphVAE.from_pretrained(export, device="cpu")
    assert parent.provenance["steps"] == 6
    # fine-tuning starts from a parent with a fitted prior (as the shipped model has); the prior
    # described the parent's latent space, so the child starts without one
    parent.fit_prior(real_smiles * 2)
    parent.save_pretrained(tmp_path / "parent")
    child_raw = {**raw, "name": "child", "run_dir": str(tmp_path / "child"), "init_from": str(tmp_path / "parent"),
                 "trainer": {**raw["trainer"], "max_steps": 2}}  # fmt: skip
    child = GraphVAE.from_pretrained(pretrain(parse_config(child_raw)), device="cpu")
    assert child.provenance["parent"] == str(tmp_path / "parent") and not child.config.fitted_prior
    assert mg.sample(child, 16, seed=0).valid.all()
    child_raw["model"] = {**raw["model"], "hidden": TINY["hidden"] * 2}
    with pytest.raises(ConfigError, match="does not fit this model"):
        pretrain(parse_config({**child_raw, "run_dir": str(tmp_path / "wide")}))


@pytest.mark.gpu
def test_cuda_bf16_encode_and_decode(overfitted, real_smiles):
    model = GraphVAE(overfitted.config)
    model.load_state_dict(overfitted.state_dict())
    model = model.cuda().eval()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        z = model.encode(real_smiles)
    torch.testing.assert_close(z.float().cpu(), overfitted.encode(real_smiles), atol=0.1, rtol=0.05)
    out = mg.sample(model, 256, seed=0, device="cuda")
    assert out.valid.all() and np.mean([_sanitises(s) for s in out.smiles]) == 1.0


def test_generate_to_file_through_the_shared_path(overfitted, tmp_path):
    from molgen.models import load_pretrained
    from molgen.sample import generate_to_file

    overfitted.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "gen.csv"
    summary = generate_to_file(
        load_pretrained(tmp_path / "ckpt", device="cpu"), 50, out, chunk_size=20, progress=False
    )
    rows = pd.read_csv(out)
    assert summary["written"] == 50 and len(rows) == 50 and rows.valid.all()
    assert all(_sanitises(s) for s in rows.smiles)


def test_default_sampling_decodes_greedily_and_the_file_path_keeps_each_models_default(overfitted, tmp_path):
    from molgen.sample import generate_to_file

    greedy = mg.sample(overfitted, 40, seed=1, temperature=0.0)
    hot = mg.sample(overfitted, 40, seed=1, temperature=1.0)
    assert mg.sample(overfitted, 40, seed=1).smiles.equals(greedy.smiles)
    assert not hot.smiles.equals(greedy.smiles)
    for temperature, expected in ((None, greedy), (1.0, hot)):
        out = tmp_path / f"t{temperature}.csv"
        generate_to_file(overfitted, 40, out, seed=1, temperature=temperature, chunk_size=40, progress=False)
        assert pd.read_csv(out).smiles.tolist() == expected.smiles.tolist()
    with pytest.raises(InputError, match="no SMILES grammar option"):
        generate_to_file(overfitted, 4, tmp_path / "g.csv", grammar=False, progress=False)
    with pytest.raises(InputError, match="no precision option"):
        generate_to_file(overfitted, 4, tmp_path / "p.csv", precision="bf16", progress=False)


def test_shipped_vae_configs_validate():
    from pathlib import Path

    from molgen.config import load_config

    paths = sorted((Path(__file__).parents[1] / "scripts" / "configs").glob("pretrain_vae*.toml"))
    assert len(paths) == 3
    for path in paths:
        config = load_config(path)
        assert config.model_type == "graph_vae" and config.model.window >= 10  # MOSES needs 10
        if config.init_from:  # a further leg: the parent's shape, or the start fails
            parent = GraphVAE.from_pretrained(config.init_from, device="cpu").config
            assert all(getattr(parent, k) == v for k, v in config.model.model_dump().items() if hasattr(parent, k))


def test_a_fitted_prior_is_drawn_from_saved_and_the_standard_one_stays_available(overfitted, real_smiles, tmp_path):
    import copy

    model = copy.deepcopy(overfitted)  # fitting changes the model's default sampling
    standard = mg.sample(model, 200, seed=3)
    with pytest.raises(InputError, match="no fitted prior"):
        mg.sample(model, 4, prior="fitted")
    with pytest.raises(InputError, match="at least 32 molecules"):
        model.fit_prior(real_smiles)  # 20 < 2 x 16
    info = model.fit_prior(real_smiles * 2)
    mu = model.encode(real_smiles).double()
    torch.testing.assert_close(model.prior_loc[0], mu.mean(0).float())
    assert model.config.fitted_prior and info["n_molecules"] == 40
    fitted = mg.sample(model, 200, seed=3)
    pd.testing.assert_frame_equal(mg.sample(model, 200, seed=3, prior="standard"), standard)
    # the model was trained without a KL term, so its molecules encode far from N(0, I): drawing
    # where they do encode gives back training molecules more often
    train = {_flat(s) for s in real_smiles}
    assert fitted.valid.all() and fitted.smiles.isin(train).mean() > standard.smiles.isin(train).mean()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = GraphVAE.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.config.fitted_prior
    pd.testing.assert_frame_equal(mg.sample(loaded, 200, seed=3), fitted)
    with pytest.raises(InputError, match="'fitted' or 'standard'"):
        mg.sample(loaded, 4, prior="wide")


def test_a_mixture_prior_follows_the_clusters_and_old_single_gaussian_files_still_load(overfitted, real_smiles, tmp_path):
    import copy

    from safetensors.torch import load_file, save_file

    model = copy.deepcopy(overfitted)
    with pytest.raises(InputError, match="components must be a positive integer"):
        model.fit_prior(real_smiles * 5, components=0)
    with pytest.raises(InputError, match="2 Gaussian"):
        model.fit_prior(real_smiles, components=2)
    single = model.fit_prior(real_smiles * 5)
    one = mg.sample(model, 300, seed=2)
    info = model.fit_prior(real_smiles * 5, components=3, seed=0)
    assert info["components"] == 3 and model.prior_loc.shape == (3, TINY["latent"])
    assert model.prior_weights.sum().item() == pytest.approx(1.0) and info["mean_norm"] == single["mean_norm"]
    mixture = mg.sample(model, 300, seed=2)
    # the 20 molecules encode as separate points: a mixture puts its mass on clusters of them, where
    # one Gaussian spreads it between them, so its draws decode to the training molecules more often
    train = {_flat(s) for s in real_smiles}
    assert mixture.valid.all() and mixture.smiles.isin(train).mean() > one.smiles.isin(train).mean()
    model.save_pretrained(tmp_path / "mix")
    loaded = GraphVAE.from_pretrained(tmp_path / "mix", device="cpu")
    assert loaded.config.prior_components == 3
    pd.testing.assert_frame_equal(mg.sample(loaded, 300, seed=2), mixture)
    # a file written before mixtures: one Gaussian as (L,) and (L, L), no weights, no prior_components
    model.fit_prior(real_smiles * 5)
    model.save_pretrained(tmp_path / "old")
    state = load_file(tmp_path / "old" / "model.safetensors")
    del state["prior_weights"]
    state["prior_loc"], state["prior_scale_tril"] = state["prior_loc"][0], state["prior_scale_tril"][0]
    save_file(state, tmp_path / "old" / "model.safetensors")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["config"]["prior_components"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    pd.testing.assert_frame_equal(mg.sample(GraphVAE.from_pretrained(tmp_path / "old", device="cpu"), 300, seed=2), one)


def _ring_stats(smiles: str) -> tuple[int, bool]:
    """Largest ring, and whether two rings share three atoms (bridged), a 3-/4-ring shares a bond or
    a 3-/4-ring holds a double or triple bond."""
    mol = Chem.MolFromSmiles(smiles)  # kept in a name: RingInfo does not keep its molecule alive
    Chem.Kekulize(mol, clearAromaticFlags=True)
    info = mol.GetRingInfo()
    rings = [set(r) for r in info.AtomRings()]
    pairs = [(a, b) for n, a in enumerate(rings) for b in rings[n + 1 :]]
    broken = any(len(a & b) >= 3 or (len(a & b) == 2 and min(len(a), len(b)) <= 4) for a, b in pairs)
    broken |= any(len(r) <= 4 and any(mol.GetBondWithIdx(b).GetBondTypeAsDouble() > 1 for b in r) for r in info.BondRings())
    return max(map(len, rings), default=0), broken


def test_generation_follows_the_ring_rules(real_smiles, tmp_path):
    from typer.testing import CliRunner

    from molgen.cli import app

    model = GraphVAE.from_pretrained("graph-vae-moses", device="cpu")
    # no rules: the decoder then closes some 8- to 17-membered rings, bridged systems, fused or
    # unsaturated 3-/4-rings
    free = mg.sample(model, 300, seed=0, max_ring=0, ring_rules=False)
    largest, broken = zip(*map(_ring_stats, free.smiles), strict=True)
    assert max(largest) > 8 and sum(broken) >= 5
    shipped = mg.sample(model, 300, seed=0)
    assert model.config.max_ring == 7 and model.config.ring_rules
    largest, broken = zip(*map(_ring_stats, shipped.smiles), strict=True)
    assert shipped.valid.all() and max(largest) <= 7 and not any(broken)
    assert (shipped.smiles == free.smiles).mean() > 0.5  # molecules the rules do not touch are unchanged
    model.config.max_ring = 6
    limited = mg.sample(model, 300, seed=0)
    assert limited.valid.all() and all(_sanitises(s) for s in limited.smiles)
    assert max(_ring_stats(s)[0] for s in limited.smiles) <= 6
    # the shared real molecules break no rule, so the defaults block none of their closures
    assert not any(largest > 7 or broken for largest, broken in map(_ring_stats, real_smiles))
    with pytest.raises(InputError, match="at least 3 atoms"):
        mg.sample(model, 4, max_ring=2)
    out = tmp_path / "free.csv"
    args = ["generate", "--model", "graph-vae-moses", "-n", "300", "-o", str(out), "--max-ring", "0",
            "--no-ring-rules", "--device", "cpu"]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    assert pd.read_csv(out).smiles.tolist() == free.smiles.tolist()


def test_blocked_names_the_molecules_the_rules_forbid(real_smiles):
    model = GraphVAE.from_pretrained("graph-vae-moses", device="cpu")
    cases = {
        "c1ccc2ccccc2c1": False,  # fused 6-6
        "C1CCC2(CC1)CCCC2": False,  # spiro
        "C1CC1c1ccc2[nH]ccc2c1": False,  # cyclopropyl on indole
        "C1CC2CCC1C2": True,  # norbornane: bridged
        "C1C2CC12": True,  # bicyclo[1.1.0]butane: fused 3-rings
        "CC1(C)SC2C(NC(=O)Cc3ccccc3)C(=O)N2C1C(=O)O": True,  # penicillin G: beta-lactam fused to a 5-ring
        "C1CCCCCCCCC1": True,  # a 10-membered ring
        "C1CCCCCCC1": True,  # an 8-membered ring (MOSES has none)
        "CC1=CC1": True,  # cyclopropene: a double bond in a 3-ring
        "O=C1C(=O)C(N)=C1N": True,  # a squaramide: a double bond in a 4-ring
        "O=C1CCN1c1ccccc1": False,  # an unfused beta-lactam: C=O outside the ring
    }
    smiles = list(cases) + list(real_smiles)
    assert model.blocked(smiles).tolist() == list(cases.values()) + [False] * len(real_smiles)
    assert not model.blocked(smiles, max_ring=0, ring_rules=False).any()
    assert model.blocked(smiles, max_ring=10).tolist()[6:8] == [False, False] and model.blocked("C1CC2CCC1C2")
    assert model.blocked(["C" * 39]).tolist() == [True]  # more atoms than max_atoms
    with pytest.raises(InputError, match="row 1"):
        model.blocked(["CCO", "not a molecule"])
