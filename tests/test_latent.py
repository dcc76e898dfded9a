"""Latent-space optimisation (molgen.guide.latent): CMA-ES over graph-vae-moses's latent space under
the oracle's budget, the same optimize.csv as RL, resuming by replay, and the method switch of the
optimize TOML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from molgen.chem import canonicalize
from molgen.errors import ConfigError
from molgen.guide.latent import LatentConfig, LatentSpace, optimize_latent
from molgen.guide.rl import optimize
from molgen.guide.runlog import log_columns

ROOT = Path(__file__).resolve().parents[1]
QED = ROOT / "scripts" / "configs" / "objective_qed.toml"


torch.set_num_threads(1)  # two threads on two shared cores stall each other in these small matmuls


def _config(out, **kw):
    cfg = {"method": "latent", "objective": str(QED), "budget": 150, "out": str(out), "popsize": 16,
           "n_init": 16, "sigma0": 0.3, "n_whiten": 4000, "seed": 0, "device": "cpu"}
    cfg.update(kw)
    return cfg


def test_latent_run_keeps_the_budget_and_beats_its_start(tmp_path):
    result = optimize_latent(_config(tmp_path / "run"), log=None)
    mols = result.molecules
    assert len(mols) == 150 and "budget" in result.stop_reason  # never more than the budget
    # the same file as RL writes: columns, calls 1..n in order, distinct canonical SMILES, scores in [0, 1]
    from molgen.guide import Objective

    assert list(mols.columns) == log_columns(Objective.from_toml(QED))
    assert mols["oracle_call"].tolist() == list(range(1, 151))
    assert mols["smiles"].is_unique and all(canonicalize(s) == s for s in mols["smiles"])
    assert mols["score"].between(0, 1).all() and np.allclose(mols["score"], mols["qed"])
    assert (mols["step"].diff().dropna() >= 0).all() and mols["step"].iloc[0] == 1
    start = mols.loc[mols["step"] == 1, "score"].max()
    first = mols.loc[mols["step"] == 1, "score"]
    assert len(first) == 16
    # CMA-ES finds better molecules than the 16 prior draws it started from (0.914 -> 0.947 here)
    assert mols["score"].max() > start + 0.02
    assert mols["score"].nlargest(10).mean() > first.nlargest(10).mean() + 0.05
    steps = pd.read_csv(tmp_path / "run" / "steps.csv")
    assert steps["calls_used"].iloc[-1] == 150 and steps["best"].is_monotonic_increasing


def test_resume_replays_to_the_same_file(tmp_path):
    whole = optimize_latent(_config(tmp_path / "whole", budget=100), log=None).molecules
    part = optimize_latent(_config(tmp_path / "part", budget=100, stop={"max_steps": 3}), log=None)
    assert 0 < len(part.molecules) < 100
    with pytest.raises(ConfigError, match="--resume"):
        optimize_latent(_config(tmp_path / "part", budget=100), log=None)
    with pytest.raises(ConfigError, match="other settings"):
        optimize_latent(_config(tmp_path / "part", budget=100, sigma0=0.2), resume=True, log=None)
    resumed = optimize_latent(_config(tmp_path / "part", budget=100), resume=True, log=None).molecules
    pd.testing.assert_frame_equal(resumed, whole)


def test_optimize_toml_dispatches_on_method(tmp_path):
    toml = tmp_path / "latent.toml"
    toml.write_text(f'method = "latent"\nobjective = "{QED}"\nbudget = 40\nout = "{tmp_path / "out"}"\n'
                    'n_init = 40\nn_whiten = 1000\ndevice = "cpu"\n')
    result = optimize(toml, log=None)
    assert len(result.molecules) == 40 and (tmp_path / "out" / "optimize.csv").is_file()
    toml.write_text(f'method = "latent"\nobjective = "{QED}"\nbudget = 40\nout = "{tmp_path / "o2"}"\npopsize = 2\n')
    with pytest.raises(ConfigError, match="popsize"):
        optimize(toml, log=None)
    shipped = LatentConfig.from_toml(ROOT / "scripts" / "configs" / "optimize_latent_qed.toml")
    assert shipped.method == "latent" and shipped.objective == QED.resolve()
    with pytest.raises(ConfigError, match="start.*'C1CC' is not a valid SMILES"):
        optimize_latent(_config(tmp_path / "o4", start=["CCO", "C1CC"]), log=None)
    with pytest.raises(ConfigError, match="method"):
        optimize({"method": "bayes", "objective": str(QED), "budget": 5, "out": str(tmp_path / "o3")}, log=None)


def test_latent_space_whitens_the_prior_and_bounds_its_density():
    from molgen.models import load_pretrained

    model = load_pretrained("graph-vae-moses", device="cpu")
    space = LatentSpace(model, n=4000, quantile=0.05, seed=1)
    z = model.draw_latents(2000, torch.Generator().manual_seed(2)).double()
    u = space.to_u(z)
    assert np.allclose(space.to_z(u).numpy(), z.numpy(), atol=1e-8)
    assert abs(u.mean()) < 0.1 and 0.8 < u.std() < 1.2  # whitened: about standard normal
    inside = (space.log_density(z) >= space.threshold).float().mean()
    assert 0.9 < inside < 0.99  # about 95 % of fresh prior draws are inside the 5 % bound
    far = space.to_z(np.full((1, model.config.latent), 4.0))
    assert space.log_density(far)[0] < space.threshold
