"""Scoring components: small registered units that turn molecules into one raw number each.

A component is a pydantic model (``extra="forbid"``) holding its TOML fields, registered by its
``kind`` in :data:`COMPONENTS`. Two shapes:

- per molecule (``per_molecule = True``): ``value(ms)`` reads one :class:`molgen.score.MolScores`
  (so RDKit properties are computed once per molecule and shared by every component); the
  objective runs these over worker processes (:func:`molgen.parallel.parallel_map`);
- batch (``per_molecule = False``): ``values(smiles)`` takes canonical SMILES of valid molecules
  and returns ``(values, errors)``: an oracle that fails (a Python callable that raises or returns
  the wrong length, an external command that fails, hangs or prints garbage) leaves NaN for its
  batch and says why in ``errors``; it never raises, so a long run is never lost to one bad batch.

``setup(base_dir)`` compiles SMARTS, reads reference molecules, imports the callable, loads the
property model, finds the command, raising ``ValueError("field: what is wrong")`` so that a bad
objective is refused before any sampling. Relative paths are relative to ``base_dir`` (the TOML
file's folder).

Kinds: the RDKit properties of :mod:`molgen.score` (``qed sa logp mw tpsa hbd hba rotb rings
np_score``), counts (``heavy_atoms aromatic_rings max_ring_size smarts_count``), ``similarity``,
``required_substructure``, ``forbidden_substructure``, ``alerts``, ``property_model``, ``python``,
``external``. Add one with ``@register`` on a :class:`Component` subclass.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from rdkit import Chem, DataStructs
from rdkit.Chem import rdMolDescriptors as rdmd

from molgen.chem import morgan_fp, quiet
from molgen.guide.transforms import Transform, parse_transform
from molgen.parallel import parallel_map
from molgen.score import MolScores

__all__ = ["Component", "COMPONENTS", "register", "PROPERTIES", "load_callable", "run_external"]

PROPERTIES = ("qed", "sa", "logp", "mw", "tpsa", "hbd", "hba", "rotb", "rings", "np_score")


class Component(BaseModel):
    """Fields every component shares; subclasses add their own and ``value`` or ``values``."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str | None = Field(None, min_length=1, description="column name in the results (default: the kind)")
    weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="weight in the aggregate; 0 = report only")
    transform: Transform | None = Field(None, description="raw value -> desirability (see molgen.guide.transforms)")

    per_molecule: ClassVar[bool] = True
    # the transform used when the TOML gives none; None means the TOML must give one, because the
    # raw value is not a desirability (logP, a docking score ...)
    default_transform: ClassVar[dict | None] = None

    @field_validator("transform", mode="before")
    @classmethod
    def _parse_transform(cls, value):
        return None if value is None else parse_transform(value)

    @property
    def label(self) -> str:
        return self.name or self.kind

    def default(self) -> dict | None:
        """The transform used when the TOML gives none (``None``: the TOML must give one)."""
        return self.default_transform

    def setup(self, base_dir: Path) -> None:
        """Prepare what the component needs (raise ``ValueError("field: ...")`` if it cannot)."""

    def value(self, ms: MolScores) -> float:
        raise NotImplementedError

    def values(self, smiles: list[str], n_jobs: int = 1) -> tuple[np.ndarray, list[str]]:
        raise NotImplementedError


COMPONENTS: dict[str, type[Component]] = {}


def register(cls: type[Component]) -> type[Component]:
    """Class decorator: register a component under each value of its ``kind`` Literal."""
    for kind in cls.model_fields["kind"].annotation.__args__:
        COMPONENTS[kind] = cls
    return cls


def _compile_smarts(smarts: str, field: str) -> Chem.Mol:
    with quiet():
        query = Chem.MolFromSmarts(smarts) if isinstance(smarts, str) and smarts.strip() else None
    if query is None:
        raise ValueError(f"{field}: {smarts!r} is not a valid SMARTS")
    return query


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


