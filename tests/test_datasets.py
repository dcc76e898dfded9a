"""molgen.datasets: the named offline data sets, their checksums and provenance, and `molgen datasets`."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from molgen import datasets
from molgen.cli import app
from molgen.errors import InputError, MissingDependencyError

SMALL = {  # name -> (rows, targets)
    "freesolv": (642, ["expt", "calc"]),
    "solubility": (1282, ["logS"]),
    "chembl2321810": (1017, ["activity"]),
    "cmet": (24, ["dG_exp"]),
    "chembl_drugs": (1935, []),
}
README = Path(__file__).resolve().parents[1] / "data" / "README.md"


def test_list_describes_every_set_without_reading_data():
    table = datasets.list()
    assert list(table.columns) == ["name", "n", "splits", "targets", "description", "source", "licence"]
    assert table.name.tolist() == ["moses", *SMALL]
    n = dict(zip(table.name, table.n, strict=True))
    assert n["moses"] == 1_584_663 + 176_074 + 176_225
    assert all(n[name] == rows for name, (rows, _) in SMALL.items())
    assert table.set_index("name").loc["solubility", "splits"] == "train=1,025, test=257"


@pytest.mark.parametrize("name", list(SMALL))
def test_small_sets_load_with_targets_and_provenance(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "datamol", None)  # loading must not need datamol
    rows, targets = SMALL[name]
    df = datasets.load(name)
    assert len(df) == rows
    assert list(df.columns[: 1 + len(targets)]) == ["smiles", *targets]
    assert list(df.columns[-2:]) == ["valid", "invalid_reason"]
    assert df.valid.all() and df.attrs["invalid"] == {}
    for t in targets:
        assert df[t].dtype == np.float64 and df[t].notna().all()
    prov = df.attrs["provenance"]
    assert set(prov) >= {"source", "file", "sha256", "licence", "n_rows", "n_invalid"}
    assert prov["n_rows"] == rows and prov["n_invalid"] == 0
    assert all(datasets.SHA256[f] == sha for f, sha in prov["files"].items())


def test_known_values_survive_loading():
    free = datasets.load("freesolv")
    first = free.iloc[0]
    assert (first.smiles, first.expt, first["name"]) == (
        "CN(C)C(=O)c1ccc(cc1)OC",
        -11.01,
        "4-methoxy-N,N-dimethyl-benzamide",
    )
    sol = datasets.load("solubility", split="train")
    assert (sol.smiles[0], sol.logS[0], sol["name"][0]) == ("CCCCC", -3.18, "n-pentane")
    cmet = datasets.load("cmet")
    assert cmet["name"][0] == "CHEMBL3402753_200" and cmet.dG_exp[0] == pytest.approx(-9.13905)
    series = datasets.load("chembl2321810")
    assert series.set_index("name").loc["1520012", "activity"] == 5.48
    assert series.activity.between(4.0, 9.5).all()


def test_solubility_splits():
    both = datasets.load("solubility")
    assert both.split.value_counts().to_dict() == {"train": 1025, "test": 257}
    test = datasets.load("solubility", split="test")
    assert len(test) == 257 and "split" not in test.columns
    assert test.attrs["provenance"]["split"] == "test"
    assert test.smiles.tolist() == both[both.split == "test"].smiles.tolist()


def test_unknown_name_or_split():
    with pytest.raises(InputError, match=r"no data set named 'freesolve'.*Did you mean 'freesolv'"):
        datasets.load("freesolve")
    with pytest.raises(InputError, match=r"no split 'valid'; splits: train, test"):
        datasets.load("solubility", split="valid")


def test_checksum_mismatch_is_an_error(monkeypatch, tmp_path):
    shutil.copytree(datasets.DATA_DIR, tmp_path / "_data")
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path / "_data")
    assert len(datasets.load("cmet")) == 24  # the intact copy loads
    target = tmp_path / "_data" / "freesolv.csv"
    target.write_text(target.read_text().replace("-11.01", "-11.02"))
    with pytest.raises(InputError, match=r"freesolv.csv has sha256 .* damaged or was edited"):
        datasets.load("freesolv")
    (tmp_path / "_data" / "cmet_ligands.sdf").unlink()
    with pytest.raises(InputError, match="cmet_ligands.sdf is missing"):
        datasets.verify("cmet")


def test_checksum_table_covers_the_shipped_files_and_the_readme():
    shipped = {p.name for p in datasets.DATA_DIR.iterdir() if not p.name.startswith(".")}
    assert shipped == {f for f in datasets.SHA256 if not f.startswith("moses/")}
    readme = dict(re.findall(r"\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|", README.read_text()))
    assert readme == datasets.SHA256


def test_moses_test_split_and_helpers():
    df = datasets.load("moses", split="test")
    assert len(df) == 176_074 and list(df.columns) == ["smiles"]
    prov = df.attrs["provenance"]
    assert prov["sha256"] == datasets.SHA256["moses/test.csv.gz"] and prov["n_invalid"] is None
    # the file holds 176,225 molecules (DESIGN.md's 176,226 counts its header line)
    assert len(datasets.moses_smiles("test_scaffolds")) == 176_225
    head = datasets.load("moses", split="test_scaffolds", nrows=50)
    assert len(head) == 50
    assert datasets.moses_smiles("test_scaffolds", nrows=50) == head.smiles.tolist()
    assert datasets.moses_smiles("train", nrows=3)[0] == "CCCS(=O)c1ccc2[nH]c(=NC(=O)OC)[nH]c2c1"
    assert datasets.moses_path("train").name == "train.csv.gz"
    assert datasets.load("moses", nrows=5).attrs["provenance"]["split"] == "train"
    with pytest.raises(InputError, match="no split 'valid'"):
        datasets.moses_path("valid")


def test_moses_without_molsets_says_how_to_install(monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    for call in (lambda: datasets.load("moses", nrows=1), lambda: datasets.moses_smiles("test", nrows=1)):
        with pytest.raises(MissingDependencyError, match=r"pip install --no-deps molsets==0\.3\.1"):
            call()
    assert len(datasets.load("cmet")) == 24  # the small sets do not need it


def test_cli_datasets_table():
    runner = CliRunner()
    result = runner.invoke(app, ["datasets", "--verify", "--format", "table"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ["moses", *SMALL]:
        assert name in result.output
    assert "1,936,962" in result.output and "logS" in result.output
    assert result.output.count(" ok ") == 6


def test_cli_datasets_for_scripts():
    """Piped (not a terminal), the listing is CSV with every column whole, not a table squeezed to 80 columns."""
    import io
    import json

    runner = CliRunner()
    piped = runner.invoke(app, ["datasets"], env={"COLUMNS": "80"})
    assert piped.exit_code == 0, piped.output
    table = pd.read_csv(io.StringIO(piped.stdout))
    assert table["name"].tolist()[:3] == ["moses", "freesolv", "solubility"] and "licence" in table.columns
    assert table.set_index("name").loc["moses", "n"] == 1936962
    rows = json.loads(runner.invoke(app, ["datasets", "--format", "json"]).stdout)
    assert {r["name"] for r in rows} >= set(SMALL)
    assert runner.invoke(app, ["datasets", "--format", "xml"]).exit_code == 2
