"""The import rule of docs/architecture.md: a module imports only from its own layer or below.

Every import counts, at module level or inside a function, so a lazy import cannot hide an arrow
that runs back up the flow. A new module must be given a layer here (and a line in the map).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "molgen"

# module (or package prefix) -> layer, lowest first; the same table as docs/architecture.md
LAYERS = {
    "molgen": 0, "molgen.errors": 0, "molgen.files": 0, "molgen.cache": 0, "molgen.chem": 0, "molgen.parallel": 0,
    "molgen.io": 1, "molgen.tokenize": 1, "molgen.featurize": 1, "molgen.datasets": 1,
    "molgen.models": 2,
    "molgen.config": 3, "molgen.data": 3, "molgen.train": 3,
    "molgen.transfer": 4, "molgen.sample": 4, "molgen.score": 4,
    "molgen.guide": 5, "molgen.metrics": 5, "molgen.experiment": 5, "molgen.experiment_generation": 5,
    "molgen.finetune": 5, "molgen.batch": 5,
    "molgen.report": 6, "molgen.demo": 6, "molgen.cli": 6,
}  # fmt: skip


def layer(module: str) -> int:
    """The layer of a module: its own entry, or that of the nearest package above it."""
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in LAYERS:
            return LAYERS[".".join(parts[:k])]
    raise KeyError(module)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every molgen module ``path`` imports, anywhere in the file (``from molgen import chem`` is molgen.chem)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "molgen"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "molgen":
                out |= {f"molgen.{a.name}" if f"molgen.{a.name}" in LAYERS else "molgen" for a in node.names}
            elif node.module.split(".")[0] == "molgen":
                out.add(node.module)
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_package_is_where_the_test_looks():
    names = {module_name(p) for p in MODULES}
    assert {"molgen.models.gpt", "molgen.sample", "molgen.cli", "molgen.parallel"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_runs_back_up_a_layer(path):
    me = module_name(path)
    try:
        mine = layer(me)
    except KeyError:
        pytest.fail(f"{me} has no layer: add it to docs/architecture.md and to LAYERS here")
    upward = sorted(m for m in imports(path) if layer(m) > mine)
    assert not upward, f"{me} (layer {mine}) imports {upward} from a higher layer"


def test_models_never_import_training_sampling_or_the_cli():
    for path in (PACKAGE / "models").rglob("*.py"):
        bad = {m for m in imports(path) if m.split(".")[:2] in (["molgen", "train"], ["molgen", "sample"], ["molgen", "cli"])}
        assert not bad, f"{module_name(path)} imports {sorted(bad)}"


def test_the_rule_catches_an_arrow_up(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from molgen.sample import sample\n    import molgen.cli\n")
    assert imports(bad) == {"molgen.sample", "molgen.cli"}
    assert layer("molgen.models.gpt") < layer("molgen.sample")
