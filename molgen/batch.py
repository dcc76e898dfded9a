"""Batch candidate generation: sample, score and filter in one stream of chunks, resumable and sharded.

``molgen generate ... --score --objective obj.toml --min-score 0.6`` draws molecules chunk by chunk
(:func:`molgen.sample.generate_to_file`), scores each chunk as it comes (RDKit properties and alerts,
:func:`molgen.score.score`; an objective's components and total, :class:`molgen.guide.Objective`),
drops the rows below ``min_score`` (counted and reported) and writes the chunk, so memory stays that
of one chunk whatever ``n`` (10^6 molecules and more). Scoring rides on ``generate_to_file``'s
``on_chunk`` hook: the chunk files in ``OUT.partial/``, ``--resume`` after a kill and the atomic
join are the sampler's own. The settings that change the rows (the score columns, the objective
file's sha256, ``min_score``) go into the run's request, so a resume with another objective is
refused.

Shards (``shard=(k, N)``) split the run's seeded batches into N contiguous ranges
(:func:`molgen.sample.shard_range`): shard files 1..N joined in order (:func:`join`) equal the
unsharded file, scores and rejections included, because every batch draws from its own seed and
every row is scored on its own. ``scripts/batch_dask.py`` runs the shards on a Dask cluster;
docs/batch.md has the column schema and a SLURM array.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from molgen.errors import InputError
from molgen.sample import generate_to_file, join_parts

__all__ = ["generate", "shard_path", "join", "objective_columns"]

#: prefix of the objective's component columns (``score_<name>``, ``score_<name>_d``); ``score`` is its total
PREFIX = "score_"


def objective_columns(objective) -> dict[str, str]:
    """How an objective's result columns are written: ``score`` stays, each component ``<name>``
    becomes ``score_<name>`` (raw value) and ``<name>_d`` becomes ``score_<name>_d`` (desirability),
    so they never meet the RDKit columns of the same names (``qed``, ``logp`` ...)."""
    return {c: c if c == "score" else PREFIX + c for c in objective.columns}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scorer(properties: tuple[str, ...] | None, objective, min_score: float | None, n_jobs: int):
    """The ``on_chunk`` hook: the chunk with its score columns added, and the rows to keep."""
    from molgen.score import score

    names = objective_columns(objective) if objective is not None else {}

    def hook(df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray | None]:
        smiles = df["smiles"].tolist()
        parts = [df.reset_index(drop=True)]
        keep = None
        if objective is None:
            parts.append(score(smiles, properties=properties, n_jobs=n_jobs).drop(columns=["smiles", "valid"]))
        else:  # one pass per molecule: QED, SA, logP, alerts shared by the score columns and the objective
            result, props = objective.with_properties(smiles, properties or (), n_jobs=max(n_jobs, objective.n_jobs))
            if props is not None:
                parts.append(props.drop(columns="valid"))
            result = result.drop(columns=["smiles", "valid"]).rename(columns=names)
            parts.append(result)
            if min_score is not None:
                keep = result["score"].to_numpy() >= min_score
        return pd.concat(parts, axis=1), keep

    return hook


def generate(model, n: int, path: str | os.PathLike, *, score: bool = False,
             properties: Sequence[str] | None = None, objective: str | os.PathLike | None = None,
             min_score: float | None = None, n_jobs: int = 1, shard: tuple[int, int] | str | None = None,
             **options) -> dict:  # fmt: skip
    """Sample ``n`` molecules, score them and write the ones kept to ``path``, chunk by chunk.

    Args:
        model: a model :func:`molgen.sample.sample` takes.
        n: molecules that reach scoring (after ``valid_only`` / ``unique``); those below
            ``min_score`` are rejected, so ``path`` holds ``n`` minus the rejected rows.
        score: add the RDKit score columns (:data:`molgen.score.COLUMNS`, or ``properties``).
        properties: which RDKit columns (implies ``score``).
        objective: an objective TOML file (``scripts/configs/objective_*.toml``): adds ``score``
            (its total, in [0, 1]) and per component ``score_<name>`` and ``score_<name>_d``.
        min_score: drop rows whose objective ``score`` is below it (needs ``objective``); invalid
            molecules score 0.
        n_jobs: processes for the RDKit columns (the objective's own ``n_jobs`` is in its file).
        shard: ``(k, N)`` or ``"k/N"``: write part ``k`` of the run (see the module docstring).
        **options: :func:`molgen.sample.generate_to_file`'s (``seed``, ``chunk_size``, ``resume``,
            ``unique``, ``valid_only``, sampling options ...).

    Returns:
        ``generate_to_file``'s summary, with ``below_min_score`` (the rejected rows) and ``columns``.

    Raises:
        InputError, ConfigError: a bad option or objective file, before any file is touched.
    """
    from molgen.score import COLUMNS, check_properties

    if properties is not None:
        properties, score = check_properties(properties), True
    elif score:
        properties = COLUMNS
    extra: dict = {}
    obj = None
    if objective is not None:
        from molgen.guide import Objective

        if not isinstance(objective, (str, os.PathLike)):
            raise InputError("objective takes the path of an objective TOML file (its sha256 guards --resume)")
        obj = Objective.from_toml(objective)
        extra["objective_sha256"] = _sha256(Path(objective))
    if min_score is not None:
        if obj is None:
            raise InputError("--min-score filters on the objective's score: give --objective FILE.toml too")
        if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0 <= min_score <= 1 \
                or math.isnan(min_score):
            raise InputError(f"--min-score is an objective score in [0, 1], got {min_score!r}")
        extra["min_score"] = float(min_score)
    if properties:
        extra["score_columns"] = list(properties)
    hook = _scorer(properties, obj, min_score, n_jobs) if extra else None
    summary = generate_to_file(model, n, path, shard=shard, on_chunk=hook, request_extra=extra, **options)
    summary["below_min_score"] = summary["rejected"]
    return summary


def shard_path(path: str | os.PathLike, k: int, parts: int) -> Path:
    """Where shard ``k`` of ``parts`` of a run into ``path`` goes: ``OUT.shards/part-k-of-N<suffixes>``."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    return path.with_name(path.name + ".shards") / f"part-{k:05d}-of-{parts:05d}{suffix}"


def join(path: str | os.PathLike, parts: int) -> Path:
    """Join shard files 1..``parts`` of ``path`` (:func:`shard_path`), in order, into ``path`` (atomically).

    Raises:
        InputError: a shard file is missing (the message names them; run those shards again).
    """
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise InputError(f"the number of shards is a whole number >= 1, got {parts!r}")
    files = [shard_path(path, k, parts) for k in range(1, parts + 1)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise InputError(f"{len(missing)} of {parts} shard files are missing ({', '.join(missing[:3])}"
                         f"{' ...' if len(missing) > 3 else ''}); run those shards (with --resume) and join again")
    return join_parts(files, path)
