"""SmilesTokenizer: lossless atom-level splitting, vocabulary errors, extension, vocab.json."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molgen import chem
from molgen.errors import ConfigError, InputError
from molgen.tokenize import BracketAtom, SmilesTokenizer, parse_bracket, tokenize


def test_tokens_cover_every_character(real_smiles):
    for s in real_smiles:
        assert "".join(tokenize(s)) == s


@pytest.mark.parametrize(
    "smiles, expected",
    [
        ("CC(C)Cl", ["C", "C", "(", "C", ")", "Cl"]),
        ("Brc1ccccc1", ["Br", "c", "1", "c", "c", "c", "c", "c", "1"]),
        ("C[C@@H](N)C(=O)O", ["C", "[C@@H]", "(", "N", ")", "C", "(", "=", "O", ")", "O"]),
        ("[13CH3]C", ["[13CH3]", "C"]),
        ("C[N+](C)(C)C.[Cl-]", ["C", "[N+]", "(", "C", ")", "(", "C", ")", "C", ".", "[Cl-]"]),
        ("c1cc[nH]c1", ["c", "1", "c", "c", "[nH]", "c", "1"]),
        ("C%12CCCCC%12", ["C", "%12", "C", "C", "C", "C", "C", "%12"]),
        ("F/C=C/F", ["F", "/", "C", "=", "C", "/", "F"]),
    ],
)
def test_atom_level_tokens(smiles, expected):
    assert tokenize(smiles) == expected


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), index=st.integers(0, 19))
def test_randomised_smiles_tokenise_losslessly(real_smiles, seed, index):
    s = chem.randomize_smiles(real_smiles[index], seed=seed)
    assert "".join(tokenize(s)) == s


@pytest.mark.parametrize("bad", ["CC O", "C%1C", "CCé"])
def test_uncoverable_character_is_an_error_naming_it(bad):
    with pytest.raises(InputError, match="position"):
        tokenize(bad)


def test_encode_decode_round_trip(real_smiles):
    tok = SmilesTokenizer.from_smiles(real_smiles)
    assert tok.itos[:3] == ["<pad>", "<bos>", "<eos>"]
    for s in real_smiles:
        ids = tok.encode(s)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert tok.decode(ids) == s
    batch = tok.encode_batch(real_smiles)
    assert batch.shape[0] == len(real_smiles) and (batch[:, 0] == tok.bos_id).all()
    assert tok.decode_batch(batch) == real_smiles


def test_unknown_token_names_token_and_molecule():
    tok = SmilesTokenizer.from_smiles(["CCO", "c1ccccc1"])
    with pytest.raises(InputError, match=r"'Br'.*'CCBr'.*extend"):
        tok.encode("CCBr")


def test_too_long_molecule_is_an_error_not_a_truncation():
    tok = SmilesTokenizer.from_smiles(["CCCCCCCCCC"])
    with pytest.raises(InputError, match="more than the model's context"):
        tok.encode_batch(["CCCCCCCCCC"], max_len=5)


def test_extend_keeps_existing_ids():
    tok = SmilesTokenizer.from_smiles(["CCO", "c1ccccc1"])
    before = dict(tok.stoi)
    added = tok.extend(["CCBr", "C[Se]C", "CCO"])
    assert added == ["Br", "[Se]"]
    assert all(tok.stoi[t] == i for t, i in before.items())
    assert tok.decode(tok.encode("C[Se]CBr")) == "C[Se]CBr"


def test_vocab_json_round_trip(tmp_path, real_smiles):
    tok = SmilesTokenizer.from_smiles(real_smiles)
    path = tok.save(tmp_path / "vocab.json")
    assert SmilesTokenizer.load(path) == tok
    assert json.loads(path.read_text())["tokens"] == tok.itos


def test_broken_vocab_json_is_a_config_error(tmp_path):
    bad = tmp_path / "vocab.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="vocab.json"):
        SmilesTokenizer.load(bad)
    bad.write_text(json.dumps({"tokens": ["C"]}))
    with pytest.raises(ConfigError, match="not a molgen SMILES vocabulary"):
        SmilesTokenizer.load(bad)


def test_kekule_vocabulary_spells_rings_without_aromatic_atoms(tmp_path, real_smiles):
    from molgen.models.smiles_grammar import is_aromatic

    tok = SmilesTokenizer.from_smiles(real_smiles, kekule=True)
    assert tok.kekule and not any(is_aromatic(t) for t in tok.itos)
    assert tok.decode(tok.encode("c1cc[nH]c1")) == "C1=CNC=C1"
    for s in real_smiles:  # the same molecule, written the other way
        assert chem.canonicalize(tok.decode(tok.encode(s))) == chem.canonicalize(s)
    path = tok.save(tmp_path / "vocab.json")
    assert json.loads(path.read_text())["kekule"] is True and SmilesTokenizer.load(path) == tok
    aromatic = SmilesTokenizer.from_smiles(real_smiles)
    assert "kekule" not in aromatic.to_dict() and aromatic != SmilesTokenizer(aromatic.itos[3:], kekule=True)
    with pytest.raises(InputError, match=r"'C1CC' does not parse.*Kekulé"):
        tok.encode("C1CC")


@pytest.mark.parametrize(
    "token, parts",
    [
        ("[nH]", BracketAtom(None, "n", "", 1, 0, None)),
        ("[C@@H]", BracketAtom(None, "C", "@@", 1, 0, None)),
        ("[13CH3]", BracketAtom(13, "C", "", 3, 0, None)),
        ("[NH3+:1]", BracketAtom(None, "N", "", 3, 1, 1)),
        ("[O-2]", BracketAtom(None, "O", "", 0, -2, None)),
        ("[N++]", BracketAtom(None, "N", "", 0, 2, None)),
        ("[Fe+3]", BracketAtom(None, "Fe", "", 0, 3, None)),
        ("[se]", BracketAtom(None, "se", "", 0, 0, None)),
        ("[C@TH1]", BracketAtom(None, "C", "@TH1", 0, 0, None)),
        ("[*]", BracketAtom(None, "*", "", 0, 0, None)),
    ],
)
def test_bracket_atoms_parse_into_their_parts(token, parts):
    assert parse_bracket(token) == parts
    assert parts.element == parts.symbol.capitalize() and parts.aromatic == parts.symbol[0].islower()


@pytest.mark.parametrize("token", ["C", "[", "[]", "[CH@]", "[C+H]", "[12]", "[C]]"])
def test_what_is_not_a_bracket_atom_parses_to_none(token):
    assert parse_bracket(token) is None
