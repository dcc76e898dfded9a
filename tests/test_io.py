"""molgen.io: reading and writing molecule tables, bad input, DeepChem conversion."""

from __future__ import annotations

import os
import sys
import types
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem

from molgen import chem, io
from molgen.datasets import DATA_DIR
from molgen.errors import InputError, MissingDependencyError

# unparsable SMILES of each kind parse_failure reports
BAD = {
    "syntax": ["C1CC", "CC(C", "not a smiles", "c1ccccc1)"],
    "valence": ["C(C)(C)(C)(C)C", "O(C)(C)C"],
    "aromaticity": ["c1cccc1", "c1ccnc1"],
}


@pytest.fixture
def table(real_smiles) -> pd.DataFrame:
    """Real molecules with two targets, one missing value, and two invalid rows."""
    smiles = real_smiles[:8] + ["C1CC", "C(C)(C)(C)(C)C"]
    return pd.DataFrame(
        {
            "smiles": smiles,
            "logp": np.linspace(-1.0, 4.0, len(smiles)),
            "active": [1.0, 0.0, np.nan, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0],
            "name": [f"mol{i}" for i in range(len(smiles))],
        }
    )


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".smi", ".sdf", ".parquet", ".csv.gz", ".sdf.gz"])
def test_write_then_read_gives_the_same_rows_and_columns(tmp_path, table, suffix):
    path = io.write_table(table, tmp_path / f"mols{suffix}")
    back = io.read_table(path)
    cols = list(back.columns)
    assert cols[0] == "smiles" and cols[-2:] == ["valid", "invalid_reason"]
    assert sorted(cols[1:-2]) == ["active", "logp", "name"]  # SDF puts the title (name) first
    assert len(back) == len(table)
    # SDF stores structures, so its SMILES come back canonical; invalid rows keep their text
    expected = [chem.canonicalize(s) or s for s in table.smiles]
    assert [chem.canonicalize(s) or s for s in back.smiles] == expected
    np.testing.assert_allclose(back["logp"], table["logp"])
    np.testing.assert_array_equal(back["active"].isna(), table["active"].isna())
    assert back["name"].tolist() == table["name"].tolist()
    assert back["valid"].tolist() == [True] * 8 + [False, False]
    assert back["invalid_reason"].tolist() == [None] * 8 + ["syntax", "valence"]
    assert back.attrs["invalid"] == {"syntax": 1, "valence": 1}


def test_written_smi_is_readable_by_rdkit(tmp_path, table):
    path = io.write_table(table[table.index < 8], tmp_path / "mols.smi")
    supplier = Chem.SmilesMolSupplier(str(path), delimiter="\t", titleLine=True)
    assert [Chem.MolToSmiles(m) for m in supplier] == [chem.canonicalize(s) for s in table.smiles[:8]]


def test_written_sdf_keeps_stereo_and_fields(tmp_path):
    df = pd.DataFrame({"smiles": ["C[C@H](N)C(=O)O", "C/C=C/C"], "y": [1.5, 2.5]})
    path = io.write_table(df, tmp_path / "stereo.sdf")
    mols = list(Chem.SDMolSupplier(str(path)))
    assert [Chem.MolToSmiles(m) for m in mols] == [chem.canonicalize(s) for s in df.smiles]
    assert [m.GetDoubleProp("y") for m in mols] == [1.5, 2.5]


# --- columns --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", ["smiles", "SMILES", "Smiles", "canonical_smiles", "Canonical_SMILES", "mol_smiles"]
)
def test_smiles_column_found_case_insensitively(tmp_path, header):
    path = tmp_path / "t.csv"
    path.write_text(f"id,{header},pIC50\n1,CCO,5.0\n2,c1ccccc1,6.5\n")
    df = io.read_table(path)
    assert list(df.columns) == ["smiles", "id", "pIC50", "valid", "invalid_reason"]
    assert df.smiles.tolist() == ["CCO", "c1ccccc1"]


def test_targets_select_and_order_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("ID,Structure,Y1,Y2,note\na,CCO,1,2,x\nb,CCN,3,4,y\n")
    df = io.read_table(path, smiles_col="structure", targets=["y2", "Y1"])  # case-insensitive
    assert list(df.columns) == ["smiles", "Y2", "Y1", "valid", "invalid_reason"]
    assert df["Y2"].tolist() == [2, 4]


def test_missing_smiles_column_lists_the_columns_found(tmp_path):
    path = tmp_path / "assay.csv"
    path.write_text("compound,smlies,ic50\nA,CCO,1\n")
    with pytest.raises(InputError) as err:
        io.read_table(path)
    msg = str(err.value)
    assert "assay.csv" in msg and "'compound', 'smlies', 'ic50'" in msg and "smiles_col" in msg


