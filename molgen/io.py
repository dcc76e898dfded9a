"""Tables of molecules in and out: CSV, TSV, SMILES, SDF and Parquet <-> DataFrame, and DeepChem.

Every reader returns a DataFrame with ``smiles`` first, then the data columns, then ``valid``
(bool) and ``invalid_reason`` (a word from :func:`molgen.chem.parse_failure`, ``None`` when
valid). Rows are never dropped: a molecule that does not parse stays as a row with
``valid=False``, and ``df.attrs["invalid"]`` counts the rows per reason so that a report can say
how many were lost and why. Problems with the file itself (missing, empty, not a table, a
misspelled column) raise :class:`~molgen.errors.InputError` naming the file.

A file's own columns are never replaced: where it already has a ``valid`` or ``invalid_reason``
column of its own (an assay flag, say), that column stays and the reader's is written as
``valid_rdkit`` / ``invalid_reason_rdkit`` (:func:`computed_names`; ``df.attrs["renamed"]`` says
so, and :func:`valid_column` gives the name to filter on). A column holding exactly what the reader
computes (a file molgen wrote, such as generated molecules with ``smiles, valid, ...``) is molgen's
own and is replaced, so such files read back with plain ``valid`` / ``invalid_reason``.

SMILES strings are kept as written in the file (stripped of surrounding blanks); canonicalise
with :func:`molgen.chem.canonicalize` where sets are compared. SDF structures have no string of
their own, so their ``smiles`` is RDKit's canonical SMILES of the record.
"""

from __future__ import annotations

import difflib
import gzip
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rdkit import Chem

from molgen import chem
from molgen.errors import InputError, MissingDependencyError
from molgen.files import atomic_path

__all__ = [
    "FORMATS",
    "read_table",
    "write_table",
    "validity",
    "invalid_summary",
    "computed_names",
    "valid_column",
    "deepchem_arrays",
    "to_deepchem",
    "from_deepchem",
]

FORMATS = (".csv", ".tsv", ".smi", ".sdf", ".parquet")
# Column names recognised as the SMILES column when none is given (compared lower-case).
SMILES_NAMES = ("smiles", "canonical_smiles", "isomeric_smiles", "smi", "smiles_string", "mol_smiles")
# Columns a reader computes itself; a file's own columns of these names are kept (computed_names).
DERIVED = ("valid", "invalid_reason")
# what a computed column is called where the table already has a column of its own by that name
RENAME_SUFFIX = "_rdkit"
_SNIFF_BYTES = 8192


# --- reading ------------------------------------------------------------------------------------


def read_table(
    path: str | os.PathLike,
    smiles_col: str | None = None,
    targets: Sequence[str] | None = None,
    nrows: int | None = None,
) -> pd.DataFrame:
    """Read molecules from a .csv/.tsv/.smi/.sdf/.parquet file (``.gz`` allowed for text formats).

    Args:
        path: the file; its suffix picks the format.
        smiles_col: the column holding SMILES; found case-insensitively among the usual names
            (``smiles``, ``SMILES``, ``canonical_smiles``, ...) when ``None``. Not used for SDF,
            where the structure is the molecule.
        targets: columns to keep after ``smiles`` (e.g. measured properties); ``None`` keeps all.
        nrows: read only the first ``nrows`` rows (records for SDF).

    Returns:
        ``smiles``, the target (or all other) columns, ``valid``, ``invalid_reason``; one row per
        input row. ``df.attrs["invalid"]`` maps reason -> count, ``df.attrs["file"]`` the path,
        ``df.attrs["renamed"]`` the computed columns written under another name because the file
        has its own ``valid``/``invalid_reason`` (e.g. ``{"valid": "valid_rdkit"}``; see the
        module docstring: a file's column equal to the computed one is replaced, not renamed).

    Raises:
        InputError: the file is missing, empty, of an unknown format, not readable as that
            format, or lacks the SMILES column or a target column (the message lists the
            columns found).
    """
    path = Path(path)
    fmt = _check_file(path)
    if fmt == ".sdf":
        _check_text(path)
        if smiles_col is not None:
            raise InputError(
                f"{path.name}: smiles_col does not apply to SDF files (the structures are the "
                "molecules); leave it out"
            )
        raw = _read_sdf(path, nrows)
        reasons = raw.pop("_reason")
        smiles_col = "smiles"
    else:
        raw = _read_text_or_parquet(path, fmt, nrows)
        smiles_col = _find_smiles_column(raw, smiles_col, path)
        reasons = None
    if len(raw) == 0:
        raise InputError(f"{path.name} has no rows (only a header); nothing to read")
    keep = (
        [c for c in raw.columns if c != smiles_col] if targets is None else _find_columns(raw, targets, path)
    )
    out = pd.DataFrame({"smiles": _clean_strings(raw[smiles_col])}, index=raw.index)
    for col in keep:
        out[col] = raw[col]
    if reasons is not None:  # the SDF reader already knows why a record failed (broken molblock ...)
        reasons = [r if isinstance(r, str) else None for r in reasons]
        valid = np.array([r is None for r in reasons], dtype=bool)
    else:
        valid, reasons = validity(out["smiles"])
    # object dtype keeps None (not NaN) for valid rows, as the module docstring promises
    computed = pd.DataFrame({"valid": valid, "invalid_reason": pd.Series(reasons, index=out.index, dtype=object)},
                            index=out.index)
    names, own = computed_names(out.drop(columns="smiles"), computed)
    out = pd.concat([out.drop(columns=own), computed.rename(columns=names)], axis=1).reset_index(drop=True)
    out.attrs["file"] = str(path)
    out.attrs["invalid"] = _count_reasons(computed["invalid_reason"])
    out.attrs["renamed"] = {c: n for c, n in names.items() if c != n}
    return out


