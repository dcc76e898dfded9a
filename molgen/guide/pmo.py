"""The goal-directed tasks of the PMO benchmark: GuacaMol's scoring functions, written anew on RDKit.

PMO (Gao et al. 2022, "Sample efficiency matters: a benchmark for practical molecular
optimization", NeurIPS Datasets and Benchmarks; code github.com/wenhao-gao/mol_opt) scores 23
tasks through TDC's oracles, which re-implement the scoring functions of GuacaMol (Brown et al.
2019, "GuacaMol: benchmarking models for de novo molecular design", J. Chem. Inf. Model.
59:1096; github.com/BenevolentAI/guacamol, ``guacamol/standard_benchmarks.py``). This module
writes those definitions out from that file: the same targets, fingerprints, score modifiers and
means. 20 of the 23 are here; ``drd2``, ``gsk3b`` and ``jnk3`` are TDC's pickled scikit-learn
classifiers, which molgen does not load (weights without pickle).

Building blocks, as in GuacaMol:

- similarity: Tanimoto on RDKit's count fingerprints: ECFP4/ECFP6 = Morgan radius 2/3 counts,
  FCFP4 = Morgan radius 2 on feature invariants, AP = atom pairs up to distance 10 (counts),
  PHCO = Gobbi's 2D pharmacophore fingerprint (bits). The legacy calls GuacaMol makes
  (``GetMorganFingerprint``, ``GetAtomPairFingerprint``) give the same similarities as the
  generators used here.
- modifiers: ``clipped(x, upper)`` = clip(x / upper, 0, 1); ``gauss(x, mu, s)`` =
  exp(-((x - mu) / s)^2 / 2); ``min_gauss`` is 1 at and below ``mu`` and a Gaussian above it
  (GuacaMol's MinGaussianModifier), ``max_gauss`` 1 at and above ``mu``.
- isomers: for each element of the formula, ``gauss(count, n, 1)``; for all atoms (hydrogens
  included), ``gauss(total, N, 2)``; their geometric mean.
- SMARTS: 1 when the pattern matches (0 for an "inverse" pattern).

Every task returns a score in [0, 1]; an invalid molecule scores 0 (PMO's convention; GuacaMol
itself returns -1). In an objective the tasks are the component kind ``pmo``::

    [[component]]
    kind = "pmo"
    task = "osimertinib_mpo"

or in Python ``molgen.guide.pmo.objective("osimertinib_mpo")``; ``score(task, smiles)`` scores a
list of SMILES directly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field
from rdkit import Chem, DataStructs
from rdkit.Chem import QED, Crippen, Descriptors, rdFingerprintGenerator, rdMolDescriptors
from rdkit.Chem.Pharm2D import Generate, Gobbi_Pharm2D

from molgen.chem import to_mol
from molgen.guide.components import Component, register

__all__ = ["TASKS", "PMO_TASKS", "NOT_INCLUDED", "score", "objective", "top_auc", "PMOComponent"]

# the PMO tasks that need TDC's pickled classifiers (DRD2, GSK3-beta, JNK3 activity)
NOT_INCLUDED = ("drd2", "gsk3b", "jnk3")


# --- fingerprints and similarity -----------------------------------------------------------------

_GENERATORS = {
    "ECFP4": lambda: rdFingerprintGenerator.GetMorganGenerator(radius=2),
    "ECFP6": lambda: rdFingerprintGenerator.GetMorganGenerator(radius=3),
    "FCFP4": lambda: rdFingerprintGenerator.GetMorganGenerator(
        radius=2, atomInvariantsGenerator=rdFingerprintGenerator.GetMorganFeatureAtomInvGen()),
    "AP": lambda: rdFingerprintGenerator.GetAtomPairGenerator(maxDistance=10),
}


@cache
def _generator(fp_type: str):
    return _GENERATORS[fp_type]()


def fingerprint(mol: Chem.Mol, fp_type: str):
    """GuacaMol's fingerprint of ``fp_type`` (ECFP4, ECFP6, FCFP4, AP: counts; PHCO: bits)."""
    if fp_type == "PHCO":
        return Generate.Gen2DFingerprint(mol, Gobbi_Pharm2D.factory)
    return _generator(fp_type).GetSparseCountFingerprint(mol)


@cache
def _target_fp(smiles: str, fp_type: str):
    return fingerprint(Chem.MolFromSmiles(smiles), fp_type)


def tanimoto(mol: Chem.Mol, target: str, fp_type: str) -> float:
    """Tanimoto similarity of ``mol`` to the ``target`` SMILES (counts: the generalised Tanimoto)."""
    return DataStructs.TanimotoSimilarity(fingerprint(mol, fp_type), _target_fp(target, fp_type))


# --- score modifiers (guacamol/score_modifier.py) ------------------------------------------------


