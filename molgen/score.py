"""Per-molecule scores as DataFrame columns: drug-likeness, properties, structural alerts.

``import molgen as mg; mg.score(["CCO", ...])`` (the module itself is callable) returns one row
per input with ``smiles``, ``valid`` and these columns:

=============  ==============================================================================
qed            RDKit QED (Bickerton 2012), identical to ``rdkit.Chem.QED.qed``
sa             synthetic accessibility 1 (easy) .. 10 (hard), RDKit Contrib ``SA_Score``
logp           Wildman-Crippen logP
mw             average molecular weight
tpsa           topological polar surface area
hbd, hba       Lipinski H-bond donors / acceptors (RDKit ``CalcNumHBD`` / ``CalcNumHBA``)
rotb           rotatable bonds (strict definition, as in QED)
rings          ring count (SSSR)
np_score       natural-product likeness, RDKit Contrib ``NP_Score``
pains          name of the first PAINS alert ("" if none): Baell's wehi_pains SMARTS matched on
               the molecule with explicit hydrogens, as MOSES does (RDKit's FilterCatalog PAINS
               rewrites some of those SMARTS and flags ~10 % fewer ChEMBL molecules)
brenk          name of the first Brenk alert ("" if none), RDKit ``FilterCatalog``
moses_filter   True if the molecule passes the MOSES filters (``mol_passes_filters``: MCF and
               PAINS alerts, atoms C N S O F Cl Br H only, no formal charge, no ring of 8+)
=============  ==============================================================================

Invalid rows stay in the table with ``valid=False`` and missing scores; a molecule over
:data:`molgen.chem.LIMITS` (heavy atoms, rings, SMILES length) is such a row, never scored, so one
giant molecule cannot crash or stall a job. A table's own columns are never replaced: where it
already has a column named like a score (a measured ``logp``, an assay's ``valid``), that column
stays as it is and in its place, and the computed one is written as ``logp_rdkit`` (``_rdkit_2``,
... if that is taken); ``out.attrs["renamed"]`` maps computed name -> written name. A column that
holds exactly the values molgen computes (its own, from an earlier run) is replaced instead
(:func:`molgen.io.computed_names`). PAINS, MCF and QED's alerts
(~620 SMARTS) are screened with RDKit pattern fingerprints first (a query whose fingerprint bits are not all set in
the molecule's cannot match), about ten times cheaper than matching them all; the screen never changes a
result, and ``tests/test_score.py`` checks that against plain matching.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import pickle
from collections.abc import Iterable, Sequence
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from rdkit import Chem, DataStructs, RDConfig
from rdkit.Chem import QED, Crippen, MolSurf, rdFingerprintGenerator
from rdkit.Chem import FilterCatalog as FC
from rdkit.Chem import rdMolDescriptors as rdmd

from molgen import callable_module
from molgen.chem import quiet, to_mol, to_smiles
from molgen.datasets import data_file
from molgen.errors import InputError, MissingDependencyError
from molgen.io import computed_names
from molgen.parallel import parallel_map, progress_bar  # noqa: F401  (re-exported: molgen.score.parallel_map)

__all__ = ["score", "COLUMNS", "AlertSet", "MolScores", "np_likeness", "parallel_map", "progress_bar"]

COLUMNS = ("qed", "sa", "logp", "mw", "tpsa", "hbd", "hba", "rotb", "rings", "np_score",
           "pains", "brenk", "moses_filter")
_TEXT_COLUMNS = ("pains", "brenk")
# MOSES's per-atom checks (no charge; only C N S O F Cl Br H) as queries: one C++ call each
_CHARGED = Chem.MolFromSmarts("[!+0]")
_NOT_MOSES_ATOM = Chem.MolFromSmarts("[!#6&!#7&!#16&!#8&!#9&!#17&!#35&!#1]")


# --- data files -----------------------------------------------------------------------------------


class _NoGlobals(pickle.Unpickler):
    """Unpickler for RDKit's Contrib score tables, which hold only lists, dicts and numbers.

    Refusing every global means a tampered file cannot run code when it is read.
    """

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _load_contrib(subdir: str, module: str, table: str):
    """Import an RDKit Contrib scorer and read its table (without running code from the file)."""
    path = Path(RDConfig.RDContribDir) / subdir
    if not (path / f"{module}.py").exists():
        raise MissingDependencyError(
            f"RDKit Contrib file {path / module}.py not found; reinstall RDKit: pip install --force-reinstall rdkit"
        )
    spec = importlib.util.spec_from_file_location(f"molgen._contrib_{module}", path / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with gzip.open(path / table, "rb") as fh:
        data = _NoGlobals(fh).load()
    return mod, data


@lru_cache(maxsize=1)
def _sascorer():
    mod, data = _load_contrib("SA_Score", "sascorer", "fpscores.pkl.gz")
    # the same table readFragmentScores() builds: fragment id -> score
    mod._fscores = {frag: float(row[0]) for row in data for frag in row[1:]}
    return mod


@lru_cache(maxsize=1)
def _np_model() -> dict:
    return _load_contrib("NP_Score", "npscorer", "publicnp.model.gz")[1]


_NP_FP = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


def np_likeness(mol: Chem.Mol) -> float:
    """NP-likeness, equal to Contrib ``npscorer.scoreMol`` without its per-call set-up.

    (``scoreMol`` builds a fingerprint generator and a namedtuple class on every call, which
    costs more than the score itself.)
    """
    model = _np_model()
    score = sum(model.get(bit, 0.0) for bit in _NP_FP.GetSparseCountFingerprint(mol).GetNonzeroElements())
    score /= float(mol.GetNumAtoms())
    if score > 4:  # damp exotic molecules, as npscorer does
        return 4.0 + math.log10(score - 4.0 + 1.0)
    if score < -4:
        return -4.0 - math.log10(-4.0 - score + 1.0)
    return score


# --- structural alerts ----------------------------------------------------------------------------


def _screen_bits(mol: Chem.Mol) -> np.ndarray:
    """RDKit pattern fingerprint as 32 uint64 words; query bits ⊆ molecule bits if it can match."""
    fp = Chem.PatternFingerprint(mol, fpSize=2048)
    return np.frombuffer(DataStructs.BitVectToBinaryText(fp), dtype=np.uint64)


def _without_h(query: Chem.Mol) -> Chem.Mol:
    """The query minus its explicit-hydrogen atoms, so it can be screened against a hydrogen-free molecule."""
    rw = Chem.RWMol(query)
    for idx in sorted((a.GetIdx() for a in query.GetAtoms() if a.GetAtomicNum() == 1), reverse=True):
        rw.RemoveAtom(idx)
    return rw.GetMol()


class AlertSet:
    """SMARTS alerts matched through a pattern-fingerprint screen.

    ``strip_h=True`` is for alerts matched on a molecule with explicit hydrogens while the screen
    is computed on the hydrogen-free molecule (what MOSES's filters need).
    """

    def __init__(self, names: Sequence[str], queries: Sequence[Chem.Mol], strip_h: bool = False):
        self.names = list(names)
        self.queries = list(queries)
        self.screen = np.stack([_screen_bits(_without_h(q) if strip_h else q) for q in self.queries])

    @classmethod
    def from_smarts(cls, names: Sequence[str], smarts: Sequence[str], strip_h: bool = False) -> AlertSet:
        queries = [Chem.MolFromSmarts(s) for s in smarts]
        bad = [s for s, q in zip(smarts, queries, strict=True) if q is None]
        if bad:
            raise ValueError(f"unparsable alert SMARTS: {bad[:3]}")
        return cls(names, queries, strip_h)

    def first(self, mol: Chem.Mol, bits: np.ndarray) -> str:
        """Name of the first alert (in catalog order) that ``mol`` matches, "" if none."""
        return next((self.names[i] for i in self.candidates(bits) if mol.HasSubstructMatch(self.queries[i])), "")

    def candidates(self, bits: np.ndarray) -> np.ndarray:
        """Indices of the alerts that the screen cannot rule out for a molecule with ``bits``."""
        return np.flatnonzero(~(self.screen & ~bits).any(axis=1))

    def matches(self, mol: Chem.Mol, bits: np.ndarray) -> list[int]:
        return [i for i in self.candidates(bits) if mol.HasSubstructMatch(self.queries[i])]


@lru_cache(maxsize=1)
def _alerts() -> dict[str, AlertSet]:
    # MOSES's filter SMARTS (MCF, Baell's wehi PAINS), copied from the molsets wheel into molgen/_data
    mcf = pd.read_csv(data_file("moses_mcf.csv"))
    pains = pd.read_csv(data_file("moses_wehi_pains.csv"), names=["smarts", "names"])
    # wehi names look like "<regId=ene_rhod_A(235)>"; keep the id
    pains_names = pains["names"].str.strip().str.removeprefix("<regId=").str.removesuffix(">")
    alerts = {
        "mcf": AlertSet.from_smarts(mcf["names"], mcf["smarts"].str.strip(), strip_h=True),
        "pains": AlertSet.from_smarts(pains_names, pains["smarts"].str.strip(), strip_h=True),
        "qed": AlertSet.from_smarts([str(i) for i in range(len(QED.StructuralAlertSmarts))],
                                    QED.StructuralAlertSmarts),
    }
    return alerts


@lru_cache(maxsize=1)
def _brenk_catalog() -> FC.FilterCatalog:
    params = FC.FilterCatalogParams()
    params.AddCatalog(FC.FilterCatalogParams.FilterCatalogs.BRENK)
    return FC.FilterCatalog(params)


# --- one molecule ---------------------------------------------------------------------------------


class MolScores:
    """Lazily computed scores of one parsed molecule; shared pieces (logP, screen) are computed once."""

    def __init__(self, mol: Chem.Mol):
        self.mol = mol

    @cached_property
    def noh(self) -> Chem.Mol:  # QED works on the hydrogen-suppressed graph
        mol = self.mol
        # RemoveHs copies the molecule even when there is nothing to remove
        return mol if mol.GetNumHeavyAtoms() == mol.GetNumAtoms() else Chem.RemoveHs(mol)

    @cached_property
    def hmol(self) -> Chem.Mol:  # MOSES matches its filters with explicit hydrogens
        return Chem.AddHs(self.mol)

    @cached_property
    def bits(self) -> np.ndarray:
        return _screen_bits(self.noh)

    @cached_property
    def logp(self) -> float:
        return Crippen.MolLogP(self.noh)

    @cached_property
    def mw(self) -> float:
        return rdmd._CalcMolWt(self.noh)

    @cached_property
    def tpsa(self) -> float:
        return MolSurf.TPSA(self.noh)

    @cached_property
    def rotb(self) -> int:
        return rdmd.CalcNumRotatableBonds(self.noh, rdmd.NumRotatableBondsOptions.Strict)

    @cached_property
    def qed(self) -> float:
        noh = self.noh
        props = QED.QEDproperties(
            MW=self.mw,
            ALOGP=self.logp,
            HBA=sum(len(noh.GetSubstructMatches(p)) for p in QED.Acceptors if noh.HasSubstructMatch(p)),
            HBD=rdmd.CalcNumHBD(noh),
            PSA=self.tpsa,
            ROTB=self.rotb,
            AROM=len(Chem.GetSSSR(Chem.DeleteSubstructs(Chem.Mol(noh), QED.AliphaticRings))),
            ALERTS=len(_alerts()["qed"].matches(noh, self.bits)),
        )
        return QED.qed(noh, qedProperties=props)

    @cached_property
    def sa(self) -> float:
        return _sascorer().calculateScore(self.mol)

    @cached_property
    def np_score(self) -> float:
        return np_likeness(self.mol)

    @cached_property
    def pains(self) -> str:
        return _alerts()["pains"].first(self.hmol, self.bits)

    @cached_property
    def brenk(self) -> str:
        # not screened: Brenk's alerts are generic enough that half of them pass any screen
        match = _brenk_catalog().GetFirstMatch(self.mol)
        return match.GetDescription() if match is not None else ""

    @cached_property
    def moses_filter(self) -> bool:
        """MOSES ``mol_passes_filters``, check for check in its order (cheap ones first)."""
        mol = self.mol
        if any(len(ring) >= 8 for ring in mol.GetRingInfo().AtomRings()):
            return False
        if mol.HasSubstructMatch(_CHARGED) or mol.HasSubstructMatch(_NOT_MOSES_ATOM):
            return False
        if self.pains or _alerts()["mcf"].matches(self.hmol, self.bits):
            return False
        # MOSES also requires the non-isomeric SMILES to round-trip
        smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
        return bool(smiles) and to_mol(smiles) is not None

    def row(self, columns: Sequence[str]) -> tuple:
        out = []
        for c in columns:
            if c == "hbd":
                out.append(rdmd.CalcNumHBD(self.noh))
            elif c == "hba":
                out.append(rdmd.CalcNumHBA(self.noh))
            elif c == "rings":
                out.append(rdmd.CalcNumRings(self.noh))
            else:
                out.append(getattr(self, c))
        return tuple(out)


def score_row(ms: MolScores | None, columns: Sequence[str]) -> tuple | None:
    """``ms.row(columns)``, or ``None`` for no molecule or one a scorer fails on (the row stays unscored)."""
    if ms is None or ms.mol.GetNumAtoms() == 0:
        return None
    try:
        return ms.row(columns)
    except Exception:  # a scorer that fails on an odd molecule leaves that row unscored
        return None


def _score_chunk(args: tuple[list, tuple[str, ...]]) -> list[tuple | None]:
    smiles, columns = args
    _block = quiet()  # noqa: F841  (no RDKit log noise from workers)
    rows = []
    for s in smiles:
        mol = to_mol(s)
        rows.append(score_row(MolScores(mol) if mol is not None else None, columns))
    return rows


def score_frame(rows: Sequence[tuple | None], columns: Sequence[str]) -> pd.DataFrame:
    """Rows of :func:`score_row` as a typed table: ``valid`` (row not ``None``), then ``columns``
    (counts as ``Int64``, ``moses_filter`` as ``boolean``, alert names as text, missing where unscored)."""
    empty = tuple(None if c in _TEXT_COLUMNS else np.nan for c in columns)
    out = pd.DataFrame([r if r is not None else empty for r in rows], columns=list(columns))
    for c in columns:
        if c == "moses_filter":
            out[c] = out[c].astype("boolean")
        elif c in ("hbd", "hba", "rotb", "rings"):
            out[c] = out[c].astype("Int64")
        elif c in _TEXT_COLUMNS:
            out[c] = out[c].astype(object)
    out.insert(0, "valid", [r is not None for r in rows])
    return out


def check_properties(properties: Sequence[str] | None) -> tuple[str, ...]:
    """The score columns asked for (all of :data:`COLUMNS` for ``None``); an unknown one is an InputError."""
    columns = tuple(COLUMNS if properties is None else properties)
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise InputError(f"unknown properties {unknown}; choose from {list(COLUMNS)}")
    return columns


# --- many molecules -------------------------------------------------------------------------------


def _smiles_column(molecules) -> tuple[list, pd.DataFrame | None]:
    """The SMILES to score and, for a DataFrame input, the table to carry along."""
    if isinstance(molecules, pd.DataFrame):
        if "smiles" not in molecules.columns:
            raise InputError(
                f"the table has no 'smiles' column (columns found: {list(molecules.columns)}); "
                "rename the structure column to 'smiles'"
            )
        return molecules["smiles"].tolist(), molecules
    if isinstance(molecules, (str, Chem.Mol)):
        molecules = [molecules]
    if isinstance(molecules, pd.Series):
        molecules = molecules.tolist()
    if not isinstance(molecules, Iterable):
        raise InputError(f"score() takes a list of SMILES or a DataFrame with 'smiles', not {type(molecules).__name__}")
    return [to_smiles(m) if isinstance(m, Chem.Mol) else m for m in molecules], None


def score(molecules, properties: Sequence[str] | None = None, n_jobs: int = 1,
          progress: bool = False) -> pd.DataFrame:
    """Score molecules: one row per input, ``smiles`` and ``valid`` first, then the score columns.

    Args:
        molecules: SMILES strings (``Mol`` objects are converted), or a DataFrame with a ``smiles``
            column whose other columns are kept after the scores, unchanged (a computed column whose
            name the table already uses is written as ``<name>_rdkit``; see the module docstring).
        properties: subset of :data:`COLUMNS` to compute (default all); cheaper when small.
        n_jobs: worker processes; inputs of a few hundred molecules run in this process anyway.
        progress: show a progress bar.

    Returns:
        DataFrame in input order. Invalid SMILES (and junk such as NaN, and molecules over
        :data:`molgen.chem.LIMITS`) keep their row with ``valid=False`` and missing scores;
        ``pains``/``brenk`` hold an alert name or "". ``out.attrs["renamed"]``: computed columns
        written under another name (``{}`` when none).
    """
    columns = check_properties(properties)
    smiles, table = _smiles_column(molecules)
    rows = parallel_map(_score_chunk, smiles, n_jobs=n_jobs, progress=progress,
                        description="scoring", extra=columns)
    out = score_frame(rows, columns)
    renamed: dict[str, str] = {}
    if table is not None:
        out.index = table.index
        rest = table.drop(columns="smiles")
        names, own = computed_names(rest, out)
        renamed = {c: n for c, n in names.items() if c != n}
        out = pd.concat([out.rename(columns=names), rest.drop(columns=own)], axis=1)
    out.insert(0, "smiles", smiles)
    out.attrs = {"renamed": renamed}
    return out


callable_module(__name__)  # mg.score(...) calls score() though importing this module rebinds the name
