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

from molgen.errors import InputError

__all__ = ["sample", "generate_to_file"]

FORMATS = (".csv", ".smi", ".sdf", ".parquet")


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
) -> dict:
    """Write ``n`` sampled molecules to ``path`` (format from the suffix); returns a summary.

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
            up to ``max_tries * n`` draws (a model that rarely gives valid molecules stops there).
        unique: keep the first occurrence of each canonical SMILES only.
        valid_only: drop molecules RDKit cannot parse.
        chunk_size: rows per chunk, rounded down to whole batches (at least one).
        workers: processes that draw batches on a CPU (``"auto"``: one per PyTorch thread).

    Returns:
        ``{"path", "written", "sampled", "valid", "duplicates_dropped", "invalid_dropped", "seconds"}``.
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from molgen import chem
    from molgen.parallel import check_batch_size

    path = Path(path)
    fmt = "".join(path.suffixes[-1:]).lower()
    if fmt not in FORMATS:
        raise InputError(f"cannot write {path}: the suffix must be one of {', '.join(FORMATS)}")
    # every refusal before the writer, which deletes an existing file of that name
    opts = _sample_opts(model, temperature, grammar, prior, max_ring, ring_rules, precision)
    check_batch_size(batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = _ChunkWriter(path, fmt)
    seen: set[str] = set()
    stats = {"sampled": 0, "valid": 0, "duplicates_dropped": 0, "invalid_dropped": 0}
    chunk_size = max(1, chunk_size // batch_size) * batch_size  # whole batches: chunks continue one seeded run
    written, next_batch, t0 = 0, 0, time.perf_counter()
    columns = [TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("sample", total=n)
        while written < n and stats["sampled"] < max_tries * n:
            left = n - written
            # with filters, ask for a little more than is missing so the last chunk rarely falls short; a
            # part batch ends a chunk, and the next chunk starts at the next batch number all the same
            want = min(chunk_size, left if not (unique or valid_only) else left + left // 4 + 16)
            df = model.sample(want, seed=seed, batch_size=batch_size, device=device, workers=workers,
                              start_batch=next_batch, **opts)  # fmt: skip
            next_batch += -(-want // batch_size)
            stats["sampled"] += len(df)
            stats["valid"] += int(df["valid"].sum())
            if valid_only:
                stats["invalid_dropped"] += int((~df["valid"]).sum())
                df = df[df["valid"]]
            if unique:
                keys = [chem.canonicalize(s) or s for s in df["smiles"]]
                first = [k not in seen and not seen.add(k) for k in keys]
                stats["duplicates_dropped"] += len(first) - sum(first)
                df = df[first]
            df = df.iloc[: n - written]
            writer.write(df)
            written += len(df)
            bar.update(task, completed=written)
    writer.close()
    return {"path": str(path), "written": written, **stats, "seconds": round(time.perf_counter() - t0, 2)}


class _ChunkWriter:
    """Appends DataFrame chunks to one file, in the layouts of :func:`molgen.io.write_table`."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = path, fmt
        self._first, self._parquet = True, None
        if path.exists():
            path.unlink()

    def write(self, df: pd.DataFrame) -> None:
        if self.fmt == ".csv":
            df.to_csv(self.path, mode="w" if self._first else "a", header=self._first, index=False)
        elif self.fmt == ".smi":
            # SMILES first, then the other columns, tab-separated with a header (read back by molgen.io)
            df.to_csv(self.path, sep="\t", mode="w" if self._first else "a", header=self._first, index=False)
        elif self.fmt == ".parquet":
            self._write_parquet(df)
        else:
            self._write_sdf(df)
        self._first = False

    def _write_parquet(self, df: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, table.schema)
        self._parquet.write_table(table.cast(self._parquet.schema))

    def _write_sdf(self, df: pd.DataFrame) -> None:
        # SDF records concatenate, so each chunk goes through molgen.io's writer (same fields,
        # invalid rows as empty records holding their text) and is appended
        from molgen.io import write_table

        part = self.path.with_name(self.path.name + ".part.sdf")
        write_table(df, part)
        with open(self.path, "ab") as out:
            out.write(part.read_bytes())
        part.unlink()

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._first:  # nothing written: still leave a file with the header
            self.write(pd.DataFrame({"smiles": [], "valid": []}))
            self.close()


class _CallableModule(type(sys.modules[__name__])):
    """Importing ``molgen.sample`` rebinds ``molgen.sample`` to this module, shadowing the public
    function ``mg.sample``; making the module callable keeps ``mg.sample(model, n)`` working."""

    def __call__(self, *args, **kwargs):
        return sample(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