def computed_names(table: pd.DataFrame, computed: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    """Names under which molgen's computed columns join ``table`` without replacing any of its columns.

    A computed column ``c`` keeps its name where ``table`` has no ``c``. Where ``table``'s ``c``
    holds the same values (molgen's own column, e.g. from a file molgen wrote, compared leniently:
    ``True``/``"True"``, ``3``/``3.0``, ``None``/``NaN``/``""``), that column is molgen's to replace.
    Otherwise the table's column stays as it is and the computed one is written as ``c_rdkit``
    (``c_rdkit_2``, ... where that is taken too, again unless the taken one holds the same values).

    Returns:
        ``(names, own)``: computed name -> name to write it under, and the columns of ``table`` that
        are molgen's own (drop them before adding the computed ones).
    """
    taken = set(table.columns)
    names: dict[str, str] = {}
    own: list[str] = []
    for col in computed.columns:
        candidates = [col, f"{col}{RENAME_SUFFIX}"]
        candidates += [f"{col}{RENAME_SUFFIX}_{i}" for i in range(2, len(taken) + 3)]
        for name in candidates:
            if name in names.values():
                continue
            if name not in taken:
                names[col] = name
                break
            if name not in own and _same_values(table[name], computed[col]):
                names[col] = name
                own.append(name)
                break
    return names, own


def valid_column(df: pd.DataFrame) -> str:
    """The name of molgen's validity column in a table from :func:`read_table` or ``score``.

    ``valid`` unless the table had its own ``valid`` column (then ``valid_rdkit``, as
    ``df.attrs["renamed"]`` records); filter rows with ``df[df[valid_column(df)]]``.
    """
    return df.attrs.get("renamed", {}).get("valid", "valid")


def _missing(x: object) -> bool:
    if x is None or (isinstance(x, str) and not x.strip()):
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def _same_values(a: pd.Series, b: pd.Series) -> bool:
    """Whether two columns hold the same values, as a file stores them (see :func:`computed_names`)."""
    if len(a) != len(b):
        return False
    if isinstance(a, pd.DataFrame):  # a table with two columns of one name
        return False
    if a.dtype != object and b.dtype != object:  # numbers and booleans: one vectorised comparison
        try:
            return bool(np.allclose(a.to_numpy(float, na_value=np.nan), b.to_numpy(float, na_value=np.nan),
                                    rtol=1e-9, atol=1e-12, equal_nan=True))
        except (TypeError, ValueError):
            pass
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        if _missing(x) or _missing(y):
            if _missing(x) and _missing(y):
                continue
            return False
        if isinstance(x, str) or isinstance(y, str):
            if str(x).strip().lower() != str(y).strip().lower():
                return False
        elif isinstance(x, (bool, int, float, np.number, np.bool_)) and isinstance(y, (bool, int, float, np.number, np.bool_)):
            if not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif x != y:
            return False
    return True


def validity(smiles: Sequence[object]) -> tuple[np.ndarray, list[str | None]]:
    """``(valid, reason)`` for each SMILES: a bool array and a list of failure words (None if valid).

    Parses each string once; only the failures are examined again to say why.
    """
    reasons = [None if chem.to_mol(s) is not None else chem.parse_failure(s) or "sanitize" for s in smiles]
    valid = np.array([r is None for r in reasons], dtype=bool)
    return valid, reasons


def _check_file(path: Path) -> str:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a table file ({', '.join(FORMATS)})")
    suffixes = [s.lower() for s in path.suffixes]
    fmt = suffixes[-2] if len(suffixes) >= 2 and suffixes[-1] == ".gz" else (suffixes[-1] if suffixes else "")
    if fmt == ".txt":
        fmt = ".smi"  # plain lists of SMILES are often saved as .txt
    if fmt not in FORMATS:
        raise InputError(
            f"{path.name}: unknown format {fmt or '(no suffix)'}; use one of {', '.join(FORMATS)}"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes)")
    return fmt


def _open_text(path: Path, encoding: str = "utf-8"):
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _check_text(path: Path) -> None:
    """Refuse binary junk early: pandas and RDKit would give a confusing error or garbage rows."""
    try:
        with _open_text(path, "latin-1") as fh:  # latin-1 decodes any byte: this only sniffs
            head = fh.read(_SNIFF_BYTES)
    except (OSError, EOFError) as err:  # e.g. a .gz that is not gzip
        raise InputError(f"{path.name} cannot be read ({err}); is it the right file?") from None
    control = sum(ch < " " and ch not in "\t\r\n" for ch in head)
    if "\x00" in head or control > 0.01 * len(head):
        raise InputError(f"{path.name} contains binary data, not a text table; is it the right file?")
    if not head.strip():
        raise InputError(f"{path.name} is empty (only blank lines)")


def _read_text_or_parquet(path: Path, fmt: str, nrows: int | None) -> pd.DataFrame:
    try:
        if fmt == ".parquet":
            df = pd.read_parquet(path)
            return df.head(nrows) if nrows is not None else df
        _check_text(path)
        try:
            return _read_delimited(path, fmt, nrows, "utf-8")
        except UnicodeDecodeError:  # a legacy (e.g. Excel) export; latin-1 decodes any byte
            return _read_delimited(path, fmt, nrows, "latin-1")
    except InputError:
        raise
    except (UnicodeDecodeError, ValueError, OSError, EOFError, pd.errors.ParserError) as err:
        # pyarrow's ArrowInvalid is a ValueError; pandas' ParserError too
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path.name}: cannot read it as {fmt[1:].upper()} ({msg})") from None


