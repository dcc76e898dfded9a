"""The notebooks under notebooks/ are built from their source (scripts/notebooks/) and run top to bottom.

The cheap test checks that each committed notebook's cells are exactly what its source builds, so
the reviewable source and the rendered notebook never drift apart. The slow test executes each
notebook (not just parses it) with small budgets: :data:`SMALL` rewrites the values in its
``parameters`` cell (see scripts/make_notebooks.py), and checks a printed line per notebook that
proves its cells did their job.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make_notebooks.py")
make_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_notebooks)

#: each notebook's small budgets for the test run (the value's source, by parameter name)
SMALL = {
    "01_quickstart": {},
    "02_transfer": {"N_TRAIN": "60", "SIZES": "(25,)", "SEEDS": "(0,)"},
    "03_guided_design": {"BUDGET": "96", "BATCH_SIZE": "32"},
    "04_latent_space": {"N_MAP": "60", "N_NEIGHBOURS": "4"},
    "05_pipeline": {"N": "60"},
}


def _sources(nb) -> list[tuple]:
    return [(c.cell_type, c.source, c.get("id"), c.metadata.get("tags", [])) for c in nb.cells]


def test_every_notebook_has_a_source():
    assert [p.stem for p in NOTEBOOKS] == make_notebooks.names() == list(SMALL)


@pytest.mark.parametrize("name", make_notebooks.names())
def test_notebook_matches_its_source(name):
    committed = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert _sources(committed) == _sources(make_notebooks.build(name)), \
        f"notebooks/{name}.ipynb differs from scripts/notebooks/{name}.py: python scripts/make_notebooks.py --execute {name}"


@pytest.mark.parametrize("name", [n for n in make_notebooks.names() if SMALL[n]])
def test_notebook_parameters_are_the_first_code_cell(name):
    nb = make_notebooks.build(name)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.metadata.get("tags") == ["parameters"]
    make_notebooks.set_parameters(nb, SMALL[name])
    for key, value in SMALL[name].items():
        assert re.search(rf"^{key} = {re.escape(value)}(\s+#|$)", first.source, re.M)
    with pytest.raises(ValueError, match="no line for"):
        make_notebooks.set_parameters(nb, {"NOT_A_PARAMETER": "1"})


def _text(nb) -> str:
    """Everything the notebook printed or displayed as text."""
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            parts.append(o.get("text", ""))
            parts.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _check_01(text: str) -> None:
    assert "valid: 1.000" in text  # graph-VAE prior samples: valid by construction
    assert "rows back from gpt_samples.sdf" in text
    assert "8 distinct neighbours from" in text  # neighbours: distinct molecules, not one point 8 times


def _check_02(text: str) -> None:
    assert "scaffolds shared by train and test: 0" in text  # a scaffold split
    assert re.search(r"graph-vae-moses features: \(60, \d+\)", text)
    assert re.search(r"smiles-gpt-moses-small features: \(60, \d+\)", text)
    assert "ecfp features: (60, 2048)" in text
    within = float(re.search(r"GP within 1 sd: (\d+)%", text)[1])
    assert 20 <= within <= 100  # the GP's std means something on held-out scaffolds
    assert "5 fits, 5 methods" in text  # SIZES (25,) x SEEDS (0,) x 5 methods


def _check_03(text: str) -> None:
    assert "stopped after step" in text and "budget of 96 oracle calls spent" in text
    front, total = map(int, re.search(r"Pareto front: (\d+) of (\d+) molecules", text).groups())
    assert 0 < front < total and total == 96
    assert re.search(r"best score: 0\.\d+", text)


def _check_04(text: str) -> None:
    assert re.search(r"embedding shape: \(60, \d+\)", text)
    assert "4 distinct neighbours" in text
    assert re.search(r"interpolation: \d+ distinct molecules in 8 steps", text)


def _check_05(text: str) -> None:
    assert "kept columns: ['compound_id', 'project', 'measured']" in text
    assert "invalid rows kept: 1" in text
    assert re.search(r"best: \{.*'embed__model': '", text)
    assert re.search(r"SDF round trip: 60 rows, columns kept: True", text)


CHECKS = {"01_quickstart": _check_01, "02_transfer": _check_02, "03_guided_design": _check_03,
          "04_latent_space": _check_04, "05_pipeline": _check_05}


@pytest.mark.slow
@pytest.mark.parametrize("name", make_notebooks.names())
def test_notebook_runs(name):
    nb = make_notebooks.build(name)  # the source's cells: outputs saved in the file cannot stand in for this run's
    if SMALL[name]:
        make_notebooks.set_parameters(nb, SMALL[name])
    make_notebooks.execute(nb, timeout=900)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    errors = [o for cell in code for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert all(cell.execution_count for cell in code)  # every cell ran
    CHECKS[name](_text(nb))
