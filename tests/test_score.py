"""molgen.score: known values on real drugs, MOSES filter fidelity, invalid rows, parallel = serial."""

from __future__ import annotations

import gzip
import importlib.util
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem, RDConfig
from rdkit.Chem import QED, Crippen, Descriptors

import molgen as mg
import molgen.score as S
from molgen.errors import InputError

ASPIRIN, CAFFEINE, IBUPROFEN = "CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O"
RHODANINE = "O=C1C(=Cc2ccc(O)cc2)SC(=S)N1"  # PAINS ene_rhod_A


def test_known_values_of_drugs():
    df = mg.score([ASPIRIN, CAFFEINE, IBUPROFEN])
    # published RDKit values (QED paper implementation, Crippen logP, average MW, Ertl TPSA)
    assert df.qed.round(3).tolist() == [0.550, 0.538, 0.822]
    assert df.logp.round(4).tolist() == [1.3101, -1.0293, 3.0732]
    assert df.mw.round(3).tolist() == [180.159, 194.194, 206.285]
    assert df.tpsa.round(2).tolist() == [63.60, 61.82, 37.30]
    assert df.hbd.tolist() == [1, 0, 1] and df.hba.tolist() == [3, 3, 1]
    assert df.rings.tolist() == [1, 2, 1]
    assert 1.4 < df.sa[0] < 1.8 and 2.0 < df.sa[1] < 2.5  # Ertl & Schuffenhauer: simple drugs score ~1.5-2.5
    assert df.brenk[0] == "phenol_ester" and df.brenk[1] == ""
    assert df.moses_filter.all() and (df.pains == "").all()


def test_module_is_callable_and_columns_are_ordered():
    df = mg.score(["CCO"])
    assert list(df.columns) == ["smiles", "valid", *S.COLUMNS]
    assert callable(mg.score) and mg.score.COLUMNS == S.COLUMNS


