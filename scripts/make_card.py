"""Measure a checkpoint and write its README.md model card.

Runs, as subprocesses, exactly the commands the card quotes:

    molgen generate --model DIR -n 30000 -o SAMPLES.csv --seed 0 --temperature 1.0
    molgen evaluate SAMPLES.csv --json METRICS.json

and the same at n = 10,000 with the SMILES grammar on and off (``--no-grammar``), then writes
DIR/README.md with the metrics, the provenance from DIR/config.json, the last
validation NLL of the training run (when its logs are here) and those commands.

    python scripts/make_card.py molgen/pretrained/smiles-gpt-moses [--from runs/gpt_cpu/export]

With ``--from``, the weights, config and vocabulary are first copied from a training run's export
folder (training refreshes that folder at every checkpoint; the shipped one changes only here).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from molgen.errors import ConfigError
from molgen.models.hub import resolve
from molgen.sample import PRECISIONS, computes_in_bf16
from molgen.tokenize import SmilesTokenizer, tokenize

MOSES_ROWS = {  # published MOSES baselines (Polykovskiy et al. 2020, Table 2), for context
    "CharRNN": {"valid": 0.975, "unique@10000": 0.999, "FCD/Test": 0.073, "SNN/Test": 0.601, "Novelty": 0.842},
    "VAE": {"valid": 0.977, "unique@10000": 0.998, "FCD/Test": 0.099, "SNN/Test": 0.626, "Novelty": 0.695},
    "JT-VAE": {"valid": 1.0, "unique@10000": 0.999, "FCD/Test": 0.395, "SNN/Test": 0.548, "Novelty": 0.914},
}


def run(cmd: list[str]) -> float:
    print("$", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def last_val_nll(provenance: dict) -> tuple[int, float] | None:
    """(step, figure) of the run's last validation: from the provenance (training records it there),
    else from the run's logs when they are on this machine."""
    if recorded := provenance.get("validation"):
        return int(recorded["step"]), float(recorded["val_nll"])
    run_dir = provenance.get("train_config", {}).get("run_dir")
    if not run_dir:
        return None
    rows = [pd.read_csv(p) for p in sorted((Path(run_dir) / "logs").rglob("metrics.csv"))]
    log = pd.concat(rows) if rows else pd.DataFrame()
    if "val_nll" not in log:
        return None
    val = log.dropna(subset=["val_nll"]).sort_values("step")
    return (int(val["step"].iloc[-1]), float(val["val_nll"].iloc[-1])) if len(val) else None


def train_command(train_config: dict) -> str:
    """The pretraining command of a run, found by the run name among scripts/configs/*.toml."""
    name = train_config.get("name")
    for path in sorted(Path("scripts/configs").glob("*.toml")):
        if name and re.search(rf'^name\s*=\s*"{re.escape(name)}"', path.read_text(), re.MULTILINE):
            return (f"`molgen pretrain --config {path.as_posix()}` (`--resume` continues it; the config's "
                    "header records the legs of the run)")
    return f"run `{name}` (its config is not among scripts/configs)"


def metric_row(label: str, metrics: dict, keys) -> str:
    """One markdown table row: ``label`` then each metric to 3 decimals (nan where missing)."""
    return f"| {label} | " + " | ".join(f"{metrics.get(k, float('nan')):.3f}" for k in keys) + " |"


def baselines_and_commands(name: str, metrics: dict, commands: list[str], middle: str = "") -> str:
    """Markdown: the published MOSES baselines beside this model's row, ``middle`` (a card's own
    section, e.g. the VAE's temperature table), then the commands that measured it."""
    keys = ["valid", "unique@10000", "FCD/Test", "SNN/Test", "Novelty"]
    rows = [metric_row(model, row, keys) for model, row in MOSES_ROWS.items()]
    rows.append(metric_row(f"**{name}**", metrics, keys))
    return (
        "Published MOSES baselines at n = 30,000 for context:\n\n| model | " + " | ".join(keys) + " |\n"
        + "|---" * (len(keys) + 1) + "|\n" + "\n".join(rows) + "\n" + middle
        + "\nReproduce:\n\n```bash\n" + "\n".join(commands) + "\n```\n"
    )


