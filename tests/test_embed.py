"""embed() on both shipped models, and a property head on a frozen encoder (EmbedAndPredict)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem

import molgen as mg
from molgen.errors import InputError
from molgen.models.heads import EmbedAndPredict, PropertyHead, PropertyHeadConfig

torch.set_num_threads(1)

MODELS = ("graph-vae-moses", "smiles-gpt-moses")


@pytest.fixture(scope="module")
def models():
    return {name: mg.load_pretrained(name, device="cpu") for name in MODELS}


@pytest.fixture(scope="module")
def moses200() -> list[str]:
    return mg.datasets.load("moses", split="test", nrows=200).smiles.tolist()


@pytest.mark.parametrize("name", MODELS)
def test_shapes_determinism_and_same_molecule_same_vector(models, moses200, name):
    model = models[name]
    emb = model.embed(moses200[:40], batch_size=16)
    assert emb.shape == (40, model.embed_dim) and emb.dtype == torch.float32 and not emb.isnan().any()
    assert torch.equal(emb, model.embed(moses200[:40], batch_size=16))  # deterministic
    # the batch a molecule is in does not change its vector (beyond float rounding)
    torch.testing.assert_close(model.embed(moses200[:40], batch_size=40), emb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.embed(moses200[7])[0], emb[7], atol=1e-5, rtol=1e-5)
    # the same molecule written three ways is one vector; different molecules are different vectors
    same = model.embed(["OCc1ccccc1", "c1ccc(CO)cc1", "C1=CC=C(C=C1)CO"])
    torch.testing.assert_close(same[1:], same[:1].expand(2, -1), atol=1e-5, rtol=1e-5)
    # RDKit Mols take the checked one-by-one path (the graph-VAE: atoms in BFS order), strings the
    # fast one (atoms as RDKit reads them): the same vectors
    torch.testing.assert_close(model.embed([Chem.MolFromSmiles(s) for s in moses200[:40]]), emb, atol=1e-5, rtol=1e-5)
    assert torch.cdist(emb, emb).add(torch.eye(40) * 1e9).min() > 1e-3
    assert model.embed([]).shape == (0, model.embed_dim)


@pytest.mark.parametrize("name", MODELS)
def test_molecules_the_model_cannot_read_are_nan_rows_and_the_others_unaffected(models, real_smiles, name):
    model = models[name]
    good = ["CC(=O)Oc1ccccc1C(=O)O", "O=C(Nc1ccccc1)c1ccco1", "Brc1cccs1"]
    bad = {
        "graph-vae-moses": ["not a smiles", "C1CC", "CC[Pt]Cl"],  # [Pt]: outside the atom vocabulary
        "smiles-gpt-moses": ["not a smiles", "C[N+](C)(C)CCO", "C" * 80],
    }[name]  # [N+]: no token; 82 tokens > 64
    mixed = [good[0], bad[0], good[1], bad[1], bad[2], good[2]]
    with pytest.warns(UserWarning, match=r"3 of 6 molecules cannot be embedded .* row 1: .*row 3: .*row 4: "):
        emb = model.embed(mixed)
    assert emb.isnan().any(1).tolist() == [False, True, False, True, True, False]
    assert emb[[1, 3, 4]].isnan().all()
    torch.testing.assert_close(emb[[0, 2, 5]], model.embed(good), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="row 1: "):
        model.embed(mixed, errors="raise")
    with pytest.raises(InputError, match="errors must be one of nan, raise"):
        model.embed(good, errors="skip")


def test_graph_vae_embedding_is_the_posterior_mean(models, real_smiles):
    vae = models["graph-vae-moses"]
    # embed() reads the atoms in RDKit's order, encode() in BFS order: the sums differ in rounding only
    torch.testing.assert_close(vae.embed(real_smiles), vae.encode(real_smiles), atol=1e-5, rtol=1e-5)


def test_graph_vae_layer_pooling_reads_every_layer_and_ends_where_the_posterior_mean_starts(models, real_smiles):
    vae = models["graph-vae-moses"]
    cfg = vae.config
    layers = vae.embed(real_smiles, pooling="layers")
    assert layers.shape == (len(real_smiles), vae.embed_width("layers")) == (len(real_smiles), 2 * cfg.hidden * (cfg.enc_layers + 1))
    # the last block's pools are the readout's input: through readout and mu they give the posterior mean
    last = layers[:, -2 * cfg.hidden :]
    with torch.no_grad():
        torch.testing.assert_close(vae.encoder.mu(vae.encoder.readout(last)), vae.embed(real_smiles), atol=1e-5, rtol=1e-5)
    # the first pools are the input embedding: twice the molecule, twice the sum, the same mean
    first = vae.embed(["c1ccccc1O", "c1ccccc1O.c1ccccc1O"], pooling="layers")[:, : 2 * cfg.hidden]
    torch.testing.assert_close(first[1, : cfg.hidden], 2 * first[0, : cfg.hidden], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first[1, cfg.hidden :], first[0, cfg.hidden :], atol=1e-5, rtol=1e-5)
    with pytest.warns(UserWarning, match="1 of 2 molecules"):
        assert vae.embed(["CCO", "CC[Pt]Cl"], pooling="layers")[1].isnan().all()
    with pytest.raises(InputError, match="pooling must be one of mu, layers"):
        vae.embed(real_smiles, pooling="max")


def test_gpt_poolings_and_modes(models, moses200):
    gpt = models["smiles-gpt-moses"]
    mean, last, mx = (gpt.embed(moses200[:8], pooling=p) for p in ("mean", "last", "max"))
    assert not torch.allclose(mean, last) and not torch.allclose(mean, mx)
    ids = torch.as_tensor(gpt.tokenizer.encode_batch(moses200[:8]))  # these are already canonical
    hidden = gpt._hidden(ids).detach()
    row, n = 3, len(gpt.tokenizer.encode(moses200[3]))
    torch.testing.assert_close(mean[row], hidden[row, 1:n].mean(0), atol=1e-5, rtol=1e-5)  # tokens and <eos>
    torch.testing.assert_close(last[row], hidden[row, n - 1], atol=1e-5, rtol=1e-5)  # the state at <eos>
    with pytest.raises(InputError, match="pooling must be one of mean, last, max"):
        gpt.embed(moses200[:2], pooling="cls")
    gpt.train()
    try:  # embedding does not leave a model that is training in eval mode
        assert torch.equal(gpt.embed(moses200[:8]), mean) and gpt.training
    finally:
        gpt.eval()


def _cv_r2(X: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reg = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    return float(cross_val_score(reg, X, y, cv=KFold(5, shuffle=True, random_state=0), scoring="r2").mean())


@pytest.mark.parametrize("name, least", [("graph-vae-moses", 0.5), ("smiles-gpt-moses", 0.25)])
def test_embeddings_carry_chemistry(models, moses200, name, least):
    """A ridge regression on the embeddings of 200 MOSES molecules predicts RDKit logP (5-fold R^2:
    0.64 graph-VAE, 0.35 GPT mean pooling) where the same regression on shuffled labels cannot (< 0)."""
    from rdkit import Chem
    from rdkit.Chem import Crippen

    y = np.array([Crippen.MolLogP(Chem.MolFromSmiles(s)) for s in moses200])
    X = models[name].embed(moses200).numpy()
    r2, shuffled = _cv_r2(X, y), _cv_r2(X, np.random.default_rng(0).permutation(y))
    assert r2 > least and shuffled < 0.05, (r2, shuffled)


# -- a head on a frozen encoder ------------------------------------------------------------------


def test_property_head_is_an_mlp_of_its_config():
    head = PropertyHead(PropertyHeadConfig(in_dim=8, out_dim=2, hidden=16, layers=2))
    assert head(torch.randn(5, 8)).shape == (5, 2)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == 3
    linear = PropertyHead(PropertyHeadConfig(in_dim=8, layers=0))
    assert [type(m) for m in linear.net] == [torch.nn.Linear]


@pytest.mark.parametrize("name", MODELS)
def test_frozen_encoder_does_not_change_and_gradients_reach_the_head(name, moses200):
    encoder = mg.load_pretrained(name, device="cpu")
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    torch.manual_seed(0)
    model = EmbedAndPredict(encoder, PropertyHead(PropertyHeadConfig(in_dim=encoder.embed_dim)))
    model.train()
    assert not encoder.training and model.head.training  # a frozen encoder stays in eval mode
    assert all(not p.requires_grad for p in encoder.parameters())
    head_before = [p.detach().clone() for p in model.head.parameters()]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    smiles, y = moses200[:16], torch.linspace(-1, 1, 16)[:, None]
    loss = torch.nn.functional.mse_loss(model(smiles), y)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())
    assert all(p.grad is None for p in encoder.parameters())
    opt.step()
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.head.parameters(), strict=True))
    # embeddings computed once give the same predictions as SMILES
    model.eval()
    torch.testing.assert_close(model(encoder.embed(smiles)), model(smiles))
    with pytest.warns(UserWarning, match="cannot be embedded"):
        pred = model(["CCO", "not a smiles"])
    assert pred.isnan().any(1).tolist() == [False, True]


def test_an_unfrozen_encoder_learns_through_its_embedding(moses200):
    vae = mg.load_pretrained("graph-vae-moses", device="cpu")
    model = EmbedAndPredict(vae, PropertyHead(PropertyHeadConfig(in_dim=vae.embed_dim)), freeze=False)
    model(moses200[:8]).sum().backward()
    assert vae.encoder.mu.weight.grad is not None and vae.encoder.mu.weight.grad.abs().sum() > 0