def _read_delimited(path: Path, fmt: str, nrows: int | None, encoding: str) -> pd.DataFrame:
    if fmt == ".smi":
        return _read_smi(path, nrows, encoding)
    sep = "\t" if fmt == ".tsv" else ","
    return pd.read_csv(path, sep=sep, nrows=nrows, skipinitialspace=True, encoding=encoding)


def _read_smi(path: Path, nrows: int | None, encoding: str) -> pd.DataFrame:
    """A SMILES file: ``SMILES [name]`` per line, or a delimited table whose header starts with smiles."""
    with _open_text(path, encoding) as fh:
        first = next((line for line in fh if line.strip()), "")
    first_token = first.split()[0].lower() if first.split() else ""
    if first_token in SMILES_NAMES:  # a header line: a table (as write_table and RDKit's SmilesWriter make)
        sep = "\t" if "\t" in first else r"\s+"
        return pd.read_csv(
            path, sep=sep, nrows=nrows, encoding=encoding, engine="python" if sep != "\t" else "c"
        )
    rows = []
    with _open_text(path, encoding) as fh:
        for line in fh:
            if nrows is not None and len(rows) >= nrows:
                break
            parts = line.strip().split(maxsplit=1)
            if parts:  # blank lines are spacing, not rows
                rows.append((parts[0], parts[1] if len(parts) > 1 else None))
    df = pd.DataFrame(rows, columns=["smiles", "name"])
    return df if df["name"].notna().any() else df[["smiles"]]


_PROP_LINE = re.compile(r"^>\s*<([^>]+)>")


