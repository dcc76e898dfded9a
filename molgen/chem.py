"""The RDKit boundary: parsing, canonical SMILES, standardisation, scaffolds, fingerprints.

Every other module goes through these functions to turn text into molecules, so that parse
failures are handled in one place: a failed parse is ``None``, never an exception, and
:func:`parse_failure` says why in one word a report can count.

Size limits. One valid but extreme molecule must not crash or stall a whole job: RDKit's
``MolToSmiles`` overflows the stack (a segfault, exit 139) on a chain of about 19,000 atoms (8 MiB
stack), and some descriptors grow with the cube of the size (BertzCT and the Murcko scaffold take
2 s at 1,000 chain atoms, 25 s at 2,000). :func:`to_mol` therefore refuses (``None``, reason
``too_large`` in :func:`parse_failure`) a SMILES longer than ``max_smiles_length`` characters before
parsing it, and a molecule with more than ``max_heavy_atoms`` heavy atoms or more than ``max_rings``
rings (independent cycles: bonds - atoms + fragments, the size of the SSSR) before any other RDKit
call. The defaults (10,000 characters, 1,000 heavy atoms, 250 rings) are far above any drug,
natural product or peptide (the ChEMBL drugs shipped in ``molgen/_data`` reach 69 heavy atoms and
13 rings; insulin has 405 heavy atoms). They live in :data:`LIMITS`; change them with
:func:`set_limits` (this process and the worker processes it forks afterwards) or, for every
process, with the environment variables ``MOLGEN_MAX_SMILES_LENGTH``, ``MOLGEN_MAX_ATOMS`` and
``MOLGEN_MAX_RINGS``, read at import.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.MolStandardize import rdMolStandardize
from rdkit.Chem.Scaffolds import MurckoScaffold

from molgen.errors import InputError

MolLike = str | Chem.Mol | None

__all__ = [
    "MolLike",
    "Limits",
    "LIMITS",
    "set_limits",
    "too_large",
    "to_mol",
    "to_smiles",
    "kekule_smiles",
    "canonicalize",
    "canonicalize_many",
    "parse_failure",
    "standardize",
    "scaffold",
    "morgan_fp",
    "morgan_fps",
    "fps_to_numpy",
    "randomize_smiles",
    "quiet",
]


def quiet() -> rdBase.BlockLogs:
    """Silence RDKit's log for the lifetime of the returned object (use in a ``with`` or keep a ref)."""
    return rdBase.BlockLogs()


@dataclasses.dataclass(frozen=True)
class Limits:
    """The largest molecule molgen computes anything for (see the module docstring)."""

    max_smiles_length: int = 10_000
    max_heavy_atoms: int = 1_000
    max_rings: int = 250


_LIMIT_ENV = {"max_smiles_length": "MOLGEN_MAX_SMILES_LENGTH", "max_heavy_atoms": "MOLGEN_MAX_ATOMS",
              "max_rings": "MOLGEN_MAX_RINGS"}


def _limits_from_env() -> Limits:
    values = {}
    for name, var in _LIMIT_ENV.items():
        text = os.environ.get(var, "").strip().replace("_", "").replace(",", "")
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            raise InputError(f"{var}={os.environ[var]!r}: give a whole number of at least 1 (default {getattr(Limits, name)})")
        values[name] = int(text)
    return Limits(**values)


#: the limits in force (replace with :func:`set_limits`, not by assignment from outside)
LIMITS: Limits = _limits_from_env()