# --- per molecule: RDKit ------------------------------------------------------------------------


@register
class Property(Component):
    """An RDKit property of :mod:`molgen.score` (the same numbers as ``mg.score``)."""

    kind: Literal["qed", "sa", "logp", "mw", "tpsa", "hbd", "hba", "rotb", "rings", "np_score"]

    def default(self):
        return {"type": "identity"} if self.kind == "qed" else None  # QED is a desirability already

    def value(self, ms):
        return ms.row((self.kind,))[0]


@register
class Count(Component):
    """Size limits: heavy atoms, aromatic rings, the largest ring (0 without rings)."""

    kind: Literal["heavy_atoms", "aromatic_rings", "max_ring_size"]

    def value(self, ms):
        if self.kind == "heavy_atoms":
            return ms.mol.GetNumHeavyAtoms()
        if self.kind == "aromatic_rings":
            return rdmd.CalcNumAromaticRings(ms.noh)
        return max((len(r) for r in ms.mol.GetRingInfo().AtomRings()), default=0)


@register
class SmartsCount(Component):
    """How many times a SMARTS matches (unique matches), e.g. ``[F,Cl,Br,I]`` for halogens."""

    kind: Literal["smarts_count"]
    smarts: str
    _query: Chem.Mol = PrivateAttr(None)

    def setup(self, base_dir):
        self._query = _compile_smarts(self.smarts, "smarts")

    def value(self, ms):
        return len(ms.mol.GetSubstructMatches(self._query, uniquify=True, maxMatches=100_000))


@register
class Similarity(Component):
    """Tanimoto similarity (Morgan bits) to reference molecules: the largest, or the mean."""

    kind: Literal["similarity"]
    smiles: list[str] = Field(min_length=1, description="reference molecules")
    radius: int = Field(2, ge=1, le=6)
    n_bits: int = Field(2048, ge=64)
    reduce: Literal["max", "mean"] = "max"
    default_transform: ClassVar[dict | None] = {"type": "identity"}
    _refs: list = PrivateAttr(default_factory=list)

    def setup(self, base_dir):
        refs = [morgan_fp(s, self.radius, self.n_bits) if isinstance(s, str) else None for s in self.smiles]
        bad = [s for s, fp in zip(self.smiles, refs, strict=True) if fp is None]
        if bad:
            raise ValueError(f"smiles: {bad[0]!r} is not a valid SMILES")
        self._refs = refs

    def value(self, ms):
        sims = DataStructs.BulkTanimotoSimilarity(morgan_fp(ms.mol, self.radius, self.n_bits), self._refs)
        return max(sims) if self.reduce == "max" else float(np.mean(sims))


@register
class RequiredSubstructure(Component):
    """1 when the molecule matches ``any`` (default) or ``all`` of the SMARTS, else 0."""

    kind: Literal["required_substructure"]
    smarts: list[str] = Field(min_length=1)
    match: Literal["any", "all"] = "any"
    default_transform: ClassVar[dict | None] = {"type": "identity"}
    _queries: list = PrivateAttr(default_factory=list)

    def setup(self, base_dir):
        self._queries = [_compile_smarts(s, f"smarts[{i}]") for i, s in enumerate(self.smarts)]

    def value(self, ms):
        hits = (ms.mol.HasSubstructMatch(q) for q in self._queries)
        return float(any(hits) if self.match == "any" else all(hits))


@register
class ForbiddenSubstructure(Component):
    """The number of SMARTS the molecule matches; by default desirability 1 only when none does."""

    kind: Literal["forbidden_substructure"]
    smarts: list[str] = Field(min_length=1)
    default_transform: ClassVar[dict | None] = {"type": "step", "high": 0}
    _queries: list = PrivateAttr(default_factory=list)

    def setup(self, base_dir):
        self._queries = [_compile_smarts(s, f"smarts[{i}]") for i, s in enumerate(self.smarts)]

    def value(self, ms):
        return sum(ms.mol.HasSubstructMatch(q) for q in self._queries)


