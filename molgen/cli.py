"""The ``molgen`` command line: one subcommand per stage, each a thin shell over a library call.

Errors that the user can fix (a missing file, a misspelled column) are ``molgen.errors.MolgenError``
and are printed as one red line with exit code 2, never as a traceback.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from molgen.errors import InputError, MolgenError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="molgen: molecular generation with transfer learning (pretrain, generate, score, evaluate).")
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    # an explicit group callback keeps `molgen <command>` working even while one command exists
    pass


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def friendly(fn):
    """Turn a MolgenError into one clear line on stderr and exit code 2, Ctrl-C (and SIGTERM) into
    the interruption's own message and exit code 130, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # SLURM, systemd and `kill` end a job with SIGTERM: treat it as Ctrl-C, so that a command
        # keeps what it finished and says so, instead of dying mid-write
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return fn(*args, **kwargs)
        except MolgenError as err:  # escaped: a message may hold brackets ([distill], [Na+]) that are not markup
            console.print(f"[bold red]error:[/] {escape(str(err))}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt as err:
            console.print(f"[bold yellow]{escape(str(err) or 'interrupted')}[/]")
            raise typer.Exit(130) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


FORMAT_HELP = ("What goes to stdout: 'table' (for reading), 'csv' or 'json' (for scripts); 'auto' is a table on a "
               "terminal and CSV when piped. Progress and messages always go to stderr.")


class Format(str, enum.Enum):
    """--format's choices (typer refuses any other value with a usage error)."""

    auto = "auto"
    table = "table"
    csv = "csv"
    json = "json"


def _format(fmt: Format) -> str:
    """'table', 'csv' or 'json' for a --format value ('auto': a table only when stdout is a terminal)."""
    if fmt == Format.auto:
        return "table" if sys.stdout.isatty() else "csv"
    return Format(fmt).value


def _document_only(fmt: str):
    """For csv/json output, what a run prints on the way (library lines) goes to stderr: stdout holds the document."""
    return contextlib.redirect_stdout(sys.stderr) if fmt != "table" else contextlib.nullcontext()


def _emit(fmt: str, data) -> None:
    """A machine-readable document to stdout: a list of row dicts (or a DataFrame) as CSV, anything as strict JSON."""
    import json

    import pandas as pd

    from molgen.files import strict_json

    if fmt == "json":
        rows = data.to_dict("records") if isinstance(data, pd.DataFrame) else data
        sys.stdout.write(json.dumps(strict_json(rows), indent=1, allow_nan=False, default=str) + "\n")
    else:
        (data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)).to_csv(sys.stdout, index=False)


# --- data and scoring commands (datasets, score, evaluate) -------------------------------------


@app.command("datasets")
@friendly
def datasets_cmd(
    verify: bool = typer.Option(False, "--verify", help="Check the sha256 of every data file."),
    fmt: Format = typer.Option(Format.auto, "--format", help=FORMAT_HELP),
) -> None:
    """List the named data sets: size, splits, targets, source and licence."""
    from rich.table import Table

    from molgen import datasets

    fmt = _format(fmt)
    if fmt != "table":
        listing = datasets.list()
        if verify:
            listing["sha256"] = ["ok" if datasets.verify(name) else "-" for name in listing["name"]]
        return _emit(fmt, listing)
    table = Table(title="molgen data sets (load with molgen.datasets.load(name))")
    for col in ("name", "n", "splits", "targets", "source", "licence"):
        table.add_column(col, justify="right" if col == "n" else "left", overflow="fold")
    if verify:
        table.add_column("sha256")
    for row in datasets.list().itertuples(index=False):
        cells = [row.name, f"{row.n:,}", row.splits, row.targets or "-", row.source, row.licence]
        if verify:
            cells.append("ok" if datasets.verify(row.name) else "-")
        table.add_row(*cells)
    Console().print(table)


def _read_molecules(path: Path, smiles_col: str | None):
    """Read a molecule table and say on stderr how many rows did not parse, and why."""
    from molgen.io import invalid_summary, read_table

    df = read_table(path, smiles_col=smiles_col)
    console.print(f"read {path}: {invalid_summary(df)}")
    return df


