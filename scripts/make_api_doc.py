"""Writes docs/api.md: the public Python API in one place, each entry's signature (type hints) and the
first paragraph of its docstring, read from the code. ``python scripts/make_api_doc.py`` rewrites the page;
``--check`` exits 1 when it is out of date (tests/test_readme.py runs the check)."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"

# (section, [dotted names]): what a notebook or pipeline calls; every one returns a DataFrame with
# `smiles` first where it returns a table, and takes RDKit Mol objects as well as SMILES where it takes molecules
API = [
    ("Data", ["molgen.datasets.list", "molgen.datasets.load", "molgen.io.read_table", "molgen.io.write_table"]),
    ("Models and sampling", ["molgen.load_pretrained", "molgen.sample", "molgen.sample.generate_to_file",
                             "molgen.batch.generate", "molgen.models.hub.save_pretrained", "molgen.models.hub.from_pretrained"]),
    ("Scoring and evaluation", ["molgen.score", "molgen.evaluate", "molgen.chem.canonicalize", "molgen.chem.standardize",
                                "molgen.chem.scaffold"]),
    ("Transfer", ["molgen.transfer.embed", "molgen.transfer.Embedder", "molgen.transfer.PropertyModel",
                  "molgen.finetune.finetune", "molgen.experiment.experiment", "molgen.experiment.scaffold_split"]),
    ("Guided generation", ["molgen.guide.Objective", "molgen.guide.Oracle", "molgen.guide.rl.optimize",
                           "molgen.guide.latent.optimize_latent", "molgen.guide.pmo.score"]),
    ("The main job and reports", ["molgen.demo.run_demo", "molgen.demo.load_target", "molgen.report"]),
]


def resolve(dotted: str):
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _annotation(a) -> str:
    return a if isinstance(a, str) else getattr(a, "__name__", repr(a))


def _signature(sig: inspect.Signature) -> str:
    """``(a: int, b: str = 'x', *, c=None) -> T`` with the annotations as written (not quoted strings)."""
    parts, star = [], False
    for p in sig.parameters.values():
        if p.name == "self":
            continue
        if p.kind == p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        star = star or p.kind == p.VAR_POSITIONAL
        if p.annotation is not p.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {p.default!r}" if p.annotation is not p.empty else f"={p.default!r}"
        parts.append(text)
    ret = "" if sig.return_annotation is sig.empty else f" -> {_annotation(sig.return_annotation)}"
    return f"({', '.join(parts)}){ret}"


def entry(dotted: str) -> str:
    obj = resolve(dotted)
    if inspect.ismodule(obj):  # mg.score / mg.sample: callable modules, the function of the same name
        obj = getattr(obj, dotted.rsplit(".", 1)[1])
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = _signature(inspect.signature(target))
    except (TypeError, ValueError):
        sig = "(...)"
    doc = inspect.getdoc(obj) or ""
    first = doc.split("\n\n")[0].replace("\n", " ")
    name = dotted.replace("molgen.", "mg.", 1)
    return f"### `{name}`\n\n```python\n{name}{sig}\n```\n\n{first}\n"


def render() -> str:
    out = ["# The public Python API\n",
           "Generated from the code by `python scripts/make_api_doc.py` (a test checks it is current). "
           "`import molgen as mg` is cheap; each module loads on first use. Functions that take molecules "
           "take SMILES strings or RDKit `Mol` objects; tables come back as pandas DataFrames with `smiles` "
           "first. Bad input is a `molgen.errors.InputError` with one line that names the row or option.\n"]
    for section, names in API:
        out.append(f"## {section}\n")
        out += [entry(n) for n in names]
    return "\n".join(out)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if PAGE.is_file() and PAGE.read_text() == text else 1)
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