def _read_sdf(path: Path, nrows: int | None) -> pd.DataFrame:
    """One row per SDF record: canonical SMILES, title as ``name``, data fields as columns.

    A record RDKit cannot read is kept (SMILES None, or the text of its ``smiles`` field) with
    its data fields recovered from the raw text, so that its targets are not lost.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    rows = []
    with opener(path, "rb") as fh, chem.quiet():
        supplier = Chem.ForwardSDMolSupplier(fh, sanitize=False, removeHs=False)
        for raw_mol in supplier:
            if nrows is not None and len(rows) >= nrows:
                break
            rows.append(_sdf_row(raw_mol))
    broken = [i for i, r in enumerate(rows) if r["_reason"] == "molblock"]
    if len(broken) == len(rows):
        raise InputError(
            f"{path.name}: none of its {len(rows)} records is a readable molblock; is it an SDF file?"
        )
    if broken:
        _recover_sdf_fields(path, rows, broken)
    df = pd.DataFrame(rows)
    front = ["smiles", "name"] if df["name"].notna().any() else ["smiles"]
    df = df[front + [c for c in df.columns if c not in ("smiles", "name")]]
    for col in df.columns[len(front) :]:
        if col != "_reason":
            df[col] = _numeric_if_possible(df[col])
    return df


def _sdf_row(raw_mol: Chem.Mol | None) -> dict:
    if raw_mol is None:
        return {"smiles": None, "name": None, "_reason": "molblock"}
    fields = {k: raw_mol.GetProp(k) for k in raw_mol.GetPropNames()}
    name = raw_mol.GetProp("_Name") if raw_mol.HasProp("_Name") else None
    # a stored SMILES field duplicates the structure; keep it only to show what a broken record held
    stored = next((fields.pop(k) for k in list(fields) if k.lower() in SMILES_NAMES), None)
    row = {"smiles": None, "name": name or None, **{_field_name(k): v for k, v in fields.items()}}
    if raw_mol.GetNumAtoms() == 0:
        row["smiles"] = stored
        row["_reason"] = (chem.parse_failure(stored) or "empty") if stored else "empty"
        return row
    if chem.too_large(raw_mol):  # before sanitising or writing a SMILES of it (see chem.LIMITS)
        row["smiles"] = stored
        row["_reason"] = "too_large"
        return row
    mol = Chem.Mol(raw_mol)
    try:
        Chem.SanitizeMol(mol)
        mol = Chem.RemoveHs(mol)
        row["smiles"] = Chem.MolToSmiles(mol)
        row["_reason"] = None
    except Exception:
        row["smiles"] = stored
        row["_reason"] = _chemistry_problem(raw_mol)
    return row


def _field_name(key: str) -> str:
    return f"sdf_{key}" if key in ("smiles", "name", "_reason") else key


def _chemistry_problem(mol: Chem.Mol) -> str:
    problems = Chem.DetectChemistryProblems(mol)
    kind = problems[0].GetType() if problems else ""
    if kind == "AtomValenceException":
        return "valence"
    if kind in ("AtomKekulizeException", "KekulizeException"):
        return "aromaticity"
    return "sanitize"


def _recover_sdf_fields(path: Path, rows: list[dict], broken: list[int]) -> None:
    """Fill title and data fields of unreadable records from the raw text of the file."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        records = fh.read().split("$$$$")
    for i in broken:
        if i >= len(records):
            continue
        lines = records[i].strip("\r\n").splitlines()
        rows[i]["name"] = lines[0].strip() or None if lines else None
        for j, line in enumerate(lines):
            match = _PROP_LINE.match(line)
            if match and j + 1 < len(lines):
                key = match.group(1).strip()
                if key.lower() in SMILES_NAMES:
                    rows[i]["smiles"] = lines[j + 1].strip() or None
                else:
                    rows[i][_field_name(key)] = lines[j + 1].strip()


def _numeric_if_possible(col: pd.Series) -> pd.Series:
    try:
        return pd.to_numeric(col)
    except (ValueError, TypeError):
        return col


def _clean_strings(col: pd.Series) -> list[object]:
    """Strip strings; a number where a SMILES belongs becomes text (so it counts as ``syntax``)."""
    return [s.strip() if isinstance(s, str) else None if pd.isna(s) else str(s) for s in col]


def _count_reasons(reasons: pd.Series) -> dict[str, int]:
    return dict(Counter(r for r in reasons if isinstance(r, str)).most_common())