def clipped(x: float, upper: float) -> float:
    """GuacaMol's ClippedScoreModifier(upper_x=upper): linear from (0, 0) to (upper, 1), clipped."""
    return float(np.clip(x / upper, 0.0, 1.0))


def gauss(x: float, mu: float, sigma: float) -> float:
    return math.exp(-0.5 * ((x - mu) / sigma) ** 2)


def min_gauss(x: float, mu: float, sigma: float) -> float:
    """1 for x <= mu, a Gaussian of x above (GuacaMol's MinGaussianModifier)."""
    return gauss(max(x, mu), mu, sigma)


def max_gauss(x: float, mu: float, sigma: float) -> float:
    """1 for x >= mu, a Gaussian of x below (GuacaMol's MaxGaussianModifier)."""
    return gauss(min(x, mu), mu, sigma)


def geometric_mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.prod(values) ** (1.0 / len(values)))


def arithmetic_mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


# --- descriptors (guacamol/utils/descriptors.py) -------------------------------------------------


def logp(mol: Chem.Mol) -> float:
    return Crippen.MolLogP(mol)


def tpsa(mol: Chem.Mol) -> float:
    return Descriptors.TPSA(mol)


def bertz(mol: Chem.Mol) -> float:
    return Descriptors.BertzCT(mol)


def count_atoms(mol: Chem.Mol, element: str) -> int:
    """Atoms of ``element`` (hydrogens too: they are made explicit to be counted)."""
    if element == "H":
        mol = Chem.AddHs(mol)
    return sum(1 for a in mol.GetAtoms() if a.GetSymbol() == element)


@cache
def _formula(formula: str) -> tuple[tuple[str, int], ...]:
    return tuple((el, int(n) if n else 1) for el, n in re.findall(r"([A-Z][a-z]*)(\d*)", formula))


def isomer_score(mol: Chem.Mol, formula: str) -> float:
    """GuacaMol's IsomerScoringFunction (geometric mean): closeness of ``mol`` to a molecular formula."""
    elements = _formula(formula)
    with_h = Chem.AddHs(mol)
    counts: dict[str, int] = {}
    for atom in with_h.GetAtoms():
        counts[atom.GetSymbol()] = counts.get(atom.GetSymbol(), 0) + 1
    parts = [gauss(counts.get(el, 0), n, 1.0) for el, n in elements]
    parts.append(gauss(with_h.GetNumAtoms(), sum(n for _, n in elements), 2.0))
    return geometric_mean(parts)


@cache
def _smarts(pattern: str) -> Chem.Mol:
    return Chem.MolFromSmarts(pattern)


def has(mol: Chem.Mol, pattern: str) -> float:
    return 1.0 if mol.HasSubstructMatch(_smarts(pattern)) else 0.0


@cache
def _of(smiles: str, what: str) -> float:
    """A descriptor of a target molecule, computed once."""
    return {"logp": logp, "tpsa": tpsa, "bertz": bertz}[what](Chem.MolFromSmiles(smiles))


# --- the tasks -----------------------------------------------------------------------------------

CELECOXIB = "CC1=CC=C(C=C1)C1=CC(=NN1C1=CC=C(C=C1)S(N)(=O)=O)C(F)(F)F"
TROGLITAZONE = "Cc1c(C)c2OC(C)(COc3ccc(CC4SC(=O)NC4=O)cc3)CCc2c(C)c1O"
THIOTHIXENE = "CN(C)S(=O)(=O)c1ccc2Sc3ccccc3C(=CCCN4CCN(C)CC4)c2c1"
ALBUTEROL = "CC(C)(C)NCC(O)c1ccc(O)c(CO)c1"
MESTRANOL = "COc1ccc2[C@H]3CC[C@@]4(C)[C@@H](CC[C@@]4(O)C#C)[C@@H]3CCc2c1"
AMLODIPINE = r"Clc1ccccc1C2C(=C(/N/C(=C2/C(=O)OCC)COCCN)C)\C(=O)OC"
FEXOFENADINE = "CC(C)(C(=O)O)c1ccc(cc1)C(O)CCCN2CCC(CC2)C(O)(c3ccccc3)c4ccccc4"
OSIMERTINIB = "COc1cc(N(C)CCN(C)C)c(NC(=O)C=C)cc1Nc2nccc(n2)c3cn(C)c4ccccc34"
PERINDOPRIL = "O=C(OCC)C(NC(C(=O)N1C(C(=O)O)CC2CCCCC12)C)CCC"
RANOLAZINE = "COc1ccccc1OCC(O)CN2CCN(CC(=O)Nc3c(C)cccc3C)CC2"
SITAGLIPTIN = "Fc1cc(c(F)cc1F)CC(N)CC(=O)N3Cc2nnc(n2CC3)C(F)(F)F"
SITAGLIPTIN_VALSARTAN = "NC(CC(=O)N1CCn2c(nnc2C(F)(F)F)C1)Cc1cc(F)c(F)cc1F"  # the same molecule, spelled as there
ZALEPLON = "O=C(C)N(CC)C1=CC=CC(C2=CC=NC3=C(C=NN23)C#N)=C1"
CAMPHOR, MENTHOL = "CC1(C)C2CCC1(C)C(=O)C2", "CC(C)C1CCC(C)CC1O"
TADALAFIL = "O=C1N(CC(N2C1CC3=C(C2C4=CC5=C(OCO5)C=C4)NC6=C3C=CC=C6)=O)C"
SILDENAFIL = "CCCC1=NN(C2=C1N=C(NC2=O)C3=C(C=CC(=C3)S(=O)(=O)N4CCN(CC4)C)OCC)C"
HOP_START = "CCCOc1cc2ncnc(Nc3ccc4ncsc4c3)c2cc1S(=O)(=O)C(C)(C)C"  # deco_hop and scaffold_hop
HOP_SCAFFOLD = "[#7]-c1n[c;h1]nc2[c;h1]c(-[#8])[c;h0][c;h1]c12"


