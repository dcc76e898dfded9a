"""molgen.data: seeded random and scaffold splits."""

from __future__ import annotations

import pandas as pd
import pytest

from molgen import chem, datasets
from molgen.data import random_split, scaffold_split
from molgen.errors import InputError


@pytest.fixture(scope="module")
def drugs() -> pd.DataFrame:
    return datasets.load("chembl_drugs")


def _assert_partition(df, parts):
    indices = [set(p.index) for p in parts]
    assert sum(len(i) for i in indices) == len(df)
    assert set().union(*indices) == set(df.index)
    for p in parts:  # rows are the input's rows, untouched
        pd.testing.assert_frame_equal(p, df.loc[p.index])


def test_random_split_sizes_partition_and_seed(real_smiles):
    df = pd.DataFrame({"smiles": (real_smiles * 5)[:100], "y": range(100)}, index=range(1000, 1100))
    train, valid, test = random_split(df, (0.8, 0.1, 0.1), seed=7)
    assert (len(train), len(valid), len(test)) == (80, 10, 10)
    _assert_partition(df, (train, valid, test))
    again = random_split(df, (0.8, 0.1, 0.1), seed=7)
    assert [list(p.index) for p in again] == [list(p.index) for p in (train, valid, test)]
    other = random_split(df, (0.8, 0.1, 0.1), seed=8)
    assert list(other[0].index) != list(train.index)
    a, b, c = random_split(df, (0.5, 0.0, 0.5), seed=0)
    assert (len(a), len(b), len(c)) == (50, 0, 50)


@pytest.mark.parametrize("frac", [(0.8, 0.1), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)])
def test_bad_fractions(frac):
    df = pd.DataFrame({"smiles": ["CCO"] * 10})
    with pytest.raises(InputError, match="sum to 1"):
        random_split(df, frac)
    with pytest.raises(InputError, match="sum to 1"):
        scaffold_split(df, frac)


def test_scaffold_split_shares_no_scaffold(drugs):
    parts = scaffold_split(drugs, (0.8, 0.1, 0.1), seed=0)
    _assert_partition(drugs, parts)
    scaffolds = [set(p.smiles.map(chem.scaffold)) for p in parts]
    assert (
        not scaffolds[0] & scaffolds[1]
        and not scaffolds[0] & scaffolds[2]
        and not scaffolds[1] & scaffolds[2]
    )
    n = len(drugs)
    assert abs(len(parts[0]) - 0.8 * n) < 0.03 * n
    assert abs(len(parts[1]) - 0.1 * n) < 0.03 * n


def test_scaffold_split_is_seeded(drugs):
    first = scaffold_split(drugs, seed=1)
    again = scaffold_split(drugs, seed=1)
    other = scaffold_split(drugs, seed=2)
    assert [list(p.index) for p in first] == [list(p.index) for p in again]
    assert list(first[2].index) != list(other[2].index)


def test_scaffold_split_keeps_acyclic_together_and_invalid_rows(real_smiles):
    acyclic = ["CCO", "CCCCN", "CC(=O)O", "CCOCC"]
    df = pd.DataFrame({"smiles": real_smiles + acyclic + ["C1CC", "not smiles"]})
    parts = scaffold_split(df, (0.6, 0.2, 0.2), seed=0)
    _assert_partition(df, parts)
    homes = {i for i, p in enumerate(parts) for s in p.smiles if s in acyclic}
    assert len(homes) == 1  # the empty scaffold is one group
    generic = scaffold_split(df, (0.6, 0.2, 0.2), seed=0, generic=True)
    _assert_partition(df, generic)
    with pytest.raises(InputError, match="no column 'SMILES'"):
        scaffold_split(df, smiles_col="SMILES")