ALERT_SETS = ("pains", "brenk", "moses_filter")


@register
class Alerts(Component):
    """How many of the alert sets flag the molecule (PAINS, Brenk, the MOSES filter, as in ``mg.score``)."""

    kind: Literal["alerts"]
    sets: list[Literal["pains", "brenk", "moses_filter"]] = Field(["pains", "brenk"], min_length=1)
    default_transform: ClassVar[dict | None] = {"type": "step", "high": 0}

    def value(self, ms):
        flags = {"pains": lambda: bool(ms.pains), "brenk": lambda: bool(ms.brenk),
                 "moses_filter": lambda: not ms.moses_filter}
        return sum(flags[s]() for s in self.sets)


# --- batch: models and oracles ------------------------------------------------------------------


def _check_batch(result, n: int) -> np.ndarray:
    """``result`` as ``n`` floats, or ``ValueError`` saying what came back instead."""
    if isinstance(result, (str, bytes)) or not hasattr(result, "__len__"):
        raise ValueError(f"returned {type(result).__name__}, not a list of {n} numbers")
    if len(result) != n:
        raise ValueError(f"returned {len(result)} values for {n} molecules")
    try:
        arr = np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"returned values that are not numbers (first: {list(result)[:1]!r})") from None
    if arr.shape != (n,):
        raise ValueError(f"returned an array of shape {arr.shape}, not ({n},)")
    return arr


class _Batched(Component):
    per_molecule: ClassVar[bool] = False
    batch_size: int = Field(1024, ge=1, description="molecules per call")

    def _call(self, smiles: list[str]):
        raise NotImplementedError

    def values(self, smiles, n_jobs=1):
        out = np.full(len(smiles), np.nan)
        errors = []
        for start in range(0, len(smiles), self.batch_size):
            part = smiles[start:start + self.batch_size]
            try:
                out[start:start + len(part)] = _check_batch(self._call(part), len(part))
            except Exception as err:  # a user's model: whatever it raises scores its batch 0
                errors.append(f"batch of {len(part)} scored 0: {type(err).__name__}: {err}")
        return out, errors


