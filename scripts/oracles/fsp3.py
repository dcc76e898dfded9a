"""An example `python` objective component (scripts/configs/objective_example_all.toml).

A Python component is any function that takes a list of SMILES and returns one float per SMILES
(NaN for one it cannot score). The objective passes canonical SMILES of valid molecules, in
batches; a function that raises or returns the wrong number of values scores its batch 0 and the
failure is reported, so the run goes on.
"""

from __future__ import annotations

import math

from rdkit import Chem
from rdkit.Chem import rdMolDescriptors


def score(smiles: list[str]) -> list[float]:
    """Fraction of sp3 carbons (Fsp3; Lovering 2009): higher tends to mean more soluble, less flat."""
    out = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        out.append(rdMolDescriptors.CalcFractionCSP3(mol) if mol is not None else math.nan)
    return out