def card(
    folder: Path,
    meta: dict,
    metrics: dict,
    commands: list[str],
    seconds: float,
    n: int,
    temperature: float,
    grammar: str = "",
    n_grammar: int = 0,
    invalid: str = "",
    precision: str = "float32",
    section: str = "",
) -> str:
    cfg, prov = meta["config"], meta.get("provenance", {})
    kekule = SmilesTokenizer.load(folder / "vocab.json").kekule
    tc = prov.get("train_config", {})
    data = prov.get("data", {})
    n_params = sum(
        v["data_offsets"][1] - v["data_offsets"][0]
        for k, v in _safetensors_header(folder / "model.safetensors").items()
        if k != "__metadata__"
    ) // 4
    steps, tokens = prov.get("steps", 0), prov.get("tokens_seen", 0)
    batch = tc.get("trainer", {}).get("batch_size")
    n_data = data.get("n_molecules")
    epochs = f"{steps * batch / n_data:.2f} epochs" if batch and n_data else "n/a"
    val = last_val_nll(prov)
    teacher = tc.get("distill", {}).get("teacher")
    kv = cfg.get("n_kv_head") or cfg["n_head"]
    heads = f"{cfg['n_head']} heads" + (f" sharing {kv} key/value head{'s' * (kv > 1)} (grouped-query attention)" if kv != cfg["n_head"] else "")
    role = (f"A student distilled from `{teacher}` (the teacher row below), built to sample fast on a CPU;\n"
            "it loads, samples and scores like every SMILES model in molgen."
            if teacher else "It is the prior for transfer learning and guided generation in molgen.")  # fmt: skip
    distill = tc.get("distill", {})
    who = prov.get("teacher") or {}
    steps_taught = f"{who['steps']:,} steps" if isinstance(who.get("steps"), int) else "steps not recorded"
    teacher_weights = f" (run {who.get('run')}, {steps_taught}, weights sha256 `{who.get('sha256')}`)" if who.get("sha256") else ""
    keys = list(metrics)
    table = "\n".join(f"| `{k}` | {metrics[k]:.4f} |" if isinstance(metrics[k], float) else f"| `{k}` | {metrics[k]} |" for k in keys)
    return f"""# {folder.name}

A SMILES GPT (`model_type = "{meta['model_type']}"`, molgen {meta.get('molgen_version')}) pretrained on the MOSES
training set: {cfg['n_layer']} pre-LayerNorm decoder blocks, width {cfg['n_embd']}, {heads},
context {cfg['block_size']} tokens, {cfg['vocab_size']} tokens in `vocab.json`, {n_params:,} parameters, weights in
`model.safetensors`. {role}
{KEKULE_NOTE if kekule else ""}
```python
import molgen as mg
model = mg.load_pretrained("{folder.name}")
df = mg.sample(model, 1000, seed=0)          # smiles, valid, log_likelihood (under the model)
```
{condition_note(cfg.get("condition"), folder.name)}
## Training

| | |
|---|---|
| data | {data.get('name', 'n/a')} ({n_data or 'n/a':,} molecules, sha256 `{data.get('sha256', 'n/a')}`) |
| steps | {steps:,} x {batch} molecules ({epochs}), {tokens:,} tokens |
| validation NLL | {f'{val[1]:.4f} nats/token at step {val[0]:,} ({tc.get("data", {}).get("val_size", "?"):,} molecules of MOSES {tc.get("data", {}).get("val_split", "test")}, seeded sample)' if val else 'n/a'} |
| optimiser | AdamW lr {tc.get('optim', {}).get('lr')} -> {tc.get('optim', {}).get('min_lr')} (warmup {tc.get('optim', {}).get('warmup_steps')}, cosine), weight decay {tc.get('optim', {}).get('weight_decay')}, clip {tc.get('optim', {}).get('grad_clip')} |
| seed | {prov.get('seed')} |
| teacher | {f"`{teacher}`{teacher_weights}: loss (1 - {distill.get('alpha')}) x cross-entropy on the data + {distill.get('alpha')} x T^2 x KL(teacher || student), T = {distill.get('temperature')}" if teacher else 'none'} |
| parent | {f"{prov['parent']} (steps and tokens above are this run's; the config's header gives the parent's training)" if prov.get('parent') else 'none (trained from scratch)'} |
| command | {train_command(tc)} |

## Metrics

MOSES metrics (`molgen evaluate`, MOSES definitions and key names) of n = {n:,} molecules sampled at
temperature {temperature} with seed 0 and the SMILES grammar on (the default, below). FCD depends strongly
on n: compare FCDs only at equal n. Sampling took {seconds:.0f} s on this machine's CPU (generation and
validity check) in {precision}.{invalid}

| metric | value |
|---|---|
{table}

{baselines_and_commands(folder.name, metrics, commands, grammar_section(grammar, n_grammar, kekule))}
{section}
## Limitations

Trained on MOSES only (ZINC clean leads: 250-350 Da, no charges, atoms C N S O F Cl Br H): molecules
outside that space are unlikely samples, and a SMILES with a token outside `vocab.json` cannot be
scored until the vocabulary is extended (`tokenizer.extend`, `model.resize_vocab`).
"""


