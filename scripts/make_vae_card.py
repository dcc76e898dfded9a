"""Measure a GraphVAE checkpoint and write its README.md model card.

    python scripts/make_vae_card.py molgen/pretrained/graph-vae-moses [--from runs/graph-vae-cpu/export]

With ``--from``, ``config.json`` and ``model.safetensors`` are first copied from a training run's
export folder (and, when that run started from this very folder, the parent's provenance is kept
inside the child's). Then the sampling prior, a mixture of ``--components`` Gaussians, is fitted to
the encodings of ``--fit-prior`` MOSES training molecules (seeded sample; ``GraphVAE.fit_prior``)
and saved into the folder, and it runs, as subprocesses, the commands the card quotes:

    molgen generate --model DIR -n 30000 -o SAMPLES.csv --seed 0 --temperature 0.0
    molgen evaluate SAMPLES.csv --json METRICS.json

and measures reconstruction accuracy in-process: 1,000 MOSES test molecules (seeded sample of the
whole split), encoded to their posterior mean and greedily decoded, exact canonical SMILES match.
Temperature 0 (greedy decoding of prior samples) is ``mg.sample``'s default for the graph-VAE, as in JT-VAE's
sampling. Then the same two commands at ``--n-sweep`` molecules for each of ``--sweep``'s decoding
temperatures and for the standard N(0, I) prior, so that the card shows what each choice changes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from make_card import (  # scripts/ is on sys.path
    _safetensors_header,
    baselines_and_commands,
    copy_export,
    last_val_nll,
    sample_and_evaluate,
    train_command,
    variant_table,
    work_dir,
)

# Gaussians in the fitted prior, and MOSES training molecules they are fitted to. `python
# scripts/compare_vae_priors.py --components 20,40,80 --fit 40000` (n = 10,000, seed 0): FCD/Test 2.24,
# 2.11, 2.13, Novelty 0.984, 0.985, 0.983; with 20,000 molecules 20 Gaussians gave 2.25
COMPONENTS = 40
FIT_PRIOR = 40_000


def reconstruction(folder: Path, n: int, seed: int = 0) -> dict:
    """Exact-match reconstruction from mu (greedy decoding) on a seeded sample of MOSES test."""
    import torch

    from molgen.chem import canonicalize
    from molgen.datasets import moses_sample
    from molgen.models.graph_vae import GraphVAE

    torch.set_num_threads(1)  # the cores are shared: one thread is faster under contention
    model = GraphVAE.from_pretrained(folder, device="cpu")
    picked = moses_sample("test", n, seed)
    t0 = time.perf_counter()
    out = model.decode(model.encode(picked))
    seconds = time.perf_counter() - t0
    hits = sum(a == canonicalize(b, isomeric=False) for a, b in zip(out, picked, strict=True))
    return {"n": n, "exact": hits / n, "seconds": seconds}


def fit_prior(folder: Path, n: int, components: int, seed: int = 0) -> dict:
    """Fit the checkpoint's sampling prior (``components`` Gaussians) to a seeded sample of ``n`` MOSES
    training molecules and save it into the folder (weights and config; the provenance records the fit)."""
    import torch

    from molgen.datasets import moses_sample
    from molgen.models.graph_vae import GraphVAE

    torch.set_num_threads(1)
    model = GraphVAE.from_pretrained(folder, device="cpu")
    picked = moses_sample("train", n, seed)
    info = {"data": "moses/train", "seed": seed, **model.fit_prior(picked, components=components, seed=seed)}
    model.save_pretrained(folder, provenance={**model.provenance, "prior": info})
    return info


def variants(folder: Path, temperatures: list[float], n: int, work: Path) -> tuple[str, list[str]]:
    """Sample and evaluate the default (fitted prior, greedy, the config's ring rules) at ``n``, then
    at each decoding temperature, from the standard N(0, I) prior and without any ring rule; a
    markdown table and the commands."""
    rows = [("fitted, 0 (greedy), default", 0.0, (), "default")]
    rows += [(f"fitted, {t:g}", t, (), f"temperature-{t:g}") for t in temperatures]
    rows.append(("N(0, I), 0 (greedy)", 0.0, ("--prior", "standard"), "prior-standard"))
    rows.append(("fitted, 0 (greedy), no ring rules", 0.0, ("--max-ring", "0", "--no-ring-rules"), "no-ring-rules"))
    return variant_table(folder, "prior, temperature", rows, n, work)


def card(
    folder: Path,
    meta: dict,
    metrics: dict,
    recon: dict,
    commands: list[str],
    seconds: float,
    n: int,
    sweep: str = "",
    n_sweep: int = 0,
) -> str:
    cfg, prov = meta["config"], meta.get("provenance", {})
    tc, data = prov.get("train_config", {}), prov.get("data", {})
    header = _safetensors_header(folder / "model.safetensors")
    n_params = (
        sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__")
        // 4
    )
    steps, batch = prov.get("steps", 0), tc.get("trainer", {}).get("batch_size", 0)
    n_train = data.get("n_train")
    epochs = f"{steps * batch / n_train:.2f} epochs" if batch and n_train else "n/a"
    val = last_val_nll(prov)
    m = tc.get("model", {})
    table = "\n".join(
        f"| `{k}` | {v:.4f} |" if isinstance(v, float) else f"| `{k}` | {v} |" for k, v in metrics.items()
    )
    prior = prov.get("prior")
    k = (prior or {}).get("components", 1)
    shape = (f"a mixture of {k} full-covariance Gaussians fitted by EM to their posterior means, "
             f"`vae.fit_prior(smiles, components={k})`" if k > 1 else
             "a full-covariance Gaussian with the mean and covariance of the aggregated posterior, `vae.fit_prior`")  # fmt: skip
    prior_text = (
        f"the prior fitted to where {prior['n_molecules']:,} MOSES training molecules encode ({shape}; ex-post "
        "density estimation as in Ghosh et al., ICLR 2020)"
        if prior
        else "the prior (z ~ N(0, I))"
    )
    lineage, parent = [], prov.get("parent_provenance")
    while parent:
        lineage.append(f"{parent.get('steps', 0):,} steps of run `{parent.get('run')}`")
        parent = parent.get("parent_provenance")
    history = f", after {' after '.join(lineage)} (the parent it was started from, `init_from`)" if lineage else ""
    anneal = m.get("kl_anneal_steps")
    kl_text = f"KL weight annealed 0 -> {m.get('beta')} over {anneal} steps" if anneal else f"KL weight {m.get('beta')}"
    sweep_text = (
        f"""
Sampling the decoder's distribution instead, the standard N(0, I) prior the KL term aims at, or
without the ring rules (n = {n_sweep:,} molecules each, seed 0; FCD at this n is not comparable
with the n = {n:,} figures above): `mg.sample(vae, n, temperature=..., prior="standard", max_ring=0,
ring_rules=False)`, `molgen generate --temperature ... --prior standard --max-ring 0 --no-ring-rules`.

{sweep}
"""
        if sweep
        else ""
    )
    ring = cfg.get("max_ring", 0)
    ring_text = f"{ring} atoms" if ring else "any size (no limit set)"
    rules_text = (
        ", and no closure makes a bridged ring system, fuses a 3- or 4-membered ring to another ring or puts a "
        "double or triple bond in one (`ring_rules`; 0.8 % of MOSES training molecules have one of these, "
        "`scripts/check_ring_rules.py`)"
        if cfg.get("ring_rules")
        else ""
    )
    val_text = (
        f"{val[1]:.3f} nats/molecule (ELBO at the step's KL weight) at step {val[0]:,}" if val else "n/a"
    )
    return f"""# {folder.name}

A graph variational autoencoder (`model_type = "{meta["model_type"]}"`, molgen {meta.get("molgen_version")})
pretrained on the MOSES training set. Encoder: {cfg["enc_layers"]} residual GINE layers of width {cfg["hidden"]}
with sum + mean readout to a {cfg["latent"]}-dimensional Gaussian posterior. Decoder: a GRU of width
{cfg["dec_hidden"]} ({cfg["dec_layers"]} layer) that adds atoms in canonical BFS order and scores each atom's bonds to the
{cfg["window"]} previous atoms, with valence masks: every decoded graph sanitises in RDKit by construction
(no filtering). When sampling, no ring of more than {ring_text} is closed (`max_ring` in `config.json`;
MOSES molecules have rings of 3-7 atoms){rules_text}. {n_params:,} parameters in `model.safetensors`.

```python
import molgen as mg
from molgen.models.graph_vae import GraphVAE
vae = GraphVAE.from_pretrained("{folder.name}")
mg.sample(vae, 1000, seed=0)                   # smiles, valid
z = vae.encode(["CCOc1ccc(CC(=O)N)cc1"])       # posterior means
vae.decode(z); vae.interpolate(a, b, steps=8); vae.neighbours(smiles, radius=1.0, n=10)
```

## Training

| | |
|---|---|
| data | {data.get("data", "n/a")} ({n_train or "n/a":,} graphs, source sha256 `{data.get("sha256", "n/a")}`) |
| steps | {steps:,} x {batch} molecules ({epochs}){history} |
| objective | ELBO, {kl_text}, free bits {m.get("free_bits")} nats/dim |
| validation | {val_text} |
| seed | {prov.get("seed")} |
| command | {train_command(tc)} |

## Metrics

MOSES metrics (`molgen evaluate`) of n = {n:,} molecules sampled from {prior_text} and decoded
greedily (temperature 0, the default of `vae.sample` and of `molgen generate` for this model), seed 0
(FCD depends on n: compare only at equal n). Sampling took {seconds:.0f} s on this machine's CPU.

| metric | value |
|---|---|
{table}

Reconstruction (exact canonical SMILES match, greedy decoding from the posterior mean) on
{recon["n"]:,} MOSES test molecules (seeded sample of the whole split): **{recon["exact"]:.3f}**.

{baselines_and_commands(folder.name, metrics, commands, sweep_text)}
## Limitations

Trained on MOSES (ZINC clean leads, neutral, atoms C N S O F Cl Br): molecules outside that space
encode poorly. Stereochemistry and isotopes are not represented (graphs are 2-D constitution);
atoms outside the vocabulary in `config.json` (`atom_vocab`) cannot be encoded.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, nargs="?", default=Path("molgen/pretrained/graph-vae-moses"))
    ap.add_argument(
        "--from", dest="source", type=Path, default=None, help="export folder to copy weights from"
    )
    ap.add_argument("-n", type=int, default=30_000)
    ap.add_argument("--n-recon", type=int, default=1_000)
    ap.add_argument("--work", type=Path, default=None, help="samples and metrics (default runs/cards/<name>)")
    ap.add_argument("--sweep", default="1.0,0.5", help="decoding temperatures to compare ('' for none)")
    ap.add_argument("--n-sweep", type=int, default=10_000)
    ap.add_argument("--fit-prior", type=int, default=FIT_PRIOR, help="MOSES train molecules to fit the prior to (0: keep)")
    ap.add_argument("--components", type=int, default=COMPONENTS, help="Gaussians in the fitted prior")
    args = ap.parse_args()
    folder = args.checkpoint
    copy_export(args.source, folder)
    if args.fit_prior:
        print("fitted prior:", fit_prior(folder, args.fit_prior, args.components), flush=True)
    work = work_dir(folder, args.work)
    metrics, seconds, commands = sample_and_evaluate(folder, args.n, 0.0, work)
    recon = reconstruction(folder, args.n_recon)
    (work / "reconstruction.json").write_text(json.dumps(recon, indent=1))
    temps = [float(t) for t in args.sweep.split(",") if t.strip()]
    sweep, sweep_commands = variants(folder, temps, args.n_sweep, work) if args.n_sweep else ("", [])
    commands += sweep_commands
    meta = json.loads((folder / "config.json").read_text())
    commands.append(shlex.join(["python", "scripts/make_vae_card.py", str(folder)]))
    (folder / "README.md").write_text(
        card(folder, meta, metrics, recon, commands, seconds, args.n, sweep, args.n_sweep)
    )
    print(json.dumps({**metrics, "reconstruction": recon}, indent=1))
    print(f"wrote {folder / 'README.md'}")


if __name__ == "__main__":
    main()