def load_callable(spec: str, base_dir: Path) -> Callable:
    """``module:function`` or ``path/to/file.py:function`` -> the function (``ValueError`` if not)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(f"function: write 'module:function' or 'path/to/file.py:function', not {spec!r}")
    try:
        if target.endswith(".py") or "/" in target or os.sep in target:
            path = _resolve(target, base_dir).resolve()
            if not path.is_file():
                raise ValueError(f"function: file {path} does not exist")
            name = "molgen_objective_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # so that its classes pickle and dataclasses resolve
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"function: importing {target} failed: {type(err).__name__}: {err}") from None
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise ValueError(f"function: {target} has no function {attr!r}")
    return fn


@register
class PythonFunction(_Batched):
    """A Python function: a list of SMILES in, a list of floats (one each) out."""

    kind: Literal["python"]
    function: str = Field(description="'module:function' or 'path/to/file.py:function'")
    _fn: Callable | None = PrivateAttr(None)

    def setup(self, base_dir):
        self._fn = load_callable(self.function, base_dir)

    def _call(self, smiles):
        return self._fn(list(smiles))


@register
class PropertyModelComponent(_Batched):
    """A fitted :class:`molgen.transfer.PropertyModel` folder (its predicted mean)."""

    kind: Literal["property_model"]
    path: str = Field(description="folder written by PropertyModel.save / molgen fit-property")
    _model: Any = PrivateAttr(None)

    def setup(self, base_dir):
        from molgen.transfer import PropertyModel

        try:
            self._model = PropertyModel.load(_resolve(self.path, base_dir))
        except Exception as err:
            raise ValueError(f"path: {err}") from None

    def _call(self, smiles):
        return self._model(smiles)


def run_external(command: list[str], smiles: list[str], timeout: float, cwd: Path | None = None,
                 fmt: str = "lines") -> np.ndarray:
    """Run ``command`` on one batch: SMILES one per line on stdin, scores on stdout.

    ``fmt="lines"``: one number per line (``nan`` allowed); ``"json"``: a JSON list of numbers (or
    ``null``), or an object whose ``"scores"`` is one. The command runs in its own process group,
    and on a timeout the whole group is killed, so a shell script's children cannot keep it alive.

    Raises:
        ValueError: the command could not start, exited non-zero, timed out, or printed
            something that is not ``len(smiles)`` scores; the message says which.
    """
    try:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=cwd, start_new_session=True)
    except OSError as err:
        raise ValueError(f"could not start {command[0]!r}: {err.strerror or err}") from None
    try:
        out, err = proc.communicate(("\n".join(smiles) + "\n").encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise ValueError(f"timed out after {timeout:g} s (the process group was killed)") from None
    except BaseException:  # Ctrl-C: leave no orphan behind
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise ValueError(f"exited with code {proc.returncode}: {tail[0][:200]}")
    text = out.decode("utf-8", "replace")
    try:
        if fmt == "json":
            data = json.loads(text)
            data = data.get("scores") if isinstance(data, dict) else data
            if not isinstance(data, list):
                raise ValueError("expected a JSON list of scores")
            data = [math.nan if v is None else v for v in data]
        else:
            data = [float(line) for line in text.strip().splitlines()] if text.strip() else []
        return _check_batch(data, len(smiles))
    except ValueError as err:
        shown = text.strip()[:80]
        raise ValueError(f"printed something that is not {len(smiles)} scores ({err}): {shown!r}") from None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a child that left the group keeps a pipe open: stop waiting
        pass


@register
class External(Component):
    """An external command (docking, an in-house model): SMILES on stdin, one score per line (or JSON) on stdout.

    Batches of ``batch_size`` run as separate processes (``n_jobs`` of them at a time); a batch
    that fails, hangs past ``timeout`` seconds or prints garbage scores NaN (desirability 0) and
    is reported, and the run goes on.
    """

    kind: Literal["external"]
    per_molecule: ClassVar[bool] = False
    command: list[str] | str = Field(description="argv list, or one string split like a shell would")
    timeout: float = Field(300.0, gt=0, allow_inf_nan=False, description="seconds per batch")
    batch_size: int = Field(256, ge=1)
    format: Literal["lines", "json"] = "lines"
    cwd: str | None = Field(None, description="working folder (default: the TOML file's folder)")
    _argv: list[str] = PrivateAttr(default_factory=list)
    _cwd: Path | None = PrivateAttr(None)

    def setup(self, base_dir):
        argv = shlex.split(self.command) if isinstance(self.command, str) else list(self.command)
        if not argv or not argv[0]:
            raise ValueError("command: empty")
        cwd = _resolve(self.cwd, base_dir) if self.cwd else base_dir
        if not cwd.is_dir():
            raise ValueError(f"cwd: folder {cwd} does not exist")
        program = argv[0]
        if os.sep in program or "/" in program:
            found = _resolve(program, cwd)
            if not (found.is_file() and os.access(found, os.X_OK)):
                raise ValueError(f"command: {found} is not an executable file")
        elif shutil.which(program) is None:
            raise ValueError(f"command: {program!r} is not on PATH")
        self._argv, self._cwd = argv, cwd

    def _batch(self, args) -> tuple[list[float], str | None]:
        part, _ = args
        try:
            return list(run_external(self._argv, part, self.timeout, self._cwd, self.format)), None
        except ValueError as err:
            return [math.nan] * len(part), f"batch of {len(part)} scored 0: {' '.join(self._argv)}: {err}"

    def values(self, smiles, n_jobs=1):
        results = parallel_map(self._batch, smiles, n_jobs=n_jobs, chunk=self.batch_size, flatten=False)
        out = np.array([v for vals, _ in results for v in vals], dtype=np.float64)
        return out, [e for _, e in results if e]
