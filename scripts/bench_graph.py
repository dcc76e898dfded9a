"""Graph-VAE throughput, as JSON: featurisation, encoder, decoder (CPU, and CUDA when present).

    python scripts/bench_graph.py [--model graph-vae-moses] [--n-featurize 20000] [--out results/bench_graph.json]

Featurisation is timed on MOSES test molecules, serially (mol/s per core) and over all cores.
Encoder graphs/s: eval mode, no gradients, batches of 512 MOSES graphs; on CUDA fp32 vs bf16
autocast, each with and without ``torch.compile``. Decode molecules/s: ``model.sample`` from the
prior, greedy (the default), SMILES included: one batch on ``--threads`` threads, and batches of
1,024 on every core, in one process and in worker processes (``workers="auto"``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import rdkit
import torch
import torch_geometric
from rdkit import Chem

import molgen as mg
from molgen.datasets import moses_smiles
from molgen.featurize import collate_arrays, featurize_smiles, graph_to_mol
from molgen.models.graph_vae import GraphVAE, GraphVAEConfig


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": {
            "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__,
            "rdkit": rdkit.__version__,
        },
    }


def bench_featurize(smiles: list[str]) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    serial = featurize_smiles(smiles, n_jobs=1)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    c0 = time.process_time()
    for s in smiles:  # the anchor, measured beside us: RDKit parsing alone
        Chem.MolFromSmiles(s)
    parse_only = len(smiles) / (time.process_time() - c0)
    jobs = os.cpu_count() or 1
    t0 = time.perf_counter()
    featurize_smiles(smiles, n_jobs=jobs, chunk=max(1000, len(smiles) // (4 * jobs)))
    par = time.perf_counter() - t0
    return {
        "n": len(smiles),
        "graphs": len(serial),
        "mol_per_s_per_core_wall": round(len(smiles) / wall),
        "mol_per_s_per_core_cpu": round(len(smiles) / cpu),
        "rdkit_parse_only_mol_per_s_cpu": round(parse_only),
        "ratio_to_parse_only": round(len(smiles) / cpu / parse_only, 3),
        f"mol_per_s_{jobs}_processes_wall": round(len(smiles) / par),
    }


def round_trip(smiles: list[str]) -> dict:
    """featurise -> graph_to_mol on MOSES molecules: identical non-isomeric canonical SMILES?"""
    arrays = featurize_smiles(smiles, n_jobs=1)
    misses = []
    for k in range(len(arrays)):
        source = smiles[arrays.index[k]]
        back = Chem.MolToSmiles(graph_to_mol(arrays.graph(k)))
        if back != Chem.MolToSmiles(Chem.MolFromSmiles(source), isomericSmiles=False):
            misses.append([source, back])
    return {"n": len(smiles), "identical": (len(arrays) - len(misses)) / len(smiles), "skipped": arrays.skipped,
            "exceptions": misses[:20]}  # fmt: skip


def _time(fn, repeats: int, sync) -> float:
    fn()  # warm-up (and compilation)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeats


def bench_encoder(model: GraphVAE, batch, device: str, repeats: int) -> dict:
    model = model.to(device).eval()
    batch = batch.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n = len(batch.ptr) - 1
    out = {}
    dtypes = [("fp32", None)] + ([("bf16", torch.bfloat16)] if device.startswith("cuda") else [])
    for compiled in (False, True) if device.startswith("cuda") else (False,):
        enc = torch.compile(model.encoder, dynamic=True) if compiled else model.encoder
        for name, dtype in dtypes:

            def run(enc=enc, dtype=dtype):
                with (
                    torch.no_grad(),
                    torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None),
                ):
                    enc(batch.x, batch.edge_index, batch.edge_attr, batch.batch, n)

            key = f"{name}{'_compiled' if compiled else ''}"
            try:
                out[key] = round(n / _time(run, repeats, sync))
            except Exception as err:  # noqa: BLE001 - a compiler failure is a result to report, not a crash
                out[key] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return out


def bench_decode(model: GraphVAE, device: str, n: int) -> float:
    model = model.to(device)
    mg.sample(model, min(n, 256), seed=1, device=device)  # warm-up
    t0 = time.perf_counter()
    df = mg.sample(model, n, seed=0, batch_size=n, device=device)
    dt = time.perf_counter() - t0
    assert df.valid.all()
    return round(n / dt, 1)


def bench_decode_cores(model: GraphVAE, n: int) -> dict:
    """Batches of 1,024 on every core: one process (PyTorch's threads) against worker processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count())
    model = model.to("cpu")
    mg.sample(model, 256, seed=1)  # warm-up
    out = {"n": n, "threads": os.cpu_count()}
    for label, workers in (("one_process", 1), ("workers_auto", "auto")):
        t0 = time.perf_counter()
        df = mg.sample(model, n, seed=0, workers=workers)
        out[label] = round(n / (time.perf_counter() - t0), 1)
        assert df.valid.all()
    torch.set_num_threads(threads)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        default="graph-vae-moses",
        help="checkpoint name or folder (untrained default config if missing)",
    )
    ap.add_argument("--n-featurize", type=int, default=20000)
    ap.add_argument("--n-decode", type=int, default=1000)
    ap.add_argument("--n-decode-cores", type=int, default=8192, help="molecules for the all-cores decoding figures")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for the model benchmarks")
    ap.add_argument("--out", default="results/bench_graph.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    smiles = moses_smiles("test", nrows=args.n_featurize)
    try:
        model, source = GraphVAE.from_pretrained(args.model, device="cpu"), args.model
    except Exception as err:  # noqa: BLE001 - benchmark the default architecture instead
        model, source = GraphVAE(GraphVAEConfig()), f"untrained default config ({err})"
    arrays = featurize_smiles(smiles[:512], n_jobs=1)
    batch = collate_arrays(arrays, np.arange(len(arrays)))

    result = {
        "machine": machine(),
        "model": source,
        "parameters": sum(p.numel() for p in model.parameters()),
        "featurize": bench_featurize(smiles),
        "round_trip": round_trip(smiles[:10_000]),
        "encoder_graphs_per_s": {"cpu": bench_encoder(model, batch, "cpu", repeats=5)},
        "decode_mol_per_s": {"cpu": bench_decode(model, "cpu", args.n_decode),
                             "cpu_all_cores": bench_decode_cores(model, args.n_decode_cores)},
        "cpu_threads": args.threads,
    }
    if torch.cuda.is_available():
        result["encoder_graphs_per_s"]["cuda"] = bench_encoder(model, batch, "cuda", repeats=50)
        result["decode_mol_per_s"]["cuda"] = bench_decode(model, "cuda", 10 * args.n_decode)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
