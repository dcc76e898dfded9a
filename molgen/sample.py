"""Sampling: a model's ids (or graphs) turned into tables of molecules, and tables into files.

The models produce ids: ``SmilesGPT.generate`` token ids, ``GraphVAE.decode_graphs`` dense graphs,
each for one batch and optionally from a ``prefix``. Everything between that and a chemist's table
lives here: the batch plan and its per-batch seeds, worker processes, the precision policy, RDKit
validity, DataFrames and files.

``mg.sample(model, n, seed=...)`` returns ``smiles`` and ``valid`` first (the GPT adds
``log_likelihood``). The same ``seed`` and ``batch_size`` give the same molecules whatever
``workers``: batch ``i`` draws from its own generator (:func:`molgen.parallel.batch_seed`), and
``start_batch`` continues a seeded run. Each kind of model declares its sampling options once, in
:data:`OPTIONS` (``temperature=None`` keeps the kind's default: 1.0 for the GPT, its distribution as
trained; 0 for the graph-VAE, greedy decoding of prior samples); an option another kind has is
refused by name. :func:`generate_to_file` writes one seeded run in chunks of whole batches, so
without filters ``molgen generate -n N --seed S`` writes the molecules of ``mg.sample(model, N,
seed=S)``, in order, and 10^6 molecules never sit in memory at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from molgen import callable_module
from molgen.errors import InputError, MolgenError

__all__ = ["sample", "check_options", "generate_to_file", "OPTIONS", "PRECISIONS", "native_bf16",
           "computes_in_bf16", "IncompleteRun", "Interrupted", "PartialRun", "parse_shard", "shard_range", "join_parts"]

#: ``precision`` values for SMILES models; ``auto`` is bf16 where the device has it natively
PRECISIONS = ("auto", "fp32", "bf16")

#: each kind of model's sampling options and their defaults (``model_type`` -> option -> default)
OPTIONS: dict[str, dict[str, object]] = {
    "gpt": {"temperature": 1.0, "top_k": None, "top_p": None, "condition": None, "grammar": True,
            "precision": "auto", "prefix": None, "scaffold": None},
    "graph_vae": {"temperature": 0.0, "prior": None, "max_ring": None, "ring_rules": None, "prefix": None,
                  "scaffold": None},
}

# why a kind of model lacks an option another kind has (the CLI names its flag)
_LACKS = {
    "grammar": "has no SMILES grammar option: it builds molecules as graphs under valence rules already; "
    "leave --grammar/--no-grammar out",
    "prior": "has no latent prior to choose: it samples SMILES token by token; leave --prior out",
    "max_ring": "has no ring-size limit: it writes SMILES token by token; leave --max-ring out",
    "ring_rules": "has no ring rules: it writes SMILES token by token; leave --ring-rules/--no-ring-rules out",
    "precision": "has no precision option: it decodes in float32; leave --precision out",
    "top_k": "has no top-k option: it decodes graphs", "top_p": "has no top-p option: it decodes graphs",
    "condition": "is not conditional",
}


def _kind(model) -> str:
    kind = getattr(model, "model_type", None)
    if kind not in OPTIONS:
        raise InputError(f"cannot sample a {type(model).__name__}: molgen samples {', '.join(OPTIONS)} models")
    return kind


def check_sampling(n, temperature=None, batch_size: int = 1024, workers="auto", top_k=None, top_p=None) -> None:
    """The checks :func:`sample` makes for every kind of model (``molgen generate`` through
    :func:`check_options`), so the API and the CLI refuse the same things, one line each."""
    import math

    import numpy as np

    from molgen.parallel import check_batch_size, check_workers

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"the number of molecules must be a whole number >= 1, got {n!r}")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not math.isfinite(temperature) or temperature < 0):
        raise InputError(f"temperature must be a number >= 0 (0 = greedy decoding), got {temperature!r}")
    check_batch_size(batch_size)
    check_workers(workers)
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise InputError(f"top_k must be a whole number >= 1, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise InputError(f"top_p must be in (0, 1], got {top_p!r}")


def check_options(model, n: int, batch_size: int = 1024, workers="auto", **options) -> dict:
    """Every check :func:`sample` makes, before anything runs; returns the options with defaults filled in.

    ``None`` for an option keeps the kind's default. ``molgen generate`` calls this before it
    touches a file, so the API and the command line accept and refuse the same things.
    """
    kind = _kind(model)
    for name, value in options.items():
        if name not in OPTIONS[kind] and value is not None:
            raise InputError(f"{type(model).__name__} {_LACKS.get(name, f'has no sampling option {name!r}')}")
    opts = {k: (options.get(k) if options.get(k) is not None else default) for k, default in OPTIONS[kind].items()}
    check_sampling(n, opts["temperature"], batch_size, workers, opts.get("top_k"), opts.get("top_p"))
    if kind == "gpt":
        from molgen.models.gpt import condition_rows

        model._need_tokenizer()
        _check_precision(opts["precision"])
        condition_rows(opts["condition"], n, model.config)  # names and values, before anything runs
    else:
        if opts["prior"] not in (None, "fitted", "standard"):
            raise InputError(f"prior must be 'fitted' or 'standard', not {opts['prior']!r}")
        if opts["prior"] == "fitted" and not model.config.fitted_prior:
            raise InputError("this model has no fitted prior: call model.fit_prior(smiles) first, or sample the standard one")
        model._ring_options(opts["max_ring"], opts["ring_rules"])
    if opts["scaffold"] is not None:
        _check_scaffold(model, opts)
    return opts


def _check_scaffold(model, opts: dict) -> None:
    """A scaffold is parsed and written in the model's terms before anything runs (one InputError line)."""
    if opts["prefix"]:
        raise InputError("give a scaffold or a prefix, not both")
    if model.model_type == "gpt":
        from molgen.models.scaffold import ScaffoldTemplate

        if not opts["grammar"]:
            raise InputError("scaffold decoding needs the SMILES grammar: leave --no-grammar (grammar=False) out")
        ScaffoldTemplate.from_smiles(opts["scaffold"], model.tokenizer)
    else:
        model.scaffold_graphs(opts["scaffold"], 1, opts["max_ring"], opts["ring_rules"])


