"""Run ``molgen generate``'s shards as tasks on a Dask cluster, then check them and join them.

Each of the ``--shards`` N tasks calls :func:`molgen.batch.generate` with ``shard=(k, N)`` into its
own file (``OUT.shards/part-0000k-of-0000N.<fmt>``, resumable: a task that died is rerun with
``resume=True`` and continues from its last whole chunk); the joined ``OUT`` holds, row for row,
what one unsharded ``molgen generate`` with the same options writes. A ``LocalCluster`` of
``--workers`` processes (one thread each) by default; ``--scheduler tcp://host:8786`` sends the
tasks to a running cluster, whose workers need molgen installed and must see ``OUT``'s folder and
the objective file under the same paths (a shared file system). Needs ``pip install molgen[batch]``.

    python scripts/batch_dask.py -m smiles-gpt-moses-small -n 100000 -o out.parquet --shards 8 \\
        --score --objective scripts/configs/objective_druglike.toml --min-score 0.6
    python scripts/batch_dask.py ... --scheduler tcp://10.0.0.5:8786
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path


@functools.lru_cache(maxsize=2)
def _model(name: str, device: str):
    from molgen.models import load_pretrained

    return load_pretrained(name, device=device)


def run_shard(model: str, n: int, out: str, k: int, parts: int, options: dict) -> dict:
    """One task: shard ``k`` of ``parts`` into its own file, on this worker's one thread."""
    import torch

    from molgen import batch

    torch.set_num_threads(1)
    return batch.generate(_model(model, options.get("device", "cpu")), n, batch.shard_path(out, k, parts),
                          shard=(k, parts), resume=True, progress=False, workers=1, **options)


def _rows(path: Path) -> int:
    """Rows of a joined file without loading it: Parquet metadata, or records of a text file."""
    import gzip

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt") as f:
        if ".sdf" in path.suffixes:
            return sum(line.startswith("$$$$") for line in f)
        return sum(1 for _ in f) - 1  # the header line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="smiles-gpt-moses-small")
    ap.add_argument("-n", type=int, required=True, help="molecules of the whole run")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--shards", type=int, default=None, help="tasks (default: twice the workers)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    ap.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (default: a LocalCluster)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--chunk-size", type=int, default=16_384)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--score", action="store_true", help="add the RDKit score columns")
    ap.add_argument("--objective", type=Path, default=None, help="objective TOML")
    ap.add_argument("--min-score", type=float, default=None)
    args = ap.parse_args(argv)

    from dask.distributed import Client, LocalCluster

    from molgen import batch
    from molgen.errors import MolgenError

    parts = args.shards or 2 * args.workers
    options = {"seed": args.seed, "batch_size": args.batch_size, "chunk_size": args.chunk_size, "device": args.device,
               "score": args.score, "min_score": args.min_score,
               "objective": str(args.objective.resolve()) if args.objective else None}  # fmt: skip
    out = str(args.out.resolve())
    t0 = time.perf_counter()
    cluster = None if args.scheduler else LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                                       processes=True, dashboard_address=None)  # fmt: skip
    try:
        with Client(args.scheduler or cluster) as client:
            futures = [client.submit(run_shard, args.model, args.n, out, k, parts, options, pure=False,
                                     key=f"molgen-shard-{k}-of-{parts}") for k in range(1, parts + 1)]  # fmt: skip
            summaries = client.gather(futures)
    except MolgenError as err:  # a refused option: the same one line as the CLI
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if cluster is not None:
            cluster.close()
    # check: the shards cover the run's rows once, in order, then join them
    assert sum(s["rows"] for s in summaries) == args.n, summaries
    assert [s["first_batch"] for s in summaries] == sorted(s["first_batch"] for s in summaries)
    batch.join(out, parts)
    written = sum(s["written"] for s in summaries)
    rejected = sum(s["below_min_score"] for s in summaries)
    assert _rows(Path(out)) == written, "the joined file does not hold the shards' rows"
    seconds = time.perf_counter() - t0
    print(f"joined {parts} shards into {out}: {written:,} rows of {args.n:,} sampled ({rejected:,} below "
          f"--min-score), {seconds:.1f} s, {args.n / seconds:,.0f} molecules/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
