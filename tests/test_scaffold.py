"""Scaffold-constrained generation: forced scaffold tokens with sampled decorations (GPT), scaffold
prefixes (graph-VAE), the contains_scaffold column, refusals and the command line."""

from __future__ import annotations

import pytest
import torch
from rdkit import Chem
from typer.testing import CliRunner

import molgen as mg
from molgen.cli import app
from molgen.errors import InputError
from molgen.io import read_table
from molgen.models.scaffold import OPT_BRANCH, SLOT, ScaffoldTemplate, contains_scaffold
from molgen.models.smiles_grammar import SmilesGrammar

BENZAMIDE = "c1ccc([*])cc1C(=O)N[*]"
CHEMBL_CORE = "c1ccc(Oc2ccccc2)cc1S(=O)(=O)N[*]"


@pytest.fixture(scope="module")
def gpt():
    return mg.load_pretrained("smiles-gpt-moses-small", device="cpu")


@pytest.fixture(scope="module")
def vae():
    return mg.load_pretrained("graph-vae-moses", device="cpu")


def _unique(df) -> float:
    return df[df.valid].smiles.map(Chem.CanonSmiles).nunique() / len(df)


def test_template_forces_the_scaffold_and_slots_the_attachment_points(gpt):
    t = ScaffoldTemplate.from_smiles(BENZAMIDE, gpt.tokenizer)
    assert t.kinds.count(SLOT) == 2 and t.required
    assert "c" not in t.smiles  # the Kekulé model gets the Kekulé spelling
    assert Chem.CanonSmiles(t.smiles) == Chem.CanonSmiles(BENZAMIDE.replace("[*]", "*"))
    # no [*]: an optional slot on every atom with an implicit hydrogen (piperazine: 6)
    free = ScaffoldTemplate.from_smiles("C1CNCCN1", gpt.tokenizer)
    assert not free.required and len([k for k in free.kinds if k not in (0, 4)]) == 6
    assert ScaffoldTemplate.from_smiles("c1ccccc1[*]", gpt.tokenizer).head  # never starts at the [*]


def test_gpt_decorations_keep_the_scaffold_and_differ(gpt):
    df = mg.sample(gpt, 50, seed=0, scaffold=BENZAMIDE, workers=1, precision="fp32")
    assert list(df.columns) == ["smiles", "valid", "log_likelihood", "contains_scaffold"]
    assert df.valid.mean() >= 0.8
    assert df[df.valid].contains_scaffold.all()  # forced tokens: every valid molecule holds the scaffold
    assert _unique(df) > 0.5
    # each [*] got at least one atom: the core with both attachment points substituted matches
    query = Chem.MolFromSmarts("c1ccc(*)cc1C(=O)N*")
    assert all(Chem.MolFromSmiles(s).HasSubstructMatch(query) for s in df[df.valid].smiles)


def test_free_tokens_are_the_sampled_decorations(gpt):
    t = ScaffoldTemplate.from_smiles(CHEMBL_CORE, gpt.tokenizer)
    grammar = SmilesGrammar(gpt.tokenizer.itos, size=gpt.config.vocab_size, aromatic=False)
    ids, _, done, free = gpt.generate(20, generator=torch.Generator().manual_seed(0), grammar=grammar,
                                      scaffold=t, return_free=True)  # fmt: skip
    # the scaffold's tokens, less the ")" that ends a slot (the model decides where a decoration ends)
    forced = [gpt.tokenizer.itos[i] for k, (kind, i) in enumerate(zip(t.kinds, t.ids, strict=True))
              if kind == 0 and not (k and t.kinds[k - 1] == SLOT)]  # fmt: skip
    for row, f, ok in zip(ids.tolist(), free.tolist(), done.tolist(), strict=True):
        if ok:
            written = [gpt.tokenizer.itos[i] for i, is_free in zip(row, f, strict=True) if not is_free and i]
            assert written[: len(forced)] == forced


def test_gpt_unspecified_attachment_points_grow_anywhere(gpt):
    t = ScaffoldTemplate.from_smiles("C1CNCCN1", gpt.tokenizer)
    assert OPT_BRANCH in t.kinds
    df = mg.sample(gpt, 50, seed=0, scaffold="C1CNCCN1", workers=1, precision="fp32")
    valid = df[df.valid]
    assert len(valid) >= 40 and valid.contains_scaffold.all() and _unique(df) > 0.5
    # decorations sit on carbons as well as on the nitrogens
    assert valid.smiles.str.match(r"^C1C\(").any()


def test_same_seed_same_molecules(gpt, vae):
    for model in (gpt, vae):
        a = mg.sample(model, 20, seed=3, scaffold=CHEMBL_CORE, workers=1)
        b = mg.sample(model, 20, seed=3, scaffold=CHEMBL_CORE, workers=1)
        assert a.equals(b)


def test_graph_vae_decodes_from_the_scaffold(vae):
    df = mg.sample(vae, 50, seed=0, scaffold=BENZAMIDE, workers=1)
    assert list(df.columns) == ["smiles", "valid", "contains_scaffold"]
    assert df.valid.mean() >= 0.9 and df.contains_scaffold.mean() >= 0.9 and _unique(df) > 0.5


@pytest.mark.parametrize("scaffold", ["c1ccc", "C.C[*]", "C[*]C", "[*]"])
def test_a_bad_scaffold_is_refused_before_sampling(gpt, vae, scaffold):
    for model in (gpt, vae):
        with pytest.raises(InputError, match="scaffold"):
            mg.sample(model, 5, scaffold=scaffold, workers=1)


def test_refusals_name_the_model_limit(gpt, vae):
    with pytest.raises(InputError, match="vocabulary"):
        mg.sample(gpt, 5, scaffold="[Si]1CCCC1[*]", workers=1)
    with pytest.raises(InputError, match="grammar"):
        mg.sample(gpt, 5, scaffold=BENZAMIDE, grammar=False, workers=1)
    with pytest.raises(InputError, match="not both"):
        mg.sample(gpt, 5, scaffold=BENZAMIDE, prefix="CC", workers=1)
    with pytest.raises(InputError, match="cannot be decoded"):
        mg.sample(vae, 5, scaffold="C1CCCCCCCCCC1[*]", workers=1)  # an 11-ring under max_ring 7
    with pytest.raises(InputError, match="scaffold"):
        mg.sample(vae, 5, scaffold="[Au]C[*]", workers=1)  # an atom outside the VAE's vocabulary


def test_contains_scaffold_ignores_the_attachment_points():
    assert contains_scaffold(["O=C(NC)c1cccc(C)c1", "c1ccccc1", None, "not smiles"], BENZAMIDE) == [True, False, False, False]


def test_cli_generate_scaffold(tmp_path):
    out = tmp_path / "gen.csv"
    args = ["generate", "--model", "smiles-gpt-moses-small", "-n", "10", "-o", str(out), "--device", "cpu",
            "--workers", "1"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--scaffold", BENZAMIDE])
    assert result.exit_code == 0, result.output
    table = read_table(out)
    assert len(table) == 10 and table[table.valid].contains_scaffold.all()
    before = out.read_bytes()
    bad = CliRunner().invoke(app, [*args, "--scaffold", "c1ccc"])
    message = " ".join(bad.output.split())  # one message, wrapped by the console at its width
    assert bad.exit_code == 2 and message.startswith("error: scaffold 'c1ccc' is not a valid SMILES")
    assert "Traceback" not in bad.output
    assert out.read_bytes() == before