def invalid_summary(df: pd.DataFrame) -> str:
    """One line for a report or the CLI: ``"3 of 100 rows invalid (syntax 2, valence 1)"``.

    Counts molgen's ``invalid_reason`` column (``invalid_reason_rdkit`` where the file had its own).
    """
    # counted from the column, not df.attrs["invalid"]: attrs survive filtering and would then be stale
    column = df.attrs.get("renamed", {}).get("invalid_reason", "invalid_reason")
    counts = _count_reasons(df[column]) if column in df else {}
    n_bad = sum(counts.values())
    if not n_bad:
        return f"all {len(df)} rows valid"
    detail = ", ".join(f"{reason} {n}" for reason, n in counts.items())
    return f"{n_bad} of {len(df)} rows invalid ({detail})"


# --- columns ------------------------------------------------------------------------------------


def _find_smiles_column(df: pd.DataFrame, smiles_col: str | None, path: Path) -> str:
    if smiles_col is not None:
        return _find_columns(df, [smiles_col], path)[0]
    by_lower = {str(c).lower(): c for c in df.columns}
    for name in SMILES_NAMES:
        if name in by_lower:
            return by_lower[name]
    endings = [c for c in df.columns if str(c).lower().endswith("smiles")]
    if len(endings) == 1:
        return endings[0]
    hint = ""
    if any(chem.to_mol(str(c)) is not None for c in df.columns):
        hint = " The header looks like a molecule: if the file has no header, save it as .smi."
    raise InputError(
        f"{path.name}: no SMILES column found; columns found: {_list(df.columns)}. "
        f"Name it with smiles_col=... (CLI: --smiles-col).{hint}"
    )


def _find_columns(df: pd.DataFrame, wanted: Sequence[str], path: Path) -> list[str]:
    """Resolve column names exactly, else case-insensitively; a clear error for the rest."""
    if isinstance(wanted, str):
        wanted = [wanted]
    by_lower: dict[str, list] = {}
    for c in df.columns:
        by_lower.setdefault(str(c).lower(), []).append(c)
    found, missing = [], []
    for name in wanted:
        if name in df.columns:
            found.append(name)
        elif len(by_lower.get(str(name).lower(), [])) == 1:
            found.append(by_lower[str(name).lower()][0])
        else:
            missing.append(name)
    if missing:
        close = {m: difflib.get_close_matches(str(m), [str(c) for c in df.columns], n=1) for m in missing}
        hints = "; ".join(f"did you mean {c[0]!r} for {m!r}?" for m, c in close.items() if c)
        raise InputError(
            f"{path.name}: column{'s' if len(missing) > 1 else ''} {_list(missing)} not found; "
            f"columns found: {_list(df.columns)}" + (f". {hints}" if hints else "")
        )
    return found


def _list(names) -> str:
    return ", ".join(repr(str(n)) for n in names)


# --- writing ------------------------------------------------------------------------------------