def test_misspelled_column_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "assay.csv"
    path.write_text("smiles,solubility\nCCO,1\n")
    with pytest.raises(InputError) as err:
        io.read_table(path, targets=["solubilty"])
    msg = str(err.value)
    assert "assay.csv" in msg and "'solubilty'" in msg and "'smiles', 'solubility'" in msg
    assert "did you mean 'solubility'" in msg
    with pytest.raises(InputError, match="did you mean 'smiles'"):
        io.read_table(path, smiles_col="smile")


def test_headerless_csv_gets_a_hint(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("CCO\nc1ccccc1\n")
    with pytest.raises(InputError, match=r"list.csv.*no header.*\.smi"):
        io.read_table(path)


# --- bad input ------------------------------------------------------------------------------------


def test_nonexistent_path(tmp_path):
    with pytest.raises(InputError, match="nope.csv: no such file"):
        io.read_table(tmp_path / "nope.csv")


@pytest.mark.parametrize("suffix", [".csv", ".smi", ".sdf", ".parquet"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=f"empty{suffix} is empty"):
        io.read_table(path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".smi", ".sdf", ".parquet", ".csv.gz"])
def test_binary_junk(tmp_path, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match=f"junk{suffix}"):
        io.read_table(path)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("blank.csv", "\n\n  \n", "blank.csv is empty"),
        ("header.csv", "smiles,y\n", "header.csv has no rows"),
        ("notes.sdf", "meeting notes\nnothing chemical here\n", "notes.sdf: none of its 1 records"),
        ("table.parquet", "smiles\nCCO\n", "table.parquet: cannot read it as PARQUET"),
        ("ragged.csv", "smiles,y\nCCO,1\nCCC,2,3,4\n", "ragged.csv: cannot read it as CSV"),
    ],
)
def test_text_that_is_not_a_usable_table(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message):
        io.read_table(tmp_path / name)


def test_unknown_suffix_and_folder(tmp_path):
    (tmp_path / "mols.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"mols.xlsx: unknown format .xlsx; use one of .csv"):
        io.read_table(tmp_path / "mols.xlsx")
    with pytest.raises(InputError, match="is a folder"):
        io.read_table(tmp_path)
    with pytest.raises(InputError, match="out.xlsx"):
        io.write_table(pd.DataFrame({"smiles": ["C"]}), tmp_path / "out.xlsx")
    with pytest.raises(InputError, match="no 'smiles' column"):
        io.write_table(pd.DataFrame({"x": ["C"]}), tmp_path / "out.csv")


def test_csv_with_ten_percent_unparsable_smiles(tmp_path, real_smiles):
    good = (real_smiles * 5)[:90]
    bad = [s for reason in BAD.values() for s in reason] + ["", "C1CC"]  # 10 bad rows
    smiles = good + bad
    order = np.random.default_rng(1).permutation(len(smiles))
    df = pd.DataFrame({"SMILES": [smiles[i] for i in order], "y": order.astype(float)})
    path = tmp_path / "screen.csv"
    df.to_csv(path, index=False)
    out = io.read_table(path, targets=["y"])
    assert len(out) == 100  # nothing dropped
    np.testing.assert_array_equal(out["y"], order.astype(float))  # order kept
    assert int((~out["valid"]).sum()) == 10
    assert out.attrs["invalid"] == {"syntax": 5, "valence": 2, "aromaticity": 2, "missing": 1}
    assert io.invalid_summary(out) == "10 of 100 rows invalid (syntax 5, valence 2, aromaticity 2, missing 1)"
    assert io.invalid_summary(out[out.valid]) == "all 90 rows valid"
    # an empty field reads as NaN: "missing"; each row's reason matches chem.parse_failure
    for s, reason in zip(out.smiles, out.invalid_reason, strict=True):
        assert reason == chem.parse_failure(s)


def _cmet_records() -> list[str]:
    text = (DATA_DIR / "cmet_ligands.sdf").read_text()
    return [r for r in text.split("$$$$\n") if r.strip()]


def test_sdf_with_broken_records_keeps_and_counts_them(tmp_path):
    records = _cmet_records()[:6]
    lines = records[1].splitlines()
    lines[3] = "xx" + lines[3][2:]  # unreadable counts line
    records[1] = "\n".join(lines) + "\n"
    over = Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False)  # five-valent carbon
    over.SetProp("_Name", "bad_valence")
    over.SetProp("r_exp_dg", "-5.0")
    records[4] = Chem.MolToMolBlock(over, kekulize=False) + ">  <r_exp_dg>\n-5.0\n\n"
    path = tmp_path / "ligands.sdf"
    path.write_text("$$$$\n".join(records) + "$$$$\n")

    df = io.read_table(path)
    assert len(df) == 6
    assert list(df.columns) == ["smiles", "name", "r_exp_dg", "valid", "invalid_reason"]
    assert df["valid"].tolist() == [True, False, True, True, False, True]
    assert df.attrs["invalid"] == {"molblock": 1, "valence": 1}
    # the broken record's name and target were recovered from the text, not lost
    assert df.loc[1, "name"] == records[1].splitlines()[0].strip()
    assert df.loc[1, "r_exp_dg"] == pytest.approx(-7.46041)
    assert df.loc[4, "name"] == "bad_valence" and df.loc[4, "r_exp_dg"] == -5.0
    assert pd.isna(df.loc[1, "smiles"])