@app.command("score")
@friendly
def score_cmd(
    inp: Path = typer.Argument(..., metavar="IN", help="Molecules: .csv, .tsv, .smi, .sdf or .parquet."),
    out: Path = typer.Option(..., "-o", "--out", help="Output table (.csv, .smi, .sdf, .parquet)."),
    smiles_col: str | None = typer.Option(None, "--smiles-col", help="SMILES column (default: detected)."),
    n_jobs: int = typer.Option(2, "--n-jobs", "-j", min=1, help="Worker processes."),
) -> None:
    """Score every molecule: QED, SA, logP, MW, TPSA, HBD/HBA, rings, NP-likeness, alerts, MOSES filter."""
    from molgen.files import same_file
    from molgen.io import sdf_molblocks, table_format, write_table
    from molgen.score import score

    if same_file(inp, out):
        raise InputError(f"-o {out} is the input file: write the scores to another file (the input stays as it is)")
    out_fmt = table_format(out)[0]  # a bad suffix is refused before the scoring
    table = score(_read_molecules(inp, smiles_col), n_jobs=n_jobs, progress=True)
    # SDF in, SDF out: the input's own molblocks (3-D coordinates, hydrogens), not a 2-D redraw
    in_sdf = out_fmt == ".sdf" and inp.suffix.lower() in (".sdf", ".gz") and ".sdf" in [s.lower() for s in inp.suffixes]
    renamed = table.attrs.get("renamed", {})
    if renamed:  # the user's own columns stay; say where molgen's went
        console.print(f"your table already has {', '.join(renamed)}: molgen's are written as "
                      f"{', '.join(renamed.values())}", markup=False, highlight=False)
    write_table(table, out, molblocks=sdf_molblocks(inp) if in_sdf else None)
    valid = table[renamed.get("valid", "valid")]
    console.print(f"[green]wrote[/] {len(table):,} rows ({int(valid.sum()):,} valid) to {out}")


def _print_table(title: str, rows: list[dict]) -> None:
    """A rich table to stdout: one row per dict, fractions to 3 decimals, counts as integers, "-" for undefined."""
    import math
    import numbers

    from rich.table import Table

    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, numbers.Integral) and not isinstance(v, bool):
            return f"{v:,}"
        return f"{v:.3f}" if isinstance(v, numbers.Real) and not isinstance(v, bool) else str(v)

    table = Table(title=title)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for col in columns:
        table.add_column(col, justify="left" if col in ("source", "metric") else "right")
    for row in rows:
        table.add_row(*[cell(row.get(c, "")) for c in columns])
    Console().print(table)