def set_limits(limits: Limits | None = None, *, max_smiles_length: int | None = None,
               max_heavy_atoms: int | None = None, max_rings: int | None = None) -> Limits:
    """Change :data:`LIMITS` for this process (and workers it forks later); returns the previous limits.

    Pass a :class:`Limits` (e.g. the value returned earlier, to restore it) and/or single fields.
    """
    global LIMITS
    changes = {k: v for k, v in {"max_smiles_length": max_smiles_length, "max_heavy_atoms": max_heavy_atoms,
                                  "max_rings": max_rings}.items() if v is not None}
    bad = {k: v for k, v in changes.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise InputError(f"set_limits: {bad} must be whole numbers of at least 1")
    previous = LIMITS
    LIMITS = dataclasses.replace(limits if limits is not None else LIMITS, **changes)
    canonicalize.cache_clear()  # cached answers were given under the old limits
    return previous


def _mol_too_large(mol: Chem.Mol) -> bool:
    limits = LIMITS
    if mol.GetNumHeavyAtoms() > limits.max_heavy_atoms:
        return True
    bonds = mol.GetNumBonds()
    if bonds <= limits.max_rings:  # rings = bonds - atoms + fragments <= bonds: skip counting fragments
        return False
    return bonds - mol.GetNumAtoms() + len(Chem.GetMolFrags(mol)) > limits.max_rings


def too_large(x: MolLike) -> bool:
    """Whether ``x`` is over :data:`LIMITS`: a string by its length only, a ``Mol`` by heavy atoms and rings."""
    if isinstance(x, Chem.Mol):
        return _mol_too_large(x)
    return isinstance(x, str) and len(x.strip()) > LIMITS.max_smiles_length


def to_mol(x: MolLike, sanitize: bool = True) -> Chem.Mol | None:
    """Parse a SMILES string (or pass a ``Mol`` through); ``None`` on failure, no log noise.

    Non-string junk (``NaN``, numbers, ``bytes``) also gives ``None`` rather than a TypeError,
    because it arrives that way from real spreadsheets. So does a molecule over :data:`LIMITS`
    (a ``Mol`` passed in too), so that nothing downstream runs RDKit on it.
    """
    if isinstance(x, Chem.Mol):
        return None if _mol_too_large(x) else x
    if not isinstance(x, str):
        return None
    s = x.strip()
    if not s or len(s) > LIMITS.max_smiles_length:  # parsing is linear and cheap below the length limit
        return None
    _block = quiet()  # noqa: F841  (RDKit logs while this object lives)
    try:
        mol = Chem.MolFromSmiles(s, sanitize=sanitize)
    except Exception:  # RDKit raises on a few malformed inputs instead of returning None
        return None
    return None if mol is None or _mol_too_large(mol) else mol


def to_smiles(x: MolLike, canonical: bool = True, isomeric: bool = True) -> str | None:
    """Canonical SMILES of a molecule or SMILES string; ``None`` on failure or an empty molecule."""
    mol = to_mol(x)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    try:
        return Chem.MolToSmiles(mol, canonical=canonical, isomericSmiles=isomeric)
    except Exception:
        return None


def kekule_smiles(x: MolLike) -> str | None:
    """The SMILES with aromatic rings written as alternating single and double bonds, atom order kept.

    ``c1ccncc1`` becomes ``C1=CC=NC=C1`` and ``c1cc[nH]c1`` becomes ``C1=CNC=C1``: no lowercase atoms,
    so a language model that writes this form cannot produce a ring RDKit fails to kekulise.
    ``None`` where the input does not parse.
    """
    mol = to_mol(x)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    mol = Chem.Mol(mol)  # a Mol passed in is not changed
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
        return Chem.MolToSmiles(mol, canonical=False, kekuleSmiles=True)
    except Exception:
        return None


@lru_cache(maxsize=200_000)
def canonicalize(smiles: str, isomeric: bool = True) -> str | None:
    """Canonical SMILES of a string, cached: sets compared for novelty repeat the same strings."""
    return to_smiles(smiles, isomeric=isomeric)


def canonicalize_many(smiles: Iterable[object], isomeric: bool = True) -> list[str | None]:
    """Canonical SMILES for each item, ``None`` where it does not parse (positions kept)."""
    return [canonicalize(s, isomeric) if isinstance(s, str) else None for s in smiles]


def parse_failure(x: object) -> str | None:
    """Why ``x`` does not give a molecule, as one word a report can count; ``None`` if it parses.

    Reasons: ``missing`` (None/NaN/non-string), ``empty``, ``too_large`` (over :data:`LIMITS`),
    ``syntax`` (not SMILES), ``valence``, ``aromaticity`` (kekulisation failed), ``sanitize``
    (other chemistry errors). A ``Mol`` gives ``too_large``, ``empty`` or ``None``.
    """
    if isinstance(x, Chem.Mol):
        return "too_large" if _mol_too_large(x) else "empty" if x.GetNumAtoms() == 0 else None
    if not isinstance(x, str):
        return "missing"
    s = x.strip()
    if not s:
        return "empty"
    if len(s) > LIMITS.max_smiles_length:
        return "too_large"
    _block = quiet()  # noqa: F841
    mol = Chem.MolFromSmiles(s, sanitize=False)
    if mol is None:
        return "syntax"
    if _mol_too_large(mol):
        return "too_large"
    problems = Chem.DetectChemistryProblems(mol)
    if not problems:
        return None if to_mol(s) is not None else "sanitize"
    kind = problems[0].GetType()
    if kind == "AtomValenceException":
        return "valence"
    if kind in ("AtomKekulizeException", "KekulizeException"):
        return "aromaticity"
    return "sanitize"


_LARGEST = rdMolStandardize.LargestFragmentChooser(preferOrganic=True)
_UNCHARGER = rdMolStandardize.Uncharger()


def standardize(x: MolLike) -> Chem.Mol | None:
    """Clean up a molecule the usual way before modelling; ``None`` if it cannot be done.

    Steps: RDKit cleanup (normalise functional groups, reionise), keep the largest organic
    fragment (drops salts and solvents), neutralise charges where a neutral form exists.
    Stereochemistry is kept.
    """
    mol = to_mol(x)
    if mol is None:
        return None
    _block = quiet()  # noqa: F841
    try:
        mol = rdMolStandardize.Cleanup(mol)
        mol = _LARGEST.choose(mol)
        mol = _UNCHARGER.uncharge(mol)
        Chem.SanitizeMol(mol)
    except Exception:
        return None
    return mol


def scaffold(x: MolLike, generic: bool = False) -> str | None:
    """Bemis-Murcko scaffold as canonical SMILES ('' for acyclic molecules); ``None`` on failure.

    ``generic=True`` turns every atom into carbon and every bond into single (the framework).
    """
    mol = to_mol(x)
    if mol is None:
        return None
    try:
        core = MurckoScaffold.GetScaffoldForMol(mol)
        if generic:
            core = MurckoScaffold.MakeScaffoldGeneric(core)
        return Chem.MolToSmiles(core)
    except Exception:
        return None


@lru_cache(maxsize=16)
def _morgan_generator(radius: int, n_bits: int, chiral: bool):
    return rdFingerprintGenerator.GetMorganGenerator(
        radius=radius, fpSize=n_bits, includeChirality=chiral
    )


def morgan_fp(x: MolLike, radius: int = 2, n_bits: int = 2048, chiral: bool = False):
    """Morgan (ECFP-like) bit vector with RDKit's generator API; ``None`` on failure."""
    mol = to_mol(x)
    if mol is None:
        return None
    return _morgan_generator(radius, n_bits, chiral).GetFingerprint(mol)


def morgan_fps(mols: Iterable[MolLike], radius: int = 2, n_bits: int = 2048) -> list:
    """Fingerprints for many molecules, ``None`` where a molecule does not parse."""
    return [morgan_fp(m, radius, n_bits) for m in mols]


def fps_to_numpy(fps: Iterable, n_bits: int = 2048) -> np.ndarray:
    """Stack bit vectors into a ``(N, n_bits)`` uint8 array (zeros for ``None``)."""
    fps = list(fps)
    out = np.zeros((len(fps), n_bits), dtype=np.uint8)
    for i, fp in enumerate(fps):
        if fp is not None:
            DataStructs.ConvertToNumpyArray(fp, out[i])
    return out


def randomize_smiles(x: MolLike, seed: int | random.Random | None = None) -> str | None:
    """A valid non-canonical SMILES of the same molecule (random atom order) for augmentation."""
    mol = to_mol(x)
    if mol is None:
        return None
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    order = list(range(mol.GetNumAtoms()))
    rng.shuffle(order)
    shuffled = Chem.RenumberAtoms(mol, order)
    return Chem.MolToSmiles(shuffled, canonical=False)
