"""SMILES grammar masks: real SMILES always pass, syntax errors are never sampled."""

from __future__ import annotations

import pytest
import torch
from rdkit import Chem

import molgen as mg
from molgen.chem import quiet
from molgen.models.gpt import GPTConfig, SmilesGPT
from molgen.models.smiles_grammar import SmilesGrammar
from molgen.tokenize import SmilesTokenizer, tokenize

torch.set_num_threads(1)

TRICKY = [
    "C1CC2CC1C2",  # two rings sharing atoms
    "C12CCC1CC2",  # two labels opened on one atom
    "C1CCCCC1C1CCCCC1",  # a label reused after it closed
    "C%10CCCCC%10",
    "c1ccccc1.[Na+].[Cl-]",
    "CC(C)(C)C(=O)N(C)C",
    "C=1CCC=1",  # ring bond with an explicit order
    "C1CCF.C1",  # a ring closed across a dot: with "." in the vocabulary, F is no dead end
    "O=C1N(C)C(=O)c2ccccc21",
    "CC(=O)Oc1ccccc1C(=O)O",
]


@pytest.fixture(scope="module")
def tok(real_smiles):
    return SmilesTokenizer.from_smiles([*real_smiles, *TRICKY])


def _masked(tok, smiles: list[str]) -> list[str]:
    """The SMILES that the grammar masks somewhere, fed token by token in batches of equal length,
    each with a token budget it fills exactly (the tightest the context can be)."""
    by_length: dict[int, list[str]] = {}
    for s in smiles:
        by_length.setdefault(len(tok.encode(s)), []).append(s)
    out = []
    for length, group in sorted(by_length.items()):
        ids = torch.as_tensor(tok.encode_batch(group))  # <bos> ... <eos>
        state = SmilesGrammar(tok.itos).start(len(ids), "cpu", length, max_tokens=length - 1)
        masked = torch.zeros(len(ids), dtype=torch.bool)
        for j in range(1, length):
            masked |= ~state.mask().gather(1, ids[:, j, None]).squeeze(1)
            state.update(ids[:, j])
        out += [group[i] for i in masked.nonzero().squeeze(1).tolist()]
    return out


def test_every_real_smiles_is_allowed(tok, real_smiles):
    assert _masked(tok, [*real_smiles, *TRICKY]) == []


def test_no_moses_test_smiles_is_masked_anywhere():
    """The guards are stricter than SMILES, never than MOSES: 20,000 test molecules walk through
    (all 352,299 of test and test_scaffolds did when the grammar was written)."""
    import molgen as mg
    from molgen.datasets import moses_smiles

    tok = mg.load_pretrained("smiles-gpt-moses", device="cpu").tokenizer
    assert _masked(tok, moses_smiles("test", nrows=20_000)) == []


@pytest.mark.parametrize(
    "prefix, forbidden",
    [
        ("", "("),  # nothing to branch from
        ("", "1"),
        ("C1", "1"),  # C11 bonds an atom to itself
        ("C1C", "1"),  # C1C1 repeats the chain bond
        ("C12CC1", "2"),  # C12CC12 repeats the ring bond
        ("C(", ")"),  # empty branch
        ("C(", "("),
        ("C(", "1"),
        ("C=", "#"),
        ("C=", "<eos>"),
        ("C1CC", "<eos>"),  # ring 1 still open
        ("CC(C", "<eos>"),  # branch still open
        ("CC", ")"),  # no branch to close
        ("CC(C)", "1"),  # ring labels follow atoms
        ("C(=", "1"),  # a branch's bond bonds to an atom
        ("CF", "C"),  # fluorine has one bond
        ("CC(=O)", "="),  # the carbon has one bond left
        ("CCl", "1"),  # a ring bond would be chlorine's second
        ("C=1CCC#C", "1"),  # closing with = would give that carbon five bonds
        ("OC(O)(O)(O)", "("),  # carbon is full: no branch, no chain atom
        ("OC(O)(O)(O)", "C"),
        ("C#", "O"),  # O would have three bonds
        ("C1CC", "F"),  # with ring 1 open, C1CCF could neither go on nor end
        ("C1CC(C)(C)", "("),  # ... nor C1CC(C)(C)(C)
    ],
)
def test_syntax_errors_are_masked(tok, prefix, forbidden):
    # as for MOSES, no "." in the vocabulary (with one, C1CCF.C1 makes F no dead end)
    grammar = SmilesGrammar([t if t != "." else "<no dot>" for t in tok.itos])
    state = grammar.start(1, "cpu")
    for t in tokenize(prefix):
        state.update(torch.tensor([tok.stoi[t]]))
    assert not state.mask()[0, tok.stoi[forbidden]]