def sample(model, n: int, seed: int = 0, batch_size: int = 1024, device=None, workers="auto",
           start_batch: int = 0, **options) -> pd.DataFrame:  # fmt: skip
    """Sample ``n`` molecules from a model object or a shipped name / checkpoint folder.

    Args:
        model: a SmilesGPT or GraphVAE (e.g. from :func:`molgen.load_pretrained`), or its name.
        seed: same seed and ``batch_size``, same molecules (whatever ``workers``).
        batch_size: rows drawn at once; batch ``i`` has its own seeded generator.
        device: where to run (``None``: where the model is; ``"auto"``: CUDA when present).
        workers: processes that draw batches on a CPU (``"auto"``: one per PyTorch thread, each on
            one thread; 1: this process only); see :mod:`molgen.parallel`.
        start_batch: continue a seeded run where an earlier call stopped (``sample(m, 2048)`` is
            ``sample(m, 1024)`` followed by ``sample(m, 1024, start_batch=1)`` at ``batch_size`` 1,024).
        **options: the kind's options (:data:`OPTIONS`). SMILES GPT: ``temperature`` (1.0),
            ``top_k``, ``top_p``, ``condition`` (a conditional model's target properties as raw
            values by name, ``{"logp": 2.5, "tpsa": 60}``, one number or ``n`` each; names the model
            was not trained on are refused; see :func:`molgen.models.gpt.condition_rows`),
            ``grammar`` (True: mask tokens that break SMILES syntax; False samples the raw model),
            ``precision`` (``"auto"`` computes in bf16 with float32 sums where the device
            multiplies bf16 natively, :func:`native_bf16`, else float32; ``"fp32"``/``"bf16"``
            force one; bf16 draws other molecules from the same seed, of the same quality, and
            ``log_likelihood`` is then good to about 0.1 nats), ``prefix`` (a SMILES fragment, in
            the model's spelling, that every row starts with). Graph-VAE: ``temperature`` (0:
            greedy decoding of latent points, as JT-VAE samples; 1 samples the decoder's
            distribution), ``prior`` (``"fitted"`` where the model has one, or ``"standard"``
            N(0, I)), ``max_ring`` / ``ring_rules`` (``None``: the model's), ``prefix`` (a SMILES,
            e.g. a scaffold, whose atoms and bonds every decode starts from and keeps).
            Both kinds: ``scaffold`` (a SMILES with ``[*]`` at the attachment points, e.g.
            ``"c1ccc([*])cc1C(=O)N[*]"``; without ``[*]`` any atom with a hydrogen may grow): the GPT
            writes the scaffold's tokens and samples only the decorations
            (:mod:`molgen.models.scaffold`), the graph-VAE decodes from the scaffold's atoms and bonds
            (:meth:`~molgen.models.graph_vae.GraphVAE.scaffold_graphs`); the table gains
            ``contains_scaffold`` (RDKit substructure match of the scaffold without its ``[*]``).

    Returns:
        One row per sample: ``smiles``, ``valid`` (and ``log_likelihood`` for the GPT, the model's
        log-likelihood of the sampled string in nats; not to be taken for logP). A Kekulé model's
        valid molecules come back in RDKit's aromatic form, atom order kept.
    """
    from molgen.models import resolve_device
    from molgen.parallel import batch_plan, map_batches, resolve_workers

    if isinstance(model, (str, os.PathLike)):
        from molgen.models import load_pretrained

        model = load_pretrained(model, device=device or "auto")
    opts = check_options(model, n, batch_size, workers, **options)
    plan = batch_plan(n, batch_size, start_batch)
    if device is not None:
        model.to(resolve_device(device))
    model.eval()
    kind = _kind(model)
    batch = functools.partial(_gpt_batch if kind == "gpt" else _vae_batch, model, seed=seed, **_prepare(model, n, opts))
    bytes_each = model.cache_bytes(batch_size) if kind == "gpt" else 0
    procs = resolve_workers(workers, model.device, len(plan), bytes_each=bytes_each)
    parts = map_batches(lambda b: batch(*b), [(i, start, rows) for i, start, rows in plan], procs)
    df = pd.concat(parts, ignore_index=True)
    if opts["scaffold"] is not None:
        from molgen.models.scaffold import contains_scaffold

        df["contains_scaffold"] = contains_scaffold(df["smiles"].where(df["valid"], None), opts["scaffold"])
    return df