def condition_note(condition: dict | None, name: str) -> str:
    """Markdown for a conditional model: its properties, their training statistics and how to ask."""
    if not condition:
        return ""
    names = condition["names"]
    stats = ", ".join(f"{k} (mean {m:.3g}, sd {s:.3g})" for k, m, s in zip(names, condition["mean"], condition["std"], strict=True))
    example = ", ".join(f'"{k}": {m:.3g}' for k, m in zip(names[:2], condition["mean"][:2], strict=True))
    free = ("Any subset may be given; the others are left free (each was left out of a training row at random)."
            if condition.get("partial") else "Every property must be given.")
    return f"""
Conditional on RDKit properties, given in raw units: {stats} on its training molecules (the
standardisation is in `config.json`). {free} Metrics below are of samples with no property given.

```python
df = mg.sample(model, 1000, seed=0, condition={{{example}}})
```
```bash
molgen generate -m {name} -n 1000 -o out.csv {" ".join(f"--condition {k}={m:.3g}" for k, m in zip(names[:2], condition["mean"][:2], strict=True))}
```
"""


KEKULE_NOTE = """
It writes Kekulé SMILES (`"kekule": true` in `vocab.json`): rings with explicit single and double bonds,
no aromatic atoms. A SMILES given to it (`model.log_likelihood`, fine-tuning data) is rewritten that way
first, in whatever form it came, and sampled molecules come back in RDKit's aromatic form.
"""


def invalid_reasons(samples: Path, block_size: int) -> str:
    """One sentence: the invalid samples counted by why RDKit rejects them (``chem.parse_failure``),
    apart from rows the model did not finish within its context of ``block_size`` tokens."""
    from collections import Counter

    from molgen.chem import parse_failure

    df = pd.read_csv(samples)
    bad = df.loc[~df["valid"].astype(bool), "smiles"]
    cut = f"cut at the {block_size}-token context"
    reasons = Counter(cut if len(tokenize(s)) >= block_size - 1 else parse_failure(s) for s in bad)
    if not reasons:
        return ""
    parts = ", ".join(f"{why} {k:,}" for why, k in reasons.most_common())
    return f" Of the {len(bad):,} invalid samples: {parts} (`molgen.chem.parse_failure`)."


def grammar_section(table: str, n: int, kekule: bool = False) -> str:
    """The card's paragraph on sampling with and without the SMILES grammar masks."""
    if not table:
        return ""
    aromaticity = (
        "This model writes Kekulé SMILES and the grammar never draws an aromatic atom, so no sample can fail kekulisation."
        if kekule
        else "Aromaticity (can the rings be kekulised?) stays the model's."
    )
    return f"""
The SMILES grammar (`molgen.models.smiles_grammar`, `mg.sample(model, n, grammar=False)` or
`molgen generate --no-grammar` to switch it off) masks, at each step, the tokens that would make the
string stop being a SMILES prefix (unclosed ring labels or branches at `<eos>`, `()`, `=#`, a label
that would bond an atom to itself or repeat a bond) and bonds beyond an atom's largest valence. A row
that reaches the end of the context unfinished counts invalid.
{aromaticity} With and without it (n = {n:,} each,
seed 0; FCD at this n is not comparable with the n = 30,000 figures):

{table}
"""


def precision_text(precision: str) -> str:
    """How the card's samples were computed, in words: what ``auto`` meant on this machine."""
    bf16 = computes_in_bf16("cpu", precision)
    why = " (`--precision auto`: this CPU multiplies bf16 natively)" if bf16 and precision == "auto" else ""
    return ("bf16 with float32 sums" if bf16 else "float32") + why


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        return json.loads(fh.read(size))


def copy_export(source: Path | None, folder: Path) -> None:
    """Copy a training run's exported weights and config into the shipped folder (``--from``).

    When the run started from the very folder it replaces (``init_from`` names it), the parent's
    provenance would be lost with its files, so it is kept inside the child's as
    ``provenance.parent_provenance`` (nested, one level per leg): the card then tells the whole history.
    """
    if source is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    meta = json.loads((source / "config.json").read_text())
    prov = meta.get("provenance", {})
    if not prov.get("validation") and (val := last_val_nll(prov)):  # an export written before training recorded it
        prov["validation"] = {"step": val[0], "val_nll": round(val[1], 5)}
    old = folder / "config.json"
    if prov.get("parent") and old.exists() and _same_folder(prov["parent"], folder):
        parent = json.loads(old.read_text()).get("provenance", {})
        prov["parent_provenance"] = {k: parent[k] for k in ("run", "steps", "tokens_seen", "seed", "data", "parent",
                                                            "parent_provenance", "train_config") if k in parent}  # fmt: skip
    for name in ("model.safetensors", "vocab.json"):
        if (source / name).exists():
            shutil.copyfile(source / name, folder / name)
    (folder / "config.json").write_text(json.dumps(meta, indent=2, default=str))


