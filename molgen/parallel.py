"""The one place molgen starts processes: worker pools, per-batch seeds, thread counts, progress bars.

Three kinds of work fan out over a CPU's cores: sampling (whole seeded batches of a model, see
:func:`map_batches`), scoring and metrics (chunks of molecules, :func:`parallel_map`) and graph
featurisation. They share one pool, :func:`run_ordered`, built on the standard library's
``ProcessPoolExecutor``, which notices a worker that died (killed by the out-of-memory killer, a
crash inside RDKit) and fails the pending work instead of waiting for it for ever, as
``multiprocessing.Pool`` does. A dead worker becomes :class:`WorkerDied`: one line that names the
exit signal, the likely cause and what to lower. Ctrl-C stops the workers at once (they ignore
SIGINT themselves; the parent ends them).

Sampling a small model on a CPU is many small tensor operations per token plus RDKit's parse of
every molecule; PyTorch's threads share out each operation and barely gain (1.4x on two cores),
and RDKit holds the GIL. Whole batches in separate processes, one thread each, scale with cores
(README: Sampling speed). Two rules make the result independent of how the work is shared out:

- batch ``i`` of a run with seed ``s`` draws from its own generator, seeded by
  :func:`batch_seed` ``(s, i)``, so the same seed gives the same molecules with one worker or
  eight, and a long run written in chunks (``molgen generate``) equals one ``sample()`` call;
- results come back in input order.

Workers are forked (Linux only): the child inherits the model already in memory, so no weights
are copied or pickled, only batch numbers out and results back. On macOS and Windows, inside a
daemonic process (a DataLoader worker, say) or on a GPU, work runs in this process.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import numpy as np

from molgen.errors import InputError, MolgenError

__all__ = ["batch_seed", "batch_plan", "check_batch_size", "check_workers", "resolve_workers", "map_batches", "run_ordered",
           "parallel_map", "progress_bar", "WorkerDied", "fork_available"]

T = TypeVar("T")
R = TypeVar("R")

_TASK: Callable | None = None  # the function forked workers run; set only while a pool lives
_CHUNK = 256  # molecules per task sent to a scoring worker: large enough to hide the pipe, small for progress


class WorkerDied(MolgenError):
    """A worker process ended without finishing its work (killed, out of memory, a native crash)."""


def fork_available() -> bool:
    """Whether worker processes may be forked here: Linux, and not inside a daemonic process.

    macOS offers fork but its system libraries are not safe in a forked child.
    """
    return sys.platform.startswith("linux") and not mp.current_process().daemon


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index`` of a run seeded ``seed`` (NumPy's SeedSequence of the pair).

    Unlike ``seed + index`` it does not make run 0's second batch equal to run 1's first, so
    runs with seeds 0, 1, 2 ... never share molecules by construction.
    """
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def check_batch_size(batch_size: int) -> None:
    """A clear error for a batch size below 1 (before a division or a ``range`` step meets it)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")


def batch_plan(n: int, batch_size: int, start_batch: int = 0) -> list[tuple[int, int, int]]:
    """``(batch number, first row, rows)`` of each batch of an ``n``-row run that starts at batch
    ``start_batch``; the batch number is what :func:`batch_seed` seeds."""
    check_batch_size(batch_size)
    return [(start_batch + i, start, min(batch_size, n - start)) for i, start in enumerate(range(0, n, batch_size))]


def check_workers(workers) -> None:
    """A clear error for a worker count that is neither ``"auto"`` (or ``None``) nor a whole number >= 1."""
    if not (workers in (None, "auto") or (isinstance(workers, (int, np.integer)) and not isinstance(workers, bool)
                                            and workers >= 1)):
        raise InputError(f"workers must be 'auto' or a whole number >= 1, got {workers!r}")


def resolve_workers(workers: int | str | None, device, n_batches: int, bytes_each: int = 0) -> int:
    """How many processes draw ``n_batches`` batches on ``device``.

    ``"auto"`` (or ``None``): on a CPU, one process per PyTorch thread (``torch.get_num_threads()``,
    so ``OMP_NUM_THREADS=1`` or ``torch.set_num_threads(1)`` keeps sampling in one process), but
    no more than fit in half the memory free now when each needs ``bytes_each`` (a batch's
    key/value cache, say); on a GPU, one. An integer asks for that many, each on one thread.
    Never more than there are batches.
    """
    import torch

    check_workers(workers)
    if workers in (None, "auto"):
        wanted = torch.get_num_threads() if device.type == "cpu" else 1
        if bytes_each > 0 and (free := _free_memory()) is not None:
            wanted = min(wanted, free // 2 // bytes_each)
    else:
        wanted = int(workers)
    if device.type != "cpu" or not fork_available():
        return 1
    return max(1, min(wanted, n_batches))


def _free_memory() -> int | None:
    """Bytes of memory available now (Linux's MemAvailable); ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _init_worker() -> None:
    # the parent handles Ctrl-C and ends the workers; a worker that took SIGINT itself would print
    # a traceback per process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # and SIGTERM ends a worker quietly (the parent's terminate() at a stop), not through the CLI's
    # SIGTERM-as-Ctrl-C handler it inherited by fork
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if "torch" in sys.modules:  # one thread: see run_ordered
        sys.modules["torch"].set_num_threads(1)


def _run(item):
    return _TASK(item)


def _describe_death(codes: list[int | None], hint: str) -> str:
    """One line on why workers died, from their exit codes (negative: the signal that ended them)."""
    dead = [c for c in codes if c not in (None, 0, -signal.SIGTERM)]
    code = dead[0] if dead else None
    if code == -signal.SIGKILL:
        why = "was killed (SIGKILL): most likely the out-of-memory killer (see `dmesg`)"
    elif code == -signal.SIGSEGV:
        why = "crashed (SIGSEGV) inside a native library (RDKit or PyTorch)"
    elif code is not None and code < 0:
        why = f"was ended by signal {signal.Signals(-code).name}"
    elif code is not None:
        why = f"exited with code {code}"
    else:
        why = "ended unexpectedly"
    return f"a worker process {why}; the run stopped instead of waiting for it. {hint}".strip()


def run_ordered(fn: Callable[[T], R], items: Sequence[T], workers: int, hint: str = "") -> Iterator[R]:
    """Yield ``fn(x)`` for each of ``items`` in order, computed in ``workers`` forked processes.

    ``fn`` may be a closure: forked workers inherit it, only items and results are pickled. With
    ``workers`` <= 1, one item, or no fork here, it runs in this process. Each worker runs PyTorch
    on one thread: GNU OpenMP, which PyTorch's CPU builds use, hangs in a forked child that opens
    a parallel region after its parent has used one, and one thread never opens one.

    Raises:
        WorkerDied: a worker ended without answering; ``hint`` says what to lower (``--workers`` ...).
        Whatever ``fn`` raised in a worker, as a loop would.
    """
    if workers <= 1 or len(items) <= 1 or not fork_available():
        yield from (fn(x) for x in items)
        return
    global _TASK
    if _TASK is not None:  # a pool inside a pool's task: run in this worker
        yield from (fn(x) for x in items)
        return
    _TASK = fn
    pool = ProcessPoolExecutor(min(workers, len(items)), mp_context=mp.get_context("fork"),
                               initializer=_init_worker)
    finished = False
    procs: list = []

    def died() -> WorkerDied:
        for p in procs:
            p.join(timeout=1)
        return WorkerDied(_describe_death([p.exitcode for p in procs], hint))

    try:
        futures = []
        for x in items:
            try:
                futures.append(pool.submit(_run, x))
            except BrokenProcessPool:  # a worker died while the items were still being handed out
                raise died() from None
            if not procs:
                procs = list(pool._processes.values())  # all are forked at the first submit
        for fut in futures:
            try:
                result = fut.result()
            except BrokenProcessPool:
                raise died() from None
            yield result
        finished = True
    finally:
        _TASK = None
        if not finished:  # Ctrl-C, an error, or a consumer that stopped early: end the workers now
            for p in list((pool._processes or {}).values()):
                p.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def map_batches(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` for sampling batches, in ``workers`` forked processes of one thread each."""
    return list(run_ordered(fn, items, workers, hint="Lower --workers or --batch-size (memory grows with both)."))


def parallel_map(fn: Callable, items: Sequence, n_jobs: int = 1, progress: bool = False,
                 description: str = "working", chunk: int = _CHUNK, extra=None,
                 flatten: bool = True) -> list:
    """``fn((chunk_of_items, extra))`` over ``items`` in chunks, in order, on ``n_jobs`` processes.

    With ``flatten`` each call returns one result per item and the results come back as one
    list; otherwise the list holds one result per chunk. With ``n_jobs=1`` or few items it runs
    in this process (no start-up cost).
    """
    chunks = [(list(items[i:i + chunk]), extra) for i in range(0, len(items), chunk)]
    workers = min(n_jobs, len(chunks)) if n_jobs > 1 and len(chunks) > 2 else 1
    out: list = []
    with progress_bar(progress, description, len(items)) as advance:
        results = run_ordered(fn, chunks, workers, hint="Lower --n-jobs, or score the file in parts.")
        for (part, _), res in zip(chunks, results, strict=True):
            if flatten:
                out.extend(res)
            else:
                out.append(res)
            advance(len(part))
    return out


@contextlib.contextmanager
def progress_bar(show: bool, description: str, total: int):
    """Yields an ``advance(k)`` callback: a rich progress bar when ``show``, else a no-op."""
    if not show:
        yield lambda k: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda k: bar.advance(task, k)
