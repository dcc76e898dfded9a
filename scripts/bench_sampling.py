"""Benchmark SmilesGPT sampling and training throughput; writes JSON.

Sampling: valid molecules per second (generation + RDKit validity check) with the KV cache, in
the defaults (``precision="auto"``: bf16 where the CPU has it natively; ``workers="auto"``: batches
in one process per core), in one process, in float32 and without the grammar; the median of
``--repeats`` runs, each run's figure kept. Also the speed-up of cached decoding over the same
model decoding without cache (full recomputation each step).
Training: tokens per second of forward + backward + AdamW on MOSES batches. CUDA numbers
(bf16 autocast) are added when a GPU is present.

``--shapes`` adds an upper bound for other model shapes: untrained SmilesGPTs decode a fixed number
of cached steps at batch 1,024 (no grammar, no early stops, no RDKit), so the figure is molecules per
second if every molecule had that many tokens, in float32 and in bf16; it shows what size of model
a sampling goal needs.

    python scripts/bench_sampling.py --out results/bench_sampling.json   # --threads 1 for one core
    python scripts/bench_sampling.py --model smiles-gpt-moses-small --out results/bench_sampling_small.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import molgen
import molgen as mg
from molgen.models import load_pretrained
from molgen.parallel import resolve_workers
from molgen.sample import computes_in_bf16


def sampling(model, n: int, batch_size: int, device: str, grammar: bool = True, precision: str = "auto",
             workers: int | str = "auto", repeats: int = 3) -> dict:  # fmt: skip
    """``model.sample`` end to end (validity check included): the median run of ``repeats``."""
    opts = {"batch_size": batch_size, "device": device, "grammar": grammar, "precision": precision, "workers": workers}
    mg.sample(model, min(n, 256), seed=123, **opts)  # warm-up
    runs = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        df = mg.sample(model, n, seed=0, **opts)
        _sync(device)
        runs.append((float(df["valid"].sum()) / (time.perf_counter() - t0), time.perf_counter() - t0))
    valid_per_s, sec = sorted(runs)[len(runs) // 2]
    return {"n": n, **opts, "processes": resolve_workers(workers, torch.device(device), -(-n // batch_size)),
            "computed_in": "bf16" if computes_in_bf16(device, precision) else "float32", "seconds": round(sec, 3),
            "valid_fraction": round(float(df["valid"].mean()), 4), "molecules_per_s": round(n / sec, 1),
            "valid_per_s": round(valid_per_s, 1), "valid_per_s_each_run": [round(r[0], 1) for r in runs]}  # fmt: skip


def decode_only(model, n: int, use_cache: bool, device: str) -> float:
    """Molecules per second of ``generate`` alone (no validity check), with or without cache."""
    model.to(device).eval()
    gen = torch.Generator(device=device).manual_seed(0)
    model.generate(min(n, 64), generator=gen, use_cache=use_cache)
    _sync(device)
    t0 = time.perf_counter()
    model.generate(n, generator=gen, use_cache=use_cache)
    _sync(device)
    return n / (time.perf_counter() - t0)


def training(model, batch_size: int, steps: int, device: str) -> dict:
    """Tokens per second of training steps on real MOSES batches."""
    from molgen.datasets import moses_smiles
    from molgen.train.gpt import collate

    smiles = moses_smiles("train", nrows=20_000)
    ids = model.tokenizer.encode_batch(smiles)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    tokens, t0 = 0, None
    for step in range(steps + 3):
        if step == 3:  # after warm-up
            _sync(device)
            tokens, t0 = 0, time.perf_counter()
        batch = collate(list(ids[rng.integers(0, len(ids), batch_size)])).to(device)
        with amp:
            _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += int((batch[:, 1:] != 0).sum())
    _sync(device)
    model.eval()
    return {"batch_size": batch_size, "steps": steps, "tokens_per_s": round(tokens / (time.perf_counter() - t0), 1)}


# (layers, width, query heads, key/value heads)
SHAPES = ((6, 192, 6, 6), (6, 192, 6, 1), (4, 192, 6, 1), (4, 128, 4, 4), (4, 128, 4, 1), (3, 128, 4, 1),
          (2, 128, 4, 4), (2, 96, 3, 3))  # fmt: skip


def shape_bounds(vocab_size: int, block_size: int, steps: int = 38, batch: int = 1024) -> list[dict]:
    """Cached decoding of ``steps`` tokens for ``batch`` rows, per shape, in float32 and in bf16."""
    from molgen.models.gpt import GPTConfig, KVCache, SmilesGPT

    out = []
    for n_layer, n_embd, n_head, n_kv_head in SHAPES:
        cfg = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_kv_head=n_kv_head)
        model = SmilesGPT(cfg).eval()
        row = {"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head, "n_kv_head": n_kv_head, "n_params": model.num_params(), "steps": steps}
        for dtype in (torch.float32, torch.bfloat16):
            best = float("inf")
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                for _ in range(2):  # the first pass warms up
                    cache = KVCache(cfg, batch, block_size, "cpu", dtype)
                    x = torch.full((batch, 1), cfg.bos_id)
                    t0 = time.perf_counter()
                    for pos in range(steps):
                        model.lm_head(model._hidden(x, None, cache, pos)[:, -1])
                    best = min(best, time.perf_counter() - t0)
            row[f"molecules_per_s_upper_bound_{'bf16' if dtype == torch.bfloat16 else 'fp32'}"] = round(batch / best, 1)
        out.append(row)
    return out  # fmt: skip


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smiles-gpt-moses")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: every core)")
    ap.add_argument("-n", type=int, default=8192, help="molecules per CPU sampling measurement")
    ap.add_argument("--repeats", type=int, default=3, help="runs per sampling figure (the median is reported)")
    ap.add_argument("--gpu-n", type=int, default=200_000)
    ap.add_argument("--out", type=Path, default=Path("results/bench_sampling.json"))
    ap.add_argument("--shapes", action="store_true", help="add decoding upper bounds for other model shapes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_pretrained(args.model, device="cpu")
    cpu_cache = decode_only(model, 1024, True, "cpu")
    cpu_nocache = decode_only(model, 1024, False, "cpu")
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "torch_threads": args.threads, "load_avg_1min": os.getloadavg()[0],
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "versions": {"molgen": molgen.__version__, "torch": torch.__version__,
                     "rdkit": __import__("rdkit").__version__, "python": platform.python_version()},
        "model": {"name": args.model, "n_params": model.num_params(), **{k: getattr(model.config, k) for k in ("n_layer", "n_embd", "n_head", "n_kv_head")}},
        "cpu": {
            "sampling": sampling(model, args.n, 1024, "cpu", repeats=args.repeats),
            "sampling_one_process": sampling(model, args.n, 1024, "cpu", workers=1, repeats=args.repeats),
            "sampling_fp32": sampling(model, args.n, 1024, "cpu", precision="fp32", repeats=args.repeats),
            "sampling_no_grammar": sampling(model, args.n, 1024, "cpu", grammar=False, repeats=args.repeats),
            "decode_molecules_per_s": {"kv_cache": round(cpu_cache, 1), "no_cache": round(cpu_nocache, 1),
                                       "speedup": round(cpu_cache / cpu_nocache, 2)},
            "training": training(model, 64, 20, "cpu"),
        },
    }
    if args.shapes:
        result["cpu"]["decode_upper_bound_by_shape"] = shape_bounds(model.config.vocab_size, model.config.block_size)
    if torch.cuda.is_available():
        result["cuda"] = {
            "sampling": sampling(model, args.gpu_n, 16_384, "cuda", repeats=args.repeats),
            "training_bf16": training(model, 512, 50, "cuda"),
        }
        model.to("cpu")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