def table_format(path: str | os.PathLike) -> tuple[str, bool]:
    """``(format, gzipped)`` of a table path from its suffixes: ``out.csv.gz`` -> ``(".csv", True)``.

    Raises:
        InputError: a suffix molgen cannot write (the message lists the ones it can).
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    gz = len(suffixes) >= 2 and suffixes[-1] == ".gz"
    fmt = suffixes[-2] if gz else (suffixes[-1] if suffixes else "")
    if fmt not in FORMATS or (gz and fmt == ".parquet"):
        raise InputError(
            f"cannot write {path.name}: unknown format {''.join(path.suffixes[-2:]) or '(no suffix)'}; use one of "
            f"{', '.join(FORMATS)} (.gz allowed for the text formats)"
        )
    return fmt, gz


def write_table(df: pd.DataFrame, path: str | os.PathLike, molblocks: Sequence[str | None] | None = None) -> Path:
    """Write a molecule table as .csv/.tsv/.smi/.sdf/.parquet (``.gz`` allowed for text formats).

    The same columns go out whatever the format, ``smiles`` first: .smi is written as a
    tab-separated table with a ``smiles`` header (RDKit's SmilesMolSupplier reads it with
    ``delimiter='\\t'``); in SDF a ``name`` column is the title line and every other column a
    data field, and a row whose SMILES does not parse is written as an empty record holding its
    text in a ``smiles`` field, so that :func:`read_table` gives it back as an invalid row
    rather than losing it. ``molblocks`` (SDF only, one per row, e.g. :func:`sdf_molblocks` of the
    input file) are written as they are instead of a 2-D depiction of the SMILES, so 3-D
    coordinates and explicit hydrogens survive a read-score-write round trip.

    The file is written to a temporary name and renamed into place when complete: an error or
    an interruption leaves an existing file as it was.

    Raises:
        InputError: no ``smiles`` column, or an unknown suffix.
    """
    path = Path(path)
    if "smiles" not in df.columns:
        raise InputError(
            f"cannot write {path.name}: the table has no 'smiles' column (columns: {_list(df.columns)})"
        )
    fmt, _ = table_format(path)
    if molblocks is not None and (fmt != ".sdf" or len(molblocks) != len(df)):
        raise InputError(f"molblocks are for SDF output with one per row ({len(molblocks)} for {len(df)} rows)")
    df = df[["smiles"] + [c for c in df.columns if c != "smiles"]]
    with atomic_path(path) as tmp:
        if fmt == ".csv":
            df.to_csv(tmp, index=False)
        elif fmt in (".tsv", ".smi"):
            df.to_csv(tmp, sep="\t", index=False)
        elif fmt == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            _write_sdf(df, tmp, molblocks)
    return path


def _write_sdf(df: pd.DataFrame, path: Path, molblocks: Sequence[str | None] | None = None) -> None:
    from rdkit.Chem import rdDepictor

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    fields = [c for c in df.columns if c not in ("smiles", "name")]
    names = df["name"] if "name" in df.columns else pd.Series([None] * len(df), index=df.index)
    blocks = [None] * len(df) if molblocks is None else list(molblocks)
    with opener(path, "wt", encoding="utf-8") as fh, chem.quiet():
        writer = Chem.SDWriter(fh)
        rows = df[["smiles", *fields]].itertuples(index=False, name=None)
        for name, row, block in zip(names, rows, blocks, strict=True):
            smiles, values = row[0], row[1:]
            props = {str(k): str(v) for k, v in zip(fields, values, strict=True)
                     if v is not None and not (isinstance(v, float) and np.isnan(v))}
            if block is not None:  # the input's own molblock, coordinates and hydrogens as they were
                writer.flush()
                fh.write(block.rstrip("\n") + "\n")
                fh.write("".join(f">  <{k}>\n{v}\n\n" for k, v in props.items()) + "$$$$\n")
                continue
            mol = chem.to_mol(smiles)
            if mol is None:
                mol = Chem.Mol()
                mol.SetProp("smiles", "" if not isinstance(smiles, str) else smiles)
            else:
                mol = Chem.Mol(mol)
                rdDepictor.Compute2DCoords(mol)
            if isinstance(name, str):  # the record's title line, which read_table gives back as name
                mol.SetProp("_Name", name)
            for key, value in props.items():
                mol.SetProp(key, value)
            writer.write(mol)
        writer.close()


def sdf_molblocks(path: str | os.PathLike) -> list[str]:
    """The molblock of each record of an SDF file as text (title to ``M  END``), in file order.

    One per record that :func:`read_table` reads, so they line up with its rows; used to write a
    scored SDF with the input's own coordinates and hydrogens.
    """
    path = Path(path)
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        records = re.split(r"^\$\$\$\$[^\n]*\n?", fh.read(), flags=re.M)
    if records and not records[-1].strip():
        records.pop()  # the text after the last $$$$
    out = []
    for rec in records:
        end = re.search(r"^M  END[^\n]*$", rec, flags=re.M)
        out.append(rec[: end.end()] if end else rec.rstrip("\n"))
    return out


# --- DeepChem -----------------------------------------------------------------------------------


def _deepchem():
    try:
        import deepchem
    except ImportError:
        raise MissingDependencyError(
            "DeepChem is not installed; install it with: pip install 'molgen[deepchem]'"
        ) from None
    return deepchem


def deepchem_arrays(
    df: pd.DataFrame, targets: Sequence[str], X: str | np.ndarray = "morgan", drop_invalid: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X, y, w, ids)`` as DeepChem's NumpyDataset takes them (its MolNet conventions).

    Missing targets become ``y=0`` with weight ``w=0``. ``ids`` are the SMILES.

    Args:
        df: a molecule table with ``smiles`` and the ``targets`` columns.
        targets: the task columns.
        X: ``"morgan"`` (ECFP4, 2048 bits, uint8), ``"smiles"`` (the strings, for a DeepChem
            featurizer to use later) or an array with one row per row of ``df``.
        drop_invalid: leave out rows whose SMILES does not parse (with a warning giving the
            count); by default such rows are an error, since their features would be zeros.

    Shapes:
        X: (N, 2048) for morgan, (N,) for smiles; y, w: (N, T); ids: (N,).
    """
    targets = list(targets)
    table = pd.DataFrame(df)
    missing = [t for t in ["smiles", *targets] if t not in table.columns]
    if missing:
        raise InputError(f"columns {_list(missing)} not in the table; columns found: {_list(table.columns)}")
    valid = table["valid"].to_numpy(bool) if "valid" in table.columns else validity(table["smiles"])[0]
    features = None if isinstance(X, str) else np.asarray(X)
    if features is not None and len(features) != len(table):
        raise InputError(f"X has {len(features)} rows but the table has {len(table)}")
    if not valid.all():
        if not drop_invalid:
            raise InputError(
                f"{int((~valid).sum())} of {len(table)} rows have invalid SMILES; filter them "
                "(df[df.valid]) or pass drop_invalid=True"
            )
        warnings.warn(f"to_deepchem: left out {int((~valid).sum())} rows with invalid SMILES", stacklevel=2)
        table, features = table[valid], None if features is None else features[valid]
    ids = table["smiles"].to_numpy(dtype=object)
    y = table[targets].to_numpy(dtype=np.float64).reshape(len(table), len(targets))
    w = (~np.isnan(y)).astype(np.float64)
    y = np.nan_to_num(y, nan=0.0)
    if features is None:
        if X == "morgan":
            features = chem.fps_to_numpy(chem.morgan_fps(ids))
        elif X == "smiles":
            features = ids.copy()
        else:
            raise InputError(f"X={X!r}: use 'morgan', 'smiles' or an array of features")
    return features, y, w, ids


