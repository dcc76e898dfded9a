"""molgen.report: one self-contained HTML page of a run folder, checked as text and in a headless browser."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from molgen.demo import REFERENCE_ROW, SUMMARY_KEYS
from molgen.errors import InputError
from molgen.report import find, report

_IMG = re.compile(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A demo-like run by hand (real scored molecules, fake metrics), a tiny transfer experiment,
    an optimisation log and a Lightning training log."""
    from molgen.datasets import load
    from molgen.experiment import experiment
    from molgen.score import score

    root = tmp_path_factory.mktemp("run")
    smiles = load("chembl_drugs")["smiles"].iloc[::60].head(30).tolist() + ["not a smiles"]
    scored = score(smiles)
    rows = []
    for k, source in enumerate(("smiles-gpt-moses", REFERENCE_ROW)):
        (root / source).mkdir()
        scored.iloc[k::2].to_csv(root / source / "molecules.csv", index=False)
        metrics = {key: 0.5 + 0.1 * k for key in SUMMARY_KEYS} | {"QED": 0.01, "n": 16,
                                                                  "caveats": ["FCD on <script>16</script> molecules"]}
        (root / source / "metrics.json").write_text(json.dumps(metrics))
        rows.append({"source": source, "n": 16, **{key: metrics[key] for key in SUMMARY_KEYS},
                     "mean QED": 0.6, "mean SA": 3.0, "seconds": 1.5})
    pd.DataFrame(rows).to_csv(root / "summary.csv", index=False)
    experiment("freesolv", target="expt", sizes=(20,), seeds=(0,), methods=("ecfp+ridge",),
               out=root / "transfer", progress=False)
    (root / "opt").mkdir()
    pd.DataFrame({"step": np.repeat(np.arange(5), 6), "oracle_call": np.arange(30), "smiles": smiles[:30],
                  "score": np.random.default_rng(0).random(30)}).to_csv(root / "opt" / "optimize.csv", index=False)
    _mission(root, scored)
    log = root / "opt" / "logs" / "version_0"
    log.mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 0, 1, 1], "step": [10, 10, 20, 20], "train_loss": [2.0, np.nan, 1.5, np.nan],
                  "val_nll": [np.nan, 1.9, np.nan, 1.6]}).to_csv(log / "metrics.csv", index=False)
    return root


def _mission(root, scored: pd.DataFrame) -> None:
    """What molgen demo writes for the mission: mission.json, candidates.csv, predicted.csv (real molecules)."""
    from molgen.demo import CANDIDATE_COLUMNS

    good = scored[scored["valid"]].head(6).reset_index(drop=True)
    cands = pd.DataFrame({"smiles": good["smiles"], "score": np.linspace(0.8, 0.5, len(good)), "predicted": 7.0,
                          "predicted_std": 0.4, **{p: good[p] for p in ("qed", "sa", "logp", "mw", "tpsa")},
                          "nearest_target": good["smiles"].iloc[0], "nearest_target_similarity": 0.5,
                          "nearest_target_value": 6.5, "shares_target_scaffold": False, "step": 1,
                          "oracle_call": np.arange(len(good))})  # fmt: skip
    cands[list(CANDIDATE_COLUMNS)].to_csv(root / "candidates.csv", index=False)
    pd.DataFrame({"set": ["target (measured)"] * 3 + ["candidates"] * 3, "smiles": good["smiles"],
                  "value": [5.0, 6.0, 7.0, 7.1, 7.2, np.nan]}).to_csv(root / "predicted.csv", index=False)
    shift = [{"set": "target (measured)", "n": 3, "mean": 6.0, "q25": 5.5, "median": 6.0, "q75": 6.5, "max": 7.0}]
    state = {"settings": {}, "stages": {
        "target": {"name": "<b>series</b>", "column": "pIC50", "n": 30, "n_train": 20, "n_held_out": 10,
                   "skipped": {"unreadable_molecule": 1}, "scaffold": "c1ccccc1", "seconds": 1.0},
        "finetune": {"steps": 150, "before": {"valid": 0.99, "FCD": 84.9}, "after": {"valid": 0.92, "FCD": 12.0},
                     "seconds": 90.0},
        "property_model": {"features": "graph-vae-moses", "head": "gp", "n_train": 20, "n_held_out": 10, "rmse": 0.8,
                           "baseline_rmse": 1.1, "mae": 0.6, "spearman": 0.7, "within_1sd": 0.7, "seconds": 3.0},
        "optimize": {"calls": 30, "stopped": "budget spent", "best": 0.8, "top10_mean": 0.6, "seconds": 20.0},
        "candidates": {"n": 6, "IntDiv": 0.8, "shift": shift, "seconds": 5.0}}}  # fmt: skip
    (root / "mission.json").write_text(json.dumps(state))