def _prepare(model, n: int, opts: dict) -> dict:
    """The options as a batch needs them: condition rows, the prefix as ids or graphs."""
    import torch

    opts = dict(opts)
    if model.model_type == "gpt":
        from molgen.models.gpt import condition_rows
        from molgen.tokenize import tokenize

        opts["condition"] = condition_rows(opts["condition"], n, model.config)
        if opts["prefix"]:
            stoi = model.tokenizer.stoi
            missing = [t for t in tokenize(opts["prefix"]) if t not in stoi]
            if missing:
                raise InputError(f"prefix {opts['prefix']!r} holds tokens outside the model's vocabulary: {missing}"
                                 + (" (this model writes Kekulé SMILES: no aromatic atoms)" if model.tokenizer.kekule else ""))
            opts["prefix"] = torch.tensor([stoi[t] for t in tokenize(opts["prefix"])], dtype=torch.long)
        if opts["scaffold"]:
            from molgen.models.scaffold import ScaffoldTemplate

            opts["scaffold"] = ScaffoldTemplate.from_smiles(opts["scaffold"], model.tokenizer)
    return opts  # a graph-VAE prefix stays a SMILES: each batch turns it into graphs for its own rows


def _gpt_batch(model, index: int, start: int, rows: int, seed: int, temperature, top_k, top_p, condition, grammar,
               precision, prefix, scaffold) -> pd.DataFrame:  # fmt: skip
    """Batch ``index`` of the run seeded ``seed``: ``rows`` molecules, validity checked in this process."""
    import torch

    from molgen.chem import to_mol, to_smiles
    from molgen.models.smiles_grammar import SmilesGrammar
    from molgen.parallel import batch_seed

    tok, dev = model.tokenizer, model.device
    gen = torch.Generator(device=dev).manual_seed(batch_seed(seed, index))
    syntax = SmilesGrammar(tok.itos, size=model.config.vocab_size, aromatic=not tok.kekule) if grammar else None
    c = None if condition is None else torch.as_tensor(condition[start : start + rows], dtype=torch.float32)
    with _autocast(dev, precision):
        ids, lp, done = model.generate(rows, temperature, top_k, top_p, c, gen, grammar=syntax, prefix=prefix,
                                       scaffold=scaffold)
    smiles = tok.decode_batch(ids.cpu().numpy())
    # a row cut at block_size is invalid even when its prefix happens to parse
    mols = [to_mol(s) if ok else None for s, ok in zip(smiles, done.tolist(), strict=True)]
    if tok.kekule:  # a Kekulé model's molecules in the usual aromatic form, atom order kept
        smiles = [s if m is None else to_smiles(m, canonical=False) or s for s, m in zip(smiles, mols, strict=True)]
    return pd.DataFrame({"smiles": smiles, "valid": [m is not None for m in mols],
                         "log_likelihood": lp.cpu().numpy()})