def test_an_untrained_model_samples_only_parseable_smiles_under_the_grammar(tok):
    torch.manual_seed(0)
    model = SmilesGPT(GPTConfig(vocab_size=len(tok), n_layer=2, n_head=2, n_embd=32, block_size=128))
    model.tokenizer = tok
    model.eval()
    ids, _, finished = model.generate(300, generator=torch.Generator().manual_seed(1), grammar=SmilesGrammar(tok.itos))
    done = [s for s, f in zip(tok.decode_batch(ids.numpy()), finished.tolist(), strict=True) if f]
    assert len(done) > 300 // 4  # past a quarter finished, rows leave the batch: the state must follow
    with quiet():
        assert all(Chem.MolFromSmiles(s, sanitize=False) is not None for s in done)
        free = mg.sample(model, 300, seed=1, grammar=False)
        parsed = sum(Chem.MolFromSmiles(s, sanitize=False) is not None for s in free["smiles"])
    assert parsed < 0.5 * len(free)  # without the grammar the same model writes mostly non-SMILES


def test_a_kekule_grammar_never_draws_aromatic_atoms(real_smiles):
    from molgen.chem import parse_failure
    from molgen.models.smiles_grammar import is_aromatic

    tok = SmilesTokenizer.from_smiles(real_smiles, kekule=True)
    tok.extend(["c", "n", "[nH]", ":"])  # present in the vocabulary, never drawn
    torch.manual_seed(0)
    model = SmilesGPT(GPTConfig(vocab_size=len(tok), n_layer=2, n_head=2, n_embd=32, block_size=96))
    model.tokenizer = tok
    out = mg.sample(model, 300, seed=2)
    ids, _, finished = model.generate(300, generator=torch.Generator().manual_seed(2), grammar=SmilesGrammar(tok.itos, aromatic=False))
    drawn = {tok.itos[i] for i in ids.unique().tolist()}
    assert drawn and not any(is_aromatic(t) for t in drawn)
    reasons = {parse_failure(s) for s, ok in zip(out["smiles"], out["valid"], strict=True) if not ok}
    assert "aromaticity" not in reasons and out["valid"].mean() > 0.5
    # valid rows come back in RDKit's aromatic spelling, the way chemists read them: this untrained
    # model rarely closes an aromatic ring, the shipped Kekulé model nearly always does
    from molgen.models import load_pretrained

    shipped = load_pretrained("smiles-gpt-moses-small", device="cpu")
    rows = mg.sample(shipped, 50, seed=0)
    assert shipped.tokenizer.kekule and rows["valid"].sum() >= 45
    assert sum(any(is_aromatic(t) for t in tokenize(s)) for s in rows.loc[rows["valid"], "smiles"]) >= 40


def test_a_row_near_the_end_of_its_context_may_only_close_what_is_open(tok):
    grammar = SmilesGrammar([t if t != "." else "<no dot>" for t in tok.itos])
    state = grammar.start(1, "cpu", max_tokens=len(tokenize("C1CC(C")) + 3)
    allowed_after = []
    for t in [*tokenize("C1CC(C"), "1", ")"]:
        state.update(torch.tensor([tok.stoi[t]]))
        allowed_after.append({tok.itos[i] for i in state.mask()[0].nonzero().squeeze(1).tolist()})
    # three tokens left with ring 1 and a branch open: close one of them; then the other; then end
    assert allowed_after[-3] == {")", "1"}
    assert allowed_after[-2] == {")"}
    assert allowed_after[-1] == {"<eos>"}
    assert "C" in allowed_after[-4]  # one more token to spare: an atom still fits


@pytest.mark.parametrize(
    "token, capacity, aromatic",
    [("C", 4, False), ("c", 4, True), ("[nH]", 2, True), ("[NH3+]", 1, False), ("[O-]", 1, False),
     ("[C@@H]", 3, False), ("[se]", 6, True), ("[13CH3]", 1, False), ("[*]", 99, False), ("[Xx]", 99, False)],
)
def test_atom_tokens_capacity_and_aromaticity_from_the_shared_bracket_parser(token, capacity, aromatic):
    from molgen.models.smiles_grammar import _atom_capacity, is_aromatic

    assert (_atom_capacity(token), is_aromatic(token)) == (capacity, aromatic)
