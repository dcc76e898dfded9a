"""The files an optimisation run leaves, shared by every method (``rl``, ``latent``).

``optimize.csv`` holds one row per oracle call, in call order: ``step, oracle_call, smiles``
(canonical), the objective's columns (``score``, each component's raw value and desirability),
``scaffold`` (its Bemis-Murcko scaffold); a scaffold-constrained RL run adds ``contains_scaffold``
(RDKit substructure match of the given scaffold) and ``sampled`` (the spelling the agent wrote, from
which its replay recomputes which tokens were sampled). Whole steps are appended in one flushed write, so a kill loses at most the step in
flight and leaves at worst a torn last line, which :func:`read_log` cuts away. ``config.json``
holds the run's settings; :func:`check_same` refuses to resume a run with other settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from molgen.errors import ConfigError
from molgen.files import write_json

__all__ = ["CSV_NAME", "STEPS_NAME", "log_columns", "new_rows", "append", "read_log", "settings", "check_same",
           "refuse_overwrite", "begin", "interrupted", "restore_oracle"]

CSV_NAME, STEPS_NAME = "optimize.csv", "steps.csv"
_TEXT = ("smiles", "scaffold", "sampled")  # the string columns of optimize.csv



@contextlib.contextmanager
def few_threads(n: int = 1):
    """Run an optimisation loop's tensor work on ``n`` PyTorch CPU threads, restoring the count after.

    A step is a few hundred small operations on a batch of 64 molecules: a second thread gains little,
    and where other processes share the cores, OpenMP threads that wait for each other cost far more
    (RL from the demo's fine-tuned prior, 256 oracle calls, load average 4 on 2 cores: 6.3 s on one
    thread, 168 s on two).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def log_columns(objective, extra: tuple[str, ...] = ()) -> list[str]:
    """The columns of ``optimize.csv`` for an objective, and a method's ``extra`` ones at the end
    (a scaffold-constrained RL run: ``contains_scaffold``, ``sampled``)."""
    return ["step", "oracle_call", "smiles", *objective.columns, "scaffold", *extra]


def new_rows(table: pd.DataFrame, canon: list, step: int, calls_before: int, objective, scaffold_of,
             extra: dict[str, list] | None = None) -> pd.DataFrame:  # fmt: skip
    """The rows of ``optimize.csv`` for the molecules an oracle call paid for (its ``new`` rows);
    ``extra`` maps further columns to values aligned with the batch (``canon``)."""
    new = table[table["new"].to_numpy()]
    rows = pd.DataFrame({"step": step, "oracle_call": np.arange(calls_before + 1, calls_before + 1 + len(new)),
                         "smiles": [canon[i] for i in new.index]})  # fmt: skip
    for col in objective.columns:
        rows[col] = new[col].to_numpy()
    rows["scaffold"] = [scaffold_of(s) for s in rows["smiles"]]
    for col, values in (extra or {}).items():
        rows[col] = [values[i] for i in new.index]
    return rows


def append(path: Path, rows: pd.DataFrame, columns: list[str], header: bool = False) -> None:
    """Append whole rows in one write, flushed to disk (a kill leaves whole steps, or a torn last line)."""
    buf = io.StringIO()
    rows[columns].to_csv(buf, index=False, header=header, lineterminator="\n")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def read_log(path: Path, columns: list[str]) -> pd.DataFrame:
    """``optimize.csv`` without a torn last line (a kill during a write); the file is cut back to match."""
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(len(whole))
    if not whole:
        raise ConfigError(f"{path} is empty: not a file molgen optimize wrote; remove it or choose another out")
    text = io.StringIO(whole.decode("utf-8"))
    numeric = [c for c in columns if c not in _TEXT and c != "contains_scaffold"]
    table = pd.read_csv(text, dtype=dict.fromkeys(_TEXT, str), keep_default_na=False,
                        na_values={c: [""] for c in numeric})  # fmt: skip
    if list(table.columns) != columns:
        raise ConfigError(f"{path} has columns {list(table.columns)}, but this objective writes {columns}: "
                          "a run of another objective; choose another out")  # fmt: skip
    return table.astype({"step": np.int64, "oracle_call": np.int64})


def settings(cfg, objective) -> dict:
    """A run config's settings as written to ``config.json``, with the objective file's sha256 and columns."""
    out = cfg.model_dump(mode="json")
    out["objective_sha256"] = hashlib.sha256(Path(cfg.objective).read_bytes()).hexdigest()
    out["objective_columns"] = objective.columns
    return out


def check_same(out: Path, settings: dict, may_change: tuple[str, ...]) -> None:
    """Refuse to resume the run in ``out`` when a setting outside ``may_change`` differs."""
    path = out / "config.json"
    try:
        before = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"{out} has an optimize.csv but no readable config.json: not a run to resume") from None
    differ = [k for k in settings if k not in may_change and before.get(k, settings.get(k) if k == "method" else None)
              != settings[k]]  # fmt: skip
    if differ:
        what = ", ".join(f"{k} ({before.get(k)!r} -> {settings[k]!r})" for k in differ)
        shown = [k for k in may_change if k != "out"]
        raise ConfigError(f"{out} was run with other settings: {what}; only {', '.join(shown)} may change on --resume")


def refuse_overwrite(out: Path, resume: bool) -> None:
    """A run folder that holds a run is continued with ``resume`` or left alone."""
    csv = out / CSV_NAME
    if csv.exists() and not resume:
        raise ConfigError(f"{out} holds an optimisation run ({csv}); continue it with --resume "
                          "(resume=True) or choose another out")  # fmt: skip


def begin(out: Path, columns: list[str], run_settings: dict, resume: bool, may_change: tuple[str, ...],
          restore, stale: tuple[Path, ...] = ()) -> None:  # fmt: skip
    """Resume the run in ``out`` (settings checked, then ``restore()``) or start one (``stale`` files
    removed, the CSV header written); ``config.json`` written either way."""
    csv = out / CSV_NAME
    if resume and csv.exists():
        check_same(out, run_settings, may_change)
        restore()
    else:
        out.mkdir(parents=True, exist_ok=True)
        for path in stale:
            path.unlink(missing_ok=True)
        append(csv, pd.DataFrame(columns=columns), columns, header=True)
    write_json(out / "config.json", run_settings)


def interrupted(step: int, calls: int, out: Path) -> KeyboardInterrupt:
    """The Ctrl-C that says where the run stands and how to continue it."""
    return KeyboardInterrupt(f"interrupted in step {step}: {calls:,} molecules scored in {out / CSV_NAME}; "
                             "continue with --resume")


def restore_oracle(oracle, out: Path, columns: list[str], scaffolds: dict) -> pd.DataFrame:
    """Put the scores of ``optimize.csv`` back in an oracle's cache (and its calls used); the rows."""
    rows = read_log(out / CSV_NAME, columns)
    if rows["oracle_call"].tolist() != list(range(1, len(rows) + 1)):
        raise ConfigError(f"{out / CSV_NAME}: oracle_call does not run 1, 2, 3, ...: not a file this run wrote")
    for smi, values, scaf in zip(rows["smiles"], rows[oracle.objective.columns].to_numpy(np.float64),
                                 rows["scaffold"], strict=True):  # fmt: skip
        oracle.cache[smi] = values
        scaffolds[smi] = scaf
    oracle.calls_used = len(rows)
    return rows