def _vae_batch(model, index: int, start: int, rows: int, seed: int, temperature, prior, max_ring, ring_rules,
               prefix, scaffold) -> pd.DataFrame:  # fmt: skip
    import torch

    from molgen.parallel import batch_seed

    with torch.no_grad():
        gen = torch.Generator(device=model.device).manual_seed(int(batch_seed(seed, index)))
        z = model.draw_latents(rows, gen, standard=prior == "standard")
        graphs = model.prefix_graphs(prefix, n=rows) if prefix else None
        if scaffold:
            graphs = model.scaffold_graphs(scaffold, rows, max_ring, ring_rules)
        smiles = model.dense_to_smiles(*model.decode_graphs(z, temperature, gen, max_ring, ring_rules, prefix=graphs))
    return pd.DataFrame({"smiles": smiles, "valid": [s is not None for s in smiles]})


# --- precision policy -----------------------------------------------------------------------------


def native_bf16(device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware: CUDA, or a CPU with AVX512-BF16 or AMX
    (read from ``/proc/cpuinfo``; False where that file is absent, e.g. macOS)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(flags.split())


def _check_precision(precision) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def computes_in_bf16(device, precision: str = "auto") -> bool:
    """Whether sampling with ``precision`` on ``device`` runs in bf16 (what ``"auto"`` means there)."""
    _check_precision(precision)
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def _autocast(device, precision: str = "auto"):
    import torch

    if computes_in_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    scaffold: str | None = None,
    condition: dict | None = None,
    chunk_size: int = 16_384,
    unique: bool = False,
    valid_only: bool = False,
    batch_size: int = 1024,
    device: str = "auto",
    progress: bool = True,
    max_tries: int = 20,
    workers: int | str = "auto",
    resume: bool = False,
    shard: tuple[int, int] | str | None = None,
    on_chunk: Callable[[pd.DataFrame], tuple[pd.DataFrame, object]] | None = None,
    request_extra: dict | None = None,
) -> dict:
    """Write ``n`` sampled molecules to ``path`` (format from the suffix); returns a summary.

    The file appears only when complete: chunks are written as complete files into the folder
    ``<path>.partial/`` (see :class:`PartialRun`) and joined into ``path`` at the end, so a
    refused option, an error, Ctrl-C or a kill leaves an existing ``path`` as it was, and a killed
    run keeps every whole chunk (a Parquet chunk included). ``resume=True`` continues such a run
    from its last whole chunk and writes exactly the file an uninterrupted run would have.

    Args:
        model: a model :func:`sample` takes (e.g. from :func:`molgen.load_pretrained`).
        temperature: ``None`` for the model's own default.
        grammar: SMILES models only: ``False`` samples without the syntax masks; ``None`` keeps
            the default (on).
        prior: latent models only: ``"standard"`` draws from N(0, I) instead of the fitted prior.
        max_ring: graph-VAE only: largest ring the decoder may close (0: no limit; ``None``: the model's).
        ring_rules: graph-VAE only: ``False`` allows bridged systems and fused 3-/4-membered rings.
        precision: SMILES models only: ``"auto"``, ``"fp32"`` or ``"bf16"`` (see :func:`sample`);
            ``None`` keeps the default (auto).
        condition: conditional GPTs only: raw target property values by name, one number each
            (``{"logp": 2.5}``; see :func:`sample`); recorded in the run's request.
        scaffold: a SMILES with ``[*]`` attachment points every molecule is built on (see :func:`sample`);
            the rows gain ``contains_scaffold``.
        n: rows to write. With ``unique`` or ``valid_only`` sampling goes on until ``n`` rows pass,
            up to ``max_tries * n`` draws; a model that cannot give that many (greedy decoding has
            one answer) raises :class:`IncompleteRun` and keeps the rows in the ``.partial`` folder.
        unique: keep the first occurrence of each canonical SMILES only.
        valid_only: drop molecules RDKit cannot parse.
        chunk_size: rows per chunk, rounded down to whole batches (at least one).
        workers: processes that draw batches on a CPU (``"auto"``: one per PyTorch thread).
        resume: continue the interrupted run in ``<path>.partial/`` (started afresh when there is none).
        shard: ``(k, N)`` or ``"k/N"``: write only part ``k`` (1-based) of the ``n``-row run, the
            contiguous batches :func:`shard_range` gives it, so that the files of shards 1..N, joined
            in order, hold the rows of the unsharded run. Refused with ``unique`` and ``valid_only``,
            which top up to ``n`` rows and so depend on every batch before.
        on_chunk: a hook called on each chunk's table (after ``valid_only``, before ``unique``) that
            returns ``(table, keep)``: the same rows with columns added, and a boolean mask (``None``:
            all) of the rows to write. A row it does not keep is *rejected*: counted, not written, and
            it counts toward ``n`` (``n`` is the rows the hook sees), so a sharded run stays exact; a
            repeat of a written molecule, dropped by ``unique``, does not count. It must give the
            same answer for the same rows (resume relies on it). :mod:`molgen.batch` scores with it.
        request_extra: more settings recorded in the run's request (a resume with other values is
            refused), e.g. what ``on_chunk`` does.

    Returns:
        ``{"path", "written", "sampled", "valid", "duplicates_dropped", "invalid_dropped", "rejected",
        "seconds", "resumed_rows"}`` (and ``"shard"``, ``"first_batch"``, ``"rows"`` for a shard).

    Raises:
        InputError: a bad option (before any file is touched), or an interrupted run in the way.
        IncompleteRun: fewer than ``n`` rows passed the filters within ``max_tries * n`` draws.
        Interrupted: Ctrl-C (a ``KeyboardInterrupt``); its message says what was kept and how to go on.
        WorkerDied: a sampling process died; the message says what was kept.
    """
    import time

    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from molgen import chem
    from molgen.io import table_format
    from molgen.models import resolve_device, state_sha256
    from molgen.parallel import WorkerDied

    path = Path(path)
    table_format(path)  # every refusal before any file is touched
    given = {"temperature": temperature, "grammar": grammar, "prior": prior, "max_ring": max_ring,
             "ring_rules": ring_rules, "precision": precision, "condition": condition, "scaffold": scaffold}  # fmt: skip
    check_options(model, n, batch_size, workers, **given)
    opts = {k: v for k, v in given.items() if v is not None}
    if not isinstance(max_tries, int) or max_tries < 1:
        raise InputError(f"max_tries must be a whole number >= 1, got {max_tries!r}")
    dev = resolve_device(device)
    chunk_size = max(1, chunk_size // batch_size) * batch_size  # whole batches: chunks continue one seeded run
    first_batch, total = 0, n
    if shard is not None:
        shard = parse_shard(shard)
        if unique or valid_only:
            raise InputError(f"--shard {shard[0]}/{shard[1]} cannot be combined with --unique or --valid-only: they "
                             "top up to n rows, so a shard's batches would depend on every batch before it. Drop "
                             "them (and filter the joined file), or score with --objective and --min-score, which "
                             "rejects invalid molecules (score 0) without topping up")
        first_batch, total = shard_range(n, batch_size, *shard)
    request = {"n": n, "seed": seed, "options": opts, "unique": unique, "valid_only": valid_only,
               "batch_size": batch_size, "chunk_size": chunk_size, "max_tries": max_tries, "device": dev.type,
               "model": state_sha256(model)}  # fmt: skip
    if shard is not None:  # only where given: a run started before these keys existed still resumes
        request["shard"] = f"{shard[0]}/{shard[1]}"
    request.update(request_extra or {})
    run = PartialRun.open(path, request, resume)
    run.target = total
    seen: set[str] = set(run.canonical_smiles()) if unique else set()
    stats, t0 = run.stats, time.perf_counter()
    stats.setdefault("rejected", 0)
    if not run.state["chunks"]:
        stats["next_batch"] = first_batch

    def done() -> int:  # rows toward n: written, or rejected by on_chunk
        return stats["written"] + stats["rejected"]

    resumed = done()
    columns = [TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    try:
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("sample", total=total, completed=done())
            while done() < total and stats["sampled"] < max_tries * total:
                left = total - done()
                # with filters, ask for a little more than is missing so the last chunk rarely falls short; a
                # part batch ends a chunk, and the next chunk starts at the next batch number all the same
                want = min(chunk_size, left if not (unique or valid_only) else left + left // 4 + 16)
                df = sample(model, want, seed=seed, batch_size=batch_size, device=device, workers=workers,
                            start_batch=stats["next_batch"], **opts)  # fmt: skip
                counts = {"sampled": len(df), "valid": int(df["valid"].sum()), "duplicates_dropped": 0,
                          "invalid_dropped": 0, "rejected": 0, "next_batch": -(-want // batch_size)}  # fmt: skip
                if valid_only:
                    counts["invalid_dropped"] = int((~df["valid"]).sum())
                    df = df[df["valid"]].reset_index(drop=True)
                keep = np.ones(len(df), dtype=bool)
                if on_chunk is not None:
                    df, kept = on_chunk(df)
                    keep = keep if kept is None else np.asarray(kept, dtype=bool)
                write = keep.copy()
                if unique:  # only written molecules enter `seen`, so a resume rebuilds it from the files
                    keys = [chem.canonicalize(s) or s for s in df["smiles"]]
                    write = np.array([bool(k) and key not in seen and not seen.add(key)
                                      for key, k in zip(keys, keep, strict=True)], dtype=bool)  # fmt: skip
                    counts["duplicates_dropped"] = int((keep & ~write).sum())
                # the chunk ends at the row that brings the count to n (a repeat counts for nothing)
                cut = int(np.searchsorted(np.cumsum(write | ~keep), left)) + 1
                counts["rejected"] = int((~keep[:cut]).sum())
                run.add_chunk(df.iloc[:cut][write[:cut]].reset_index(drop=True), counts)
                bar.update(task, completed=done())
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {run.kept()}; {run.how_to_continue()}") from None
    except WorkerDied as err:
        raise WorkerDied(f"{err} {run.kept().capitalize()}; {run.how_to_continue()}") from None
    if done() < total:
        why = ("greedy decoding (temperature 0) draws the same molecules again; raise the temperature"
               if opts.get("temperature", None) == 0 and unique else
               "too few sampled molecules passed --unique / --valid-only; lower -n or drop a filter")
        raise IncompleteRun(f"only {stats['written']:,} of {n:,} rows after sampling {stats['sampled']:,} "
                            f"({stats['duplicates_dropped']:,} duplicates and {stats['invalid_dropped']:,} invalid "
                            f"dropped; the limit is {max_tries} x n draws): {why}. The {stats['written']:,} rows "
                            f"are in {run.folder}/; {path} was not written")  # fmt: skip
    run.finish()
    summary = {"path": str(path), **{k: stats[k] for k in ("written", "sampled", "valid", "duplicates_dropped",
                                                            "invalid_dropped", "rejected")},
               "seconds": round(time.perf_counter() - t0, 2), "resumed_rows": resumed}  # fmt: skip
    if shard is not None:
        summary.update(shard=f"{shard[0]}/{shard[1]}", first_batch=first_batch, rows=total)
    return summary


def parse_shard(shard: tuple[int, int] | str) -> tuple[int, int]:
    """``"k/N"`` or ``(k, N)`` -> ``(k, N)`` with 1 <= k <= N, or one :class:`InputError` line."""
    try:
        k, parts = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (TypeError, ValueError):
        k = parts = None
    if k is None or not 1 <= k <= parts:
        raise InputError(f"--shard takes K/N with 1 <= K <= N (e.g. 3/8, or $SLURM_ARRAY_TASK_ID/8), got {shard!r}")
    return k, parts


def shard_range(n: int, batch_size: int, k: int, parts: int) -> tuple[int, int]:
    """``(first batch, rows)`` of shard ``k`` of ``parts`` of an ``n``-row run in batches of ``batch_size``.

    The run's ``ceil(n / batch_size)`` batches are split into ``parts`` contiguous ranges whose sizes
    differ by at most one batch (shard ``k`` holds batches ``(k-1)*B//parts`` up to ``k*B//parts``);
    only the last shard ends with the run's short last batch, so every batch is drawn at the size,
    and from the seed, that the unsharded run draws it.
    """
    batches = -(-n // batch_size)
    if parts > batches:
        raise InputError(f"--shard {k}/{parts}: {n:,} molecules make only {batches:,} batches of {batch_size:,}; "
                         f"use at most {batches:,} shards, or a smaller --batch-size")
    first, stop = (k - 1) * batches // parts, k * batches // parts
    return first, min(stop * batch_size, n) - first * batch_size


class IncompleteRun(MolgenError):
    """A filtered run could not reach its row count within its bound on draws."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run that keeps its work; the message says what was kept and how to continue."""


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
        self.target = request["n"]  # rows this run writes (a shard's share of n)
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
        self.state.setdefault("columns", [str(c) for c in df.columns])  # for a run that writes no row
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
        return (f"{rows:,} of {self.target:,} rows are kept in {self.folder}/ "
                f"({len(self._parts())} complete chunk files); {self.path} was not touched")

    def how_to_continue(self) -> str:
        return "run the same command with --resume to continue (same seed, same molecules)"

    def finish(self) -> None:
        """Join the parts into the target file, atomically, and remove the folder."""
        import shutil

        join_parts(self._parts(), self.path, columns=self.state.get("columns"))
        shutil.rmtree(self.folder)


def join_parts(parts: list[Path], path: str | os.PathLike, columns: list[str] | None = None) -> Path:
    """Join table files of ``path``'s format, in order, into ``path`` (atomically), streaming.

    Parquet parts are copied row group by row group under the first part's schema; text parts are
    copied byte for byte, each part's header line after the first skipped (SDF has none). No parts
    give an empty table with ``columns`` (default ``smiles``, ``valid``).
    """
    import gzip
    import shutil

    from molgen.files import atomic_path
    from molgen.io import table_format, write_table

    path = Path(path)
    fmt, gz = table_format(path)
    with atomic_path(path) as tmp:
        if not parts:
            write_table(pd.DataFrame({c: [] for c in columns or ("smiles", "valid")}), tmp)
        elif fmt == ".parquet":
            import pyarrow.parquet as pq

            # the schema of a part with rows: an empty part (a shard whose rows were all rejected) has untyped columns
            schema = pq.read_schema(next((p for p in parts if pq.read_metadata(p).num_rows), parts[0]))
            with pq.ParquetWriter(tmp, schema) as writer:
                for part in parts:
                    writer.write_table(pq.read_table(part).cast(schema))
        else:
            opener = gzip.open if gz else open
            with opener(tmp, "wb") as out:
                for k, part in enumerate(parts):
                    with (gzip.open if str(part).endswith(".gz") else open)(part, "rb") as src:
                        if k and fmt != ".sdf":
                            src.readline()  # each text part repeats the header line
                        shutil.copyfileobj(src, out)
    return path


callable_module(__name__)  # mg.sample(...) calls sample() though importing this module rebinds the name