def to_deepchem(
    df: pd.DataFrame, targets: Sequence[str], X: str | np.ndarray = "morgan", drop_invalid: bool = False
):
    """A DeepChem ``NumpyDataset`` (``tasks`` = ``targets``) from a molecule table.

    See :func:`deepchem_arrays` for ``X`` and ``drop_invalid``. Needs the ``deepchem`` extra.
    """
    dc = _deepchem()
    X, y, w, ids = deepchem_arrays(df, targets, X=X, drop_invalid=drop_invalid)
    try:
        return dc.data.NumpyDataset(X=X, y=y, w=w, ids=ids, n_tasks=len(list(targets)))
    except TypeError:  # DeepChem versions before n_tasks was a keyword
        return dc.data.NumpyDataset(X=X, y=y, w=w, ids=ids)


def from_deepchem(dataset, targets: Sequence[str] | None = None) -> pd.DataFrame:
    """A molecule table from a DeepChem dataset whose ``ids`` are SMILES (as MolNet's are).

    Target names come from ``targets``, else ``dataset.get_task_names()``/``tasks``, else
    ``task_0 ...``. A label with weight 0 is missing in DeepChem, so it becomes NaN here.
    Features (``X``) are not carried over: molgen computes its own from the SMILES.
    Does not import DeepChem (any object with ``ids`` and ``y`` will do).
    """
    ids = np.asarray(dataset.ids).reshape(-1)
    if len(ids) and not any(isinstance(i, str) for i in ids):
        raise InputError("the DeepChem dataset's ids are not SMILES strings; build it with ids=smiles")
    y = (
        np.asarray(dataset.y, dtype=np.float64).reshape(len(ids), -1)
        if dataset.y is not None
        else np.zeros((len(ids), 0))
    )
    w = getattr(dataset, "w", None)
    if w is not None and np.size(w) == y.size:
        y = np.where(np.asarray(w).reshape(y.shape) == 0, np.nan, y)
    names = list(targets) if targets is not None else _task_names(dataset, y.shape[1])
    if len(names) != y.shape[1]:
        raise InputError(f"{len(names)} target names given for {y.shape[1]} tasks in the dataset")
    df = pd.DataFrame({"smiles": _clean_strings(pd.Series(ids))})
    for j, name in enumerate(names):
        df[name] = y[:, j]
    df["valid"], reasons = validity(df["smiles"])
    df["invalid_reason"] = pd.Series(reasons, index=df.index, dtype=object)
    df.attrs["invalid"] = _count_reasons(df["invalid_reason"])
    return df


def _task_names(dataset, n: int) -> list[str]:
    getter = getattr(dataset, "get_task_names", None)
    names = list(getter()) if callable(getter) else list(getattr(dataset, "tasks", None) or [])
    return [str(t) for t in names] if len(names) == n else [f"task_{j}" for j in range(n)]