@app.command("evaluate")
@friendly
def evaluate_cmd(
    generated: Path = typer.Argument(..., help="Generated molecules (.csv, .smi, .sdf, .parquet)."),
    reference: str = typer.Option("moses", "--reference", help="'moses' (test + test_scaffolds)."),
    n: int | None = typer.Option(None, "--n", min=1, help="Evaluate a seeded sample of N molecules."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the metrics as JSON here."),
    smiles_col: str | None = typer.Option(None, "--smiles-col", help="SMILES column (default: detected)."),
    n_jobs: int = typer.Option(2, "--n-jobs", "-j", min=1, help="Worker processes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --n sample."),
    fmt: Format = typer.Option(Format.auto, "--format", help=FORMAT_HELP),
) -> None:
    """MOSES metrics of a generated set: validity, uniqueness, novelty, FCD, SNN, Frag, Scaf, IntDiv ..."""
    from molgen.files import write_json
    from molgen.metrics import evaluate

    if reference != "moses":
        raise typer.BadParameter("only 'moses' is built in; call molgen.metrics.evaluate(...) for your own")
    fmt = _format(fmt)
    smiles = _read_molecules(generated, smiles_col)["smiles"].tolist()
    metrics = evaluate(smiles, reference=reference, n=n, n_jobs=n_jobs, seed=seed, progress=True)
    if fmt != "table":
        _emit(fmt, metrics if fmt == "json" else [{"metric": k, "value": v} for k, v in metrics.items() if k != "caveats"])
        if metrics.get("caveats"):
            console.print("caveats: " + "; ".join(metrics["caveats"]), markup=False, highlight=False)
        if json_out is not None:
            write_json(json_out, metrics)
        return
    _print_table(f"MOSES metrics of {generated.name} (n={metrics.get('n', len(smiles)):,})",
                 [{"metric": k, "value": v} for k, v in metrics.items() if k != "caveats"])
    if metrics.get("caveats"):
        Console().print("caveats: " + "; ".join(metrics["caveats"]), markup=False, highlight=False)
    if json_out is not None:
        write_json(json_out, metrics)  # strict JSON: null where a metric is undefined
        console.print(f"[green]wrote[/] {json_out}")


@app.command("demo")
@friendly
def demo_cmd(
    out: Path = typer.Option(Path("results/demo"), "--out", "-o", help="Folder for the results."),
    data: str = typer.Option("chembl2321810", "--data", help="Target set: a data set name (molgen datasets) or a molecule file (CSV, SDF, ...)."),
    target_col: str = typer.Option("activity", "--target-col", help="The measured property column of the target set."),
    smiles_col: str = typer.Option(None, "--smiles-col", help="SMILES column of a table (default: found by name)."),
    lower_is_better: bool = typer.Option(False, "--lower-is-better", help="Guide toward low values of the property (e.g. IC50 in nM, clearance)."),
    n_train: int = typer.Option(None, "--n-train", min=5, help="Target molecules to learn from (default 100, or 80 % of a smaller set); the rest judge."),
    budget: int = typer.Option(2000, "--budget", min=64, help="Oracle calls for the optimisation."),
    steps: int = typer.Option(150, "--finetune-steps", min=1, help="Fine-tuning steps at most (early stopping may end sooner)."),
    n: int = typer.Option(2000, "-n", help="Molecules per shipped model in the MOSES table (FCD compares only at equal n); 0 leaves the table out."),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a demo run with other settings in --out."),
    fmt: Format = typer.Option(Format.auto, "--format", help=FORMAT_HELP + " CSV: the candidates; JSON: every stage's figures (mission.json)."),
) -> None:
    """The main job: the shipped models against MOSES, then transfer to a small target set, a property
    model, property-guided optimisation, candidates judged against the target set, and report.html.

    A rerun into the same folder with the same options keeps the finished stages and continues.
    """
    import pandas as pd

    from molgen.demo import DemoSettings, legend, run_demo, short_labels

    if n and n < 100:
        raise InputError(f"-n {n}: at least 100 molecules per model (or 0 to leave the MOSES table out)")
    settings = DemoSettings(data=data, target_col=target_col, smiles_col=smiles_col, higher_is_better=not lower_is_better,
                            n_train=n_train, budget=budget, finetune_steps=steps, n=n, seed=seed)  # fmt: skip
    fmt = _format(fmt)
    with _document_only(fmt):
        state = run_demo(out, settings, overwrite=overwrite, log=lambda line: console.print(escape(line), soft_wrap=True, highlight=False))
    if fmt != "table":
        return _emit(fmt, state if fmt == "json" else pd.read_csv(out / "candidates.csv"))
    stages = state["stages"]
    if "pretrained" in stages:
        summary = pd.DataFrame(stages["pretrained"]["summary"])
        # one column per source (short labels, spelled out below), one row per metric: fits 80 columns
        labels = short_labels(summary["source"])
        sources = summary["source"].tolist()
        _print_table(f"shipped models against MOSES: {n:,} molecules per source, seed {seed}",
                     [{"metric": col, **{labels[s]: v for s, v in zip(sources, summary[col].tolist(), strict=True)}}
                      for col in summary.columns if col != "source"])  # fmt: skip
        Console().print(legend(labels), markup=False, highlight=False)
    _print_mission(stages)
    console.print(f"[green]results in[/] {out.resolve()}: candidates.csv, report.html, mission.json")


def _print_mission(stages: dict) -> None:
    """The mission's figures as two short tables: the generator before and after, and where guidance went."""
    ft, fit, opt, cands = stages["finetune"], stages["property_model"], stages["optimize"], stages["candidates"]
    _print_table(f"fine-tuning ({ft['steps']} steps); against the held-out target molecules",
                 [{"metric": k, "parent": ft["before"].get(k), "fine-tuned": ft["after"].get(k)} for k in ft["before"]])
    _print_table("predicted property (property model; held-out RMSE "
                 f"{fit['rmse']:.2f}, mean-only {fit['baseline_rmse']:.2f}, Spearman {fit['spearman']:.2f})",
                 [{"set": r["set"], "n": r["n"], "mean": r["mean"], "median": r["median"], "max": r["max"]}
                  for r in cands["shift"]])  # fmt: skip
    console.print(f"optimisation: {opt['calls']:,} oracle calls, best score {opt['best']:.3f}, top-10 mean "
                  f"{opt['top10_mean']:.3f}; {cands['n']} candidates kept", highlight=False)


# --- model commands (pretrain, generate) ---------------------------------------------------------


@app.command("pretrain")
@friendly
def pretrain_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Run config TOML (scripts/configs/*.toml)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
) -> None:
    """Train a model from a run config: its model_type (GPT or graph-VAE) and task (pretrain, finetune
    from init_from, distill from a [distill] teacher); writes a checkpoint folder.

    Ctrl-C or SIGTERM saves a checkpoint of the step reached and exits 130 (143 for SIGTERM);
    ``--resume`` continues from it.
    """

    from molgen.train import TrainingInterrupted, pretrain

    try:
        out = pretrain(config, resume=resume)
    except TrainingInterrupted as stop:
        if stop.checkpoint is None:
            line = f"at step {stop.step}, before any checkpoint: nothing saved"
        else:
            line = f"at step {stop.step}: checkpoint {stop.checkpoint}; `molgen pretrain --config {config} --resume` continues from it"
        console.print("[yellow]interrupted[/] " + escape(line), soft_wrap=True)  # one line, however wide
        raise typer.Exit(128 + stop.signum) from None
    except KeyboardInterrupt:  # before training started (reading data, building the model)
        console.print("[yellow]interrupted[/] before training started: nothing saved")
        raise typer.Exit(130) from None
    console.print(f"[green]exported[/] {out}")


@app.command("finetune")
@friendly
def finetune_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Fine-tuning run config (scripts/configs/finetune_*.toml)."),
    fmt: Format = typer.Option(Format.auto, "--format", help=FORMAT_HELP + " CSV: figure, before, after; JSON: report.json."),
) -> None:
    """Fine-tune a pretrained GPT to a target set (freeze policy, early stopping, a longer context where
    the molecules need it) and report validity, uniqueness, novelty, FCD/SNN and scaffold share to the
    held-out target molecules, before and after; writes RUN_DIR/report.md and report.json."""
    from molgen.finetune import finetune_config, markdown

    fmt = _format(fmt)
    with _document_only(fmt):
        _, report = finetune_config(config)
    if fmt == "json":
        _emit(fmt, report)
    elif fmt == "csv":
        keys = [k for k in dict.fromkeys([*report["before"], *report["after"]]) if k != "caveats"]
        _emit(fmt, [{"figure": k, "before": report["before"].get(k), "after": report["after"].get(k)} for k in keys])
    else:
        Console().print(markdown(report), markup=False, highlight=False)
    console.print(f"[green]exported[/] {escape(report['export'])}")


@app.command("generate")
@friendly
def generate_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Shipped model name or checkpoint folder."),
    n: int = typer.Option(..., "-n", help="Number of molecules to write."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .csv, .tsv, .smi, .sdf or .parquet (.gz for text formats)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same molecules."),
    temperature: float | None = typer.Option(
        None, "--temperature", "-t",
        help="Sampling temperature; default: the model's own (1.0 for the GPT, 0 = greedy decoding for the graph-VAE).",
    ),
    grammar: bool | None = typer.Option(
        None, "--grammar/--no-grammar",
        help="SMILES models: mask tokens that break SMILES syntax (default on); --no-grammar samples the raw model.",
    ),
    prior: str | None = typer.Option(
        None, "--prior",
        help="Latent models: 'fitted' (the default where the model has one) or 'standard' N(0, I).",
    ),
    max_ring: int | None = typer.Option(
        None, "--max-ring", min=0,
        help="Graph-VAE: close no ring of more atoms (default: the model's, 7 for graph-vae-moses; 0 = no limit).",
    ),
    ring_rules: bool | None = typer.Option(
        None, "--ring-rules/--no-ring-rules",
        help="Graph-VAE: no bridged ring systems, no fused 3-/4-membered rings (default: the model's, on for graph-vae-moses).",
    ),
    precision: str | None = typer.Option(
        None, "--precision",
        help="SMILES models: auto (bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else fp32), fp32 or bf16.",
    ),
    condition: list[str] | None = typer.Option(
        None, "--condition",
        help="Conditional GPTs: a target property as NAME=VALUE in raw units (e.g. logp=2.5); repeat for more.",
    ),
    scaffold: str | None = typer.Option(
        None, "--scaffold",
        help="Build every molecule on this scaffold SMILES, [*] at the attachment points (none: any H-bearing atom "
        "may grow); adds a contains_scaffold column.",
    ),
    unique: bool = typer.Option(False, "--unique", help="Drop repeated molecules (canonical SMILES)."),
    valid_only: bool = typer.Option(False, "--valid-only", help="Drop molecules RDKit cannot parse."),
    batch_size: int = typer.Option(1024, "--batch-size", help="Molecules drawn at once (memory grows with it)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    workers: str = typer.Option(
        "auto", "--workers",
        help="CPU: processes that draw batches (auto = one per PyTorch thread; 1 = this process). Same seed, same molecules.",
    ),
    chunk_size: int = typer.Option(
        16_384, "--chunk-size", help="Rows per chunk file (whole batches): a kill loses at most the chunk being drawn.",
    ),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue an interrupted run from OUT.partial/ (same options): the file comes out as an uninterrupted run's.",
    ),
    score: bool = typer.Option(False, "--score", help="Add RDKit scores (qed, sa, logp, ... alerts) to every row, chunk by chunk."),
    objective: Path | None = typer.Option(
        None, "--objective", help="Objective TOML (scripts/configs/objective_*.toml): adds its total 'score' and score_<component> columns.",
    ),
    min_score: float | None = typer.Option(
        None, "--min-score", help="Drop rows whose objective score is below this (counted and reported; needs --objective).",
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="K/N: write only part K of the N-part run (contiguous seeded batches); shards 1..N joined = the whole run.",
    ),
) -> None:
    """Sample molecules from a model, optionally score and filter them, and write them to a file.

    The file appears only when complete; until then whole chunks sit in OUT.partial/, so an
    interrupted or killed run keeps them and --resume continues it. docs/batch.md: columns, shards.
    """
    import torch

    from molgen.batch import generate
    from molgen.models import load_pretrained

    workers = workers if workers == "auto" else _whole_number(workers, "--workers")
    summary = generate(
        load_pretrained(model, device=device), n, out, seed=seed, temperature=temperature, scaffold=scaffold,
        grammar=grammar, prior=prior, max_ring=max_ring, ring_rules=ring_rules, precision=precision,
        condition=_conditions(condition), unique=unique,
        valid_only=valid_only, batch_size=batch_size, device=device, resume=resume, chunk_size=chunk_size,
        workers=workers, score=score, objective=objective, min_score=min_score, shard=shard,
        n_jobs=torch.get_num_threads() if workers == "auto" else workers,
    )
    resumed = f", {summary['resumed_rows']:,} of them from the interrupted run" if summary["resumed_rows"] else ""
    below = f", {summary['below_min_score']:,} below --min-score {min_score:g} dropped" if min_score is not None else ""
    part = f" (shard {summary['shard']}: batches from {summary['first_batch']:,})" if shard else ""
    console.print(
        f"[green]wrote[/] {summary['written']:,} molecules to {out}{part} ({summary['valid']:,} valid of "
        f"{summary['sampled']:,} sampled{below}{resumed}, {summary['seconds']} s)"
    )


def _conditions(pairs: list[str] | None) -> dict | None:
    """``["logp=2.5", "tpsa=60"]`` -> ``{"logp": 2.5, "tpsa": 60.0}``; a malformed or repeated one is an InputError."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not name.strip() or number is None:
            raise InputError(f"--condition {pair!r}: write NAME=VALUE, e.g. --condition logp=2.5")
        if name.strip() in out:
            raise InputError(f"--condition {name.strip()} is given twice")
        out[name.strip()] = number
    return out


# --- transfer commands (fit-property, predict) -----------------------------------------------------


def _read_data(data: str, smiles_col: str | None):
    """A molecule table from a file, or a named data set (``molgen datasets`` lists them)."""
    from molgen import datasets

    if not Path(data).exists() and data in datasets.list()["name"].tolist():
        df = datasets.load(data)
        console.print(f"data set {data}: {len(df):,} rows")
        return df
    return _read_molecules(Path(data), smiles_col)


@app.command("fit-property")
@friendly
def fit_property_cmd(
    data: str = typer.Argument(..., help="Molecules with a measured property: a file, or a data set name (e.g. solubility)."),
    target: str = typer.Option(..., "--target", "-y", help="The property column (e.g. logS)."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for the fitted model (config.json + weights.safetensors)."),
    features: str = typer.Option("graph-vae-moses", "--features", help="graph-vae-moses, graph-vae-moses:layers (every encoder layer pooled), smiles-gpt-moses, smiles-gpt-moses-small, ecfp, or a checkpoint folder."),
    head: str = typer.Option("ridge", "--head", help="ridge, mlp or gp (a Gaussian process: predictions with a std)."),
    smiles_col: str | None = typer.Option(None, "--smiles-col", help="SMILES column (default: detected)."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force", help="Replace a model already saved in the folder."),
) -> None:
    """Fit a property model on frozen pretrained features; writes a folder that `molgen predict` reads."""
    from molgen.transfer import PropertyModel

    if (out / "config.json").exists() and not force:
        raise InputError(f"{out} already holds a model; pass --force to replace it, or choose another folder")
    model = PropertyModel(features, head, seed=seed)  # a bad head is refused before any reading
    model.fit(_read_data(data, smiles_col), target=target)
    model.save(out)
    r = model.report_
    skipped = {k: v for k, v in r.items() if k not in ("rows", "used") and v}
    console.print(f"[green]fitted[/] {head} on {features} features: {r['used']:,} molecules of {r['rows']:,} rows"
                  + (f" ({', '.join(f'{k}: {v:,}' for k, v in skipped.items())})" if skipped else "")
                  + f"; saved to {out}")


@app.command("predict")
@friendly
def predict_cmd(
    model_dir: Path = typer.Argument(..., help="A folder written by `molgen fit-property`."),
    data: str = typer.Argument(..., help="Molecules to predict: a file or a data set name."),
    out: Path = typer.Option(..., "-o", "--out", help="Output table (.csv, .tsv, .smi, .sdf, .parquet)."),
    smiles_col: str | None = typer.Option(None, "--smiles-col", help="SMILES column (default: detected)."),
) -> None:
    """Predict a fitted property for every molecule: the input's columns, then predicted_<target> (and _std)."""
    from molgen.files import same_file
    from molgen.io import table_format, write_table
    from molgen.transfer import PropertyModel

    if same_file(data, out):
        raise InputError(f"-o {out} is the input file: write the predictions to another file")
    table_format(out)
    model = PropertyModel.load(model_dir)
    table = _read_data(data, smiles_col)
    pred = model.predict(table["smiles"].tolist())
    name = f"predicted_{model.target}"
    while name in table.columns:
        name += "_molgen"
    table[name] = pred["mean"].to_numpy()
    if model.head == "gp":
        table[name + "_std"] = pred["std"].to_numpy()
    write_table(table, out)
    console.print(f"[green]wrote[/] {len(table):,} rows ({int(pred['mean'].notna().sum()):,} predicted) to {out}")


experiment_app = typer.Typer(no_args_is_help=True, help="Experiments that measure what transfer buys.")
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("transfer")
@friendly
def experiment_transfer_cmd(
    dataset: str | None = typer.Option(None, "--dataset", help="A named data set (molgen datasets), e.g. solubility."),
    data: Path | None = typer.Option(None, "--data", help="Or a file of molecules with a measured property."),
    target: str | None = typer.Option(None, "--target-col", help="The property column (a data set's first target by default)."),
    smiles_col: str = typer.Option("smiles", "--smiles-col"),
    sizes: str = typer.Option("25,50,100,200,500,all", "--sizes", help="Training-set sizes, comma-separated; 'all' = every non-test molecule."),
    seeds: str = typer.Option("3", "--seeds", help="A count (3 = seeds 0, 1, 2) or a list (0,5,7)."),
    methods: str | None = typer.Option(None, "--methods", help="Comma-separated, of either task; default: each task's (ecfp+rf, ecfp+gp, graph-vae-moses+ridge, ...; pretrained, scratch, finetune-none, finetune-lora, ...)."),
    tasks: str | None = typer.Option(None, "--tasks", help="property, generation or property,generation; default: both when the data has the property column, else generation."),
    generator: str = typer.Option("smiles-gpt-moses-small", "--generator", help="Generation: the pretrained GPT (name or folder)."),
    eval_samples: int = typer.Option(1000, "--eval-samples", min=10, help="Generation: molecules sampled from each model."),
    steps: int = typer.Option(150, "--steps", min=1, help="Generation: training steps of each fine-tuned or scratch model (early stopping may stop sooner)."),
    forgetting_molecules: int = typer.Option(2000, "--forgetting-molecules", min=0, help="Generation: MOSES test molecules scored for forgetting (0: none)."),
    out: Path = typer.Option(Path("results/transfer"), "--out", "-o", help="Folder for results.csv, results.md, learning_curve*.png, splits/."),
    fmt: Format = typer.Option(Format.auto, "--format", help=FORMAT_HELP + " CSV and JSON: results.csv's rows."),
) -> None:
    """Transfer vs. no transfer on a scaffold split, by training size: property prediction (pretrained
    features vs. fingerprint baselines) and generation (fine-tuned vs. pretrained and scratch GPTs)."""
    from molgen.experiment import experiment

    size_list = [s.strip() if s.strip() == "all" else _whole_number(s.strip(), "--sizes") for s in sizes.split(",")]
    seed_list = (list(range(_whole_number(seeds, "--seeds"))) if "," not in seeds
                 else [_whole_number(s.strip(), "--seeds") for s in seeds.split(",")])
    method_list = None if methods is None else tuple(m.strip() for m in methods.split(","))
    task_list = None if tasks is None else tuple(t.strip() for t in tasks.split(","))
    fmt = _format(fmt)
    with _document_only(fmt):
        results = experiment(dataset, data, target, smiles_col, size_list, seed_list, method_list, out, tasks=task_list,
                             generator=generator, eval_samples=eval_samples, steps=steps,
                             forgetting_molecules=forgetting_molecules)  # fmt: skip
    console.print(f"[green]{len(results):,} runs[/]; table in {out / 'results.md'}, curves in {out}/learning_curve*.png")
    if fmt != "table":
        return _emit(fmt, results)
    Console().print((out / "results.md").read_text(), markup=False, highlight=False)


@app.command("report")
@friendly
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder: a demo run, a transfer experiment, an optimisation or training run."),
    out: Path | None = typer.Option(None, "--out", "-o", help="The HTML file (default RUN_DIR/report.html)."),
    scaffold: str | None = typer.Option(None, "--scaffold", help="SMARTS or SMILES of a substructure to highlight in the grids."),
    top: int = typer.Option(12, "--top", min=1, help="Molecules per grid."),
) -> None:
    """One self-contained HTML page of a run folder: tables, molecule grids, distributions, curves."""
    from molgen.report import report

    path = report(run_dir, out, scaffold=scaffold, top=top)
    console.print(f"[green]wrote[/] {path}")


@app.command("optimize")
@friendly
def optimize_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Optimize config TOML (scripts/configs/optimize_*.toml)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the config's out folder; nothing in its optimize.csv is scored again."),
) -> None:
    """Optimise molecules for an objective within a budget of oracle calls: reinforcement learning
    against the prior (REINVENT / Augmented Hill-Climb; writes optimize.csv, steps.csv, checkpoints/,
    agent/), or with method = "latent" in the TOML CMA-ES in the graph-VAE's latent space."""
    from molgen.guide.rl import optimize

    result = optimize(config, resume=resume, log=lambda line: console.print(escape(line), soft_wrap=True, highlight=False))
    best = result.top(1)
    if len(best):
        console.print(f"[green]best[/] {best['score'].iloc[0]:.3f} {escape(best['smiles'].iloc[0])}  "
                      f"({result.calls_used:,} oracle calls; molgen report {result.out})", soft_wrap=True, highlight=False)


def _whole_number(text: str, option: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{option} takes 'auto' or a whole number, not {text!r}") from None


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
