"""Objectives from TOML: components -> desirability transforms -> weights -> one score per molecule.

An objective file (REINVENT 4's scoring section, flattened; see ``scripts/configs/objective_*.toml``)::

    aggregate = "geometric"        # or "arithmetic": the weighted mean of the desirabilities
    n_jobs = 1                     # worker processes for RDKit components and external batches

    [[component]]
    kind = "qed"                   # a registered kind (molgen.guide.components.COMPONENTS)
    weight = 1.0                   # >= 0; a 0 weight reports the column without scoring it

    [[component]]
    kind = "logp"
    name = "logp_window"           # column name (default: the kind); must be unique
    transform = { type = "double_sigmoid", low = 1, high = 4, coef_div = 3, coef_si = 10, coef_se = 10 }

:meth:`Objective.from_toml` checks everything before any sampling (unknown keys or kinds, a bad
SMARTS or reference SMILES, an inverted window, a missing transform, a missing file, function or
command, weights that sum to 0) and refuses the file with every problem, each naming the line,
the component (number, name, kind) and the field.

``objective(smiles)`` returns one row per input: ``smiles``, ``valid``, ``score`` (in [0, 1]), then
for each component its raw value (column ``<name>``; NaN where it could not be computed) and its
desirability (``<name>_d``). Invalid SMILES (and molecules over :data:`molgen.chem.LIMITS`) score 0
and reach no component; components see canonical SMILES, each distinct molecule once per call.
The weighted geometric mean is Harrington's overall desirability: one desirability of 0 makes the
score 0. Oracle failures (a Python callable that raises or returns the wrong length, an external
command that fails, hangs or prints garbage) give their batch NaN raw values, so desirability and
score 0; each is logged (logger ``molgen.guide``), listed in ``out.attrs["errors"]`` and counted per
component in ``objective.errors``; the run goes on.

:class:`Oracle` wraps an objective with a cache (canonical SMILES -> scores) and a hard budget of
oracle calls: every new valid molecule costs one call, repeats (any spelling of a molecule already
scored) and invalid SMILES cost nothing. When a call brings more new molecules than the budget has
left, the first ones (in input order) are scored and the rest come back with ``scored=False`` and
a NaN score; a call that brings a new molecule once nothing is left raises
:class:`BudgetExhausted`, the signal for a loop to stop. Failed batches are spent calls and stay
cached with score 0 (an expensive oracle is not asked twice).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rdkit import Chem

from molgen.chem import canonicalize, quiet, to_mol, to_smiles
from molgen.errors import ConfigError, InputError, MolgenError
from molgen.files import read_toml
from molgen.guide.components import COMPONENTS, Component
from molgen.guide.transforms import describe_error, parse_transform
from molgen.parallel import parallel_map
from molgen.score import MolScores, check_properties, score_frame, score_row

__all__ = ["Objective", "Oracle", "BudgetExhausted", "RESERVED"]

log = logging.getLogger("molgen.guide")

RESERVED = ("smiles", "valid", "score", "scored", "new")
_CHUNK = 128  # molecules per task of a scoring worker


class BudgetExhausted(MolgenError):
    """The oracle budget is spent and a call asked for a molecule not scored before."""


class _Top(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    aggregate: Literal["geometric", "arithmetic"] = "geometric"
    n_jobs: int = Field(1, ge=1)
    component: list[Any] = Field(min_length=1, description="the [[component]] tables")


class _Lines:
    """Best-effort line numbers of a TOML text's keys, for error messages (``None`` when unsure)."""

    _HEADER = re.compile(r"^\s*\[\[\s*component\s*\]\]")

    def __init__(self, text: str | None, n_components: int):
        self.lines = text.splitlines() if text else []
        self.headers = [i for i, line in enumerate(self.lines) if self._HEADER.match(line)]
        if len(self.headers) != n_components:  # components written another way: do not guess
            self.headers = []

    def _find(self, keys, start: int, end: int) -> int | None:
        for key in keys:
            pattern = re.compile(rf"^\s*(\[\s*component\.{re.escape(key)}\s*\]|{re.escape(key)}\s*=)")
            for i in range(start, end):
                if pattern.match(self.lines[i]):
                    return i + 1
        return None

    def top(self, key: str) -> int | None:
        return self._find([key], 0, self.headers[0] if self.headers else len(self.lines))

    def component(self, index: int, loc=()) -> int | None:
        if index >= len(self.headers):
            return None
        start = self.headers[index]
        end = self.headers[index + 1] if index + 1 < len(self.headers) else len(self.lines)
        keys = [str(p) for p in loc if isinstance(p, str)]
        return self._find(keys[::-1], start, end) or start + 1