def _amlodipine(m):
    return geometric_mean([tanimoto(m, AMLODIPINE, "ECFP4"), gauss(rdMolDescriptors.CalcNumRings(m), 3, 0.5)])


def _fexofenadine(m):
    return geometric_mean([clipped(tanimoto(m, FEXOFENADINE, "AP"), 0.8), max_gauss(tpsa(m), 90, 10),
                           min_gauss(logp(m), 4, 1)])


def _osimertinib(m):
    return geometric_mean([clipped(tanimoto(m, OSIMERTINIB, "FCFP4"), 0.8),
                           min_gauss(tanimoto(m, OSIMERTINIB, "ECFP6"), 0.85, 0.1),
                           max_gauss(tpsa(m), 100, 10), min_gauss(logp(m), 1, 1)])


def _perindopril(m):
    return geometric_mean([tanimoto(m, PERINDOPRIL, "ECFP4"), gauss(rdMolDescriptors.CalcNumAromaticRings(m), 2, 0.5)])


def _ranolazine(m):
    return geometric_mean([clipped(tanimoto(m, RANOLAZINE, "AP"), 0.7), max_gauss(logp(m), 7, 1),
                           gauss(count_atoms(m, "F"), 1, 1.0), max_gauss(tpsa(m), 95, 20)])


def _sitagliptin(m):
    return geometric_mean([gauss(tanimoto(m, SITAGLIPTIN, "ECFP4"), 0, 0.1),
                           gauss(logp(m), _of(SITAGLIPTIN, "logp"), 0.2), gauss(tpsa(m), _of(SITAGLIPTIN, "tpsa"), 5),
                           isomer_score(m, "C16H15F6N5O")])


def _zaleplon(m):
    return geometric_mean([tanimoto(m, ZALEPLON, "ECFP4"), isomer_score(m, "C19H17N3O2")])


def _valsartan_smarts(m):
    target = SITAGLIPTIN_VALSARTAN
    return geometric_mean([has(m, "CN(C=O)Cc1ccc(c2ccccc2)cc1"), gauss(logp(m), _of(target, "logp"), 0.2),
                           gauss(tpsa(m), _of(target, "tpsa"), 5), gauss(bertz(m), _of(target, "bertz"), 30)])


def _deco_hop(m):
    return arithmetic_mean([clipped(tanimoto(m, HOP_START, "PHCO"), 0.85), 1 - has(m, "CS([#6])(=O)=O"),
                            1 - has(m, "[#7]-c1ccc2ncsc2c1"), has(m, HOP_SCAFFOLD)])


def _scaffold_hop(m):
    return arithmetic_mean([clipped(tanimoto(m, HOP_START, "PHCO"), 0.75),
                            has(m, "[#6]-[#6]-[#6]-[#8]-[#6]~[#6]~[#6]~[#6]~[#6]-[#7]-c1ccc2ncsc2c1"),
                            1 - has(m, HOP_SCAFFOLD)])