@pytest.fixture(scope="module")
def page(run_dir):
    path = report(run_dir, scaffold="c1ccccc1")
    return path, path.read_text(encoding="utf-8")


def test_find_names_every_kind(run_dir):
    found = find(run_dir)
    assert {p.name for p in found["sources"]} == {"smiles-gpt-moses", REFERENCE_ROW}
    assert [p.parent.name for p in found["transfer"]] == ["transfer"]
    assert [p.name for p in found["optimize"]] == ["optimize.csv"]
    assert [p.name for p in found["training"]] == ["metrics.csv"]
    assert [p.name for p in found["mission"]] == ["mission.json"]


def test_page_is_self_contained(page, run_dir):
    path, text = page
    assert path == run_dir / "report.html"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "@import" not in text and "url(" not in text
    assert "<script>16</script>" not in text and "&lt;script&gt;16&lt;/script&gt;" in text  # escaped


def test_page_has_tables_grids_and_images(page):
    _, text = page
    for heading in ("The mission", "Fine-tuning the generator (150 steps)", "Where guidance moved the molecules",
                    "Candidates (6 in", "Metrics", "Best molecules by QED", "Property distributions", "Transfer experiment: expt",
                    "Optimisation", "Training curves"):
        assert heading in text
    for metric in ("FCD/Test", "mean QED", "smiles-gpt-moses", REFERENCE_ROW):
        assert f"<th>{metric}</th>" in text or f"<td>{metric}</td>" in text
    assert re.search(r"<td>ecfp\+ridge</td><td><b>\d+\.\d+</b></td>", text)  # one seed: no sd
    assert text.count("<svg") == 4  # the candidates, two sources, one optimisation
    assert text.count("<summary>SMILES and scores</summary>") == 4  # a copyable table under each grid
    assert "&lt;b&gt;series&lt;/b&gt;" in text and "1 unreadable molecule" in text
    assert "<th>predicted_std</th><th>nearest_target_similarity</th>" in text  # the candidates' table
    assert "#FF7F7F" in text  # the benzene highlight
    images = _IMG.findall(text)
    assert len(images) == 5  # property shift, distributions, learning curve, optimisation curve, training curves
    for data in images:
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        Image.open(io.BytesIO(raw)).verify()


def test_errors_and_cli(tmp_path, run_dir):
    from molgen.cli import app

    with pytest.raises(InputError, match="nothing to report"):
        report(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        report(tmp_path / "missing")
    with pytest.raises(InputError, match="scaffold"):
        report(run_dir / "transfer", out=tmp_path / "x.html", scaffold="c1cc(")
    out = tmp_path / "t.html"
    result = CliRunner().invoke(app, ["report", str(run_dir / "transfer"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Transfer experiment" in out.read_text() and "Metrics" not in out.read_text()
    assert CliRunner().invoke(app, ["report", str(tmp_path / "missing")]).exit_code == 2


def test_page_in_a_headless_browser(page, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not installed: the browser check is skipped")
        pytest.skip("chromium not installed (apt-get install chromium): browser check skipped")
    path, text = page
    flags = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
             "--virtual-time-budget=5000", "--window-size=1280,2000"]
    dom = subprocess.run([*flags, "--dump-dom", path.resolve().as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    n_images = len(_IMG.findall(text))
    assert f'data-images="{n_images}"' in dom, dom[:300]
    assert 'data-broken-images="0"' in dom
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", path.resolve().as_uri()], capture_output=True,
                   timeout=120, check=True)
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        assert np.asarray(im.convert("L")).std() > 10  # something drawn, not a blank page


def test_a_generation_experiment_has_its_own_tables(tmp_path):
    """results.csv of `molgen experiment transfer --tasks generation`: FCD and validity by method and size."""
    rows = [{"task": "generation", "method": m, "size": size, "seed": seed, "valid": 0.9, "fcd": fcd + seed}
            for m, fcd in (("pretrained", 85.0), ("finetune-none", 10.0)) for size in (25, 100) for seed in (0, 1)]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    text = report(tmp_path).read_text()
    assert "Generation: FCD" in text and "Property prediction" not in text
    assert "<td>finetune-none</td><td><b>10.50 ± 0.707</b></td>" in text  # the lower FCD in bold
