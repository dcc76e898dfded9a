"""Latent-space optimisation: CMA-ES over the graph-VAE's latent space, under the oracle's budget.

Gomez-Bombarelli et al. (2018, ACS Cent. Sci. 4:268) optimised molecules in a VAE's continuous
latent space; here the search is the covariance matrix adaptation evolution strategy (CMA-ES,
Hansen & Ostermeier 2001, Evol. Comput. 9:159; Hansen's ``cma`` package) over ``z`` of a
:class:`~molgen.models.graph_vae.GraphVAE`, whose decoder only makes valid molecules. Each
candidate ``z`` is decoded greedily to one molecule and scored by the same
:class:`~molgen.guide.objectives.Oracle` as RL: a molecule already scored (any ``z`` that decodes
to it again) costs no call and returns its cached score, and the run stops when the budget is spent.

Staying where the decoder knows its way. The search runs in whitened coordinates ``u``
(``z = m + L u``, with ``m`` and ``L L^T`` the mean and covariance of the model's fitted prior,
estimated from ``n_whiten`` draws), so CMA-ES's isotropic start has the prior's shape. A candidate
whose log density under the fitted prior is below the ``density_quantile`` quantile of the prior's
own draws is not decoded at all: it gets the fitness ``1 + (threshold - log p) / latent``, worse
than any decoded molecule (fitnesses are ``-score`` in [-1, 0]) and worse the further out it lies,
which pulls the search distribution back inside at no oracle cost.

Steps. Step 1 decodes ``n_init`` draws of the fitted prior and the encodings of ``start``
(known good molecules, optional); CMA-ES then starts at the whitened ``z`` of the best molecule
of step 1 with step size ``sigma0`` and ``popsize`` candidates a step. When CMA-ES stops
(its own criteria) or stagnates (under ``stop.min_new`` of the last ``stop.window`` steps'
candidates were new molecules), it restarts from the ``r``-th best molecule found so far (``r``
counting the restarts, cycling through the best 10), with a fresh seed.

Files: ``optimize.csv`` exactly as :mod:`molgen.guide.rl` writes it (``step, oracle_call, smiles,
score, <components>, scaffold``; :mod:`molgen.guide.runlog`), ``steps.csv`` (calls used, new,
best, top-10 mean, CMA-ES's sigma, restarts, seconds), ``config.json``. Resuming rebuilds the
oracle's cache from ``optimize.csv`` and replays the run: every step is seeded and decoding is
greedy, so the replay asks the cache for the molecules already scored (no call is paid twice) and
goes on past them; CMA-ES's state needs no pickle.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from molgen.chem import canonicalize, scaffold
from molgen.errors import ConfigError
from molgen.guide.objectives import Objective, Oracle
from molgen.guide.rl import OptimizeResult, _Section
from molgen.guide.runlog import (
    CSV_NAME,
    STEPS_NAME,
    append,
    begin,
    few_threads,
    interrupted,
    log_columns,
    new_rows,
    read_log,
    refuse_overwrite,
    restore_oracle,
    settings,
)

__all__ = ["LatentConfig", "optimize_latent", "LatentSpace"]


class LatentStopConfig(_Section):
    window: int = Field(5, ge=1, description="steps over which the new fraction is averaged")
    min_new: float = Field(0.05, ge=0, le=1, description="restart CMA-ES when the new fraction falls below this")
    max_steps: int | None = Field(None, ge=1)
    max_restarts: int = Field(50, ge=0, description="stop after this many restarts")


class LatentConfig(_Section):
    """One latent-space run (``molgen optimize --config FILE`` with ``method = "latent"``);
    see ``scripts/configs/optimize_latent_qed.toml``."""

    method: Literal["latent"]
    model: str = Field("graph-vae-moses", description="a GraphVAE with a fitted prior: shipped name or folder")
    objective: Path = Field(description="objective TOML (molgen.guide.Objective.from_toml)")
    budget: int = Field(ge=1, description="oracle calls: distinct valid molecules scored")
    out: Path = Field(description="run folder")
    popsize: int = Field(32, ge=4, description="CMA-ES candidates per step")
    sigma0: float = Field(0.3, gt=0, description="CMA-ES's first step size, in units of the prior's spread")
    n_init: int = Field(128, ge=1, description="prior draws decoded and scored in step 1")
    start: list[str] = Field([], description="known molecules whose encodings join step 1")
    density_quantile: float = Field(0.01, ge=0, lt=1, description="candidates less likely than this share of "
                                    "the prior's own draws are not decoded (penalised)")  # fmt: skip
    n_whiten: int = Field(20_000, ge=100, description="prior draws that estimate the whitening and the density bound")
    seed: int = 0
    device: str = "auto"
    stop: LatentStopConfig = LatentStopConfig()

    @field_validator("start")
    @classmethod
    def _parse_start(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if canonicalize(s) is None]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a valid SMILES")
        return value


_MAY_CHANGE = ("budget", "stop", "device", "out")


class LatentSpace:
    """The fitted prior of a GraphVAE as a search space: whitening and the density bound.

    Shapes:
        ``to_z``: (n, L) whitened -> (n, L) latent; ``log_density``: (n, L) latent -> (n,).
    """

    def __init__(self, model, n: int = 20_000, quantile: float = 0.01, seed: int = 0):
        if not model.config.fitted_prior:
            raise ConfigError("the graph-VAE has no fitted prior (GraphVAE.fit_prior): latent search needs one")
        self.model = model
        gen = torch.Generator(device=model.device).manual_seed(seed)
        with torch.no_grad():
            z = model.draw_latents(n, gen).double()
        self.mean = z.mean(0)
        self.chol = torch.linalg.cholesky(torch.cov(z.T))
        comps = torch.distributions.MultivariateNormal(model.prior_loc.double(), scale_tril=model.prior_scale_tril.double())
        self.prior = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(probs=model.prior_weights.double()), comps)
        self.threshold = float(torch.quantile(self.log_density(z), quantile)) if quantile > 0 else -math.inf

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.prior.log_prob(z.double())

    def to_z(self, u: np.ndarray) -> torch.Tensor:
        return self.mean + torch.as_tensor(np.asarray(u), dtype=torch.float64, device=self.mean.device) @ self.chol.T

    def to_u(self, z: torch.Tensor) -> np.ndarray:
        x = (z.double() - self.mean).T
        return torch.linalg.solve_triangular(self.chol, x, upper=False).T.cpu().numpy()


class _LatentRun:
    def __init__(self, cfg: LatentConfig, log: Callable[[str], None] | None):
        from molgen.models import load_pretrained

        self.cfg, self.log = cfg, log or (lambda _: None)
        self.out = Path(cfg.out)
        self.objective = Objective.from_toml(cfg.objective)
        self.oracle = Oracle(self.objective, cfg.budget)
        self.model = load_pretrained(cfg.model, device=cfg.device)
        if getattr(self.model, "model_type", None) != "graph_vae":
            raise ConfigError(f"model {cfg.model!r} must be a GraphVAE (e.g. graph-vae-moses)")
        self.model.eval()
        self.space = LatentSpace(self.model, cfg.n_whiten, cfg.density_quantile, cfg.seed)
        self.columns = log_columns(self.objective)
        self.found: dict[str, float] = {}  # molecules decoded so far in this run -> score (in order found)
        self.where: dict[str, np.ndarray] = {}  # molecule -> the first whitened point that decoded to it
        self.scaffolds: dict[str, str] = {}
        self.new_fraction: list[float] = []
        self.step = self.restarts = 0

    def scaffold_of(self, smi: str) -> str:
        if smi not in self.scaffolds:
            self.scaffolds[smi] = scaffold(smi) or ""
        return self.scaffolds[smi]

    def evaluate(self, u: np.ndarray, step: int) -> np.ndarray:
        """Scores of whitened points (NaN: past the budget); molecules decoded, scored and logged."""
        z = self.space.to_z(u)
        smiles = self.model.decode(z.float())
        calls_before = self.oracle.calls_used
        if self.oracle.exhausted:  # only cached molecules can still be looked up
            smiles = [s if s in self.oracle.cache else None for s in smiles]
        table = self.oracle(smiles)
        rows = new_rows(table, smiles, step, calls_before, self.objective, self.scaffold_of)
        if len(rows):
            append(self.out / CSV_NAME, rows, self.columns)
        scores = table["score"].to_numpy(np.float64)
        first = 0
        for i, s in enumerate(smiles):
            if s is not None and s not in self.found and not math.isnan(scores[i]):
                self.found[s] = scores[i]
                self.where[s] = np.asarray(u[i], dtype=np.float64)
                first += 1
        self.new_fraction.append(first / max(len(smiles), 1))
        return scores

    def restore(self) -> None:
        rows = restore_oracle(self.oracle, self.out, self.columns, self.scaffolds)
        self.log(f"resuming: {len(rows):,} molecules already scored ({self.oracle.remaining:,} calls left); "
                 "replaying the seeded steps through the cache")


def optimize_latent(config: LatentConfig | dict | str | os.PathLike, resume: bool = False,
                    log: Callable[[str], None] | None = print) -> OptimizeResult:  # fmt: skip
    """CMA-ES in the graph-VAE's latent space until the budget is spent (module docstring).

    Args:
        config: a :class:`LatentConfig`, its dict, or a TOML path (``method = "latent"``).
        resume: continue the run in ``config.out`` (a missing run starts afresh).
        log: called with one progress line per step; ``None`` for silence.

    Raises:
        ConfigError: a bad config; ``out`` holds a run and ``resume`` is False; a run with other
            settings (only ``budget``, ``stop`` and ``device`` may change).
    """
    cfg = LatentConfig.from_toml(config) if isinstance(config, (str, os.PathLike)) else LatentConfig.parse(config)
    out = Path(cfg.out)
    csv = out / CSV_NAME
    refuse_overwrite(out, resume)
    run = _LatentRun(cfg, log)
    # steps.csv is rewritten by the steps, replayed ones included
    begin(out, run.columns, settings(cfg, run.objective), resume, _MAY_CHANGE, run.restore, stale=(out / STEPS_NAME,))
    (out / STEPS_NAME).unlink(missing_ok=True)
    try:
        with few_threads():
            reason = _loop(run)
    except KeyboardInterrupt:
        raise interrupted(run.step + 1, run.oracle.calls_used, out) from None
    molecules = read_log(csv, run.columns)
    steps = pd.read_csv(out / STEPS_NAME) if (out / STEPS_NAME).is_file() else pd.DataFrame()
    run.log(f"stopped after step {run.step}: {reason}; {len(molecules):,} molecules in {csv}")
    return OptimizeResult(out, molecules, steps, reason)


def _loop(run: _LatentRun) -> str:
    import cma

    cfg = run.cfg
    start = time.perf_counter()
    gen = torch.Generator(device=run.model.device).manual_seed(cfg.seed + 1)
    with torch.no_grad():
        z0 = run.model.draw_latents(cfg.n_init, gen).double()
        if cfg.start:
            z0 = torch.cat([z0, run.model.encode(cfg.start).double()])
    run.step = 1
    run.evaluate(run.space.to_u(z0), 1)
    _log_step(run, 1, math.nan, time.perf_counter() - start)
    es, stalled_since = None, 0
    while True:
        if run.oracle.exhausted:
            return f"budget of {cfg.budget:,} oracle calls spent"
        if cfg.stop.max_steps is not None and run.step >= cfg.stop.max_steps:
            return f"max_steps ({cfg.stop.max_steps}) reached"
        if not run.found:
            return "no molecule could be decoded"
        recent = run.new_fraction[stalled_since:][-cfg.stop.window:]
        stalled = len(recent) == cfg.stop.window and np.mean(recent) < cfg.stop.min_new
        if es is None or es.stop() or stalled:
            if es is not None:
                if run.restarts >= cfg.stop.max_restarts:
                    return f"max_restarts ({cfg.stop.max_restarts}) reached"
                run.restarts += 1
            ranked = sorted(run.found, key=lambda s: -np.nan_to_num(run.found[s], nan=0.0))
            origin = run.where[ranked[run.restarts % min(10, len(ranked))]]
            es = cma.CMAEvolutionStrategy(origin, cfg.sigma0, {"popsize": cfg.popsize, "seed": cfg.seed * 1000 + run.restarts + 1,
                                                                "verbose": -9})  # fmt: skip
            stalled_since = len(run.new_fraction)
        step, t0 = run.step + 1, time.perf_counter()
        u = np.asarray(es.ask())
        logp = run.space.log_density(run.space.to_z(u)).cpu().numpy()
        inside = logp >= run.space.threshold
        fitness = 1.0 + (run.space.threshold - logp) / run.model.config.latent
        if inside.any():
            scores = run.evaluate(u[inside], step)
            fitness[inside] = -np.nan_to_num(scores, nan=0.0)
        else:
            run.new_fraction.append(0.0)
        es.tell(list(u), fitness.tolist())
        run.step = step
        _log_step(run, step, es.sigma, time.perf_counter() - t0, outside=int((~inside).sum()))


def _log_step(run: _LatentRun, step: int, sigma: float, seconds: float, outside: int = 0) -> None:
    top = np.sort(np.nan_to_num(np.fromiter(run.found.values(), np.float64, len(run.found)), nan=0.0))[::-1]
    # from the molecules this run has met (a resumed run's cache is ahead while it replays)
    rec = {"step": step, "calls_used": len(run.found), "new": run.new_fraction[-1],
           "best": top[0] if len(top) else math.nan, "top10_mean": top[:10].mean() if len(top) else math.nan,
           "sigma": sigma, "outside": outside, "restarts": run.restarts, "seconds": round(seconds, 3)}  # fmt: skip
    append(run.out / STEPS_NAME, pd.DataFrame([rec]), list(rec), header=not (run.out / STEPS_NAME).exists())
    run.log(f"step {step:4d}  calls {len(run.found):,}/{run.cfg.budget:,}  best {rec['best']:.3f}  "
            f"top-10 {rec['top10_mean']:.3f}  new {rec['new']:.0%}  sigma {sigma:.3g}  outside {outside}  "
            f"restarts {run.restarts}  {seconds:.1f} s")
