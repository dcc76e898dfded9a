"""Faults in scoring and evaluation: a user's columns overwritten, a giant molecule, bare NaN in JSON,
warnings on small sets, a demo table that does not fit a terminal.

Command-line tests run the real CLI in a subprocess with a timeout, so that a crash or a hang fails
the test instead of blocking it. (To be merged into tests/test_faults.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from rdkit import Chem

import molgen as mg
from molgen import chem, demo, io

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
GIANT = "C" * 20_000  # a valid alkane whose SMILES writer overflows RDKit's stack (exit 139)
DRUGS = ["CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O",
         "COc1ccc2[nH]cc(CCNC(C)=O)c2c1", "CC(C)NCC(O)COc1cccc2ccccc12"]


def molgen(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molgen.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines at the terminal width


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# --- 1. a user's columns are never overwritten ------------------------------------------------------


def test_score_keeps_a_users_columns_of_score_names(real_smiles):
    measured = [-0.31 + i for i in range(len(real_smiles))]  # measured logP, not Crippen's
    user = pd.DataFrame({"id": range(len(real_smiles)), "smiles": real_smiles, "logp": measured,
                         "valid": ["assay ok"] * len(real_smiles), "tpsa": 1.0})
    out = mg.score(user)
    assert out["logp"].tolist() == measured and (out["valid"] == "assay ok").all() and (out["tpsa"] == 1.0).all()
    assert out.attrs["renamed"] == {"valid": "valid_rdkit", "logp": "logp_rdkit", "tpsa": "tpsa_rdkit"}
    assert out["valid_rdkit"].all() and out.loc[0, "logp_rdkit"] == pytest.approx(1.3101, abs=1e-4)  # aspirin
    # the user's columns keep their order after the scores; molgen's sit where the plain names would
    assert [c for c in out.columns if c in user.columns] == ["smiles", "id", "logp", "valid", "tpsa"]
    assert out.columns[1] == "valid_rdkit" and out.columns[4] == "logp_rdkit"
    # a column already called logp_rdkit that is not molgen's is not replaced either
    again = mg.score(out.assign(logp_rdkit=0.0))
    assert again.attrs["renamed"]["logp"] == "logp_rdkit_2" and (again["logp_rdkit"] == 0.0).all()


def test_molgen_s_own_columns_are_replaced_not_renamed(tmp_path, real_smiles):
    # read_table's valid equals score's; a table scored before holds exactly what score computes
    path = tmp_path / "in.csv"
    pd.DataFrame({"smiles": real_smiles + ["C1CC"]}).to_csv(path, index=False)
    first = mg.score(io.read_table(path))
    assert first.attrs["renamed"] == {} and first.columns.tolist()[:2] == ["smiles", "valid"]
    rescored = mg.score(io.read_table(io.write_table(first, tmp_path / "scored.csv")))
    assert rescored.attrs["renamed"] == {} and rescored.columns.tolist() == first.columns.tolist()


def test_molgen_score_cli_keeps_the_users_columns_and_says_so(tmp_path, real_smiles):
    inp, out = tmp_path / "assay.csv", tmp_path / "scored.csv"
    measured = [-0.31] * len(real_smiles)
    pd.DataFrame({"smiles": real_smiles, "logp": measured, "valid": [1, 0] * 10}).to_csv(inp, index=False)
    proc = molgen("score", str(inp), "-o", str(out), "-j", "1")
    assert proc.returncode == 0, proc.stderr
    assert ("your table already has valid, logp: molgen's are written as valid_rdkit, logp_rdkit"
            in one_line(proc.stderr))
    df = pd.read_csv(out)
    assert df["logp"].tolist() == measured and df["valid"].tolist() == [1, 0] * 10
    assert df["valid_rdkit"].all() and df["logp_rdkit"].round(4)[0] == 1.3101


# --- 2. one giant molecule --------------------------------------------------------------------------


def test_a_giant_molecule_does_not_kill_molgen_score(tmp_path):
    moses = mg.datasets.moses_smiles("test")[:599]
    inp, out = tmp_path / "big.csv", tmp_path / "scored.csv"
    pd.DataFrame({"smiles": moses[:300] + [GIANT] + moses[300:]}).to_csv(inp, index=False)
    proc = molgen("score", str(inp), "-o", str(out), "-j", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 of 600 rows invalid (too_large 1)" in one_line(proc.stderr)
    df = pd.read_csv(out)
    assert len(df) == 600 and df["valid"].sum() == 599 and not df["valid"][300]
    assert df["invalid_reason"].tolist().count("too_large") == 1


def test_a_giant_molecule_does_not_kill_molgen_evaluate(tmp_path):
    inp, js = tmp_path / "gen.smi", tmp_path / "metrics.json"
    inp.write_text("\n".join(DRUGS + [GIANT, "C" * 5000]) + "\n")  # too long; too many atoms
    proc = molgen("evaluate", str(inp), "--json", str(js), "-j", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 of 7 rows invalid (too_large 2)" in one_line(proc.stderr)
    metrics = strict_loads(js.read_text())
    assert metrics["valid"] == pytest.approx(5 / 7) and metrics["n"] == 7
    assert any("2 of 7 inputs over molgen's size limits" in c for c in metrics["caveats"])


def test_size_limits_refuse_before_rdkit_and_spare_real_molecules():
    assert chem.to_mol(GIANT) is None and chem.parse_failure(GIANT) == "too_large"  # length
    assert chem.to_mol("C" * 5000) is None and chem.parse_failure("C" * 5000) == "too_large"  # heavy atoms
    big = Chem.MolFromSmiles("C" * 1500)
    assert chem.to_mol(big) is None and chem.to_smiles(big) is None  # a Mol passed in
    valid, reasons = io.validity(["CCO", GIANT, "C1CC"])
    assert reasons == [None, "too_large", "syntax"]
    # a 100-residue peptide (about 800 heavy atoms) and every shipped ChEMBL drug are not refused
    peptide = Chem.MolToSmiles(Chem.MolFromSequence("ACDEFGHIKLMNPQRSTVWY" * 5))
    assert chem.to_mol(peptide).GetNumHeavyAtoms() > 700
    drugs = io.read_table(Path(mg.datasets.DATA_DIR) / "chembl_drugs.csv")
    assert "too_large" not in drugs.attrs["invalid"]


def test_size_limits_are_settable_and_read_from_the_environment():
    pyrene = "c1cc2ccc3cccc4ccc(c1)c2c34"  # 4 rings, 16 heavy atoms
    previous = chem.set_limits(max_rings=3)
    try:
        assert chem.to_mol(pyrene) is None and chem.parse_failure(pyrene) == "too_large"
        assert mg.score([pyrene, "CCO"])["valid"].tolist() == [False, True]
    finally:
        chem.set_limits(previous)
    assert chem.to_mol(pyrene) is not None and chem.LIMITS == previous
    code = "from molgen import chem; print(chem.LIMITS.max_heavy_atoms, chem.to_mol('CCCCCCCCCCC') is None)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**ENV, "MOLGEN_MAX_ATOMS": "10"})
    assert proc.stdout.split() == ["10", "True"], proc.stderr


# --- 3. strict JSON and honest small-n metrics ------------------------------------------------------


def test_evaluate_of_nothing_valid_writes_strict_json(tmp_path):
    inp, js = tmp_path / "bad.smi", tmp_path / "metrics.json"
    inp.write_text("C1CC\nnot a smiles\nc1cccc1\n")
    proc = molgen("evaluate", str(inp), "--json", str(js), "-j", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = strict_loads(js.read_text())  # bare NaN would raise
    assert metrics["valid"] == 0.0 and metrics["FCD/Test"] is None and metrics["SNN/Test"] is None
    assert metrics["caveats"] == ["no valid molecules: every metric but valid is undefined (null)"]
    assert "caveats: no valid molecules" in one_line(proc.stdout)


def test_small_evaluate_warns_nothing_and_says_why_in_caveats():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = mg.metrics.evaluate(DRUGS, n_jobs=1)
    assert list(metrics)[:-1] == [*mg.metrics.MOSES_KEYS, *mg.metrics.EXTRA_KEYS] and metrics["n"] == 5
    caveats = " | ".join(metrics["caveats"])
    assert "unique@1000 and unique@10000 on 5 valid" in caveats
    assert "FCD/Test, FCD/TestSF, FCD_score/Test on 5 molecules: FCD needs thousands" in caveats


# --- 4. the demo's table and folders ----------------------------------------------------------------


def _summary() -> pd.DataFrame:
    sources = ["graph-vae-moses", "smiles-gpt-moses", "smiles-gpt-moses-small", demo.REFERENCE_ROW]
    return pd.DataFrame([{"source": s, "n": 2000, **{k: 0.123 + i for k in demo.SUMMARY_KEYS},
                          "mean QED": 0.75, "mean SA": 2.9, "seconds": 12.5} for i, s in enumerate(sources)])


def test_demo_table_fits_80_columns(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from molgen.cli import app

    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: _summary())
    result = CliRunner().invoke(app, ["demo", "-o", str(tmp_path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "…" not in result.output and max(len(line) for line in lines) <= 80
    n_row = next(line for line in lines if line.startswith("│ n "))
    assert [c.strip() for c in n_row.split("│")[2:6]] == ["2,000"] * 4  # not 2000.000
    header = next(line for line in lines if "metric" in line)
    assert [c.strip() for c in header.split("┃")[2:6]] == ["vae", "gpt", "gpt-small", "moses-test"]
    assert "gpt-small = smiles-gpt-moses-small" in one_line(result.output)


def test_demo_writes_strict_json_into_folders_without_spaces(monkeypatch, tmp_path):
    sources = {"smiles-gpt-moses": pd.DataFrame({"smiles": DRUGS, "log_likelihood": -20.0}),
               demo.REFERENCE_ROW: pd.DataFrame({"smiles": ["C1CC", "xx"]})}  # nothing valid: null metrics
    monkeypatch.setattr(demo, "_sources", lambda n, seed, models: sources)
    summary = demo.run_demo(tmp_path, n=5, n_jobs=1, progress=False)
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert folders == ["moses-test", "smiles-gpt-moses"] and summary["n"].tolist() == [5, 2]
    for folder in folders:
        metrics = strict_loads((tmp_path / folder / "metrics.json").read_text())
        assert metrics["caveats"]
    assert strict_loads((tmp_path / "moses-test" / "metrics.json").read_text())["FCD/Test"] is None