def test_smi_files_with_and_without_names(tmp_path):
    (tmp_path / "a.smi").write_text("CCO ethanol\n\nc1ccccc1 benzene ring\nC1CC\n")
    df = io.read_table(tmp_path / "a.smi")
    assert df.smiles.tolist() == ["CCO", "c1ccccc1", "C1CC"]  # blank line is not a row
    assert df.name.tolist()[:2] == ["ethanol", "benzene ring"] and pd.isna(df.name[2])
    assert df.valid.tolist() == [True, True, False]
    (tmp_path / "b.txt").write_text("CCO\nCCN\n")
    assert io.read_table(tmp_path / "b.txt").columns.tolist() == ["smiles", "valid", "invalid_reason"]


def test_numbers_in_the_smiles_column_are_syntax_errors(tmp_path):
    (tmp_path / "ids.csv").write_text("smiles,y\n12,1\n3.5,2\n")
    df = io.read_table(tmp_path / "ids.csv")
    assert df.invalid_reason.tolist() == ["syntax", "syntax"]  # not "missing": there is a value


def test_latin1_csv_from_a_spreadsheet(tmp_path):
    (tmp_path / "excel.csv").write_bytes("smiles,name\nCCO,caf\xe9\n".encode("latin-1"))
    assert io.read_table(tmp_path / "excel.csv").name.tolist() == ["caf\xe9"]


def test_nrows_reads_a_head(tmp_path, table):
    for suffix in (".csv", ".sdf", ".smi", ".parquet"):
        path = io.write_table(table, tmp_path / f"t{suffix}")
        assert len(io.read_table(path, nrows=3)) == 3


def test_reader_keeps_a_files_own_validity_columns(tmp_path):
    # the file's valid/invalid_reason say something else than RDKit would: they are the user's
    (tmp_path / "t.csv").write_text("smiles,valid,invalid_reason\nC1CC,True,\nCCO,False,assay failed\n")
    df = io.read_table(tmp_path / "t.csv")
    assert list(df.columns) == ["smiles", "valid", "invalid_reason", "valid_rdkit", "invalid_reason_rdkit"]
    assert df.valid.tolist() == [True, False] and df.invalid_reason.tolist()[1] == "assay failed"
    assert df.valid_rdkit.tolist() == [False, True] and df.invalid_reason_rdkit.tolist() == ["syntax", None]
    assert df.attrs["renamed"] == {"valid": "valid_rdkit", "invalid_reason": "invalid_reason_rdkit"}
    assert io.valid_column(df) == "valid_rdkit" and df.attrs["invalid"] == {"syntax": 1}
    assert io.invalid_summary(df) == "1 of 2 rows invalid (syntax 1)"


@pytest.mark.parametrize("suffix", [".csv", ".sdf"])
def test_a_molecule_over_the_size_limits_is_counted_too_large(tmp_path, real_smiles, suffix):
    path = io.write_table(pd.DataFrame({"smiles": real_smiles[:3]}), tmp_path / f"t{suffix}")  # 13, 14, 15 heavy atoms
    previous = chem.set_limits(max_heavy_atoms=14)
    try:
        df = io.read_table(path)
    finally:
        chem.set_limits(previous)
    assert df.valid.tolist() == [True, True, False] and df.invalid_reason.tolist() == [None, None, "too_large"]
    assert io.invalid_summary(df) == "1 of 3 rows invalid (too_large 1)"


@pytest.mark.parametrize("suffix", [".csv", ".sdf", ".parquet"])
def test_a_file_molgen_wrote_reads_back_with_plain_validity_columns(tmp_path, table, suffix):
    # generated molecules as molgen writes them: smiles, valid, ...; valid equals what the reader computes
    written = io.read_table(io.write_table(table, tmp_path / f"a{suffix}"))
    back = io.read_table(io.write_table(written, tmp_path / f"b{suffix}"))
    assert back.columns.tolist()[-2:] == ["valid", "invalid_reason"] and back.attrs["renamed"] == {}
    assert "valid_rdkit" not in back and back.valid.tolist() == [True] * 8 + [False, False]
    assert back.invalid_reason.tolist() == [None] * 8 + ["syntax", "valence"]


