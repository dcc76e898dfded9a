"""Seeded sampling batches, drawn in parallel worker processes on a CPU.

Sampling a small model on a CPU is many small tensor operations per token plus RDKit's parse of
every molecule; PyTorch's threads share out each operation and barely gain (1.4x on two cores),
and RDKit holds the GIL. Whole batches in separate processes, one thread each, scale with cores
(README: Sampling speed). Two rules make the result independent of how the work is shared out:

- batch ``i`` of a run with seed ``s`` draws from its own generator, seeded by
  :func:`batch_seed` ``(s, i)``, so the same seed gives the same molecules with one worker or
  eight, and a long run written in chunks (``molgen generate``) equals one ``sample()`` call;
- results come back in batch order.

Workers are forked (Linux only): the child inherits the model already in memory, so no weights
are copied or pickled, only batch numbers out and SMILES back. On macOS and Windows, inside a
daemonic process (a DataLoader worker, say) or on a GPU, batches run in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch

from molgen.errors import InputError

__all__ = ["batch_seed", "batch_plan", "check_batch_size", "resolve_workers", "map_batches"]

T = TypeVar("T")
R = TypeVar("R")

_TASK: Callable | None = None  # the function forked workers run; set only while a pool lives


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index`` of a run seeded ``seed`` (NumPy's SeedSequence of the pair).

    Unlike ``seed + index`` it does not make run 0's second batch equal to run 1's first, so
    runs with seeds 0, 1, 2 ... never share molecules by construction.
    """
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def check_batch_size(batch_size: int) -> None:
    """A clear error for a batch size below 1 (before a division or a ``range`` step meets it)."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")


def batch_plan(n: int, batch_size: int, start_batch: int = 0) -> list[tuple[int, int, int]]:
    """``(batch number, first row, rows)`` of each batch of an ``n``-row run that starts at batch
    ``start_batch``; the batch number is what :func:`batch_seed` seeds."""
    check_batch_size(batch_size)
    return [(start_batch + i, start, min(batch_size, n - start)) for i, start in enumerate(range(0, n, batch_size))]


def resolve_workers(workers: int | str | None, device: torch.device, n_batches: int, bytes_each: int = 0) -> int:
    """How many processes draw ``n_batches`` batches on ``device``.

    ``"auto"`` (or ``None``): on a CPU, one process per PyTorch thread (``torch.get_num_threads()``,
    so ``OMP_NUM_THREADS=1`` or ``torch.set_num_threads(1)`` keeps sampling in one process), but
    no more than fit in half the memory free now when each needs ``bytes_each`` (a batch's
    key/value cache, say); on a GPU, one. An integer asks for that many, each on one thread.
    Never more than there are batches.
    """
    if workers in (None, "auto"):
        wanted = torch.get_num_threads() if device.type == "cpu" else 1
        if bytes_each > 0 and (free := _free_memory()) is not None:
            wanted = min(wanted, free // 2 // bytes_each)
    elif isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
        wanted = workers
    else:
        raise InputError(f"workers must be 'auto' or a whole number >= 1, got {workers!r}")
    if device.type != "cpu" or not sys.platform.startswith("linux") or mp.current_process().daemon:
        return 1  # macOS offers fork but its system libraries are not safe in a forked child
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


def map_batches(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]``, in ``workers`` forked processes when ``workers`` > 1.

    Each worker runs PyTorch on exactly one thread: GNU OpenMP, which PyTorch's CPU builds use, hangs
    in a forked child that opens a parallel region after its parent has used one, and one thread
    never opens one. An error in a worker is raised here, as it would be in a loop.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    global _TASK
    _TASK = fn
    try:
        with mp.get_context("fork").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return pool.map(_run, items, chunksize=1)
    finally:
        _TASK = None


def _run(item):
    return _TASK(item)
