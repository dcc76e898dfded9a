"""Benchmark batch candidate generation end to end: sample + score + filter + write, at growing n.

For each ``--n`` it runs the real command in a child process,

    molgen generate -m smiles-gpt-moses-small -n N -o OUT.parquet --score \\
        --objective scripts/configs/objective_druglike.toml --min-score 0.5

and measures molecules per second (n over the child's wall time, model loading included) and peak
memory: the resident set of the whole process tree (the command and its forked sampling and
scoring workers), summed and sampled every 50 ms by a thread through psutil (installed with
``molgen[batch]``), and the largest single process (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a
fresh child). Memory must not grow with n: chunks of 16,384 rows are scored and written one at a
time. Writes JSON (machine, versions, one record per n) and prints one markdown line.

    python scripts/bench_batch.py                      # n = 10,000 and 100,000
    python scripts/bench_batch.py --n 10000 100000 1000000 --work results/bench_batch_work
                                                       # 10^6 too; rerun the same line after a kill
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVE = ROOT / "scripts/configs/objective_druglike.toml"


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a worker that ended between the listing and the read
            pass
    return total


def run(n: int, model: str, workers: str, min_score: float, chunk_size: int, folder: Path) -> dict:
    """One end-to-end run of ``molgen generate`` in a child process, with its peak memory.

    ``--resume`` is always passed: a run killed part-way (a session that ended) continues from its
    last whole chunk in ``folder`` when started again, and the record says how many rows it found.
    """
    out = folder / f"bench-{n}.parquet"
    cmd = [sys.executable, "-m", "molgen.cli", "generate", "-m", model, "-n", str(n), "-o", str(out), "--score",
           "--objective", str(OBJECTIVE), "--min-score", str(min_score), "--workers", workers,
           "--chunk-size", str(chunk_size), "--resume"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def watch():
        proc = psutil.Process(child.pid)
        while not done.is_set():
            try:
                peak[0] = max(peak[0], _tree_rss(proc))
            except psutil.Error:
                return
            done.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, err = child.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    if child.returncode:
        raise SystemExit(f"molgen generate failed ({child.returncode}): {err}")
    import pyarrow.parquet as pq

    written = pq.read_metadata(out).num_rows
    out.unlink()
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    resumed = int(re.search(r"([\d,]+) of them from the interrupted run", err).group(1).replace(",", "")) \
        if "from the interrupted run" in err else 0
    return {"n": n, "chunk_size": chunk_size, "resumed_rows": resumed, "seconds": round(seconds, 1),
            # rate over the rows this leg drew; peak memory is the whole leg's either way
            "mol_per_s": round((n - resumed) / seconds, 1), "written": written,
            "peak_rss_tree_mib": round(peak[0] / 2**20, 1),
            # ru_maxrss is the largest of all children so far: it means this run only where it rose
            "peak_rss_largest_process_mib": round(largest / 1024, 1) if largest > before else None,
            "summary": " ".join(err.split()[-30:])}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--model", default="smiles-gpt-moses-small")
    ap.add_argument("--workers", default="auto")
    ap.add_argument("--min-score", type=float, default=0.5)
    ap.add_argument("--chunk-size", type=int, default=16_384, help="rows per chunk: the same for every n")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep the runs' partial files here (default: a temporary folder), so that a killed "
                         "benchmark resumes where each run stopped")
    ap.add_argument("--out", type=Path, default=ROOT / "results/bench_batch.json")
    args = ap.parse_args()

    import rdkit
    import torch

    import molgen

    records = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) if args.work is None else args.work
        folder.mkdir(parents=True, exist_ok=True)
        for n in sorted(args.n):  # smallest first: ru_maxrss only rises
            records.append(run(n, args.model, args.workers, args.min_score, args.chunk_size, folder))
            print(json.dumps(records[-1]), flush=True)
    result = {
        "what": "molgen generate --score --objective objective_druglike.toml --min-score, end to end in a child process",
        "model": args.model, "workers": args.workers, "min_score": args.min_score,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "versions": {"molgen": molgen.__version__, "torch": torch.__version__, "rdkit": rdkit.__version__,
                     "python": platform.python_version()},
        "runs": records,
    }  # fmt: skip
    from molgen.files import write_json

    write_json(args.out, result)
    cells = "; ".join(f"n={r['n']:,}: {r['mol_per_s']:,.0f} mol/s, peak RSS {r['peak_rss_tree_mib']:,.0f} MiB"
                      for r in records)
    print(f"| batch generate + score + filter + write, {args.model}, {os.cpu_count()} cores | {cells} | "
          f"`python scripts/bench_batch.py --n {' '.join(str(n) for n in args.n)}` |")


if __name__ == "__main__":
    main()