# --- DeepChem ---------------------------------------------------------------------------------------


class FakeNumpyDataset:
    """The attributes of deepchem.data.NumpyDataset that molgen uses."""

    def __init__(self, X, y=None, w=None, ids=None, n_tasks=1):
        self.X, self.y, self.w, self.ids = X, y, w, np.asarray(ids)
        self.tasks = np.arange(n_tasks)

    def get_task_names(self):
        return self.tasks


def test_to_deepchem_without_deepchem_says_how_to_install(monkeypatch, table):
    monkeypatch.setitem(sys.modules, "deepchem", None)  # import deepchem -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'molgen\[deepchem\]'"):
        io.to_deepchem(table[table.index < 8], ["logp"])


def test_deepchem_arrays_follow_molnet_conventions(table):
    ok = table[table.index < 8]
    X, y, w, ids = io.deepchem_arrays(ok, ["logp", "active"])
    assert X.shape == (8, 2048) and X.dtype == np.uint8
    np.testing.assert_array_equal(X[0], chem.fps_to_numpy([chem.morgan_fp(ok.smiles[0])])[0])
    assert y.shape == w.shape == (8, 2)
    assert w[2, 1] == 0 and y[2, 1] == 0  # missing label -> weight 0
    assert w.sum() == 15
    assert ids.tolist() == ok.smiles.tolist()
    X, *_ = io.deepchem_arrays(ok, ["logp"], X="smiles")
    assert X.tolist() == ok.smiles.tolist()
    X, *_ = io.deepchem_arrays(ok, ["logp"], X=np.ones((8, 3)))
    assert X.shape == (8, 3)


def test_deepchem_arrays_refuse_or_drop_invalid_rows(table):
    with pytest.raises(InputError, match="2 of 10 rows have invalid SMILES"):
        io.deepchem_arrays(table, ["logp"])
    with pytest.warns(UserWarning, match="left out 2 rows"):
        X, y, w, ids = io.deepchem_arrays(table, ["logp"], drop_invalid=True)
    assert len(ids) == 8 and X.shape == (8, 2048)
    with pytest.raises(InputError, match="'pIC50'"):
        io.deepchem_arrays(table, ["pIC50"])


def test_to_deepchem_builds_a_numpy_dataset(monkeypatch, table):
    fake = types.ModuleType("deepchem")
    fake.data = types.SimpleNamespace(NumpyDataset=FakeNumpyDataset)
    monkeypatch.setitem(sys.modules, "deepchem", fake)
    ds = io.to_deepchem(table[table.index < 8], ["logp", "active"])
    assert isinstance(ds, FakeNumpyDataset) and ds.X.shape == (8, 2048) and ds.y.shape == (8, 2)


def test_from_deepchem_round_trip(table):
    ok = table[table.index < 8].reset_index(drop=True)
    X, y, w, ids = io.deepchem_arrays(ok, ["logp", "active"])
    ds = FakeNumpyDataset(X, y, w, ids, n_tasks=2)
    ds.tasks = np.array(["logp", "active"])
    back = io.from_deepchem(ds)
    assert list(back.columns) == ["smiles", "logp", "active", "valid", "invalid_reason"]
    assert back.smiles.tolist() == ok.smiles.tolist()
    np.testing.assert_allclose(back["logp"], ok["logp"])
    np.testing.assert_array_equal(back["active"].isna(), ok["active"].isna())  # w=0 -> NaN again
    assert back.valid.all()


def test_from_deepchem_names_invalid_ids_and_tasks():
    ds = FakeNumpyDataset(None, np.array([[1.0], [2.0]]), None, ["CCO", "C1CC"])
    df = io.from_deepchem(ds, targets=["y"])
    assert df.valid.tolist() == [True, False] and df.attrs["invalid"] == {"syntax": 1}
    ds.tasks = np.array(["a", "b", "c"])  # wrong count: fall back to task_0
    assert "task_0" in io.from_deepchem(ds).columns
    with pytest.raises(InputError, match="not SMILES"):
        io.from_deepchem(FakeNumpyDataset(None, np.zeros((2, 1)), None, [0, 1]))


def test_validity_agrees_with_parse_failure():
    smiles = [s for bad in BAD.values() for s in bad] + ["CCO", None, ""]
    valid, reasons = io.validity(smiles)
    assert valid.tolist() == [False] * 8 + [True, False, False]
    assert Counter(reasons) == Counter([chem.parse_failure(s) for s in smiles])
    assert os.fspath(DATA_DIR).endswith("_data")