TASKS: dict[str, Callable[[Chem.Mol], float]] = {
    "albuterol_similarity": lambda m: clipped(tanimoto(m, ALBUTEROL, "FCFP4"), 0.75),
    "amlodipine_mpo": _amlodipine,
    "celecoxib_rediscovery": lambda m: tanimoto(m, CELECOXIB, "ECFP4"),
    "deco_hop": _deco_hop,
    "fexofenadine_mpo": _fexofenadine,
    "isomers_c7h8n2o2": lambda m: isomer_score(m, "C7H8N2O2"),
    "isomers_c9h10n2o2pf2cl": lambda m: isomer_score(m, "C9H10N2O2PF2Cl"),
    "median1": lambda m: geometric_mean([tanimoto(m, MENTHOL, "ECFP4"), tanimoto(m, CAMPHOR, "ECFP4")]),
    "median2": lambda m: geometric_mean([tanimoto(m, TADALAFIL, "ECFP6"), tanimoto(m, SILDENAFIL, "ECFP6")]),
    "mestranol_similarity": lambda m: clipped(tanimoto(m, MESTRANOL, "AP"), 0.75),
    "osimertinib_mpo": _osimertinib,
    "perindopril_mpo": _perindopril,
    "qed": QED.qed,
    "ranolazine_mpo": _ranolazine,
    "scaffold_hop": _scaffold_hop,
    "sitagliptin_mpo": _sitagliptin,
    "thiothixene_rediscovery": lambda m: tanimoto(m, THIOTHIXENE, "ECFP4"),
    "troglitazone_rediscovery": lambda m: tanimoto(m, TROGLITAZONE, "ECFP4"),
    "valsartan_smarts": _valsartan_smarts,
    "zaleplon_mpo": _zaleplon,
}

# PMO's 23 task names in its order (the three classifier tasks are listed but not in TASKS)
PMO_TASKS = tuple(sorted([*TASKS, *NOT_INCLUDED]))

TaskName = Literal[tuple(TASKS)]  # type: ignore[valid-type]


def score_mol(task: str, mol: Chem.Mol | None) -> float:
    """One molecule's score on ``task`` in [0, 1] (0 for ``None``)."""
    if mol is None:
        return 0.0
    return float(_task(task)(mol))


def score(task: str, smiles: Iterable[str | None]) -> np.ndarray:
    """Scores of SMILES on a task, one each; an invalid SMILES scores 0.

    Raises:
        InputError: an unknown task name.
    """
    fn = _task(task)
    out = []
    for s in smiles:
        mol = to_mol(s) if isinstance(s, str) else None
        out.append(0.0 if mol is None else float(fn(mol)))
    return np.asarray(out, dtype=np.float64)


def _task(task: str) -> Callable[[Chem.Mol], float]:
    from molgen.errors import InputError

    if task not in TASKS:
        extra = " (it needs TDC's pickled classifier, which molgen does not load)" if task in NOT_INCLUDED else ""
        raise InputError(f"unknown PMO task {task!r}{extra}; choose from {', '.join(TASKS)}")
    return TASKS[task]


def objective(task: str):
    """An :class:`~molgen.guide.objectives.Objective` of one PMO task (column ``<task>``), for an Oracle."""
    from molgen.guide.objectives import Objective

    _task(task)
    return Objective.from_dict({"description": f"PMO {task}", "component": [{"kind": "pmo", "task": task}]},
                               source=f"<pmo {task}>")


@register
class PMOComponent(Component):
    """A PMO / GuacaMol goal-directed task (``task = "..."``); its raw value is the score in [0, 1]."""

    kind: Literal["pmo"]
    task: TaskName = Field(description="one of molgen.guide.pmo.TASKS")
    default_transform: ClassVar[dict | None] = {"type": "identity"}

    @property
    def label(self) -> str:
        return self.name or self.task

    def value(self, ms):
        return TASKS[self.task](ms.mol)


# --- PMO's metrics -------------------------------------------------------------------------------


def top_auc(scores: Iterable[float], top_n: int = 10, budget: int = 10_000, freq_log: int = 100,
            finish: bool = True) -> float:  # fmt: skip
    """PMO's area under the curve of the top-``top_n`` mean against oracle calls, normalised by ``budget``.

    ``scores`` are the oracle's scores in call order. This is mol_opt's ``top_auc``
    (``main/optimizer.py``): every ``freq_log`` calls the mean of the best ``top_n`` so far
    (fewer while fewer are scored) is taken; consecutive points are joined by the trapezoid rule,
    the last point is the end of the run, and a run that ended before the budget (``finish``)
    is extended flat at its final top-``n`` mean up to ``budget``. The sum is divided by
    ``budget``. The curve starts from 0 at call 0, so a run that scores 1 from its first call
    reaches 0.995 at a budget of 10,000 (1 - freq_log / (2 budget)).
    """
    s = np.asarray(list(scores), dtype=np.float64)[:budget]
    if len(s) == 0:
        return 0.0
    s = np.nan_to_num(s, nan=0.0)

    def top_mean(k: int) -> float:
        return float(np.mean(np.sort(s[:k])[::-1][:top_n]))

    total, prev, called = 0.0, 0.0, 0
    for idx in range(freq_log, min(len(s), budget), freq_log):
        now = top_mean(idx)
        total += freq_log * (now + prev) / 2
        prev, called = now, idx
    now = top_mean(len(s))
    total += (len(s) - called) * (now + prev) / 2
    if finish and len(s) < budget:
        total += (budget - len(s)) * now
    return total / budget
