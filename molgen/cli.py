"""The ``molgen`` command line: one subcommand per stage, each a thin shell over a library call.

Errors that the user can fix (a missing file, a misspelled column) are ``molgen.errors.MolgenError``
and are printed as one red line with exit code 2, never as a traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from molgen.errors import MolgenError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    # an explicit group callback keeps `molgen <command>` working even while one command exists
    pass


def friendly(fn):
    """Turn a MolgenError into one clear line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MolgenError as err:
            console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(2) from None

    return wrapper


# --- data and scoring commands (datasets, score, evaluate) -------------------------------------


@app.command("datasets")
@friendly
def datasets_cmd(
    verify: bool = typer.Option(False, "--verify", help="Check the sha256 of every data file."),
) -> None:
    """List the named data sets: size, splits, targets, source and licence."""
    from rich.table import Table

    from molgen import datasets

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


# --- model commands (pretrain, generate) ---------------------------------------------------------


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