class Objective:
    """A scoring function: components, each through a desirability transform, combined by a weighted mean.

    Build one with :meth:`from_toml` or :meth:`from_dict` (which check and prepare every
    component); call it on SMILES to get a DataFrame (see the module docstring).

    Attributes:
        components: the prepared :class:`~molgen.guide.components.Component` objects, in order.
        aggregate: ``"geometric"`` or ``"arithmetic"``.
        n_jobs: worker processes for per-molecule components and external batches.
        errors: failed oracle batches so far, per component name.
    """

    def __init__(self, components: list[Component], aggregate: str = "geometric", n_jobs: int = 1,
                 description: str = ""):
        self.components = list(components)
        self.aggregate, self.n_jobs, self.description = aggregate, n_jobs, description
        self.weights = np.array([c.weight for c in self.components], dtype=np.float64)
        self.errors: Counter[str] = Counter()

    # -- building --------------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> Objective:
        """Read, check and prepare an objective TOML file; relative paths in it are relative to its folder.

        Raises:
            ConfigError: the file is missing or not TOML, or any component is wrong; the message
                names the file and, for each problem, the line, the component and the field.
        """
        path = Path(path)
        data, text = read_toml(path, "objective", "scripts/configs/objective_*.toml")
        return cls.from_dict(data, base_dir=path.resolve().parent, source=str(path), text=text)

    @classmethod
    def from_dict(cls, data: dict, base_dir: str | os.PathLike | None = None, source: str = "<objective>",
                  text: str | None = None) -> Objective:
        """Check and prepare an objective from its parsed TOML (``base_dir``: where relative paths start,
        default the current folder; ``text``: the TOML text, for line numbers in errors)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: an objective is a table with [[component]] entries, got {type(data).__name__}")
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        n_listed = len(data["component"]) if isinstance(data.get("component"), list) else 0
        lines = _Lines(text, n_listed)
        problems: list[tuple[int | None, str]] = []
        try:
            top = _Top.model_validate(data)
        except ValidationError as err:
            for e in err.errors():
                key = str(e["loc"][0]) if e["loc"] else ""
                hint = " (add at least one [[component]] table)" if key == "component" else ""
                problems.append((lines.top(key), describe_error(e) + hint))
            raise ConfigError(_message(source, problems)) from None

        components: list[Component] = []
        for i, raw in enumerate(top.component):
            comp = _component(i, raw, base, lines, problems)
            if comp is not None:
                components.append(comp)
        if not problems:
            _check_together(components, lines, problems)
        if problems:
            raise ConfigError(_message(source, problems))
        return cls(components, top.aggregate, top.n_jobs, top.description)

    # -- scoring ---------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [c.label for c in self.components]

    @property
    def columns(self) -> list[str]:
        """The score columns of a result, after ``smiles`` and ``valid``."""
        return ["score"] + [col for n in self.names for col in (n, f"{n}_d")]

    def __call__(self, smiles) -> pd.DataFrame:
        """Score molecules: one row per input (see the module docstring for the columns)."""
        return self.with_properties(smiles)[0]

    def with_properties(self, smiles, properties: Sequence[str] = (),
                        n_jobs: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """The objective's table and, for ``properties`` (:data:`molgen.score.COLUMNS`), the RDKit
        score table of the same molecules, both from one pass over each molecule: a property the
        objective also uses (QED, SA, logP, alerts) is computed once. Batch scoring
        (``molgen generate --score --objective``) runs this way.

        Args:
            smiles: SMILES strings (or RDKit Mols), one row per input in each table.
            properties: score columns to compute beside the objective; none gives ``None`` as the second table.
            n_jobs: worker processes for this call (default: the file's ``n_jobs``).

        Returns:
            ``(objective table, property table)``; the property table is :func:`molgen.score.score`'s
            without ``smiles`` (``valid``, then ``properties``), its rows read by canonical SMILES.
        """
        smiles = _as_list(smiles)
        properties = check_properties(properties) if properties else ()
        canon = [canonicalize(s) if isinstance(s, str) else None for s in smiles]
        unique = list(dict.fromkeys(c for c in canon if c is not None))
        rows, errors, props = self._score(unique, properties, self.n_jobs if n_jobs is None else n_jobs)
        out = self._table(smiles, canon, dict(zip(unique, rows, strict=True)))
        out.attrs = {"errors": errors}
        if not properties:
            return out, None
        lookup = dict(zip(unique, props, strict=True))
        return out, score_frame([lookup[c] if c is not None else None for c in canon], properties)

    def score_canonical(self, smiles: list[str]) -> tuple[np.ndarray, list[str]]:
        """Rows ``[score, raw_1, d_1, raw_2, d_2, ...]`` for distinct canonical SMILES of valid molecules,
        and the messages of the oracle batches that failed."""
        rows, errors, _ = self._score(smiles, (), self.n_jobs)
        return rows, errors

    def _score(self, smiles: list[str], properties: tuple[str, ...], n_jobs: int):
        raw, errors, props = self._raw(smiles, properties, n_jobs)
        d = np.column_stack([c.transform(raw[:, j]) for j, c in enumerate(self.components)]) if len(smiles) \
            else np.zeros((0, len(self.components)))
        rows = np.empty((len(smiles), 1 + 2 * len(self.components)))
        rows[:, 0] = self._combine(d)
        rows[:, 1::2], rows[:, 2::2] = raw, d
        return rows, errors, props

    def _raw(self, smiles: list[str], properties: tuple[str, ...] = (), n_jobs: int = 1):
        """Raw component values, failed-batch messages, and ``properties`` rows (:func:`molgen.score.score_row`)."""
        raw = np.full((len(smiles), len(self.components)), np.nan)
        errors: list[str] = []
        props: list = []
        if not smiles:
            return raw, errors, props
        per = [j for j, c in enumerate(self.components) if c.per_molecule]
        if per or properties:
            mine = [self.components[j] for j in per]

            def chunk(args):  # forked workers inherit this closure (compiled SMARTS, fingerprints)
                part, _ = args
                _block = quiet()  # noqa: F841
                return [_values(mine, s, properties) for s in part]

            values = parallel_map(chunk, smiles, n_jobs=n_jobs, chunk=_CHUNK)
            if per:
                raw[:, per] = np.asarray([v for v, _ in values], dtype=np.float64).reshape(len(smiles), len(per))
            props = [p for _, p in values]
        for j, c in enumerate(self.components):
            if c.per_molecule:
                continue
            raw[:, j], failed = c.values(smiles, n_jobs)
            for message in failed:
                message = f"component {j + 1} '{c.label}' ({c.kind}): {message}"
                log.warning(message)
                errors.append(message)
                self.errors[c.label] += 1
        return raw, errors, props

    def _combine(self, d: np.ndarray) -> np.ndarray:
        used = self.weights > 0
        w = self.weights[used] / self.weights[used].sum()
        d = d[:, used]
        if self.aggregate == "arithmetic":
            return d @ w
        with np.errstate(divide="ignore"):  # log 0 = -inf: one zero desirability makes the score 0
            return np.exp(np.log(d) @ w)

    def _table(self, smiles: list, canon: list, lookup: dict, missing: np.ndarray | None = None) -> pd.DataFrame:
        invalid = np.zeros(1 + 2 * len(self.components))
        invalid[1::2] = np.nan
        rows = [invalid if c is None else lookup.get(c, missing) for c in canon]
        table = pd.DataFrame(np.vstack(rows) if rows else np.zeros((0, len(invalid))), columns=self.columns)
        table.insert(0, "valid", [c is not None for c in canon])
        table.insert(0, "smiles", smiles)
        return table

    def __repr__(self) -> str:
        parts = ", ".join(f"{c.label}:{c.transform.type} x{c.weight:g}" for c in self.components)
        return f"Objective({self.aggregate} mean of {parts})"


def _values(components: list[Component], smiles: str, properties: tuple[str, ...] = ()):
    """The components' raw values for one molecule, and its ``properties`` row, from one :class:`MolScores`."""
    mol = to_mol(smiles)
    ms = MolScores(mol) if mol is not None else None
    out = []
    for c in components:
        try:
            out.append(float(c.value(ms)))
        except Exception:  # an RDKit failure on an odd molecule leaves that value NaN (desirability 0)
            out.append(math.nan)
    return out, score_row(ms, properties) if properties else None


def _message(source: str, problems: list[tuple[int | None, str]]) -> str:
    return "\n".join(f"{source} line {line}: {text}" if line else f"{source}: {text}" for line, text in problems)


def _component(i: int, raw, base: Path, lines: _Lines, problems: list) -> Component | None:
    """Validate and prepare the ``i``-th component; record what is wrong in ``problems``."""
    if not isinstance(raw, dict):
        problems.append((lines.component(i), f"component {i + 1}: must be a table with a 'kind', got {raw!r}"))
        return None
    kind = raw.get("kind")
    label = f"component {i + 1} '{raw['name']}' ({kind})" if isinstance(raw.get("name"), str) else \
        f"component {i + 1} ({kind})"
    if kind not in COMPONENTS:
        what = "has no 'kind'" if kind is None else f"unknown kind {kind!r}"
        problems.append((lines.component(i, ("kind",)), f"{label}: {what}; choose from {', '.join(COMPONENTS)}"))
        return None
    try:
        comp = COMPONENTS[kind].model_validate(raw)
    except ValidationError as err:
        problems.extend((lines.component(i, e["loc"]), f"{label}: {describe_error(e)}") for e in err.errors())
        return None
    if comp.transform is None:
        default = comp.default()
        if default is None:
            problems.append((lines.component(i), f"{label}: needs a transform (its raw value is not a desirability "
                             "in [0, 1]); add e.g. transform = { type = \"sigmoid\", low = ..., high = ... }"))
            return None
        comp.transform = parse_transform(default)
    try:
        comp.setup(base)
    except ValueError as err:
        field = str(err).split(":")[0].split("[")[0]
        problems.append((lines.component(i, (field,)), f"{label}: {err}"))
        return None
    return comp


def _check_together(components: list[Component], lines: _Lines, problems: list) -> None:
    """Checks across components: unique column names, weights that do not sum to 0."""
    seen: dict[str, int] = {}
    for i, c in enumerate(components):
        for col in (c.label, f"{c.label}_d"):
            if col in RESERVED:
                problems.append((lines.component(i, ("name",)),
                                 f"component {i + 1} ({c.kind}): the name {col!r} is reserved; set another name"))
            elif col in seen:
                problems.append((lines.component(i, ("name",)),
                                 f"component {i + 1} ({c.kind}): column {col!r} is taken by component {seen[col] + 1}; "
                                 "give each component its own name = \"...\""))
            seen.setdefault(col, i)
    if sum(c.weight for c in components) <= 0:
        where = [n for i in range(len(components)) if (n := lines.component(i, ("weight",)))]
        at = f" (lines {', '.join(map(str, where))})" if where else ""
        problems.append((None, f"the component weights sum to 0{at}: give at least one a weight above 0"))


def _as_list(smiles) -> list:
    if isinstance(smiles, (str, Chem.Mol)):
        smiles = [smiles]
    elif isinstance(smiles, pd.DataFrame):
        if "smiles" not in smiles.columns:
            raise InputError(f"the table has no 'smiles' column (columns: {list(smiles.columns)})")
        smiles = smiles["smiles"]
    return [to_smiles(s) if isinstance(s, Chem.Mol) else s for s in smiles]


class Oracle:
    """An objective with a cache (canonical SMILES -> scores) and a hard budget of oracle calls.

    ``oracle(smiles)`` returns the objective's table with two more columns: ``scored`` (False for
    molecules past the budget: their score is NaN) and ``new`` (this call paid one oracle call for
    the row). See the module docstring for the budget rules.

    Args:
        objective: an :class:`Objective` (or a TOML path).
        budget: the most molecules ever sent to the objective; ``None`` for no limit.
    """

    def __init__(self, objective: Objective | str | os.PathLike, budget: int | None = None):
        if not isinstance(objective, Objective):
            objective = Objective.from_toml(objective)
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0):
            raise InputError(f"budget must be a whole number >= 0 or None, got {budget!r}")
        self.objective, self.budget = objective, budget
        self.calls_used = 0
        self.cache: dict[str, np.ndarray] = {}  # canonical SMILES -> [score, raw_1, d_1, ...], in scoring order
        self.errors: list[str] = []

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.calls_used

    @property
    def exhausted(self) -> bool:
        return self.budget is not None and self.calls_used >= self.budget

    def __call__(self, smiles) -> pd.DataFrame:
        smiles = _as_list(smiles)
        canon = [canonicalize(s) if isinstance(s, str) else None for s in smiles]
        new = [c for c in dict.fromkeys(c for c in canon if c is not None) if c not in self.cache]
        if new and self.exhausted:
            raise BudgetExhausted(f"the oracle budget of {self.budget} molecules is spent "
                                  f"({len(new)} new molecules asked for); {len(self.cache)} are cached")
        paid = new if self.remaining is None else new[:self.remaining]
        rows, errors = self.objective.score_canonical(paid)
        self.calls_used += len(paid)
        self.cache.update(zip(paid, rows, strict=True))
        self.errors.extend(errors)
        unscored = np.full(len(self.objective.columns), np.nan)
        out = self.objective._table(smiles, canon, self.cache, missing=unscored)
        out.insert(3, "scored", [c is None or c in self.cache for c in canon])
        fresh, new_col = set(paid), []
        for c in canon:  # the first row of each newly scored molecule is the one that paid
            new_col.append(c in fresh)
            fresh.discard(c)
        out.insert(4, "new", new_col)
        out.attrs = {"errors": errors, "calls": len(paid), "calls_used": self.calls_used, "budget": self.budget}
        return out

    def history(self) -> pd.DataFrame:
        """Every molecule scored so far (canonical SMILES), in the order it was scored."""
        rows = list(self.cache.values())
        table = pd.DataFrame(np.vstack(rows) if rows else np.zeros((0, len(self.objective.columns))),
                             columns=self.objective.columns)
        table.insert(0, "smiles", list(self.cache))
        return table