def _contrib(subdir, name):
    """RDKit's Contrib scorer loaded the way its README says (sys.path + its own pickle reader)."""
    sys.path.insert(0, str(Path(RDConfig.RDContribDir) / subdir))
    try:
        spec = importlib.util.spec_from_file_location(f"ref_{name}", Path(RDConfig.RDContribDir) / subdir / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.pop(0)
    return mod


def test_scores_equal_rdkit_reference_functions(real_smiles):
    df = mg.score(real_smiles)
    mols = [Chem.MolFromSmiles(s) for s in real_smiles]
    sa = _contrib("SA_Score", "sascorer")
    sa.readFragmentScores()
    npm = _contrib("NP_Score", "npscorer")
    with gzip.open(Path(RDConfig.RDContribDir) / "NP_Score" / "publicnp.model.gz") as fh:
        np_model = pickle.load(fh)  # RDKit's own file, read the way npscorer does, as the reference
    np.testing.assert_allclose(df.qed, [QED.qed(m) for m in mols], rtol=0, atol=1e-12)
    np.testing.assert_allclose(df.logp, [Crippen.MolLogP(m) for m in mols], atol=1e-12)
    np.testing.assert_allclose(df.mw, [Descriptors.MolWt(m) for m in mols], atol=1e-9)
    np.testing.assert_allclose(df.sa, [sa.calculateScore(m) for m in mols], atol=1e-12)
    np.testing.assert_allclose(df.np_score, [npm.scoreMol(m, np_model) for m in mols], atol=1e-12)


def _moses_passes_filters_plain(smiles: str) -> bool:
    """MOSES ``mol_passes_filters`` as published: every SMARTS on the H-added molecule, no screen."""
    mol = Chem.MolFromSmiles(smiles)
    alerts = S._alerts()
    if any(len(r) >= 8 for r in mol.GetRingInfo().AtomRings()):
        return False
    if any(a.GetFormalCharge() != 0 or a.GetSymbol() not in {"C", "N", "S", "O", "F", "Cl", "Br", "H"} for a in mol.GetAtoms()):
        return False
    h = Chem.AddHs(mol)
    if any(h.HasSubstructMatch(q) for q in alerts["mcf"].queries + alerts["pains"].queries):
        return False
    return Chem.MolFromSmiles(Chem.MolToSmiles(mol, isomericSmiles=False)) is not None


@pytest.fixture(scope="module")
def drugs() -> list[str]:
    smiles = mg.datasets.load("chembl_drugs")["smiles"].dropna().tolist()
    return smiles[::5]  # ~390 approved drugs: salts, charges, metals, PAINS and MCF hits


def test_screened_alerts_equal_plain_matching(drugs, real_smiles):
    """The pattern-fingerprint screen never changes an alert result (PAINS, MCF, QED alerts)."""
    smiles = [s for s in drugs + real_smiles + [RHODANINE] if Chem.MolFromSmiles(s) is not None]
    df = mg.score(smiles, properties=["qed", "pains", "brenk", "moses_filter"])
    assert (df.brenk != "").sum() >= 50  # Brenk comes from RDKit's FilterCatalog as it is
    alerts = S._alerts()
    for s, pains, passes, qed in zip(smiles, df.pains, df.moses_filter, df.qed, strict=True):
        mol = Chem.MolFromSmiles(s)
        h = Chem.AddHs(mol)
        first = next((alerts["pains"].names[i] for i, q in enumerate(alerts["pains"].queries)
                      if h.HasSubstructMatch(q)), "")
        assert pains == first, s
        assert passes == _moses_passes_filters_plain(s), s
        assert qed == pytest.approx(QED.qed(mol), abs=1e-12), s
    # the set is not trivial: it exercises each branch
    assert (df.pains != "").sum() >= 2 and (~df.moses_filter).sum() >= 50 and df.moses_filter.sum() >= 50


def test_moses_filter_rules():
    smiles = [RHODANINE, "CC[N+](C)(C)C", "C1CCCCCCC1", "CCI", "CC[Si](C)C", "c1ccccc1CCN", "[2H]c1ccccc1CCO"]
    df = mg.score(smiles)
    assert df.pains[0] == "ene_rhod_A(235)"
    # PAINS, charge, 8-ring, iodine, silicon; then two that pass (isotopic H is still H)
    assert df.moses_filter.tolist() == [False, False, False, False, False, True, True]
    assert df.moses_filter.tolist() == [_moses_passes_filters_plain(s) for s in smiles]


def test_invalid_rows_are_kept_and_marked():
    inputs = ["CCO", "C1CC", float("nan"), "", "not smiles", None, "c1ccccc1"]
    df = mg.score(inputs)
    assert len(df) == len(inputs)
    assert df.valid.tolist() == [True, False, False, False, False, False, True]
    assert df.qed[~df.valid].isna().all() and df.moses_filter[~df.valid].isna().all()
    assert df.pains[~df.valid].isna().all() and df.qed[df.valid].notna().all()


def test_dataframe_input_keeps_columns_and_index():
    table = pd.DataFrame({"id": ["a", "b"], "smiles": [ASPIRIN, "xx"], "pIC50": [5.0, 6.0]}, index=[10, 20])
    df = mg.score(table, properties=["qed", "mw"])
    assert list(df.columns) == ["smiles", "valid", "qed", "mw", "id", "pIC50"]
    assert df.index.tolist() == [10, 20] and df.id.tolist() == ["a", "b"]
    assert df.valid.tolist() == [True, False]


def test_bad_arguments_name_the_problem():
    with pytest.raises(InputError, match=r"columns found: \['id', 'SMILES'\]"):
        mg.score(pd.DataFrame({"id": [1], "SMILES": ["C"]}))
    with pytest.raises(InputError, match="unknown properties"):
        mg.score(["CCO"], properties=["qed", "logS"])


def test_parallel_equals_serial(real_smiles, drugs):
    smiles = (drugs + real_smiles + ["bad"]) * 2  # > 2 chunks of 256, so a pool really starts
    serial = mg.score(smiles, n_jobs=1)
    parallel = mg.score(smiles, n_jobs=2, progress=True)
    pd.testing.assert_frame_equal(serial, parallel)
    assert math.isnan(parallel.qed.iloc[len(drugs) + len(real_smiles)])
