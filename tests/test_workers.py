"""Sampling batches in worker processes: seeds per batch, worker counts, order, errors, the draw."""

from __future__ import annotations

import pytest
import torch

from molgen.errors import InputError
from molgen.models import draw
from molgen.parallel import batch_seed, map_batches, resolve_workers

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_runs_with_neighbouring_seeds_share_no_batch_seed():
    seeds = {(s, i): batch_seed(s, i) for s in range(20) for i in range(50)}
    assert len(set(seeds.values())) == len(seeds)  # seed + index would make (0, 1) and (1, 0) equal
    # pinned: every seeded file (molgen generate --seed S) is drawn from these, so a change in how
    # they are derived changes every user's molecules and must be a deliberate one
    assert [batch_seed(0, 0), batch_seed(3, 4), batch_seed(0, 1), batch_seed(1, 0)] == [
        2968811710, 2746448868, 3964924996, 1835504127,
    ]


def test_worker_count_rules(monkeypatch):
    import molgen.parallel

    assert resolve_workers(3, CPU, n_batches=10) == 3
    assert resolve_workers(8, CPU, n_batches=2) == 2  # never more than there are batches
    assert resolve_workers(4, CUDA, n_batches=10) == 1  # one process drives a GPU
    monkeypatch.setattr(molgen.parallel, "_free_memory", lambda: 10 * 2**30)
    torch.set_num_threads(8)
    try:
        assert resolve_workers("auto", CPU, n_batches=10) == 8  # auto follows PyTorch's threads
        assert resolve_workers("auto", CPU, n_batches=10, bytes_each=2 * 2**30) == 2  # ... within half the free memory
        assert resolve_workers("auto", CPU, n_batches=10, bytes_each=8 * 2**30) == 1
        assert resolve_workers(4, CPU, n_batches=10, bytes_each=8 * 2**30) == 4  # a number asked for is a number
    finally:
        torch.set_num_threads(1)
    assert resolve_workers("auto", CPU, n_batches=10) == 1
    monkeypatch.setattr(molgen.parallel.sys, "platform", "darwin")
    assert resolve_workers(4, CPU, n_batches=10) == 1  # no fork where it is unsafe
    for bad in (0, -2, "many", 1.5, True):
        with pytest.raises(InputError, match="workers must be"):
            resolve_workers(bad, CPU, n_batches=4)


def _square_or_fail(x: int) -> int:
    if x == 5:
        raise ValueError("batch 5 failed")
    return x * x


def test_map_batches_keeps_order_and_raises_a_workers_error():
    assert map_batches(_square_or_fail, list(range(5)), workers=2) == [0, 1, 4, 9, 16]
    assert map_batches(lambda x: x + 1, [1, 2, 3], workers=3) == [2, 3, 4]  # a closure reaches forked workers
    with pytest.raises(ValueError, match="batch 5 failed"):
        map_batches(_square_or_fail, list(range(8)), workers=2)


def test_draw_follows_the_probabilities_and_never_draws_an_impossible_category():
    probs = torch.tensor([[0.0, 0.2, 0.0, 0.5, 0.3, 0.0]]).repeat(100_000, 1)
    counts = torch.bincount(draw(probs, torch.Generator().manual_seed(0)), minlength=6) / 100_000
    torch.testing.assert_close(counts, probs[0], atol=0.006, rtol=0)
    assert counts[[0, 2, 5]].sum() == 0
    one_hot = torch.zeros(3, 5)
    one_hot[0, 4], one_hot[1, 0], one_hot[2, 2] = 1.0, 1.0, 1e-30  # unnormalised rows are fine
    assert draw(one_hot, torch.Generator().manual_seed(1)).tolist() == [4, 0, 2]


def test_workers_finish_after_the_parent_used_several_threads():
    """A forked worker that opened an OpenMP region after its parent used one would hang for ever;
    the workers compute on one thread. Run in a subprocess so that a hang fails instead of blocking."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from molgen.parallel import map_batches\n"
        "torch.set_num_threads(4)\n"
        "a = torch.randn(1000, 1000); (a @ a).sum()\n"
        "def f(i):\n"
        "    x = torch.randn(800, 800)\n"
        "    return torch.get_num_threads(), round(float((x @ x).abs().sum()) > 0)\n"
        "print(map_batches(f, list(range(4)), workers=2))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(1, 1), (1, 1), (1, 1), (1, 1)]"


def test_a_dead_worker_stops_the_run_with_one_line_instead_of_hanging():
    """multiprocessing.Pool waits for ever for the task of a killed worker; molgen's pool fails it."""
    import subprocess
    import sys

    code = (
        "import os, signal, time\n"
        "from molgen.parallel import map_batches, WorkerDied\n"
        "def die_on_three(x):\n"
        "    if x == 3:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does\n"
        "    time.sleep(0.05)\n"
        "    return x\n"
        "try:\n"
        "    map_batches(die_on_three, list(range(8)), workers=2)\n"
        "except WorkerDied as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "killed (SIGKILL): most likely the out-of-memory killer" in out.stdout
    assert "--workers or --batch-size" in out.stdout


def test_parallel_map_names_a_crashed_worker():
    import os
    import signal

    from molgen.parallel import WorkerDied, parallel_map

    def crash_on_700(args):
        items, _ = args
        if 700 in items:
            os.kill(os.getpid(), signal.SIGSEGV)
        return [i * 2 for i in items]

    assert parallel_map(crash_on_700, list(range(600)), n_jobs=2) == [i * 2 for i in range(600)]
    with pytest.raises(WorkerDied, match="SIGSEGV"):
        parallel_map(crash_on_700, list(range(2000)), n_jobs=2)
