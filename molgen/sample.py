"""Sampling at scale: any model's ``sample()`` streamed to a CSV/SMI/SDF/Parquet file in chunks.

A model takes part by having ``sample(n, seed=..., temperature=..., batch_size=..., device=...,
workers=..., start_batch=...)`` that returns a DataFrame with ``smiles`` and ``valid`` first.
``temperature=None`` leaves each model its own default: 1.0 for the SMILES GPT (its distribution as
trained), 0 for the graph-VAE (greedy decoding of prior samples). SMILES models also take ``grammar``
(syntax masks, on by default). A file is one seeded run written in chunks of whole batches (each
chunk continues at the next batch, ``start_batch``), so without filters ``molgen generate -n N
--seed S`` writes the molecules of ``model.sample(N, seed=S)``, in order; rows reach the disk as
they come, so 10^6 molecules never sit in memory at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd

from molgen.errors import InputError, MolgenError

__all__ = ["sample", "generate_to_file", "IncompleteRun", "Interrupted", "PartialRun"]



# options that only some models' sample() has, and why asking another model for one is an error
_MODEL_OPTIONS = {
    "grammar": "has no SMILES grammar option: it builds molecules as graphs under valence rules already; "
    "leave --grammar/--no-grammar out",
    "prior": "has no latent prior to choose: it samples SMILES token by token; leave --prior out",
    "max_ring": "has no ring-size limit: it writes SMILES token by token; leave --max-ring out",
    "ring_rules": "has no ring rules: it writes SMILES token by token; leave --ring-rules/--no-ring-rules out",
    "precision": "has no precision option: it decodes in float32; leave --precision out",
}


def _sample_opts(model, temperature: float | None = None, grammar: bool | None = None, prior: str | None = None,
                 max_ring: int | None = None, ring_rules: bool | None = None, precision: str | None = None) -> dict:  # fmt: skip
    """``sample()`` keywords for the options given; ``None`` keeps the model's own default.

    ``grammar`` (SMILES syntax masks) and ``precision`` exist for SMILES models only, ``prior``, ``max_ring`` and
    ``ring_rules`` for the graph-VAE only; asking a model without one is an error rather than an option silently ignored.
    """
    import inspect

    options = {"temperature": temperature, "grammar": grammar, "prior": prior, "max_ring": max_ring,
               "ring_rules": ring_rules, "precision": precision}  # fmt: skip
    given = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(model.sample).parameters
    for option, why in _MODEL_OPTIONS.items():
        if option in given and option not in accepted:
            raise InputError(f"{type(model).__name__} {why}")
    return given


def sample(model, n: int, seed: int = 0, temperature: float | None = None, **kwargs) -> pd.DataFrame:
    """Sample ``n`` molecules from a model object or a checkpoint name/folder.

    ``mg.sample("smiles-gpt-moses", 1000)`` is ``mg.load_pretrained(...).sample(1000)``.
    """
    if isinstance(model, (str, os.PathLike)):
        from molgen.models import load_pretrained

        model = load_pretrained(model, device=kwargs.pop("device", "auto"))
    return model.sample(n, seed=seed, **kwargs, **_sample_opts(model, temperature))


def generate_to_file(
    model,
    n: int,
    path: str | os.PathLike,
    seed: int = 0,
    temperature: float | None = None,
    grammar: bool | None = None,
    prior: str | None = None,
    max_ring: int | None = None,
    ring_rules: bool | None = None,
    precision: str | None = None,
    chunk_size: int = 16_384,
    unique: bool = False,
    valid_only: bool = False,
    batch_size: int = 1024,
    device: str = "auto",
    progress: bool = True,
    max_tries: int = 20,
    workers: int | str = "auto",
    resume: bool = False,
) -> dict:
    """Write ``n`` sampled molecules to ``path`` (format from the suffix); returns a summary.

    The file appears only when complete: chunks are written as complete files into the folder
    ``<path>.partial/`` (see :class:`PartialRun`) and joined into ``path`` at the end, so a
    refused option, an error, Ctrl-C or a kill leaves an existing ``path`` as it was, and a killed
    run keeps every whole chunk (a Parquet chunk included). ``resume=True`` continues such a run
    from its last whole chunk and writes exactly the file an uninterrupted run would have.

    Args:
        model: an object with ``sample()`` (e.g. from :func:`molgen.load_pretrained`).
        temperature: ``None`` for the model's own default.
        grammar: SMILES models only: ``False`` samples without the syntax masks; ``None`` keeps
            the default (on).
        prior: latent models only: ``"standard"`` draws from N(0, I) instead of the fitted prior.
        max_ring: graph-VAE only: largest ring the decoder may close (0: no limit; ``None``: the model's).
        ring_rules: graph-VAE only: ``False`` allows bridged systems and fused 3-/4-membered rings.
        precision: SMILES models only: ``"auto"``, ``"fp32"`` or ``"bf16"`` (see ``SmilesGPT.sample``);
            ``None`` keeps the default (auto).
        n: rows to write. With ``unique`` or ``valid_only`` sampling goes on until ``n`` rows pass,
            up to ``max_tries * n`` draws; a model that cannot give that many (greedy decoding has
            one answer) raises :class:`IncompleteRun` and keeps the rows in the ``.partial`` folder.
        unique: keep the first occurrence of each canonical SMILES only.
        valid_only: drop molecules RDKit cannot parse.
        chunk_size: rows per chunk, rounded down to whole batches (at least one).
        workers: processes that draw batches on a CPU (``"auto"``: one per PyTorch thread).
        resume: continue the interrupted run in ``<path>.partial/`` (started afresh when there is none).

    Returns:
        ``{"path", "written", "sampled", "valid", "duplicates_dropped", "invalid_dropped", "seconds",
        "resumed_rows"}``.

    Raises:
        InputError: a bad option (before any file is touched), or an interrupted run in the way.
        IncompleteRun: fewer than ``n`` rows passed the filters within ``max_tries * n`` draws.
        Interrupted: Ctrl-C (a ``KeyboardInterrupt``); its message says what was kept and how to go on.
        WorkerDied: a sampling process died; the message says what was kept.
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from molgen import chem
    from molgen.io import table_format
    from molgen.models import resolve_device
    from molgen.parallel import WorkerDied

    path = Path(path)
    table_format(path)  # every refusal before any file is touched
    opts = _sample_opts(model, temperature, grammar, prior, max_ring, ring_rules, precision)
    if hasattr(model, "check_sample_options"):
        model.check_sample_options(n, batch_size=batch_size, workers=workers, **opts)
    if not isinstance(max_tries, int) or max_tries < 1:
        raise InputError(f"max_tries must be a whole number >= 1, got {max_tries!r}")
    dev = resolve_device(device)
    chunk_size = max(1, chunk_size // batch_size) * batch_size  # whole batches: chunks continue one seeded run
    request = {"n": n, "seed": seed, "options": opts, "unique": unique, "valid_only": valid_only,
               "batch_size": batch_size, "chunk_size": chunk_size, "max_tries": max_tries, "device": dev.type,
               "model": _model_fingerprint(model)}  # fmt: skip
    run = PartialRun.open(path, request, resume)
    seen: set[str] = set(run.canonical_smiles()) if unique else set()
    stats, t0 = run.stats, time.perf_counter()
    resumed = stats["written"]
    columns = [TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    try:
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("sample", total=n, completed=stats["written"])
            while stats["written"] < n and stats["sampled"] < max_tries * n:
                left = n - stats["written"]
                # with filters, ask for a little more than is missing so the last chunk rarely falls short; a
                # part batch ends a chunk, and the next chunk starts at the next batch number all the same
                want = min(chunk_size, left if not (unique or valid_only) else left + left // 4 + 16)
                df = model.sample(want, seed=seed, batch_size=batch_size, device=device, workers=workers,
                                  start_batch=stats["next_batch"], **opts)  # fmt: skip
                counts = {"sampled": len(df), "valid": int(df["valid"].sum()), "duplicates_dropped": 0,
                          "invalid_dropped": 0, "next_batch": -(-want // batch_size)}  # fmt: skip
                if valid_only:
                    counts["invalid_dropped"] = int((~df["valid"]).sum())
                    df = df[df["valid"]]
                if unique:
                    keys = [chem.canonicalize(s) or s for s in df["smiles"]]
                    first = [k not in seen and not seen.add(k) for k in keys]
                    counts["duplicates_dropped"] = len(first) - sum(first)
                    df = df[first]
                run.add_chunk(df.iloc[:left].reset_index(drop=True), counts)
                bar.update(task, completed=stats["written"])
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {run.kept()}; {run.how_to_continue()}") from None
    except WorkerDied as err:
        raise WorkerDied(f"{err} {run.kept().capitalize()}; {run.how_to_continue()}") from None
    if stats["written"] < n:
        why = ("greedy decoding (temperature 0) draws the same molecules again; raise the temperature"
               if opts.get("temperature", None) == 0 and unique else
               "too few sampled molecules passed --unique / --valid-only; lower -n or drop a filter")
        raise IncompleteRun(f"only {stats['written']:,} of {n:,} rows after sampling {stats['sampled']:,} "
                            f"({stats['duplicates_dropped']:,} duplicates and {stats['invalid_dropped']:,} invalid "
                            f"dropped; the limit is {max_tries} x n draws): {why}. The {stats['written']:,} rows "
                            f"are in {run.folder}/; {path} was not written")  # fmt: skip
    run.finish()
    return {"path": str(path), **{k: stats[k] for k in ("written", "sampled", "valid", "duplicates_dropped",
                                                         "invalid_dropped")},
            "seconds": round(time.perf_counter() - t0, 2), "resumed_rows": resumed}  # fmt: skip


class IncompleteRun(MolgenError):
    """A filtered run could not reach its row count within its bound on draws."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run that keeps its work; the message says what was kept and how to continue."""


def _model_fingerprint(model) -> str:
    """sha256 of a model's type, configuration and weights: a resumed run must use the same model."""
    import hashlib

    import torch

    digest = hashlib.sha256(type(model).__name__.encode())
    config = getattr(model, "config", None)
    digest.update(repr(config).encode())
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class PartialRun:
    """The chunks of one ``generate_to_file`` run, kept in ``<path>.partial/`` until it completes.

    Each chunk is a complete file of the target format (``part-00000.csv`` ...) written under a
    temporary name and renamed, then recorded in ``_run.json`` (also replaced atomically; the underscore keeps Parquet readers off it) with the
    counts and the next batch number. A kill therefore loses at most the chunk being drawn; every
    file in the folder is readable (``pandas.read_parquet(folder)`` reads the Parquet parts at once).
    :meth:`finish` joins the parts into the target under a temporary name, renames it into place
    and removes the folder.
    """

    def __init__(self, path: Path, folder: Path, request: dict, state: dict):
        from molgen.io import table_format

        self.path, self.folder, self.request, self.state = path, folder, request, state
        self.fmt, self.gz = table_format(path)
        self.stats = state["stats"]

    @classmethod
    def open(cls, path: Path, request: dict, resume: bool) -> PartialRun:
        import json

        folder = path.with_name(path.name + ".partial")
        record = folder / "_run.json"
        fresh = {"request": request, "chunks": [],
                 "stats": {"written": 0, "sampled": 0, "valid": 0, "duplicates_dropped": 0, "invalid_dropped": 0,
                           "next_batch": 0}}  # fmt: skip
        if not folder.exists():
            return cls(path, folder, request, fresh)
        try:
            state = json.loads(record.read_text())
        except (OSError, ValueError):
            state = None
        if not resume:
            held = f"{state['stats']['written']:,} rows of an interrupted run" if state else "files of an earlier run"
            raise InputError(f"{folder} holds {held}; continue it with --resume (resume=True) or delete the folder")
        if state is None:
            raise InputError(f"{folder} has no readable _run.json; delete the folder to start again")
        if state["request"] != request:
            diff = [k for k in request if state["request"].get(k) != request[k]]
            raise InputError(f"{folder} holds a run with other settings ({', '.join(diff)} differ); run with the "
                             "same model and options to resume it, or delete the folder to start again")
        run = cls(path, folder, request, state)
        listed = {c["file"] for c in state["chunks"]}
        for stray in folder.iterdir():  # a chunk that was written but not yet recorded is drawn again
            if stray.name != "_run.json" and stray.name not in listed:
                stray.unlink()
        return run

    def _part_name(self, index: int) -> str:
        return f"part-{index:05d}{self.fmt}"

    def add_chunk(self, df, counts: dict) -> None:
        from molgen.files import write_json
        from molgen.io import write_table

        self.folder.mkdir(parents=True, exist_ok=True)
        name = self._part_name(len(self.state["chunks"]))
        if len(df):
            write_table(df, self.folder / name)
        for key, value in counts.items():
            self.stats[key] += value
        self.stats["written"] += len(df)
        self.state["chunks"].append({"file": name if len(df) else None, "rows": len(df)})
        write_json(self.folder / "_run.json", self.state, indent=1)

    def canonical_smiles(self) -> list[str]:
        from molgen import chem

        return [chem.canonicalize(s) or s for part in self._parts() for s in self._read(part)["smiles"]]

    def _parts(self) -> list[Path]:
        return [self.folder / c["file"] for c in self.state["chunks"] if c["file"]]

    def _read(self, part: Path):
        from molgen.io import read_table

        return read_table(part)

    def kept(self) -> str:
        rows = self.stats["written"]
        if not rows:
            return f"no rows were written; {self.path} was not touched"
        return (f"{rows:,} of {self.request['n']:,} rows are kept in {self.folder}/ "
                f"({len(self._parts())} complete chunk files); {self.path} was not touched")

    def how_to_continue(self) -> str:
        return "run the same command with --resume to continue (same seed, same molecules)"

    def finish(self) -> None:
        """Join the parts into the target file, atomically, and remove the folder."""
        import gzip
        import shutil

        from molgen.files import atomic_path
        from molgen.io import write_table

        parts = self._parts()
        with atomic_path(self.path) as tmp:
            if not parts:
                write_table(pd.DataFrame({"smiles": [], "valid": []}), tmp)
            elif self.fmt == ".parquet":
                import pyarrow.parquet as pq

                schema = pq.read_schema(parts[0])
                with pq.ParquetWriter(tmp, schema) as writer:
                    for part in parts:
                        writer.write_table(pq.read_table(part).cast(schema))
            else:
                opener = gzip.open if self.gz else open
                with opener(tmp, "wb") as out:
                    for k, part in enumerate(parts):
                        with open(part, "rb") as src:
                            if k and self.fmt != ".sdf":
                                src.readline()  # each text part repeats the header line
                            shutil.copyfileobj(src, out)
        shutil.rmtree(self.folder)


class _CallableModule(type(sys.modules[__name__])):
    """Importing ``molgen.sample`` rebinds ``molgen.sample`` to this module, shadowing the public
    function ``mg.sample``; making the module callable keeps ``mg.sample(model, n)`` working."""

    def __call__(self, *args, **kwargs):
        return sample(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