def _same_folder(name_or_dir: str, folder: Path) -> bool:
    try:
        return resolve(name_or_dir).resolve() == folder.resolve()
    except ConfigError:  # the parent is gone (a deleted run folder): not this one
        return False


def work_dir(folder: Path, work: Path | None) -> Path:
    """Where a card's samples and metrics go: ``--work``, or runs/cards/<name>."""
    work = work or Path("runs") / "cards" / folder.name
    work.mkdir(parents=True, exist_ok=True)
    return work


def sample_and_evaluate(
    folder: Path, n: int, temperature: float, work: Path, extra: tuple[str, ...] = ()
) -> tuple[dict, float, list[str]]:
    """Run the card's two commands (``extra``: more ``molgen generate`` options); returns the
    metrics, the sampling seconds and the commands."""
    samples, metrics_path = work / "samples.csv", work / "metrics.json"
    molgen = [sys.executable, "-m", "molgen.cli"]
    gen = ["generate", "--model", str(folder), "-n", str(n), "-o", str(samples), "--seed", "0",
           "--temperature", str(temperature), *extra, "--device", "cpu"]  # fmt: skip
    ev = ["evaluate", str(samples), "--json", str(metrics_path)]
    seconds = run(molgen + gen)
    run(molgen + ev)
    return json.loads(metrics_path.read_text()), seconds, [shlex.join(["molgen", *gen]), shlex.join(["molgen", *ev])]


# the columns of a card's variant table (the GPT's grammar on/off, the VAE's temperatures)
VARIANT_KEYS = ("valid", "unique@10000", "Novelty", "FCD/Test", "SNN/Test", "Scaf/Test", "IntDiv", "Filters")


def variant_table(
    folder: Path, header: str, variants: list[tuple], n: int, work: Path, keys=VARIANT_KEYS
) -> tuple[str, list[str]]:
    """Sample and evaluate each ``(label, temperature, extra options, subfolder)`` variant at
    ``n``; a markdown table (one row per variant) and the commands."""
    rows, commands = [], []
    for label, temperature, extra, sub in variants:
        metrics, _, cmds = sample_and_evaluate(folder, n, temperature, work_dir(folder, work / sub), extra)
        rows.append(metric_row(label, metrics, keys))
        commands += cmds
    head = f"| {header} | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1)
    return head + "\n" + "\n".join(rows), commands


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, nargs="?", default=Path("molgen/pretrained/smiles-gpt-moses"))
    ap.add_argument("--from", dest="source", type=Path, default=None, help="export folder to copy weights from")
    ap.add_argument("-n", type=int, default=30_000)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--work", type=Path, default=None, help="samples and metrics go here (default runs/cards/<name>)")
    ap.add_argument("--n-grammar", type=int, default=10_000, help="n of the grammar on/off table (0: none)")
    ap.add_argument("--precision", choices=PRECISIONS, default="auto", help="sampling precision (auto: bf16 where native)")
    ap.add_argument("--section", type=Path, default=None,
                    help="a markdown file (e.g. scripts/bench_conditional.py's table) added as the card's own section")
    args = ap.parse_args()
    folder = args.checkpoint
    copy_export(args.source, folder)
    work = work_dir(folder, args.work)
    prec = ("--precision", args.precision)
    metrics, seconds, commands = sample_and_evaluate(folder, args.n, args.temperature, work, prec)
    grammar = ""
    if args.n_grammar:
        t = args.temperature
        variants = [("on", t, prec, "grammar-on"), ("off", t, ("--no-grammar", *prec), "grammar-off")]
        grammar, more = variant_table(folder, "SMILES grammar", variants, args.n_grammar, work)
        commands += more
    meta = json.loads((folder / "config.json").read_text())
    commands.append(shlex.join(["python", "scripts/make_card.py", str(folder)]))
    (folder / "README.md").write_text(
        card(folder, meta, metrics, commands, seconds, args.n, args.temperature, grammar, args.n_grammar,
             invalid_reasons(work / "samples.csv", meta["config"]["block_size"]), precision_text(args.precision),
             args.section.read_text() if args.section else "")
    )
    print(json.dumps(metrics, indent=1))
    print(f"wrote {folder / 'README.md'}")


if __name__ == "__main__":
    main()
