"""Sampling to files: every format parses back with the same rows; seeds, --unique, --valid-only, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import molgen as mg
from molgen.cli import app
from molgen.errors import InputError
from molgen.io import read_table
from molgen.sample import generate_to_file

torch.set_num_threads(1)
MODEL = "smiles-gpt-moses"


@pytest.fixture(scope="module")
def model():
    return mg.load_pretrained(MODEL, device="cpu")


@pytest.mark.parametrize("suffix", [".csv", ".smi", ".sdf", ".parquet"])
def test_every_format_parses_back_with_the_same_rows(model, tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    summary = generate_to_file(model, 30, path, seed=2, chunk_size=12, batch_size=8, progress=False)
    assert summary["written"] == 30 == summary["sampled"]
    back = read_table(path)
    expected = mg.sample(model, 30, seed=2, batch_size=8)  # chunks of whole batches continue one seeded run
    assert back["smiles"].tolist() == [
        mg.chem.canonicalize(s) if suffix == ".sdf" and v else s for s, v in zip(expected["smiles"], expected["valid"], strict=True)
    ]
    assert back["valid"].tolist() == expected["valid"].tolist()
    assert "log_likelihood" in back.columns


def test_a_file_is_one_seeded_run_and_the_next_seed_another(model, tmp_path):
    paths = {k: tmp_path / f"{k}.csv" for k in ("one", "two", "next")}
    generate_to_file(model, 16, paths["one"], seed=0, chunk_size=4, batch_size=4, workers=1, progress=False)
    generate_to_file(model, 16, paths["two"], seed=0, chunk_size=8, batch_size=4, workers=2, progress=False)
    generate_to_file(model, 16, paths["next"], seed=1, chunk_size=4, batch_size=4, progress=False)
    one, two, nxt = (pd.read_csv(p).smiles.tolist() for p in paths.values())
    assert one == two  # chunking and worker processes do not change the molecules
    assert not set(one) & set(nxt)  # seed 1 is no shifted copy of seed 0 (seed + chunk was)


def test_same_seed_same_file(model, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    generate_to_file(model, 25, a, seed=5, chunk_size=10, progress=False)
    generate_to_file(model, 25, b, seed=5, chunk_size=10, progress=False)
    assert a.read_text() == b.read_text()


def test_unique_and_valid_only(model, tmp_path):
    path = tmp_path / "u.csv"
    # a low temperature repeats molecules, so --unique has duplicates to drop
    summary = generate_to_file(model, 20, path, seed=0, temperature=0.1, chunk_size=40, unique=True, valid_only=True, progress=False)
    df = pd.read_csv(path)
    assert len(df) == summary["written"] == 20
    assert df["valid"].all()
    canon = [mg.chem.canonicalize(s) for s in df["smiles"]]
    assert None not in canon and len(set(canon)) == 20
    assert summary["duplicates_dropped"] > 0
    assert summary["sampled"] >= summary["written"] + summary["duplicates_dropped"] + summary["invalid_dropped"]


def test_bad_suffix_is_a_clear_error(model, tmp_path):
    with pytest.raises(InputError, match=r"\.csv, \.tsv, \.smi"):
        generate_to_file(model, 3, tmp_path / "out.xlsx", progress=False)


def test_grammar_is_on_by_default_and_no_grammar_samples_the_raw_model(model, tmp_path):
    masked, raw = mg.sample(model, 300, seed=2), mg.sample(model, 300, seed=2, grammar=False)
    assert not masked.smiles.equals(raw.smiles)
    for grammar, expected in ((None, masked), (False, raw)):
        out = tmp_path / f"g{grammar}.csv"
        generate_to_file(model, 300, out, seed=2, grammar=grammar, chunk_size=300, batch_size=1024, progress=False)
        assert pd.read_csv(out).smiles.tolist() == expected.smiles.tolist()
    kept = tmp_path / "earlier.csv"
    kept.write_text("smiles\nCCO\n")
    with pytest.raises(InputError, match="no latent prior"):  # the graph-VAE's option, refused by name
        generate_to_file(model, 4, kept, prior="standard", progress=False)
    assert kept.read_text() == "smiles\nCCO\n"  # a refused call leaves an earlier file alone
    with pytest.raises(InputError, match="no ring-size limit"):
        generate_to_file(model, 4, tmp_path / "r.csv", max_ring=0, progress=False)
    with pytest.raises(InputError, match="no ring rules"):
        generate_to_file(model, 4, tmp_path / "r.csv", ring_rules=False, progress=False)


def test_mg_sample_accepts_a_name():
    df = mg.sample(MODEL, 5, seed=1, device="cpu")
    assert list(df.columns) == ["smiles", "valid", "log_likelihood"] and len(df) == 5


def test_cli_generate(tmp_path):
    out = tmp_path / "gen.csv"
    result = CliRunner().invoke(app, ["generate", "--model", MODEL, "-n", "20", "-o", str(out), "--seed", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(read_table(out)) == 20
    bad = CliRunner().invoke(app, ["generate", "--model", "no-such-model", "-n", "2", "-o", str(out)])
    assert bad.exit_code == 2 and "no checkpoint folder or shipped model" in bad.output


def test_a_gpt_prefix_starts_every_row_and_is_scored_in_the_likelihood(model):
    df = mg.sample(model, 40, seed=0, prefix="CC1=CC=C(", batch_size=16, precision="fp32")
    valid = df[df.valid]
    assert len(valid) >= 35
    # rows keep their atom order, so each starts with the prefix (aromatic where RDKit perceives a benzene)
    assert all(s.startswith(("CC1=CC=C", "Cc1ccc")) for s in valid.smiles)
    assert all(s.startswith(("CC1=CC=C", "Cc1ccc")) or not v for s, v in zip(df.smiles, df.valid, strict=True))
    # the prefix tokens count in the likelihood: it equals the model's score of the molecule, except
    # where the aromatic row, spelled in Kekulé form again, is another string than the one sampled
    exact = model.log_likelihood(valid.smiles.tolist())
    assert np.mean(np.abs(valid.log_likelihood.to_numpy() - exact) < 1e-3) >= 0.8
    assert not df.smiles.equals(mg.sample(model, 40, seed=0, batch_size=16).smiles)
    with pytest.raises(InputError, match="breaks SMILES syntax at token 1"):
        mg.sample(model, 2, prefix="c1ccccc1")  # a Kekulé model's grammar has no aromatic atoms
    with pytest.raises(InputError, match="outside the model's vocabulary"):
        mg.sample(model, 2, prefix="C[Sn]")
    with pytest.raises(InputError, match="breaks SMILES syntax"):
        mg.sample(model, 2, prefix="C)")


def test_a_graph_vae_prefix_decorates_a_scaffold():
    vae = mg.load_pretrained("graph-vae-moses", device="cpu")
    indole = mg.chem.to_mol("c1ccc2[nH]ccc2c1")
    df = mg.sample(vae, 24, seed=0, prefix="c1ccc2[nH]ccc2c1")
    assert df.valid.all()
    assert all(mg.chem.to_mol(s).HasSubstructMatch(indole) for s in df.smiles)
    free = mg.sample(vae, 24, seed=0)
    assert sum(mg.chem.to_mol(s).HasSubstructMatch(indole) for s in free.smiles) < 6
    assert df.smiles.nunique() >= 20


def test_an_option_of_another_kind_of_model_is_refused_by_name(model):
    with pytest.raises(InputError, match="no ring rules"):
        mg.sample(model, 2, ring_rules=True)
    with pytest.raises(InputError, match="no sampling option 'beam'"):
        mg.sample(model, 2, beam=4)
