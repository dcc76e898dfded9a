"""Builds notebooks/NN_name.ipynb from its reviewable source, scripts/notebooks/NN_name.py.

Each source file defines ``CELLS``, a list of ``(kind, text)`` pairs, ``kind`` being ``"md"``,
``"code"`` or ``"parameters"``; ``text`` is dedented and stripped of blank first and last lines,
so code sits readably indented inside triple quotes. Review and edit the source, never the .ipynb: a cheap test
(tests/test_notebooks.py) fails when a committed notebook's cells differ from what its source
builds.

Parameters. A notebook's budgets (how many molecules, oracle calls, training sizes) sit in ONE
code cell of kind ``"parameters"``, the first code cell, tagged ``parameters`` (papermill's
convention) and holding only lines ``NAME = value  # comment``. The committed notebooks run with
the values written there (a few minutes each on 2 CPU cores); the slow notebook test lowers them
with :func:`set_parameters`, which replaces the value of each named line and refuses a name the
cell lacks, so a renamed parameter cannot silently keep its large value.

Usage (from the repository root)::

    python scripts/make_notebooks.py                     # rebuild every notebook, without outputs
    python scripts/make_notebooks.py --execute 03        # rebuild and run 03_*, saving its outputs
    python scripts/make_notebooks.py --keep-outputs 03   # after a prose-only edit: keep the saved outputs

Commit notebooks executed (``--execute``), so that they render with their outputs on GitHub.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import tempfile
import textwrap
from pathlib import Path

import nbformat as nbf

from molgen.files import atomic_path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "scripts" / "notebooks"
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def names() -> list[str]:
    """The notebooks that have a source: ``["01_quickstart", "02_transfer", ...]``."""
    return sorted(p.stem for p in SOURCES.glob("[0-9][0-9]_*.py"))


def build(name: str) -> nbf.NotebookNode:
    """The notebook ``name`` as its source defines it (no outputs)."""
    spec = importlib.util.spec_from_file_location(f"notebook_{name}", SOURCES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cells = []
    for i, (kind, text) in enumerate(module.CELLS):
        text = textwrap.dedent(text).strip("\n")  # sources indent code cells inside triple quotes
        if kind == "md":
            cell = nbf.v4.new_markdown_cell(text)
        elif kind in ("code", "parameters"):
            cell = nbf.v4.new_code_cell(text)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
        else:
            raise ValueError(f"{name}: cell {i} has kind {kind!r}; use 'md', 'code' or 'parameters'")
        cell.id = f"cell-{i:02d}"  # stable ids: rebuilding a notebook changes only what changed
        cells.append(cell)
    return nbf.v4.new_notebook(cells=cells, metadata=dict(KERNELSPEC))


_LINE = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*) = (?P<value>.*?)(?P<comment>\s+#.*)?$")


def set_parameters(nb: nbf.NotebookNode, values: dict[str, str]) -> None:
    """Rewrite the ``parameters`` cell of ``nb`` in place: ``values`` maps a name to its new value's source."""
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    lines, left = cell.source.split("\n"), dict(values)
    for i, line in enumerate(lines):
        m = _LINE.match(line)
        if m and m["name"] in left:
            lines[i] = f"{m['name']} = {left.pop(m['name'])}{m['comment'] or ''}"
    if left:
        raise ValueError(f"the parameters cell has no line for {sorted(left)}")
    cell.source = "\n".join(lines)


def execute(nb: nbf.NotebookNode, timeout: int = 1800) -> nbf.NotebookNode:
    """Run ``nb`` top to bottom in a fresh kernel, in an empty temporary folder; outputs are kept in ``nb``."""
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory() as cwd:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": cwd}}).execute()
    return nb


def keep_outputs(nb: nbf.NotebookNode, old: nbf.NotebookNode) -> bool:
    """Copy ``old``'s outputs into ``nb`` when their code cells are the same, in order (prose may differ).

    Returns False, copying nothing, when any code cell differs: then the outputs need a new run.
    """
    code, old_code = ([c for c in n.cells if c.cell_type == "code"] for n in (nb, old))
    if [c.source for c in code] != [c.source for c in old_code]:
        return False
    for cell, before in zip(code, old_code, strict=True):
        cell.outputs, cell.execution_count = before.outputs, before.execution_count
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="notebook names or number prefixes (default: all)")
    parser.add_argument("--execute", action="store_true", help="run each notebook and save its outputs")
    parser.add_argument("--keep-outputs", action="store_true",
                        help="keep the saved outputs of a notebook whose code cells did not change (prose edits)")
    args = parser.parse_args()
    chosen = [n for n in names() if not args.only or any(n.startswith(o) for o in args.only)]
    if not chosen:
        raise SystemExit(f"no notebook matches {args.only}; there are {names()}")
    for name in chosen:
        nb = build(name)
        path = NOTEBOOKS / f"{name}.ipynb"
        if args.execute:
            execute(nb)
        elif args.keep_outputs and path.exists() and not keep_outputs(nb, nbf.read(path, as_version=4)):
            raise SystemExit(f"{path.relative_to(ROOT)}: code cells changed; run it again with --execute {name}")
        with atomic_path(path) as tmp:  # a failed run leaves the committed notebook as it was
            nbf.write(nb, tmp)
        print(f"wrote {path.relative_to(ROOT)}" + (" (executed)" if args.execute else ""))


if __name__ == "__main__":
    main()
